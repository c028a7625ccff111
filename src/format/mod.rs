//! Encoding and decoding of every stored object. Pure: no I/O, no keys.
//!
//! `docs/design.md` is the byte-level specification of what is here; the two change together.

pub mod config;
pub mod index;
pub mod keyfile;
pub mod lock;
pub mod pack;
pub mod snapshot;
pub mod tree;
pub mod wire;

use crate::compress;
use wire::{DecodeResult, Reader};

/// Version of the repository format written by this arca.
pub const FORMAT_VERSION: u32 = 1;

/// Magic at the start of every file but packs.
pub const MAGIC: &[u8; 4] = b"ARCA";
/// Length of the plaintext file header: magic, kind, version, two reserved bytes.
pub const FILE_HEADER_LEN: usize = 8;

/// Largest plaintext a payload (blob, pack header, index segment, snapshot) may claim.
pub const MAX_PAYLOAD_LEN: usize = 256 << 20;

/// The kind byte of a file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FileKind {
    Key = 1,
    Config = 2,
    Index = 3,
    Snapshot = 4,
    Lock = 5,
}

/// The 8-byte plaintext header of a key, config, index or snapshot file.
pub fn file_header(kind: FileKind) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..4].copy_from_slice(MAGIC);
    h[4] = kind as u8;
    h[5] = FORMAT_VERSION as u8;
    h
}

/// Why a file header was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// Not an arca file of this kind at all.
    Malformed(String),
    /// An arca file of a format version this build does not know.
    Version(u32),
}

/// Checks a file header and returns the bytes after it.
pub fn check_file_header(bytes: &[u8], kind: FileKind) -> Result<&[u8], HeaderError> {
    if bytes.len() < FILE_HEADER_LEN || &bytes[..4] != MAGIC {
        return Err(HeaderError::Malformed(
            "not an arca file (bad magic)".into(),
        ));
    }
    if bytes[4] != kind as u8 {
        return Err(HeaderError::Malformed(format!(
            "file kind {} where {} was expected",
            bytes[4], kind as u8
        )));
    }
    if bytes[5] as u32 != FORMAT_VERSION {
        return Err(HeaderError::Version(bytes[5] as u32));
    }
    if bytes[6] != 0 || bytes[7] != 0 {
        return Err(HeaderError::Malformed(
            "reserved header bytes are not zero".into(),
        ));
    }
    Ok(&bytes[FILE_HEADER_LEN..])
}

/// Payload encodings: the first plaintext byte of every sealed object.
pub const ENCODING_RAW: u8 = 0;
pub const ENCODING_ZSTD: u8 = 1;

/// Appends the payload encoding of `body` to `out`: `0 ‖ body`, or
/// `1 ‖ raw length (u32) ‖ zstd frame` when compression makes it smaller.
pub fn encode_payload_into(body: &[u8], level: Option<i32>, out: &mut Vec<u8>) {
    if let Some(level) = level {
        let start = out.len();
        out.push(ENCODING_ZSTD);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        if compress::compress_into(body, level, out) {
            return;
        }
        out.truncate(start);
    }
    out.push(ENCODING_RAW);
    out.extend_from_slice(body);
}

pub fn encode_payload(body: &[u8], level: Option<i32>) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 8);
    encode_payload_into(body, level, &mut out);
    out
}

/// Decodes a payload back to its body, refusing claimed lengths above `MAX_PAYLOAD_LEN`.
pub fn decode_payload(mut payload: Vec<u8>) -> DecodeResult<Vec<u8>> {
    match payload.first() {
        Some(&ENCODING_RAW) => {
            payload.remove(0);
            Ok(payload)
        }
        Some(&ENCODING_ZSTD) => {
            let mut r = Reader::new(&payload[1..]);
            let raw_len = r.u32()? as usize;
            if raw_len > MAX_PAYLOAD_LEN {
                return Err(format!(
                    "claims {raw_len} bytes uncompressed, more than the limit of {MAX_PAYLOAD_LEN}"
                ));
            }
            compress::decompress(&payload[5..], raw_len).map_err(|e| e.to_string())
        }
        Some(other) => Err(format!("unknown payload encoding {other}")),
        None => Err("empty payload".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_both_ways() {
        let text = b"tree tree tree tree tree tree tree tree tree tree".repeat(50);
        let enc = encode_payload(&text, Some(3));
        assert_eq!(enc[0], ENCODING_ZSTD);
        assert_eq!(decode_payload(enc).unwrap(), text);
        let enc = encode_payload(b"tiny", Some(3));
        assert_eq!(enc, b"\0tiny");
        assert_eq!(decode_payload(enc).unwrap(), b"tiny");
        assert!(decode_payload(vec![7, 1, 2]).is_err());
        assert!(
            decode_payload(vec![1, 0xff, 0xff, 0xff, 0xff, 0])
                .unwrap_err()
                .contains("limit")
        );
    }

    #[test]
    fn headers_are_checked() {
        let mut file = file_header(FileKind::Snapshot).to_vec();
        file.push(9);
        assert_eq!(check_file_header(&file, FileKind::Snapshot).unwrap(), &[9]);
        assert!(matches!(
            check_file_header(&file, FileKind::Index),
            Err(HeaderError::Malformed(_))
        ));
        file[5] = 2;
        assert_eq!(
            check_file_header(&file, FileKind::Snapshot),
            Err(HeaderError::Version(2))
        );
        assert!(check_file_header(b"ARC", FileKind::Snapshot).is_err());
        // Found by fuzzing: reserved bytes must be zero, or a damaged key file would
        // decode, fail to authenticate, and be reported as a wrong password.
        let mut reserved = file_header(FileKind::Key).to_vec();
        reserved[6] = 0xff;
        assert!(matches!(
            check_file_header(&reserved, FileKind::Key),
            Err(HeaderError::Malformed(_))
        ));
    }
}
