//! Storage in a local directory, with the durable-write discipline: temp file, fsync,
//! rename, fsync the directory.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{FileInfo, FileType, Storage, is_valid_name};
use crate::error::{Error, IoContext, Result};
use crate::platform::{DIRECT_IO_ALIGN as ALIGN, does_direct_io_well};

pub struct LocalStorage {
    root: PathBuf,
    /// Packs recently read from, kept open: a backup or restore reads many small ranges
    /// (one per tree) from few packs, and opening the file for each cost a path walk and
    /// two system calls. Packs never change once written, so an open handle reads what a
    /// fresh one would; a removed pack is dropped from here.
    open_packs: Mutex<VecDeque<(String, Arc<File>)>>,
}

/// How many pack files [`LocalStorage`] keeps open for reading.
const OPEN_PACKS: usize = 16;

impl LocalStorage {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStorage {
            root: root.into(),
            open_packs: Mutex::new(VecDeque::new()),
        }
    }

    fn open_packs(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Arc<File>)>> {
        self.open_packs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file to read a range of `name` from: a pack kept open, or a newly opened file.
    fn open_for_range(&self, ty: FileType, name: &str, path: &Path) -> Result<Arc<File>> {
        if ty != FileType::Pack {
            return Ok(Arc::new(File::open(path).at(path)?));
        }
        // Looked up and opened under one lock, so a pack is kept open once, and never
        // reopened between its removal from here and from the disk (see `remove`).
        let mut open = self.open_packs();
        if let Some((_, file)) = open.iter().find(|(n, _)| n == name) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(File::open(path).at(path)?);
        if open.len() >= OPEN_PACKS {
            open.pop_front();
        }
        open.push_back((name.to_owned(), Arc::clone(&file)));
        Ok(file)
    }

    /// Writes `data` as file `name` of kind `ty`: to a temporary file, made durable (but
    /// for lock files), then renamed into place, and the rename made durable.
    fn write_file(&self, ty: FileType, name: &str, data: &[u8], caching: Caching) -> Result<()> {
        let path = self.path(ty, name)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let nonce: [u8; 8] = crate::crypto::random_bytes();
        let tmp = dir.join(format!(".tmp-{}", hex::encode(nonce)));
        let result = (|| {
            let mut file = File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .at(&tmp)?;
            file.write_all(data).at(&tmp)?;
            if durable(ty) {
                file.sync_all().at(&tmp)?;
                if caching == Caching::Drop {
                    drop_from_page_cache(&file);
                }
            }
            drop(file);
            fs::rename(&tmp, &path).at(&path)?;
            if durable(ty) {
                sync_dir(&dir)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, ty: FileType, name: &str) -> Result<PathBuf> {
        if ty == FileType::Config {
            return Ok(self.root.join("config"));
        }
        if !is_valid_name(name) {
            return Err(Error::invalid(format!(
                "{name:?} is not a repository file name"
            )));
        }
        Ok(self.root.join(ty.relative_path(name)))
    }
}

/// Whether writes and removals of this kind of file are made durable before they return.
/// Lock files are not: a crash that loses one also ended the process that held it, and
/// every fsync costs a wait behind whatever else the disk is writing.
fn durable(ty: FileType) -> bool {
    ty != FileType::Lock
}

/// Whether a written file's pages stay in the page cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caching {
    Keep,
    Drop,
}

/// Asks the kernel to drop the cached pages of `file`. Only clean pages are dropped: a
/// written file must have been fsynced first. Best effort: a file system may keep them.
fn drop_from_page_cache(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: `file` is an open descriptor; posix_fadvise reads nothing from memory.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// The error for a range of `len` bytes at `offset` that could not be read.
fn range_error(
    ty: FileType,
    name: &str,
    path: &Path,
    offset: u64,
    len: usize,
    e: io::Error,
) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::corrupt(
            ty.relative_path(name),
            format!(
                "shorter than expected: cannot read {len} bytes at offset {offset} (truncated?)"
            ),
        )
    } else {
        Error::io(path, e)
    }
}

/// Ranges shorter than this are read through the page cache even when read cold: a direct
/// read waits on the disk, which costs more than copying a few pages.
const MIN_DIRECT_READ: usize = 256 << 10;

/// Reads `len` bytes at `offset` of the file at `path` with direct I/O, past the page cache:
/// no page of it is cached, and none of the server's cache is evicted for it. `None` where
/// the file system does not do direct I/O (well); the caller then reads the usual way.
fn read_direct(path: &Path, offset: u64, len: usize) -> Option<io::Result<Vec<u8>>> {
    let file = match File::options()
        .read(true)
        .custom_flags(libc::O_DIRECT | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return None,
        Err(e) => return Some(Err(e)),
    };
    if !does_direct_io_well(&file) {
        return None;
    }
    // Offset, length and memory aligned: read the whole blocks around the range into an
    // aligned stretch of the buffer, then move the range to the buffer's start.
    let start = offset - offset % ALIGN as u64;
    let lead = (offset - start) as usize;
    let span = (lead + len).next_multiple_of(ALIGN);
    let mut buf = vec![0u8; span + ALIGN];
    let pad = buf.as_ptr().align_offset(ALIGN);
    let mut got = 0;
    while got < lead + len {
        match file.read_at(&mut buf[pad + got..pad + span], start + got as u64) {
            Ok(0) => return Some(Err(io::ErrorKind::UnexpectedEof.into())),
            // Only the file's end makes a read stop short of a block boundary.
            Ok(n) if n % ALIGN != 0 && got + n < lead + len => {
                return Some(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) && got == 0 => return None,
            Err(e) => return Some(Err(e)),
        }
    }
    buf.truncate(pad + lead + len);
    buf.drain(..pad + lead);
    Some(Ok(buf))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

impl Storage for LocalStorage {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self) -> Result<()> {
        fs::create_dir_all(&self.root).at(&self.root)?;
        for ty in FileType::ALL {
            if ty != FileType::Config {
                let dir = self.root.join(ty.dir());
                fs::create_dir_all(&dir).at(&dir)?;
            }
        }
        for i in 0..=255u8 {
            let dir = self.root.join("packs").join(format!("{i:02x}"));
            fs::create_dir_all(&dir).at(&dir)?;
        }
        sync_dir(&self.root.join("packs"))?;
        sync_dir(&self.root)
    }

    fn list(&self, ty: FileType) -> Result<Vec<FileInfo>> {
        let mut dirs = Vec::new();
        match ty {
            FileType::Config => {
                let path = self.root.join("config");
                return match fs::metadata(&path) {
                    Ok(m) => Ok(vec![FileInfo {
                        name: "config".into(),
                        size: m.len(),
                    }]),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
                    Err(e) => Err(Error::io(path, e)),
                };
            }
            FileType::Pack => {
                let packs = self.root.join("packs");
                for entry in fs::read_dir(&packs).at(&packs)? {
                    let entry = entry.at(&packs)?;
                    if entry.file_type().at(entry.path())?.is_dir() {
                        dirs.push(entry.path());
                    }
                }
            }
            other => dirs.push(self.root.join(other.dir())),
        }
        let mut out = Vec::new();
        for dir in dirs {
            for entry in fs::read_dir(&dir).at(&dir)? {
                let entry = entry.at(&dir)?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                if !is_valid_name(&name) {
                    continue;
                }
                let meta = entry.metadata().at(entry.path())?;
                if meta.is_file() {
                    out.push(FileInfo {
                        name,
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        let path = self.path(ty, name)?;
        fs::read(&path).at(path)
    }

    fn read_cold(&self, ty: FileType, name: &str) -> Result<Vec<u8>> {
        let path = self.path(ty, name)?;
        let mut file = File::open(&path).at(&path)?;
        let mut data = Vec::with_capacity(file.metadata().map_or(0, |m| m.len() as usize));
        file.read_to_end(&mut data).at(&path)?;
        drop_from_page_cache(&file);
        Ok(data)
    }

    fn read_range(&self, ty: FileType, name: &str, offset: u64, len: usize) -> Result<Vec<u8>> {
        let path = self.path(ty, name)?;
        let file = self.open_for_range(ty, name, &path)?;
        let mut buf = vec![0u8; len];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| range_error(ty, name, &path, offset, len, e))?;
        Ok(buf)
    }

    fn read_range_cold(
        &self,
        ty: FileType,
        name: &str,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        if len < MIN_DIRECT_READ {
            return self.read_range(ty, name, offset, len);
        }
        let path = self.path(ty, name)?;
        match read_direct(&path, offset, len) {
            Some(read) => read.map_err(|e| range_error(ty, name, &path, offset, len, e)),
            None => self.read_range(ty, name, offset, len),
        }
    }

    fn write(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_file(ty, name, data, Caching::Keep)
    }

    fn write_cold(&self, ty: FileType, name: &str, data: &[u8]) -> Result<()> {
        self.write_file(ty, name, data, Caching::Drop)
    }

    fn remove(&self, ty: FileType, name: &str) -> Result<()> {
        let path = self.path(ty, name)?;
        // A pack's kept handle is dropped, and the file removed, under the lock.
        let open_packs = (ty == FileType::Pack).then(|| {
            let mut open = self.open_packs();
            open.retain(|(n, _)| n != name);
            open
        });
        fs::remove_file(&path).at(&path)?;
        drop(open_packs);
        if let Some(dir) = path.parent().filter(|_| durable(ty)) {
            sync_dir(dir)?;
        }
        Ok(())
    }

    fn size(&self, ty: FileType, name: &str) -> Result<u64> {
        let path = self.path(ty, name)?;
        Ok(fs::metadata(&path).at(path)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_storage_meets_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        super::super::contract::check(&LocalStorage::new(dir.path().join("repo")));
    }

    #[test]
    fn a_removed_pack_is_not_read_through_a_handle_kept_open() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.create().unwrap();
        let name = "ab".repeat(32);
        storage.write(FileType::Pack, &name, b"0123456789").unwrap();
        assert_eq!(
            storage.read_range(FileType::Pack, &name, 2, 3).unwrap(),
            b"234"
        );
        assert_eq!(storage.open_packs().len(), 1);
        storage.remove(FileType::Pack, &name).unwrap();
        assert!(storage.open_packs().is_empty());
        assert!(storage.read_range(FileType::Pack, &name, 2, 3).is_err());
    }

    /// How many pages of the file at `path` are in the page cache.
    fn pages_cached(path: &Path) -> usize {
        let file = File::open(path).unwrap();
        // SAFETY: the file is not changed while mapped; the map is only asked about.
        let map = unsafe { memmap2::Mmap::map(&file) }.unwrap();
        let page = 4096;
        let mut flags = vec![0u8; map.len().div_ceil(page)];
        // SAFETY: `map` is a live mapping of `map.len()` bytes and `flags` has a byte for
        // each of its pages.
        let rc = unsafe { libc::mincore(map.as_ptr() as *mut _, map.len(), flags.as_mut_ptr()) };
        assert_eq!(rc, 0);
        flags.iter().filter(|f| *f & 1 == 1).count()
    }

    #[test]
    fn cold_writes_and_reads_leave_the_file_out_of_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a zeroed statfs is a valid value, which statfs fills in for a
        // NUL-terminated path.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statfs(path.as_ptr(), &mut fs) }, 0);
        if fs.f_type == libc::TMPFS_MAGIC {
            return; // tmpfs keeps every page in memory: there is nothing to drop
        }
        let storage = LocalStorage::new(dir.path());
        storage.create().unwrap();
        let data: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
        let (kept, cold) = ("aa".repeat(32), "bb".repeat(32));
        storage.write(FileType::Pack, &kept, &data).unwrap();
        storage.write_cold(FileType::Pack, &cold, &data).unwrap();
        let at = |name: &str| dir.path().join(FileType::Pack.relative_path(name));
        assert_eq!(pages_cached(&at(&kept)), 256);
        assert_eq!(pages_cached(&at(&cold)), 0);
        assert_eq!(storage.read(FileType::Pack, &cold).unwrap(), data);
        assert_eq!(pages_cached(&at(&cold)), 256);
        assert_eq!(storage.read_cold(FileType::Pack, &cold).unwrap(), data);
        assert_eq!(pages_cached(&at(&cold)), 0);
        assert_eq!(storage.read_cold(FileType::Pack, &kept).unwrap(), data);
        assert_eq!(pages_cached(&at(&kept)), 0);
    }

    #[test]
    fn cold_range_reads_match_plain_ones_and_leave_nothing_cached() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.create().unwrap();
        let data: Vec<u8> = (0..3_000_017u32).map(|i| (i * 7 % 253) as u8).collect();
        let name = "cd".repeat(32);
        storage.write_cold(FileType::Pack, &name, &data).unwrap();
        let path = dir.path().join(FileType::Pack.relative_path(&name));
        let direct = does_direct_io_well(&File::open(&path).unwrap());
        let ranges = [
            (0, data.len()),
            (1, 300_000),
            (4096, 262_144),
            (4095, 1_000_001),
            (2_000_000, data.len() - 2_000_000),
            (data.len() as u64 - 300_001, 300_001),
            (12_345, 100),
        ];
        for (offset, len) in ranges {
            let cold = storage
                .read_range_cold(FileType::Pack, &name, offset, len)
                .unwrap();
            assert!(
                cold == data[offset as usize..offset as usize + len],
                "{offset}+{len}"
            );
        }
        if direct {
            // Only the short range went through the page cache: its pages and readahead.
            assert!(pages_cached(&path) < 64, "{}", pages_cached(&path));
        }
        for (offset, len) in [
            (0, data.len() + 1),
            (2_999_000, 300_000),
            (4_000_000, 300_000),
        ] {
            let err = storage
                .read_range_cold(FileType::Pack, &name, offset, len)
                .unwrap_err();
            assert!(err.to_string().contains("shorter than expected"), "{err}");
        }
    }

    #[test]
    fn hostile_names_are_refused_and_temp_files_not_listed() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.create().unwrap();
        assert!(storage.read(FileType::Snapshot, "../config").is_err());
        fs::write(dir.path().join("snapshots/.tmp-123"), b"x").unwrap();
        assert!(storage.list(FileType::Snapshot).unwrap().is_empty());
    }
}
