//! `arca copy`: copy snapshots into another repository, which has its own master key.
//!
//! Blob ids are keyed, so the target names every blob differently: each blob is read and
//! authenticated in the source, then saved in the target, which computes the target's id
//! and deduplicates against what it already holds. Data chunks keep their boundaries (a
//! file's content is the same list of chunks); trees are rewritten bottom-up with the new
//! content and subtree ids. The target's blobs are durable and indexed before the
//! snapshot that needs them is written, one snapshot at a time, so an interrupted copy
//! leaves only complete snapshots and a rerun carries on where it stopped.
//!
//! A snapshot counts as already copied when the target has one with the same time (to the
//! nanosecond), host, paths and tags. When a snapshot's parent (or an earlier snapshot of
//! the same host and paths) is already in the target, the two trees are walked side by
//! side, so unchanged directories and files map to the target's ids without being read
//! again: copying a new snapshot costs about what its backup added.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rayon::prelude::*;
use serde::Serialize;

use super::{Problem, Progress};
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{Node, NodeKind, Timestamp, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repository::{BlobSaver, Lock, LockKind, Repository, SnapshotFilter};

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Snapshot specs (ids, id prefixes, `latest`); empty means every snapshot.
    pub snapshots: Vec<String>,
    /// Restricts the default selection and what `latest` names.
    pub filter: SnapshotFilter,
    /// Decide what to copy, write nothing.
    pub dry_run: bool,
}

/// A snapshot of the source and its counterpart in the target.
#[derive(Clone, Debug, Serialize)]
pub struct CopiedSnapshot {
    pub source: SnapshotId,
    /// The copy in the target; none in a dry run.
    pub target: Option<SnapshotId>,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct CopyReport {
    /// Snapshots written to the target (to be written, in a dry run), oldest first.
    pub copied: Vec<CopiedSnapshot>,
    /// Snapshots the target already had: same time, host, paths and tags.
    pub skipped: Vec<CopiedSnapshot>,
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added to the target.
    pub raw_bytes_added: u64,
    /// Bytes written to the target's packs for them (compressed and sealed).
    pub bytes_added: u64,
    pub packs_written: u64,
    /// Blobs read from the source, and their plaintext bytes.
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Snapshot files that could not be read (in the source: not copied; in the target:
    /// their snapshots may be copied again).
    pub problems: Vec<Problem>,
}

/// What makes two snapshots the same backup, whatever repository holds them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Identity {
    time: Timestamp,
    host: String,
    paths: Vec<String>,
    tags: Vec<String>,
}

impl Identity {
    fn of(s: &Snapshot) -> Identity {
        Identity {
            time: s.time,
            host: s.host.clone(),
            paths: s.paths.clone(),
            tags: s.tags.clone(),
        }
    }
}

fn described(source: SnapshotId, target: Option<SnapshotId>, s: &Snapshot) -> CopiedSnapshot {
    CopiedSnapshot {
        source,
        target,
        time: s.time,
        host: s.host.clone(),
        paths: s.paths.clone(),
        tags: s.tags.clone(),
    }
}

/// Copies the selected snapshots of `source` that `target` does not have yet.
pub fn copy(
    source: &Repository,
    target: &Repository,
    options: &CopyOptions,
    progress: &dyn Progress,
) -> Result<CopyReport> {
    if source.config().repo_id == target.config().repo_id {
        // Also true of a mirror: both would share one local index, and every blob already.
        return Err(Error::invalid(format!(
            "{} and {} are the same repository (or copies of it): copy needs a repository made \
             with its own `arca init`",
            source.location(),
            target.location()
        )));
    }
    let _source_lock = source.lock(LockKind::Shared, "copy")?;
    let target_lock = target.lock(LockKind::Shared, "copy")?;
    let mut report = CopyReport::default();

    let (source_snapshots, damaged) = source.list_readable_snapshots()?;
    let selected: Vec<(SnapshotId, Snapshot)> = if options.snapshots.is_empty() {
        for (path, e) in damaged {
            report.problems.push(Problem {
                path: format!("{}: {path}", source.location()),
                message: format!("{e}; not copied"),
            });
        }
        source_snapshots
            .iter()
            .filter(|(_, s)| options.filter.matches(s))
            .cloned()
            .collect()
    } else {
        let mut seen = HashSet::new();
        let mut chosen = Vec::new();
        for spec in &options.snapshots {
            let (id, s) = source.find_snapshot(spec, &options.filter)?;
            if seen.insert(id) {
                chosen.push((id, s));
            }
        }
        // Oldest first, so that a parent is copied before its children.
        chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        chosen
    };

    let (target_snapshots, target_damaged) = target.list_readable_snapshots()?;
    for (path, e) in target_damaged {
        report.problems.push(Problem {
            path: format!("{}: {path}", target.location()),
            message: format!("{e}; a copy of its snapshot would not be recognised"),
        });
    }
    let mut in_target: HashMap<Identity, (SnapshotId, BlobId)> = target_snapshots
        .iter()
        .map(|(id, s)| (Identity::of(s), (*id, s.tree)))
        .collect();
    let source_by_id: HashMap<SnapshotId, &Snapshot> =
        source_snapshots.iter().map(|(id, s)| (*id, s)).collect();

    let copier = Copier {
        source,
        target,
        progress,
        map: Mutex::new(HashMap::new()),
        blobs_read: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
    };
    for (id, snapshot) in &selected {
        if let Some((existing, _)) = in_target.get(&Identity::of(snapshot)) {
            report
                .skipped
                .push(described(*id, Some(*existing), snapshot));
            continue;
        }
        if options.dry_run {
            report.copied.push(described(*id, None, snapshot));
            continue;
        }
        let parent = snapshot
            .parent
            .and_then(|p| source_by_id.get(&p))
            .and_then(|p| in_target.get(&Identity::of(p)))
            .map(|(target_id, _)| *target_id);
        let like = similar_copied(snapshot, &source_snapshots, &in_target);
        let copied = copier
            .copy_snapshot(snapshot, parent, like, &target_lock)
            .map_err(|e| match e {
                Error::Corrupt { object, reason } => Error::Corrupt {
                    object: format!("{object} (needed by snapshot {})", id.short()),
                    reason,
                },
                Error::NotFound(what) => {
                    Error::NotFound(format!("{what} for snapshot {}", id.short()))
                }
                other => other,
            })?;
        report.blobs_added += copied.stats.blobs_added;
        report.raw_bytes_added += copied.stats.raw_bytes_added;
        report.bytes_added += copied.stats.stored_bytes_added;
        report.packs_written += copied.stats.packs_written;
        in_target.insert(Identity::of(snapshot), (copied.id, copied.tree));
        report
            .copied
            .push(described(*id, Some(copied.id), snapshot));
    }
    report.blobs_read = copier.blobs_read.load(Ordering::Relaxed);
    report.bytes_read = copier.bytes_read.load(Ordering::Relaxed);
    Ok(report)
}

/// A source snapshot's tree and its copy's tree in the target, to walk side by side:
/// the snapshot's parent if it was copied, else the newest earlier snapshot of the same
/// host and paths that was.
fn similar_copied(
    snapshot: &Snapshot,
    source: &[(SnapshotId, Snapshot)],
    in_target: &HashMap<Identity, (SnapshotId, BlobId)>,
) -> Option<(BlobId, BlobId)> {
    let copy_of = |s: &Snapshot| {
        in_target
            .get(&Identity::of(s))
            .map(|(_, tree)| (s.tree, *tree))
    };
    if let Some(parent) = snapshot.parent
        && let Some((_, s)) = source.iter().find(|(id, _)| *id == parent)
        && let Some(pair) = copy_of(s)
    {
        return Some(pair);
    }
    source
        .iter()
        .rev()
        .filter(|(_, s)| {
            s.time <= snapshot.time && s.host == snapshot.host && s.paths == snapshot.paths
        })
        .find_map(|(_, s)| copy_of(s))
}

struct Copied {
    id: SnapshotId,
    tree: BlobId,
    stats: crate::repository::SaveStats,
}

struct Copier<'a> {
    source: &'a Repository,
    target: &'a Repository,
    progress: &'a dyn Progress,
    /// Source blob id → target blob id, for every blob copied or matched in this run.
    map: Mutex<HashMap<BlobId, BlobId>>,
    blobs_read: AtomicU64,
    bytes_read: AtomicU64,
}

impl Copier<'_> {
    fn map(&self) -> MutexGuard<'_, HashMap<BlobId, BlobId>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mapped(&self, id: &BlobId) -> Option<BlobId> {
        self.map().get(id).copied()
    }

    fn copy_snapshot(
        &self,
        snapshot: &Snapshot,
        parent: Option<SnapshotId>,
        like: Option<(BlobId, BlobId)>,
        target_lock: &Lock,
    ) -> Result<Copied> {
        let saver = self.target.saver()?;
        // Ids taken from an earlier copy are only trusted while none of its packs is gone.
        let like = like.filter(|_| !saver.packs_were_missing());
        let tree = self.copy_tree(&saver, &snapshot.tree, like)?;
        // The commit point: every blob durable and indexed, then the snapshot.
        let stats = saver.finish()?;
        let copy = Snapshot {
            parent,
            tree,
            ..snapshot.clone()
        };
        target_lock.check()?;
        let id = self.target.save_snapshot(&copy)?;
        Ok(Copied { id, tree, stats })
    }

    /// Reads a blob from the source (authenticated against its id).
    fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let data = self.source.load_blob(id)?;
        self.blobs_read.fetch_add(1, Ordering::Relaxed);
        self.bytes_read
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Ok(data)
    }

    fn copy_data(&self, saver: &BlobSaver<'_>, id: &BlobId) -> Result<()> {
        let data = self.read(id)?;
        let saved = saver.save(BlobKind::Data, &data)?;
        self.progress.advance(0, data.len() as u64);
        self.map().insert(*id, saved.id);
        Ok(())
    }

    /// Copies a tree and everything below it; returns its id in the target. `like` is a
    /// source tree at the same place in a snapshot already copied, and its copy.
    fn copy_tree(
        &self,
        saver: &BlobSaver<'_>,
        id: &BlobId,
        like: Option<(BlobId, BlobId)>,
    ) -> Result<BlobId> {
        if let Some(done) = self.mapped(id) {
            return Ok(done);
        }
        let like_children = match like {
            Some((old, old_copy)) => self.match_copies(&old, &old_copy),
            None => HashMap::new(),
        };
        // Unchanged since the earlier copy: matched just now.
        if let Some(done) = self.mapped(id) {
            return Ok(done);
        }
        let tree = Tree::decode_body(&self.read(id)?)
            .map_err(|e| Error::corrupt(format!("tree {id}"), e))?;
        self.progress.advance(tree.nodes.len() as u64, 0);

        let mut wanted: Vec<BlobId> = {
            let map = self.map();
            tree.nodes
                .iter()
                .filter(|n| n.kind == NodeKind::File)
                .flat_map(|n| n.content.iter())
                .filter(|c| !map.contains_key(c))
                .copied()
                .collect()
        };
        wanted.sort_unstable();
        wanted.dedup();
        wanted
            .par_iter()
            .try_for_each(|c| self.copy_data(saver, c))?;

        let mut nodes = tree.nodes;
        for node in &mut nodes {
            for c in &mut node.content {
                *c = self.mapped(c).ok_or_else(|| {
                    Error::invalid(format!("internal: data blob {c} was not copied"))
                })?;
            }
            if let Some(sub) = node.subtree {
                let like = like_children.get(&node.name).copied();
                node.subtree = Some(self.copy_tree(saver, &sub, like)?);
            }
        }
        let copy = saver
            .save(BlobKind::Tree, &Tree { nodes }.encode_body())?
            .id;
        self.map().insert(*id, copy);
        Ok(copy)
    }

    /// Loads a source tree and the target tree said to be its copy; if they do correspond
    /// (equal but for the ids), records every id of the first as mapping to the id at the
    /// same place in the second, and returns the pairs of subtrees by name. Anything that
    /// does not match is simply copied the slow way.
    fn match_copies(&self, old: &BlobId, old_copy: &BlobId) -> HashMap<Vec<u8>, (BlobId, BlobId)> {
        let mut children = HashMap::new();
        if self.mapped(old).is_some_and(|known| known != *old_copy) {
            return children;
        }
        let (Ok(a), Ok(b)) = (self.source.load_tree(old), self.target.load_tree(old_copy)) else {
            return children;
        };
        if a.nodes.len() != b.nodes.len()
            || !a.nodes.iter().zip(&b.nodes).all(|(x, y)| corresponds(x, y))
        {
            return children;
        }
        let mut map = self.map();
        map.insert(*old, *old_copy);
        for (x, y) in a.nodes.iter().zip(&b.nodes) {
            for (c, d) in x.content.iter().zip(&y.content) {
                map.insert(*c, *d);
            }
            if let (Some(s), Some(t)) = (x.subtree, y.subtree) {
                children.insert(x.name.clone(), (s, t));
            }
        }
        children
    }
}

/// Whether `b` is `a` with its blob ids replaced: everything else a copy keeps.
fn corresponds(a: &Node, b: &Node) -> bool {
    let without_ids = |n: &Node| Node {
        content: Vec::new(),
        subtree: n.subtree.map(|_| BlobId::default()),
        ..n.clone()
    };
    a.content.len() == b.content.len() && without_ids(a) == without_ids(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::InitOptions;
    use crate::storage::MemoryStorage;
    use std::sync::Arc;

    fn repo(password: &[u8]) -> (Repository, tempfile::TempDir) {
        let cache = tempfile::tempdir().unwrap();
        let options = InitOptions {
            kdf: crate::crypto::KdfParams::MINIMAL,
            pack_size: 1 << 20,
            ..InitOptions::default()
        };
        let repo = Repository::init(
            Arc::new(MemoryStorage::new()),
            password,
            &options,
            cache.path(),
        )
        .unwrap();
        (repo, cache)
    }

    fn file(name: &str, content: Vec<BlobId>) -> Node {
        Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            mode: 0o100644,
            size: 3,
            content,
            ..Node::default()
        }
    }

    /// A snapshot of `/d/{a,b}` with the given file contents.
    fn snapshot(repo: &Repository, a: &[u8], b: &[u8], secs: i64) -> (SnapshotId, Snapshot) {
        let saver = repo.saver().unwrap();
        let ca = saver.save(BlobKind::Data, a).unwrap().id;
        let cb = saver.save(BlobKind::Data, b).unwrap().id;
        let inner = Tree {
            nodes: vec![file("a", vec![ca]), file("b", vec![cb, ca])],
        };
        let inner = saver.save(BlobKind::Tree, &inner.encode_body()).unwrap().id;
        let root = Tree {
            nodes: vec![Node {
                name: b"d".to_vec(),
                kind: NodeKind::Dir,
                mode: 0o40755,
                subtree: Some(inner),
                ..Node::default()
            }],
        };
        let root = saver.save(BlobKind::Tree, &root.encode_body()).unwrap().id;
        saver.finish().unwrap();
        let s = Snapshot {
            time: Timestamp { secs, nanos: 7 },
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/d".into()],
            tags: vec!["t".into()],
            parent: None,
            tree: root,
            program_version: "test".into(),
            summary: Default::default(),
        };
        (repo.save_snapshot(&s).unwrap(), s)
    }

    fn contents(repo: &Repository, tree: &BlobId) -> Vec<(Vec<u8>, Vec<u8>)> {
        let root = repo.load_tree(tree).unwrap();
        let inner = repo.load_tree(&root.nodes[0].subtree.unwrap()).unwrap();
        inner
            .nodes
            .iter()
            .map(|n| {
                let mut data = Vec::new();
                for c in &n.content {
                    data.extend(repo.load_blob(c).unwrap());
                }
                (n.name.clone(), data)
            })
            .collect()
    }

    #[test]
    fn copies_get_the_targets_ids_and_are_recognised_on_rerun() {
        let (source, _c1) = repo(b"one");
        let (target, _c2) = repo(b"two");
        let (_, first) = snapshot(&source, b"aaa", b"bbb", 10);
        let report = copy(
            &source,
            &target,
            &CopyOptions::default(),
            &super::super::NoProgress,
        )
        .unwrap();
        assert_eq!((report.copied.len(), report.blobs_added), (1, 4));
        let (_, copied) = target.list_snapshots().unwrap().remove(0);
        assert_ne!(copied.tree, first.tree);
        assert_eq!(Identity::of(&copied), Identity::of(&first));
        assert_eq!(
            contents(&target, &copied.tree),
            contents(&source, &first.tree)
        );

        let again = copy(
            &source,
            &target,
            &CopyOptions::default(),
            &super::super::NoProgress,
        )
        .unwrap();
        assert_eq!(
            (again.copied.len(), again.skipped.len(), again.blobs_read),
            (0, 1, 0)
        );
    }

    #[test]
    fn an_unchanged_file_of_a_copied_snapshot_is_not_read_again() {
        let (source, _c1) = repo(b"one");
        let (target, _c2) = repo(b"two");
        let (first_id, _) = snapshot(&source, b"aaa", b"bbb", 10);
        copy(
            &source,
            &target,
            &CopyOptions::default(),
            &super::super::NoProgress,
        )
        .unwrap();
        let (_, second) = snapshot(&source, b"aaa", b"ccc", 20);
        let mut with_parent = second.clone();
        with_parent.parent = Some(first_id);
        with_parent.time.secs = 30;
        source.save_snapshot(&with_parent).unwrap();
        let report = copy(
            &source,
            &target,
            &CopyOptions::default(),
            &super::super::NoProgress,
        )
        .unwrap();
        assert_eq!(report.copied.len(), 2);
        // Only `ccc` and the two rewritten trees of the first new snapshot are read; the
        // second new snapshot has the same tree, already mapped.
        assert_eq!(report.blobs_read, 3, "{report:?}");
        let snaps = target.list_snapshots().unwrap();
        assert_eq!(snaps[2].1.parent, Some(snaps[0].0));
        assert_eq!(
            contents(&target, &snaps[2].1.tree),
            contents(&source, &second.tree)
        );
    }

    #[test]
    fn a_target_tree_that_is_not_a_copy_is_not_trusted() {
        let a = file("a", vec![BlobId([1; 32])]);
        let mut b = a.clone();
        b.content = vec![BlobId([2; 32])];
        assert!(corresponds(&a, &b));
        b.size = 4;
        assert!(!corresponds(&a, &b));
        b.size = 3;
        b.content.push(BlobId([3; 32]));
        assert!(!corresponds(&a, &b));
    }
}
