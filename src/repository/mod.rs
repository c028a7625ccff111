//! The repository: the one place where keys, formats, compression and storage meet.
//!
//! Operations (backup, restore, verify, …) work through this type and never touch the
//! storage trait directly.

mod id_filter;
mod keys;
pub mod local_index;
mod lock;
mod saver;
mod snapshots;

pub use keys::{KeyEntry, UnreadableKey};
pub use local_index::{BlobLocation, LocalIndex};
pub use lock::{FoundLock, Lock, LockKind, STALE_AFTER};
pub use saver::{BlobSaver, SaveStats};
pub use snapshots::SnapshotFilter;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::prelude::*;

use crate::chunker::{Chunker, ChunkerParams};
use crate::crypto::{self, KdfParams, Keys, ObjectKind};
use crate::error::{Error, Result};
use crate::format::config::{
    DEFAULT_COMPRESSION_LEVEL, DEFAULT_PACK_SIZE, PACK_SIZE_RANGE, RepoConfig,
};
use crate::format::index::IndexSegment;
use crate::format::pack::{self, BlobKind, PackEntry};
use crate::format::tree::Tree;
use crate::format::wire::Reader;
use crate::format::{self as fmt, FileKind, HeaderError};
use crate::guard::lock;
use crate::id::{BlobId, IndexId, KeyId, PackId};
use crate::storage::{FileType, Storage};

/// Index segments decoded at once when the local index is filled: at most this many, and
/// no more stored bytes than [`INDEX_LOAD_BYTES`] (unless one segment alone is larger), so
/// memory stays bounded however large the index and its segments.
const INDEX_LOAD_BATCH: usize = 8;
const INDEX_LOAD_BYTES: u64 = 8 << 20;

/// New index segments are added to a local index that already holds at least this many
/// times their size; more than that, and it is rebuilt in one bulk load.
const BULK_LOAD_RATIO: u64 = 8;

/// Splits segments (with their stored sizes) into batches of [`INDEX_LOAD_BATCH`] segments
/// and [`INDEX_LOAD_BYTES`] at most, in order.
fn load_batches(segments: &[(IndexId, u64)]) -> Vec<&[(IndexId, u64)]> {
    let mut batches = Vec::new();
    let (mut start, mut bytes) = (0, 0u64);
    for (i, (_, size)) in segments.iter().enumerate() {
        if i > start && (i - start == INDEX_LOAD_BATCH || bytes + size > INDEX_LOAD_BYTES) {
            batches.push(&segments[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < segments.len() {
        batches.push(&segments[start..]);
    }
    batches
}

/// Settings for a new repository.
#[derive(Clone, Debug)]
pub struct InitOptions {
    pub kdf: KdfParams,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub compression_level: i32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            kdf: KdfParams::DEFAULT,
            chunker: ChunkerParams::DEFAULT,
            pack_size: DEFAULT_PACK_SIZE,
            compression_level: DEFAULT_COMPRESSION_LEVEL,
        }
    }
}

pub struct Repository {
    storage: Arc<dyn Storage>,
    keys: Keys,
    key_id: KeyId,
    config: RepoConfig,
    cache_dir: PathBuf,
    index: OnceLock<Arc<LocalIndex>>,
    index_problems: Mutex<Vec<(IndexId, String)>>,
    index_synced: std::sync::atomic::AtomicBool,
    lock_wait: Mutex<std::time::Duration>,
    sync_lock: Mutex<()>,
    index_opening: Mutex<()>,
}

/// The default local cache folder: `$XDG_CACHE_HOME/arca`, else `~/.cache/arca`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("arca");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("arca"),
        None => std::env::temp_dir().join("arca-cache"),
    }
}

impl Repository {
    /// Creates a new repository protected by `password`.
    pub fn init(
        storage: Arc<dyn Storage>,
        password: &[u8],
        options: &InitOptions,
        cache_dir: &Path,
    ) -> Result<Repository> {
        if !storage.list(FileType::Config)?.is_empty() {
            return Err(Error::RepositoryExists(storage.location()));
        }
        options.kdf.check()?;
        options.chunker.check()?;
        if !PACK_SIZE_RANGE.contains(&options.pack_size) {
            return Err(Error::invalid(format!(
                "pack size {} is outside {PACK_SIZE_RANGE:?}",
                options.pack_size
            )));
        }
        let config = RepoConfig {
            repo_id: crypto::random_bytes(),
            chunker: options.chunker,
            pack_size: options.pack_size,
            compression_level: options.compression_level,
            created: crate::platform::now().secs,
        };
        // Validates the level the same way a reader will.
        RepoConfig::decode_body(&config.encode_body()).map_err(Error::invalid)?;
        let keys = Keys::generate();
        storage.create()?;
        let key_id = keys::write_key_file(storage.as_ref(), &keys, password, options.kdf)?;
        // The config is written last: its presence is what makes a repository.
        let sealed = seal_file(
            &keys,
            FileKind::Config,
            ObjectKind::Config,
            &config.encode_body(),
            None,
        );
        storage.write(FileType::Config, "config", &sealed)?;
        Ok(Repository::assemble(
            storage, keys, key_id, config, cache_dir,
        ))
    }

    fn assemble(
        storage: Arc<dyn Storage>,
        keys: Keys,
        key_id: KeyId,
        config: RepoConfig,
        cache_dir: &Path,
    ) -> Self {
        Repository {
            storage,
            keys,
            key_id,
            config,
            cache_dir: cache_dir.to_path_buf(),
            index: OnceLock::new(),
            index_problems: Mutex::new(Vec::new()),
            index_synced: Default::default(),
            lock_wait: Mutex::new(std::time::Duration::ZERO),
            sync_lock: Mutex::new(()),
            index_opening: Mutex::new(()),
        }
    }

    /// Opens a repository with `password`.
    pub fn open(
        storage: Arc<dyn Storage>,
        password: &[u8],
        cache_dir: &Path,
    ) -> Result<Repository> {
        let config_bytes = match storage.read(FileType::Config, "config") {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => return Err(Error::NoRepository(storage.location())),
            Err(e) => return Err(e),
        };
        // The version is checked before the password, so an old arca says so plainly.
        check_header(&config_bytes, FileKind::Config, "config")?;
        let (keys, key_id) = keys::unlock(storage.as_ref(), password)?;
        let body = open_file(
            &keys,
            &config_bytes,
            FileKind::Config,
            ObjectKind::Config,
            "config",
        )?;
        let config = RepoConfig::decode_body(&body).map_err(|e| Error::corrupt("config", e))?;
        Ok(Repository::assemble(
            storage, keys, key_id, config, cache_dir,
        ))
    }

    /// How long [`lock`](Self::lock) waits for a conflicting lock to be released.
    pub fn set_lock_wait(&self, wait: std::time::Duration) {
        *lock(&self.lock_wait) = wait;
    }

    pub fn lock_wait(&self) -> std::time::Duration {
        *lock(&self.lock_wait)
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    pub fn location(&self) -> String {
        self.storage.location()
    }

    pub fn chunker(&self) -> Chunker {
        Chunker::new(self.config.chunker, self.keys.chunker_seed())
    }

    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        self.keys.blob_id(plaintext)
    }

    /// The local index database, opened on first use (without refreshing it).
    pub fn local_index(&self) -> Result<&LocalIndex> {
        Ok(self.shared_index_ref()?.as_ref())
    }

    fn shared_index_ref(&self) -> Result<&Arc<LocalIndex>> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        // One thread opens it; others asking meanwhile wait rather than open their own.
        let _opening = lock(&self.index_opening);
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let path = self
            .cache_dir
            .join(hex::encode(self.config.repo_id))
            .join("index.sqlite");
        let index = Arc::new(LocalIndex::open(&path, &self.config.repo_id)?);
        Ok(self.index.get_or_init(|| index))
    }

    pub(crate) fn shared_index(&self) -> Result<Arc<LocalIndex>> {
        self.shared_index_ref().cloned()
    }

    /// The local index, brought up to date with the repository the first time it is asked
    /// for in this process.
    pub fn index(&self) -> Result<&LocalIndex> {
        let index = self.local_index()?;
        if !self.index_synced.load(std::sync::atomic::Ordering::Acquire) {
            let _guard = lock(&self.sync_lock);
            if !self.index_synced.load(std::sync::atomic::Ordering::Acquire) {
                self.refresh_index()?;
                self.index_synced
                    .store(true, std::sync::atomic::Ordering::Release);
            }
        }
        Ok(index)
    }

    /// Loads index segments the local index has not seen; starts over if one it loaded
    /// has vanished or been superseded.
    pub fn refresh_index(&self) -> Result<()> {
        let index = self.local_index()?;
        lock(&self.index_problems).clear();
        let listed: HashMap<IndexId, u64> = self
            .storage
            .list(FileType::Index)?
            .iter()
            .filter_map(|f| Some((f.name.parse().ok()?, f.size)))
            .collect();
        let mut loaded = index.loaded_segments()?;
        let mut superseded = index.superseded_segments()?;
        if !loaded.iter().all(|id| listed.contains_key(id)) {
            index.clear()?;
            loaded.clear();
            superseded.clear();
        }
        let mut new: Vec<(IndexId, u64)> = listed
            .iter()
            .filter(|(id, _)| !loaded.contains(id) && !superseded.contains(id))
            .map(|(id, size)| (*id, *size))
            .collect();
        new.sort();
        if new.is_empty() {
            return Ok(());
        }
        // Segments are decoded a batch at a time, so memory stays bounded however large the
        // index: first to learn which of them supersede others, then (only when there are
        // more than one batch) again to load them.
        let batches = load_batches(&new);
        let single_batch = batches.len() == 1;
        let mut damaged: HashSet<IndexId> = HashSet::new();
        let mut newly_superseded: HashSet<IndexId> = HashSet::new();
        let mut kept: Vec<(IndexId, IndexSegment)> = Vec::new();
        for batch in &batches {
            for (id, result) in self.load_index_segments(batch) {
                match result {
                    Ok(segment) => {
                        newly_superseded.extend(segment.supersedes.iter().copied());
                        if single_batch {
                            kept.push((id, segment));
                        }
                    }
                    // A damaged segment is left out (and not marked loaded): its blobs count
                    // as missing, so backups store them again and verify reports it.
                    Err(e) => {
                        damaged.insert(id);
                        lock(&self.index_problems).push((id, e.to_string()));
                    }
                }
            }
        }
        if !newly_superseded.is_disjoint(&loaded) {
            // A prune replaced segments we had loaded: start over from what is current.
            index.clear()?;
            return self.refresh_index();
        }
        let wanted = |id: &IndexId| !newly_superseded.contains(id) && !damaged.contains(id);
        // A bulk load rebuilds the whole local index; adding to it costs about twelve times
        // more a blob. So a few new segments (other hosts' backups since this one's last
        // run) are added, and a local index that is empty or far behind is loaded in bulk.
        let new_bytes: u64 = new.iter().map(|(_, size)| size).sum();
        let loaded_bytes: u64 = loaded.iter().filter_map(|id| listed.get(id)).sum();
        let kept = single_batch.then_some(kept);
        if !loaded.is_empty() && new_bytes.saturating_mul(BULK_LOAD_RATIO) < loaded_bytes {
            return self.each_wanted_segment(kept, new, &wanted, &mut |id, segment| {
                index.add_segment(id, segment)
            });
        }
        // Filling an empty index, or one far behind: in one sorted bulk load.
        let mut bulk = index.bulk_load()?;
        self.each_wanted_segment(kept, new, &wanted, &mut |id, segment| {
            bulk.add_segment(id, segment)
        })?;
        bulk.finish()
    }

    /// Hands `add` every wanted segment among `new`: those already decoded in `kept`
    /// when they all fit in one batch, or else read again a batch at a time (a segment
    /// that fails to load now is recorded as an index problem and left out).
    fn each_wanted_segment(
        &self,
        kept: Option<Vec<(IndexId, IndexSegment)>>,
        new: Vec<(IndexId, u64)>,
        wanted: &dyn Fn(&IndexId) -> bool,
        add: &mut dyn FnMut(IndexId, &IndexSegment) -> Result<()>,
    ) -> Result<()> {
        if let Some(kept) = kept {
            for (id, segment) in kept.iter().filter(|(id, _)| wanted(id)) {
                add(*id, segment)?;
            }
            return Ok(());
        }
        let todo: Vec<(IndexId, u64)> = new.into_iter().filter(|(id, _)| wanted(id)).collect();
        for batch in load_batches(&todo) {
            for (id, result) in self.load_index_segments(batch) {
                match result {
                    Ok(segment) => add(id, &segment)?,
                    Err(e) => lock(&self.index_problems).push((id, e.to_string())),
                }
            }
        }
        Ok(())
    }

    /// Reads the repository's current index straight from its segments, bypassing the
    /// local index: calls `f` with every segment that no other present segment supersedes,
    /// a batch at a time. Fails if any segment cannot be read, since what it lists would
    /// then be unknown.
    pub fn for_each_current_segment(&self, mut f: impl FnMut(IndexId, IndexSegment)) -> Result<()> {
        let mut listed: Vec<(IndexId, u64)> = self
            .storage
            .list(FileType::Index)?
            .iter()
            .filter_map(|f| Some((f.name.parse().ok()?, f.size)))
            .collect();
        listed.sort();
        let unreadable = |id: IndexId, e: Error| {
            Error::invalid(format!(
                "index segment index/{id} cannot be read ({e}); run `arca repair index`"
            ))
        };
        let batches = load_batches(&listed);
        let mut superseded: HashSet<IndexId> = HashSet::new();
        let mut kept: Vec<(IndexId, IndexSegment)> = Vec::new();
        for batch in &batches {
            for (id, result) in self.load_index_segments(batch) {
                let segment = result.map_err(|e| unreadable(id, e))?;
                superseded.extend(segment.supersedes.iter().copied());
                if batches.len() == 1 {
                    kept.push((id, segment));
                }
            }
        }
        if batches.len() == 1 {
            for (id, segment) in kept {
                if !superseded.contains(&id) {
                    f(id, segment);
                }
            }
            return Ok(());
        }
        let current: Vec<(IndexId, u64)> = listed
            .into_iter()
            .filter(|(id, _)| !superseded.contains(id))
            .collect();
        for batch in load_batches(&current) {
            for (id, result) in self.load_index_segments(batch) {
                f(id, result.map_err(|e| unreadable(id, e))?);
            }
        }
        Ok(())
    }

    /// Decodes a batch of index segments in parallel.
    fn load_index_segments(
        &self,
        batch: &[(IndexId, u64)],
    ) -> Vec<(IndexId, Result<IndexSegment>)> {
        batch
            .par_iter()
            .map(|(id, _)| (*id, self.load_index_segment(id)))
            .collect()
    }

    /// Forgets the local index and fills it again from the repository's index segments.
    pub fn rebuild_index(&self) -> Result<()> {
        self.local_index()?.clear()?;
        self.refresh_index()?;
        self.index_synced
            .store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Removes a pack file. Only prune calls this, once nothing current refers to the pack.
    pub fn remove_pack(&self, id: &PackId) -> Result<()> {
        self.storage.remove(FileType::Pack, &id.to_hex())
    }

    /// Removes an index segment. Only prune calls this, once a segment superseding it is durable.
    pub fn remove_index_segment(&self, id: &IndexId) -> Result<()> {
        self.storage.remove(FileType::Index, &id.to_hex())
    }

    /// Index segments that could not be read when the local index was last refreshed.
    pub fn index_problems(&self) -> Vec<(IndexId, String)> {
        lock(&self.index_problems).clone()
    }

    /// Drops from the local index every pack the repository no longer has (or has at a
    /// different size), so that a backup stores their chunks again. Returns those packs.
    pub fn forget_missing_packs(&self) -> Result<Vec<PackId>> {
        let index = self.index()?;
        let present: std::collections::HashMap<String, u64> = self
            .storage
            .list(FileType::Pack)?
            .into_iter()
            .map(|f| (f.name, f.size))
            .collect();
        let missing: Vec<PackId> = index
            .packs()?
            .into_iter()
            .filter(|(id, size)| present.get(&id.to_hex()) != Some(size))
            .map(|(id, _)| id)
            .collect();
        if !missing.is_empty() {
            index.drop_packs(&missing)?;
        }
        Ok(missing)
    }

    pub fn list_files(&self, ty: FileType) -> Result<Vec<crate::storage::FileInfo>> {
        self.storage.list(ty)
    }

    pub fn load_index_segment(&self, id: &IndexId) -> Result<IndexSegment> {
        let name = FileType::Index.relative_path(&id.to_hex());
        let bytes = self.read_bounded(FileType::Index, &id.to_hex())?;
        check_stored_name(&bytes, &id.0, &name)?;
        let body = open_file(
            &self.keys,
            &bytes,
            FileKind::Index,
            ObjectKind::IndexSegment,
            &name,
        )?;
        IndexSegment::decode_body(&body).map_err(|e| Error::corrupt(name, e))
    }

    /// Writes an index segment durably and returns its id.
    pub fn save_index_segment(&self, segment: &IndexSegment) -> Result<IndexId> {
        let bytes = seal_file(
            &self.keys,
            FileKind::Index,
            ObjectKind::IndexSegment,
            &segment.encode_body(),
            None,
        );
        let id = IndexId::of_stored_bytes(&bytes);
        self.storage.write(FileType::Index, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Reads a whole index or snapshot file, refusing one larger than any valid file.
    pub(crate) fn read_bounded(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        let size = self.storage.size(ty, name)?;
        let max = (fmt::MAX_PAYLOAD_LEN + fmt::FILE_HEADER_LEN + crypto::SEAL_OVERHEAD + 8) as u64;
        if size > max {
            return Err(Error::corrupt(
                ty.relative_path(name),
                format!("{size} bytes, more than any valid file"),
            ));
        }
        self.storage.read(ty, name)
    }

    /// Where a blob is stored, from the local index.
    pub fn locate(&self, id: &BlobId) -> Result<BlobLocation> {
        self.index()?
            .lookup(id)?
            .ok_or_else(|| Error::NotFound(format!("blob {id} (not in any index segment)")))
    }

    /// Reads, opens and decodes one blob.
    pub fn load_blob(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?;
        let sealed = self.read_pack_range(&loc.pack, loc.offset, loc.length as usize)?;
        self.open_blob(&loc, &sealed)
    }

    /// Opens a sealed blob read from its pack; fails unless it authenticates as `loc.id`.
    pub fn open_blob(&self, loc: &BlobLocation, sealed: &[u8]) -> Result<Vec<u8>> {
        let what = || format!("blob {} in pack {}", loc.id, loc.pack);
        let kind = match loc.kind {
            BlobKind::Data => ObjectKind::DataBlob,
            BlobKind::Tree => ObjectKind::TreeBlob,
        };
        let ad = crypto::associated_data(kind, Some(&loc.id.0));
        let payload = crypto::open(self.keys.encryption(), &ad, sealed).ok_or_else(|| {
            Error::corrupt(what(), "authentication failed (bit rot or tampering)")
        })?;
        let data = fmt::decode_payload(payload).map_err(|e| Error::corrupt(what(), e))?;
        if data.len() != loc.raw_length as usize {
            return Err(Error::corrupt(
                what(),
                format!("{} bytes, the index says {}", data.len(), loc.raw_length),
            ));
        }
        Ok(data)
    }

    pub fn load_tree(&self, id: &BlobId) -> Result<Tree> {
        self.load_tree_at(&self.locate(id)?)
    }

    /// Loads a tree from one particular stored copy.
    pub fn load_tree_at(&self, loc: &BlobLocation) -> Result<Tree> {
        let sealed = self.read_pack_range(&loc.pack, loc.offset, loc.length as usize)?;
        let bytes = self.open_blob(loc, &sealed)?;
        Tree::decode_body(&bytes).map_err(|e| Error::corrupt(format!("tree {}", loc.id), e))
    }

    pub fn read_pack_range(&self, pack: &PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.storage
            .read_range(FileType::Pack, &pack.to_hex(), offset, len)
    }

    /// As [`read_pack_range`](Self::read_pack_range), for a range read once (as a restore
    /// reads each range of a pack): read past the page cache where the storage can
    /// ([`Storage::read_range_cold`](crate::storage::Storage::read_range_cold)).
    pub fn read_pack_range_cold(&self, pack: &PackId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.storage
            .read_range_cold(FileType::Pack, &pack.to_hex(), offset, len)
    }

    /// Reads a whole pack. Verify and prune do, once per pack, so it is read as one that
    /// nothing will read again soon ([`Storage::read_cold`](crate::storage::Storage::read_cold)).
    pub fn read_pack(&self, pack: &PackId) -> Result<Vec<u8>> {
        self.storage.read_cold(FileType::Pack, &pack.to_hex())
    }

    /// Decodes the header of a whole pack held in memory.
    pub fn decode_pack_header(&self, pack: &PackId, bytes: &[u8]) -> Result<Vec<PackEntry>> {
        let name = FileType::Pack.relative_path(&pack.to_hex());
        if bytes.len() < pack::TRAILER_LEN {
            return Err(Error::corrupt(name, "too short to be a pack (truncated)"));
        }
        let header_len = pack::decode_trailer(
            &bytes[bytes.len() - pack::TRAILER_LEN..],
            bytes.len() as u64,
        )
        .map_err(|e| Error::corrupt(&name, e))? as usize;
        let data_len = bytes.len() - pack::TRAILER_LEN - header_len;
        self.open_pack_header(
            pack,
            &bytes[data_len..data_len + header_len],
            data_len as u64,
        )
    }

    /// Reads and decodes a pack's header alone, from the end of a pack of `size` bytes.
    pub fn read_pack_header(&self, pack: &PackId, size: u64) -> Result<Vec<PackEntry>> {
        let name = FileType::Pack.relative_path(&pack.to_hex());
        if size < pack::TRAILER_LEN as u64 {
            return Err(Error::corrupt(name, "too short to be a pack (truncated)"));
        }
        let trailer =
            self.read_pack_range(pack, size - pack::TRAILER_LEN as u64, pack::TRAILER_LEN)?;
        let header_len =
            pack::decode_trailer(&trailer, size).map_err(|e| Error::corrupt(&name, e))? as u64;
        let data_len = size - pack::TRAILER_LEN as u64 - header_len;
        let sealed = self.read_pack_range(pack, data_len, header_len as usize)?;
        self.open_pack_header(pack, &sealed, data_len)
    }

    fn open_pack_header(
        &self,
        pack: &PackId,
        sealed: &[u8],
        data_len: u64,
    ) -> Result<Vec<PackEntry>> {
        let name = FileType::Pack.relative_path(&pack.to_hex());
        let ad = crypto::associated_data(ObjectKind::PackHeader, None);
        let payload = crypto::open(self.keys.encryption(), &ad, sealed)
            .ok_or_else(|| Error::corrupt(&name, "header authentication failed"))?;
        let body = fmt::decode_payload(payload).map_err(|e| Error::corrupt(&name, e))?;
        let mut r = Reader::new(&body);
        let entries =
            pack::decode_entries(&mut r, data_len).map_err(|e| Error::corrupt(&name, e))?;
        r.finish().map_err(|e| Error::corrupt(&name, e))?;
        Ok(entries)
    }

    /// Starts writing blobs; see [`BlobSaver`].
    pub fn saver(&self) -> Result<BlobSaver<'_>> {
        BlobSaver::new(self)
    }
}

/// `file header ‖ sealed payload(body)`.
fn seal_file(
    keys: &Keys,
    kind: FileKind,
    object: ObjectKind,
    body: &[u8],
    level: Option<i32>,
) -> Vec<u8> {
    let mut buf = vec![0u8; crypto::seal::NONCE_LEN];
    fmt::encode_payload_into(body, level.or(Some(DEFAULT_COMPRESSION_LEVEL)), &mut buf);
    crypto::seal_into(
        keys.encryption(),
        &crypto::associated_data(object, None),
        &mut buf,
    );
    let mut out = fmt::file_header(kind).to_vec();
    out.extend_from_slice(&buf);
    out
}

fn check_header<'a>(bytes: &'a [u8], kind: FileKind, name: &str) -> Result<&'a [u8]> {
    fmt::check_file_header(bytes, kind).map_err(|e| match e {
        HeaderError::Version(found) => Error::UnsupportedVersion {
            what: name.to_string(),
            found,
            supported: fmt::FORMAT_VERSION,
        },
        HeaderError::Malformed(reason) => Error::corrupt(name, reason),
    })
}

fn open_file(
    keys: &Keys,
    bytes: &[u8],
    kind: FileKind,
    object: ObjectKind,
    name: &str,
) -> Result<Vec<u8>> {
    let sealed = check_header(bytes, kind, name)?;
    let payload = crypto::open(
        keys.encryption(),
        &crypto::associated_data(object, None),
        sealed,
    )
    .ok_or_else(|| Error::corrupt(name, "authentication failed (bit rot or tampering)"))?;
    fmt::decode_payload(payload).map_err(|e| Error::corrupt(name, e))
}

/// A content-addressed file must hash to its name.
fn check_stored_name(bytes: &[u8], id: &[u8; 32], name: &str) -> Result<()> {
    if blake3::hash(bytes).as_bytes() != id {
        return Err(Error::corrupt(
            name,
            "contents do not match the file name's hash",
        ));
    }
    Ok(())
}

/// Helpers for the library's unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::storage::MemoryStorage;

    pub(crate) fn test_options() -> InitOptions {
        InitOptions {
            kdf: KdfParams::MINIMAL,
            pack_size: 1 << 20,
            ..InitOptions::default()
        }
    }

    /// A fresh repository in memory, its storage, and its cache folder (keep it alive).
    pub(crate) fn test_repo() -> (Repository, Arc<MemoryStorage>, tempfile::TempDir) {
        let storage = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().expect("temporary folder");
        let repo =
            Repository::init(storage.clone(), b"pw", &test_options(), cache.path()).expect("init");
        (repo, storage, cache)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{test_options, test_repo};
    use super::*;
    use crate::format::index::IndexedPack;
    use crate::format::snapshot::Snapshot;
    use crate::storage::MemoryStorage;

    /// Regression: a million tiny files' chunks went into packs of 160,000 blobs each, whose
    /// headers took many MiB while they were written (a backup peaked near 256 MiB).
    #[test]
    fn a_pack_holds_at_most_max_pack_blobs_blobs() {
        let (repo, storage, _cache) = super::testing::test_repo();
        let saver = repo.saver().unwrap();
        let count = saver::MAX_PACK_BLOBS as u32 + 10;
        for i in 0..count {
            saver.save(BlobKind::Data, &i.to_le_bytes()).unwrap();
        }
        let stats = saver.finish().unwrap();
        assert_eq!(stats.blobs_added, count as u64);
        assert_eq!(stats.packs_written, 2, "{stats:?}");
        let mut largest = 0;
        for pack in storage.list(FileType::Pack).unwrap() {
            let id: PackId = pack.name.parse().unwrap();
            let bytes = repo.read_pack(&id).unwrap();
            largest = largest.max(repo.decode_pack_header(&id, &bytes).unwrap().len());
        }
        assert_eq!(largest, saver::MAX_PACK_BLOBS);
    }

    /// Data packs are read again only by a restore or a verify, days later: they leave the
    /// page cache once durable. Tree packs are read by the next backup: they stay.
    #[test]
    fn data_packs_are_written_cold_and_tree_packs_not() {
        let (repo, storage, _cache) = super::testing::test_repo();
        let saver = repo.saver().unwrap();
        let data = saver.save(BlobKind::Data, b"file contents").unwrap();
        let tree = saver.save(BlobKind::Tree, b"a tree").unwrap();
        saver.finish().unwrap();
        let index = repo.local_index().unwrap();
        let pack_of = |id: &BlobId| index.lookup(id).unwrap().unwrap().pack.to_hex();
        assert!(storage.written_cold(FileType::Pack, &pack_of(&data.id)));
        assert!(!storage.written_cold(FileType::Pack, &pack_of(&tree.id)));
        assert_eq!(storage.list(FileType::Pack).unwrap().len(), 2);
    }

    #[test]
    fn blobs_survive_a_reopen_and_deduplicate() {
        let (repo, storage, cache) = test_repo();
        let saver = repo.saver().unwrap();
        let a = saver.save(BlobKind::Data, &vec![1u8; 300_000]).unwrap();
        let again = saver.save(BlobKind::Data, &vec![1u8; 300_000]).unwrap();
        assert!(a.added && !again.added);
        let mut ids = vec![a.id];
        for i in 0..40u32 {
            let mut data = vec![0u8; 50_000];
            blake3::Hasher::new()
                .update(&i.to_le_bytes())
                .finalize_xof()
                .fill(&mut data);
            ids.push(saver.save(BlobKind::Data, &data).unwrap().id);
        }
        let stats = saver.finish().unwrap();
        assert_eq!(stats.blobs_added, 41);
        assert!(stats.packs_written >= 2, "{stats:?}");
        drop(repo);

        let other_cache = tempfile::tempdir().unwrap();
        let repo = Repository::open(storage.clone(), b"pw", other_cache.path()).unwrap();
        assert_eq!(repo.load_blob(&a.id).unwrap(), vec![1u8; 300_000]);
        for id in &ids {
            let data = repo.load_blob(id).unwrap();
            assert_eq!(repo.blob_id(&data), *id);
        }
        let saver = repo.saver().unwrap();
        assert!(
            !saver
                .save(BlobKind::Data, &vec![1u8; 300_000])
                .unwrap()
                .added
        );
        saver.finish().unwrap();

        assert!(matches!(
            Repository::open(storage.clone(), b"nope", cache.path()),
            Err(Error::WrongPassword)
        ));
        assert!(matches!(
            Repository::init(storage, b"pw", &test_options(), cache.path()),
            Err(Error::RepositoryExists(_))
        ));
    }

    #[test]
    fn index_segments_load_in_batches_bounded_by_count_and_bytes() {
        let seg = |n: u8, size: u64| (IndexId([n; 32]), size);
        let sizes = |batches: Vec<&[(IndexId, u64)]>| -> Vec<Vec<u64>> {
            batches
                .iter()
                .map(|b| b.iter().map(|(_, s)| *s).collect())
                .collect()
        };
        let small: Vec<_> = (0..10).map(|n| seg(n, 100)).collect();
        assert_eq!(
            sizes(load_batches(&small)),
            vec![
                vec![100; INDEX_LOAD_BATCH],
                vec![100; 10 - INDEX_LOAD_BATCH]
            ]
        );
        let half = INDEX_LOAD_BYTES / 2;
        let mixed = [
            seg(1, half),
            seg(2, half),
            seg(3, 1),
            seg(4, 3 * INDEX_LOAD_BYTES),
            seg(5, 1),
        ];
        assert_eq!(
            sizes(load_batches(&mixed)),
            vec![
                vec![half, half],
                vec![1],
                vec![3 * INDEX_LOAD_BYTES],
                vec![1]
            ]
        );
        assert!(load_batches(&[]).is_empty());
    }

    /// Another host's many small backups since this cache last looked: more segments than
    /// one batch, but few blobs beside those loaded, so they are added, not bulk-loaded.
    #[test]
    fn a_cache_behind_by_many_small_segments_catches_up() {
        let (repo, storage, cache) = test_repo();
        let saver = repo.saver().unwrap();
        let mut ids: Vec<BlobId> = (0..20_000u32)
            .map(|i| saver.save(BlobKind::Data, &i.to_le_bytes()).unwrap().id)
            .collect();
        saver.finish().unwrap();
        drop(repo);
        let other_cache = tempfile::tempdir().unwrap();
        let other = Repository::open(storage.clone(), b"pw", other_cache.path()).unwrap();
        for i in 0..2 * INDEX_LOAD_BATCH + 1 {
            let saver = other.saver().unwrap();
            let text = format!("another host's blob {i}");
            ids.push(saver.save(BlobKind::Data, text.as_bytes()).unwrap().id);
            saver.finish().unwrap();
        }
        let behind = Repository::open(storage.clone(), b"pw", cache.path()).unwrap();
        for id in &ids {
            assert!(behind.locate(id).is_ok(), "{id}");
        }
        let index = behind.local_index().unwrap();
        assert_eq!(
            index.loaded_segments().unwrap().len(),
            storage.list(FileType::Index).unwrap().len()
        );
    }

    #[test]
    fn many_index_segments_load_in_batches_and_superseded_ones_never() {
        let (repo, storage, _cache) = test_repo();
        let count = 3 * INDEX_LOAD_BATCH + 1;
        let mut ids = Vec::new();
        for i in 0..count {
            let saver = repo.saver().unwrap();
            ids.push(
                saver
                    .save(BlobKind::Data, format!("blob number {i}").as_bytes())
                    .unwrap()
                    .id,
            );
            saver.finish().unwrap();
        }
        assert_eq!(storage.list(FileType::Index).unwrap().len(), count);
        let fresh = tempfile::tempdir().unwrap();
        let reopened = Repository::open(storage.clone(), b"pw", fresh.path()).unwrap();
        for id in &ids {
            assert!(reopened.locate(id).is_ok());
        }

        // One segment that keeps only the first blob's pack and supersedes all the others.
        let first = reopened.locate(&ids[0]).unwrap();
        let old: Vec<IndexId> = storage
            .list(FileType::Index)
            .unwrap()
            .iter()
            .map(|f| f.name.parse().unwrap())
            .collect();
        let kept = IndexedPack {
            id: first.pack,
            size: storage.size(FileType::Pack, &first.pack.to_hex()).unwrap(),
            blobs: vec![PackEntry {
                kind: first.kind,
                id: first.id,
                offset: first.offset,
                length: first.length,
                raw_length: first.raw_length,
            }],
        };
        reopened
            .save_index_segment(&IndexSegment {
                packs: vec![kept],
                supersedes: old,
            })
            .unwrap();
        // The cache that had loaded the old segments, and a new one.
        let empty = tempfile::tempdir().unwrap();
        for cache_dir in [fresh.path(), empty.path()] {
            let again = Repository::open(storage.clone(), b"pw", cache_dir).unwrap();
            assert!(again.locate(&ids[0]).is_ok());
            assert!(
                again.locate(&ids[1]).is_err(),
                "a superseded segment was loaded"
            );
        }
    }

    #[test]
    fn a_vanished_pack_is_not_deduplicated_against() {
        let (repo, storage, cache) = test_repo();
        let saver = repo.saver().unwrap();
        let id = saver
            .save(BlobKind::Data, b"some data worth keeping")
            .unwrap()
            .id;
        saver.finish().unwrap();
        let pack = repo.locate(&id).unwrap().pack;
        storage.remove(FileType::Pack, &pack.to_hex()).unwrap();
        let saver = repo.saver().unwrap();
        assert!(
            saver
                .save(BlobKind::Data, b"some data worth keeping")
                .unwrap()
                .added
        );
        saver.finish().unwrap();
        let repo = Repository::open(storage, b"pw", cache.path()).unwrap();
        assert_eq!(repo.load_blob(&id).unwrap(), b"some data worth keeping");
    }

    #[test]
    fn snapshots_round_trip_and_resolve() {
        let storage = Arc::new(MemoryStorage::new());
        let cache = tempfile::tempdir().unwrap();
        let repo = Repository::init(storage, b"pw", &test_options(), cache.path()).unwrap();
        let mut snap = Snapshot {
            time: crate::platform::now(),
            host: "h".into(),
            user: "u".into(),
            paths: vec!["/srv".into()],
            tags: vec![],
            parent: None,
            tree: BlobId([1; 32]),
            program_version: "test".into(),
            summary: Default::default(),
        };
        let first = repo.save_snapshot(&snap).unwrap();
        snap.time.secs += 10;
        snap.host = "other".into();
        let second = repo.save_snapshot(&snap).unwrap();
        let all = SnapshotFilter::default();
        assert_eq!(repo.find_snapshot("latest", &all).unwrap().0, second);
        let h = SnapshotFilter {
            hosts: vec!["h".into()],
            ..Default::default()
        };
        assert_eq!(repo.find_snapshot("latest", &h).unwrap().0, first);
        assert_eq!(
            repo.find_snapshot(&first.to_hex()[..10], &all).unwrap().0,
            first
        );
        assert!(repo.find_snapshot("xyz", &all).is_err());
    }
}
