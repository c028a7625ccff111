#![no_main]
//! Fuzzes the payload envelope (`0 ‖ raw body` or `1 ‖ raw length ‖ zstd frame`).

use arca::format::{ENCODING_RAW, ENCODING_ZSTD, MAX_PAYLOAD_LEN, decode_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = decode_payload(data.to_vec()) {
        match data[0] {
            ENCODING_RAW => assert_eq!(body, &data[1..]),
            ENCODING_ZSTD => {
                let claimed = u32::from_le_bytes(data[1..5].try_into().unwrap()) as usize;
                assert!(body.len() == claimed && claimed <= MAX_PAYLOAD_LEN, "{} bytes, claimed {claimed}", body.len());
            }
            other => panic!("payload with unknown encoding {other} accepted"),
        }
    }
});
