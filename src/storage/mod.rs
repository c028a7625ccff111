//! Where repository files live: a small trait with no knowledge of keys or formats.
//!
//! Files are written once, whole, and never modified; a write is durable when it returns.

mod local;
mod memory;

pub use local::LocalStorage;
pub use memory::MemoryStorage;

use crate::error::Result;

/// The kinds of file in a repository, each in its own folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileType {
    Config,
    Key,
    Pack,
    Index,
    Snapshot,
    Lock,
}

impl FileType {
    pub const ALL: [FileType; 6] = [
        FileType::Config,
        FileType::Key,
        FileType::Pack,
        FileType::Index,
        FileType::Snapshot,
        FileType::Lock,
    ];

    /// The folder holding this kind of file (empty for `config`).
    pub fn dir(self) -> &'static str {
        match self {
            FileType::Config => "",
            FileType::Key => "keys",
            FileType::Pack => "packs",
            FileType::Index => "index",
            FileType::Snapshot => "snapshots",
            FileType::Lock => "locks",
        }
    }

    /// The path of a file relative to the repository root, as shown in messages.
    pub fn relative_path(self, name: &str) -> String {
        match self {
            FileType::Config => "config".to_string(),
            FileType::Pack => format!("packs/{}/{name}", name.get(..2).unwrap_or("00")),
            other => format!("{}/{name}", other.dir()),
        }
    }
}

/// A file's name and size, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub name: String,
    pub size: u64,
}

/// Whether `name` can be a repository file name: 64 lowercase hex digits.
pub fn is_valid_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub trait Storage: Send + Sync {
    /// Where the repository is, for messages.
    fn location(&self) -> String;
    /// Creates the folder structure of a new, empty repository.
    fn create(&self) -> Result<()>;
    /// Lists the files of one kind; names that are not valid file names are skipped.
    fn list(&self, ty: FileType) -> Result<Vec<FileInfo>>;
    fn read(&self, ty: FileType, name: &str) -> Result<Vec<u8>>;
    /// As [`read`](Self::read), for a file nothing will read again soon (a pack a verify
    /// checks, or one a prune repacks): the storage may drop it from memory caches once
    /// read, so that reading a whole repository does not push the server's own working set
    /// out of the page cache.
    fn read_cold(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        self.read(ty, name)
    }
    /// Reads exactly `len` bytes at `offset`; a shorter file is an error.
    fn read_range(&self, ty: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// As [`read_range`](Self::read_range), for a range nothing will read again soon (a
    /// restore reads each range of a pack once): the storage may read it past memory caches.
    fn read_range_cold(
        &self,
        ty: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        self.read_range(ty, name, offset, len)
    }
    /// Writes a whole file atomically (it is complete under its name, or absent) and, but
    /// for lock files, durably before returning.
    fn write(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()>;
    /// As [`write`](Self::write), for a file nothing will read again soon (a pack of file
    /// contents, read next by a restore or a verify, days later). Once it is durable the
    /// storage may drop it from memory caches, so that a backup does not push the server's
    /// own working set out of the page cache, nor fill memory with what it will not read.
    fn write_cold(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write(ty, name, data)
    }
    /// Removes a file; durably before returning, but for lock files.
    fn remove(&self, ty: FileType, name: &str) -> Result<()>;
    /// The size of one file.
    fn size(&self, ty: FileType, name: &str) -> Result<u64>;
}

#[cfg(test)]
pub(crate) mod contract {
    //! The behaviour every storage implementation must show.
    use super::*;

    pub fn check(storage: &dyn Storage) {
        storage.create().unwrap();
        let name = "ab".to_string() + &"0".repeat(62);
        assert!(storage.list(FileType::Pack).unwrap().is_empty());
        storage
            .write(FileType::Pack, &name, b"hello world")
            .unwrap();
        assert_eq!(storage.read(FileType::Pack, &name).unwrap(), b"hello world");
        assert_eq!(
            storage.read_range(FileType::Pack, &name, 6, 5).unwrap(),
            b"world"
        );
        assert!(storage.read_range(FileType::Pack, &name, 6, 6).is_err());
        assert_eq!(storage.size(FileType::Pack, &name).unwrap(), 11);
        assert_eq!(
            storage.list(FileType::Pack).unwrap(),
            vec![FileInfo {
                name: name.clone(),
                size: 11
            }]
        );
        assert!(storage.list(FileType::Index).unwrap().is_empty());
        storage.write(FileType::Config, "config", b"cfg").unwrap();
        assert_eq!(storage.read(FileType::Config, "config").unwrap(), b"cfg");
        storage.remove(FileType::Pack, &name).unwrap();
        assert!(
            storage
                .read(FileType::Pack, &name)
                .unwrap_err()
                .is_not_found()
        );
        assert!(storage.list(FileType::Pack).unwrap().is_empty());
    }
}
