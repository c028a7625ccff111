//! `arca verify`: check that what the snapshots need is present, and optionally that the
//! data itself still decrypts and hashes to its id.
//!
//! Damage is reported precisely: which index segment, pack or blob, and which paths of
//! which snapshots depend on it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::Progress;
use super::tree_walk::{display_path, next_tree_batch};
use crate::error::{Error, Result};
use crate::format::tree::{NodeKind, Tree};
use crate::id::{BlobId, PackId, SnapshotId};
use crate::repository::{BlobLocation, LockKind, Repository};
use crate::storage::FileType;

/// How much of the data to read back.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    None,
    All,
    /// Packs whose id's first byte modulo `m` is `n - 1`: over `m` nightly runs, all of them.
    Subset {
        n: u32,
        m: u32,
    },
    /// A random share of the packs, in percent.
    Percent(f64),
}

impl ReadData {
    /// Parses `N/M` or `P%`.
    pub fn parse_subset(s: &str) -> Result<ReadData> {
        let bad = || {
            Error::invalid(format!(
                "--read-data-subset {s:?}: expected N/M (1 <= N <= M) or P% (0 < P <= 100)"
            ))
        };
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(ReadData::Percent(p));
        }
        let (n, m) = s.split_once('/').ok_or_else(bad)?;
        let (n, m): (u32, u32) = (
            n.trim().parse().map_err(|_| bad())?,
            m.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || m == 0 || n > m || m > 256 {
            return Err(bad());
        }
        Ok(ReadData::Subset { n, m })
    }

    fn selects(&self, pack: &PackId) -> bool {
        match *self {
            ReadData::None => false,
            ReadData::All => true,
            ReadData::Subset { n, m } => (pack.0[0] as u32) % m == n - 1,
            ReadData::Percent(p) => {
                let r: [u8; 4] = crate::crypto::random_bytes();
                (u32::from_le_bytes(r) as f64) < p / 100.0 * (u32::MAX as f64 + 1.0)
            }
        }
    }
}

/// One piece of damage.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Damage {
    /// `index`, `pack`, `blob`, `snapshot` or `tree`.
    pub kind: String,
    /// The damaged object's id, or file path in the repository.
    pub object: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub trees: u64,
    pub data_blobs: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    pub damage: Vec<Damage>,
    /// `snapshot-id:/path` of every entry that cannot be restored whole.
    pub damaged_paths: Vec<String>,
    /// Packs present that no index lists (harmless; left by an interrupted backup).
    pub unreferenced_packs: Vec<String>,
}

impl VerifyReport {
    pub fn is_clean(&self) -> bool {
        self.damage.is_empty()
    }
}

struct Found {
    damage: Mutex<Vec<Damage>>,
    /// Blobs with no usable copy at all.
    bad_blobs: Mutex<HashSet<BlobId>>,
    /// Copies found damaged when their pack was read back.
    bad_copies: Mutex<HashSet<(BlobId, PackId)>>,
}

impl Found {
    fn add(&self, kind: &str, object: impl Into<String>, message: impl Into<String>) {
        self.damage
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Damage {
                kind: kind.into(),
                object: object.into(),
                message: message.into(),
            });
    }
    fn bad_blob(&self, id: BlobId) {
        self.bad_blobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
    }
    fn bad_copy(&self, id: BlobId, pack: PackId) {
        self.bad_copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((id, pack));
    }
}

pub fn verify(
    repo: &Repository,
    read_data: ReadData,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let found = Found {
        damage: Mutex::new(Vec::new()),
        bad_blobs: Mutex::new(HashSet::new()),
        bad_copies: Mutex::new(HashSet::new()),
    };
    let _lock = repo.lock(LockKind::Shared, "verify")?;
    let mut report = VerifyReport::default();

    // The index: rebuilt from the segments themselves, so the check does not trust the cache.
    let index = repo.local_index()?;
    index.clear()?;
    repo.refresh_index()?;
    for (id, message) in repo.index_problems() {
        found.add(
            "index",
            FileType::Index.relative_path(&id.to_hex()),
            message,
        );
    }

    // Packs: every indexed pack present, at the size the index says.
    let present: HashMap<String, u64> = repo
        .list_files(FileType::Pack)?
        .into_iter()
        .map(|f| (f.name, f.size))
        .collect();
    let indexed = index.packs()?;
    let mut bad_packs: HashSet<PackId> = HashSet::new();
    let indexed_names: HashSet<String> = indexed.iter().map(|(id, _)| id.to_hex()).collect();
    for (id, size) in &indexed {
        let name = FileType::Pack.relative_path(&id.to_hex());
        match present.get(&id.to_hex()) {
            None => {
                found.add(
                    "pack",
                    name,
                    "missing (`arca repair snapshots` then `arca prune` remove what it takes away)",
                );
                bad_packs.insert(*id);
            }
            Some(actual) if actual != size => {
                found.add(
                    "pack",
                    name,
                    format!("{actual} bytes, the index says {size} (truncated or overwritten)"),
                );
                bad_packs.insert(*id);
            }
            Some(_) => {}
        }
    }
    report.packs = indexed.len() as u64;
    // Recorded as damage above; from here on, every lookup must see only copies that exist,
    // or a tree would be read from a vanished pack and sound paths reported lost.
    let mut gone: Vec<PackId> = bad_packs.iter().copied().collect();
    gone.sort();
    index.drop_packs(&gone)?;
    report.unreferenced_packs = present
        .keys()
        .filter(|n| !indexed_names.contains(*n))
        .cloned()
        .collect();
    report.unreferenced_packs.sort();

    // Snapshots and their trees: every tree readable, every blob indexed in a sound pack.
    let mut snapshots: Vec<(SnapshotId, crate::format::snapshot::Snapshot)> = Vec::new();
    for file in repo.list_files(FileType::Snapshot)? {
        let Ok(id) = file.name.parse::<SnapshotId>() else {
            continue;
        };
        match repo.read_snapshot_file(&id) {
            Ok(s) => snapshots.push((id, s)),
            Err(e) => found.add(
                "snapshot",
                FileType::Snapshot.relative_path(&file.name),
                e.to_string(),
            ),
        }
    }
    report.snapshots = snapshots.len() as u64;
    // A blob is sound if any copy lies in a pack that is present at its indexed size.
    let check_blob = |id: &BlobId| -> Option<BlobLocation> {
        let copy = index
            .lookup_all(id)
            .ok()?
            .into_iter()
            .find(|loc| !bad_packs.contains(&loc.pack));
        if copy.is_none() {
            found.bad_blob(*id);
        }
        copy
    };
    // The structure walk and the reading of the data are independent: run them together.
    let selected: Vec<(PackId, u64)> = indexed
        .iter()
        .filter(|(id, _)| !bad_packs.contains(id) && read_data.selects(id))
        .copied()
        .collect();
    let bytes = AtomicU64::new(0);
    let walk = || -> Result<(u64, u64)> {
        let mut seen_trees: HashSet<BlobId> = HashSet::new();
        let mut seen_data: HashSet<BlobId> = HashSet::new();
        let mut pending: Vec<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
        // A batch of trees at a time, read and decoded in parallel.
        while !pending.is_empty() {
            let batch = next_tree_batch(&mut pending, &mut seen_trees);
            let loaded: Vec<Option<Tree>> = batch
                .par_iter()
                .map(|tree_id| {
                    let Some(loc) = check_blob(tree_id) else {
                        found.add(
                            "blob",
                            tree_id.to_hex(),
                            "tree blob is missing from the index or its pack is damaged",
                        );
                        return None;
                    };
                    repo.load_tree_at(&loc)
                        .map_err(|e| {
                            found.bad_blob(*tree_id);
                            found.add("tree", tree_id.to_hex(), e.to_string());
                        })
                        .ok()
                })
                .collect();
            for tree in loaded.into_iter().flatten() {
                progress.advance(tree.nodes.len() as u64, 0);
                // Every new data blob of this directory, looked up in one read transaction.
                let mut new_ids: Vec<BlobId> = Vec::new();
                for node in &tree.nodes {
                    if let Some(sub) = node.subtree {
                        pending.push(sub);
                    }
                    if node.kind == NodeKind::File {
                        new_ids.extend(node.content.iter().filter(|id| seen_data.insert(**id)));
                    }
                }
                for (id, copies) in new_ids.iter().zip(index.lookup_all_many(&new_ids)?) {
                    if !copies.iter().any(|c| !bad_packs.contains(&c.pack)) {
                        found.bad_blob(*id);
                        found.add(
                            "blob",
                            id.to_hex(),
                            "data blob is missing from the index or its pack is damaged",
                        );
                    }
                }
            }
        }
        Ok((seen_trees.len() as u64, seen_data.len() as u64))
    };
    let read = || {
        selected.par_iter().for_each(|(pack, _)| {
            bytes.fetch_add(read_pack(repo, pack, &found, progress), Ordering::Relaxed);
        })
    };
    let (walked, ()) = rayon::join(walk, read);
    let (trees, data_blobs) = walked?;
    report.trees = trees;
    report.data_blobs = data_blobs;

    if read_data != ReadData::None {
        report.packs_read = selected.len() as u64;
        report.bytes_read = bytes.load(Ordering::Relaxed);
        // A damaged copy loses data only if no other copy is sound.
        let bad_copies = found
            .bad_copies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for (id, _) in &bad_copies {
            let sound = index
                .lookup_all(id)?
                .iter()
                .any(|c| !bad_packs.contains(&c.pack) && !bad_copies.contains(&(*id, c.pack)));
            if !sound {
                found.bad_blob(*id);
            }
        }
    }

    // Which snapshot paths the damage reaches.
    let bad_blobs = found
        .bad_blobs
        .into_inner()
        .unwrap_or_else(|e| e.into_inner());
    if !bad_blobs.is_empty() {
        let mut paths = BTreeSet::new();
        for (sid, snap) in &snapshots {
            affected_paths(repo, &snap.tree, Path::new(""), &bad_blobs, &mut |p| {
                paths.insert(format!("{}:{}", sid.short(), display_path(p)));
            });
        }
        report.damaged_paths = paths.into_iter().collect();
    }
    let mut damage = found.damage.into_inner().unwrap_or_else(|e| e.into_inner());
    damage.sort();
    damage.dedup();
    report.damage = damage;
    Ok(report)
}

/// Reads one whole pack and checks it; returns the bytes read.
fn read_pack(repo: &Repository, pack: &PackId, found: &Found, progress: &dyn Progress) -> u64 {
    let name = FileType::Pack.relative_path(&pack.to_hex());
    let index = match repo.local_index() {
        Ok(i) => i,
        Err(e) => {
            found.add("pack", &name, e.to_string());
            return 0;
        }
    };
    let mut expected: HashMap<BlobId, BlobLocation> = HashMap::new();
    let _ = index.for_each_blob_in_pack(pack, |loc| {
        expected.insert(loc.id, loc);
    });
    let mark_all_bad = || {
        for id in expected.keys() {
            found.bad_copy(*id, *pack);
        }
    };
    let bytes = match repo.read_pack(pack) {
        Ok(b) => b,
        Err(e) => {
            found.add("pack", &name, e.to_string());
            mark_all_bad();
            return 0;
        }
    };
    progress.advance(0, bytes.len() as u64);
    if blake3::hash(&bytes).as_bytes() != &pack.0 {
        found.add(
            "pack",
            &name,
            "contents do not match the file name's hash (bit rot or tampering)",
        );
    }
    let header = match repo.decode_pack_header(pack, &bytes) {
        Ok(h) => h,
        Err(e) => {
            found.add("pack", &name, e.to_string());
            // The blobs may still be readable where the index says they are.
            expected
                .values()
                .map(|l| crate::format::pack::PackEntry {
                    kind: l.kind,
                    id: l.id,
                    offset: l.offset,
                    length: l.length,
                    raw_length: l.raw_length,
                })
                .collect()
        }
    };
    for entry in &header {
        let loc = BlobLocation {
            id: entry.id,
            kind: entry.kind,
            pack: *pack,
            offset: entry.offset,
            length: entry.length,
            raw_length: entry.raw_length,
        };
        if let Some(want) = expected.get(&entry.id)
            && *want != loc
        {
            found.add(
                "blob",
                entry.id.to_hex(),
                format!(
                    "pack {} and the index disagree about where it is",
                    pack.short()
                ),
            );
        }
        let end = (entry.offset + entry.length as u64) as usize;
        let result = bytes
            .get(entry.offset as usize..end)
            .ok_or_else(|| Error::corrupt(&name, "blob beyond the end"))
            .and_then(|sealed| repo.open_blob(&loc, sealed));
        match result {
            Ok(plaintext) if repo.blob_id(&plaintext) == entry.id => {}
            Ok(_) => {
                found.bad_copy(entry.id, *pack);
                found.add(
                    "blob",
                    entry.id.to_hex(),
                    format!("in {name}: content does not hash to its id"),
                );
            }
            Err(e) => {
                found.bad_copy(entry.id, *pack);
                found.add("blob", entry.id.to_hex(), e.to_string());
            }
        }
    }
    let in_header: HashSet<BlobId> = header.iter().map(|e| e.id).collect();
    for id in expected.keys().filter(|id| !in_header.contains(id)) {
        found.bad_copy(*id, *pack);
        found.add(
            "blob",
            id.to_hex(),
            format!("indexed in {name} but not in its header"),
        );
    }
    bytes.len() as u64
}

/// Calls `f` with the path of every entry below `tree` that needs one of `bad` blobs.
fn affected_paths(
    repo: &Repository,
    tree: &BlobId,
    prefix: &Path,
    bad: &HashSet<BlobId>,
    f: &mut dyn FnMut(&Path),
) {
    if bad.contains(tree) {
        f(prefix);
        return;
    }
    let Ok(tree) = repo.load_tree(tree) else {
        f(prefix);
        return;
    };
    for node in &tree.nodes {
        let path: PathBuf =
            prefix.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(&node.name)));
        if node.content.iter().any(|id| bad.contains(id)) {
            f(&path);
        }
        if let Some(sub) = &node.subtree {
            affected_paths(repo, sub, &path, bad, f);
        }
    }
}
