//! Cryptography: password key derivation, subkeys, sealing of stored objects, chunk ids.
//!
//! Nothing here touches storage; the repository layer decides what to seal and where.

mod kdf;
pub mod seal;

pub use kdf::{KdfParams, derive_wrapping_key};
pub use seal::{ObjectKind, SEAL_OVERHEAD, associated_data, open, seal, seal_into};

use crate::id::BlobId;

/// Length of every symmetric key.
pub const KEY_LEN: usize = 32;

/// Fills a buffer from the operating system's random source.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    // getrandom only fails when the OS has no entropy source at all; there is no safe fallback.
    getrandom::fill(&mut out).expect("the operating system's random source failed");
    out
}

/// The repository's master key and the subkeys derived from it.
///
/// The master key is 32 random bytes made at `init`; each subkey is
/// `BLAKE3-derive_key(context, master)` with its own context string, so knowing one
/// subkey reveals nothing about another.
#[derive(Clone)]
pub struct Keys {
    master: [u8; KEY_LEN],
    encryption: [u8; KEY_LEN],
    blob_id: [u8; KEY_LEN],
    chunker_seed: u64,
}

const CONTEXT_ENCRYPTION: &str = "arca 2026-11 object encryption key";
const CONTEXT_BLOB_ID: &str = "arca 2026-11 blob id key";
const CONTEXT_CHUNKER: &str = "arca 2026-11 chunker seed";

impl Keys {
    pub fn generate() -> Self {
        Self::from_master(random_bytes())
    }

    pub fn from_master(master: [u8; KEY_LEN]) -> Self {
        let chunker = blake3::derive_key(CONTEXT_CHUNKER, &master);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&chunker[..8]);
        Keys {
            master,
            encryption: blake3::derive_key(CONTEXT_ENCRYPTION, &master),
            blob_id: blake3::derive_key(CONTEXT_BLOB_ID, &master),
            chunker_seed: u64::from_le_bytes(seed),
        }
    }

    pub fn master(&self) -> &[u8; KEY_LEN] {
        &self.master
    }

    pub fn encryption(&self) -> &[u8; KEY_LEN] {
        &self.encryption
    }

    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// A blob's id: keyed BLAKE3 of its plaintext, so two repositories never share ids.
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.blob_id, plaintext).as_bytes())
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vector: a silent change to subkey derivation or blob ids must fail here.
    #[test]
    fn subkeys_golden_vector() {
        let keys = Keys::from_master([0x42; 32]);
        assert_eq!(
            hex::encode(keys.encryption()),
            "7d7a832d293481b2b3177a6e5c304f355cefe84f6568b6321cab2e4fad8f2791"
        );
        assert_eq!(keys.chunker_seed(), 10560287930875444341);
        assert_eq!(
            keys.blob_id(b"hello arca").to_hex(),
            "d7f066a032eec8135a7477627b54a69c3c3c46882b2e574a7917afb0ba68c405"
        );
    }

    #[test]
    fn subkeys_differ() {
        let keys = Keys::from_master([1; 32]);
        assert_ne!(keys.encryption(), &keys.blob_id);
        assert_ne!(keys.encryption(), keys.master());
    }
}
