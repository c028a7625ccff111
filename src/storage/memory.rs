//! Storage in memory, for tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::{FileInfo, FileType, Storage};
use crate::error::{Error, Result};
use crate::guard::lock;

#[derive(Default)]
pub struct MemoryStorage {
    files: Mutex<BTreeMap<(FileType, String), Vec<u8>>>,
    /// The files written with [`Storage::write_cold`].
    cold: Mutex<BTreeSet<(FileType, String)>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<(FileType, String), Vec<u8>>> {
        lock(&self.files)
    }

    /// Whether the file was last written with [`Storage::write_cold`].
    pub fn written_cold(&self, ty: FileType, name: &str) -> bool {
        lock(&self.cold).contains(&(ty, name.to_string()))
    }

    /// Replaces a file's bytes, to simulate damage in tests.
    pub fn corrupt(&self, ty: FileType, name: &str, f: impl FnOnce(&mut Vec<u8>)) {
        if let Some(bytes) = self.files().get_mut(&(ty, name.to_string())) {
            f(bytes);
        }
    }
}

fn not_found(ty: FileType, name: &str) -> Error {
    Error::NotFound(ty.relative_path(name))
}

impl Storage for MemoryStorage {
    fn location(&self) -> String {
        "memory".into()
    }

    fn create(&self) -> Result<()> {
        Ok(())
    }

    fn list(&self, ty: FileType) -> Result<Vec<FileInfo>> {
        Ok(self
            .files()
            .iter()
            .filter(|((t, _), _)| *t == ty)
            .map(|((_, name), data)| FileInfo {
                name: name.clone(),
                size: data.len() as u64,
            })
            .collect())
    }

    fn read(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        self.files()
            .get(&(ty, name.to_string()))
            .cloned()
            .ok_or_else(|| not_found(ty, name))
    }

    fn read_range(&self, ty: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let files = self.files();
        let data = files
            .get(&(ty, name.to_string()))
            .ok_or_else(|| not_found(ty, name))?;
        let start = offset as usize;
        data.get(start..start.saturating_add(len))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(
                    ty.relative_path(name),
                    format!("shorter than expected: cannot read {len} bytes at offset {offset}"),
                )
            })
    }

    fn write(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.files().insert((ty, name.to_string()), data.to_vec());
        lock(&self.cold).remove(&(ty, name.to_string()));
        Ok(())
    }

    fn write_cold(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write(ty, name, data)?;
        lock(&self.cold).insert((ty, name.to_string()));
        Ok(())
    }

    fn remove(&self, ty: FileType, name: &str) -> Result<()> {
        self.files()
            .remove(&(ty, name.to_string()))
            .map(|_| ())
            .ok_or_else(|| not_found(ty, name))
    }

    fn size(&self, ty: FileType, name: &str) -> Result<u64> {
        self.files()
            .get(&(ty, name.to_string()))
            .map(|d| d.len() as u64)
            .ok_or_else(|| not_found(ty, name))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn memory_storage_meets_the_contract() {
        super::super::contract::check(&super::MemoryStorage::new());
    }
}
