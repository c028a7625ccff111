//! Key files (`keys/<id>`): one per password, each wrapping the repository's master key.
//!
//! Layout: file header (kind 1) ‖ memory KiB (u32) ‖ passes (u32) ‖ lanes (u32) ‖
//! salt (32) ‖ created (i64 seconds) ‖ host (bytes) ‖ user (bytes) ‖ sealed master key
//! (bytes: 72). The sealed key's associated data covers everything before it.

use super::wire::{DecodeResult, Reader, Writer};
use super::{FileKind, file_header};
use crate::crypto::KdfParams;

pub const SALT_LEN: usize = 32;
/// Sealed 32-byte master key: nonce, ciphertext, tag.
pub const SEALED_MASTER_LEN: usize = 24 + 32 + 16;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyFile {
    pub kdf: KdfParams,
    pub salt: [u8; SALT_LEN],
    pub created: i64,
    pub host: String,
    pub user: String,
    pub sealed_master: Vec<u8>,
}

impl KeyFile {
    /// Everything before the sealed master key: the associated data that seals it.
    pub fn encode_unsealed_part(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(&file_header(FileKind::Key));
        w.u32(self.kdf.memory_kib);
        w.u32(self.kdf.iterations);
        w.u32(self.kdf.parallelism);
        w.raw(&self.salt);
        w.i64(self.created);
        w.str(&self.host);
        w.str(&self.user);
        w.buf
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.encode_unsealed_part();
        out.extend_from_slice(&(self.sealed_master.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.sealed_master);
        out
    }

    /// Decodes the bytes after the file header (which the caller has checked).
    pub fn decode_body(body: &[u8]) -> DecodeResult<KeyFile> {
        let mut r = Reader::new(body);
        let kdf = KdfParams {
            memory_kib: r.u32()?,
            iterations: r.u32()?,
            parallelism: r.u32()?,
        };
        let salt = r.take(SALT_LEN)?.try_into().map_err(|_| "salt")?;
        let created = r.i64()?;
        let host = r.string(1024, "host name")?;
        let user = r.string(1024, "user name")?;
        let sealed_master = r.bytes(SEALED_MASTER_LEN, "sealed master key")?.to_vec();
        if sealed_master.len() != SEALED_MASTER_LEN {
            return Err(format!(
                "sealed master key is {} bytes, expected {SEALED_MASTER_LEN}",
                sealed_master.len()
            ));
        }
        r.finish()?;
        Ok(KeyFile {
            kdf,
            salt,
            created,
            host,
            user,
            sealed_master,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::check_file_header;

    #[test]
    fn key_file_round_trips() {
        let key = KeyFile {
            kdf: KdfParams::MINIMAL,
            salt: [5; 32],
            created: 1_700_000_000,
            host: "db1".into(),
            user: "root".into(),
            sealed_master: vec![1; SEALED_MASTER_LEN],
        };
        let bytes = key.encode();
        let body = check_file_header(&bytes, FileKind::Key).unwrap();
        assert_eq!(KeyFile::decode_body(body).unwrap(), key);
        for cut in 0..body.len() {
            assert!(KeyFile::decode_body(&body[..cut]).is_err());
        }
    }
}
