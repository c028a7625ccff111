//! The local index: a disposable SQLite cache of the repository's index segments.
//!
//! It answers "is this blob stored, and where" without holding the index in memory. It
//! holds nothing the repository does not: when in doubt it is cleared and refilled.

use std::collections::HashSet;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, RwLock};

use rayon::prelude::*;
use rusqlite::{Connection, OptionalExtension, params};

use super::id_filter::{self, IdFilter};
use crate::error::{Error, Result};
use crate::format::index::IndexSegment;
use crate::format::pack::BlobKind;
use crate::guard::{lock, read, write};
use crate::id::{BlobId, IndexId, PackId};

/// Bumped whenever the schema changes; an old database is then rebuilt.
pub const SCHEMA_VERSION: i64 = 4;

/// A write-ahead log larger than this is folded into the database when the index is
/// closed. Every process that opens the database first reads the whole log to rebuild its
/// index of it, so one left by a large transaction (a bulk load, a big first backup) would
/// cost each later command seconds. It is also the size the log is cut back to once
/// folded in (`journal_size_limit`).
const WAL_FOLD_BYTES: u64 = 16 << 20;

/// A blob of a pack new to the index: it cannot be in either table yet.
const INSERT_RECENT: &str = "INSERT OR IGNORE INTO recent_blobs VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
/// A blob of a pack the index already lists: it may be in `blobs` already, and a pair of
/// blob and pack is in at most one of the two tables.
const INSERT_RECENT_UNLESS_KNOWN: &str = "INSERT OR IGNORE INTO recent_blobs \
     SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM blobs WHERE id = ?1 AND pack = ?2)";
const INSERT_STAGED: &str = "INSERT INTO temp.staged VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// Every copy of one blob, the most recently indexed pack first. Each table searched by
/// itself and the two merged: through the view, SQLite would copy the rows out and sort them.
const COPIES_QUERY: &str = "\
     SELECT b.kind, p.id, b.offset, b.length, b.raw_length, b.pack \
     FROM blobs b JOIN packs p ON p.num = b.pack WHERE b.id = ?1 \
     UNION ALL \
     SELECT b.kind, p.id, b.offset, b.length, b.raw_length, b.pack \
     FROM recent_blobs b JOIN packs p ON p.num = b.pack WHERE b.id = ?1 \
     ORDER BY 6 DESC";

/// Blobs added one segment at a time wait in the smaller table `recent_blobs` until it
/// holds more than this many (so a first backup of a million files merges nothing)...
const RECENT_MERGE_MIN: u64 = 2_000_000;

/// ...and more than this fraction of all the blobs indexed (estimated from the database's
/// size); then they are moved into `blobs` in one sorted pass. Blob ids are random, so a
/// segment's blobs land all over the large table: at 10 million blobs, each 100,000 inserted
/// there rewrote most of its pages. Inserted into the small table they rewrite only its pages,
/// and the large one is rewritten once for every eighth of its size that arrives.
const RECENT_MERGE_FRACTION: u64 = 8;

/// Where a blob is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobLocation {
    pub id: BlobId,
    pub kind: BlobKind,
    pub pack: PackId,
    pub offset: u64,
    pub length: u32,
    pub raw_length: u32,
}

/// Connections open at most at once. Each thread takes one for the length of a statement
/// or transaction, so lookups from several threads run side by side; each connection
/// has its own page cache (`cache_size`), which this bounds.
const MAX_CONNECTIONS: usize = 4;

/// Lookups per read transaction in [`LocalIndex::lookup_many`]: a restore's tens of
/// thousands of blobs are looked up on every core, a directory's few in one go.
const LOOKUPS_PER_TRANSACTION: usize = 4096;

/// How long a statement waits for another process's write to the database to end.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Whether to build the id filter is decided every this many lookups made without it.
const FILTER_CHECK_EVERY: u64 = 1024;

/// The filter is built once the lookups made without it come to this fraction of the
/// blobs indexed (estimated from the database's size): reading every id to build it then
/// costs less than the lookups it has already cost.
const FILTER_BUILD_FRACTION: u64 = 16;

/// Database bytes per indexed blob, for that estimate (the table and its index by pack).
const DATABASE_BYTES_PER_BLOB: u64 = 96;

/// Beyond this many blobs the filter is not built (for this many it takes 29 MiB).
const FILTER_MAX_IDS: u64 = 16_000_000;

/// Room in a new filter: for the blobs indexed, half as many again, and at least this many.
const FILTER_MIN_CAPACITY: usize = 1 << 20;

/// The filter is saved beside the database, under its name with this added.
const SAVED_FILTER_SUFFIX: &str = "-filter";

/// How many recent blobs may wait before they are moved into the main table, with about
/// `indexed` blobs in the index.
fn recent_merge_threshold(indexed: u64) -> u64 {
    RECENT_MERGE_MIN.max(indexed / RECENT_MERGE_FRACTION)
}

/// Where [`LocalIndex::insert_segment`] puts blobs.
#[derive(Clone, Copy)]
enum Destination {
    /// The temporary table of a bulk load.
    Staged,
    /// The table of recent blobs.
    Recent,
}

pub struct LocalIndex {
    path: PathBuf,
    pool: Mutex<Pool>,
    connection_returned: Condvar,
    /// In front of [`contains`](Self::contains), once enough lookups have been made.
    filter: RwLock<FilterState>,
    /// Where the filter is saved for the next process: beside the database.
    saved_filter_path: PathBuf,
    /// Lookups [`contains`](Self::contains) made in the database while there was no filter.
    unfiltered_lookups: AtomicU64,
    /// How many recent blobs may wait, given how many are indexed:
    /// [`recent_merge_threshold`], but for tests.
    recent_merge_threshold: fn(u64) -> u64,
}

/// The id filter in front of the database. Whenever built, it holds every blob id in the
/// database, except while [`LocalIndex::add_segment`] is adding a segment: those blobs are
/// added to the filter just after they are committed, and a caller adding a segment holds
/// its own claim to them until then.
enum FilterState {
    NotBuilt,
    Built(BuiltFilter),
    /// The index is too large for one.
    TooLarge,
}

struct BuiltFilter {
    ids: IdFilter,
    /// The database's id generation (see [`LocalIndex::id_generation`]) whose blobs the
    /// filter holds, as long as this process has seen every change since; `None` once
    /// another process has added blobs in between, which the filter may lack.
    generation: Option<i64>,
    /// Whether the saved filter is this one.
    saved: bool,
}

/// The state of the database a saved filter holds: the database itself (made afresh, it
/// gets a new instance), and its id generation.
fn filter_tag(instance: &[u8], generation: i64) -> [u8; id_filter::TAG_LEN] {
    let mut tag = [0; id_filter::TAG_LEN];
    let n = instance.len().min(16);
    tag[..n].copy_from_slice(&instance[..n]);
    tag[16..].copy_from_slice(&generation.to_le_bytes());
    tag
}

struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

/// A connection taken from the index's pool; it goes back when dropped.
pub(crate) struct PooledConnection<'a> {
    index: &'a LocalIndex,
    conn: Option<Connection>,
}

impl Deref for PooledConnection<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        self.conn
            .as_ref()
            .expect("a pooled connection is held until dropped")
    }
}

impl DerefMut for PooledConnection<'_> {
    fn deref_mut(&mut self) -> &mut Connection {
        self.conn
            .as_mut()
            .expect("a pooled connection is held until dropped")
    }
}

impl Drop for PooledConnection<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            lock(&self.index.pool).idle.push(conn);
            self.index.connection_returned.notify_one();
        }
    }
}

/// Many segments loaded in one transaction, as when a new cache is filled or an index is
/// rebuilt. Their blobs are staged in the order they come, then inserted in id order: blob
/// ids are random, so inserting each segment's blobs as they come would rewrite nearly
/// every page of the table once per segment, while sorted they are written once. Nothing
/// is visible (and nothing changes, if it is dropped unfinished) until
/// [`finish`](BulkLoad::finish).
pub struct BulkLoad<'a> {
    index: &'a LocalIndex,
    conn: PooledConnection<'a>,
    finished: bool,
}

impl BulkLoad<'_> {
    pub fn add_segment(&mut self, id: IndexId, segment: &IndexSegment) -> Result<()> {
        self.index
            .insert_segment(&self.conn, id, segment, Destination::Staged)
            .map(drop)
    }

    /// Moves the staged blobs into place and commits.
    pub fn finish(mut self) -> Result<()> {
        // The id filter would not know the new blobs: dropped as they become visible.
        let mut filter = write(&self.index.filter);
        *filter = FilterState::NotBuilt;
        self.index.unfiltered_lookups.store(0, Ordering::Relaxed);
        self.conn
            .execute_batch(
                "INSERT INTO temp.staged SELECT * FROM recent_blobs;
                 DELETE FROM recent_blobs;
                 INSERT OR REPLACE INTO meta VALUES ('recent_blobs', 0);
                 INSERT OR IGNORE INTO blobs SELECT * FROM temp.staged ORDER BY id, pack;
                 DROP TABLE temp.staged;
                 CREATE INDEX blobs_by_pack ON blobs (pack);
                 COMMIT;",
            )
            .map_err(|e| self.index.err(e))?;
        self.finished = true;
        Ok(())
    }
}

impl Drop for BulkLoad<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl Drop for LocalIndex {
    fn drop(&mut self) {
        self.save_filter();
        self.fold_log_if_larger_than(WAL_FOLD_BYTES);
    }
}

impl LocalIndex {
    /// Opens (or creates) the database for repository `repo_id`; a database that cannot be
    /// read, or was made for another repository or schema, is deleted and started afresh.
    pub fn open(path: &Path, repo_id: &[u8; 32]) -> Result<LocalIndex> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        match Self::try_open(path, repo_id) {
            Ok(index) => Ok(index),
            Err(_) => {
                for suffix in ["", "-wal", "-shm", SAVED_FILTER_SUFFIX] {
                    let p = PathBuf::from(format!("{}{suffix}", path.display()));
                    let _ = std::fs::remove_file(p);
                }
                Self::try_open(path, repo_id)
            }
        }
    }

    fn try_open(path: &Path, repo_id: &[u8; 32]) -> Result<LocalIndex> {
        let err = |e: rusqlite::Error| Error::LocalIndex {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let conn = Self::connect(path)?;
        // The main table of blobs and the table of recent ones have the same columns.
        let blob_table = |name: &str| {
            format!(
                "CREATE TABLE IF NOT EXISTS {name} (
                     id BLOB NOT NULL, pack INTEGER NOT NULL, kind INTEGER NOT NULL,
                     offset INTEGER NOT NULL, length INTEGER NOT NULL, raw_length INTEGER NOT NULL,
                     PRIMARY KEY (id, pack)
                 ) WITHOUT ROWID;
                 CREATE INDEX IF NOT EXISTS {name}_by_pack ON {name} (pack);"
            )
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
             CREATE TABLE IF NOT EXISTS segments (id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS superseded (id BLOB PRIMARY KEY) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS packs (
                 num INTEGER PRIMARY KEY, id BLOB NOT NULL UNIQUE, size INTEGER NOT NULL);
             {}
             {}
             CREATE VIEW IF NOT EXISTS all_blobs AS
                 SELECT * FROM blobs UNION ALL SELECT * FROM recent_blobs;
             CREATE TABLE IF NOT EXISTS snapshots (id BLOB PRIMARY KEY, body BLOB NOT NULL) WITHOUT ROWID;",
            blob_table("blobs"),
            blob_table("recent_blobs"),
        ))
        .map_err(err)?;
        let index = LocalIndex {
            path: path.to_path_buf(),
            pool: Mutex::new(Pool {
                idle: vec![conn],
                open: 1,
            }),
            connection_returned: Condvar::new(),
            filter: RwLock::new(FilterState::NotBuilt),
            saved_filter_path: PathBuf::from(format!("{}{SAVED_FILTER_SUFFIX}", path.display())),
            unfiltered_lookups: AtomicU64::new(0),
            recent_merge_threshold,
        };
        let stored_repo: Option<Vec<u8>> = index.query_meta("repo_id")?;
        let stored_schema: Option<Vec<u8>> = index.query_meta("schema")?;
        let schema = SCHEMA_VERSION.to_le_bytes().to_vec();
        if stored_repo.as_deref() != Some(repo_id.as_slice())
            || stored_schema.as_deref() != Some(schema.as_slice())
        {
            index.clear()?;
            let conn = index.conn()?;
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('repo_id', ?1)",
                params![repo_id.as_slice()],
            )
            .map_err(err)?;
            conn.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema', ?1)",
                params![schema],
            )
            .map_err(err)?;
        }
        let instance: [u8; 16] = crate::crypto::random_bytes();
        index
            .conn()?
            .execute_batch(&format!(
                "INSERT OR IGNORE INTO meta VALUES ('recent_blobs', 0);
                 INSERT OR IGNORE INTO meta VALUES ('id_generation', 0);
                 INSERT OR IGNORE INTO meta VALUES ('instance', x'{}');",
                hex::encode(instance)
            ))
            .map_err(err)?;
        Ok(index)
    }

    /// Folds the write-ahead log into the database and empties it, if it is larger than
    /// `limit` bytes. Best effort, and never waits: another connection reading or writing
    /// just leaves the log for later.
    fn fold_log_if_larger_than(&self, limit: u64) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        match std::fs::metadata(&wal) {
            Ok(meta) if meta.len() > limit => {}
            _ => return,
        }
        let Ok(conn) = self.conn() else { return };
        let _ = conn.busy_timeout(std::time::Duration::ZERO);
        let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
        let _ = conn.busy_timeout(BUSY_TIMEOUT);
    }

    /// A new connection to the database at `path`, set up as every connection must be.
    fn connect(path: &Path) -> Result<Connection> {
        let err = |e: rusqlite::Error| Error::LocalIndex {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(err)?;
        // Plan each query once: otherwise SQLite may plan a cached statement again for every
        // new bound value, which made each lookup cost as much as parsing its SQL.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(err)?;
        // Leave the write-ahead log for the next process rather than folding it into the
        // database on every exit: that cost two fsyncs per command. SQLite folds it in as
        // it grows, and `Drop` folds in one that a large transaction left big.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(err)?;
        conn.pragma_update(None, "journal_size_limit", WAL_FOLD_BYTES as i64)
            .map_err(err)?;
        // SQLite folds the log in when a commit leaves it longer than this many pages (4 KiB
        // each): 16 MiB, as on close, rather than its default of 4 MiB. Folding waits for
        // two fsyncs, on the thread that committed; behind a disk busy with other writes
        // that took 0.3 s in the middle of a backup.
        conn.pragma_update(None, "wal_autocheckpoint", (WAL_FOLD_BYTES / 4096) as i64)
            .map_err(err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(err)?;
        // 4 MiB of pages per connection, 16 MiB for the whole pool: the rest of the
        // database is read through the system's page cache.
        conn.execute_batch(
            "PRAGMA synchronous = NORMAL;
             PRAGMA cache_size = -4096;",
        )
        .map_err(err)?;
        Ok(conn)
    }

    /// A connection of the pool: an idle one, a new one while fewer than
    /// [`MAX_CONNECTIONS`] are open, or else the next one given back.
    fn conn(&self) -> Result<PooledConnection<'_>> {
        let mut pool = lock(&self.pool);
        loop {
            if let Some(conn) = pool.idle.pop() {
                return Ok(PooledConnection {
                    index: self,
                    conn: Some(conn),
                });
            }
            if pool.open < MAX_CONNECTIONS {
                pool.open += 1;
                drop(pool);
                return match Self::connect(&self.path) {
                    Ok(conn) => Ok(PooledConnection {
                        index: self,
                        conn: Some(conn),
                    }),
                    Err(e) => {
                        lock(&self.pool).open -= 1;
                        Err(e)
                    }
                };
            }
            pool = self
                .connection_returned
                .wait(pool)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    fn err(&self, e: rusqlite::Error) -> Error {
        Error::LocalIndex {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn query_meta(&self, key: &str) -> Result<Option<Vec<u8>>> {
        self.conn()?
            .query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))
    }

    /// Forgets everything but the repository id.
    pub fn clear(&self) -> Result<()> {
        self.drop_filter();
        self.conn()?
            .execute_batch(
                "DELETE FROM segments; DELETE FROM superseded; DELETE FROM packs; DELETE FROM blobs;
                 DELETE FROM recent_blobs; INSERT OR REPLACE INTO meta VALUES ('recent_blobs', 0);",
            )
            .map_err(|e| self.err(e))
    }

    /// The index segments whose contents are loaded.
    pub fn loaded_segments(&self) -> Result<HashSet<IndexId>> {
        self.segment_ids("SELECT id FROM segments")
    }

    /// Index segments that a loaded segment supersedes: never to be loaded.
    pub fn superseded_segments(&self) -> Result<HashSet<IndexId>> {
        self.segment_ids("SELECT id FROM superseded")
    }

    fn segment_ids(&self, query: &str) -> Result<HashSet<IndexId>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare_cached(query).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(|e| self.err(e))?;
        let mut out = HashSet::new();
        for row in rows {
            if let Some(id) = IndexId::from_slice(&row.map_err(|e| self.err(e))?) {
                out.insert(id);
            }
        }
        Ok(out)
    }

    /// Loads one index segment, in one transaction, into the table of recent blobs; moves
    /// those into the main table once there are enough of them.
    pub fn add_segment(&self, id: IndexId, segment: &IndexSegment) -> Result<()> {
        let recent = {
            let mut conn = self.conn()?;
            // A writer from the start: begun as a reader (its first statement reads), it
            // could not become one after another process's commit, and would fail at once
            // instead of waiting its turn.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(|e| self.err(e))?;
            let (added, generation) = self.insert_segment(&tx, id, segment, Destination::Recent)?;
            let recent: i64 = tx
                .query_row(
                    "INSERT INTO meta VALUES ('recent_blobs', ?1)
                     ON CONFLICT (key) DO UPDATE SET value = value + ?1 RETURNING value",
                    params![added as i64],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            tx.commit().map_err(|e| self.err(e))?;
            (recent.max(0) as u64, generation)
        };
        let (recent, generation) = recent;
        let mut state = write(&self.filter);
        if matches!(*state, FilterState::NotBuilt) {
            // Kept up to date, the saved filter spares the next process building one.
            if let Some(saved) = self.read_saved_filter(generation - 1) {
                *state = FilterState::Built(saved);
            }
        }
        if let FilterState::Built(filter) = &mut *state {
            for blob in segment.packs.iter().flat_map(|p| &p.blobs) {
                filter.ids.insert(&blob.id);
            }
            filter.generation = filter
                .generation
                .filter(|&seen| seen == generation - 1)
                .map(|_| generation);
            filter.saved = false;
            if filter.ids.is_overfull() {
                // Built again, larger, once enough lookups have been made without it.
                *state = FilterState::NotBuilt;
                self.unfiltered_lookups.store(0, Ordering::Relaxed);
            }
        }
        drop(state);
        if recent > (self.recent_merge_threshold)(self.estimated_blobs()?) {
            self.merge_recent()?;
        }
        Ok(())
    }

    /// Moves every recent blob into the main table, in id order, so that each page of it is
    /// written once. The blobs indexed stay the same, and so does the id filter.
    pub fn merge_recent(&self) -> Result<()> {
        self.conn()?
            .execute_batch(
                "BEGIN IMMEDIATE;
                 INSERT OR IGNORE INTO blobs SELECT * FROM recent_blobs ORDER BY id, pack;
                 DELETE FROM recent_blobs;
                 INSERT OR REPLACE INTO meta VALUES ('recent_blobs', 0);
                 COMMIT;",
            )
            .map_err(|e| self.err(e))
    }

    /// The blobs indexed, estimated from the database's size.
    fn estimated_blobs(&self) -> Result<u64> {
        let bytes: i64 = self
            .conn()?
            .query_row(
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok(bytes.max(0) as u64 / DATABASE_BYTES_PER_BLOB)
    }

    /// Starts loading many segments at once; see [`BulkLoad`].
    pub fn bulk_load(&self) -> Result<BulkLoad<'_>> {
        let conn = self.conn()?;
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TEMP TABLE staged (id BLOB, pack INTEGER, kind INTEGER, offset INTEGER,
                                       length INTEGER, raw_length INTEGER);
             DROP INDEX IF EXISTS blobs_by_pack;",
        )
        .map_err(|e| self.err(e))?;
        Ok(BulkLoad {
            index: self,
            conn,
            finished: false,
        })
    }

    /// Records a segment, its packs and its blobs (into `to`) in `conn`'s open transaction,
    /// and moves the id generation on. Returns how many blobs were added, and the new
    /// generation.
    fn insert_segment(
        &self,
        conn: &Connection,
        id: IndexId,
        segment: &IndexSegment,
        to: Destination,
    ) -> Result<(u64, i64)> {
        let err = |e| self.err(e);
        let mut find_pack = conn
            .prepare_cached("SELECT num FROM packs WHERE id = ?1")
            .map_err(err)?;
        let mut resize_pack = conn
            .prepare_cached("UPDATE packs SET size = ?2 WHERE num = ?1")
            .map_err(err)?;
        let mut insert_pack = conn
            .prepare_cached("INSERT INTO packs (id, size) VALUES (?1, ?2) RETURNING num")
            .map_err(err)?;
        let (new_pack_blob, known_pack_blob) = match to {
            Destination::Staged => (INSERT_STAGED, INSERT_STAGED),
            Destination::Recent => (INSERT_RECENT, INSERT_RECENT_UNLESS_KNOWN),
        };
        let mut insert_new = conn.prepare_cached(new_pack_blob).map_err(err)?;
        let mut insert_known = conn.prepare_cached(known_pack_blob).map_err(err)?;
        let mut blobs = Vec::with_capacity(segment.packs.iter().map(|p| p.blobs.len()).sum());
        for pack in &segment.packs {
            let id = pack.id.as_bytes().as_slice();
            let size = pack.size as i64;
            let known: Option<i64> = find_pack
                .query_row(params![id], |r| r.get(0))
                .optional()
                .map_err(err)?;
            let (num, known) = match known {
                Some(num) => {
                    resize_pack.execute(params![num, size]).map_err(err)?;
                    (num, true)
                }
                None => (
                    insert_pack
                        .query_row(params![id, size], |r| r.get(0))
                        .map_err(err)?,
                    false,
                ),
            };
            blobs.extend(pack.blobs.iter().map(|b| (b, num, known)));
        }
        // In id order: blob ids are random, so inserted as they come each would land on a
        // page of its own, and a table larger than the page cache would have its pages
        // written out and dirtied again many times in one transaction.
        blobs.sort_unstable_by_key(|(blob, pack, _)| (blob.id, *pack));
        let mut added = 0;
        for (b, num, known) in blobs {
            let insert = if known {
                &mut insert_known
            } else {
                &mut insert_new
            };
            added += insert
                .execute(params![
                    b.id.as_bytes().as_slice(),
                    num,
                    b.kind as u8,
                    b.offset as i64,
                    b.length,
                    b.raw_length
                ])
                .map_err(err)? as u64;
        }
        conn.execute(
            "INSERT OR IGNORE INTO segments VALUES (?1)",
            params![id.as_bytes().as_slice()],
        )
        .map_err(|e| self.err(e))?;
        for old in &segment.supersedes {
            conn.execute(
                "INSERT OR IGNORE INTO superseded VALUES (?1)",
                params![old.as_bytes().as_slice()],
            )
            .map_err(|e| self.err(e))?;
        }
        let generation = conn
            .query_row(
                "UPDATE meta SET value = value + 1 WHERE key = 'id_generation' RETURNING value",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        Ok((added, generation))
    }

    /// Whether the index holds blob `id`.
    pub fn contains(&self, id: &BlobId) -> Result<bool> {
        let unfiltered = match &*read(&self.filter) {
            FilterState::Built(filter) if !filter.ids.may_contain(id) => return Ok(false),
            FilterState::Built(_) => false,
            FilterState::NotBuilt => true,
            FilterState::TooLarge => false,
        };
        let found = {
            let conn = self.conn()?;
            let mut stmt = conn
                .prepare_cached("SELECT 1 FROM all_blobs WHERE id = ?1")
                .map_err(|e| self.err(e))?;
            stmt.exists(params![id.as_bytes().as_slice()])
                .map_err(|e| self.err(e))?
        };
        if unfiltered {
            let lookups = self.unfiltered_lookups.fetch_add(1, Ordering::Relaxed) + 1;
            if lookups % FILTER_CHECK_EVERY == 0 {
                self.consider_filter(lookups)?;
            }
        }
        Ok(found)
    }

    /// Builds the id filter if `lookups` made without it have come to
    /// [`FILTER_BUILD_FRACTION`] of the blobs indexed.
    fn consider_filter(&self, lookups: u64) -> Result<()> {
        let blobs = self.estimated_blobs()?;
        if blobs > FILTER_MAX_IDS {
            *write(&self.filter) = FilterState::TooLarge;
        } else if !self.adopt_saved_filter()? && lookups >= blobs / FILTER_BUILD_FRACTION {
            self.build_id_filter()?;
        }
        Ok(())
    }

    /// Reads every blob id in the database into a new id filter, unless one is built or
    /// the index is too large for one. [`contains`](Self::contains) does this by itself once
    /// enough lookups have been made; a caller about to ask about a great many blobs may do
    /// it at once. Lookups wait meanwhile, and a segment committed meanwhile is added to the
    /// filter once it is built.
    pub fn build_id_filter(&self) -> Result<()> {
        let mut state = write(&self.filter);
        if !matches!(*state, FilterState::NotBuilt) {
            return Ok(());
        }
        let conn = self.conn()?;
        conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
        let built = (|| {
            let count: i64 = conn
                .query_row(
                    "SELECT (SELECT count(*) FROM blobs) + (SELECT count(*) FROM recent_blobs)",
                    [],
                    |r| r.get(0),
                )
                .map_err(|e| self.err(e))?;
            let count = count.max(0) as u64;
            if count > FILTER_MAX_IDS {
                return Ok(FilterState::TooLarge);
            }
            let generation = self.id_generation(&conn)?;
            let capacity = (count as usize + count as usize / 2).max(FILTER_MIN_CAPACITY);
            let mut filter = IdFilter::with_capacity(capacity);
            let mut stmt = conn
                .prepare_cached("SELECT id FROM all_blobs")
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let id = row.get_ref(0).map_err(|e| self.err(e))?;
                // A row that is not a 32-byte id matches no lookup: the filter need not hold it.
                if let Some(id) = id.as_blob().ok().and_then(BlobId::from_slice) {
                    filter.insert(&id);
                }
            }
            Ok(FilterState::Built(BuiltFilter {
                ids: filter,
                generation: Some(generation),
                saved: false,
            }))
        })();
        let end = conn.execute_batch("COMMIT");
        *state = built?;
        end.map_err(|e| self.err(e))
    }

    /// Drops the filter before blobs enter the database other than through
    /// [`add_segment`](Self::add_segment); it is built again when worth it.
    fn drop_filter(&self) {
        *write(&self.filter) = FilterState::NotBuilt;
        self.unfiltered_lookups.store(0, Ordering::Relaxed);
    }

    /// The id generation: moved on by every transaction that adds blobs, so that a saved
    /// filter can tell whether it still holds every blob in the database. Removing blobs
    /// leaves it be: a filter that holds more ids than the database still answers rightly.
    fn id_generation(&self, conn: &Connection) -> Result<i64> {
        conn.query_row(
            "SELECT value FROM meta WHERE key = 'id_generation'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| self.err(e))
    }

    /// The tag of the database's present state, for a filter holding generation `generation`.
    fn tag_at(&self, generation: i64) -> Result<[u8; id_filter::TAG_LEN]> {
        let instance = self.query_meta("instance")?.unwrap_or_default();
        Ok(filter_tag(&instance, generation))
    }

    /// Takes up the saved filter, if there is no filter yet and the saved one holds the
    /// database as it is. Returns whether there is a filter now.
    fn adopt_saved_filter(&self) -> Result<bool> {
        let mut state = write(&self.filter);
        if matches!(*state, FilterState::NotBuilt) {
            let conn = self.conn()?;
            let generation = self.id_generation(&conn)?;
            drop(conn);
            if let Some(saved) = self.read_saved_filter(generation) {
                *state = FilterState::Built(saved);
            }
        }
        Ok(matches!(*state, FilterState::Built(_)))
    }

    /// The saved filter, if it holds generation `generation` of this database; `None` if
    /// it holds another, or is missing or damaged. Only its header is read unless it fits.
    fn read_saved_filter(&self, generation: i64) -> Option<BuiltFilter> {
        use std::io::Read;
        let tag = self.tag_at(generation).ok()?;
        let mut file = std::fs::File::open(&self.saved_filter_path).ok()?;
        let mut header = [0; id_filter::SAVED_HEADER_LEN];
        file.read_exact(&mut header).ok()?;
        if IdFilter::saved_tag(&header) != Some(tag) {
            return None;
        }
        // The header read goes in front of the rest, which is read once, whole.
        let mut whole = header.chain(std::io::BufReader::new(file));
        let (ids, _) = IdFilter::read_saved(&mut whole)?;
        Some(BuiltFilter {
            ids,
            generation: Some(generation),
            saved: true,
        })
    }

    /// Saves the filter for the next process, if it holds every blob of the database as it
    /// is and differs from the one saved. Best effort: a filter that cannot be saved is
    /// built again when worth it. Written under a temporary name and renamed, so a reader
    /// finds the old one or the new; one damaged by a crash fails its hash and is not used.
    fn save_filter(&self) {
        let state = read(&self.filter);
        let FilterState::Built(BuiltFilter {
            ids,
            generation: Some(generation),
            saved: false,
        }) = &*state
        else {
            return;
        };
        let current = self.conn().and_then(|conn| self.id_generation(&conn));
        let Ok(tag) = self.tag_at(*generation) else {
            return;
        };
        if current.ok() != Some(*generation) {
            return;
        }
        let mut temporary = self.saved_filter_path.clone().into_os_string();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let written = std::fs::File::create(&temporary).and_then(|file| {
            let mut out = std::io::BufWriter::new(file);
            ids.write_saved(&tag, &mut out)?;
            out.into_inner().map_err(|e| e.into_error()).map(drop)
        });
        if written.is_err() || std::fs::rename(&temporary, &self.saved_filter_path).is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
    }

    /// Where a blob is stored; of several copies, the one in the most recently indexed pack.
    pub fn lookup(&self, id: &BlobId) -> Result<Option<BlobLocation>> {
        Ok(self.lookup_all(id)?.into_iter().next())
    }

    /// [`lookup`](Self::lookup) for many blobs, in one read transaction: SQLite otherwise
    /// takes and drops its file locks around every single statement.
    /// A long list is split into parts of [`LOOKUPS_PER_TRANSACTION`] looked up side by
    /// side, each through its own connection.
    pub fn lookup_many(&self, ids: &[BlobId]) -> Result<Vec<Option<BlobLocation>>> {
        if ids.len() > LOOKUPS_PER_TRANSACTION {
            let parts = ids
                .par_chunks(LOOKUPS_PER_TRANSACTION)
                .map(|part| self.lookup_many(part))
                .collect::<Result<Vec<_>>>()?;
            return Ok(parts.into_iter().flatten().collect());
        }
        let conn = self.conn()?;
        conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
        let result = ids
            .iter()
            .map(|id| Ok(self.copies(&conn, id)?.into_iter().next()))
            .collect::<Result<Vec<_>>>();
        let end = conn.execute_batch("COMMIT");
        let out = result?;
        end.map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// [`lookup_all`](Self::lookup_all) for many blobs, in one read transaction.
    pub fn lookup_all_many(&self, ids: &[BlobId]) -> Result<Vec<Vec<BlobLocation>>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let conn = self.conn()?;
        conn.execute_batch("BEGIN").map_err(|e| self.err(e))?;
        let result = ids
            .iter()
            .map(|id| self.copies(&conn, id))
            .collect::<Result<Vec<_>>>();
        let end = conn.execute_batch("COMMIT");
        let out = result?;
        end.map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// Every stored copy of a blob, the most recently indexed first. A blob has several
    /// copies when it was stored again after its pack went missing, or by concurrent backups.
    pub fn lookup_all(&self, id: &BlobId) -> Result<Vec<BlobLocation>> {
        self.copies(&*self.conn()?, id)
    }

    fn copies(&self, conn: &Connection, id: &BlobId) -> Result<Vec<BlobLocation>> {
        let mut stmt = conn.prepare_cached(COPIES_QUERY).map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id.as_bytes().as_slice()], |r| {
                Ok((
                    r.get::<_, u8>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, u32>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, pack, offset, length, raw_length) = row.map_err(|e| self.err(e))?;
            let bad = || self.err(rusqlite::Error::InvalidQuery);
            out.push(BlobLocation {
                id: *id,
                kind: BlobKind::from_u8(kind).ok_or_else(bad)?,
                pack: PackId::from_slice(&pack).ok_or_else(bad)?,
                offset: offset as u64,
                length,
                raw_length,
            });
        }
        Ok(out)
    }

    /// Every pack the index knows, with its recorded size.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT id, size FROM packs")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, size) = row.map_err(|e| self.err(e))?;
            if let Some(id) = PackId::from_slice(&id) {
                out.push((id, size as u64));
            }
        }
        Ok(out)
    }

    /// Forgets packs (and their blobs), so that their chunks are stored again rather
    /// than deduplicated against data that is gone.
    pub fn drop_packs(&self, packs: &[PackId]) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        self.delete_packs(&tx, packs)?;
        tx.commit().map_err(|e| self.err(e))
    }

    fn delete_packs(&self, conn: &Connection, packs: &[PackId]) -> Result<()> {
        let err = |e| self.err(e);
        // Each statement prepared once for all the packs: a prune may drop thousands.
        let mut statements = [
            "DELETE FROM blobs WHERE pack = (SELECT num FROM packs WHERE id = ?1)",
            "DELETE FROM recent_blobs WHERE pack = (SELECT num FROM packs WHERE id = ?1)",
            "DELETE FROM packs WHERE id = ?1",
        ]
        .into_iter()
        .map(|sql| conn.prepare_cached(sql).map_err(err))
        .collect::<Result<Vec<_>>>()?;
        for pack in packs {
            for statement in &mut statements {
                statement
                    .execute(params![pack.as_bytes().as_slice()])
                    .map_err(err)?;
            }
        }
        Ok(())
    }

    /// Records, in one transaction, what a prune did: segment `new` (which lists only
    /// packs whose blobs are already here) replaced the `old` segments, and the `removed`
    /// packs are gone. The same state as reloading every segment, without reloading.
    pub fn record_replacement(
        &self,
        new: IndexId,
        old: &[IndexId],
        removed: &[PackId],
    ) -> Result<()> {
        let mut conn = self.conn()?;
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for id in old {
            let id = id.as_bytes().as_slice();
            tx.execute("DELETE FROM segments WHERE id = ?1", params![id])
                .map_err(|e| self.err(e))?;
            tx.execute("INSERT OR IGNORE INTO superseded VALUES (?1)", params![id])
                .map_err(|e| self.err(e))?;
        }
        tx.execute(
            "INSERT OR IGNORE INTO segments VALUES (?1)",
            params![new.as_bytes().as_slice()],
        )
        .map_err(|e| self.err(e))?;
        self.delete_packs(&tx, removed)?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Calls `f` with every blob the index knows.
    pub fn for_each_blob(&self, mut f: impl FnMut(BlobLocation)) -> Result<()> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare("SELECT b.id, b.kind, p.id, b.offset, b.length, b.raw_length FROM all_blobs b JOIN packs p ON p.num = b.pack")
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let pack: Vec<u8> = r.get(2).map_err(|e| self.err(e))?;
            let kind: u8 = r.get(1).map_err(|e| self.err(e))?;
            if let (Some(id), Some(pack), Some(kind)) = (
                BlobId::from_slice(&id),
                PackId::from_slice(&pack),
                BlobKind::from_u8(kind),
            ) {
                f(BlobLocation {
                    id,
                    kind,
                    pack,
                    offset: r.get::<_, i64>(3).map_err(|e| self.err(e))? as u64,
                    length: r.get(4).map_err(|e| self.err(e))?,
                    raw_length: r.get(5).map_err(|e| self.err(e))?,
                });
            }
        }
        Ok(())
    }

    /// Calls `f` with every blob the index places in `pack`.
    pub fn for_each_blob_in_pack(
        &self,
        pack: &PackId,
        mut f: impl FnMut(BlobLocation),
    ) -> Result<()> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT b.id, b.kind, b.offset, b.length, b.raw_length FROM all_blobs b JOIN packs p ON p.num = b.pack WHERE p.id = ?1",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![pack.as_bytes().as_slice()])
            .map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let id: Vec<u8> = r.get(0).map_err(|e| self.err(e))?;
            let kind: u8 = r.get(1).map_err(|e| self.err(e))?;
            if let (Some(id), Some(kind)) = (BlobId::from_slice(&id), BlobKind::from_u8(kind)) {
                f(BlobLocation {
                    id,
                    kind,
                    pack: *pack,
                    offset: r.get::<_, i64>(2).map_err(|e| self.err(e))? as u64,
                    length: r.get(3).map_err(|e| self.err(e))?,
                    raw_length: r.get(4).map_err(|e| self.err(e))?,
                });
            }
        }
        Ok(())
    }

    /// A snapshot's decoded body, cached by id (snapshot files never change).
    pub fn cached_snapshot(&self, id: &[u8; 32]) -> Result<Option<Vec<u8>>> {
        let conn = self.conn()?;
        let mut stmt = conn
            .prepare_cached("SELECT body FROM snapshots WHERE id = ?1")
            .map_err(|e| self.err(e))?;
        stmt.query_row(params![id.as_slice()], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))
    }

    pub fn cache_snapshot(&self, id: &[u8; 32], body: &[u8]) -> Result<()> {
        self.conn()?
            .execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?1, ?2)",
                params![id.as_slice(), body],
            )
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::index::IndexedPack;
    use crate::format::pack::PackEntry;

    fn segment(pack: u8, blobs: &[u8]) -> IndexSegment {
        IndexSegment {
            packs: vec![IndexedPack {
                id: PackId([pack; 32]),
                size: 10_000,
                blobs: blobs
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| PackEntry {
                        kind: BlobKind::Data,
                        id: BlobId([b; 32]),
                        offset: i as u64 * 100,
                        length: 100,
                        raw_length: 90,
                    })
                    .collect(),
            }],
            supersedes: vec![],
        }
    }

    /// A new index in a temporary folder (keep it alive) holding one segment with `blobs`.
    fn index_holding(blobs: &[u8]) -> (tempfile::TempDir, LocalIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(&dir.path().join("index.sqlite"), &[1; 32]).unwrap();
        index
            .add_segment(IndexId([9; 32]), &segment(1, blobs))
            .unwrap();
        (dir, index)
    }

    /// Adds blobs 10 and 11 in pack 1 (segment 9), then blob 12 in pack 2 (segment 8).
    fn add_two_segments(index: &LocalIndex) {
        index
            .add_segment(IndexId([9; 32]), &segment(1, &[10, 11]))
            .unwrap();
        index
            .add_segment(IndexId([8; 32]), &segment(2, &[12]))
            .unwrap();
    }

    /// How many rows the main table and the table of recent blobs hold.
    fn rows(index: &LocalIndex) -> (i64, i64) {
        let conn = index.conn().unwrap();
        let count = |table: &str| {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap()
        };
        (count("blobs"), count("recent_blobs"))
    }

    /// The blobs the index places in pack `[pack; 32]`, sorted.
    fn blobs_in_pack(index: &LocalIndex, pack: u8) -> Vec<BlobId> {
        let mut out = Vec::new();
        index
            .for_each_blob_in_pack(&PackId([pack; 32]), |b| out.push(b.id))
            .unwrap();
        out.sort();
        out
    }

    /// Every blob the index lists, as (blob, pack, offset), sorted.
    fn listed(index: &LocalIndex) -> Vec<(u8, u8, u64)> {
        let mut out = Vec::new();
        index
            .for_each_blob(|b| out.push((b.id.0[0], b.pack.0[0], b.offset)))
            .unwrap();
        out.sort();
        out
    }

    #[test]
    fn added_segments_wait_among_recent_blobs_then_move_into_the_main_table_together() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = LocalIndex::open(&dir.path().join("index.sqlite"), &[1; 32]).unwrap();
        index.recent_merge_threshold = |_| 4;
        add_two_segments(&index);
        assert_eq!(rows(&index), (0, 3));
        assert!(index.contains(&BlobId([12; 32])).unwrap());
        assert_eq!(
            index.lookup(&BlobId([11; 32])).unwrap().unwrap().pack,
            PackId([1; 32])
        );
        assert_eq!(blobs_in_pack(&index, 2), [BlobId([12; 32])]);

        // A segment naming a pack already indexed (as after a repair) adds only what is new.
        index
            .add_segment(IndexId([7; 32]), &segment(1, &[10, 11, 13]))
            .unwrap();
        assert_eq!(rows(&index), (0, 4));
        assert_eq!(index.lookup_all(&BlobId([10; 32])).unwrap().len(), 1);

        // The fifth is one too many: all five move, and the index lists the same.
        let before = listed(&index);
        index
            .add_segment(IndexId([6; 32]), &segment(3, &[14]))
            .unwrap();
        assert_eq!(rows(&index), (5, 0));
        let mut expected = before;
        expected.push((14, 3, 0));
        expected.sort();
        assert_eq!(listed(&index), expected);

        // Blobs already in the main table are not added again among the recent ones.
        index
            .add_segment(IndexId([5; 32]), &segment(1, &[10, 11, 13, 15]))
            .unwrap();
        assert_eq!(rows(&index), (5, 1));
        assert_eq!(index.lookup_all(&BlobId([13; 32])).unwrap().len(), 1);
        assert!(index.contains(&BlobId([15; 32])).unwrap());

        // A dropped pack leaves both tables; a bulk load takes the recent blobs in.
        index.drop_packs(&[PackId([1; 32])]).unwrap();
        assert_eq!(listed(&index), [(12, 2, 0), (14, 3, 0)]);
        index
            .add_segment(IndexId([4; 32]), &segment(4, &[16]))
            .unwrap();
        let mut bulk = index.bulk_load().unwrap();
        bulk.add_segment(IndexId([3; 32]), &segment(5, &[17]))
            .unwrap();
        bulk.finish().unwrap();
        assert_eq!(rows(&index), (4, 0));
        assert_eq!(
            listed(&index),
            [(12, 2, 0), (14, 3, 0), (16, 4, 0), (17, 5, 0)]
        );
    }

    #[test]
    fn recent_blobs_wait_for_two_million_or_an_eighth_of_the_index() {
        assert_eq!(recent_merge_threshold(0), 2_000_000);
        assert_eq!(recent_merge_threshold(10_000_000), 2_000_000);
        assert_eq!(recent_merge_threshold(40_000_000), 5_000_000);
    }

    #[test]
    fn segments_load_and_dropped_packs_are_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x/index.sqlite");
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        add_two_segments(&index);
        let loc = index.lookup(&BlobId([11; 32])).unwrap().unwrap();
        assert_eq!(
            (loc.pack, loc.offset, loc.length),
            (PackId([1; 32]), 100, 100)
        );
        assert!(index.contains(&BlobId([12; 32])).unwrap());
        assert_eq!(index.loaded_segments().unwrap().len(), 2);
        index.drop_packs(&[PackId([1; 32])]).unwrap();
        assert!(!index.contains(&BlobId([10; 32])).unwrap());
        assert!(index.contains(&BlobId([12; 32])).unwrap());
        let mut n = 0;
        index.for_each_blob(|_| n += 1).unwrap();
        assert_eq!(n, 1);
    }

    fn filter_is_built(index: &LocalIndex) -> bool {
        matches!(*read(&index.filter), FilterState::Built(_))
    }

    /// Enough lookups of blobs not in the index to have the filter built.
    fn look_up_absent_blobs(index: &LocalIndex) {
        for n in 0..FILTER_CHECK_EVERY {
            let id = BlobId(*blake3::hash(&n.to_le_bytes()).as_bytes());
            assert!(!index.contains(&id).unwrap());
        }
    }

    #[test]
    fn the_id_filter_keeps_every_blob_that_enters_the_index() {
        let (_dir, index) = index_holding(&[10, 11]);
        assert!(!filter_is_built(&index));
        look_up_absent_blobs(&index);
        assert!(filter_is_built(&index), "built after many lookups");
        let present = |b: u8| index.contains(&BlobId([b; 32])).unwrap();
        assert!(present(10) && present(11) && !present(12));

        // A segment added after the filter was built.
        index
            .add_segment(IndexId([8; 32]), &segment(2, &[12]))
            .unwrap();
        assert!(filter_is_built(&index));
        assert!(present(12));

        // Blobs loaded in bulk: the filter is dropped, and built again later with them.
        let mut bulk = index.bulk_load().unwrap();
        bulk.add_segment(IndexId([7; 32]), &segment(3, &[13]))
            .unwrap();
        bulk.finish().unwrap();
        assert!(!filter_is_built(&index));
        assert!(present(13));
        look_up_absent_blobs(&index);
        assert!(filter_is_built(&index));
        assert!(present(10) && present(12) && present(13) && !present(14));

        // Dropped packs: the filter still says "perhaps", the database "no".
        index.drop_packs(&[PackId([1; 32])]).unwrap();
        assert!(!present(10) && present(12));

        index.clear().unwrap();
        assert!(!filter_is_built(&index));
        assert!(!present(12));
    }

    /// Whether the filter in memory came from the saved one and is still the same.
    fn filter_is_the_saved_one(index: &LocalIndex) -> bool {
        matches!(
            *read(&index.filter),
            FilterState::Built(BuiltFilter { saved: true, .. })
        )
    }

    /// Whether the filter in memory may hold blob `b` (`false` if there is none).
    fn filter_may_hold(index: &LocalIndex, b: u8) -> bool {
        match &*read(&index.filter) {
            FilterState::Built(filter) => filter.ids.may_contain(&BlobId([b; 32])),
            _ => false,
        }
    }

    #[test]
    fn the_id_filter_is_saved_for_the_next_process_which_keeps_it_up_to_date() {
        let (dir, index) = index_holding(&[10, 11]);
        let path = dir.path().join("index.sqlite");
        look_up_absent_blobs(&index);
        assert!(filter_is_built(&index) && !filter_is_the_saved_one(&index));
        drop(index);
        assert!(dir.path().join("index.sqlite-filter").exists());

        // The next process takes it up at its first check instead of building one.
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        assert!(!filter_is_built(&index));
        index.consider_filter(FILTER_CHECK_EVERY).unwrap();
        assert!(filter_is_the_saved_one(&index));
        drop(index);

        // A process that adds blobs takes it up too, adds them, and saves it again.
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        index
            .add_segment(IndexId([8; 32]), &segment(2, &[12]))
            .unwrap();
        assert!(filter_may_hold(&index, 12) && !filter_is_the_saved_one(&index));
        drop(index);
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        assert!(index.adopt_saved_filter().unwrap());
        assert!(filter_may_hold(&index, 10) && filter_may_hold(&index, 12));
        assert!(!filter_may_hold(&index, 13));
    }

    #[test]
    fn a_saved_filter_that_may_lack_blobs_is_not_used() {
        let (dir, index) = index_holding(&[10, 11]);
        let path = dir.path().join("index.sqlite");
        look_up_absent_blobs(&index);
        // Another process adds a segment while this one holds its filter: this one's filter
        // lacks blob 12, and may not be saved as holding the database.
        let other = LocalIndex::open(&path, &[1; 32]).unwrap();
        other
            .add_segment(IndexId([8; 32]), &segment(2, &[12]))
            .unwrap();
        drop(other);
        index
            .add_segment(IndexId([7; 32]), &segment(3, &[13]))
            .unwrap();
        assert!(!filter_may_hold(&index, 12));
        drop(index);
        assert!(!dir.path().join("index.sqlite-filter").exists());

        // A saved filter that blobs were added after.
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        look_up_absent_blobs(&index);
        drop(index);
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        index
            .conn()
            .unwrap()
            .execute(
                "UPDATE meta SET value = value + 1 WHERE key = 'id_generation'",
                [],
            )
            .unwrap();
        assert!(!index.adopt_saved_filter().unwrap());
        drop(index);

        // A damaged one.
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        look_up_absent_blobs(&index);
        drop(index);
        let saved = dir.path().join("index.sqlite-filter");
        let mut bytes = std::fs::read(&saved).unwrap();
        let last = bytes.len() - 40;
        bytes[last] ^= 1;
        std::fs::write(&saved, &bytes).unwrap();
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        assert!(!index.adopt_saved_filter().unwrap());
        drop(index);

        // One saved for a database since made afresh.
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        look_up_absent_blobs(&index);
        let generation = index.id_generation(&index.conn().unwrap()).unwrap();
        drop(index);
        let kept = std::fs::read(&saved).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        std::fs::write(&saved, kept).unwrap();
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        index
            .conn()
            .unwrap()
            .execute(
                "UPDATE meta SET value = ?1 WHERE key = 'id_generation'",
                params![generation],
            )
            .unwrap();
        assert!(!index.adopt_saved_filter().unwrap());
    }

    #[test]
    fn an_overfull_id_filter_is_dropped_not_trusted() {
        let (_dir, index) = index_holding(&[10]);
        *write(&index.filter) = FilterState::Built(BuiltFilter {
            ids: {
                let mut filter = IdFilter::with_capacity(2);
                filter.insert(&BlobId([10; 32]));
                filter
            },
            generation: None,
            saved: false,
        });
        let many: Vec<u8> = (20..120).collect();
        index
            .add_segment(IndexId([8; 32]), &segment(2, &many))
            .unwrap();
        assert!(!filter_is_built(&index));
        assert!(
            many.iter()
                .all(|&b| index.contains(&BlobId([b; 32])).unwrap())
        );
        look_up_absent_blobs(&index);
        assert!(filter_is_built(&index));
        assert!(
            many.iter()
                .all(|&b| index.contains(&BlobId([b; 32])).unwrap())
        );
    }

    #[test]
    fn no_filter_for_an_index_that_is_large_for_the_lookups_made() {
        let (_dir, index) = index_holding(&[10]);
        index.consider_filter(1).unwrap();
        assert!(
            !filter_is_built(&index),
            "one lookup is not worth reading the index"
        );
        index.consider_filter(FILTER_CHECK_EVERY).unwrap();
        assert!(filter_is_built(&index));
    }

    #[test]
    fn threads_look_up_side_by_side_on_a_bounded_pool_of_connections() {
        let (_dir, index) = index_holding(&[10, 11, 12]);
        std::thread::scope(|scope| {
            for t in 0..(2 * MAX_CONNECTIONS) {
                let index = &index;
                scope.spawn(move || {
                    for i in 0..200u8 {
                        let id = BlobId([10 + (i + t as u8) % 4; 32]);
                        let found = index.lookup_many(&[id]).unwrap()[0];
                        assert_eq!(found.is_some(), id.0[0] != 13);
                    }
                });
            }
        });
        let pool = lock(&index.pool);
        assert!(pool.open <= MAX_CONNECTIONS, "{} open", pool.open);
        assert_eq!(
            pool.idle.len(),
            pool.open,
            "every connection was given back"
        );
    }

    /// Regression: folding in the log set the connection's busy timeout to zero, and the
    /// connection went back to the pool that way.
    #[test]
    fn a_pooled_connection_keeps_its_busy_timeout() {
        let (_dir, index) = index_holding(&[10]);
        index.fold_log_if_larger_than(0);
        let timeout: i64 = index
            .conn()
            .unwrap()
            .pragma_query_value(None, "busy_timeout", |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, BUSY_TIMEOUT.as_millis() as i64);
    }

    #[test]
    fn a_database_for_another_repository_or_a_damaged_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        index
            .add_segment(IndexId([9; 32]), &segment(1, &[10]))
            .unwrap();
        drop(index);
        let index = LocalIndex::open(&path, &[2; 32]).unwrap();
        assert!(index.loaded_segments().unwrap().is_empty());
        drop(index);
        std::fs::write(
            &path,
            b"this is not a database, just garbage bytes that sqlite must refuse",
        )
        .unwrap();
        let _ = std::fs::remove_file(dir.path().join("index.sqlite-wal"));
        let index = LocalIndex::open(&path, &[2; 32]).unwrap();
        assert!(index.loaded_segments().unwrap().is_empty());
    }

    /// Regression: a large transaction left a log that every later command read whole
    /// when it opened the index (3.6 s for the ten-million-chunk scale test's).
    #[test]
    fn a_large_log_is_folded_in_and_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.sqlite");
        let wal = dir.path().join("index.sqlite-wal");
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        index
            .add_segment(IndexId([9; 32]), &segment(1, &[10, 11, 12]))
            .unwrap();
        let logged = std::fs::metadata(&wal).unwrap().len();
        assert!(logged > 0);
        index.fold_log_if_larger_than(logged);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), logged, "not larger");
        index.fold_log_if_larger_than(logged - 1);
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        drop(index);
        let index = LocalIndex::open(&path, &[1; 32]).unwrap();
        let cut_back_to: i64 = index
            .conn()
            .unwrap()
            .pragma_query_value(None, "journal_size_limit", |r| r.get(0))
            .unwrap();
        assert_eq!(cut_back_to, WAL_FOLD_BYTES as i64);
        // Folded in by SQLite mid-command only at the same length, in 4 KiB pages.
        let conn = index.conn().unwrap();
        let page: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .unwrap();
        let pages: i64 = conn
            .pragma_query_value(None, "wal_autocheckpoint", |r| r.get(0))
            .unwrap();
        assert_eq!(pages * page, WAL_FOLD_BYTES as i64);
        drop(conn);
        assert!(index.contains(&BlobId([10; 32])).unwrap());
        assert!(index.loaded_segments().unwrap().contains(&IndexId([9; 32])));
    }

    /// Regression: the lookup query was planned afresh on every call, a fifth of the time
    /// of a backup in which nothing had changed.
    #[test]
    fn lookups_do_not_plan_their_query_again() {
        let (_dir, index) = index_holding(&[10, 11, 12]);
        for b in 0..100 {
            index.lookup(&BlobId([b; 32])).unwrap();
        }
        let conn = index.conn().unwrap();
        let stmt = conn.prepare_cached(COPIES_QUERY).unwrap();
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0);
    }

    #[test]
    fn a_bulk_load_shows_nothing_until_finished_and_nothing_if_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let index = LocalIndex::open(&dir.path().join("index.sqlite"), &[1; 32]).unwrap();
        index
            .add_segment(IndexId([7; 32]), &segment(1, &[10]))
            .unwrap();

        let mut bulk = index.bulk_load().unwrap();
        bulk.add_segment(IndexId([8; 32]), &segment(2, &[20, 21]))
            .unwrap();
        drop(bulk);
        assert!(index.lookup(&BlobId([20; 32])).unwrap().is_none());
        assert_eq!(index.loaded_segments().unwrap().len(), 1);

        let mut bulk = index.bulk_load().unwrap();
        bulk.add_segment(IndexId([8; 32]), &segment(2, &[21, 20]))
            .unwrap();
        bulk.add_segment(IndexId([9; 32]), &segment(3, &[10, 30]))
            .unwrap();
        bulk.finish().unwrap();
        assert_eq!(index.loaded_segments().unwrap().len(), 3);
        assert_eq!(index.lookup_all(&BlobId([10; 32])).unwrap().len(), 2);
        assert_eq!(
            index.lookup(&BlobId([20; 32])).unwrap().unwrap().pack,
            PackId([2; 32])
        );
        assert_eq!(
            blobs_in_pack(&index, 3),
            [BlobId([10; 32]), BlobId([30; 32])]
        );
    }
}
