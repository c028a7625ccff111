//! Finding and visiting entries of a snapshot's trees.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::repository::Repository;

/// Trees read and decoded at once, in parallel, by the walks over whole snapshots (prune's
/// and verify's): enough to keep every core busy, few enough to bound memory.
const TREES_AT_ONCE: usize = 256;

/// Subdirectories of one directory whose trees a walk in order loads at once, in
/// parallel. Memory: this many trees for each level of the path being walked.
const SUBTREES_AT_ONCE: usize = 16;

/// Takes the next batch of trees to load off the end of `pending`: at most
/// [`TREES_AT_ONCE`], without those already in `seen`, which the rest are added to.
pub fn next_tree_batch(pending: &mut Vec<BlobId>, seen: &mut HashSet<BlobId>) -> Vec<BlobId> {
    let take = pending.len().min(TREES_AT_ONCE);
    pending
        .split_off(pending.len() - take)
        .into_iter()
        .filter(|id| seen.insert(*id))
        .collect()
}

/// A path inside a snapshot, split into names; `/a/b`, `a/b` and `a/b/` are the same.
pub fn split_path(path: &str) -> Vec<&[u8]> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::as_bytes)
        .collect()
}

/// What a path inside a snapshot names: the root, or one entry.
pub enum Target {
    Root(BlobId),
    Entry(Box<Node>),
}

impl Target {
    /// The tree to descend into, if this is a directory.
    pub fn subtree(&self) -> Option<BlobId> {
        match self {
            Target::Root(id) => Some(*id),
            Target::Entry(node) => node.subtree,
        }
    }
}

/// Looks up `path` below the tree `root`.
pub fn resolve(repo: &Repository, root: &BlobId, path: &str) -> Result<Target> {
    let names = split_path(path);
    let mut tree_id = *root;
    let mut found = Target::Root(*root);
    for (i, name) in names.iter().enumerate() {
        let tree = repo.load_tree(&tree_id)?;
        let node = tree
            .find(name)
            .ok_or_else(|| Error::NotFound(format!("{path:?} in the snapshot")))?;
        if i + 1 < names.len() {
            tree_id = node.subtree.ok_or_else(|| {
                Error::invalid(format!(
                    "{:?} in the snapshot is not a directory",
                    names[..=i].join(&b'/').escape_ascii().to_string()
                ))
            })?;
        }
        found = Target::Entry(Box::new(node.clone()));
    }
    Ok(found)
}

/// Visits every entry below `tree` depth first, parents before children, with its path
/// (relative to the tree). `visit` returns false to skip a directory's contents.
pub fn walk(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
) -> Result<()> {
    walk_tree(repo, &repo.load_tree(tree)?, prefix, visit, &mut |_, e| {
        Err(e)
    })
}

/// Like [`walk`], but a directory below `tree` whose own tree cannot be loaded is handed to
/// `damaged` with the error and its contents skipped, so the rest is still visited.
pub fn walk_around_damage(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    damaged: &mut dyn FnMut(&Path, Error),
) -> Result<()> {
    walk_tree(
        repo,
        &repo.load_tree(tree)?,
        prefix,
        visit,
        &mut |path, e| {
            damaged(path, e);
            Ok(())
        },
    )
}

fn walk_tree(
    repo: &Repository,
    tree: &Tree,
    prefix: &Path,
    visit: &mut dyn FnMut(&Path, &Node) -> Result<bool>,
    on_damage: &mut dyn FnMut(&Path, Error) -> Result<()>,
) -> Result<()> {
    let mut rest = tree.nodes.as_slice();
    while !rest.is_empty() {
        // The next few subdirectories' trees are read and decoded side by side; the walk
        // then visits their entries in order, one directory after another.
        let batch = batch_with_subtrees(rest, SUBTREES_AT_ONCE);
        let (nodes, after) = rest.split_at(batch);
        rest = after;
        let mut subtrees: Vec<Option<Result<Tree>>> = nodes
            .par_iter()
            .map(|node| subtree_of(node).map(|id| repo.load_tree(id)))
            .collect();
        for (node, subtree) in nodes.iter().zip(subtrees.iter_mut()) {
            let path = prefix.join(OsStr::from_bytes(&node.name));
            if !visit(&path, node)? {
                continue;
            }
            match subtree.take() {
                Some(Ok(subtree)) => walk_tree(repo, &subtree, &path, visit, on_damage)?,
                Some(Err(e)) => on_damage(&path, e)?,
                None => {}
            }
        }
    }
    Ok(())
}

/// The tree of a directory entry.
fn subtree_of(node: &Node) -> Option<&BlobId> {
    node.subtree.as_ref().filter(|_| node.kind == NodeKind::Dir)
}

/// How many of `nodes`, from the first, hold at most `dirs` directories with a tree: the
/// entries whose subtrees are loaded together.
fn batch_with_subtrees(nodes: &[Node], dirs: usize) -> usize {
    let mut seen = 0;
    for (i, node) in nodes.iter().enumerate() {
        if subtree_of(node).is_some() {
            if seen == dirs {
                return i;
            }
            seen += 1;
        }
    }
    nodes.len()
}

/// `ls -l` style permission string of a mode.
pub fn mode_string(node: &Node) -> String {
    let kind = match node.kind {
        NodeKind::File => '-',
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::CharDevice => 'c',
        NodeKind::BlockDevice => 'b',
        NodeKind::Socket => 's',
    };
    let mut s = String::with_capacity(10);
    s.push(kind);
    for shift in [6, 3, 0] {
        let bits = (node.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

pub fn display_path(path: &Path) -> String {
    PathBuf::from("/").join(path).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_ends_before_the_directory_past_its_limit() {
        let node = |name: &str, dir: bool| Node {
            name: name.into(),
            kind: if dir { NodeKind::Dir } else { NodeKind::File },
            subtree: dir.then_some(BlobId([7; 32])),
            ..Node::default()
        };
        let nodes = vec![
            node("a", true),
            node("b", false),
            node("c", true),
            node("d", false),
            node("e", true),
            node("f", false),
        ];
        assert_eq!(batch_with_subtrees(&nodes, 1), 2);
        assert_eq!(batch_with_subtrees(&nodes, 2), 4);
        assert_eq!(batch_with_subtrees(&nodes, 3), 6);
        assert_eq!(batch_with_subtrees(&nodes[1..], 1), 3);
        assert_eq!(batch_with_subtrees(&nodes[5..], 1), 1);
        // A directory without a tree loads nothing and does not count.
        let mut bare = node("g", true);
        bare.subtree = None;
        assert_eq!(batch_with_subtrees(&[bare, node("h", true)], 1), 2);
    }

    #[test]
    fn tree_batches_are_bounded_and_skip_trees_already_seen() {
        let id = |n: u16| {
            let mut bytes = [0u8; 32];
            bytes[..2].copy_from_slice(&n.to_le_bytes());
            BlobId(bytes)
        };
        let mut pending: Vec<BlobId> = (0..300).map(id).collect();
        let mut seen: HashSet<BlobId> = HashSet::from([id(299), id(0)]);
        let first = next_tree_batch(&mut pending, &mut seen);
        assert_eq!(first.len(), TREES_AT_ONCE - 1, "299 was seen already");
        assert_eq!(pending.len(), 300 - TREES_AT_ONCE);
        assert!(!first.contains(&id(299)));
        // A tree met twice in one batch is loaded once.
        pending.push(id(1));
        pending.push(id(1));
        let second = next_tree_batch(&mut pending, &mut seen);
        assert!(pending.is_empty());
        assert_eq!(second.iter().filter(|b| **b == id(1)).count(), 1);
        assert!(!second.contains(&id(0)));
        assert_eq!(seen.len(), 300);
    }
}
