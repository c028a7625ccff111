//! A Bloom filter of blob ids, kept in memory in front of the local index.
//!
//! It answers "certainly not stored" or "perhaps stored". A backup of new data asks the
//! index about every chunk and almost always hears "no"; the filter gives that answer
//! without a database lookup, which costs a read transaction and its file locks.

use crate::id::BlobId;

/// Bits of filter per id it is sized for: about 1% false positives when full.
const BITS_PER_ID: usize = 10;

/// Bits set for each id, all in one 512-bit block (one cache line).
const BITS_SET_PER_ID: u32 = 7;

const BLOCK_WORDS: usize = 8;

/// A blocked Bloom filter sized for a number of ids. Blob ids are keyed hashes, uniform
/// over their bits, so they are used as the filter's hash values directly.
pub(crate) struct IdFilter {
    blocks: Vec<[u64; BLOCK_WORDS]>,
    capacity: usize,
    len: usize,
}

impl IdFilter {
    /// An empty filter that keeps about 1% false positives up to `capacity` ids.
    pub fn with_capacity(capacity: usize) -> IdFilter {
        let capacity = capacity.max(1);
        let bits = capacity * BITS_PER_ID;
        let blocks = bits.div_ceil(BLOCK_WORDS * 64);
        IdFilter {
            blocks: vec![[0; BLOCK_WORDS]; blocks],
            capacity,
            len: 0,
        }
    }

    pub fn insert(&mut self, id: &BlobId) {
        let (block, mut bits) = self.position(id);
        let block = &mut self.blocks[block];
        for _ in 0..BITS_SET_PER_ID {
            let bit = (bits & 511) as usize;
            block[bit / 64] |= 1 << (bit % 64);
            bits >>= 9;
        }
        self.len += 1;
    }

    /// False when `id` was certainly never inserted.
    pub fn may_contain(&self, id: &BlobId) -> bool {
        let (block, mut bits) = self.position(id);
        let block = &self.blocks[block];
        for _ in 0..BITS_SET_PER_ID {
            let bit = (bits & 511) as usize;
            if block[bit / 64] & (1 << (bit % 64)) == 0 {
                return false;
            }
            bits >>= 9;
        }
        true
    }

    /// Whether more ids were inserted than it was sized for.
    pub fn is_overfull(&self) -> bool {
        self.len > self.capacity
    }

    /// The block (from the id's first 8 bytes) and the bit positions in it (9 bits each,
    /// from the next 8).
    fn position(&self, id: &BlobId) -> (usize, u64) {
        let bytes = id.as_bytes();
        let word = |at: usize| {
            u64::from_le_bytes(
                bytes[at..at + 8]
                    .try_into()
                    .expect("8 bytes of a 32-byte id"),
            )
        };
        let block = ((word(0) as u128 * self.blocks.len() as u128) >> 64) as usize;
        (block, word(8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_id(n: u64) -> BlobId {
        BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    #[test]
    fn holds_every_id_inserted() {
        let mut filter = IdFilter::with_capacity(10_000);
        for n in 0..10_000 {
            filter.insert(&random_id(n));
        }
        assert!((0..10_000).all(|n| filter.may_contain(&random_id(n))));
        assert!(!filter.is_overfull());
        filter.insert(&random_id(10_000));
        assert!(filter.is_overfull());
    }

    #[test]
    fn rejects_nearly_every_other_id_at_capacity() {
        let mut filter = IdFilter::with_capacity(100_000);
        for n in 0..100_000 {
            filter.insert(&random_id(n));
        }
        let false_positives = (100_000..200_000)
            .filter(|&n| filter.may_contain(&random_id(n)))
            .count();
        assert!(
            false_positives < 2_000,
            "{false_positives} false positives in 100,000"
        );
        assert_eq!(
            filter.blocks.len() * 64,
            125_056,
            "10 bits an id, in whole blocks"
        );
    }

    #[test]
    fn an_empty_filter_holds_nothing() {
        let filter = IdFilter::with_capacity(0);
        assert!(!filter.may_contain(&random_id(1)));
        assert!(!filter.may_contain(&BlobId([0; 32])));
    }

    #[test]
    fn ids_that_are_not_hashes_still_work() {
        let mut filter = IdFilter::with_capacity(16);
        for b in 0..16u8 {
            filter.insert(&BlobId([b; 32]));
        }
        assert!((0..16u8).all(|b| filter.may_contain(&BlobId([b; 32]))));
    }
}
