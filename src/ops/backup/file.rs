//! Reading one file's content into chunks.
//!
//! Files are read with plain reads, never memory-mapped: a file truncated while it is
//! being read (a rotated log) must give a short read, not a SIGBUS. Large files are read
//! in segments; each segment's chunks are hashed, compressed and sealed on all cores.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use rayon::prelude::*;

use super::Context;
use super::guide::{self, ChunkId, Cut, Guide, OldChunk};
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::format::pack::BlobKind;
use crate::format::tree::{Node, NodeKind};
use crate::id::BlobId;

/// Largest read buffer a thread keeps for the next file.
const KEEP_BUFFER: usize = 4 << 20;

thread_local! {
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A read buffer borrowed from the thread, returned when dropped: allocating a fresh one
/// per file costs page faults and zeroing in the kernel for every file read.
struct ScratchBuffer(Vec<u8>);

impl ScratchBuffer {
    fn take() -> Self {
        let mut buf = READ_BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        buf.clear();
        ScratchBuffer(buf)
    }
}

impl std::ops::Deref for ScratchBuffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for ScratchBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl Drop for ScratchBuffer {
    fn drop(&mut self) {
        if self.0.capacity() <= KEEP_BUFFER {
            let buf = std::mem::take(&mut self.0);
            READ_BUFFER.with(|b| {
                let mut slot = b.borrow_mut();
                if slot.capacity() < buf.capacity() {
                    *slot = buf;
                }
            });
        }
    }
}

/// How much of a large file is read and chunked at a time.
const SEGMENT_LEN: usize = 8 << 20;

/// Opens the file at `path` for reading; through `parent`, its directory, when the walk
/// has that open, which spares the kernel a lookup of every component of the path.
/// Never waits: a fifo put in the file's place since the walk saw it opens at once, and
/// is found out by its metadata or its first read.
fn open_source(parent: Option<&File>, name: &[u8], path: &Path) -> std::io::Result<File> {
    let base = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let open = |flags: libc::c_int| match parent {
        Some(dir) => open_at(dir, name, flags),
        None => File::options().read(true).custom_flags(flags).open(path),
    };
    // O_NOATIME keeps backups from touching access times, but only the owner may use it.
    match open(base | libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(base),
        other => other,
    }
}

/// Opens the entry `name` of `parent` (the file at `path`) and returns it with its
/// metadata, if it is a regular file; `None` if it cannot be opened or is anything else.
pub(crate) fn open_regular(
    parent: Option<&File>,
    name: &[u8],
    path: &Path,
) -> Option<(File, std::fs::Metadata)> {
    let file = open_source(parent, name, path).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some((file, meta))
}

/// `openat(2)`: the entry `name` of the open directory `dir`.
fn open_at(dir: &File, name: &[u8], flags: libc::c_int) -> std::io::Result<File> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name =
        std::ffi::CString::new(name).map_err(|_| std::io::Error::from(ErrorKind::InvalidInput))?;
    loop {
        // SAFETY: `name` is a NUL-terminated string that outlives the call, and `dir` an
        // open descriptor; the descriptor returned is owned by nothing else.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) };
        if fd >= 0 {
            return Ok(unsafe { File::from_raw_fd(fd) });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads until `buf` holds `want` more bytes or the file ends; returns the bytes added.
///
/// The end is a read that returns nothing, or one that falls short of what it asked for
/// with the bytes added come to `expected`, what the file's metadata says is left: a small
/// file is read with one call rather than a second to find its end. A file that has grown
/// fills the read, and one that has shrunk falls short of `expected`; either is read on
/// to its end.
fn fill(file: &File, buf: &mut Vec<u8>, want: usize, expected: u64) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let start = buf.len();
    buf.reserve_exact(want);
    while buf.len() - start < want {
        let asked = want - (buf.len() - start);
        let spare = &mut buf.spare_capacity_mut()[..asked];
        // SAFETY: `spare` is `asked` bytes of `buf`'s own memory; read(2) writes at most
        // that many, and the length grows by only as many as it wrote.
        let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), asked) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        let n = n as usize;
        // SAFETY: the kernel has written the `n` bytes past the old length.
        unsafe { buf.set_len(buf.len() + n) };
        if n < asked && (buf.len() - start) as u64 == expected {
            break;
        }
    }
    Ok(buf.len() - start)
}

/// Saves every chunk of `data` as cut by `cuts`, in parallel; returns their ids.
fn save_chunks(ctx: &Context<'_>, data: &[u8], cuts: &[Cut]) -> Result<Vec<BlobId>> {
    let save = |chunk: &[u8], id: ChunkId| match id {
        ChunkId::Unknown => ctx.saver.save(BlobKind::Data, chunk).map(|s| s.id),
        ChunkId::Hashed(id) => ctx
            .saver
            .save_with_id(BlobKind::Data, id, chunk)
            .map(|s| s.id),
        ChunkId::Stored(id) => Ok(id),
    };
    if cuts.len() <= 1 {
        return cuts.iter().map(|c| save(&data[..c.len], c.id)).collect();
    }
    let mut pieces = Vec::with_capacity(cuts.len());
    let mut offset = 0;
    for cut in cuts {
        pieces.push((offset..offset + cut.len, cut.id));
        offset += cut.len;
    }
    pieces
        .into_par_iter()
        .map(|(r, id)| save(&data[r], id))
        .collect()
}

/// A guide through the chunks of the file's version in the parent snapshot, when it had
/// several and the index still has every one of them (their lengths come from it, and the
/// chunks found again need not be looked up twice). Without one the file is chunked
/// plainly, so any failure here only costs speed.
fn parent_guide(ctx: &Context<'_>, old: Option<&Node>, max_size: usize) -> Option<Guide> {
    let old = old.filter(|o| o.kind == NodeKind::File && o.content.len() >= 2)?;
    let found = ctx
        .repo
        .local_index()
        .ok()?
        .lookup_many(&old.content)
        .ok()?;
    let chunks = old
        .content
        .iter()
        .zip(found)
        .map(|(id, location)| {
            location.map(|l| OldChunk {
                id: *id,
                len: l.raw_length as usize,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Guide::new(chunks, max_size))
}

/// Reads the file at `path` (named `node.name` in the open directory `parent`, if given;
/// `opened` if the caller has it open already), stores its chunks and fills in
/// `node.content`, `node.size` and `node.xattrs`.
/// `old` is the file's entry in the parent snapshot, if it had one: where its chunks were
/// cut is followed while the content still matches (see [`guide`]).
pub(crate) fn read_content(
    ctx: &Context<'_>,
    parent: Option<&File>,
    opened: Option<File>,
    path: &Path,
    node: &mut Node,
    old: Option<&Node>,
) -> Result<()> {
    let key = (node.device, node.inode);
    if node.links > 1
        && let Some((content, size)) = ctx
            .hard_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
    {
        node.content = content.clone();
        node.size = *size;
        node.xattrs = super::walk::read_xattrs(path);
        return Ok(());
    }
    let file = match opened {
        Some(file) => file,
        None => open_source(parent, &node.name, path).map_err(|e| Error::io(path, e))?,
    };
    node.xattrs = super::walk::read_file_xattrs(&file);
    let chunker: Chunker = ctx.repo.chunker();
    let max_chunk = chunker.params().max_size as usize;
    let mut guide = parent_guide(ctx, old, max_chunk);
    let hash = |chunk: &[u8]| ctx.repo.blob_id(chunk);
    let mut content = Vec::new();
    let mut total = 0u64;
    let mut buf = ScratchBuffer::take();
    let first_read = (node.size as usize).saturating_add(1).min(SEGMENT_LEN);
    let mut want = first_read;
    loop {
        let expected = node.size.saturating_sub(total);
        let got = fill(&file, &mut buf, want, expected).map_err(|e| Error::io(path, e))?;
        total += got as u64;
        ctx.bytes_read.fetch_add(got as u64, Ordering::Relaxed);
        ctx.progress.advance(0, got as u64);
        let at_end = got < want;
        let cuts = match guide.as_mut() {
            Some(guide) => guide.cut(&chunker, &buf, at_end, &hash),
            None => guide::plain_cuts(&chunker, &buf),
        };
        if at_end {
            content.extend(save_chunks(ctx, &buf, &cuts)?);
            break;
        }
        // The last chunk was cut by the end of the buffer, not by content: carry it over
        // so that chunking in segments cuts exactly where chunking the whole file would.
        let keep = cuts.last().map_or(0, |c| c.len);
        let done = buf.len() - keep;
        let ids = save_chunks(ctx, &buf[..done], &cuts[..cuts.len().saturating_sub(1)])?;
        if let Some(guide) = guide.as_mut() {
            guide.saved(ids.last());
        }
        content.extend(ids);
        buf.drain(..done);
        want = SEGMENT_LEN.max(max_chunk);
    }
    node.content = content;
    node.size = total;
    if node.links > 1 {
        ctx.hard_links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, (node.content.clone(), total));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A pipe, its read end made a `File` that never waits, holding `bytes` from a writer
    /// that stays open: a read past them fails (`EAGAIN`) rather than finding an end.
    fn pipe_holding(bytes: &[u8]) -> (File, File) {
        use std::io::Write;
        use std::os::fd::FromRawFd;
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 returns, each owned once below.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) },
            0
        );
        let (reader, mut writer) =
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) };
        writer.write_all(bytes).unwrap();
        (reader, writer)
    }

    #[test]
    fn a_short_read_that_brings_what_the_metadata_promised_is_the_end() {
        // Twelve bytes expected, thirteen asked for: one read, no second to find the end.
        let (reader, _writer) = pipe_holding(b"twelve bytes");
        let mut buf = Vec::new();
        assert_eq!(fill(&reader, &mut buf, 13, 12).unwrap(), 12);
        assert_eq!(buf, b"twelve bytes");

        // Fewer bytes than expected (the file shrank): read on, to whatever ends it.
        let (reader, _writer) = pipe_holding(b"twelve bytes");
        let mut buf = b"kept".to_vec();
        let e = fill(&reader, &mut buf, 13, 20).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::WouldBlock, "a second read was made");
        assert_eq!(buf, b"kepttwelve bytes");
    }

    #[test]
    fn a_file_is_read_whole_whatever_its_metadata_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        std::fs::write(&path, b"twelve bytes").unwrap();
        for expected in [0, 5, 11, 12, 13, 100] {
            let mut buf = Vec::new();
            let got = fill(&File::open(&path).unwrap(), &mut buf, 1 << 20, expected).unwrap();
            assert_eq!(
                (got, &buf[..]),
                (12, &b"twelve bytes"[..]),
                "expected {expected}"
            );
        }
        let mut buf = Vec::new();
        assert_eq!(
            fill(&File::open(&path).unwrap(), &mut buf, 5, 12).unwrap(),
            5
        );
        assert_eq!(buf, b"twelv");
    }

    #[test]
    fn a_regular_file_opens_with_its_metadata_and_a_fifo_opens_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let parent = File::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("file"), b"twelve bytes").unwrap();
        let (_, meta) = open_regular(Some(&parent), b"file", &dir.path().join("file")).unwrap();
        assert_eq!(meta.len(), 12);

        // A fifo with no writer: opened for reading without O_NONBLOCK, it would wait for one.
        let fifo = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: a NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let parent = File::open(fifo.parent().unwrap()).unwrap();
            let _ = sender.send(open_regular(Some(&parent), b"fifo", &fifo).is_none());
        });
        let answer = receiver.recv_timeout(std::time::Duration::from_secs(10));
        assert_eq!(
            answer,
            Ok(true),
            "a fifo is opened at once and not taken for a file"
        );
    }
}
