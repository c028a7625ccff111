//! The backup hot path, stage by stage and whole: chunk → hash → compress → seal.
//!
//! Inputs are 16 MiB of compressible text-like data and 16 MiB of random data, the two
//! extremes a backup meets. Throughput is reported per input byte.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

use arca::chunker::{Chunker, ChunkerParams};
use arca::crypto::{self, Keys, ObjectKind};
use arca::format;

const LEN: usize = 16 << 20;

fn random_data() -> Vec<u8> {
    let mut data = vec![0u8; LEN];
    blake3::Hasher::new()
        .update(b"bench")
        .finalize_xof()
        .fill(&mut data);
    data
}

/// Text-like data: words drawn from a small vocabulary, compressing about 3:1 with zstd.
fn compressible_data() -> Vec<u8> {
    let words: Vec<&[u8]> = b"the quick brown fox jumps over lazy dog backup arca chunk pack index tree snapshot restore verify \
        data file directory server database config upload log entry value key 0 1 2 3 4 5 6 7 8 9"
        .split(|&b| b == b' ')
        .collect();
    let random = random_data();
    let mut out = Vec::with_capacity(LEN + 16);
    let mut i = 0;
    while out.len() < LEN {
        out.extend_from_slice(words[random[i % LEN] as usize % words.len()]);
        out.push(if random[(i + 1) % LEN] % 13 == 0 {
            b'\n'
        } else {
            b' '
        });
        i += 2;
    }
    out.truncate(LEN);
    out
}

fn seal_chunk(keys: &Keys, chunk: &[u8], level: i32) -> usize {
    let id = keys.blob_id(chunk);
    let mut buf = vec![0u8; 24];
    format::encode_payload_into(chunk, Some(level), &mut buf);
    crypto::seal_into(
        keys.encryption(),
        &crypto::associated_data(ObjectKind::DataBlob, Some(&id.0)),
        &mut buf,
    );
    buf.len()
}

fn stages(c: &mut Criterion) {
    let keys = Keys::from_master([7; 32]);
    let chunker = Chunker::new(ChunkerParams::DEFAULT, keys.chunker_seed());
    let inputs = [
        ("compressible", compressible_data()),
        ("random", random_data()),
    ];
    let mut group = c.benchmark_group("stage");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    for (name, data) in &inputs {
        group.bench_with_input(BenchmarkId::new("chunk", name), data, |b, d| {
            b.iter(|| chunker.chunk_lengths(d))
        });
        group.bench_with_input(BenchmarkId::new("hash", name), data, |b, d| {
            b.iter(|| keys.blob_id(d))
        });
        group.bench_with_input(BenchmarkId::new("compress-zstd3", name), data, |b, d| {
            // One core, in 1 MiB pieces as chunks would be.
            b.iter(|| {
                let mut out = Vec::new();
                d.chunks(1 << 20)
                    .map(|piece| {
                        out.clear();
                        arca::compress::compress_into(piece, 3, &mut out);
                        out.len()
                    })
                    .sum::<usize>()
            })
        });
        group.bench_with_input(BenchmarkId::new("seal", name), data, |b, d| {
            b.iter(|| crypto::seal(keys.encryption(), b"ad", d).len())
        });
    }
    group.finish();

    // The whole pipeline on all cores, as backup runs it.
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Bytes(LEN as u64));
    group.sample_size(10);
    for (name, data) in &inputs {
        group.bench_with_input(
            BenchmarkId::new("chunk-hash-compress-seal", name),
            data,
            |b, d| {
                b.iter(|| {
                    let lengths = chunker.chunk_lengths(d);
                    let mut ranges = Vec::new();
                    let mut at = 0;
                    for l in lengths {
                        ranges.push(at..at + l);
                        at += l;
                    }
                    ranges
                        .into_par_iter()
                        .map(|r| seal_chunk(&keys, &d[r], 3))
                        .sum::<usize>()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
