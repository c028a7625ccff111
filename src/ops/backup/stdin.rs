//! `arca backup --stdin`: a stream (a database dump, say) stored as a single file.

use std::io::Read;
use std::time::Instant;

use rayon::prelude::*;

use super::BackupReport;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::snapshot::{Snapshot, Summary};
use crate::format::tree::{Node, NodeKind, Tree, is_safe_name};
use crate::id::BlobId;
use crate::repository::LockKind;
use crate::repository::Repository;

#[derive(Clone, Debug, Default)]
pub struct StdinOptions {
    /// The name the stream is stored under.
    pub filename: String,
    pub tags: Vec<String>,
    pub host: Option<String>,
}

/// Chunks handed to the cores at a time: enough to keep them busy, few enough to bound memory.
const BATCH: usize = 8;

/// Stores everything `reader` yields as the file `options.filename` of a new snapshot.
pub fn backup_stdin(
    repo: &Repository,
    reader: impl Read,
    options: &StdinOptions,
) -> Result<BackupReport> {
    let lock = repo.lock(LockKind::Shared, "backup --stdin")?;
    let started = Instant::now();
    let time = crate::platform::now();
    if !is_safe_name(options.filename.as_bytes()) {
        return Err(Error::invalid(format!(
            "--stdin-filename {:?} must be a plain file name (no '/', not '.' or '..')",
            options.filename
        )));
    }
    let saver = repo.saver()?;
    let mut content: Vec<BlobId> = Vec::new();
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<Vec<u8>>, content: &mut Vec<BlobId>| -> Result<()> {
        let ids: Vec<BlobId> = batch
            .par_iter()
            .map(|c| saver.save(BlobKind::Data, c).map(|s| s.id))
            .collect::<Result<_>>()?;
        content.extend(ids);
        batch.clear();
        Ok(())
    };
    let total = repo.chunker().chunk_stream(reader, |chunk| {
        batch.push(chunk);
        if batch.len() == BATCH {
            flush(&mut batch, &mut content)?;
        }
        Ok(())
    })?;
    flush(&mut batch, &mut content)?;
    // SAFETY: umask only reads and sets the process mask; it is restored at once.
    let umask = unsafe {
        let m = libc::umask(0o022);
        libc::umask(m);
        m
    };
    // SAFETY: geteuid and getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let node = Node {
        name: options.filename.as_bytes().to_vec(),
        kind: NodeKind::File,
        mode: 0o100000 | (0o666 & !(umask as u32)),
        uid,
        gid,
        user: crate::platform::user_name(uid).unwrap_or_default(),
        group: crate::platform::group_name(gid).unwrap_or_default(),
        mtime: time,
        ctime: time,
        size: total,
        links: 1,
        content,
        ..Node::default()
    };
    let tree = Tree { nodes: vec![node] };
    let root = saver.save(BlobKind::Tree, &tree.encode_body())?.id;
    let stats = saver.finish()?;
    let snapshot = Snapshot {
        time,
        host: options
            .host
            .clone()
            .unwrap_or_else(crate::platform::hostname),
        user: crate::platform::username(),
        paths: vec![format!("/{}", options.filename)],
        tags: options.tags.clone(),
        parent: None,
        tree: root,
        program_version: format!("arca {}", env!("CARGO_PKG_VERSION")),
        summary: Summary {
            files_new: 1,
            bytes_read: total,
            bytes_added: stats.stored_bytes_added,
            blobs_added: stats.blobs_added,
            duration_ms: started.elapsed().as_millis() as u64,
            ..Summary::default()
        },
    };
    // The commit point: only while the lock still protects the data written.
    lock.check()?;
    let snapshot_id = repo.save_snapshot(&snapshot)?;
    Ok(BackupReport {
        snapshot_id,
        parent: None,
        bytes_read: total,
        snapshot,
        problems: Vec::new(),
    })
}
