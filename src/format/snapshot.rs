//! Snapshots (`snapshots/<id>`): the commit point of a backup.
//!
//! Sealed payload: time (i64 s, u32 ns) ‖ host (bytes) ‖ user (bytes) ‖ path count (u32)
//! then paths (bytes) ‖ tag count (u32) then tags (bytes) ‖ parent: 0, or 1 and a
//! snapshot id (32) ‖ root tree blob id (32) ‖ program version (bytes) ‖ summary: files new,
//! changed, unchanged, dirs, bytes read, bytes added, blobs added, errors (u64 each),
//! duration in milliseconds (u64).

use super::tree::Timestamp;
use super::wire::{DecodeResult, Reader, Writer};
use crate::id::{BlobId, SnapshotId};

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub dirs: u64,
    pub bytes_read: u64,
    pub bytes_added: u64,
    pub blobs_added: u64,
    pub errors: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Snapshot {
    pub time: Timestamp,
    pub host: String,
    pub user: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub parent: Option<SnapshotId>,
    pub tree: BlobId,
    pub program_version: String,
    pub summary: Summary,
}

const MAX_STRING: usize = 64 * 1024;

impl Snapshot {
    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.i64(self.time.secs);
        w.u32(self.time.nanos);
        w.str(&self.host);
        w.str(&self.user);
        w.u32(self.paths.len() as u32);
        for p in &self.paths {
            w.str(p);
        }
        w.u32(self.tags.len() as u32);
        for t in &self.tags {
            w.str(t);
        }
        match &self.parent {
            Some(id) => {
                w.u8(1);
                w.id(&id.0);
            }
            None => w.u8(0),
        }
        w.id(&self.tree.0);
        w.str(&self.program_version);
        let s = &self.summary;
        for v in [
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.dirs,
            s.bytes_read,
            s.bytes_added,
            s.blobs_added,
            s.errors,
            s.duration_ms,
        ] {
            w.u64(v);
        }
        w.buf
    }

    pub fn decode_body(body: &[u8]) -> DecodeResult<Snapshot> {
        let mut r = Reader::new(body);
        let time = Timestamp {
            secs: r.i64()?,
            nanos: r.u32()?,
        };
        if time.nanos >= 1_000_000_000 {
            return Err(format!("time nanoseconds {} out of range", time.nanos));
        }
        let host = r.string(MAX_STRING, "host")?;
        let user = r.string(MAX_STRING, "user")?;
        let n = r.count(4, "path")?;
        let mut paths = Vec::with_capacity(n);
        for _ in 0..n {
            paths.push(r.string(MAX_STRING, "path")?);
        }
        let n = r.count(4, "tag")?;
        let mut tags = Vec::with_capacity(n);
        for _ in 0..n {
            tags.push(r.string(MAX_STRING, "tag")?);
        }
        let parent = match r.u8()? {
            0 => None,
            1 => Some(SnapshotId(r.id()?)),
            other => return Err(format!("bad parent marker {other}")),
        };
        let tree = BlobId(r.id()?);
        let program_version = r.string(MAX_STRING, "program version")?;
        let summary = Summary {
            files_new: r.u64()?,
            files_changed: r.u64()?,
            files_unchanged: r.u64()?,
            dirs: r.u64()?,
            bytes_read: r.u64()?,
            bytes_added: r.u64()?,
            blobs_added: r.u64()?,
            errors: r.u64()?,
            duration_ms: r.u64()?,
        };
        r.finish()?;
        Ok(Snapshot {
            time,
            host,
            user,
            paths,
            tags,
            parent,
            tree,
            program_version,
            summary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn snapshot_round_trips(host in ".{0,20}", paths in proptest::collection::vec(".{1,30}", 0..5),
                                tags in proptest::collection::vec("[a-z]{1,8}", 0..3), secs in any::<i64>(), files in any::<u64>(), parent in any::<bool>()) {
            let snap = Snapshot {
                time: Timestamp { secs, nanos: 5 },
                host, user: "u".into(), paths, tags,
                parent: parent.then_some(SnapshotId([4; 32])),
                tree: BlobId([9; 32]),
                program_version: "arca 0.1.0".into(),
                summary: Summary { files_new: files, ..Summary::default() },
            };
            let body = snap.encode_body();
            prop_assert_eq!(Snapshot::decode_body(&body).unwrap(), snap);
            prop_assert!(Snapshot::decode_body(&body[..body.len() - 1]).is_err());
        }
    }
}
