//! Index segments (`index/<id>`): which blobs live in which packs.
//!
//! Sealed payload: pack count (u32), then per pack: id (32) ‖ size (u64) ‖ entries (as in
//! a pack header); then a count (u32) of superseded index ids (32 each), which a reader
//! ignores once the segment naming them is present.

use super::pack::{PackEntry, decode_entries, encode_entries};
use super::wire::{DecodeResult, Reader, Writer};
use crate::id::{IndexId, PackId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexedPack {
    pub id: PackId,
    pub size: u64,
    pub blobs: Vec<PackEntry>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexSegment {
    pub packs: Vec<IndexedPack>,
    pub supersedes: Vec<IndexId>,
}

impl IndexSegment {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.id(&p.id.0);
            w.u64(p.size);
            encode_entries(&p.blobs, &mut w);
        }
        w.u32(self.supersedes.len() as u32);
        for id in &self.supersedes {
            w.id(&id.0);
        }
        w.buf
    }

    pub fn decode_body(body: &[u8]) -> DecodeResult<IndexSegment> {
        let mut r = Reader::new(body);
        let n = r.count(32 + 8 + 4, "pack")?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            let id = PackId(r.id()?);
            let size = r.u64()?;
            let blobs = decode_entries(&mut r, size)?;
            packs.push(IndexedPack { id, size, blobs });
        }
        let n = r.count(32, "superseded index")?;
        let mut supersedes = Vec::with_capacity(n);
        for _ in 0..n {
            supersedes.push(IndexId(r.id()?));
        }
        r.finish()?;
        Ok(IndexSegment { packs, supersedes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;
    use crate::id::BlobId;

    #[test]
    fn index_round_trips() {
        let seg = IndexSegment {
            packs: vec![IndexedPack {
                id: PackId([3; 32]),
                size: 1000,
                blobs: vec![PackEntry {
                    kind: BlobKind::Data,
                    id: BlobId([4; 32]),
                    offset: 0,
                    length: 900,
                    raw_length: 2000,
                }],
            }],
            supersedes: vec![IndexId([5; 32])],
        };
        let body = seg.encode_body();
        assert_eq!(IndexSegment::decode_body(&body).unwrap(), seg);
        for cut in 0..body.len() {
            assert!(
                IndexSegment::decode_body(&body[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }
}
