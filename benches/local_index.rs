//! The local index at scale: lookups and inserts in a `LocalIndex` of ten million blobs.
//!
//! The index is filled once with a bulk load, as an empty cache is, from synthetic index
//! segments of random blob ids (100,000 blobs each, 64 to a pack, as backups write them),
//! and kept in `<cargo target folder>/bench-index-<entries>/` for later runs; delete that
//! folder to build it again. `ARCA_BENCH_INDEX_ENTRIES` sets another size. The database is then
//! in the operating system's page cache: the figures are those of a warm cache.
//!
//! The id filter is built before the lookups are measured, as a backup builds it once it
//! has made enough of them: `lookup` shows what an answer from the database costs.
//!
//! The insert bench adds a segment of 1,000 new blobs and, untimed, drops its pack again,
//! so the index keeps its size from one iteration (and run) to the next; only the
//! segment's id stays behind in the table of loaded segments.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

use arca::format::index::{IndexSegment, IndexedPack};
use arca::format::pack::{BlobKind, PackEntry};
use arca::id::{BlobId, IndexId, PackId};
use arca::repository::LocalIndex;

const REPO_ID: [u8; 32] = *b"arca local index bench repo id..";
const BLOBS_PER_SEGMENT: u64 = 100_000;
const BLOBS_PER_PACK: u64 = 64;
/// Blobs in the segment the insert bench adds.
const INSERTED: u64 = 1_000;
/// Ids looked up, drawn at random ahead of the measurement and used in turn.
const POOL: usize = 1 << 16;

fn hash(tag: &str, n: u64) -> [u8; 32] {
    *blake3::Hasher::new()
        .update(tag.as_bytes())
        .update(&n.to_le_bytes())
        .finalize()
        .as_bytes()
}

/// The `n`th blob the index holds (for `n` below its size).
fn stored(n: u64) -> BlobId {
    BlobId(hash("stored blob", n))
}

/// A blob the index does not hold.
fn absent(n: u64) -> BlobId {
    BlobId(hash("absent blob", n))
}

fn segment_id(first: u64) -> IndexId {
    IndexId(hash("segment", first))
}

/// A segment listing blobs `first..first + count` in packs of [`BLOBS_PER_PACK`], with
/// sizes of compressed chunks of about 1 MiB.
fn segment(first: u64, count: u64) -> IndexSegment {
    let packs = (first..first + count)
        .step_by(BLOBS_PER_PACK as usize)
        .map(|start| {
            let mut offset = 0u64;
            let blobs: Vec<PackEntry> = (start..(start + BLOBS_PER_PACK).min(first + count))
                .map(|n| {
                    let raw_length = 524_288 + (n * 7919 % 1_048_576) as u32;
                    let length = raw_length / 2 + 40;
                    let entry = PackEntry {
                        kind: BlobKind::Data,
                        id: stored(n),
                        offset,
                        length,
                        raw_length,
                    };
                    offset += length as u64;
                    entry
                })
                .collect();
            IndexedPack {
                id: PackId(hash("pack", start)),
                size: offset + 64 * blobs.len() as u64,
                blobs,
            }
        })
        .collect();
    IndexSegment {
        packs,
        supersedes: Vec::new(),
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The index of `entries` blobs: the one an earlier run left if it is complete, else one
/// built now.
fn built_index(entries: u64) -> LocalIndex {
    let dir = common::target_dir().join(format!("bench-index-{entries}"));
    let path = dir.join("index.sqlite");
    let done = dir.join("complete");
    let last = segment_id((entries - 1) / BLOBS_PER_SEGMENT * BLOBS_PER_SEGMENT);
    if done.exists() {
        let index = LocalIndex::open(&path, &REPO_ID).expect("open the local index");
        let whole = index
            .loaded_segments()
            .is_ok_and(|loaded| loaded.contains(&last))
            && index.contains(&stored(0)).unwrap_or(false)
            && index.contains(&stored(entries - 1)).unwrap_or(false);
        if whole {
            return index;
        }
        drop(index);
    }
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "building a local index of {entries} blobs in {}",
        dir.display()
    );
    let started = Instant::now();
    {
        // As a new cache is filled from the repository's index: one bulk load.
        let index = LocalIndex::open(&path, &REPO_ID).expect("create the local index");
        let mut load = index.bulk_load().expect("start a bulk load");
        for first in (0..entries).step_by(BLOBS_PER_SEGMENT as usize) {
            let count = BLOBS_PER_SEGMENT.min(entries - first);
            load.add_segment(segment_id(first), &segment(first, count))
                .expect("add a segment");
        }
        load.finish().expect("finish the bulk load");
    }
    let took = started.elapsed();
    let report = format!(
        "{entries} blobs in {:.2} s; index.sqlite is {:.1} MiB\n",
        took.as_secs_f64(),
        file_size(&path) as f64 / (1 << 20) as f64,
    );
    eprint!("built {report}");
    std::fs::write(&done, report).expect("mark the local index complete");
    LocalIndex::open(&path, &REPO_ID).expect("open the local index")
}

/// A deterministic stream of numbers below `bound`.
fn draws(bound: u64, seed: u64) -> impl Iterator<Item = u64> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        // splitmix64
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    })
}

fn local_index(c: &mut Criterion) {
    let default = common::size(10_000_000, 10_000);
    let entries = match std::env::var("ARCA_BENCH_INDEX_ENTRIES") {
        Ok(v) => v.replace('_', "").parse().unwrap_or(default),
        Err(_) => default,
    };
    let index = built_index(entries);
    // As a backup asks once it has made enough lookups: absent ids are answered by the
    // filter, present ones (and the filter's false positives) by the database.
    let started = Instant::now();
    index.build_id_filter().expect("build the id filter");
    eprintln!(
        "id filter of {entries} blobs built in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let present: Vec<BlobId> = draws(entries, 1).take(POOL).map(stored).collect();
    let missing: Vec<BlobId> = (0..POOL as u64).map(absent).collect();
    assert!(index.lookup(&present[0]).expect("lookup").is_some());
    assert!(index.lookup(&missing[0]).expect("lookup").is_none());
    let mut turn = 0usize;
    let mut next = |ids: &[BlobId]| {
        turn = (turn + 1) % ids.len();
        ids[turn]
    };

    let mut group = c.benchmark_group(format!("local-index-{entries}"));
    group.measurement_time(Duration::from_secs(5));
    for (name, ids) in [("present", &present), ("absent", &missing)] {
        group.bench_function(BenchmarkId::new("contains", name), |b| {
            b.iter(|| index.contains(&next(ids)).expect("contains"))
        });
        group.bench_function(BenchmarkId::new("lookup", name), |b| {
            b.iter(|| index.lookup(&next(ids)).expect("lookup"))
        });
    }

    // Restore asks for a sorted list; the unsorted one shows what the order saves.
    group.throughput(Throughput::Elements(1000));
    for sorted in [true, false] {
        let mut batches: Vec<Vec<BlobId>> = present.chunks(1000).map(<[_]>::to_vec).collect();
        if sorted {
            batches.iter_mut().for_each(|b| b.sort_unstable());
        }
        let name = if sorted { "1000-sorted" } else { "1000-random" };
        let mut turn = 0usize;
        group.bench_function(BenchmarkId::new("lookup_many", name), |b| {
            b.iter(|| {
                turn = (turn + 1) % batches.len();
                let found = index.lookup_many(&batches[turn]).expect("lookup_many");
                debug_assert!(found.iter().all(Option::is_some));
                found
            })
        });
    }

    group.throughput(Throughput::Elements(INSERTED));
    let mut first = entries;
    group.bench_function(
        BenchmarkId::new("add_segment", "1000-blobs-dropped-after"),
        |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let segment = segment(first, INSERTED);
                    let packs: Vec<PackId> = segment.packs.iter().map(|p| p.id).collect();
                    let started = Instant::now();
                    index
                        .add_segment(segment_id(first), &segment)
                        .expect("add a segment");
                    timed += started.elapsed();
                    index.drop_packs(&packs).expect("drop the packs again");
                    first += INSERTED;
                }
                timed
            })
        },
    );
    group.finish();
}

criterion_group!(benches, local_index);
criterion_main!(benches);
