//! Restore planning: `restore::plan` on a snapshot of 20,000 small files and a few large
//! ones, in a repository on local disk: walking the trees, filtering, looking up every
//! blob in the local index, and grouping the reads by pack. Nothing is written.
//!
//! The snapshot is made once per run by backing up a generated tree: 200 folders of 100
//! files of 100 bytes to 4 KiB, and 4 files of 32 MiB.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use arca::id::BlobId;
use arca::ops::NoProgress;
use arca::ops::backup::{BackupOptions, backup};
use arca::ops::restore::{self, RestoreOptions};
use arca::repository::{InitOptions, Repository};

struct Shape {
    folders: usize,
    files_per_folder: usize,
    large_files: usize,
    large_size: usize,
}

fn write_tree(root: &Path, shape: &Shape) {
    for d in 0..shape.folders {
        let dir = root.join(format!("d{d:03}"));
        fs::create_dir_all(&dir).expect("create a folder");
        for f in 0..shape.files_per_folder {
            let n = d * shape.files_per_folder + f;
            let body = common::random_bytes(&(n as u64).to_le_bytes(), 100 + n * 7919 % 4000);
            fs::write(dir.join(format!("f{f:03}.conf")), body).expect("write a file");
        }
    }
    let large = root.join("large");
    fs::create_dir_all(&large).expect("create a folder");
    for i in 0..shape.large_files {
        let body = common::random_bytes(format!("large {i}").as_bytes(), shape.large_size);
        fs::write(large.join(format!("db{i}.sqlite")), body).expect("write a file");
    }
}

/// A repository holding one snapshot of a tree of `shape`; returns its root tree.
fn snapshot(dir: &Path, shape: &Shape) -> (Repository, BlobId) {
    let data = dir.join("data");
    write_tree(&data, shape);
    let repo = common::local_repository(dir, InitOptions::default());
    let options = BackupOptions {
        paths: vec![data],
        host: Some("bench".into()),
        ..BackupOptions::default()
    };
    let report = backup(&repo, &options, &NoProgress).expect("back up");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    (repo, report.snapshot.tree)
}

fn restore_plan(c: &mut Criterion) {
    let shape = Shape {
        folders: common::size(200, 20),
        files_per_folder: 100,
        large_files: common::size(4, 2),
        large_size: common::size(32 << 20, 2 << 20),
    };
    let work = tempfile::tempdir().expect("temporary folder");
    let (repo, root) = snapshot(work.path(), &shape);
    let files = shape.folders * shape.files_per_folder + shape.large_files;
    let everything = RestoreOptions {
        target: work.path().join("restored"),
        ..RestoreOptions::default()
    };
    // One folder of the 200 (or 20), as `--include d007` picks it.
    let one_folder = RestoreOptions {
        includes: vec!["d007".into()],
        ..everything.clone()
    };

    let whole = restore::plan(&repo, &root, &everything)
        .expect("plan")
        .summary();
    assert_eq!(whole.files, files as u64, "{whole:?}");
    assert!(whole.problems.is_empty(), "{whole:?}");
    let part = restore::plan(&repo, &root, &one_folder)
        .expect("plan")
        .summary();
    assert_eq!(part.files, shape.files_per_folder as u64, "{part:?}");

    let mut group = c.benchmark_group("restore-plan");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(8));
    // Per entry of the snapshot: every one is visited, whatever is kept.
    group.throughput(Throughput::Elements(whole.files + whole.dirs));
    let name = format!("{files}-files");
    group.bench_function(format!("{name}/everything"), |b| {
        b.iter(|| restore::plan(&repo, &root, &everything).expect("plan"))
    });
    group.bench_function(format!("{name}/include-one-folder"), |b| {
        b.iter(|| restore::plan(&repo, &root, &one_folder).expect("plan"))
    });
    group.finish();
}

criterion_group!(benches, restore_plan);
criterion_main!(benches);
