//! A Bloom filter of blob ids, kept in memory in front of the local index.
//!
//! It answers "certainly not stored" or "perhaps stored". A backup of new data asks the
//! index about every chunk and almost always hears "no"; the filter gives that answer
//! without a database lookup, which costs a read transaction and its file locks.

use std::io::{self, Read, Write};

use crate::id::BlobId;

/// Bits of filter per id it is sized for: about 1% false positives when full.
const BITS_PER_ID: usize = 10;

/// Bits set for each id, all in one 512-bit block (one cache line).
const BITS_SET_PER_ID: u32 = 7;

const BLOCK_WORDS: usize = 8;

/// The start of a saved filter.
const SAVED_MAGIC: &[u8; 16] = b"arca id filter 1";

/// Bytes of the tag a saved filter carries.
pub(crate) const TAG_LEN: usize = 24;

/// Bytes of a saved filter before its blocks: magic, tag, and three counts.
pub(crate) const SAVED_HEADER_LEN: usize = 16 + TAG_LEN + 24;

/// Blocks a saved filter is written and read by: 64 KiB at a time, so that saving or
/// reading one takes no second copy of it in memory.
const SAVED_IO_BLOCKS: usize = 1024;

/// The largest capacity a saved filter is read with (a little over what the local index
/// builds, 16 million ids and half as many again): a damaged header cannot ask for more.
const MAX_SAVED_CAPACITY: usize = 32 << 20;

/// Reads into `buf` until it is full or the input ends; returns the bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

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

    /// Writes the filter as saved between processes, with `tag` (which state of the index
    /// it holds) in its header and a BLAKE3 hash of everything at its end:
    /// `magic(16) tag(24) capacity(8) len(8) blocks(8) block(64)... hash(32)`, little-endian.
    pub fn write_saved(&self, tag: &[u8; TAG_LEN], out: &mut impl Write) -> io::Result<()> {
        let mut hasher = blake3::Hasher::new();
        let mut put = |bytes: &[u8]| {
            hasher.update(bytes);
            out.write_all(bytes)
        };
        put(SAVED_MAGIC)?;
        put(tag)?;
        for n in [self.capacity, self.len, self.blocks.len()] {
            put(&(n as u64).to_le_bytes())?;
        }
        let mut bytes = Vec::with_capacity(SAVED_IO_BLOCKS * 64);
        for blocks in self.blocks.chunks(SAVED_IO_BLOCKS) {
            bytes.clear();
            bytes.extend(blocks.iter().flatten().flat_map(|word| word.to_le_bytes()));
            put(&bytes)?;
        }
        out.write_all(hasher.finalize().as_bytes())
    }

    /// The tag in the header of a saved filter, if `header` (its first
    /// [`SAVED_HEADER_LEN`] bytes or more) starts like one.
    pub fn saved_tag(header: &[u8]) -> Option<[u8; TAG_LEN]> {
        let rest = header.strip_prefix(SAVED_MAGIC.as_slice())?;
        rest.get(..TAG_LEN)?.try_into().ok()
    }

    /// Reads a filter written by [`write_saved`](Self::write_saved), with its tag; `None`
    /// if it is damaged, cut short, longer, or not a filter's.
    pub fn read_saved(input: &mut impl Read) -> Option<(IdFilter, [u8; TAG_LEN])> {
        let mut hasher = blake3::Hasher::new();
        let mut header = [0; SAVED_HEADER_LEN];
        input.read_exact(&mut header).ok()?;
        hasher.update(&header);
        let tag = Self::saved_tag(&header)?;
        let number = |at: usize| -> Option<usize> {
            let field = header[at..at + 8].try_into().ok()?;
            usize::try_from(u64::from_le_bytes(field)).ok()
        };
        let counts_at = SAVED_MAGIC.len() + TAG_LEN;
        let capacity = number(counts_at)?;
        let len = number(counts_at + 8)?;
        let blocks = number(counts_at + 16)?;
        // The sizes a filter of that capacity has, before any memory is taken for it.
        if capacity == 0
            || capacity > MAX_SAVED_CAPACITY
            || blocks != (capacity * BITS_PER_ID).div_ceil(BLOCK_WORDS * 64)
        {
            return None;
        }
        let mut filter = IdFilter {
            len,
            ..IdFilter::with_capacity(capacity)
        };
        let mut bytes = vec![0; SAVED_IO_BLOCKS * 64];
        for blocks in filter.blocks.chunks_mut(SAVED_IO_BLOCKS) {
            let bytes = &mut bytes[..blocks.len() * 64];
            input.read_exact(bytes).ok()?;
            hasher.update(bytes);
            let words = blocks.iter_mut().flatten();
            for (word, bytes) in words.zip(bytes.chunks_exact(8)) {
                *word = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
            }
        }
        let mut hash = [0; 33];
        let hash_len = read_up_to(input, &mut hash).ok()?;
        (hash_len == 32 && hasher.finalize().as_bytes() == &hash[..32]).then_some((filter, tag))
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
    fn a_saved_filter_reads_back_whole_and_a_damaged_one_not_at_all() {
        let mut filter = IdFilter::with_capacity(5_000);
        for n in 0..3_000 {
            filter.insert(&random_id(n));
        }
        let tag = [7u8; TAG_LEN];
        let mut saved = Vec::new();
        filter.write_saved(&tag, &mut saved).unwrap();
        assert_eq!(
            saved.len(),
            SAVED_HEADER_LEN + filter.blocks.len() * 64 + 32
        );
        assert_eq!(IdFilter::saved_tag(&saved[..SAVED_HEADER_LEN]), Some(tag));
        let read = |bytes: &[u8]| IdFilter::read_saved(&mut &bytes[..]);
        let (back, back_tag) = read(&saved).unwrap();
        assert_eq!(back_tag, tag);
        assert_eq!((back.capacity, back.len), (5_000, 3_000));
        assert_eq!(back.blocks, filter.blocks);

        for at in [0, 20, 40, SAVED_HEADER_LEN + 100, saved.len() - 1] {
            let mut damaged = saved.clone();
            damaged[at] ^= 1;
            assert!(read(&damaged).is_none(), "byte {at} changed");
        }
        for len in [0, 31, SAVED_HEADER_LEN, saved.len() - 64, saved.len() - 1] {
            assert!(read(&saved[..len]).is_none(), "cut to {len}");
        }
        let mut longer = saved.clone();
        longer.push(0);
        assert!(read(&longer).is_none(), "a byte too many");
        assert_eq!(
            IdFilter::saved_tag(b"not a filter at all, not at all"),
            None
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
