//! Configuration files: any TOML text through the same extraction and validation as at
//! start-up. Either a configuration or an error naming a key; no panic. File paths it
//! names (the JWKS file) are read only when they exist, as at start-up.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match gateway::Config::from_toml(text) {
        Ok(config) => {
            let _ = config.upstream_options();
        }
        Err(e) => assert!(!e.key.is_empty(), "{e}"),
    }
});
