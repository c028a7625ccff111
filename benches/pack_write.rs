//! Writing packs: blobs stored through `BlobSaver::save` into a repository on local disk,
//! from all cores at once as a backup stores them, up to and including `finish` (the last
//! packs and the index segment, all durable).
//!
//! Every measured run stores into a new, empty repository, so nothing deduplicates. Inputs
//! are 64 MiB of random data in chunks of about 1 MiB, and 64 MiB of 4 KiB tree blobs
//! (encoded directory listings, compressing as a backup's trees do). Throughput is per
//! plaintext byte.

mod common;

use std::time::Duration;

use criterion::{
    BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use rayon::prelude::*;

use arca::format::pack::BlobKind;
use arca::format::tree::{Node, NodeKind, Timestamp, Tree};
use arca::id::BlobId;
use arca::repository::{InitOptions, Repository, SaveStats};

/// Data chunks from 768 KiB to 1280 KiB, 1 MiB on average, as the default chunker cuts them.
fn data_chunks(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let len = (768 << 10) + (i * 37 % 64) * (8 << 10);
            common::random_bytes(format!("chunk {i}").as_bytes(), len)
        })
        .collect()
}

/// Encoded trees of 25 files each, about 4 KiB: names, metadata and content ids that
/// differ from entry to entry as they do in a real directory.
fn tree_blobs(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|t| {
            let nodes = (0..25u64)
                .map(|i| {
                    let n = t as u64 * 25 + i;
                    Node {
                        name: format!("upload-{n:08}.jpg").into_bytes(),
                        kind: NodeKind::File,
                        mode: 0o100644,
                        uid: 1000,
                        gid: 1000,
                        user: b"www-data".to_vec(),
                        group: b"www-data".to_vec(),
                        mtime: Timestamp {
                            secs: 1_700_000_000 + (n as i64 * 7919) % 10_000_000,
                            nanos: (n * 104_729 % 1_000_000_000) as u32,
                        },
                        ctime: Timestamp {
                            secs: 1_700_000_000 + (n as i64 * 7919) % 10_000_000,
                            nanos: (n * 15_485_863 % 1_000_000_000) as u32,
                        },
                        size: n * 7 % 900_000,
                        inode: 1_000_000 + n,
                        device: 2049,
                        links: 1,
                        content: vec![BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())],
                        ..Node::default()
                    }
                })
                .collect();
            Tree { nodes }.encode_body()
        })
        .collect()
}

/// Stores every blob, from all cores, and makes them durable.
fn store(repo: &Repository, kind: BlobKind, blobs: &[Vec<u8>]) -> SaveStats {
    let saver = repo.saver().expect("start saving");
    blobs.par_iter().for_each(|blob| {
        saver.save(kind, blob).expect("save a blob");
    });
    saver.finish().expect("finish saving")
}

fn pack_write(c: &mut Criterion) {
    let inputs = [
        (
            "random-1MiB-chunks",
            BlobKind::Data,
            data_chunks(common::size(64, 4)),
        ),
        (
            "trees-4KiB",
            BlobKind::Tree,
            tree_blobs(common::size(16_384, 256)),
        ),
    ];
    let mut group = c.benchmark_group("pack-write");
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(15));
    for (name, kind, blobs) in &inputs {
        let bytes: usize = blobs.iter().map(Vec::len).sum();
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::new("save", name), blobs, |b, blobs| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("temporary folder");
                    let repo = common::local_repository(dir.path(), InitOptions::default());
                    (repo, dir)
                },
                |(repo, dir)| {
                    let stats = store(&repo, *kind, blobs);
                    assert_eq!(stats.blobs_added, blobs.len() as u64);
                    // Removed after the clock stops.
                    (repo, dir)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, pack_write);
criterion_main!(benches);
