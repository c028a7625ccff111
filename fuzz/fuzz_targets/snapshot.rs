#![no_main]
//! Fuzzes decoding of snapshot payloads, with an exact re-encoding check.

use arca::format::snapshot::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode_body(data) {
        assert_eq!(snapshot.encode_body(), data, "snapshot does not re-encode to the bytes it came from");
    }
});
