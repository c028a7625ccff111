//! Operations: what the commands do, built on the repository layer.

pub mod backup;
pub mod copy;
pub mod diff;
pub(crate) mod direct_write;
pub mod dump;
mod durable;
pub mod forget;
pub mod ls;
pub mod mirror;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod stats;
pub mod tree_walk;
pub mod verify;

use serde::Serialize;

/// A problem with one path that did not stop the operation (exit code 3).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// Counters an operation updates as it goes, for a progress display.
pub trait Progress: Send + Sync {
    /// `files` more entries handled, `bytes` more content bytes handled.
    fn advance(&self, _files: u64, _bytes: u64) {}
}

/// Progress that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}
