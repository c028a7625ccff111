//! Pack files (`packs/<2 hex>/<id>`): sealed blobs followed by their sealed header.
//!
//! Layout: blob ‖ blob ‖ … ‖ sealed header payload ‖ trailer. The trailer is 8 bytes:
//! sealed header length (u32) ‖ `"ARP"` ‖ format version (u8). The header lists, for each
//! blob: kind (u8) ‖ id (32) ‖ offset (u64) ‖ stored length (u32) ‖ plaintext length (u32).

use super::wire::{DecodeResult, Reader, Writer};
use super::{FORMAT_VERSION, MAX_PAYLOAD_LEN};
use crate::crypto::SEAL_OVERHEAD;
use crate::id::BlobId;

pub const TRAILER_LEN: usize = 8;
pub const TRAILER_MAGIC: &[u8; 3] = b"ARP";
/// Encoded length of one header entry.
pub const ENTRY_LEN: usize = 1 + 32 + 8 + 4 + 4;
/// Largest sealed header accepted (about 1.3 million blobs).
pub const MAX_HEADER_LEN: usize = 64 << 20;

/// What a blob holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum BlobKind {
    Data = 1,
    Tree = 2,
}

impl BlobKind {
    pub fn from_u8(v: u8) -> Option<BlobKind> {
        match v {
            1 => Some(BlobKind::Data),
            2 => Some(BlobKind::Tree),
            _ => None,
        }
    }
}

/// Where one blob lives inside a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub kind: BlobKind,
    pub id: BlobId,
    pub offset: u64,
    /// Stored (sealed) length.
    pub length: u32,
    /// Plaintext length of the blob.
    pub raw_length: u32,
}

pub fn encode_entries(entries: &[PackEntry], w: &mut Writer) {
    w.u32(entries.len() as u32);
    for e in entries {
        w.u8(e.kind as u8);
        w.id(&e.id.0);
        w.u64(e.offset);
        w.u32(e.length);
        w.u32(e.raw_length);
    }
}

/// Decodes a list of entries, checking that each lies inside `data_len` bytes of blobs.
pub fn decode_entries(r: &mut Reader<'_>, data_len: u64) -> DecodeResult<Vec<PackEntry>> {
    let n = r.count(ENTRY_LEN, "blob entry")?;
    let mut entries = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = r.u8()?;
        let kind = BlobKind::from_u8(kind).ok_or_else(|| format!("unknown blob kind {kind}"))?;
        let entry = PackEntry {
            kind,
            id: BlobId(r.id()?),
            offset: r.u64()?,
            length: r.u32()?,
            raw_length: r.u32()?,
        };
        let end = entry.offset.checked_add(entry.length as u64);
        if end.is_none_or(|end| end > data_len) {
            return Err(format!(
                "blob {} at {}+{} lies outside the pack's {data_len} data bytes",
                entry.id, entry.offset, entry.length
            ));
        }
        if (entry.length as usize) < SEAL_OVERHEAD + 1
            || entry.raw_length as usize > MAX_PAYLOAD_LEN
        {
            return Err(format!(
                "blob {} has impossible lengths {}/{}",
                entry.id, entry.length, entry.raw_length
            ));
        }
        entries.push(entry);
    }
    Ok(entries)
}

pub fn encode_trailer(sealed_header_len: u32) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[..4].copy_from_slice(&sealed_header_len.to_le_bytes());
    t[4..7].copy_from_slice(TRAILER_MAGIC);
    t[7] = FORMAT_VERSION as u8;
    t
}

/// Reads the trailer of a pack of `pack_len` bytes: returns the sealed header length.
pub fn decode_trailer(trailer: &[u8], pack_len: u64) -> DecodeResult<u32> {
    if trailer.len() != TRAILER_LEN || &trailer[4..7] != TRAILER_MAGIC {
        return Err("no pack trailer (truncated or not a pack)".into());
    }
    if trailer[7] as u32 != FORMAT_VERSION {
        return Err(format!("pack format version {} is unknown", trailer[7]));
    }
    let len = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    if len as usize > MAX_HEADER_LEN
        || len as u64 + TRAILER_LEN as u64 > pack_len
        || (len as usize) <= SEAL_OVERHEAD
    {
        return Err(format!(
            "header length {len} does not fit a pack of {pack_len} bytes"
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_stay_inside_the_pack() {
        let entries = vec![
            PackEntry {
                kind: BlobKind::Data,
                id: BlobId([1; 32]),
                offset: 0,
                length: 100,
                raw_length: 70,
            },
            PackEntry {
                kind: BlobKind::Tree,
                id: BlobId([2; 32]),
                offset: 100,
                length: 50,
                raw_length: 200,
            },
        ];
        let mut w = Writer::new();
        encode_entries(&entries, &mut w);
        assert_eq!(
            decode_entries(&mut Reader::new(&w.buf), 150).unwrap(),
            entries
        );
        assert!(
            decode_entries(&mut Reader::new(&w.buf), 149)
                .unwrap_err()
                .contains("outside")
        );
    }

    #[test]
    fn trailer_is_checked() {
        let t = encode_trailer(100);
        assert_eq!(decode_trailer(&t, 1000).unwrap(), 100);
        assert!(decode_trailer(&t, 50).is_err());
        assert!(decode_trailer(&t[..7], 1000).is_err());
    }
}
