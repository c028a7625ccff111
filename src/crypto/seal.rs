//! Sealing: XChaCha20-Poly1305 under a fresh random nonce, bound to what the object is.
//!
//! Sealed layout: `nonce (24) ‖ ciphertext ‖ tag (16)`. The associated data is
//! `"arca" ‖ format version (u8) ‖ object kind (u8) ‖ id (32 bytes, blobs only)`, so a
//! blob cannot be presented as another blob, nor a tree as a snapshot.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::{KEY_LEN, random_bytes};
use crate::format::FORMAT_VERSION;

pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;
/// Bytes a sealed object is longer than its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// What a sealed object is; part of its associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ObjectKind {
    MasterKey = 1,
    Config = 2,
    DataBlob = 3,
    TreeBlob = 4,
    PackHeader = 5,
    IndexSegment = 6,
    Snapshot = 7,
    Lock = 8,
}

/// Builds the associated data for an object; `id` is given for blobs only.
pub fn associated_data(kind: ObjectKind, id: Option<&[u8; 32]>) -> Vec<u8> {
    let mut ad = Vec::with_capacity(6 + 32);
    ad.extend_from_slice(b"arca");
    ad.push(FORMAT_VERSION as u8);
    ad.push(kind as u8);
    if let Some(id) = id {
        ad.extend_from_slice(id);
    }
    ad
}

/// Random bytes drawn from the operating system a page at a time, for nonces: one system
/// call per 170 sealed objects rather than one per object, which showed in backups of many
/// tiny files. Each byte is still used once, in one nonce.
struct NoncePool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static NONCE_POOL: std::cell::RefCell<NoncePool> = const {
        std::cell::RefCell::new(NoncePool { bytes: [0; 4096], used: 4096 })
    };
}

fn fresh_nonce() -> [u8; NONCE_LEN] {
    NONCE_POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.used + NONCE_LEN > pool.bytes.len() {
            pool.bytes = random_bytes();
            pool.used = 0;
        }
        let start = pool.used;
        pool.used += NONCE_LEN;
        let mut nonce = [0; NONCE_LEN];
        nonce.copy_from_slice(&pool.bytes[start..start + NONCE_LEN]);
        nonce
    })
}

/// Seals `plaintext`, returning `nonce ‖ ciphertext ‖ tag`.
pub fn seal(key: &[u8; KEY_LEN], ad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    seal_into(key, ad, &mut out);
    out
}

/// Seals in place a buffer laid out as `NONCE_LEN` placeholder bytes followed by the
/// plaintext: fills in a fresh nonce, encrypts, appends the tag. Saves a copy on the hot path.
pub fn seal_into(key: &[u8; KEY_LEN], ad: &[u8], buf: &mut Vec<u8>) {
    let nonce = fresh_nonce();
    buf[..NONCE_LEN].copy_from_slice(&nonce);
    let cipher = XChaCha20Poly1305::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(XNonce::from_slice(&nonce), ad, &mut buf[NONCE_LEN..])
        .expect("XChaCha20 encrypts any length below 256 GiB");
    buf.extend_from_slice(&tag);
}

/// Opens a sealed object; `None` when it was not sealed with this key and associated data.
pub fn open(key: &[u8; KEY_LEN], ad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut plaintext = ciphertext.to_vec();
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            ad,
            &mut plaintext,
            Tag::from_slice(tag),
        )
        .ok()?;
    Some(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tampering_or_relabelling_is_detected() {
        let key = [3u8; 32];
        let ad = associated_data(ObjectKind::DataBlob, Some(&[1; 32]));
        let sealed = seal(&key, &ad, b"payload");
        assert_eq!(open(&key, &ad, &sealed).unwrap(), b"payload");
        let other_id = associated_data(ObjectKind::DataBlob, Some(&[2; 32]));
        assert!(open(&key, &other_id, &sealed).is_none());
        let other_kind = associated_data(ObjectKind::TreeBlob, Some(&[1; 32]));
        assert!(open(&key, &other_kind, &sealed).is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x01;
            assert!(
                open(&key, &ad, &bad).is_none(),
                "flip at byte {i} went unnoticed"
            );
        }
        assert!(open(&key, &ad, &sealed[..10]).is_none());
    }

    /// Golden vector: a fixed nonce, key and associated data must always give these bytes.
    #[test]
    fn every_seal_takes_a_nonce_of_its_own() {
        let key = [3u8; 32];
        let nonces: std::collections::HashSet<Vec<u8>> = (0..1000)
            .map(|_| seal(&key, b"", b"same plaintext")[..NONCE_LEN].to_vec())
            .collect();
        assert_eq!(nonces.len(), 1000, "across several refills of the pool");
    }

    #[test]
    fn sealing_golden_vector() {
        let key = [0x11u8; 32];
        let ad = associated_data(ObjectKind::Snapshot, None);
        assert_eq!(hex::encode(&ad), "6172636101".to_owned() + "07");
        let mut buf = vec![0u8; NONCE_LEN];
        buf.extend_from_slice(b"arca");
        let cipher = XChaCha20Poly1305::new((&key).into());
        let tag = cipher
            .encrypt_in_place_detached(XNonce::from_slice(&[0x22; 24]), &ad, &mut buf[NONCE_LEN..])
            .unwrap();
        buf.extend_from_slice(&tag);
        buf[..NONCE_LEN].copy_from_slice(&[0x22; 24]);
        assert_eq!(
            hex::encode(&buf[NONCE_LEN..]),
            "e215846d182ab0fd468c63656f47d02019234c5f"
        );
        assert_eq!(open(&key, &ad, &buf).unwrap(), b"arca");
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), kind in 1u8..8) {
            let key = [9u8; 32];
            let ad = [b'k', kind];
            let sealed = seal(&key, &ad, &data);
            prop_assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
            prop_assert_eq!(open(&key, &ad, &sealed).unwrap(), data);
        }
    }
}
