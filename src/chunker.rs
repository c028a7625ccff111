//! Content-defined chunking: FastCDC (2020) with a gear table keyed by the repository.

use std::io::Read;

use serde::Serialize;

use crate::error::{Error, Result};

/// Chunk size bounds in bytes, recorded in the repository config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl ChunkerParams {
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min_size: 512 * 1024,
        avg_size: 1024 * 1024,
        max_size: 8 * 1024 * 1024,
    };

    /// Checks the sizes against what FastCDC supports (and what a blob may hold).
    pub fn check(&self) -> Result<()> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let (min, avg, max) = (
            self.min_size as usize,
            self.avg_size as usize,
            self.max_size as usize,
        );
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            // fastcdc derives its masks from log2(avg) and misplaces cuts for odd sizes.
            && avg.is_power_of_two()
            && min % 64 == 0
            && max % 64 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "chunk sizes out of range: min {min}, avg {avg}, max {max}"
            )))
        }
    }
}

/// Splits data into content-defined chunks; the same seed and sizes always cut at the same places.
#[derive(Clone, Copy, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    seed: u64,
}

impl Chunker {
    pub fn new(params: ChunkerParams, seed: u64) -> Self {
        Chunker { params, seed }
    }

    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Lengths of the chunks of `data`, in order; they add up to `data.len()`.
    pub fn chunk_lengths(&self, data: &[u8]) -> Vec<usize> {
        if data.len() <= self.params.min_size as usize {
            return if data.is_empty() {
                Vec::new()
            } else {
                vec![data.len()]
            };
        }
        fastcdc::v2020::FastCDC::with_level_and_seed(
            data,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        )
        .map(|c| c.length)
        .collect()
    }

    /// Chunks a stream (standard input) as it arrives, calling `sink` with each chunk.
    pub fn chunk_stream<R: Read>(
        &self,
        reader: R,
        mut sink: impl FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let stream = fastcdc::v2020::StreamCDC::with_level_and_seed(
            reader,
            self.params.min_size as usize,
            self.params.avg_size as usize,
            self.params.max_size as usize,
            fastcdc::v2020::Normalization::Level1,
            self.seed,
        );
        let mut total = 0u64;
        for chunk in stream {
            let chunk = chunk.map_err(|e| match e {
                fastcdc::v2020::Error::IoError(io) => Error::io("standard input", io),
                other => Error::invalid(format!("chunking standard input: {other}")),
            })?;
            total += chunk.length as u64;
            sink(chunk.data)?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: &[u8]) -> Vec<u8> {
        let mut data = vec![0u8; len];
        let mut hasher = blake3::Hasher::new();
        hasher.update(seed);
        hasher.finalize_xof().fill(&mut data);
        data
    }

    /// Golden vector: cut points of a fixed input under a fixed seed must never change,
    /// or every existing repository would stop deduplicating against new backups.
    #[test]
    fn chunker_golden_vector() {
        let data = pseudo_random(8 << 20, b"arca chunker golden vector");
        let chunker = Chunker::new(
            ChunkerParams {
                min_size: 16 << 10,
                avg_size: 64 << 10,
                max_size: 256 << 10,
            },
            0x005e_ed0f_a7ca,
        );
        let lengths = chunker.chunk_lengths(&data);
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
        let digest = blake3::hash(format!("{lengths:?}").as_bytes());
        assert_eq!(
            (lengths.len(), digest.to_hex().to_string()),
            (
                103,
                "62a83058899a8faea8d9a3056c50b5bbdfeb942dcfd79d8546954a4ccc3ff6ab".to_string()
            )
        );
    }

    #[test]
    fn the_seed_moves_the_cut_points() {
        let data = pseudo_random(4 << 20, b"seeds");
        let params = ChunkerParams {
            min_size: 16 << 10,
            avg_size: 64 << 10,
            max_size: 256 << 10,
        };
        assert_ne!(
            Chunker::new(params, 1).chunk_lengths(&data),
            Chunker::new(params, 2).chunk_lengths(&data)
        );
    }

    #[test]
    fn stream_and_slice_agree() {
        let data = pseudo_random(3 << 20, b"stream");
        let chunker = Chunker::new(
            ChunkerParams {
                min_size: 16 << 10,
                avg_size: 64 << 10,
                max_size: 256 << 10,
            },
            7,
        );
        let mut streamed = Vec::new();
        chunker
            .chunk_stream(&data[..], |c| {
                streamed.push(c.len());
                Ok(())
            })
            .unwrap();
        assert_eq!(streamed, chunker.chunk_lengths(&data));
    }

    #[test]
    fn default_params_are_valid() {
        ChunkerParams::DEFAULT.check().unwrap();
        assert!(
            ChunkerParams {
                min_size: 10,
                avg_size: 64,
                max_size: 1
            }
            .check()
            .is_err()
        );
        assert!(
            ChunkerParams {
                min_size: 4097,
                avg_size: 16384,
                max_size: 65536
            }
            .check()
            .is_err()
        );
        assert!(
            ChunkerParams {
                min_size: 4096,
                avg_size: 16383,
                max_size: 65536
            }
            .check()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn chunks_concatenate_to_the_input(len in 0usize..300_000, seed in any::<u64>()) {
            let data = pseudo_random(len, &seed.to_le_bytes());
            let chunker = Chunker::new(ChunkerParams { min_size: 4096, avg_size: 16384, max_size: 65536 }, seed);
            let lengths = chunker.chunk_lengths(&data);
            prop_assert_eq!(lengths.iter().sum::<usize>(), len);
            prop_assert!(lengths.iter().all(|&l| l > 0 && l <= 65536));
        }
    }
}
