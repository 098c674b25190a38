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
            // A refused credential is described, never repeated: the refusal reads the
            // same with every visible ASCII character of the secrets masked (which
            // keeps each secret as valid or invalid as it was).
            if let Some(auth) = &reg.auth
                && let Err(why) = auth.header()
            {
                let mask = |s: &Option<String>| {
                    s.as_ref().map(|s| {
                        s.chars()
                            .map(|c| if c.is_ascii_graphic() { 'x' } else { c })
                            .collect::<String>()
                    })
                };
                let mut masked = auth.clone();
                masked.bearer = mask(&auth.bearer);
                masked.value = mask(&auth.value);
                assert_eq!(
                    masked.header().err(),
                    Some(why.clone()),
                    "secret echoed: {why}"
                );
            }
        }
        Err(why) => assert!(!why.is_empty()),
    }
});
