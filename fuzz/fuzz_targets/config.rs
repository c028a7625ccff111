#![no_main]
//! Fuzzes decoding of the repository config payload, with an exact re-encoding check.

use arca::format::config::RepoConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = RepoConfig::decode_body(data) {
        assert_eq!(config.encode_body(), data, "config does not re-encode to the bytes it came from");
    }
});
