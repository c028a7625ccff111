//! `arca repair`: put a damaged repository back into a consistent state.
//!
//! `repair index` rebuilds the index segments from the pack headers alone.
//! `repair snapshots` rewrites snapshots that refer to lost data without the lost files,
//! listing every one, so that the rest of each snapshot restores and prune can run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use super::Problem;
use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, IndexedPack};
use crate::format::pack::BlobKind;
use crate::format::snapshot::Snapshot;
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::repository::{BlobSaver, LockKind, Repository};
use crate::storage::FileType;

/// Packs listed per new index segment, to keep segments small.
const PACKS_PER_SEGMENT: usize = 5_000;

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairIndexReport {
    pub packs_indexed: u64,
    pub blobs_indexed: u64,
    /// Packs whose header cannot be read: their data is lost.
    pub unreadable_packs: Vec<Problem>,
    pub segments_written: u64,
    pub segments_removed: u64,
}

/// Rebuilds every index segment from the pack headers.
pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    let lock = repo.lock(LockKind::Exclusive, "repair index")?;
    let mut report = RepairIndexReport::default();
    let packs: Vec<(PackId, u64)> = repo
        .list_files(FileType::Pack)?
        .into_iter()
        .filter_map(|f| Some((f.name.parse().ok()?, f.size)))
        .collect();
    let headers: Vec<(PackId, u64, Result<Vec<_>>)> = packs
        .par_iter()
        .map(|(id, size)| (*id, *size, repo.read_pack_header(id, *size)))
        .collect();
    let mut indexed: Vec<IndexedPack> = Vec::new();
    for (id, size, header) in headers {
        match header {
            Ok(blobs) => {
                report.blobs_indexed += blobs.len() as u64;
                indexed.push(IndexedPack { id, size, blobs });
            }
            Err(e) => report.unreadable_packs.push(Problem {
                path: FileType::Pack.relative_path(&id.to_hex()),
                message: e.to_string(),
            }),
        }
    }
    report.packs_indexed = indexed.len() as u64;
    let old: Vec<IndexId> = repo
        .list_files(FileType::Index)?
        .iter()
        .filter_map(|f| f.name.parse().ok())
        .collect();

    // New segments first; only the last supersedes the old ones, so a crash part-way
    // leaves the old index in force (with harmless duplicates).
    let mut chunks: Vec<Vec<IndexedPack>> = Vec::new();
    let mut rest = indexed;
    while rest.len() > PACKS_PER_SEGMENT {
        let tail = rest.split_off(PACKS_PER_SEGMENT);
        chunks.push(rest);
        rest = tail;
    }
    chunks.push(rest);
    let last = chunks.len() - 1;
    lock.check()?;
    for (i, packs) in chunks.into_iter().enumerate() {
        let supersedes = if i == last { old.clone() } else { Vec::new() };
        repo.save_index_segment(&IndexSegment { packs, supersedes })?;
        report.segments_written += 1;
    }
    lock.check()?;
    for id in &old {
        repo.remove_index_segment(id)?;
        report.segments_removed += 1;
    }
    repo.rebuild_index()?;
    Ok(report)
}

#[derive(Clone, Debug, Serialize)]
pub struct RepairedSnapshot {
    pub original: SnapshotId,
    /// The corrected snapshot (none in a dry run).
    pub repaired: Option<SnapshotId>,
    /// Every entry that could not be kept, as `/path: reason`.
    pub lost: Vec<Problem>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RepairSnapshotsReport {
    pub snapshots_checked: u64,
    pub repaired: Vec<RepairedSnapshot>,
    pub forgotten: Vec<SnapshotId>,
}

#[derive(Clone, Debug, Default)]
pub struct RepairSnapshotsOptions {
    /// Snapshot specs to check (default: all).
    pub snapshots: Vec<String>,
    /// Remove the original of each repaired snapshot.
    pub forget: bool,
    pub dry_run: bool,
}

struct Rewriter<'r> {
    repo: &'r Repository,
    saver: Option<BlobSaver<'r>>,
    /// Trees already rewritten: old id → new id (None when the tree itself is lost).
    done: HashMap<BlobId, Option<BlobId>>,
}

impl Rewriter<'_> {
    fn stored(&self, id: &BlobId) -> Result<bool> {
        Ok(self.repo.index()?.lookup(id)?.is_some())
    }

    /// The id of `tree` with every lost entry left out (the same id when nothing is lost).
    fn rewrite(
        &mut self,
        tree_id: &BlobId,
        path: &Path,
        lost: &mut Vec<Problem>,
    ) -> Result<Option<BlobId>> {
        if let Some(done) = self.done.get(tree_id) {
            return Ok(*done);
        }
        let tree = match self.stored(tree_id)? {
            true => self.repo.load_tree(tree_id).ok(),
            false => None,
        };
        let Some(tree) = tree else {
            self.done.insert(*tree_id, None);
            return Ok(None);
        };
        let mut nodes = Vec::with_capacity(tree.nodes.len());
        let mut changed = false;
        for mut node in tree.nodes {
            let node_path: PathBuf = path.join(String::from_utf8_lossy(&node.name).as_ref());
            let shown = node_path.display().to_string();
            if node.kind == NodeKind::File {
                let mut missing = 0;
                for id in &node.content {
                    if !self.stored(id)? {
                        missing += 1;
                    }
                }
                if missing > 0 {
                    lost.push(Problem {
                        path: shown,
                        message: format!("{missing} of {} chunks lost", node.content.len()),
                    });
                    changed = true;
                    continue;
                }
            }
            if let Some(sub) = node.subtree {
                match self.rewrite(&sub, &node_path, lost)? {
                    Some(new) if new == sub => {}
                    Some(new) => {
                        node.subtree = Some(new);
                        changed = true;
                    }
                    None => {
                        lost.push(Problem {
                            path: shown,
                            message: "directory lost".into(),
                        });
                        changed = true;
                        continue;
                    }
                }
            }
            nodes.push(node);
        }
        let new_id = if !changed {
            *tree_id
        } else {
            let body = Tree { nodes }.encode_body();
            match &self.saver {
                Some(saver) => saver.save(BlobKind::Tree, &body)?.id,
                None => self.repo.blob_id(&body),
            }
        };
        self.done.insert(*tree_id, Some(new_id));
        Ok(Some(new_id))
    }
}

/// Rewrites snapshots that refer to lost data. Originals are kept unless `forget`.
pub fn repair_snapshots(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<RepairSnapshotsReport> {
    let lock = repo.lock(LockKind::Exclusive, "repair snapshots")?;
    repo.forget_missing_packs()?;
    let snapshots: Vec<(SnapshotId, Snapshot)> = if options.snapshots.is_empty() {
        repo.list_readable_snapshots()?.0
    } else {
        options
            .snapshots
            .iter()
            .map(|spec| repo.find_snapshot(spec, &Default::default()))
            .collect::<Result<_>>()?
    };
    let saver = if options.dry_run {
        None
    } else {
        Some(repo.saver()?)
    };
    let mut rewriter = Rewriter {
        repo,
        saver,
        done: HashMap::new(),
    };
    let mut report = RepairSnapshotsReport {
        snapshots_checked: snapshots.len() as u64,
        ..Default::default()
    };
    let mut pending: Vec<(SnapshotId, Snapshot, Vec<Problem>)> = Vec::new();
    for (id, snapshot) in snapshots {
        let mut lost = Vec::new();
        let root = rewriter.rewrite(&snapshot.tree, Path::new("/"), &mut lost)?;
        if root == Some(snapshot.tree) {
            continue;
        }
        let mut repaired = snapshot.clone();
        repaired.tree = match root {
            Some(root) => root,
            None => {
                lost.push(Problem {
                    path: "/".into(),
                    message: "the snapshot's root tree is lost".into(),
                });
                let empty = Tree::default().encode_body();
                match &rewriter.saver {
                    Some(saver) => saver.save(BlobKind::Tree, &empty)?.id,
                    None => repo.blob_id(&empty),
                }
            }
        };
        if !repaired.tags.iter().any(|t| t == "repaired") {
            repaired.tags.push("repaired".into());
        }
        pending.push((id, repaired, lost));
    }
    // Trees are durable and indexed before any snapshot refers to them.
    if let Some(saver) = rewriter.saver.take() {
        saver.finish()?;
    }
    for (original, repaired, lost) in pending {
        let new_id = if options.dry_run {
            None
        } else {
            lock.check()?;
            let new_id = repo.save_snapshot(&repaired)?;
            if options.forget {
                repo.remove_snapshot(&original)?;
                report.forgotten.push(original);
            }
            Some(new_id)
        };
        report.repaired.push(RepairedSnapshot {
            original,
            repaired: new_id,
            lost,
        });
    }
    if report.repaired.iter().any(|r| r.lost.is_empty()) {
        return Err(Error::invalid(
            "internal: a snapshot was rewritten without losing anything",
        ));
    }
    Ok(report)
}
