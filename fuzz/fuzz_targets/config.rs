//! The TOML configuration: `Config::parse` is what `Config::load`, SIGHUP and every
//! dashboard change go through (TOML syntax, serde shape, then validation). Any
//! input must give `Ok` or a `ConfigError` with a message, never a panic.
#![no_main]

use dnsguard::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, "fuzz") {
        Ok(cfg) => {
            // Validation guarantees these; the server relies on them.
            assert!(!cfg.server.listen.is_empty(), "validated config without listeners");
            assert!(cfg.cache.min_ttl <= cfg.cache.max_ttl, "min_ttl > max_ttl passed validation");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz"), "error without its origin: {msg}");
            if let ConfigError::Invalid { key, .. } = &e {
                assert!(!key.is_empty(), "validation error without a key: {msg}");
            }
        }
    }
});
