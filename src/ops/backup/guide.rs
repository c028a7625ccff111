//! Cutting a changed file where its parent version was cut, confirmed by hashing.
//!
//! FastCDC decides where a chunk ends from the bytes between the chunk's start and the
//! byte just after the cut, and from how much data follows (when that is less than the
//! largest chunk). So when the bytes at a chunk boundary of a changed file hash to the
//! parent version's next chunk, *and* the bytes after them hash to the chunk after that
//! (which covers the one byte of look-ahead), the chunker would have cut exactly there: the
//! chunk is taken without the gear scan. The hash is needed anyway, as the chunk's id.
//!
//! A mismatch (an edit) drops back to ordinary chunking from the last boundary known to
//! be right; once a chunk cut afresh equals one of the parent's, following resumes after
//! it. The cut points are always the ones plain chunking of the whole file gives; a
//! mistaken guess costs only the hashing spent on it.

use std::collections::HashMap;
use std::ops::Range;

use rayon::prelude::*;

use crate::chunker::Chunker;
use crate::id::BlobId;

/// Bytes that must follow a chunk's cut in the new file for the cut to be known to come
/// from the content rather than from the end of the data (the scan looks at bytes in pairs).
const MARGIN: usize = 64;

/// One chunk of the parent version of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OldChunk {
    pub id: BlobId,
    pub len: usize,
}

/// What is known of a cut's chunk before it is saved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChunkId {
    /// Not hashed yet.
    Unknown,
    /// Hashed already; the repository may or may not have it.
    Hashed(BlobId),
    /// One of the parent version's chunks, which the index was asked for when the guide
    /// was made: the repository has it, and saving it needs neither hash nor lookup.
    Stored(BlobId),
}

/// A piece of a buffer: its length, and what is known of its id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cut {
    pub len: usize,
    pub id: ChunkId,
}

/// Cuts with plain content-defined chunking only.
pub(crate) fn plain_cuts(chunker: &Chunker, data: &[u8]) -> Vec<Cut> {
    chunker
        .chunk_lengths(data)
        .into_iter()
        .map(|len| Cut {
            len,
            id: ChunkId::Unknown,
        })
        .collect()
}

/// Follows the parent version's chunk boundaries through a file read in buffers.
pub(crate) struct Guide {
    old: Vec<OldChunk>,
    /// Where each old chunk id first occurs.
    position: HashMap<BlobId, usize>,
    max_size: usize,
    /// The old chunk expected at the start of the next buffer, if following.
    next: Option<usize>,
    /// How many old chunks from `next` on have already been hashed and found equal.
    confirmed: usize,
    /// Bytes that went through the gear scan, for the tests.
    #[cfg(test)]
    scanned: u64,
}

impl Guide {
    pub fn new(old: Vec<OldChunk>, max_size: usize) -> Guide {
        let mut position = HashMap::with_capacity(old.len());
        for (i, chunk) in old.iter().enumerate() {
            position.entry(chunk.id).or_insert(i);
        }
        Guide {
            next: (!old.is_empty()).then_some(0),
            old,
            position,
            max_size,
            confirmed: 0,
            #[cfg(test)]
            scanned: 0,
        }
    }

    /// Bytes that went through the gear scan so far.
    #[cfg(test)]
    fn scanned(&self) -> u64 {
        self.scanned
    }

    /// Whether old chunk `k`, found again at a point of the new file with at least
    /// `new_rest` bytes from there on, would be cut at the same length. In the old file it
    /// had a successor, so its cut came from the content or from the size limit, not from
    /// the end of the data; in the new file enough must follow for the same to hold.
    fn reproducible(&self, k: usize, new_rest: usize) -> bool {
        let len = self.old[k].len;
        if len == self.max_size {
            new_rest >= len
        } else {
            len + MARGIN <= new_rest
        }
    }

    /// Cuts `data`, which starts at a chunk boundary. Unless `at_end`, the last cut is a
    /// tail the caller carries into the next buffer (it is cut again with more data behind
    /// it), and must be followed by a call to [`saved`](Self::saved).
    pub fn cut(
        &mut self,
        chunker: &Chunker,
        data: &[u8],
        at_end: bool,
        hash: &(dyn Fn(&[u8]) -> BlobId + Sync),
    ) -> Vec<Cut> {
        let mut cuts = Vec::new();
        let mut hashed: Vec<(Range<usize>, ChunkId)> = Vec::new();
        let mut offset = 0;
        if let Some(first) = self.next {
            // The old chunks from `first` on that fit in the buffer, hashed in parallel
            // (those confirmed by the previous buffer are known equal already).
            let mut ranges = Vec::new();
            let mut end = 0;
            for chunk in &self.old[first..] {
                if end + chunk.len > data.len() {
                    break;
                }
                ranges.push(end..end + chunk.len);
                end += chunk.len;
            }
            let known = self.confirmed.min(ranges.len());
            let mut ids: Vec<BlobId> = self.old[first..first + known]
                .iter()
                .map(|c| c.id)
                .collect();
            // Two chunks first, then the rest only if they matched: a file rewritten
            // throughout costs two hashes in vain, not a whole buffer of them.
            let probe = (known + 2).min(ranges.len());
            for batch in [known..probe, probe..ranges.len()] {
                let all_match = ids.iter().zip(&self.old[first..]).all(|(n, o)| *n == o.id);
                if !all_match {
                    break;
                }
                ids.par_extend(ranges[batch].par_iter().map(|r| hash(&data[r.clone()])));
            }
            let matched = ids
                .iter()
                .zip(&self.old[first..])
                .take_while(|(new, old)| *new == &old.id)
                .count();
            hashed.extend(
                ranges
                    .iter()
                    .cloned()
                    .zip(ids.iter().enumerate().map(|(i, &id)| {
                        if i < matched {
                            ChunkId::Stored(id)
                        } else {
                            ChunkId::Hashed(id)
                        }
                    })),
            );

            // A chunk is taken when the one after it matched too (that checks the byte the
            // cut looked at beyond the chunk) and its cut came from the content or its size.
            let mut taken = 0;
            while taken + 1 < matched {
                let k = first + taken;
                let range = &ranges[taken];
                if !self.reproducible(k, data.len() - range.start) {
                    break;
                }
                cuts.push(Cut {
                    len: range.len(),
                    id: ChunkId::Stored(ids[taken]),
                });
                offset = range.end;
                taken += 1;
            }
            let ran_out = taken + 1 >= matched
                && matched == ranges.len()
                && first + ranges.len() < self.old.len();
            if ran_out && !at_end {
                // Everything that fitted matched: wait for more data with the rest.
                self.next = Some(first + taken);
                self.confirmed = matched - taken;
                cuts.push(Cut {
                    len: data.len() - offset,
                    id: ChunkId::Unknown,
                });
                return cuts;
            }
            self.next = None;
            self.confirmed = 0;
        }
        let rest = &data[offset..];
        #[cfg(test)]
        {
            self.scanned += rest.len() as u64;
        }
        for len in chunker.chunk_lengths(rest) {
            let range = offset..offset + len;
            let id = hashed
                .iter()
                .find(|(r, _)| *r == range)
                .map_or(ChunkId::Unknown, |(_, id)| *id);
            cuts.push(Cut { len, id });
            offset += len;
        }
        cuts
    }

    /// Tells the guide the id of the last chunk saved from the buffer just cut (before the
    /// carried tail), so that following can resume after a chunk the parent had too.
    pub fn saved(&mut self, last: Option<&BlobId>) {
        if self.next.is_some() {
            return;
        }
        self.confirmed = 0;
        self.next = last
            .and_then(|id| self.position.get(id))
            .map(|&k| k + 1)
            .filter(|&k| k < self.old.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use proptest::prelude::*;

    const PARAMS: ChunkerParams = ChunkerParams {
        min_size: 1024,
        avg_size: 4096,
        max_size: 16384,
    };

    fn chunker() -> Chunker {
        Chunker::new(PARAMS, 0x0a7c)
    }

    fn id_of(data: &[u8]) -> BlobId {
        BlobId(*blake3::hash(data).as_bytes())
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        blake3::Hasher::new()
            .update(&seed.to_le_bytes())
            .finalize_xof()
            .fill(&mut data);
        data
    }

    fn old_chunks(data: &[u8]) -> Vec<OldChunk> {
        let mut offset = 0;
        chunker()
            .chunk_lengths(data)
            .into_iter()
            .map(|len| {
                let chunk = OldChunk {
                    id: id_of(&data[offset..offset + len]),
                    len,
                };
                offset += len;
                chunk
            })
            .collect()
    }

    /// Cuts `new` as the backup reads a file: in buffers of `segment` more bytes, carrying
    /// the last cut over. Returns the chunk lengths and the bytes that were gear-scanned.
    fn guided_lengths(old: &[u8], new: &[u8], segment: usize) -> (Vec<usize>, u64) {
        let old_ids: std::collections::HashSet<BlobId> =
            old_chunks(old).iter().map(|c| c.id).collect();
        let mut guide = Guide::new(old_chunks(old), PARAMS.max_size as usize);
        let mut lengths = Vec::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut read = 0;
        loop {
            let take = segment.min(new.len() - read);
            buf.extend_from_slice(&new[read..read + take]);
            read += take;
            let at_end = read == new.len();
            let cuts = guide.cut(&chunker(), &buf, at_end, &id_of);
            let keep = if at_end {
                0
            } else {
                cuts.last().map_or(0, |c| c.len)
            };
            let saved = &cuts[..cuts.len() - usize::from(!at_end && !cuts.is_empty())];
            let mut offset = 0;
            let mut last = None;
            for cut in saved {
                let id = id_of(&buf[offset..offset + cut.len]);
                match cut.id {
                    ChunkId::Unknown => {}
                    ChunkId::Hashed(known) => assert_eq!(known, id, "a hashed id is the chunk's"),
                    ChunkId::Stored(known) => {
                        assert_eq!(known, id, "a stored id is the chunk's");
                        assert!(old_ids.contains(&id), "a stored chunk is the parent's");
                    }
                }
                lengths.push(cut.len);
                offset += cut.len;
                last = Some(id);
            }
            if at_end {
                return (lengths, guide.scanned());
            }
            guide.saved(last.as_ref());
            buf.drain(..buf.len() - keep);
        }
    }

    #[test]
    fn an_unchanged_file_is_cut_without_scanning_all_but_its_tail() {
        let data = pseudo_random(400_000, 1);
        let (lengths, scanned) = guided_lengths(&data, &data, 64 << 10);
        assert_eq!(lengths, chunker().chunk_lengths(&data));
        // Only the last two chunks (the end of the file) go through the gear scan.
        assert!(scanned <= 2 * PARAMS.max_size as u64, "scanned {scanned}");
    }

    #[test]
    fn an_insert_in_the_middle_scans_little_more_than_the_chunks_around_it() {
        let old = pseudo_random(1_000_000, 2);
        let mut new = old.clone();
        new.splice(500_000..500_000, pseudo_random(100, 3));
        let (lengths, scanned) = guided_lengths(&old, &new, 64 << 10);
        assert_eq!(lengths, chunker().chunk_lengths(&new));
        assert!(scanned < 200_000, "scanned {scanned} of {}", new.len());
    }

    #[test]
    fn a_change_of_the_byte_after_a_cut_is_cut_as_plain_chunking_would() {
        let old = pseudo_random(300_000, 4);
        let first = chunker().chunk_lengths(&old)[0];
        let mut new = old.clone();
        new[first] ^= 0xff;
        let (lengths, _) = guided_lengths(&old, &new, 64 << 10);
        assert_eq!(lengths, chunker().chunk_lengths(&new));
    }

    #[test]
    fn a_file_rewritten_throughout_costs_two_hashes_in_vain() {
        let old = pseudo_random(400_000, 7);
        let new = pseudo_random(400_000, 8);
        let mut guide = Guide::new(old_chunks(&old), PARAMS.max_size as usize);
        let hashes = std::sync::atomic::AtomicUsize::new(0);
        let counting = |data: &[u8]| {
            hashes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            id_of(data)
        };
        let cuts = guide.cut(&chunker(), &new, true, &counting);
        let lengths: Vec<usize> = cuts.iter().map(|c| c.len).collect();
        assert_eq!(lengths, chunker().chunk_lengths(&new));
        assert_eq!(hashes.into_inner(), 2);
    }

    #[test]
    fn runs_of_one_byte_follow_size_cuts() {
        let old = vec![0u8; 200_000];
        let mut new = old.clone();
        new.extend_from_slice(&pseudo_random(50_000, 5));
        let (lengths, _) = guided_lengths(&old, &new, 40_000);
        assert_eq!(lengths, chunker().chunk_lengths(&new));
    }

    #[derive(Clone, Debug)]
    enum Edit {
        Insert(usize, Vec<u8>),
        Delete(usize, usize),
        Overwrite(usize, Vec<u8>),
        Truncate(usize),
        Append(Vec<u8>),
    }

    fn edit() -> impl Strategy<Value = Edit> {
        let bytes = proptest::collection::vec(any::<u8>(), 1..3000);
        prop_oneof![
            (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Insert(at, b)),
            (any::<usize>(), 1usize..5000).prop_map(|(at, n)| Edit::Delete(at, n)),
            (any::<usize>(), bytes.clone()).prop_map(|(at, b)| Edit::Overwrite(at, b)),
            any::<usize>().prop_map(Edit::Truncate),
            bytes.prop_map(Edit::Append),
        ]
    }

    fn apply(data: &mut Vec<u8>, edit: &Edit) {
        let len = data.len();
        match edit {
            Edit::Insert(at, bytes) => {
                let at = at % (len + 1);
                data.splice(at..at, bytes.iter().copied());
            }
            Edit::Delete(at, n) => {
                let at = at % (len + 1);
                data.drain(at..(at + n).min(len));
            }
            Edit::Overwrite(at, bytes) => {
                let at = at % (len + 1);
                let end = (at + bytes.len()).min(len);
                data[at..end].copy_from_slice(&bytes[..end - at]);
            }
            Edit::Truncate(at) => data.truncate(at % (len + 1)),
            Edit::Append(bytes) => data.extend_from_slice(bytes),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the edits and the buffer sizes, following the parent cuts exactly where
        /// plain chunking of the whole new file cuts.
        #[test]
        fn guided_cuts_equal_plain_cuts(
            seed in any::<u64>(),
            len in 0usize..300_000,
            zeros in any::<bool>(),
            edits in proptest::collection::vec(edit(), 0..4),
            segment in 20_000usize..120_000,
        ) {
            let old = if zeros { vec![0u8; len] } else { pseudo_random(len, seed) };
            let mut new = old.clone();
            for e in &edits {
                apply(&mut new, e);
            }
            let (lengths, _) = guided_lengths(&old, &new, segment);
            prop_assert_eq!(lengths, chunker().chunk_lengths(&new));
        }
    }
}
