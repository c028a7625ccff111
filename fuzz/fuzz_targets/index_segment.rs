#![no_main]
//! Fuzzes decoding of index segment payloads, with an exact re-encoding check.

use arca::format::index::IndexSegment;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(segment) = IndexSegment::decode_body(data) {
        assert_eq!(segment.encode_body(), data, "index segment does not re-encode to the bytes it came from");
    }
});
