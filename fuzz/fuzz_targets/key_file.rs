#![no_main]
//! Fuzzes key-file decoding (`keys/<id>`): file header check, body decode, exact re-encoding.

use arca::format::keyfile::KeyFile;
use arca::format::{FileKind, check_file_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = check_file_header(data, FileKind::Key) else { return };
    if let Ok(key) = KeyFile::decode_body(body) {
        assert_eq!(key.encode(), data, "key file does not re-encode to the bytes it came from");
    }
});
