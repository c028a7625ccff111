//! The library's one error type: every failure names what went wrong and where.

use std::io;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system call on a path failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no repository at {0} (create one with `arca init`)")]
    NoRepository(String),
    #[error("a repository already exists at {0}")]
    RepositoryExists(String),
    #[error("wrong password: none of the repository's keys opens with it")]
    WrongPassword,
    #[error(
        "{what} has format version {found}; this arca understands version {supported}: use a newer arca"
    )]
    UnsupportedVersion {
        what: String,
        found: u32,
        supported: u32,
    },
    /// A stored object failed to decode, authenticate or match its name.
    #[error("{object} is damaged: {reason}")]
    Corrupt { object: String, reason: String },
    /// Another process holds a conflicting lock.
    #[error("{0}")]
    Locked(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    InvalidInput(String),
    /// The local index cache could not be used; it is safe to delete.
    #[error("local index {}: {reason}", path.display())]
    LocalIndex { path: PathBuf, reason: String },
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            object: object.into(),
            reason: reason.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// True when a write failed because the file system, or the user's quota on it, is full.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, Error::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded))
    }

    /// True when the error means an object is absent rather than unreadable.
    pub fn is_not_found(&self) -> bool {
        match self {
            Error::NotFound(_) => true,
            Error::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            _ => false,
        }
    }
}

/// Attaches a path to an `io::Result`.
pub trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
