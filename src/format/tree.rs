//! Tree blobs: one directory's entries, encoded deterministically so that an unchanged
//! directory always produces the same bytes, hence the same blob id.
//!
//! Body: entry count (u32), then per entry, in strictly increasing byte order of name:
//! name (bytes) ‖ kind (u8) ‖ mode (u32) ‖ uid (u32) ‖ gid (u32) ‖ user (bytes) ‖
//! group (bytes) ‖ mtime (i64 s, u32 ns) ‖ ctime (i64 s, u32 ns) ‖ size (u64) ‖
//! inode (u64) ‖ device (u64) ‖ links (u64) ‖ rdev (u64) ‖ flags (u8) ‖ chunker profile (u8) ‖
//! xattr count (u32) then name (bytes) ‖ value (bytes) each, sorted by name ‖
//! symlink target (bytes) ‖ content blob count (u32) then ids (32 each) ‖
//! subtree: 0, or 1 followed by the subtree's blob id (32).

use super::wire::{DecodeResult, Reader, Writer};
use crate::id::BlobId;

pub const MAX_NAME_LEN: usize = 4096;
pub const MAX_XATTR_VALUE_LEN: usize = 1 << 20;
pub const MAX_TARGET_LEN: usize = 64 * 1024;
/// Smallest possible encoded entry, used to bound counts before allocating.
const MIN_ENTRY_LEN: usize = 4 + 1 + 12 + 4 + 4 + 24 + 40 + 2 + 4 + 4 + 4 + 1;

/// Entry flag: the file had holes when it was backed up.
pub const FLAG_SPARSE: u8 = 1;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum NodeKind {
    #[default]
    File = 1,
    Dir = 2,
    Symlink = 3,
    Fifo = 4,
    CharDevice = 5,
    BlockDevice = 6,
    Socket = 7,
}

impl NodeKind {
    fn from_u8(v: u8) -> Option<NodeKind> {
        Some(match v {
            1 => NodeKind::File,
            2 => NodeKind::Dir,
            3 => NodeKind::Symlink,
            4 => NodeKind::Fifo,
            5 => NodeKind::CharDevice,
            6 => NodeKind::BlockDevice,
            7 => NodeKind::Socket,
            _ => return None,
        })
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Timestamp {
    pub secs: i64,
    pub nanos: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub user: Vec<u8>,
    pub group: Vec<u8>,
    pub mtime: Timestamp,
    pub ctime: Timestamp,
    pub size: u64,
    pub inode: u64,
    pub device: u64,
    pub links: u64,
    pub rdev: u64,
    pub flags: u8,
    /// Which chunking produced `content` (0: the repository's content-defined chunker).
    pub chunker_profile: u8,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub target: Vec<u8>,
    pub content: Vec<BlobId>,
    pub subtree: Option<BlobId>,
}

impl Node {
    pub fn is_sparse(&self) -> bool {
        self.flags & FLAG_SPARSE != 0
    }
}

/// A directory's entries, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

/// Whether `name` may be an entry of a directory: not empty, `.` or `..`, and without
/// `/` or NUL. Restore relies on this to never write outside its target.
pub fn is_safe_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

fn put_time(w: &mut Writer, t: Timestamp) {
    w.i64(t.secs);
    w.u32(t.nanos);
}

fn get_time(r: &mut Reader<'_>) -> DecodeResult<Timestamp> {
    let t = Timestamp {
        secs: r.i64()?,
        nanos: r.u32()?,
    };
    if t.nanos >= 1_000_000_000 {
        return Err(format!("timestamp nanoseconds {} out of range", t.nanos));
    }
    Ok(t)
}

impl Tree {
    /// Sorts entries by name, as the encoding requires.
    pub fn sort(&mut self) {
        self.nodes.sort_by(|a, b| a.name.cmp(&b.name));
    }

    pub fn find(&self, name: &[u8]) -> Option<&Node> {
        self.nodes
            .binary_search_by(|n| n.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.nodes[i])
    }

    pub fn encode_body(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.buf.reserve(self.nodes.len() * 160);
        w.u32(self.nodes.len() as u32);
        for n in &self.nodes {
            w.bytes(&n.name);
            w.u8(n.kind as u8);
            w.u32(n.mode);
            w.u32(n.uid);
            w.u32(n.gid);
            w.bytes(&n.user);
            w.bytes(&n.group);
            put_time(&mut w, n.mtime);
            put_time(&mut w, n.ctime);
            w.u64(n.size);
            w.u64(n.inode);
            w.u64(n.device);
            w.u64(n.links);
            w.u64(n.rdev);
            w.u8(n.flags);
            w.u8(n.chunker_profile);
            w.u32(n.xattrs.len() as u32);
            for (k, v) in &n.xattrs {
                w.bytes(k);
                w.bytes(v);
            }
            w.bytes(&n.target);
            w.u32(n.content.len() as u32);
            for id in &n.content {
                w.id(&id.0);
            }
            match &n.subtree {
                Some(id) => {
                    w.u8(1);
                    w.id(&id.0);
                }
                None => w.u8(0),
            }
        }
        w.buf
    }

    /// Decodes a tree and checks what restore depends on: safe, unique, sorted names.
    pub fn decode_body(body: &[u8]) -> DecodeResult<Tree> {
        let mut r = Reader::new(body);
        let count = r.count(MIN_ENTRY_LEN, "tree entry")?;
        let mut nodes: Vec<Node> = Vec::with_capacity(count);
        for _ in 0..count {
            let name = r.bytes(MAX_NAME_LEN, "entry name")?.to_vec();
            if !is_safe_name(&name) {
                return Err(format!(
                    "entry name {:?} is not allowed",
                    String::from_utf8_lossy(&name)
                ));
            }
            if let Some(prev) = nodes.last()
                && prev.name >= name
            {
                return Err(format!(
                    "entry {:?} is out of order or repeated",
                    String::from_utf8_lossy(&name)
                ));
            }
            let kind = r.u8()?;
            let kind =
                NodeKind::from_u8(kind).ok_or_else(|| format!("unknown entry kind {kind}"))?;
            let mut node = Node {
                name,
                kind,
                mode: r.u32()?,
                uid: r.u32()?,
                gid: r.u32()?,
                user: r.bytes(1024, "user name")?.to_vec(),
                group: r.bytes(1024, "group name")?.to_vec(),
                mtime: get_time(&mut r)?,
                ctime: get_time(&mut r)?,
                size: r.u64()?,
                inode: r.u64()?,
                device: r.u64()?,
                links: r.u64()?,
                rdev: r.u64()?,
                flags: r.u8()?,
                chunker_profile: r.u8()?,
                ..Node::default()
            };
            let xattrs = r.count(8, "extended attribute")?;
            for _ in 0..xattrs {
                let k = r.bytes(MAX_NAME_LEN, "attribute name")?.to_vec();
                let v = r.bytes(MAX_XATTR_VALUE_LEN, "attribute value")?.to_vec();
                node.xattrs.push((k, v));
            }
            node.target = r.bytes(MAX_TARGET_LEN, "symlink target")?.to_vec();
            let blobs = r.count(32, "content blob")?;
            node.content.reserve_exact(blobs);
            for _ in 0..blobs {
                node.content.push(BlobId(r.id()?));
            }
            node.subtree = match r.u8()? {
                0 => None,
                1 => Some(BlobId(r.id()?)),
                other => return Err(format!("bad subtree marker {other}")),
            };
            if kind == NodeKind::Dir && node.subtree.is_none() {
                return Err(format!(
                    "directory {:?} has no subtree",
                    String::from_utf8_lossy(&node.name)
                ));
            }
            if kind != NodeKind::Dir && node.subtree.is_some() {
                return Err(format!(
                    "non-directory {:?} has a subtree",
                    String::from_utf8_lossy(&node.name)
                ));
            }
            nodes.push(node);
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file(name: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o100644,
            user: b"root".to_vec(),
            mtime: Timestamp { secs: 1, nanos: 2 },
            size: 5,
            content: vec![BlobId([1; 32])],
            xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
            ..Node::default()
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for bad in ["", ".", "..", "a/b", "/abs", "nul\0"] {
            let tree = Tree {
                nodes: vec![file(bad)],
            };
            let err = Tree::decode_body(&tree.encode_body()).unwrap_err();
            assert!(err.contains("not allowed"), "{bad:?}: {err}");
        }
        let dup = Tree {
            nodes: vec![file("a"), file("a")],
        };
        assert!(
            Tree::decode_body(&dup.encode_body())
                .unwrap_err()
                .contains("repeated")
        );
        let unsorted = Tree {
            nodes: vec![file("b"), file("a")],
        };
        assert!(Tree::decode_body(&unsorted.encode_body()).is_err());
    }

    #[test]
    fn truncations_never_decode() {
        let tree = Tree {
            nodes: vec![file("a"), file("b")],
        };
        let body = tree.encode_body();
        for cut in 0..body.len() {
            assert!(Tree::decode_body(&body[..cut]).is_err());
        }
    }

    proptest! {
        #[test]
        fn tree_round_trips(names in proptest::collection::btree_set("[a-z0-9._-]{1,12}", 0..20), size in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let mut tree = Tree::default();
            for name in names.iter().filter(|n| is_safe_name(n.as_bytes())) {
                let mut n = file(name);
                n.size = size;
                n.ctime = Timestamp { secs: -5, nanos };
                tree.nodes.push(n);
            }
            let body = tree.encode_body();
            prop_assert_eq!(Tree::decode_body(&body).unwrap(), tree.clone());
            prop_assert_eq!(tree.encode_body(), body);
        }
    }
}
