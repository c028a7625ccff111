//! `arca dump`: one file's content from a snapshot, written to a stream.

use std::io::Write;

use rayon::prelude::*;

use super::tree_walk::{self, Target};
use crate::error::{Error, Result};
use crate::format::tree::NodeKind;
use crate::id::BlobId;
use crate::repository::Repository;

/// Chunks fetched at once: reads and decryption overlap while output stays in order.
const WINDOW: usize = 8;

/// Writes the content of the file at `path` to `out`; returns the bytes written.
pub fn dump(repo: &Repository, root: &BlobId, path: &str, out: &mut dyn Write) -> Result<u64> {
    let node = match tree_walk::resolve(repo, root, path)? {
        Target::Entry(node) if node.kind == NodeKind::File => node,
        _ => {
            return Err(Error::invalid(format!(
                "{path:?} in the snapshot is not a regular file"
            )));
        }
    };
    let mut written = 0u64;
    for window in node.content.chunks(WINDOW) {
        let blobs: Vec<Vec<u8>> = window
            .par_iter()
            .map(|id| repo.load_blob(id))
            .collect::<Result<_>>()?;
        for blob in blobs {
            out.write_all(&blob)
                .map_err(|e| Error::io("standard output", e))?;
            written += blob.len() as u64;
        }
    }
    out.flush().map_err(|e| Error::io("standard output", e))?;
    if written != node.size {
        return Err(Error::corrupt(
            format!("file {path:?} in the snapshot"),
            format!("content is {written} bytes, the tree says {}", node.size),
        ));
    }
    Ok(written)
}
