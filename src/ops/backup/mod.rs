//! `arca backup`: store files, directories and streams as a new snapshot.
//!
//! The source paths are walked in parallel; every file is chunked, and each chunk is
//! hashed, deduplicated, compressed and sealed on all cores (a large file's chunks too).
//! A file whose size, mtime, ctime and inode match the parent snapshot is not read again;
//! a changed one is cut where its parent version was cut while its bytes still match.
//! Packs and the index are durable before the snapshot is written.

mod file;
mod guide;
mod stdin;
mod walk;

pub use stdin::{StdinOptions, backup_stdin};

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

use super::{Problem, Progress};
use crate::error::{Error, IoContext, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, Tree};
use crate::id::{BlobId, SnapshotId};
use crate::repository::LockKind;
use crate::repository::{BlobSaver, Repository, SnapshotFilter};

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub tags: Vec<String>,
    /// Host name recorded in the snapshot (default: this machine's).
    pub host: Option<String>,
    /// Glob patterns: with a `/` they match the whole absolute path, without one a name.
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    /// Compare against this snapshot instead of the latest of the same host and paths.
    pub parent: Option<String>,
    /// Read every file even when the parent says it is unchanged.
    pub force_read: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub snapshot_id: SnapshotId,
    pub snapshot: Snapshot,
    pub parent: Option<SnapshotId>,
    pub problems: Vec<Problem>,
    /// Bytes of file content read (zero when nothing changed).
    pub bytes_read: u64,
}

/// Content and size of hard-linked files already read, by (device, inode).
pub(crate) type HardLinks = std::collections::HashMap<(u64, u64), (Vec<BlobId>, u64)>;

/// State shared by every thread of one backup.
pub(crate) struct Context<'r> {
    pub repo: &'r Repository,
    pub saver: BlobSaver<'r>,
    pub excludes: Excludes,
    pub one_file_system: bool,
    pub force_read: bool,
    pub problems: Mutex<Vec<Problem>>,
    pub files_new: AtomicU64,
    pub files_changed: AtomicU64,
    pub files_unchanged: AtomicU64,
    pub dirs: AtomicU64,
    pub bytes_read: AtomicU64,
    pub progress: &'r dyn Progress,
    /// Content of hard-linked files already read in this backup, by (device, inode).
    pub hard_links: Mutex<HardLinks>,
}

impl Context<'_> {
    pub fn problem(&self, path: &Path, message: impl std::fmt::Display) {
        let mut problems = self.problems.lock().unwrap_or_else(|e| e.into_inner());
        problems.push(Problem {
            path: path.display().to_string(),
            message: message.to_string(),
        });
    }

    pub fn save_tree(&self, tree: &Tree) -> Result<BlobId> {
        Ok(self.saver.save(BlobKind::Tree, &tree.encode_body())?.id)
    }

    /// [`save_tree`](Self::save_tree), except that a tree whose id is `stored` (one known
    /// to be in the repository) is not looked up or stored again.
    pub fn save_tree_unless(&self, tree: &Tree, stored: Option<BlobId>) -> Result<BlobId> {
        let body = tree.encode_body();
        let id = self.repo.blob_id(&body);
        if Some(id) == stored {
            return Ok(id);
        }
        Ok(self.saver.save_with_id(BlobKind::Tree, id, &body)?.id)
    }
}

/// Compiled exclude patterns.
pub(crate) struct Excludes {
    by_path: globset::GlobSet,
    by_name: globset::GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut by_path = globset::GlobSetBuilder::new();
        let mut by_name = globset::GlobSetBuilder::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::invalid(format!("exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                by_path.add(glob)
            } else {
                by_name.add(glob)
            };
        }
        let build = |b: globset::GlobSetBuilder| {
            b.build()
                .map_err(|e| Error::invalid(format!("exclude patterns: {e}")))
        };
        Ok(Excludes {
            by_path: build(by_path)?,
            by_name: build(by_name)?,
        })
    }

    pub fn is_excluded(&self, path: &Path) -> bool {
        (!self.by_path.is_empty() && self.by_path.is_match(path))
            || (!self.by_name.is_empty()
                && path.file_name().is_some_and(|n| self.by_name.is_match(n)))
    }
}

/// Reads an exclude file: one pattern per line; blank lines and `#` comments are skipped.
pub fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).at(path)?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Makes a path absolute and removes `.` and `..` lexically (symlinks are not followed,
/// so backing up a symlink records the link itself).
pub fn absolute_path(path: &Path) -> Result<PathBuf> {
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().at(".")?.join(path)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The source paths as a tree of names: inner directories are the paths' ancestors.
#[derive(Debug)]
pub(crate) enum Virtual {
    /// A source path, backed up whole.
    Source(PathBuf),
    /// An ancestor of source paths, recorded with only those children.
    Ancestor(PathBuf, BTreeMap<Vec<u8>, Virtual>),
}

fn build_virtual(paths: &[PathBuf]) -> BTreeMap<Vec<u8>, Virtual> {
    use std::os::unix::ffi::OsStrExt;
    let mut root: BTreeMap<Vec<u8>, Virtual> = BTreeMap::new();
    let mut sorted = paths.to_vec();
    sorted.sort();
    for path in sorted {
        let names: Vec<Vec<u8>> = path.iter().skip(1).map(|c| c.as_bytes().to_vec()).collect();
        let mut level = &mut root;
        let mut so_far = PathBuf::from("/");
        for (i, name) in names.iter().enumerate() {
            so_far.push(std::ffi::OsStr::from_bytes(name));
            let last = i + 1 == names.len();
            let entry = level.entry(name.clone()).or_insert_with(|| {
                if last {
                    Virtual::Source(so_far.clone())
                } else {
                    Virtual::Ancestor(so_far.clone(), BTreeMap::new())
                }
            });
            if last {
                *entry = Virtual::Source(so_far.clone());
                break;
            }
            match entry {
                Virtual::Source(_) => break, // already covered by an ancestor source path
                Virtual::Ancestor(_, children) => level = children,
            }
        }
    }
    root
}

/// Backs up `options.paths` into a new snapshot.
pub fn backup(
    repo: &Repository,
    options: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupReport> {
    let lock = repo.lock(LockKind::Shared, "backup")?;
    let started = Instant::now();
    let time = crate::platform::now();
    if options.paths.is_empty() {
        return Err(Error::invalid("nothing to back up: give at least one path"));
    }
    let mut paths = Vec::new();
    for p in &options.paths {
        let abs = absolute_path(p)?;
        std::fs::symlink_metadata(&abs).at(&abs)?;
        paths.push(abs);
    }
    let path_strings: Vec<String> = {
        let mut v: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        v.sort();
        v.dedup();
        v
    };
    let host = options
        .host
        .clone()
        .unwrap_or_else(crate::platform::hostname);
    let parent = match &options.parent {
        Some(spec) => Some(repo.find_snapshot(spec, &SnapshotFilter::default())?),
        None => {
            let filter = SnapshotFilter {
                hosts: vec![host.clone()],
                ..Default::default()
            };
            // A damaged snapshot file must not stop backups: it just cannot be a parent.
            repo.list_readable_snapshots()?
                .0
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s) && s.paths == path_strings)
        }
    };
    let parent_tree = match &parent {
        // A parent whose trees are lost only costs speed: everything is read afresh.
        Some((_, s)) => repo.load_tree(&s.tree).ok(),
        None => None,
    };

    let ctx = Context {
        repo,
        saver: repo.saver()?,
        excludes: Excludes::new(&options.excludes)?,
        one_file_system: options.one_file_system,
        force_read: options.force_read,
        problems: Mutex::new(Vec::new()),
        files_new: AtomicU64::new(0),
        files_changed: AtomicU64::new(0),
        files_unchanged: AtomicU64::new(0),
        dirs: AtomicU64::new(0),
        bytes_read: AtomicU64::new(0),
        progress,
        hard_links: Mutex::new(Default::default()),
    };
    let virtual_root = build_virtual(&paths);
    let root = walk::virtual_tree(&ctx, &virtual_root, parent_tree.as_ref())?;
    let root_id = ctx.save_tree(&root)?;

    let Context {
        saver,
        problems,
        files_new,
        files_changed,
        files_unchanged,
        dirs,
        bytes_read,
        ..
    } = ctx;
    let stats = saver.finish()?;
    let problems = problems.into_inner().unwrap_or_else(|e| e.into_inner());
    let summary = Summary {
        files_new: files_new.load(Ordering::Relaxed),
        files_changed: files_changed.load(Ordering::Relaxed),
        files_unchanged: files_unchanged.load(Ordering::Relaxed),
        dirs: dirs.load(Ordering::Relaxed),
        bytes_read: bytes_read.load(Ordering::Relaxed),
        bytes_added: stats.stored_bytes_added,
        blobs_added: stats.blobs_added,
        errors: problems.len() as u64,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let snapshot = Snapshot {
        time,
        host,
        user: crate::platform::username(),
        paths: path_strings,
        tags: options.tags.clone(),
        parent: parent.as_ref().map(|(id, _)| *id),
        tree: root_id,
        program_version: format!("arca {}", env!("CARGO_PKG_VERSION")),
        summary,
    };
    // The commit point: only while the lock still protects the data written.
    lock.check()?;
    let snapshot_id = repo.save_snapshot(&snapshot)?;
    Ok(BackupReport {
        snapshot_id,
        bytes_read: snapshot.summary.bytes_read,
        parent: snapshot.parent,
        snapshot,
        problems,
    })
}

/// The entry of `name` in an optional parent tree.
pub(crate) fn parent_entry<'t>(tree: Option<&'t Tree>, name: &[u8]) -> Option<&'t Node> {
    tree.and_then(|t| t.find(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_paths_nest_under_their_ancestors() {
        let v = build_virtual(&[
            PathBuf::from("/srv/a"),
            PathBuf::from("/srv/b/c"),
            PathBuf::from("/srv/a/x"),
        ]);
        let Some(Virtual::Ancestor(p, srv)) = v.get(b"srv".as_slice()) else {
            panic!("{v:?}")
        };
        assert_eq!(p, Path::new("/srv"));
        assert!(matches!(srv.get(b"a".as_slice()), Some(Virtual::Source(_))));
        assert!(matches!(
            srv.get(b"b".as_slice()),
            Some(Virtual::Ancestor(_, _))
        ));
    }

    #[test]
    fn excludes_match_names_and_paths() {
        let ex =
            Excludes::new(&["*.tmp".into(), "/srv/cache/**".into(), "/srv/skip".into()]).unwrap();
        assert!(ex.is_excluded(Path::new("/srv/a/x.tmp")));
        assert!(ex.is_excluded(Path::new("/srv/cache/a/b")));
        assert!(ex.is_excluded(Path::new("/srv/skip")));
        assert!(!ex.is_excluded(Path::new("/srv/skipper")));
        assert!(!ex.is_excluded(Path::new("/srv/a/x.tmpl")));
    }

    #[test]
    fn paths_are_made_absolute_lexically() {
        assert_eq!(
            absolute_path(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
    }
}
