//! `arca prune`: remove data no snapshot needs, and repack packs that are mostly waste.
//!
//! A plan first: which blobs the snapshots reach, and for every pack whether to keep,
//! repack or delete it. Then the execution, ordered so that a crash at any point leaves a
//! repository that verifies clean: new packs and their index segment are written, then one
//! segment listing every kept pack and superseding all the old segments, and only then are
//! old segments and packs removed. A rerun after a crash finishes the job.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;

use super::Progress;
use super::tree_walk::next_tree_batch;
use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, IndexedPack};
use crate::format::pack::{BlobKind, PackEntry};
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, IndexId, PackId};
use crate::repository::{BlobLocation, LockKind, Repository};
use crate::storage::FileType;

/// How many packs under a quarter of the target size prune lets gather before merging them.
const SMALL_PACKS_TO_MERGE: usize = 8;

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Unused bytes tolerated, in percent of the used bytes.
    pub max_unused_percent: f64,
    /// At most this many bytes of packs are rewritten in one run.
    pub max_repack_bytes: Option<u64>,
    pub dry_run: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            max_unused_percent: 5.0,
            max_repack_bytes: None,
            dry_run: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackAction {
    /// Every blob in it is used.
    Keep,
    /// Partly used, kept because the waste is tolerated.
    KeepPartial,
    /// Its used blobs are copied into new packs, then it is deleted.
    Repack,
    /// Nothing in it is used (or no index lists it).
    Delete,
}

#[derive(Clone, Debug, Serialize)]
pub struct PackPlan {
    pub id: PackId,
    pub size: u64,
    pub used_bytes: u64,
    pub unused_bytes: u64,
    /// Whether the pack holds tree blobs (packs hold one kind only).
    pub trees: bool,
    pub action: PackAction,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PrunePlan {
    pub snapshots: u64,
    pub used_blobs: u64,
    pub packs: Vec<PackPlan>,
    /// Index segments that the new index will replace.
    pub old_segments: Vec<IndexId>,
    pub packs_to_delete: u64,
    pub packs_to_repack: u64,
    pub bytes_to_delete: u64,
    pub bytes_to_repack: u64,
    /// Unused bytes left in kept packs afterwards.
    pub unused_bytes_after: u64,
    /// Whether executing the plan changes anything.
    pub changes: bool,
    /// The blobs the snapshots reach.
    #[serde(skip)]
    pub used: HashSet<BlobId>,
    /// Every blob of every indexed pack, as the index segments list them.
    #[serde(skip)]
    pub per_pack: HashMap<PackId, Vec<BlobLocation>>,
    /// For each used blob, the one sound pack whose copy is kept.
    #[serde(skip)]
    pub home: HashMap<BlobId, PackId>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PruneReport {
    pub packs_deleted: u64,
    pub packs_repacked: u64,
    pub packs_written: u64,
    pub bytes_freed: i64,
    pub index_segments_removed: u64,
}

/// Plans a prune. Fails (changing nothing) when anything a snapshot needs is missing.
pub fn plan(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PrunePlan> {
    // Decide from the repository's own index segments, never from the local cache.
    let mut indexed: HashMap<PackId, u64> = HashMap::new();
    let mut per_pack: HashMap<PackId, Vec<BlobLocation>> = HashMap::new();
    repo.for_each_current_segment(|_, segment| {
        for pack in segment.packs {
            // A pack listed twice (by segments that overlap) is counted once.
            if indexed.insert(pack.id, pack.size).is_some() {
                continue;
            }
            let blobs = pack.blobs.into_iter().map(|e| BlobLocation {
                id: e.id,
                kind: e.kind,
                pack: pack.id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
            per_pack.entry(pack.id).or_default().extend(blobs);
        }
    })
    .map_err(|e| Error::invalid(format!("{e}; prune deletes nothing until it has run")))?;
    let present: HashMap<PackId, u64> = repo
        .list_files(FileType::Pack)?
        .into_iter()
        .filter_map(|f| Some((f.name.parse().ok()?, f.size)))
        .collect();
    let sound = |pack: &PackId| {
        indexed
            .get(pack)
            .is_some_and(|size| present.get(pack) == Some(size))
    };
    let mut trees: HashMap<BlobId, BlobLocation> = HashMap::new();
    for (pack, blobs) in &per_pack {
        if sound(pack) {
            for loc in blobs.iter().filter(|b| b.kind == BlobKind::Tree) {
                trees.entry(loc.id).or_insert(*loc);
            }
        }
    }

    // Every blob the snapshots reach: trees by walking them (a batch at a time, decoded in
    // parallel), data from the file entries.
    let snapshots = repo.list_snapshots()?;
    let mut used: HashSet<BlobId> = HashSet::new();
    let mut pending: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    while !pending.is_empty() {
        let batch = next_tree_batch(&mut pending, &mut used);
        let loaded: Vec<Result<Tree>> = batch
            .par_iter()
            .map(|id| {
                let loc = trees
                    .get(id)
                    .ok_or_else(|| Error::corrupt(format!("tree {id}"), "not in any sound pack"))?;
                repo.load_tree_at(loc)
            })
            .collect();
        for tree in loaded {
            let tree = tree.map_err(|e| {
                Error::invalid(format!(
                    "{e}; prune deletes nothing while a snapshot's tree is missing or unreadable: \
                     run `arca verify`, then `arca repair snapshots`"
                ))
            })?;
            progress.advance(tree.nodes.len() as u64, 0);
            for node in tree.nodes {
                if let Some(sub) = node.subtree {
                    pending.push(sub);
                }
                if node.kind == NodeKind::File {
                    used.extend(node.content);
                }
            }
        }
    }

    // Each used blob lives on in one copy, in a sound pack; other copies are waste.
    let mut home: HashMap<BlobId, PackId> = HashMap::new();
    for (pack, blobs) in &per_pack {
        if sound(pack) {
            for loc in blobs.iter().filter(|b| used.contains(&b.id)) {
                home.entry(loc.id).or_insert(*pack);
            }
        }
    }
    let missing: Vec<&BlobId> = used.iter().filter(|id| !home.contains_key(id)).collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(5).map(|id| id.to_hex()).collect();
        return Err(Error::invalid(format!(
            "{} blob(s) that snapshots need are missing (e.g. {}); prune deletes nothing. \
             Run `arca verify` to see which snapshots are affected, then `arca repair`",
            missing.len(),
            shown.join(", ")
        )));
    }

    let mut packs: Vec<PackPlan> = Vec::new();
    for (id, size) in &present {
        let Some(blobs) = per_pack.get(id).filter(|_| indexed.contains_key(id)) else {
            // Present but in no index: left by an interrupted backup or prune.
            packs.push(PackPlan {
                id: *id,
                size: *size,
                used_bytes: 0,
                unused_bytes: *size,
                trees: false,
                action: PackAction::Delete,
            });
            continue;
        };
        let (mut used_bytes, mut unused_bytes) = (0u64, 0u64);
        for b in blobs {
            if home.get(&b.id) == Some(id) {
                used_bytes += b.length as u64
            } else {
                unused_bytes += b.length as u64
            }
        }
        let action = match (used_bytes, unused_bytes) {
            (0, _) => PackAction::Delete,
            (_, 0) => PackAction::Keep,
            _ => PackAction::KeepPartial,
        };
        packs.push(PackPlan {
            id: *id,
            size: *size,
            used_bytes,
            unused_bytes,
            trees: blobs.iter().any(|b| b.kind == BlobKind::Tree),
            action,
        });
    }
    packs.sort_by_key(|p| p.id);

    // Repack the most wasteful packs until the waste left is tolerable.
    let total_used: u64 = packs.iter().map(|p| p.used_bytes).sum();
    let allowed = (total_used as f64 * options.max_unused_percent / 100.0) as u64;
    let max_repack = options.max_repack_bytes.unwrap_or(u64::MAX);
    let mut unused_after: u64 = packs
        .iter()
        .filter(|p| p.action == PackAction::KeepPartial)
        .map(|p| p.unused_bytes)
        .sum();
    let mut repack_bytes = 0u64;
    let mut partial: Vec<usize> = (0..packs.len())
        .filter(|&i| packs[i].action == PackAction::KeepPartial)
        .collect();
    // Partly used tree packs go first and always: trees are small, cheap to rewrite, and
    // read by every backup, restore and verify. Then the most wasteful data packs.
    partial.sort_by_key(|&i| (!packs[i].trees, std::cmp::Reverse(packs[i].unused_bytes)));
    for i in partial {
        if repack_bytes + packs[i].used_bytes > max_repack
            || (!packs[i].trees && unused_after <= allowed)
        {
            break;
        }
        packs[i].action = PackAction::Repack;
        unused_after -= packs[i].unused_bytes;
        repack_bytes += packs[i].used_bytes;
    }
    // Small packs (the tail of every backup) are merged once enough have gathered: merging
    // each time there are two would rewrite the same data on every prune.
    let small_limit = repo.config().pack_size as u64 / 4;
    let small: Vec<usize> = (0..packs.len())
        .filter(|&i| {
            matches!(packs[i].action, PackAction::Keep | PackAction::KeepPartial)
                && packs[i].size < small_limit
        })
        .collect();
    if small.len() >= SMALL_PACKS_TO_MERGE {
        for i in small {
            if repack_bytes + packs[i].used_bytes > max_repack {
                break;
            }
            if packs[i].action == PackAction::KeepPartial {
                unused_after -= packs[i].unused_bytes;
            }
            packs[i].action = PackAction::Repack;
            repack_bytes += packs[i].used_bytes;
        }
    }

    let count = |a: PackAction| packs.iter().filter(|p| p.action == a).count() as u64;
    let bytes = |a: PackAction| {
        packs
            .iter()
            .filter(|p| p.action == a)
            .map(|p| p.size)
            .sum::<u64>()
    };
    let mut old_segments: Vec<IndexId> = repo
        .list_files(FileType::Index)?
        .iter()
        .filter_map(|f| f.name.parse().ok())
        .collect();
    old_segments.sort();
    let missing_packs = indexed.keys().any(|p| !sound(p));
    let plan = PrunePlan {
        snapshots: snapshots.len() as u64,
        used_blobs: used.len() as u64,
        packs_to_delete: count(PackAction::Delete),
        packs_to_repack: count(PackAction::Repack),
        bytes_to_delete: bytes(PackAction::Delete),
        bytes_to_repack: bytes(PackAction::Repack),
        unused_bytes_after: unused_after,
        changes: count(PackAction::Delete) + count(PackAction::Repack) > 0
            || missing_packs
            || old_segments.len() > 1,
        old_segments,
        packs,
        used,
        per_pack,
        home,
    };
    Ok(plan)
}

/// Carries out a plan made under the same exclusive lock.
fn execute(
    repo: &Repository,
    plan: &PrunePlan,
    lock: &crate::repository::Lock,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    if !plan.changes {
        return Ok(report);
    }
    // 1. Copy the used blobs of packs to repack into new packs (durable, indexed): each
    //    from its home pack only, so it is copied once and never when a kept pack has it.
    let saver = repo.saver()?;
    let no_blobs = Vec::new();
    for pack in plan.packs.iter().filter(|p| p.action == PackAction::Repack) {
        let bytes = repo.read_pack(&pack.id)?;
        progress.advance(0, bytes.len() as u64);
        for loc in plan.per_pack.get(&pack.id).unwrap_or(&no_blobs) {
            if plan.home.get(&loc.id) != Some(&pack.id) {
                continue;
            }
            let sealed = bytes
                .get(loc.offset as usize..(loc.offset + loc.length as u64) as usize)
                .ok_or_else(|| {
                    Error::corrupt(format!("pack {}", pack.id), "shorter than its index says")
                })?;
            // Decrypting first means damage is found here, not copied along.
            repo.open_blob(loc, sealed)?;
            saver.copy_sealed(loc.kind, loc.id, loc.raw_length, sealed)?;
        }
        report.packs_repacked += 1;
    }
    let stats = saver.finish()?;
    report.packs_written = stats.packs_written;

    // 2. One segment lists every pack kept as it is, and supersedes all the old ones.
    let mut kept: Vec<IndexedPack> = Vec::new();
    for pack in plan
        .packs
        .iter()
        .filter(|p| matches!(p.action, PackAction::Keep | PackAction::KeepPartial))
    {
        let mut blobs: Vec<PackEntry> = plan
            .per_pack
            .get(&pack.id)
            .unwrap_or(&no_blobs)
            .iter()
            .map(|loc| PackEntry {
                kind: loc.kind,
                id: loc.id,
                offset: loc.offset,
                length: loc.length,
                raw_length: loc.raw_length,
            })
            .collect();
        blobs.sort_by_key(|b| b.offset);
        kept.push(IndexedPack {
            id: pack.id,
            size: pack.size,
            blobs,
        });
    }
    lock.check()?;
    let new_segment = repo.save_index_segment(&IndexSegment {
        packs: kept,
        supersedes: plan.old_segments.clone(),
    })?;

    // 3. Only now remove what the new index no longer refers to.
    lock.check()?;
    for id in &plan.old_segments {
        repo.remove_index_segment(id)?;
        report.index_segments_removed += 1;
    }
    let removed: Vec<&PackPlan> = plan
        .packs
        .iter()
        .filter(|p| matches!(p.action, PackAction::Delete | PackAction::Repack))
        .collect();
    for pack in &removed {
        repo.remove_pack(&pack.id)?;
        if pack.action == PackAction::Delete {
            report.packs_deleted += 1;
        }
        report.bytes_freed += pack.size as i64;
    }
    report.bytes_freed -= stats.stored_bytes_added as i64;
    // The local index already holds the kept packs and the new ones: it only has to learn
    // which segments and packs went. (Interrupted before this, it notices the removed
    // segments next time and reloads.)
    let removed: Vec<PackId> = removed.iter().map(|p| p.id).collect();
    repo.index()?
        .record_replacement(new_segment, &plan.old_segments, &removed)?;
    Ok(report)
}

/// Plans under an exclusive lock and, unless this is a dry run, executes the plan.
pub fn prune(
    repo: &Repository,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<(PrunePlan, Option<PruneReport>)> {
    let lock = repo.lock(LockKind::Exclusive, "prune")?;
    let plan = plan(repo, options, progress)?;
    if options.dry_run {
        return Ok((plan, None));
    }
    let report = execute(repo, &plan, &lock, progress)?;
    Ok((plan, Some(report)))
}
