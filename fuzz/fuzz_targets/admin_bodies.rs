//! `POST /register` bodies: parsed and validated exactly as the route does before it
//! contacts anything (name, URL, weight, timeout, the upstream credential). Whatever the
//! input: no panic, a refusal says why, and a refused credential is not repeated.

#![no_main]

use std::sync::Arc;

use gateway::{http::admin::parse_registration, registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let actor = registry::Actor {
        name: Arc::from("fuzz"),
        operator: false,
    };
    match parse_registration(data, actor) {
        Ok(reg) => {
            if let Err(why) = registry::validate(&reg) {
                assert!(!why.is_empty());
            }
            // A refused credential is described, never repeated (unless the secret is
            // part of the header name the message must name, or of its fixed wording).
            if let Some(auth) = &reg.auth
                && let Err(why) = auth.header()
            {
                let name = auth.header.as_deref().unwrap_or_default();
                for secret in [&auth.bearer, &auth.value].into_iter().flatten() {
                    assert!(
                        secret.len() < 4
                            || name.contains(secret.as_str())
                            || !why.contains(secret.as_str()),
                        "secret echoed: {why}"
                    );
                }
            }
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
