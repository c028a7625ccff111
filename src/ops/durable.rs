//! Making a restore durable: its files are on the disk before it reports success, and a
//! file restored over an existing one replaces it only once its new contents are there.
//!
//! Written files sit in the page cache until the kernel writes them back, up to half a
//! minute later. A crash (a power cut) in that time would leave restored files empty or
//! short; and where a rename had replaced an existing file, the old contents would be gone
//! too, since the rename can reach the disk before the new contents do. Syncing each file
//! would wait for the disk once per file, so whole file systems are synced (`syncfs`)
//! instead, a few times per restore:
//!
//! - a file that takes no one's place is renamed into place at once; a crash can only leave
//!   it short or missing, and the next restore writes it again;
//! - a file that replaces something waits, under its temporary name, in a batch; one sync
//!   covers the whole batch's contents, and only then are they renamed over what they
//!   replace. At every instant the path holds the old contents or the new, never neither;
//! - a last sync, once everything is in place, covers all the rest: contents, renames,
//!   directories, metadata.
//!
//! A sync of a whole file system also writes what other programs have left to write there,
//! which on a busy server can take a while. A small restore (a few files put back) therefore
//! fsyncs each file it writes before putting it in place, and each directory at the end.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::{Error, IoContext, Result};

/// A restore of at most this many entries fsyncs each one instead of syncing whole file
/// systems.
const SYNC_EACH_UP_TO: usize = 256;

/// How a restore makes what it writes durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Durability {
    /// Nothing is synced (`restore --no-sync`).
    Off,
    /// Each file is fsynced before it is put in place, each directory at the end.
    EachFile,
    /// Whole file systems are synced, a few times per restore.
    FileSystems,
}

impl Durability {
    /// The way for a restore of `entries` files, directories, links and other entries.
    pub fn for_restore(no_sync: bool, entries: usize) -> Durability {
        match (no_sync, entries) {
            (true, _) => Durability::Off,
            (false, n) if n <= SYNC_EACH_UP_TO => Durability::EachFile,
            _ => Durability::FileSystems,
        }
    }
}

/// Opens a file or directory to fsync it later, never following a symlink. Open it before
/// its mode is restored: a mode may forbid reading.
pub(super) fn open_to_sync(path: &Path) -> Result<File> {
    File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .at(path)
}

/// Writes everything waiting for every file system to its disk, and waits for it: the way
/// left when a directory to sync cannot be opened.
pub(super) fn sync_all_file_systems() {
    // SAFETY: sync has no preconditions; on Linux it returns once the data is written.
    unsafe { libc::sync() };
}

/// The directories that will hold a new entry when `target` is made with its missing
/// parents: each missing one's parent, up to the first that exists. Empty if `target`
/// exists.
pub(super) fn parents_gaining_entries(target: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dir = target;
    while fs::symlink_metadata(dir).is_err() {
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        out.push(parent.to_path_buf());
        if parent == Path::new(".") || parent == dir {
            break;
        }
        dir = parent;
    }
    out
}

/// Fsyncs a file or directory opened with [`open_to_sync`] (or for writing).
pub(super) fn sync_one(file: &File, path: &Path) -> Result<()> {
    file.sync_all().map_err(|e| {
        Error::io(
            path,
            io::Error::new(e.kind(), format!("could not be written to the disk: {e}")),
        )
    })
}

/// A batch of replacements is synced and renamed once it holds this many files, or this
/// many bytes: until then each replaced file takes disk space twice.
const BATCH_FILES: usize = 4096;
const BATCH_BYTES: u64 = 256 << 20;

/// The file systems a restore writes to, each reached through one open directory on it.
#[derive(Default)]
pub(super) struct FileSystems {
    dirs: HashMap<u64, (PathBuf, File)>,
    /// A directory that could not be opened (no read permission): sync every file system.
    all: bool,
    /// The first sync that failed. The kernel reports a lost write-back once per open
    /// file, to whichever sync comes first: every later sync must fail as well.
    failed: Mutex<Option<(PathBuf, io::ErrorKind, String)>>,
}

impl FileSystems {
    /// Adds the file system of directory `path`, whose device is `dev`, unless known.
    pub fn add(&mut self, dev: u64, path: &Path) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.dirs.entry(dev) {
            match open_to_sync(path) {
                Ok(dir) => {
                    slot.insert((path.to_path_buf(), dir));
                }
                Err(_) => self.all = true,
            }
        }
    }

    /// Writes everything waiting for each file system to its disk, and waits for it.
    pub fn sync(&self) -> Result<()> {
        let mut failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        if failed.is_none() {
            if self.all {
                sync_all_file_systems();
            }
            for (path, dir) in self.dirs.values() {
                // SAFETY: `dir` is an open descriptor owned by `self`.
                if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
                    let e = io::Error::last_os_error();
                    *failed = Some((path.clone(), e.kind(), e.to_string()));
                    break;
                }
            }
        }
        match &*failed {
            None => Ok(()),
            Some((path, kind, e)) => Err(Error::io(
                path,
                io::Error::new(
                    *kind,
                    format!("the restored files could not be written to the disk: {e}"),
                ),
            )),
        }
    }
}

/// Renames `from` to `to` unless something is at `to`, atomically. False, with nothing
/// renamed, when something is there, or when the file system cannot say (it lacks the
/// atomic check): the caller must then treat `to` as taken.
pub(super) fn rename_unless_taken(from: &Path, to: &Path) -> io::Result<bool> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
    };
    let (from_c, to_c) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; renameat2 has no other preconditions.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST | libc::EINVAL | libc::ENOSYS) => Ok(false),
        _ => Err(e),
    }
}

/// A restored file written under a temporary name, to be renamed to its final one.
#[derive(Debug)]
pub(super) struct Move {
    /// Which file of the restore it is.
    pub file: usize,
    pub temp: PathBuf,
    pub final_path: PathBuf,
    /// Its size: what waits in a batch is bounded in bytes too.
    pub bytes: u64,
}

/// Hears how each [`Move`] ended: renamed, or not (then the temporary file is still there).
pub(super) type Done<'a> = &'a (dyn Fn(&Move, Result<()>) + Sync);

/// Puts restored files in place, holding back those that replace something until a sync
/// has made their contents durable (see the module's text).
pub(super) struct Placer<'a> {
    /// How to make everything written so far durable; `None` renames every file at once:
    /// with `restore --no-sync`, or when each file was fsynced before it is placed.
    sync: Option<&'a (dyn Fn() -> Result<()> + Sync)>,
    waiting: Mutex<Batch>,
}

#[derive(Default)]
struct Batch {
    moves: Vec<Move>,
    bytes: u64,
}

impl Drop for Placer<'_> {
    /// A restore that ended before [`finish`](Placer::finish) leaves no temporary file.
    fn drop(&mut self) {
        let batch = self.waiting.get_mut().unwrap_or_else(|e| e.into_inner());
        for m in batch.moves.drain(..) {
            let _ = fs::remove_file(&m.temp);
        }
    }
}

impl<'a> Placer<'a> {
    pub fn new(sync: Option<&'a (dyn Fn() -> Result<()> + Sync)>) -> Self {
        Placer {
            sync,
            waiting: Mutex::new(Batch::default()),
        }
    }

    /// Renames the file into place, now or, if it replaces something, once a sync covers
    /// it. `done` hears of it either way, perhaps on another thread, perhaps not before
    /// [`finish`](Self::finish).
    pub fn place(&self, m: Move, done: Done<'_>) {
        if self.sync.is_none() {
            // rename replaces a file or symlink in the way atomically, never following it.
            let result = fs::rename(&m.temp, &m.final_path).at(&m.final_path);
            return done(&m, result);
        }
        match rename_unless_taken(&m.temp, &m.final_path) {
            Ok(true) => done(&m, Ok(())),
            Ok(false) => {
                let full = {
                    let mut batch = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                    batch.bytes += m.bytes;
                    batch.moves.push(m);
                    (batch.moves.len() >= BATCH_FILES || batch.bytes >= BATCH_BYTES)
                        .then(|| std::mem::take(&mut *batch))
                };
                if let Some(batch) = full {
                    self.commit(batch.moves, done);
                }
            }
            Err(e) => done(&m, Err(Error::io(&m.final_path, e))),
        }
    }

    /// Syncs and renames every file still waiting.
    pub fn finish(&self, done: Done<'_>) {
        let batch = std::mem::take(&mut *self.waiting.lock().unwrap_or_else(|e| e.into_inner()));
        if !batch.moves.is_empty() {
            self.commit(batch.moves, done);
        }
    }

    fn commit(&self, moves: Vec<Move>, done: Done<'_>) {
        let synced = match self.sync {
            Some(sync) => sync(),
            None => Ok(()),
        };
        match synced {
            Ok(()) => moves.par_iter().for_each(|m| {
                // rename replaces a file or symlink in the way atomically, never following it.
                done(m, fs::rename(&m.temp, &m.final_path).at(&m.final_path))
            }),
            Err(e) => {
                let kind = match &e {
                    Error::Io { source, .. } => source.kind(),
                    _ => io::ErrorKind::Other,
                };
                for m in &moves {
                    let why = format!(
                        "left as it was: the restored contents could not be made durable ({e})"
                    );
                    done(m, Err(Error::io(&m.final_path, io::Error::new(kind, why))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn moves_over_existing(dir: &Path, n: usize) -> Vec<Move> {
        (0..n)
            .map(|i| {
                let final_path = dir.join(format!("f{i}"));
                let temp = dir.join(format!(".tmp{i}"));
                fs::write(&final_path, b"old").unwrap();
                fs::write(&temp, b"new").unwrap();
                Move {
                    file: i,
                    temp,
                    final_path,
                    bytes: 3,
                }
            })
            .collect()
    }

    #[test]
    fn a_file_replaces_another_only_after_a_sync_that_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let n = BATCH_FILES + 10;
        let moves = moves_over_existing(dir.path(), n);
        let finals: Vec<PathBuf> = moves.iter().map(|m| m.final_path.clone()).collect();
        let placed = Mutex::new(Vec::new());
        // Each sync sees which files are already replaced: none may be, unless a sync before
        // this one had covered it.
        let syncs = Mutex::new(Vec::new());
        let sync = || {
            let replaced = finals
                .iter()
                .filter(|p| fs::read(p).unwrap() == b"new")
                .count();
            syncs.lock().unwrap().push(replaced);
            Ok(())
        };
        let placer = Placer::new(Some(&sync));
        let done = |m: &Move, r: Result<()>| {
            r.unwrap();
            placed.lock().unwrap().push(m.final_path.clone());
        };
        for m in moves {
            placer.place(m, &done);
        }
        // One full batch went; the rest waits, still under temporary names.
        assert_eq!(*syncs.lock().unwrap(), [0]);
        assert_eq!(placed.lock().unwrap().len(), BATCH_FILES);
        assert_eq!(
            fs::read(dir.path().join(format!("f{}", n - 1))).unwrap(),
            b"old"
        );
        placer.finish(&done);
        assert_eq!(*syncs.lock().unwrap(), [0, BATCH_FILES]);
        assert_eq!(placed.lock().unwrap().len(), n);
        for p in &finals {
            assert_eq!(fs::read(p).unwrap(), b"new");
        }
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            n,
            "no temporary file left"
        );
    }

    #[test]
    fn a_file_that_replaces_nothing_goes_in_place_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (temp, final_path) = (dir.path().join(".tmp"), dir.path().join("f"));
        fs::write(&temp, b"new").unwrap();
        let never = || -> Result<()> { panic!("nothing to sync for a new file") };
        let placer = Placer::new(Some(&never));
        let renamed = AtomicUsize::new(0);
        let done = |_: &Move, r: Result<()>| {
            r.unwrap();
            renamed.fetch_add(1, Ordering::Relaxed);
        };
        placer.place(
            Move {
                file: 0,
                temp: temp.clone(),
                final_path: final_path.clone(),
                bytes: 3,
            },
            &done,
        );
        assert_eq!(renamed.load(Ordering::Relaxed), 1);
        assert_eq!(fs::read(&final_path).unwrap(), b"new");
        assert!(!temp.exists());
    }

    #[test]
    fn when_the_sync_fails_the_old_files_stay_and_each_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let moves = moves_over_existing(dir.path(), 3);
        let failing = || Err(Error::invalid("device gone"));
        let placer = Placer::new(Some(&failing));
        let failures = Mutex::new(Vec::new());
        let done = |m: &Move, r: Result<()>| {
            let e = r.unwrap_err();
            failures
                .lock()
                .unwrap()
                .push((m.final_path.clone(), e.to_string()));
        };
        for m in moves {
            placer.place(m, &done);
        }
        placer.finish(&done);
        let failures = failures.into_inner().unwrap();
        assert_eq!(failures.len(), 3);
        for (path, message) in failures {
            assert_eq!(fs::read(&path).unwrap(), b"old");
            assert!(message.contains("device gone"), "{message}");
        }
    }

    #[test]
    fn without_sync_a_file_replaces_another_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut moves = moves_over_existing(dir.path(), 1);
        let placer = Placer::new(None);
        placer.place(moves.pop().unwrap(), &|_, r| r.unwrap());
        assert_eq!(fs::read(dir.path().join("f0")).unwrap(), b"new");
    }

    #[test]
    fn a_rename_unless_taken_leaves_a_taken_name_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        assert!(!rename_unless_taken(&a, &b).unwrap());
        assert_eq!(fs::read(&b).unwrap(), b"b");
        fs::remove_file(&b).unwrap();
        assert!(rename_unless_taken(&a, &b).unwrap());
        assert_eq!(fs::read(&b).unwrap(), b"a");
        assert!(!a.exists());
    }

    #[test]
    fn small_restores_sync_each_file_large_ones_whole_file_systems() {
        assert_eq!(Durability::for_restore(true, 1), Durability::Off);
        assert_eq!(Durability::for_restore(false, 1), Durability::EachFile);
        assert_eq!(
            Durability::for_restore(false, SYNC_EACH_UP_TO),
            Durability::EachFile
        );
        assert_eq!(
            Durability::for_restore(false, SYNC_EACH_UP_TO + 1),
            Durability::FileSystems
        );
    }

    #[test]
    fn file_systems_sync_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        use std::os::unix::fs::MetadataExt;
        let dev = fs::metadata(dir.path()).unwrap().dev();
        let mut fss = FileSystems::default();
        fss.add(dev, dir.path());
        fss.add(dev, &sub);
        assert_eq!(fss.dirs.len(), 1);
        assert!(!fss.all);
        fss.sync().unwrap();
        // Once a sync has failed, every later one fails too.
        *fss.failed.lock().unwrap() = Some((
            dir.path().to_path_buf(),
            io::ErrorKind::StorageFull,
            "no space".into(),
        ));
        let e = fss.sync().unwrap_err();
        assert!(e.is_out_of_space(), "{e}");
        assert!(fss.sync().is_err());
        *fss.failed.lock().unwrap() = None;
        // A directory that cannot be opened: every file system is synced instead.
        fss.add(dev + 1, &dir.path().join("missing"));
        assert!(fss.all);
        fss.sync().unwrap();
    }

    #[test]
    fn a_new_target_and_its_new_parents_are_entries_of_their_parents() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        assert!(parents_gaining_entries(base).is_empty());
        assert_eq!(parents_gaining_entries(&base.join("t")), [base]);
        assert_eq!(
            parents_gaining_entries(&base.join("a/b/t")),
            [base.join("a/b"), base.join("a"), base.to_path_buf()]
        );
    }
}
