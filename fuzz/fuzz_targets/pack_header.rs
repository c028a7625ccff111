#![no_main]
//! Fuzzes pack trailers (last 8 bytes) and pack header entries (after an 8-byte data length).

use arca::format::pack::{TRAILER_LEN, decode_entries, decode_trailer, encode_entries, encode_trailer};
use arca::format::wire::{Reader, Writer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(trailer) = data.len().checked_sub(TRAILER_LEN).map(|at| &data[at..]) {
        if let Ok(len) = decode_trailer(trailer, data.len() as u64) {
            assert!(len as usize + TRAILER_LEN <= data.len());
            assert_eq!(encode_trailer(len), trailer);
        }
    }

    let Some((data_len, rest)) = data.split_first_chunk::<8>() else { return };
    let data_len = u64::from_le_bytes(*data_len);
    let mut r = Reader::new(rest);
    if let Ok(entries) = decode_entries(&mut r, data_len) {
        for e in &entries {
            assert!(e.offset + e.length as u64 <= data_len, "entry outside the pack: {e:?}");
        }
        let mut w = Writer::new();
        encode_entries(&entries, &mut w);
        assert_eq!(w.buf, &rest[..rest.len() - r.remaining()], "entries do not re-encode to their bytes");
    }
});
