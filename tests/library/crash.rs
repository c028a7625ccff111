//! A backup interrupted at any write leaves a repository that verifies clean, and the
//! next backup and restore work.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arca::crypto::KdfParams;
use arca::error::Result;
use arca::ops::NoProgress;
use arca::ops::backup::{BackupOptions, backup};
use arca::ops::prune::{PruneOptions, prune};
use arca::ops::restore::{RestoreOptions, restore};
use arca::ops::verify::{ReadData, verify};
use arca::repository::{InitOptions, Repository, SnapshotFilter};
use arca::storage::{FileInfo, FileType, MemoryStorage, Storage};

/// Storage that fails every write or removal once `writes_left` are used up, as a crash
/// would cut them off.
struct CrashingStorage {
    inner: Arc<MemoryStorage>,
    writes_left: AtomicUsize,
}

impl CrashingStorage {
    fn spend(&self, what: String) -> Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(arca::Error::io(
                what,
                std::io::Error::other("simulated crash"),
            ));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

impl Storage for CrashingStorage {
    fn location(&self) -> String {
        "crashing".into()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn list(&self, ty: FileType) -> Result<Vec<FileInfo>> {
        self.inner.list(ty)
    }
    fn read(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        self.inner.read(ty, name)
    }
    fn read_range(&self, ty: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.read_range(ty, name, offset, len)
    }
    fn write(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.spend(ty.relative_path(name))?;
        self.inner.write(ty, name, data)
    }
    fn remove(&self, ty: FileType, name: &str) -> Result<()> {
        // Lock files come and go around every operation; a crash there proves nothing new.
        if ty != FileType::Lock {
            self.spend(ty.relative_path(name))?;
        }
        self.inner.remove(ty, name)
    }
    fn size(&self, ty: FileType, name: &str) -> Result<u64> {
        self.inner.size(ty, name)
    }
}

fn write_tree(root: &Path, seed: u64) {
    let mut x = seed | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for d in 0..4 {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..6 {
            let len = (next() % 400_000) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            std::fs::write(dir.join(format!("file{f}")), data).unwrap();
        }
    }
}

fn options(source: &Path) -> BackupOptions {
    BackupOptions {
        paths: vec![source.to_path_buf()],
        ..BackupOptions::default()
    }
}

fn assert_restores_identically(repo: &Repository, source: &Path) {
    let (_, snapshot) = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    let report = restore(
        repo,
        &snapshot.tree,
        &RestoreOptions {
            target: target.path().to_path_buf(),
            ..RestoreOptions::default()
        },
        &NoProgress,
    )
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let restored = target.path().join(source.strip_prefix("/").unwrap());
    for entry in walk(source) {
        let rel = entry.strip_prefix(source).unwrap();
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            std::fs::read(restored.join(rel)).unwrap(),
            "{rel:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p))
        } else {
            out.push(p)
        }
    }
    out
}

#[test]
fn a_backup_cut_off_at_any_write_leaves_a_clean_repository() {
    let source = tempfile::tempdir().unwrap();
    write_tree(source.path(), 42);
    let init = InitOptions {
        kdf: KdfParams::MINIMAL,
        pack_size: 1 << 20,
        ..InitOptions::default()
    };

    // First count the writes a whole backup makes.
    let total = {
        let inner = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().unwrap();
        let repo = Repository::init(inner.clone(), b"pw", &init, cache.path()).unwrap();
        let before: usize = FileType::ALL
            .iter()
            .map(|t| inner.list(*t).unwrap().len())
            .sum();
        backup(&repo, &options(source.path()), &NoProgress).unwrap();
        let after: usize = FileType::ALL
            .iter()
            .map(|t| inner.list(*t).unwrap().len())
            .sum();
        after - before
    };
    assert!(
        total >= 4,
        "a backup of this tree should write several packs, an index and a snapshot"
    );

    for cut in 0..total {
        let inner = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().unwrap();
        Repository::init(inner.clone(), b"pw", &init, cache.path()).unwrap();
        let crashing = Arc::new(CrashingStorage {
            inner: inner.clone(),
            writes_left: AtomicUsize::new(cut),
        });
        let repo = Repository::open(crashing, b"pw", cache.path()).unwrap();
        assert!(
            backup(&repo, &options(source.path()), &NoProgress).is_err(),
            "cut at write {cut} went unnoticed"
        );
        drop(repo);

        // The survivor: nothing dangling, at most packs no index refers to.
        let repo = Repository::open(inner.clone(), b"pw", cache.path()).unwrap();
        let report = verify(&repo, ReadData::All, &NoProgress).unwrap();
        assert!(report.is_clean(), "cut at write {cut}: {:?}", report.damage);
        assert!(
            repo.list_snapshots().unwrap().is_empty(),
            "cut at write {cut}: a snapshot was committed"
        );

        // The next backup completes, restores, and verifies.
        backup(&repo, &options(source.path()), &NoProgress).unwrap();
        assert_restores_identically(&repo, source.path());
        assert!(
            verify(&repo, ReadData::All, &NoProgress)
                .unwrap()
                .is_clean()
        );
    }
}

#[test]
fn a_pack_lost_after_the_index_was_cached_is_stored_again() {
    let source = tempfile::tempdir().unwrap();
    write_tree(source.path(), 7);
    let storage = Arc::new(MemoryStorage::new());
    let cache = tempfile::tempdir().unwrap();
    let init = InitOptions {
        kdf: KdfParams::MINIMAL,
        pack_size: 1 << 20,
        ..InitOptions::default()
    };
    let repo = Repository::init(storage.clone(), b"pw", &init, cache.path()).unwrap();
    backup(&repo, &options(source.path()), &NoProgress).unwrap();
    let pack = storage.list(FileType::Pack).unwrap()[0].name.clone();
    storage.remove(FileType::Pack, &pack).unwrap();
    drop(repo);

    // Same cache, which still lists the lost pack, and a parent snapshot whose unchanged
    // files point into it: the next backup must store that data again.
    let repo = Repository::open(storage.clone(), b"pw", cache.path()).unwrap();
    let report = backup(&repo, &options(source.path()), &NoProgress).unwrap();
    assert!(report.snapshot.summary.blobs_added > 0);
    assert_restores_identically(&repo, source.path());
    let (latest, _) = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .unwrap();
    let damage = verify(&repo, ReadData::All, &NoProgress).unwrap();
    assert!(
        damage
            .damaged_paths
            .iter()
            .all(|p| !p.starts_with(&latest.short())),
        "{:?}",
        damage.damaged_paths
    );
}

/// A repository with three snapshots of a changing tree, the oldest forgotten: prune then
/// has packs to delete, packs to repack and index segments to replace.
fn repository_to_prune(storage: Arc<MemoryStorage>, cache: &Path, source: &Path) {
    let init = InitOptions {
        kdf: KdfParams::MINIMAL,
        pack_size: 1 << 20,
        ..InitOptions::default()
    };
    let repo = Repository::init(storage, b"pw", &init, cache).unwrap();
    for seed in [1, 2, 3] {
        std::fs::remove_dir_all(source.join("dir0")).ok();
        write_tree(source, seed);
        backup(&repo, &options(source), &NoProgress).unwrap();
    }
    let oldest = repo.list_snapshots().unwrap()[0].0;
    repo.remove_snapshot(&oldest).unwrap();
}

#[test]
fn a_prune_cut_off_at_any_step_leaves_a_clean_repository_and_a_rerun_converges() {
    let source = tempfile::tempdir().unwrap();
    // Count the writes and removals of a whole prune.
    let total = {
        let storage = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().unwrap();
        repository_to_prune(storage.clone(), cache.path(), source.path());
        let counting = Arc::new(CrashingStorage {
            inner: storage.clone(),
            writes_left: AtomicUsize::new(usize::MAX),
        });
        let repo = Repository::open(counting.clone(), b"pw", cache.path()).unwrap();
        let (plan, _) = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        assert!(plan.packs_to_delete + plan.packs_to_repack > 0, "{plan:?}");
        usize::MAX - counting.writes_left.load(Ordering::SeqCst)
    };
    assert!(
        total >= 4,
        "prune should write and remove several files, made {total}"
    );

    let mut interrupted = 0;
    for cut in 0..total {
        let storage = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().unwrap();
        repository_to_prune(storage.clone(), cache.path(), source.path());
        let crashing = Arc::new(CrashingStorage {
            inner: storage.clone(),
            writes_left: AtomicUsize::new(cut),
        });
        let repo = Repository::open(crashing, b"pw", cache.path()).unwrap();
        // Pack ids are random, so the plan (and its number of writes) can differ a little
        // from the counting run: a prune that finished within `cut` steps is simply done.
        if prune(&repo, &PruneOptions::default(), &NoProgress).is_err() {
            interrupted += 1;
        }
        drop(repo);

        let repo = Repository::open(storage.clone(), b"pw", cache.path()).unwrap();
        repo.unlock(true).unwrap(); // the crashed process's lock
        let report = verify(&repo, ReadData::All, &NoProgress).unwrap();
        assert!(report.is_clean(), "cut at {cut}: {:?}", report.damage);
        assert_eq!(repo.list_snapshots().unwrap().len(), 2);
        assert_restores_identically(&repo, source.path());

        // A rerun finishes the job; a third run has nothing left to delete or repack.
        prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        let (plan, _) = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
        assert_eq!(
            (plan.packs_to_delete, plan.packs_to_repack),
            (0, 0),
            "cut at {cut}: {plan:?}"
        );
        assert!(
            verify(&repo, ReadData::All, &NoProgress)
                .unwrap()
                .is_clean(),
            "cut at {cut}"
        );
        assert_restores_identically(&repo, source.path());
    }
    assert!(
        interrupted * 4 >= total * 3,
        "only {interrupted} of {total} cuts interrupted the prune"
    );
}

/// Every blob the local index knows, and the segments it has loaded, in a stable order.
fn index_contents(repo: &Repository) -> (Vec<String>, Vec<String>) {
    let index = repo.local_index().unwrap();
    let mut blobs = Vec::new();
    index
        .for_each_blob(|loc| blobs.push(format!("{loc:?}")))
        .unwrap();
    blobs.sort();
    let mut segments: Vec<String> = index
        .loaded_segments()
        .unwrap()
        .iter()
        .map(|id| id.to_hex())
        .collect();
    segments.sort();
    (blobs, segments)
}

#[test]
fn after_a_prune_the_local_index_is_what_a_rebuild_would_make() {
    let source = tempfile::tempdir().unwrap();
    let storage = Arc::new(MemoryStorage::new());
    let cache = tempfile::tempdir().unwrap();
    repository_to_prune(storage.clone(), cache.path(), source.path());
    let repo = Repository::open(storage.clone(), b"pw", cache.path()).unwrap();
    let (plan, _) = prune(&repo, &PruneOptions::default(), &NoProgress).unwrap();
    assert!(plan.packs_to_delete + plan.packs_to_repack > 0, "{plan:?}");
    let after_prune = index_contents(&repo);
    repo.rebuild_index().unwrap();
    let rebuilt = index_contents(&repo);
    assert!(!rebuilt.0.is_empty());
    assert_eq!(after_prune, rebuilt);
}
