//! `arca restore`: write a snapshot (or part of it) into a target directory.
//!
//! Plan, then execute. The plan lists every entry to create and, for file contents, which
//! blobs are needed from which pack and where each one goes. Packs are then read in
//! parallel, each once, in coalesced ranges; blobs are decrypted and written to their files
//! at their offsets, out of order. A file is written under a temporary name and renamed to
//! its final name only once complete, except a file of one chunk in a directory this
//! restore created itself: nothing of the user's can be there, so it is created under its
//! final name and written with one call (the rename cost as much as the creation).
//! Directories are made one level of depth at a time, each level's side by side; symlinks
//! and other special files are made while contents are written; hard links follow the
//! contents. Metadata is set last, directories deepest level first. Large writes go past
//! the page cache where the file system does direct I/O well (`direct_write`).
//!
//! Unless told not to, a restore is durable when it returns, and a file that replaces an
//! existing one is renamed over it only once its contents are on the disk (`durable`).
//!
//! Entry names were checked when their trees were decoded (no `..`, `/`, NUL…), and no
//! existing symlink inside the target is ever followed, so nothing is written outside it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use super::backup::Excludes;
use super::direct_write;
use super::durable;
use super::tree_walk::{self, Target};
use super::{Problem, Progress};
use crate::error::{Error, IoContext, Result};
use crate::format::tree::{Node, NodeKind};
use crate::guard::lock;
use crate::id::{BlobId, PackId};
use crate::repository::{BlobLocation, LockKind, Repository};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    pub target: PathBuf,
    /// Path inside the snapshot to restore (empty: everything).
    pub path: String,
    /// Glob patterns on snapshot paths; when given, only matching entries are restored.
    pub includes: Vec<String>,
    pub excludes: Vec<String>,
    /// Do not wait for the restored files to reach the disk: files in the way are replaced
    /// at once, and a crash soon after may leave restored files empty and replaced ones
    /// lost. By default a restore is durable when it returns (see `durable`).
    pub no_sync: bool,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub other: u64,
    pub bytes: u64,
    pub problems: Vec<Problem>,
}

/// Reads of one pack closer than this are merged into one read.
const COALESCE_GAP: u64 = 256 << 10;
/// Largest single read from a pack.
const MAX_READ: u64 = 32 << 20;

struct FileJob {
    final_path: PathBuf,
    temp_path: PathBuf,
    /// Created under its final name, without a temporary one: set in [`execute`] for a
    /// file of one chunk whose directory the restore created.
    in_place: bool,
    node: Node,
    remaining: AtomicU64,
    failed: AtomicBool,
}

struct BlobUse {
    file: usize,
    offset: u64,
}

struct PlannedBlob {
    loc: BlobLocation,
    uses: Vec<BlobUse>,
}

enum Item {
    Dir(PathBuf, Node),
    Special(PathBuf, Node),
    HardLink { path: PathBuf, first: PathBuf },
}

/// A planned restore: every entry to create and, for file contents, every blob to read,
/// from which pack, and where it goes. See [`plan`]; [`RestorePlan::summary`] counts it.
pub struct RestorePlan {
    items: Vec<Item>,
    files: Vec<FileJob>,
    packs: HashMap<PackId, Vec<PlannedBlob>>,
    problems: Vec<Problem>,
}

/// What a [`RestorePlan`] will do.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    /// Regular files whose contents will be written (not those with a problem, nor the
    /// further names of a hard-linked file).
    pub files: u64,
    /// Further names of hard-linked files, linked to the first once it is written.
    pub hard_links: u64,
    pub dirs: u64,
    /// Symlinks, fifos, devices and sockets.
    pub other: u64,
    /// Content bytes of the files to write.
    pub bytes: u64,
    /// Distinct blobs to read.
    pub blobs: u64,
    /// Packs to read them from, each once.
    pub packs: u64,
    /// Entries that cannot be restored: unreadable directories, files whose data is missing.
    pub problems: Vec<Problem>,
}

impl RestorePlan {
    pub fn summary(&self) -> PlanSummary {
        let mut summary = PlanSummary {
            problems: self.problems.clone(),
            packs: self.packs.len() as u64,
            blobs: self.packs.values().map(|b| b.len() as u64).sum(),
            ..PlanSummary::default()
        };
        for item in &self.items {
            match item {
                Item::Dir(..) => summary.dirs += 1,
                Item::Special(..) => summary.other += 1,
                Item::HardLink { .. } => summary.hard_links += 1,
            }
        }
        for job in &self.files {
            if !job.failed.load(Ordering::Relaxed) {
                summary.files += 1;
                summary.bytes += job.node.size;
            }
        }
        summary
    }
}

fn path_of(target: &Path, rel: &Path) -> PathBuf {
    if rel.as_os_str().is_empty() {
        target.to_path_buf()
    } else {
        target.join(rel)
    }
}

fn temp_name(final_path: &Path, n: usize) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    // Keep temp names short enough for NAME_MAX whatever the final name's length.
    let short = &name[..name.len().min(100)];
    let mut tmp = b".arca-restore-".to_vec();
    tmp.extend_from_slice(format!("{n}-").as_bytes());
    tmp.extend_from_slice(short);
    final_path.with_file_name(OsStr::from_bytes(&tmp))
}

/// Restores according to `options` from the snapshot whose root tree is `root`.
pub fn restore(
    repo: &Repository,
    root: &BlobId,
    options: &RestoreOptions,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    let _lock = repo.lock(LockKind::Shared, "restore")?;
    let target = &options.target;
    let parents_gaining_entries = durable::parents_gaining_entries(target);
    fs::create_dir_all(target).at(target)?;
    let plan = plan(repo, root, options)?;
    let durability =
        durable::Durability::for_restore(options.no_sync, plan.files.len() + plan.items.len());
    let report = execute(repo, plan, target, durability, progress)?;
    // A whole file system's sync covers the target's name; one by one, it is its parent's.
    if durability == durable::Durability::EachFile {
        for dir in &parents_gaining_entries {
            match durable::open_to_sync(dir) {
                Ok(file) => durable::sync_one(&file, dir)?,
                Err(_) => durable::sync_all_file_systems(),
            }
        }
    }
    Ok(report)
}

/// Plans a restore from the snapshot whose root tree is `root`, writing nothing (but
/// dropping from the local index the packs the repository no longer has). [`restore`]
/// plans with this under a shared lock.
pub fn plan(repo: &Repository, root: &BlobId, options: &RestoreOptions) -> Result<RestorePlan> {
    // Read every blob from a copy whose pack is still there.
    repo.forget_missing_packs()?;
    let includes = Excludes::new(&options.includes)?;
    let excludes = Excludes::new(&options.excludes)?;
    let filtering = !options.includes.is_empty();
    let base_names = tree_walk::split_path(&options.path);
    let base: PathBuf = base_names.iter().map(|n| OsStr::from_bytes(n)).collect();
    let mut entries: Vec<(PathBuf, Node)> = Vec::new();
    let mut damaged: Vec<Problem> = Vec::new();
    let target = tree_walk::resolve(repo, root, &options.path)?;
    let strip = |p: &Path| -> PathBuf {
        p.strip_prefix(&base)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    };
    match &target {
        Target::Entry(node) if node.kind != NodeKind::Dir => {
            // A single entry is restored under its own name in the target.
            entries.push((
                PathBuf::from(OsStr::from_bytes(&node.name)),
                (**node).clone(),
            ));
        }
        _ => {
            let sub = target
                .subtree()
                .ok_or_else(|| Error::invalid("nothing to restore"))?;
            // A directory whose tree is damaged is restored empty and reported; the rest
            // of the snapshot is still restored.
            let mut visit = |path: &Path, node: &Node| {
                let shown = PathBuf::from("/").join(path);
                if excludes.is_excluded(&shown) {
                    return Ok(false);
                }
                entries.push((strip(path), node.clone()));
                Ok(true)
            };
            tree_walk::walk_around_damage(repo, &sub, &base, &mut visit, &mut |path, e| {
                damaged.push(Problem {
                    path: tree_walk::display_path(path),
                    message: format!("the directory's contents cannot be read: {e}"),
                })
            })?;
        }
    }
    if filtering {
        // Keep included entries, everything below included directories, and the
        // directories needed to hold them.
        // Parents come before their children, so an entry is below an included one
        // exactly when one of its ancestors is already kept (a lookup per ancestor, not a
        // scan of everything kept so far).
        let mut keep = vec![false; entries.len()];
        let mut kept: std::collections::HashSet<PathBuf> = Default::default();
        let mut needed: std::collections::HashSet<PathBuf> = Default::default();
        for (i, (rel, _)) in entries.iter().enumerate() {
            let shown = PathBuf::from("/").join(&base).join(rel);
            if includes.is_excluded(&shown) || rel.ancestors().skip(1).any(|a| kept.contains(a)) {
                keep[i] = true;
                kept.insert(rel.clone());
                let mut a = rel.parent();
                while let Some(p) = a.filter(|p| !p.as_os_str().is_empty()) {
                    needed.insert(p.to_path_buf());
                    a = p.parent();
                }
            }
        }
        let mut i = 0;
        entries.retain(|(rel, _)| {
            let k = keep[i] || needed.contains(rel);
            i += 1;
            k
        });
    }

    let mut plan = RestorePlan {
        items: Vec::new(),
        files: Vec::new(),
        packs: HashMap::new(),
        problems: damaged,
    };
    let mut first_link: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut blob_slot: HashMap<BlobId, (PackId, usize)> = HashMap::new();
    // Every location looked up at once, in one read transaction of the local index.
    let wanted: Vec<BlobId> = {
        let mut ids: Vec<BlobId> = entries
            .iter()
            .filter(|(_, n)| n.kind == NodeKind::File)
            .flat_map(|(_, n)| n.content.iter().copied())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let found = repo.index()?.lookup_many(&wanted)?;
    let locations: HashMap<BlobId, BlobLocation> = wanted
        .iter()
        .zip(found)
        .filter_map(|(id, loc)| Some((*id, loc?)))
        .collect();
    for (rel, node) in entries {
        match node.kind {
            NodeKind::Dir => plan.items.push(Item::Dir(rel, node)),
            NodeKind::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(first) = first_link.get(&key) {
                        plan.items.push(Item::HardLink {
                            path: rel,
                            first: first.clone(),
                        });
                        continue;
                    }
                    first_link.insert(key, rel.clone());
                }
                let n = plan.files.len();
                let mut offset = 0u64;
                let mut failed = false;
                for id in &node.content {
                    let loc = match locations.get(id).copied() {
                        Some(loc) => loc,
                        None => {
                            plan.problems.push(Problem {
                                path: tree_walk::display_path(&base.join(&rel)),
                                message: format!("blob {id} is missing from the repository"),
                            });
                            failed = true;
                            break;
                        }
                    };
                    let (pack, slot) = *blob_slot.entry(*id).or_insert_with(|| {
                        let blobs = plan.packs.entry(loc.pack).or_default();
                        blobs.push(PlannedBlob {
                            loc,
                            uses: Vec::new(),
                        });
                        (loc.pack, blobs.len() - 1)
                    });
                    if let Some(blobs) = plan.packs.get_mut(&pack) {
                        blobs[slot].uses.push(BlobUse { file: n, offset });
                    }
                    offset += loc.raw_length as u64;
                }
                if !failed && offset != node.size {
                    plan.problems.push(Problem {
                        path: tree_walk::display_path(&base.join(&rel)),
                        message: format!(
                            "content adds up to {offset} bytes, the tree says {}",
                            node.size
                        ),
                    });
                    failed = true;
                }
                plan.files.push(FileJob {
                    final_path: rel.clone(),
                    temp_path: temp_name(&rel, n),
                    in_place: false,
                    remaining: AtomicU64::new(node.size),
                    failed: AtomicBool::new(failed),
                    node,
                });
            }
            _ => plan.items.push(Item::Special(rel, node)),
        }
    }
    Ok(plan)
}

/// Refuses to use `path` as a directory if it is a symlink (or not a directory). Returns
/// the device of a directory that was already there, `None` for one created here.
fn ensure_dir(path: &Path) -> Result<Option<u64>> {
    use std::os::unix::fs::MetadataExt;
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Ok(Some(m.dev())),
        Ok(m) if m.file_type().is_symlink() => Err(Error::invalid(format!(
            "{} is a symlink; refusing to restore through it",
            path.display()
        ))),
        Ok(_) => Err(Error::invalid(format!(
            "{} exists and is not a directory",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match fs::create_dir(path) {
            Ok(()) => Ok(None),
            // Made meanwhile (a snapshot naming a directory twice): a directory will do.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                match fs::symlink_metadata(path) {
                    Ok(m) if m.is_dir() => Ok(Some(m.dev())),
                    _ => Err(Error::io(path, e)),
                }
            }
            Err(e) => Err(Error::io(path, e)),
        },
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Removes whatever non-directory is at `path`, so a restored entry can take its place.
fn clear_non_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(Error::invalid(format!(
            "{} exists and is a directory",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path).at(path),
        Err(_) => Ok(()),
    }
}

/// The directories to restore, grouped by depth below the target: every directory's
/// parent is in the group before its own.
fn dirs_by_depth(items: &[Item]) -> Vec<Vec<(&Path, &Node)>> {
    let mut levels: Vec<Vec<(&Path, &Node)>> = Vec::new();
    for item in items {
        if let Item::Dir(rel, node) = item {
            let depth = rel.components().count();
            if levels.len() <= depth {
                levels.resize_with(depth + 1, Vec::new);
            }
            levels[depth].push((rel, node));
        }
    }
    levels
}

fn execute(
    repo: &Repository,
    plan: RestorePlan,
    target: &Path,
    durability: durable::Durability,
    progress: &dyn Progress,
) -> Result<RestoreReport> {
    use durable::Durability;
    let sync_each = durability == Durability::EachFile;
    let sync_file_systems = durability == Durability::FileSystems;
    let RestorePlan {
        items,
        mut files,
        packs,
        problems,
    } = plan;
    let problems = Mutex::new(problems);
    // The first write that found the file system full: the restore stops there rather than
    // fail every file after it.
    // Once contents are written, a full disk is a problem like any other.
    let out_of_space: Mutex<Option<Problem>> = Mutex::new(None);
    let stopped = AtomicBool::new(false);
    let contents_written = AtomicBool::new(false);
    let problem = |path: &Path, e: &Error| {
        let problem = Problem {
            path: path.display().to_string(),
            message: e.to_string(),
        };
        if e.is_out_of_space() && !contents_written.load(Ordering::Relaxed) {
            stopped.store(true, Ordering::Relaxed);
            // Named by its final path alone, not the temporary one it was written under.
            let message = match e {
                Error::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            lock(&out_of_space).get_or_insert(Problem { message, ..problem });
        } else {
            lock(&problems).push(problem);
        }
    };
    let mut report = RestoreReport::default();

    // Directories first, one level of depth at a time (parents before children), each
    // level's side by side; then empty temp files. Every file system written to holds the
    // target or a directory that was already there (a new one is on its parent's).
    let levels = dirs_by_depth(&items);
    let mut created_dirs: HashSet<&Path> = HashSet::new();
    let mut file_systems = durable::FileSystems::default();
    if sync_file_systems {
        use std::os::unix::fs::MetadataExt;
        file_systems.add(fs::metadata(target).at(target)?.dev(), target);
    }
    for level in &levels {
        let made: Vec<(&Path, Option<u64>)> = level
            .par_iter()
            .map(|(rel, _)| Ok((*rel, ensure_dir(&path_of(target, rel))?)))
            .collect::<Result<_>>()?;
        for (rel, existing) in made {
            match existing {
                None => {
                    created_dirs.insert(rel);
                }
                Some(dev) if sync_file_systems => file_systems.add(dev, &path_of(target, rel)),
                Some(_) => {}
            }
            report.dirs += 1;
        }
    }
    // An entry in a directory the restore made is made in place: nothing can be in its way.
    // Elsewhere it is made under a temporary name and renamed over whatever is there.
    let in_new_dir = |rel: &Path| rel.parent().is_some_and(|dir| created_dirs.contains(dir));
    for job in &mut files {
        job.in_place = job.node.content.len() == 1 && in_new_dir(&job.final_path);
    }
    let sync = || file_systems.sync();
    // Each file synced by itself is durable before it is placed: then it needs no batch.
    let placer = durable::Placer::new(sync_file_systems.then_some(&sync as _));
    let finished = AtomicUsize::new(0);
    let placed = |m: &durable::Move, result: Result<()>| match result {
        Ok(()) => {
            finished.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            files[m.file].failed.store(true, Ordering::Relaxed);
            let _ = fs::remove_file(&m.temp);
            problem(&m.final_path, &e);
        }
    };
    let place = |job: &FileJob, file: usize| {
        let m = durable::Move {
            file,
            temp: target.join(&job.temp_path),
            final_path: target.join(&job.final_path),
            bytes: job.node.size,
        };
        placer.place(m, &placed);
    };
    let finish_file = |job: &FileJob, file: usize| {
        let temp = target.join(&job.temp_path);
        let finished = if sync_each {
            // Opened before the metadata: the file's mode may forbid reading it.
            durable::open_to_sync(&temp).and_then(|file| {
                apply_metadata(&temp, &job.node, false)?;
                durable::sync_one(&file, &temp)
            })
        } else {
            apply_metadata(&temp, &job.node, false)
        };
        match finished {
            Ok(()) => place(job, file),
            Err(e) => {
                let _ = fs::remove_file(&temp);
                problem(&target.join(&job.final_path), &e);
            }
        }
    };
    files.par_iter().enumerate().for_each(|(n, job)| {
        let temp = target.join(&job.temp_path);
        // A file of one chunk is created, written and finished when its chunk arrives.
        if job.failed.load(Ordering::Relaxed) || job.node.content.len() == 1 {
            return;
        }
        let created = create_new(&temp).at(&temp).and_then(|file| {
            if job.node.size > 0 {
                file.set_len(job.node.size).at(&temp)
            } else {
                Ok(())
            }
        });
        match created {
            Ok(()) if job.node.size == 0 => finish_file(job, n),
            Ok(()) => {}
            Err(e) => {
                job.failed.store(true, Ordering::Relaxed);
                problem(&target.join(&job.final_path), &e);
            }
        }
    });

    // Contents: every pack once, several at a time, the blobs of each read side by side.
    // Symlinks, fifos and devices are created meanwhile.
    let mut pack_list: Vec<(PackId, Vec<PlannedBlob>)> = packs.into_iter().collect();
    pack_list.sort_by_key(|(id, _)| *id);
    let bytes = AtomicU64::new(0);
    let write_contents = || {
        pack_list.par_iter_mut().for_each(|(pack, blobs)| {
            blobs.sort_by_key(|b| b.loc.offset);
            for range in coalesce(blobs) {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let first = &blobs[range.start];
                let last = &blobs[range.end - 1];
                let start = first.loc.offset;
                let end = last.loc.offset + last.loc.length as u64;
                let data = match repo.read_pack_range_cold(pack, start, (end - start) as usize) {
                    Ok(d) => d,
                    Err(e) => {
                        for b in &blobs[range] {
                            fail_uses(&files, b, target, &e, &problem);
                        }
                        continue;
                    }
                };
                blobs[range].par_iter().for_each(|b| {
                    if stopped.load(Ordering::Relaxed) {
                        return;
                    }
                    let at = (b.loc.offset - start) as usize;
                    let plaintext =
                        match repo.open_blob(&b.loc, &data[at..at + b.loc.length as usize]) {
                            Ok(p) => p,
                            Err(e) => {
                                fail_uses(&files, b, target, &e, &problem);
                                return;
                            }
                        };
                    for u in &b.uses {
                        let job = &files[u.file];
                        if job.failed.load(Ordering::Relaxed) {
                            continue;
                        }
                        if job.node.content.len() == 1 {
                            match write_whole_file(target, job, &plaintext, sync_each) {
                                Ok(in_place) => {
                                    if in_place {
                                        finished.fetch_add(1, Ordering::Relaxed);
                                    } else {
                                        place(job, u.file);
                                    }
                                    bytes.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
                                    progress.advance(0, plaintext.len() as u64);
                                }
                                Err(e) => {
                                    job.failed.store(true, Ordering::Relaxed);
                                    problem(&target.join(&job.final_path), &e);
                                }
                            }
                            continue;
                        }
                        if let Err(e) = write_at(
                            &target.join(&job.temp_path),
                            &plaintext,
                            u.offset,
                            job.node.is_sparse(),
                        ) {
                            job.failed.store(true, Ordering::Relaxed);
                            problem(&target.join(&job.final_path), &e);
                            continue;
                        }
                        bytes.fetch_add(plaintext.len() as u64, Ordering::Relaxed);
                        progress.advance(0, plaintext.len() as u64);
                        let left = job
                            .remaining
                            .fetch_sub(plaintext.len() as u64, Ordering::AcqRel)
                            - plaintext.len() as u64;
                        if left == 0 {
                            finish_file(job, u.file);
                        }
                    }
                });
            }
        })
    };
    let others = AtomicU64::new(0);
    let create_specials = || {
        items.par_iter().enumerate().for_each(|(i, item)| {
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            if let Item::Special(rel, node) = item {
                let path = path_of(target, rel);
                let made = |at: &Path| {
                    create_special(at, node).and_then(|()| apply_metadata(at, node, false))
                };
                let result = if in_new_dir(rel) {
                    made(&path)
                } else {
                    let temp = target.join(temp_name(rel, files.len() + i));
                    replace_with(&path, &temp, made)
                };
                match result {
                    Ok(()) => {
                        others.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => problem(&path, &e),
                }
            }
        })
    };
    rayon::join(write_contents, create_specials);
    placer.finish(&placed);
    report.other = others.into_inner();
    contents_written.store(true, Ordering::Relaxed);
    let full = lock(&out_of_space).take();
    for job in &files {
        let unfinished = full.is_some()
            && job.node.content.len() > 1
            && job.remaining.load(Ordering::Relaxed) > 0;
        if job.failed.load(Ordering::Relaxed) || unfinished {
            let _ = fs::remove_file(target.join(&job.temp_path));
        }
    }
    if let Some(first) = full {
        let mut message = format!(
            "{}: {}\nthe restore stopped there, with {} of {} files written: free some space \
             and restore again (the files already written are rewritten)",
            first.path,
            first.message,
            finished.load(Ordering::Relaxed),
            files.len()
        );
        // What went wrong before would otherwise go unreported.
        let earlier = lock(&problems);
        if !earlier.is_empty() {
            message.push_str(&format!(
                "\nbefore it stopped, {} entries could not be restored:",
                earlier.len()
            ));
            for p in earlier.iter() {
                message.push_str(&format!("\n  {}: {}", p.path, p.message));
            }
        }
        return Err(Error::invalid(message));
    }
    report.files = finished.load(Ordering::Relaxed) as u64;
    report.bytes = bytes.load(Ordering::Relaxed);

    // Hard links to files now in place. A link may take the place of an existing file:
    // the file it links to must be durable first.
    let has_links = items.iter().any(|i| matches!(i, Item::HardLink { .. }));
    if sync_file_systems && has_links {
        file_systems.sync()?;
    }
    let links = AtomicU64::new(0);
    let not_restored: HashSet<&Path> = files
        .iter()
        .filter(|job| job.failed.load(Ordering::Relaxed))
        .map(|job| job.final_path.as_path())
        .collect();
    items.par_iter().enumerate().for_each(|(i, item)| {
        if let Item::HardLink { path: rel, first } = item {
            if not_restored.contains(first.as_path()) {
                let e = Error::invalid(format!(
                    "not linked: {} could not be restored",
                    path_of(target, first).display()
                ));
                return problem(&path_of(target, rel), &e);
            }
            let (path, first) = (path_of(target, rel), path_of(target, first));
            let link = |at: &Path| fs::hard_link(&first, at).at(at);
            let result = if in_new_dir(rel) {
                link(&path)
            } else {
                replace_with(&path, &target.join(temp_name(rel, files.len() + i)), link)
            };
            match result {
                Ok(()) => {
                    links.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => problem(&path, &e),
            }
        }
    });
    report.files += links.into_inner();
    // Directories synced one by one are opened before their metadata: a mode may forbid
    // reading them. One that cannot be opened even so (a directory of the user's that the
    // user may not read) leaves syncing every file system.
    let mut dirs_to_sync: Vec<(PathBuf, File)> = Vec::new();
    let mut sync_all_instead = false;
    if sync_each {
        let mut paths = vec![target.to_path_buf()];
        paths.extend(levels.iter().flatten().map(|(rel, _)| path_of(target, rel)));
        paths.dedup();
        for path in paths {
            match durable::open_to_sync(&path) {
                Ok(dir) => dirs_to_sync.push((path, dir)),
                Err(_) => sync_all_instead = true,
            }
        }
    }
    // Directory metadata last, deepest level first, so creating children does not change
    // it and a directory made unreadable does not hide its children's paths.
    for level in levels.iter().rev() {
        level.par_iter().for_each(|(rel, node)| {
            let path = path_of(target, rel);
            if let Err(e) = apply_metadata(&path, node, rel.as_os_str().is_empty()) {
                problem(&path, &e);
            }
        });
    }
    match durability {
        Durability::FileSystems => file_systems.sync()?,
        Durability::EachFile => {
            for (path, dir) in &dirs_to_sync {
                durable::sync_one(dir, path)?;
            }
            if sync_all_instead {
                durable::sync_all_file_systems();
            }
        }
        Durability::Off => {}
    }
    report.problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    Ok(report)
}

fn fail_uses(
    files: &[FileJob],
    blob: &PlannedBlob,
    target: &Path,
    e: &Error,
    problem: &dyn Fn(&Path, &Error),
) {
    for u in &blob.uses {
        let job = &files[u.file];
        if !job.failed.swap(true, Ordering::Relaxed) {
            problem(&target.join(&job.final_path), e);
        }
    }
}

/// Groups blobs (sorted by offset) into index ranges read with one read each.
fn coalesce(blobs: &[PlannedBlob]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let prev_end = blobs[i - 1].loc.offset + blobs[i - 1].loc.length as u64;
            let next = &blobs[i].loc;
            next.offset > prev_end + COALESCE_GAP
                || next.offset + next.length as u64 - blobs[start].loc.offset > MAX_READ
        };
        if split {
            out.push(start..i);
            start = i;
        }
    }
    out
}

/// Creates, writes and finishes a file of one chunk through a single descriptor: the
/// common case of small files, where every system call saved counts. True when it went
/// straight to its final name; false when it waits under its temporary name, to be put
/// in place.
fn write_whole_file(target: &Path, job: &FileJob, data: &[u8], sync: bool) -> Result<bool> {
    let final_path = target.join(&job.final_path);
    if job.in_place {
        match create_new(&final_path) {
            Ok(file) => {
                let result = fill_whole_file(file, &final_path, job, data, sync);
                if result.is_err() {
                    let _ = fs::remove_file(&final_path);
                }
                return result.map(|()| true);
            }
            // Something appeared since the directory was made: take the careful way.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Error::io(&final_path, e)),
        }
    }
    let temp = target.join(&job.temp_path);
    let file = match create_new(&temp) {
        // Left by an interrupted restore: it is ours to replace.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            clear_non_dir(&temp)?;
            create_new(&temp)
        }
        other => other,
    };
    let result = file
        .at(&temp)
        .and_then(|file| fill_whole_file(file, &temp, job, data, sync));
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map(|()| false)
}

/// Creates `path`, which must not exist, for writing; never follows a symlink.
fn create_new(path: &Path) -> std::io::Result<File> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes the whole content of a new file of one chunk and sets its metadata; with `sync`,
/// waits until both are on the disk.
fn fill_whole_file(file: File, path: &Path, job: &FileJob, data: &[u8], sync: bool) -> Result<()> {
    if job.node.is_sparse() {
        file.set_len(job.node.size).at(path)?;
        for (start, end) in non_zero_runs(data, 0) {
            file.write_all_at(&data[start..end], start as u64)
                .at(path)?;
        }
    } else {
        direct_write::write_all_at(&file, data, 0).at(path)?;
    }
    apply_file_metadata(&file, path, &job.node)?;
    if sync {
        durable::sync_one(&file, path)?;
    }
    Ok(())
}

/// As [`apply_metadata`], through an open regular file.
fn apply_file_metadata(file: &File, path: &Path, node: &Node) -> Result<()> {
    use std::os::fd::AsRawFd;
    use xattr::FileExt as _;
    if crate::platform::is_root() {
        std::os::unix::fs::fchown(file, Some(node.uid), Some(node.gid)).at(path)?;
    }
    for (name, value) in &node.xattrs {
        if let Err(e) = file.set_xattr(OsStr::from_bytes(name), value)
            && e.raw_os_error() != Some(libc::ENOTSUP)
            && e.raw_os_error() != Some(libc::EPERM)
        {
            return Err(Error::io(path, e));
        }
    }
    file.set_permissions(fs::Permissions::from_mode(node.mode & 0o7777))
        .at(path)?;
    let t = libc::timespec {
        tv_sec: node.mtime.secs as libc::time_t,
        tv_nsec: node.mtime.nanos as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: the descriptor is open for the duration of the call; times points at two timespecs.
    if unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(Error::io(path, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Block size at which zeros in a sparse file are left as holes.
const HOLE_BLOCK: usize = 4096;

/// Writes `data` at `offset`. For a sparse file, all-zero blocks are skipped: the file
/// was sized with `set_len`, so they read back as zeros and take no space.
fn write_at(path: &Path, data: &[u8], offset: u64, sparse: bool) -> Result<()> {
    let file = File::options()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .at(path)?;
    if !sparse {
        return direct_write::write_all_at(&file, data, offset)
            .map(drop)
            .at(path);
    }
    for (start, end) in non_zero_runs(data, offset) {
        file.write_all_at(&data[start..end], offset + start as u64)
            .at(path)?;
    }
    Ok(())
}

/// The ranges of `data` (placed at file offset `offset`) that hold non-zero bytes, in
/// whole file blocks where possible.
fn non_zero_runs(data: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    // Block boundaries are aligned to the file, not to the chunk.
    let mut start = 0usize;
    let first = HOLE_BLOCK - (offset as usize % HOLE_BLOCK);
    let mut end = first.min(data.len());
    while start < data.len() {
        if data[start..end].iter().any(|&b| b != 0) {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        start = end;
        end = (end + HOLE_BLOCK).min(data.len());
    }
    runs
}

/// Makes an entry with `make` at `temp`, next to `path`, and renames it over whatever is at
/// `path`: at every instant `path` names the old entry or the new one.
fn replace_with(path: &Path, temp: &Path, make: impl Fn(&Path) -> Result<()>) -> Result<()> {
    // Left by an interrupted restore: it is ours to replace.
    clear_non_dir(temp)?;
    let result = make(temp).and_then(|()| fs::rename(temp, path).at(path));
    // Gone once renamed, unless `path` already was another name of the same file (then
    // rename leaves both), or something failed.
    let _ = fs::remove_file(temp);
    result
}

/// Creates a symlink or special file at `path`, where nothing may be.
fn create_special(path: &Path, node: &Node) -> Result<()> {
    match node.kind {
        NodeKind::Symlink => {
            std::os::unix::fs::symlink(OsStr::from_bytes(&node.target), path).at(path)
        }
        NodeKind::Fifo | NodeKind::CharDevice | NodeKind::BlockDevice | NodeKind::Socket => {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes())
                .map_err(|_| Error::invalid(format!("{} contains NUL", path.display())))?;
            let kind = match node.kind {
                NodeKind::Fifo => libc::S_IFIFO,
                NodeKind::CharDevice => libc::S_IFCHR,
                NodeKind::BlockDevice => libc::S_IFBLK,
                _ => libc::S_IFSOCK,
            };
            // SAFETY: c is a valid NUL-terminated path; mknod has no other preconditions.
            let rc = unsafe {
                libc::mknod(
                    c.as_ptr(),
                    kind | (node.mode & 0o7777),
                    node.rdev as libc::dev_t,
                )
            };
            if rc != 0 {
                return Err(Error::io(path, std::io::Error::last_os_error()));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Sets owner (as root), extended attributes, permissions and times, never following a
/// symlink. The restore target's own root keeps its owner and mode.
fn apply_metadata(path: &Path, node: &Node, is_target_root: bool) -> Result<()> {
    let is_link = node.kind == NodeKind::Symlink;
    if crate::platform::is_root() && !is_target_root {
        std::os::unix::fs::lchown(path, Some(node.uid), Some(node.gid)).at(path)?;
    }
    // Extended attributes before the mode: setting them needs write permission, which a
    // read-only mode would take away from an ordinary user.
    for (name, value) in &node.xattrs {
        if let Err(e) = xattr::set(path, OsStr::from_bytes(name), value)
            && e.raw_os_error() != Some(libc::ENOTSUP)
            && e.raw_os_error() != Some(libc::EPERM)
        {
            return Err(Error::io(path, e));
        }
    }
    if !is_link && !is_target_root {
        fs::set_permissions(path, fs::Permissions::from_mode(node.mode & 0o7777)).at(path)?;
    }
    if !is_target_root {
        let c = std::ffi::CString::new(path.as_os_str().as_bytes())
            .map_err(|_| Error::invalid(format!("{} contains NUL", path.display())))?;
        let t = libc::timespec {
            tv_sec: node.mtime.secs as libc::time_t,
            tv_nsec: node.mtime.nanos as libc::c_long,
        };
        let times = [t, t];
        // SAFETY: c is a valid NUL-terminated path and times points at two timespecs.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::pack::BlobKind;
    use crate::format::tree::Tree;
    use crate::repository::testing::test_repo;

    #[test]
    fn a_plan_counts_what_restore_will_do() {
        let (repo, _storage, _cache) = test_repo();
        let saver = repo.saver().unwrap();
        let hello = saver.save(BlobKind::Data, b"hello").unwrap().id;
        let world = saver.save(BlobKind::Data, b"world!").unwrap().id;
        let file = |name: &str, content: Vec<BlobId>, size: u64, links: u64| Node {
            name: name.into(),
            kind: NodeKind::File,
            size,
            links,
            inode: 7,
            content,
            ..Node::default()
        };
        let sub = saver
            .save(
                BlobKind::Tree,
                &Tree {
                    nodes: vec![file("linked", vec![world], 6, 2)],
                }
                .encode_body(),
            )
            .unwrap()
            .id;
        let root = Tree {
            nodes: vec![
                file("a", vec![hello, world], 11, 1),
                Node {
                    name: b"d".to_vec(),
                    kind: NodeKind::Dir,
                    subtree: Some(sub),
                    ..Node::default()
                },
                file("gone", vec![BlobId([9; 32])], 3, 1),
                Node {
                    name: b"l".to_vec(),
                    kind: NodeKind::Symlink,
                    target: b"a".to_vec(),
                    ..Node::default()
                },
                file("linked", vec![world], 6, 2),
            ],
        };
        let root = saver.save(BlobKind::Tree, &root.encode_body()).unwrap().id;
        saver.finish().unwrap();

        let summary = plan(&repo, &root, &RestoreOptions::default())
            .unwrap()
            .summary();
        assert_eq!(
            (
                summary.files,
                summary.hard_links,
                summary.dirs,
                summary.other
            ),
            (2, 1, 1, 1)
        );
        assert_eq!((summary.bytes, summary.blobs, summary.packs), (17, 2, 1));
        assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
        assert_eq!(summary.problems[0].path, "/gone");
    }

    fn one_chunk_job(name: &str, data: &[u8], in_place: bool) -> FileJob {
        let final_path = PathBuf::from(name);
        FileJob {
            temp_path: temp_name(&final_path, 0),
            final_path,
            in_place,
            node: Node {
                name: name.into(),
                kind: NodeKind::File,
                size: data.len() as u64,
                mode: 0o640,
                content: vec![BlobId([1; 32])],
                ..Node::default()
            },
            remaining: AtomicU64::new(data.len() as u64),
            failed: AtomicBool::new(false),
        }
    }

    #[test]
    fn a_file_written_in_place_goes_there_and_one_in_the_way_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path();
        let in_place = write_whole_file(
            target,
            &one_chunk_job("new", b"fresh", true),
            b"fresh",
            true,
        )
        .unwrap();
        assert!(in_place);
        assert_eq!(fs::read(target.join("new")).unwrap(), b"fresh");
        let mode = fs::metadata(target.join("new"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o640);

        // Something in the way of a write in place (another process, a hard link to a file
        // outside) is replaced by rename, not written through.
        fs::write(target.join("outside"), b"keep me").unwrap();
        fs::hard_link(target.join("outside"), target.join("taken")).unwrap();
        let job = one_chunk_job("taken", b"restored", true);
        let in_place = write_whole_file(target, &job, b"restored", false).unwrap();
        assert!(
            !in_place,
            "written under its temporary name, to be put in place"
        );
        assert_eq!(fs::read(target.join("taken")).unwrap(), b"keep me");
        fs::rename(target.join(&job.temp_path), target.join("taken")).unwrap();
        assert_eq!(fs::read(target.join("taken")).unwrap(), b"restored");
        assert_eq!(fs::read(target.join("outside")).unwrap(), b"keep me");
        let mut names: Vec<_> = fs::read_dir(target)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["new", "outside", "taken"]);
    }

    #[test]
    fn zero_blocks_become_holes_and_runs_merge() {
        let mut data = vec![0u8; 5 * HOLE_BLOCK];
        data[HOLE_BLOCK + 7] = 1;
        data[2 * HOLE_BLOCK] = 1;
        data[5 * HOLE_BLOCK - 1] = 1;
        assert_eq!(
            non_zero_runs(&data, 0),
            vec![
                (HOLE_BLOCK, 3 * HOLE_BLOCK),
                (4 * HOLE_BLOCK, 5 * HOLE_BLOCK)
            ]
        );
        // Unaligned: the first block ends at the file's next block boundary.
        assert_eq!(non_zero_runs(&[0, 0, 1], 4094), vec![(2, 3)]);
        assert!(non_zero_runs(&[0; 100], 0).is_empty());
    }
}
