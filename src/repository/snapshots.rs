//! Snapshots: saving the commit point of a backup, listing and finding snapshots.

use rayon::prelude::*;

use super::{Repository, check_stored_name, open_file, seal_file};
use crate::crypto::ObjectKind;
use crate::error::{Error, Result};
use crate::format::FileKind;
use crate::format::snapshot::Snapshot;
use crate::id::SnapshotId;
use crate::storage::FileType;

/// A snapshot file that cannot be read: its path and why.
pub type UnreadableSnapshot = (String, Error);

/// The snapshots that could be read, oldest first, and those that could not.
pub type ReadableSnapshots = (Vec<(SnapshotId, Snapshot)>, Vec<UnreadableSnapshot>);

/// Which snapshots `latest` (or a listing) may pick from.
#[derive(Clone, Debug, Default)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &Snapshot) -> bool {
        (self.hosts.is_empty() || self.hosts.contains(&s.host))
            && (self.paths.is_empty() || self.paths.iter().all(|p| s.paths.contains(p)))
            && (self.tags.is_empty() || self.tags.iter().all(|t| s.tags.contains(t)))
    }
}

impl Repository {
    /// Writes a snapshot. Call only once every blob it references is durable and indexed.
    pub fn save_snapshot(&self, snapshot: &Snapshot) -> Result<SnapshotId> {
        let bytes = seal_file(
            &self.keys,
            FileKind::Snapshot,
            ObjectKind::Snapshot,
            &snapshot.encode_body(),
            None,
        );
        let id = SnapshotId::of_stored_bytes(&bytes);
        self.storage
            .write(FileType::Snapshot, &id.to_hex(), &bytes)?;
        Ok(id)
    }

    /// Removes a snapshot file. Its data stays until `prune` finds it unreferenced.
    pub fn remove_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.storage.remove(FileType::Snapshot, &id.to_hex())
    }

    /// Loads a snapshot, from the local cache when it has the decoded body.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let cache = self.local_index().ok();
        if let Some(body) = cache.and_then(|c| c.cached_snapshot(&id.0).ok().flatten())
            && let Ok(snapshot) = Snapshot::decode_body(&body)
        {
            return Ok(snapshot);
        }
        self.read_snapshot_file(id)
    }

    /// Loads a snapshot from its file, checking its hash, never trusting the cache (verify).
    pub fn read_snapshot_file(&self, id: &SnapshotId) -> Result<Snapshot> {
        let name = FileType::Snapshot.relative_path(&id.to_hex());
        let bytes = self
            .read_bounded(FileType::Snapshot, &id.to_hex())
            .map_err(|e| {
                if e.is_not_found() {
                    Error::NotFound(format!("snapshot {id}"))
                } else {
                    e
                }
            })?;
        check_stored_name(&bytes, &id.0, &name)?;
        let body = open_file(
            &self.keys,
            &bytes,
            FileKind::Snapshot,
            ObjectKind::Snapshot,
            &name,
        )?;
        let snapshot = Snapshot::decode_body(&body).map_err(|e| Error::corrupt(&name, e))?;
        if let Ok(cache) = self.local_index() {
            // The cache is an optimisation; failing to fill it changes nothing.
            let _ = cache.cache_snapshot(&id.0, &body);
        }
        Ok(snapshot)
    }

    /// Every readable snapshot, oldest first, and the snapshot files that cannot be read.
    /// For listings and for choosing a parent; prune uses the strict [`list_snapshots`].
    ///
    /// [`list_snapshots`]: Self::list_snapshots
    pub fn list_readable_snapshots(&self) -> Result<ReadableSnapshots> {
        let ids: Vec<SnapshotId> = self
            .storage
            .list(FileType::Snapshot)?
            .iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let loaded: Vec<(SnapshotId, Result<Snapshot>)> = ids
            .par_iter()
            .map(|id| (*id, self.load_snapshot(id)))
            .collect();
        let mut good = Vec::with_capacity(loaded.len());
        let mut damaged = Vec::new();
        for (id, result) in loaded {
            match result {
                Ok(s) => good.push((id, s)),
                // Removed while we looked (a concurrent forget): simply not there.
                Err(e) if e.is_not_found() => {}
                Err(e) => damaged.push((FileType::Snapshot.relative_path(&id.to_hex()), e)),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, damaged))
    }

    /// Every snapshot, oldest first; fails if any snapshot file cannot be read.
    pub fn list_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let ids: Vec<SnapshotId> = self
            .storage
            .list(FileType::Snapshot)?
            .iter()
            .filter_map(|f| f.name.parse().ok())
            .collect();
        let mut out: Vec<(SnapshotId, Snapshot)> = ids
            .par_iter()
            .map(|id| Ok((*id, self.load_snapshot(id)?)))
            .collect::<Result<_>>()?;
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest` (newest matching `filter`), a full id or a unique id prefix.
    pub fn find_snapshot(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .list_readable_snapshots()?
                .0
                .into_iter()
                .rev()
                .find(|(_, s)| filter.matches(s))
                .ok_or_else(|| {
                    Error::NotFound(
                        "a snapshot matching the filter (the repository may be empty)".into(),
                    )
                });
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{spec:?} is neither `latest` nor a snapshot id"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<SnapshotId> = self
            .storage
            .list(FileType::Snapshot)?
            .iter()
            .filter(|f| f.name.starts_with(&spec))
            .filter_map(|f| f.name.parse().ok())
            .collect();
        match matches.as_slice() {
            [id] => Ok((*id, self.load_snapshot(id)?)),
            [] => Err(Error::NotFound(format!("snapshot {spec}"))),
            _ => Err(Error::invalid(format!(
                "snapshot id prefix {spec} is ambiguous ({} matches)",
                matches.len()
            ))),
        }
    }
}
