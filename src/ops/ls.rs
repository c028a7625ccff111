//! `arca ls`: the entries of a snapshot, below an optional path.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::tree_walk::{self, Target, display_path};
use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Timestamp};
use crate::repository::Repository;

#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub path: String,
    #[serde(rename = "type")]
    pub kind: NodeKind,
    pub mode: u32,
    pub permissions: String,
    pub uid: u32,
    pub gid: u32,
    pub user: String,
    pub group: String,
    pub size: u64,
    pub mtime: Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Entry {
    fn new(path: &Path, node: &Node) -> Self {
        Entry {
            path: display_path(path),
            kind: node.kind,
            mode: node.mode,
            permissions: tree_walk::mode_string(node),
            uid: node.uid,
            gid: node.gid,
            user: String::from_utf8_lossy(&node.user).into_owned(),
            group: String::from_utf8_lossy(&node.group).into_owned(),
            size: node.size,
            mtime: node.mtime,
            target: (node.kind == NodeKind::Symlink)
                .then(|| String::from_utf8_lossy(&node.target).into_owned()),
        }
    }
}

/// Calls `f` with every entry at and below `path` in the tree `root`.
pub fn list(
    repo: &Repository,
    root: &crate::id::BlobId,
    path: &str,
    f: &mut dyn FnMut(Entry),
) -> Result<()> {
    let base: PathBuf = tree_walk::split_path(path)
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    let target = tree_walk::resolve(repo, root, path)?;
    if let Target::Entry(node) = &target {
        f(Entry::new(&base, node.as_ref()));
    }
    if let Some(sub) = target.subtree() {
        tree_walk::walk(repo, &sub, &base, &mut |p, node| {
            f(Entry::new(p, node));
            Ok(true)
        })?;
    }
    Ok(())
}
