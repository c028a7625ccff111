//! Scale tests: memory and time of `arca` against a repository whose index holds ten million
//! chunks, and on a tree of a million small files.
//!
//! They take minutes and gigabytes, so they are ignored by the default test run. Run them
//! with an optimised build (see the README):
//!
//! ```sh
//! cargo test --release --test scale -- --ignored --nocapture --test-threads 1
//! ```
//!
//! The large inputs they build (the synthetic repository, the tree of files) are kept under
//! `target/scale/` and reused by later runs; delete that folder to build them afresh.
//! `ARCA_SCALE_CHUNKS` and `ARCA_SCALE_FILES` set smaller sizes for a quick try.
#![allow(clippy::unwrap_used)]

mod measure;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca::crypto::KdfParams;
use arca::format::pack::BlobKind;
use arca::repository::local_index::SCHEMA_VERSION;
use arca::repository::{InitOptions, Repository};
use arca::storage::LocalStorage;
use rayon::prelude::*;

use measure::{Measured, Run};

const PASSWORD: &str = "scale-test-password";

/// Peak resident memory allowed to any one `arca` run.
const MEMORY_LIMIT_MIB: f64 = 256.0;

/// How much longer a backup or restore may take against the ten-million-chunk repository
/// than against an empty one.
const LARGE_INDEX_EXTRA: Duration = Duration::from_secs(5);

/// An unchanged backup of the million-file tree must take less than this.
const UNCHANGED_MILLION_LIMIT: Duration = Duration::from_secs(10);

fn scale_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("scale");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number")),
        Err(_) => default,
    }
}

/// `arca ARGS` against `repo`, with its own cache folder and nothing from the environment.
fn arca(repo: &Path, cache: &Path, args: &[&str]) -> Run {
    let mut run = Run::new(env!("CARGO_BIN_EXE_arca"));
    run.env_clear_arca()
        .env("ARCA_REPOSITORY", repo)
        .env("ARCA_CACHE_DIR", cache)
        .env("ARCA_PASSWORD", PASSWORD)
        .args(args);
    run
}

/// Fills `dir` with `files` files of varied sizes (a few bytes to 1 MiB), `total` bytes in
/// all, of text-like content, so backups chunk, compress and deduplicate as on real data.
fn write_small_tree(dir: &Path, files: usize, total: usize) {
    fs::create_dir_all(dir).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let words = [
        "backup ",
        "chunk ",
        "index ",
        "pack ",
        "restore ",
        "verify ",
        "snapshot ",
    ];
    let mut written = 0;
    for i in 0..files {
        let sub = dir.join(format!("d{:02}", i % 16));
        fs::create_dir_all(&sub).unwrap();
        let size = if i == 0 {
            total / 4
        } else {
            (next() as usize % (2 * (total * 3 / 4) / files)).max(1)
        };
        let mut body = Vec::with_capacity(size + 16);
        while body.len() < size {
            body.extend_from_slice(words[next() as usize % words.len()].as_bytes());
            body.extend_from_slice(&next().to_le_bytes()[..2]);
        }
        body.truncate(size);
        written += size;
        fs::write(sub.join(format!("f{i:05}.txt")), &body).unwrap();
    }
    assert!(written > 0);
}

/// Builds (once, then reuses) a repository whose index holds `chunks` distinct chunks, in
/// real packs and index segments written through the library, with the local index that
/// writing them leaves behind. Returns (repository, its cache folder).
///
/// The building runs in a child process (this test binary, running
/// [`build_synthetic_repository`]): a process started from this one inherits its peak
/// memory as a starting point, so this one must stay small for the measures to be right.
fn synthetic_repository(chunks: u64) -> (PathBuf, PathBuf) {
    let base = scale_dir().join(format!("repo-{chunks}-chunks"));
    let (repo, cache, done) = (base.join("repo"), base.join("cache"), base.join("complete"));
    // A build whose local index has an older schema would be rebuilt inside the timed backup.
    if fs::read_to_string(&done).ok() != Some(complete_marker()) {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "build_synthetic_repository",
                "--nocapture",
            ])
            .env(BUILD_VARIABLE, format!("{chunks}:{}", base.display()))
            .status()
            .unwrap();
        assert!(
            status.success() && done.exists(),
            "building {} failed",
            base.display()
        );
    }
    (repo, cache)
}

const BUILD_VARIABLE: &str = "ARCA_SCALE_BUILD";

/// What a finished synthetic repository's `complete` file holds: the schema of the local
/// index its build left.
fn complete_marker() -> String {
    format!("local index schema {SCHEMA_VERSION}\n")
}

/// Not a test: the child process of [`synthetic_repository`], which names in
/// `ARCA_SCALE_BUILD` (as `CHUNKS:FOLDER`) what to build. Does nothing without it.
#[test]
#[ignore = "a helper of ten_million_chunk_index"]
fn build_synthetic_repository() {
    let Ok(spec) = std::env::var(BUILD_VARIABLE) else {
        return;
    };
    let (chunks, base) = spec.split_once(':').unwrap();
    let chunks: u64 = chunks.parse().unwrap();
    let base = PathBuf::from(base);
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base).unwrap();
    eprintln!(
        "building a repository of {chunks} chunks in {}",
        base.display()
    );
    let started = Instant::now();
    let storage = Arc::new(LocalStorage::new(base.join("repo")));
    let options = InitOptions {
        kdf: KdfParams::DEFAULT,
        ..InitOptions::default()
    };
    let repository =
        Repository::init(storage, PASSWORD.as_bytes(), &options, &base.join("cache")).unwrap();
    let saver = repository.saver().unwrap();
    // Each chunk is 16 bytes: its number, and a tag that keeps it apart from real data.
    (0..chunks).into_par_iter().for_each(|n| {
        let mut chunk = [0u8; 16];
        chunk[..8].copy_from_slice(&n.to_le_bytes());
        chunk[8..].copy_from_slice(b"synthetc");
        saver.save(BlobKind::Data, &chunk).unwrap();
    });
    let stats = saver.finish().unwrap();
    assert_eq!(stats.blobs_added, chunks);
    eprintln!(
        "built in {:.1} s: {} packs, {} index segments",
        started.elapsed().as_secs_f64(),
        stats.packs_written,
        stats.index_segments.len()
    );
    fs::write(base.join("complete"), complete_marker()).unwrap();
}

/// Backs up `data` into `repo` and restores it; returns (backup, restore) measurements.
fn backup_and_restore(
    repo: &Path,
    cache: &Path,
    data: &Path,
    target: &Path,
) -> (Measured, Measured) {
    let backup = arca(repo, cache, &["backup", "--host", "scale"])
        .arg(data)
        .run_ok();
    let _ = fs::remove_dir_all(target);
    let restore = arca(
        repo,
        cache,
        &["restore", "latest", "--host", "scale", "--target"],
    )
    .arg(target)
    .run_ok();
    (backup, restore)
}

#[test]
#[ignore = "builds a ten-million-chunk repository: run with --ignored (see the README)"]
fn ten_million_chunk_index() {
    let chunks = env_count("ARCA_SCALE_CHUNKS", 10_000_000);
    let work = tempfile::tempdir_in(scale_dir()).unwrap();
    let data = work.path().join("data");
    write_small_tree(&data, 500, 32 << 20);

    // The same backup and restore against an empty repository first.
    let empty_repo = work.path().join("empty");
    let empty_cache = work.path().join("empty-cache");
    arca(&empty_repo, &empty_cache, &["init"]).run_ok();
    let (empty_backup, empty_restore) =
        backup_and_restore(&empty_repo, &empty_cache, &data, &work.path().join("r1"));

    let (repo, cache) = synthetic_repository(chunks);
    // Start from the local index the build left, not from one an earlier run extended.
    let run_cache = work.path().join("large-cache");
    copy_dir(&cache, &run_cache);
    let (large_backup, large_restore) =
        backup_and_restore(&repo, &run_cache, &data, &work.path().join("r2"));
    // A machine that has never used the repository loads the whole index first.
    let cold_cache = work.path().join("cold-cache");
    let cold_backup = arca(&repo, &cold_cache, &["backup", "--host", "scale"])
        .arg(&data)
        .run_ok();

    report(&[
        ("backup, empty repository", &empty_backup),
        ("restore, empty repository", &empty_restore),
        (&format!("backup, {chunks}-chunk repository"), &large_backup),
        (
            &format!("restore, {chunks}-chunk repository"),
            &large_restore,
        ),
        ("backup with an empty cache (loads the index)", &cold_backup),
    ]);
    for m in [&empty_backup, &empty_restore, &large_backup, &large_restore] {
        assert!(m.peak_rss_mib < MEMORY_LIMIT_MIB, "{m:?}");
    }
    assert!(
        large_backup.wall < empty_backup.wall + LARGE_INDEX_EXTRA,
        "{large_backup:?} vs {empty_backup:?}"
    );
    assert!(
        large_restore.wall < empty_restore.wall + LARGE_INDEX_EXTRA,
        "{large_restore:?} vs {empty_restore:?}"
    );
    assert!(
        cold_backup.peak_rss_mib < MEMORY_LIMIT_MIB,
        "{cold_backup:?}"
    );
    assert_same_tree(
        &data,
        &work.path().join("r2").join(data.strip_prefix("/").unwrap()),
    );
}

#[test]
#[ignore = "writes a million files: run with --ignored (see the README)"]
fn million_small_files() {
    let files = env_count("ARCA_SCALE_FILES", 1_000_000);
    let tree = million_file_tree(files);
    let work = tempfile::tempdir_in(scale_dir()).unwrap();
    let repo = work.path().join("repo");
    let cache = work.path().join("cache");
    arca(&repo, &cache, &["init"]).run_ok();
    let first = arca(&repo, &cache, &["backup", "--json"])
        .arg(&tree)
        .run_ok();
    let second = arca(&repo, &cache, &["backup", "--json"])
        .arg(&tree)
        .run_ok();
    report(&[
        (&format!("first backup, {files} files"), &first),
        (&format!("unchanged backup, {files} files"), &second),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        summary["bytes_read"], 0,
        "the unchanged backup read file contents"
    );
    assert_eq!(summary["snapshot"]["summary"]["files_unchanged"], files);
    for m in [&first, &second] {
        assert!(m.peak_rss_mib < MEMORY_LIMIT_MIB, "{m:?}");
    }
    assert!(second.wall < UNCHANGED_MILLION_LIMIT, "{second:?}");
}

/// A tree of `files` small distinct files, 1,000 to a folder (made once, then reused).
fn million_file_tree(files: u64) -> PathBuf {
    let tree = scale_dir().join(format!("tree-{files}-files"));
    let done = scale_dir().join(format!("tree-{files}-files.complete"));
    if done.exists() {
        return tree;
    }
    let _ = fs::remove_dir_all(&tree);
    eprintln!("writing {files} files under {}", tree.display());
    let started = Instant::now();
    let per_dir = 1000;
    (0..files.div_ceil(per_dir)).into_par_iter().for_each(|d| {
        let dir = tree
            .join(format!("{:03}", d / 100))
            .join(format!("{:02}", d % 100));
        fs::create_dir_all(&dir).unwrap();
        for f in (d * per_dir)..((d + 1) * per_dir).min(files) {
            let mut file = fs::File::create(dir.join(format!("{f}.conf"))).unwrap();
            writeln!(file, "# file {f}\nname = item-{f}\nsize = {}", f * 7 % 4096).unwrap();
        }
    });
    eprintln!("written in {:.1} s", started.elapsed().as_secs_f64());
    fs::write(&done, b"").unwrap();
    tree
}

fn report(rows: &[(&str, &Measured)]) {
    eprintln!("\n| run | wall seconds | peak RSS MiB |\n|---|---:|---:|");
    for (name, m) in rows {
        eprintln!(
            "| {name} | {:.2} | {:.1} |",
            m.wall.as_secs_f64(),
            m.peak_rss_mib
        );
    }
    eprintln!();
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// Every file under `a` has the same contents at the same place under `b`, and vice versa.
fn assert_same_tree(a: &Path, b: &Path) {
    let mut names_a: Vec<_> = fs::read_dir(a)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut names_b: Vec<_> = fs::read_dir(b)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names_a.sort();
    names_b.sort();
    assert_eq!(names_a, names_b, "{} vs {}", a.display(), b.display());
    for name in names_a {
        let (pa, pb) = (a.join(&name), b.join(&name));
        if pa.is_dir() {
            assert_same_tree(&pa, &pb);
        } else {
            assert!(
                fs::read(&pa).unwrap() == fs::read(&pb).unwrap(),
                "{} differs",
                pb.display()
            );
        }
    }
}
