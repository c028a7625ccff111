//! `arca stats`: how much the snapshots hold, and how much space that takes once
//! deduplicated, compressed and packed.
//!
//! Every distinct tree is loaded once: a tree's file count and size are computed when it is
//! first met and reused wherever the same tree appears again, in the same snapshot or in
//! another. Blob sizes come from the local index; no pack is read.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::Progress;
use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Timestamp, Tree};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repository::{LockKind, Repository, SnapshotFilter};

/// What one snapshot holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotStats {
    pub id: SnapshotId,
    pub short_id: String,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    /// Regular files.
    pub files: u64,
    /// Total size of those files.
    pub logical_size: u64,
    /// Stored bytes the backup that made it added (from its summary).
    pub bytes_added: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    pub snapshots: u64,
    /// Regular files, counted in every snapshot that holds them.
    pub files: u64,
    /// Total size of those files: what restoring every snapshot would write.
    pub logical_size: u64,
    /// Distinct blobs the snapshots reach (data and trees).
    pub blobs: u64,
    pub data_blobs: u64,
    pub tree_blobs: u64,
    /// Plaintext size of the distinct blobs reached.
    pub deduplicated_size: u64,
    /// Stored (compressed and sealed) size of the distinct blobs reached.
    pub stored_size: u64,
    /// Packs holding the blobs reached, and their total size.
    pub packs: u64,
    pub pack_size: u64,
    /// Every pack of the repository, and their total size.
    pub repository_packs: u64,
    pub repository_pack_size: u64,
    /// `deduplicated_size / stored_size`.
    pub compression_ratio: f64,
    /// `logical_size / deduplicated_size`.
    pub dedup_ratio: f64,
    /// Blobs the snapshots reach that no index lists (see `arca verify`).
    pub missing_blobs: u64,
    pub per_snapshot: Vec<SnapshotStats>,
}

/// The snapshots chosen for counting.
#[derive(Debug, Default)]
pub struct Selection {
    /// Oldest first, each once.
    pub snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Snapshot files a listing could not read (and so skipped), with why.
    pub unreadable: Vec<(String, Error)>,
}

/// The snapshots to count: `specs` resolved (each may be `latest` or an id prefix), or
/// without specs every snapshot matching `filter`.
pub fn select_snapshots(
    repo: &Repository,
    specs: &[String],
    filter: &SnapshotFilter,
) -> Result<Selection> {
    if specs.is_empty() {
        let (all, unreadable) = repo.list_readable_snapshots()?;
        let snapshots = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
        return Ok(Selection {
            snapshots,
            unreadable,
        });
    }
    let mut snapshots: Vec<(SnapshotId, Snapshot)> = Vec::with_capacity(specs.len());
    for spec in specs {
        let found = repo.find_snapshot(spec, filter)?;
        if !snapshots.iter().any(|(id, _)| *id == found.0) {
            snapshots.push(found);
        }
    }
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(Selection {
        snapshots,
        unreadable: Vec::new(),
    })
}

/// Files and bytes below one tree.
#[derive(Clone, Copy, Debug, Default)]
struct Totals {
    files: u64,
    bytes: u64,
}

/// Walks trees, loading each distinct one once, and gathers the data blobs they name.
#[derive(Default)]
struct Walker {
    /// Every tree met, with the totals below it.
    trees: HashMap<BlobId, Totals>,
    data: HashSet<BlobId>,
}

impl Walker {
    /// The totals below `root`, loading only trees not met before.
    fn totals(
        &mut self,
        repo: &Repository,
        root: &BlobId,
        progress: &dyn Progress,
    ) -> Result<Totals> {
        enum Step {
            Enter(BlobId),
            Leave(BlobId, Tree),
        }
        // Depth first without recursion: a tree is left once all its subtrees have totals.
        let mut stack = vec![Step::Enter(*root)];
        while let Some(step) = stack.pop() {
            match step {
                Step::Enter(id) => {
                    if self.trees.contains_key(&id) {
                        continue;
                    }
                    let tree = repo.load_tree(&id)?;
                    progress.advance(tree.nodes.len() as u64, 0);
                    let subtrees: Vec<BlobId> = tree
                        .nodes
                        .iter()
                        .filter_map(|n| n.subtree)
                        .filter(|s| !self.trees.contains_key(s))
                        .collect();
                    for node in &tree.nodes {
                        self.data.extend(node.content.iter().copied());
                    }
                    stack.push(Step::Leave(id, tree));
                    stack.extend(subtrees.into_iter().map(Step::Enter));
                }
                Step::Leave(id, tree) => {
                    let mut totals = Totals::default();
                    for node in &tree.nodes {
                        if node.kind == NodeKind::File {
                            totals.files += 1;
                            totals.bytes += node.size;
                        }
                        if let Some(sub) = &node.subtree {
                            // Entered after this tree, so left before it.
                            let below = self.trees.get(sub).copied().unwrap_or_default();
                            totals.files += below.files;
                            totals.bytes += below.bytes;
                        }
                    }
                    self.trees.insert(id, totals);
                }
            }
        }
        Ok(self.trees.get(root).copied().unwrap_or_default())
    }
}

fn ratio(numerator: u64, denominator: u64) -> f64 {
    if denominator == 0 {
        1.0
    } else {
        numerator as f64 / denominator as f64
    }
}

/// Counts what `snapshots` hold and what it costs to store.
pub fn stats(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    progress: &dyn Progress,
) -> Result<Stats> {
    // A prune running meanwhile could remove packs under our feet and make the figures lie.
    let _lock = repo.lock(LockKind::Shared, "stats")?;
    let mut walker = Walker::default();
    let mut out = Stats {
        snapshots: snapshots.len() as u64,
        ..Stats::default()
    };
    for (id, snapshot) in snapshots {
        let totals = walker.totals(repo, &snapshot.tree, progress)?;
        out.files += totals.files;
        out.logical_size += totals.bytes;
        out.per_snapshot.push(SnapshotStats {
            id: *id,
            short_id: id.short(),
            time: snapshot.time,
            host: snapshot.host.clone(),
            paths: snapshot.paths.clone(),
            files: totals.files,
            logical_size: totals.bytes,
            bytes_added: snapshot.summary.bytes_added,
        });
    }

    let index = repo.index()?;
    let all_packs: HashMap<PackId, u64> = index.packs()?.into_iter().collect();
    out.repository_packs = all_packs.len() as u64;
    out.repository_pack_size = all_packs.values().sum();
    out.tree_blobs = walker.trees.len() as u64;
    // A blob that is both a tree and data cannot happen (ids are keyed hashes of different
    // bytes), but count it once if it ever did.
    walker.data.retain(|id| !walker.trees.contains_key(id));
    out.data_blobs = walker.data.len() as u64;
    out.blobs = out.tree_blobs + out.data_blobs;
    let mut packs: HashSet<PackId> = HashSet::new();
    for id in walker.trees.keys().chain(walker.data.iter()) {
        match index.lookup(id)? {
            Some(loc) => {
                out.stored_size += u64::from(loc.length);
                out.deduplicated_size += u64::from(loc.raw_length);
                packs.insert(loc.pack);
            }
            None => out.missing_blobs += 1,
        }
    }
    out.packs = packs.len() as u64;
    out.pack_size = packs.iter().filter_map(|p| all_packs.get(p)).sum();
    out.compression_ratio = ratio(out.deduplicated_size, out.stored_size);
    out.dedup_ratio = ratio(out.logical_size, out.deduplicated_size);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;
    use crate::format::snapshot::Summary;
    use crate::format::tree::Node;
    use crate::ops::NoProgress;

    /// A fresh repository in memory, with its cache folder (kept alive by the caller).
    fn test_repo() -> (Repository, tempfile::TempDir) {
        let (repo, _storage, cache) = crate::repository::testing::test_repo();
        (repo, cache)
    }

    fn snapshot(tree: BlobId, secs: i64, bytes_added: u64) -> Snapshot {
        Snapshot {
            time: Timestamp { secs, nanos: 0 },
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/d".into()],
            tags: vec![],
            parent: None,
            tree,
            program_version: "test".into(),
            summary: Summary {
                bytes_added,
                ..Summary::default()
            },
        }
    }

    #[test]
    fn shared_files_count_per_snapshot_but_are_stored_once() {
        let (repo, _cache) = test_repo();
        let saver = repo.saver().unwrap();
        let big = vec![0u8; 100_000];
        let chunk = saver.save(BlobKind::Data, &big).unwrap().id;
        let file = |name: &str| Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::File,
            size: big.len() as u64,
            content: vec![chunk],
            ..Node::default()
        };
        // One directory holding the same file twice, reached from two roots.
        let inner = Tree {
            nodes: vec![file("a"), file("b")],
        };
        let inner_id = saver.save(BlobKind::Tree, &inner.encode_body()).unwrap().id;
        let dir = |name: &str| Node {
            name: name.as_bytes().to_vec(),
            kind: NodeKind::Dir,
            subtree: Some(inner_id),
            ..Node::default()
        };
        let root1 = Tree {
            nodes: vec![dir("x"), dir("y")],
        };
        let root1_id = saver.save(BlobKind::Tree, &root1.encode_body()).unwrap().id;
        let root2 = Tree {
            nodes: vec![dir("x"), file("z")],
        };
        let root2_id = saver.save(BlobKind::Tree, &root2.encode_body()).unwrap().id;
        saver.finish().unwrap();
        let s1 = repo.save_snapshot(&snapshot(root1_id, 1, 500)).unwrap();
        let s2 = repo.save_snapshot(&snapshot(root2_id, 2, 0)).unwrap();

        let chosen = select_snapshots(&repo, &[], &SnapshotFilter::default()).unwrap();
        assert!(chosen.unreadable.is_empty());
        let stats = stats(&repo, &chosen.snapshots, &NoProgress).unwrap();
        assert_eq!(stats.snapshots, 2);
        assert_eq!(stats.files, 4 + 3);
        assert_eq!(stats.logical_size, 7 * 100_000);
        assert_eq!((stats.data_blobs, stats.tree_blobs, stats.blobs), (1, 3, 4));
        assert_eq!(stats.missing_blobs, 0);
        assert!(stats.deduplicated_size > 100_000 && stats.deduplicated_size < 101_000);
        // Zeros compress well.
        assert!(stats.stored_size < 10_000, "{stats:?}");
        assert!(stats.compression_ratio > 10.0);
        assert!(stats.dedup_ratio > 6.0);
        assert_eq!(stats.packs, stats.repository_packs);
        assert_eq!(stats.pack_size, stats.repository_pack_size);
        let per: Vec<(SnapshotId, u64, u64, u64)> = stats
            .per_snapshot
            .iter()
            .map(|p| (p.id, p.files, p.logical_size, p.bytes_added))
            .collect();
        assert_eq!(per, [(s1, 4, 400_000, 500), (s2, 3, 300_000, 0)]);

        // One snapshot by id prefix: only what it reaches.
        let prefix = s2.to_hex()[..8].to_string();
        let chosen =
            select_snapshots(&repo, &[prefix.clone(), prefix], &SnapshotFilter::default()).unwrap();
        let one = super::stats(&repo, &chosen.snapshots, &NoProgress).unwrap();
        assert_eq!((one.snapshots, one.files, one.blobs), (1, 3, 3));
    }
}
