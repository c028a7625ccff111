//! Writing blobs: deduplicate, compress, seal, gather into packs, write packs and index
//! segments in the order that keeps the repository consistent at every instant.
//!
//! Many threads call [`BlobSaver::save`] at once. Each blob is claimed once (so two
//! threads never store the same chunk), compressed and sealed outside any lock, and
//! appended to the open pack of its kind. A full pack goes to a writer thread, so hashing
//! and compression continue while it is written. Blobs enter the local index only after
//! an index segment naming their pack is durable.

use std::collections::HashSet;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::Repository;
use crate::crypto::{self, ObjectKind};
use crate::error::{Error, Result};
use crate::format::index::{IndexSegment, IndexedPack};
use crate::format::pack::{self, BlobKind, PackEntry};
use crate::format::wire::Writer;
use crate::format::{self as fmt};
use crate::guard::lock;
use crate::id::{BlobId, IndexId, PackId};
use crate::storage::FileType;

thread_local! {
    static SEAL_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Write an index segment once this many blobs wait in written packs, so that a long
/// backup's progress survives a crash and memory stays bounded.
const CHECKPOINT_BLOBS: usize = 100_000;

/// A pack is also closed once it holds this many blobs. Its header (49 bytes a blob) then
/// stays under 1 MiB, the room reserved beyond the pack size, however small the blobs: a
/// pack of a million tiny files' chunks would otherwise carry a header of many MiB, held
/// in memory several times over while the pack is written.
pub(crate) const MAX_PACK_BLOBS: usize = 16_384;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    pub blobs_added: u64,
    /// Plaintext bytes of the blobs added.
    pub raw_bytes_added: u64,
    /// Bytes written to packs for them (compressed and sealed).
    pub stored_bytes_added: u64,
    pub packs_written: u64,
    pub index_segments: Vec<IndexId>,
}

/// Blobs claimed by this session and not yet in the local index.
#[derive(Default)]
struct Pending {
    ids: HashSet<BlobId>,
    /// Bumped each time claims are released because their blobs reached the local index.
    releases: u64,
}

#[derive(Default)]
struct OpenPack {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Packs written whose index segment is not yet written.
    written: Mutex<Vec<IndexedPack>>,
    error: Mutex<Option<Error>>,
    stats: Mutex<SaveStats>,
}

pub struct BlobSaver<'r> {
    repo: &'r Repository,
    shared: Arc<Shared>,
    open: [Mutex<OpenPack>; 2],
    sender: Option<SyncSender<OpenPack>>,
    writer: Option<JoinHandle<()>>,
    /// Whether the local index had to forget packs the repository no longer has.
    packs_were_missing: bool,
}

/// What became of a blob handed to [`BlobSaver::save`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    pub id: BlobId,
    /// False when the repository (or this session) already had it.
    pub added: bool,
}

impl<'r> BlobSaver<'r> {
    pub(super) fn new(repo: &'r Repository) -> Result<Self> {
        // Refresh the index and forget packs that have vanished before deduplicating.
        let missing = repo.forget_missing_packs()?;
        let packs_were_missing = !missing.is_empty() || !repo.index_problems().is_empty();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            written: Mutex::new(Vec::new()),
            error: Mutex::new(None),
            stats: Mutex::new(SaveStats::default()),
        });
        // Full packs queue for the writer one deep: while one is written and fsynced, the
        // next full one waits without stopping the threads that fill the open packs (an
        // fsync can wait long behind other writes to the disk). Memory stays bounded on a
        // slow disk: one pack writing, one queued, the open ones filling.
        let (sender, receiver) = sync_channel::<OpenPack>(1);
        let writer = {
            let shared = Arc::clone(&shared);
            let storage = RepoHandles::new(repo)?;
            std::thread::Builder::new()
                .name("arca-pack-writer".into())
                .spawn(move || {
                    for pack in receiver {
                        if lock(&shared.error).is_some() {
                            continue;
                        }
                        if let Err(e) = storage.write_pack(pack, &shared) {
                            lock(&shared.error).get_or_insert(e);
                        }
                    }
                })
                .map_err(|e| Error::io("pack writer thread", e))?
        };
        Ok(BlobSaver {
            repo,
            shared,
            open: [
                Mutex::new(OpenPack::default()),
                Mutex::new(OpenPack::default()),
            ],
            sender: Some(sender),
            writer: Some(writer),
            packs_were_missing,
        })
    }

    fn check_error(&self) -> Result<()> {
        match lock(&self.shared.error).take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Claims `id` for this session unless it is already stored or claimed.
    fn claim(&self, id: &BlobId) -> Result<bool> {
        let releases = {
            let pending = lock(&self.shared.pending);
            if pending.ids.contains(id) {
                return Ok(false);
            }
            pending.releases
        };
        // The index is asked without holding the claims, so that threads look up side by
        // side. A blob indexed meanwhile had its claim released: then ask again.
        let index = self.repo.local_index()?;
        if index.contains(id)? {
            return Ok(false);
        }
        let mut pending = lock(&self.shared.pending);
        if pending.releases != releases && index.contains(id)? {
            return Ok(false);
        }
        Ok(pending.ids.insert(*id))
    }

    /// True when some packs (or index segments) the local index knew have vanished: then
    /// blob ids carried over from an earlier snapshot may name lost data, and callers
    /// must check them with [`has`](Self::has) before reusing them.
    pub fn packs_were_missing(&self) -> bool {
        self.packs_were_missing
    }

    /// Whether the repository (or this session) has the blob.
    pub fn has(&self, id: &BlobId) -> Result<bool> {
        let claimed = lock(&self.shared.pending).ids.contains(id);
        Ok(claimed || self.repo.local_index()?.contains(id)?)
    }

    /// Stores a blob unless the repository already has it. Safe to call from many threads.
    pub fn save(&self, kind: BlobKind, plaintext: &[u8]) -> Result<Saved> {
        let id = self.repo.blob_id(plaintext);
        self.save_with_id(kind, id, plaintext)
    }

    /// As [`save`](Self::save), for a caller that has already computed the id.
    pub fn save_with_id(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<Saved> {
        if !self.claim(&id)? {
            return Ok(Saved { id, added: false });
        }
        let level = Some(self.repo.config().compression_level);
        // A per-thread scratch buffer: a fresh allocation per blob costs page faults.
        let mut sealed = SEAL_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        sealed.clear();
        sealed.reserve(plaintext.len() + crypto::SEAL_OVERHEAD + 8);
        sealed.resize(crypto::seal::NONCE_LEN, 0);
        fmt::encode_payload_into(plaintext, level, &mut sealed);
        let object = match kind {
            BlobKind::Data => ObjectKind::DataBlob,
            BlobKind::Tree => ObjectKind::TreeBlob,
        };
        crypto::seal_into(
            self.repo.keys().encryption(),
            &crypto::associated_data(object, Some(&id.0)),
            &mut sealed,
        );

        let appended = self.append(kind, id, plaintext.len() as u32, &sealed);
        // Kept for the next blob unless unusually large (a maximum-size chunk).
        if sealed.capacity() <= 4 << 20 {
            SEAL_BUFFER.with(|b| *b.borrow_mut() = sealed);
        }
        appended?;
        Ok(Saved { id, added: true })
    }

    /// Copies an already sealed blob (read from another pack) into a new pack, as prune
    /// does when repacking: the sealing binds kind and id, not the pack, so the bytes move
    /// unchanged. Each blob is copied at most once per session.
    pub fn copy_sealed(
        &self,
        kind: BlobKind,
        id: BlobId,
        raw_length: u32,
        sealed: &[u8],
    ) -> Result<()> {
        if !lock(&self.shared.pending).ids.insert(id) {
            return Ok(());
        }
        self.append(kind, id, raw_length, sealed)
    }

    /// Appends a sealed blob to the open pack of its kind, handing the pack to the writer
    /// once it is full.
    fn append(&self, kind: BlobKind, id: BlobId, raw_length: u32, sealed: &[u8]) -> Result<()> {
        let full = {
            let mut open = lock(&self.open[kind as usize - 1]);
            let entry = PackEntry {
                kind,
                id,
                offset: open.buf.len() as u64,
                length: sealed.len() as u32,
                raw_length,
            };
            // Data packs fill up: reserve once. Tree packs are mostly small: let them grow.
            if open.buf.capacity() == 0 && kind == BlobKind::Data {
                open.buf
                    .reserve(self.repo.config().pack_size as usize + (1 << 20));
            }
            open.buf.extend_from_slice(sealed);
            open.entries.push(entry);
            if open.buf.len() >= self.repo.config().pack_size as usize
                || open.entries.len() >= MAX_PACK_BLOBS
            {
                Some(std::mem::take(&mut *open))
            } else {
                None
            }
        };
        {
            let mut stats = lock(&self.shared.stats);
            stats.blobs_added += 1;
            stats.raw_bytes_added += raw_length as u64;
            stats.stored_bytes_added += sealed.len() as u64;
        }
        if let Some(pack) = full {
            self.send(pack)?;
        }
        self.check_error()
    }

    fn send(&self, pack: OpenPack) -> Result<()> {
        let sender = self
            .sender
            .as_ref()
            .ok_or_else(|| Error::invalid("blob saver already finished"))?;
        sender.send(pack).map_err(|_| {
            lock(&self.shared.error)
                .take()
                .unwrap_or_else(|| Error::invalid("the pack writer stopped unexpectedly"))
        })
    }

    /// Writes the open packs and the index segment for everything written; after this
    /// returns, every blob saved is durable and findable, and a snapshot may refer to it.
    pub fn finish(mut self) -> Result<SaveStats> {
        for slot in &self.open {
            let pack = std::mem::take(&mut *lock(slot));
            if !pack.entries.is_empty() {
                self.send(pack)?;
            }
        }
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            writer
                .join()
                .map_err(|_| Error::invalid("the pack writer panicked"))?;
        }
        self.check_error()?;
        RepoHandles::new(self.repo)?.write_index(&self.shared, true)?;
        let stats = lock(&self.shared.stats).clone();
        Ok(stats)
    }
}

impl Drop for BlobSaver<'_> {
    fn drop(&mut self) {
        // On an error path: let the writer drain so no half-written temp file remains.
        self.sender = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// What the writer thread needs of the repository, owned so it can outlive a borrow.
struct RepoHandles {
    storage: Arc<dyn crate::storage::Storage>,
    keys: crate::crypto::Keys,
    index: Arc<super::LocalIndex>,
}

impl RepoHandles {
    fn new(repo: &Repository) -> Result<Self> {
        Ok(RepoHandles {
            storage: Arc::clone(&repo.storage),
            keys: repo.keys.clone(),
            index: repo.shared_index()?,
        })
    }

    fn write_pack(&self, mut pack: OpenPack, shared: &Shared) -> Result<()> {
        let mut w = Writer::new();
        pack::encode_entries(&pack.entries, &mut w);
        let mut header = vec![0u8; crypto::seal::NONCE_LEN];
        // The ids do not compress, but kinds, offsets and lengths do: a sixth off the header.
        fmt::encode_payload_into(&w.buf, Some(super::DEFAULT_COMPRESSION_LEVEL), &mut header);
        crypto::seal_into(
            self.keys.encryption(),
            &crypto::associated_data(ObjectKind::PackHeader, None),
            &mut header,
        );
        pack.buf.reserve_exact(header.len() + pack::TRAILER_LEN);
        pack.buf.extend_from_slice(&header);
        pack.buf
            .extend_from_slice(&pack::encode_trailer(header.len() as u32));
        let id = PackId::of_stored_bytes(&pack.buf);
        // Data packs are read again only by a restore or a verify; tree packs by the next
        // backup, which finds them still in the page cache.
        let name = id.to_hex();
        match pack.entries.first().map(|e| e.kind) {
            Some(BlobKind::Data) => self.storage.write_cold(FileType::Pack, &name, &pack.buf)?,
            _ => self.storage.write(FileType::Pack, &name, &pack.buf)?,
        }
        let count = {
            let mut written = lock(&shared.written);
            written.push(IndexedPack {
                id,
                size: pack.buf.len() as u64,
                blobs: pack.entries,
            });
            written.iter().map(|p| p.blobs.len()).sum::<usize>()
        };
        lock(&shared.stats).packs_written += 1;
        if count >= CHECKPOINT_BLOBS {
            self.write_index(shared, false)?;
        }
        Ok(())
    }

    /// Writes one index segment for the packs written so far, then (only then) adds
    /// their blobs to the local index and releases their claims.
    fn write_index(&self, shared: &Shared, final_segment: bool) -> Result<()> {
        let packs = std::mem::take(&mut *lock(&shared.written));
        if packs.is_empty() {
            return Ok(());
        }
        let segment = IndexSegment {
            packs,
            supersedes: Vec::new(),
        };
        let bytes = super::seal_file(
            &self.keys,
            fmt::FileKind::Index,
            ObjectKind::IndexSegment,
            &segment.encode_body(),
            None,
        );
        let id = IndexId::of_stored_bytes(&bytes);
        self.storage.write(FileType::Index, &id.to_hex(), &bytes)?;
        self.index.add_segment(id, &segment)?;
        if !final_segment {
            let mut pending = lock(&shared.pending);
            for p in &segment.packs {
                for b in &p.blobs {
                    pending.ids.remove(&b.id);
                }
            }
            pending.releases += 1;
        }
        lock(&shared.stats).index_segments.push(id);
        Ok(())
    }
}
