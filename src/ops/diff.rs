//! `arca diff`: what changed between two snapshots, entry by entry.
//!
//! Both trees are sorted by name, so they are compared by walking them side by side. A
//! directory whose subtree id is the same in both snapshots holds the same entries: it is
//! not loaded at all, which keeps the diff of two backups of a large, mostly unchanged
//! tree proportional to what changed.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::tree_walk::{self, display_path};
use crate::error::Result;
use crate::format::tree::{Node, NodeKind, Tree};
use crate::id::BlobId;
use crate::repository::Repository;

/// How one entry differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first snapshot.
    Removed,
    /// A file whose content (blob list or size) differs.
    Modified,
    /// Same content, different metadata (mode, owner, mtime, xattrs, symlink target…).
    Metadata,
    /// A different kind of entry under the same name (a file that became a directory…).
    Type,
}

impl ChangeKind {
    /// The one-character marker shown before the path.
    pub fn symbol(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'U',
            ChangeKind::Type => 'T',
        }
    }
}

/// One changed entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub change: ChangeKind,
    /// Absolute path inside the snapshots.
    pub path: String,
    /// The entry's kind: in the second snapshot, or in the first for a removal.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// The kind in the first snapshot, for a type change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_type: Option<NodeKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_size: Option<u64>,
    /// Which metadata differs (`mode`, `uid`, `gid`, `user`, `group`, `mtime`, `xattrs`,
    /// `target`, `rdev`), for modified and metadata changes.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<&'static str>,
}

/// Counts of each kind of change, and how the regular files' total size moved.
///
/// Added files count their size as added and removed files as removed; a modified file
/// counts its growth as added or its shrinkage as removed. So `bytes_added - bytes_removed`
/// is exactly the change in the total size of the files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    pub added: u64,
    pub removed: u64,
    pub modified: u64,
    pub metadata: u64,
    pub type_changed: u64,
    pub bytes_added: u64,
    pub bytes_removed: u64,
}

impl DiffSummary {
    fn count(&mut self, c: &Change) {
        match c.change {
            ChangeKind::Added => self.added += 1,
            ChangeKind::Removed => self.removed += 1,
            ChangeKind::Modified => self.modified += 1,
            ChangeKind::Metadata => self.metadata += 1,
            ChangeKind::Type => self.type_changed += 1,
        }
        let (old, new) = (c.old_size.unwrap_or(0), c.new_size.unwrap_or(0));
        match new.cmp(&old) {
            Ordering::Greater => self.bytes_added += new - old,
            Ordering::Less => self.bytes_removed += old - new,
            Ordering::Equal => {}
        }
    }
}

/// The size a regular file contributes to the totals; other kinds contribute none.
fn file_size(node: &Node) -> Option<u64> {
    (node.kind == NodeKind::File).then_some(node.size)
}

/// The metadata fields in which two entries of the same kind differ. Inode, device, link
/// count and ctime are left out: they change on every copy or restore without the file
/// changing in any way a user would care about.
pub fn metadata_differences(old: &Node, new: &Node) -> Vec<&'static str> {
    let mut fields = Vec::new();
    let checks: [(&'static str, bool); 9] = [
        ("mode", old.mode != new.mode),
        ("uid", old.uid != new.uid),
        ("gid", old.gid != new.gid),
        ("user", old.user != new.user),
        ("group", old.group != new.group),
        ("mtime", old.mtime != new.mtime),
        ("xattrs", old.xattrs != new.xattrs),
        ("target", old.target != new.target),
        ("rdev", old.rdev != new.rdev),
    ];
    for (name, differs) in checks {
        if differs {
            fields.push(name);
        }
    }
    fields
}

/// Compares the trees `old` and `new` (two snapshots' roots), calling `f` with every change
/// in path order, parents before their contents. Returns the counts.
pub fn diff(
    repo: &Repository,
    old: &BlobId,
    new: &BlobId,
    f: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<DiffSummary> {
    let mut summary = DiffSummary::default();
    if old != new {
        let mut emit = |c: Change| {
            summary.count(&c);
            f(c)
        };
        let (old_tree, new_tree) = (repo.load_tree(old)?, repo.load_tree(new)?);
        diff_trees(repo, &old_tree, &new_tree, Path::new(""), &mut emit)?;
    }
    Ok(summary)
}

fn diff_trees(
    repo: &Repository,
    old: &Tree,
    new: &Tree,
    prefix: &Path,
    emit: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    let (mut i, mut j) = (0, 0);
    while i < old.nodes.len() || j < new.nodes.len() {
        let order = match (old.nodes.get(i), new.nodes.get(j)) {
            (Some(a), Some(b)) => a.name.cmp(&b.name),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                let node = &old.nodes[i];
                let path = prefix.join(OsStr::from_bytes(&node.name));
                one_sided(repo, ChangeKind::Removed, &path, node, emit)?;
                i += 1;
            }
            Ordering::Greater => {
                let node = &new.nodes[j];
                let path = prefix.join(OsStr::from_bytes(&node.name));
                one_sided(repo, ChangeKind::Added, &path, node, emit)?;
                j += 1;
            }
            Ordering::Equal => {
                let (a, b) = (&old.nodes[i], &new.nodes[j]);
                let path = prefix.join(OsStr::from_bytes(&a.name));
                diff_nodes(repo, &path, a, b, emit)?;
                i += 1;
                j += 1;
            }
        }
    }
    Ok(())
}

/// Two entries of the same name.
fn diff_nodes(
    repo: &Repository,
    path: &Path,
    a: &Node,
    b: &Node,
    emit: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    if a.kind != b.kind {
        emit(Change {
            change: ChangeKind::Type,
            path: display_path(path),
            kind: b.kind,
            old_type: Some(a.kind),
            old_size: file_size(a),
            new_size: file_size(b),
            fields: Vec::new(),
        })?;
        // What the old directory held is gone; what the new one holds is new.
        if let Some(sub) = &a.subtree {
            walk_one_sided(repo, ChangeKind::Removed, sub, path, emit)?;
        }
        if let Some(sub) = &b.subtree {
            walk_one_sided(repo, ChangeKind::Added, sub, path, emit)?;
        }
        return Ok(());
    }
    let fields = metadata_differences(a, b);
    let content_differs = a.kind == NodeKind::File && (a.content != b.content || a.size != b.size);
    let change = if content_differs {
        Some(ChangeKind::Modified)
    } else if !fields.is_empty() {
        Some(ChangeKind::Metadata)
    } else {
        None
    };
    if let Some(change) = change {
        emit(Change {
            change,
            path: display_path(path),
            kind: b.kind,
            old_type: None,
            old_size: file_size(a),
            new_size: file_size(b),
            fields,
        })?;
    }
    if let (Some(old_sub), Some(new_sub)) = (&a.subtree, &b.subtree)
        && old_sub != new_sub
    {
        let (old_tree, new_tree) = (repo.load_tree(old_sub)?, repo.load_tree(new_sub)?);
        diff_trees(repo, &old_tree, &new_tree, path, emit)?;
    }
    Ok(())
}

fn one_sided_change(change: ChangeKind, path: &Path, node: &Node) -> Change {
    let size = file_size(node);
    Change {
        change,
        path: display_path(path),
        kind: node.kind,
        old_type: None,
        old_size: if change == ChangeKind::Removed {
            size
        } else {
            None
        },
        new_size: if change == ChangeKind::Added {
            size
        } else {
            None
        },
        fields: Vec::new(),
    }
}

/// An entry in only one snapshot, and if a directory, everything below it.
fn one_sided(
    repo: &Repository,
    change: ChangeKind,
    path: &Path,
    node: &Node,
    emit: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    emit(one_sided_change(change, path, node))?;
    if let Some(sub) = &node.subtree {
        walk_one_sided(repo, change, sub, path, emit)?;
    }
    Ok(())
}

fn walk_one_sided(
    repo: &Repository,
    change: ChangeKind,
    tree: &BlobId,
    path: &Path,
    emit: &mut dyn FnMut(Change) -> Result<()>,
) -> Result<()> {
    let base: PathBuf = path.to_path_buf();
    tree_walk::walk(repo, tree, &base, &mut |p, node| {
        emit(one_sided_change(change, p, node))?;
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;
    use crate::format::tree::Timestamp;

    /// A fresh repository in memory, with its cache folder (kept alive by the caller).
    fn test_repo() -> (Repository, tempfile::TempDir) {
        let (repo, _storage, cache) = crate::repository::testing::test_repo();
        (repo, cache)
    }

    fn file(name: &str, content: &[u8]) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o100644,
            mtime: Timestamp {
                secs: 100,
                nanos: 0,
            },
            size: content.len() as u64,
            // The content ids need not be stored: diff never reads file data.
            content: vec![BlobId(*blake3::hash(content).as_bytes())],
            ..Node::default()
        }
    }

    fn symlink(name: &str, target: &str) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::Symlink,
            mode: 0o120777,
            target: target.as_bytes().to_vec(),
            ..Node::default()
        }
    }

    fn dir(name: &str, subtree: BlobId) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::Dir,
            mode: 0o40755,
            subtree: Some(subtree),
            ..Node::default()
        }
    }

    fn save(repo: &Repository, nodes: Vec<Node>) -> BlobId {
        let mut tree = Tree { nodes };
        tree.sort();
        let saver = repo.saver().unwrap();
        let id = saver.save(BlobKind::Tree, &tree.encode_body()).unwrap().id;
        saver.finish().unwrap();
        id
    }

    fn run(repo: &Repository, old: &BlobId, new: &BlobId) -> (Vec<String>, DiffSummary) {
        let mut lines = Vec::new();
        let summary = diff(repo, old, new, &mut |c| {
            lines.push(format!("{} {}", c.change.symbol(), c.path));
            Ok(())
        })
        .unwrap();
        (lines, summary)
    }

    #[test]
    fn every_kind_of_change_is_reported_once_in_path_order() {
        let (repo, _cache) = test_repo();
        // A subtree both snapshots share, never stored: diff must not try to load it.
        let shared = BlobId([7; 32]);
        let gone = save(&repo, vec![file("inner", b"old inner")]);
        let new_dir = save(&repo, vec![file("x", b"xx"), file("y", b"yyy")]);
        let sub_old = save(&repo, vec![file("deep", b"deep one"), file("same", b"s")]);
        let sub_new = save(&repo, vec![file("deep", b"deep two!"), file("same", b"s")]);
        let mut chmod = file("chmod", b"c");
        let old = save(
            &repo,
            vec![
                file("changed", b"four"),
                chmod.clone(),
                dir("gone", gone),
                symlink("link", "a"),
                file("removed", b"12345"),
                dir("shared", shared),
                dir("sub", sub_old),
                file("was_file", b"12"),
            ],
        );
        chmod.mode = 0o100600;
        let old_dir = dir("was_file", new_dir);
        let new = save(
            &repo,
            vec![
                file("added", b"123"),
                file("changed", b"fives"),
                chmod,
                symlink("link", "b"),
                dir("new_dir", new_dir),
                dir("shared", shared),
                dir("sub", sub_new),
                old_dir,
            ],
        );
        let (lines, summary) = run(&repo, &old, &new);
        assert_eq!(
            lines,
            [
                "+ /added",
                "M /changed",
                "U /chmod",
                "- /gone",
                "- /gone/inner",
                "U /link",
                "+ /new_dir",
                "+ /new_dir/x",
                "+ /new_dir/y",
                "- /removed",
                "M /sub/deep",
                "T /was_file",
                "+ /was_file/x",
                "+ /was_file/y",
            ]
        );
        assert_eq!(
            summary,
            DiffSummary {
                added: 6,
                removed: 3,
                modified: 2,
                metadata: 2,
                type_changed: 1,
                // added 3 + changed 1 + new_dir 5 + deep 1 + was_file/ 5
                bytes_added: 15,
                // gone/inner 9 + removed 5 + was_file 2
                bytes_removed: 16,
            }
        );
        // Same roots: nothing is loaded, nothing differs.
        assert_eq!(run(&repo, &old, &old).0, Vec::<String>::new());
    }

    #[test]
    fn the_size_totals_move_by_exactly_added_minus_removed() {
        let (repo, _cache) = test_repo();
        let old = save(&repo, vec![file("a", b"aaaa"), file("b", b"bb")]);
        let new = save(&repo, vec![file("a", b"a"), file("c", b"cccccc")]);
        let (lines, s) = run(&repo, &old, &new);
        assert_eq!(lines, ["M /a", "- /b", "+ /c"]);
        let (before, after) = (4 + 2, 1 + 6);
        assert_eq!(
            after as i64 - before as i64,
            s.bytes_added as i64 - s.bytes_removed as i64
        );
    }

    #[test]
    fn metadata_fields_are_named() {
        let a = file("f", b"x");
        let mut b = a.clone();
        b.uid = 5;
        b.mtime.secs += 1;
        b.ctime.secs += 1;
        b.inode += 1;
        assert_eq!(metadata_differences(&a, &b), ["uid", "mtime"]);
    }
}
