//! Writing large file contents past the page cache, with direct I/O (`O_DIRECT`).
//!
//! A restore writes each byte once and reads none of it back. Through the page cache every
//! byte is copied into a freshly allocated page, and a large restore pushes the server's
//! working set out of memory. Direct I/O hands the device our own buffer instead. It needs
//! file offsets, lengths and memory aligned to the device's logical block size, so only the
//! whole aligned blocks in the middle of a write go that way; the partial blocks at either
//! end, which may share a block with a neighbouring chunk, go through the page cache as
//! before. No block is written both ways, so the two never disagree about its contents.
//!
//! Only on local file systems known to do direct I/O well (ext4, XFS, btrfs); elsewhere, or
//! if the file system refuses, everything goes through the page cache.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::platform::{DIRECT_IO_ALIGN as ALIGN, does_direct_io_well};

/// The aligned middle of a write must be at least this long to go past the page cache.
const MIN_DIRECT: usize = 128 << 10;
/// Direct writes are made from an aligned copy of at most this many bytes at a time.
const PIECE: usize = 1 << 20;

thread_local! {
    /// Per thread: an aligned staging buffer, reused, so its pages are touched once.
    static STAGING: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Writes all of `data` at `offset` of `file`: its whole aligned blocks with direct I/O
/// when the file system is one that does it well and there are enough of them, the rest
/// through the page cache. Returns how many bytes went past the page cache.
///
/// Direct I/O is switched on and off on `file`'s open file description: no other thread may
/// write through it (or a duplicate of it) meanwhile.
pub fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<usize> {
    let end = offset + data.len() as u64;
    let body_start = offset.next_multiple_of(ALIGN as u64);
    let body_end = end - end % ALIGN as u64;
    if body_end < body_start + MIN_DIRECT as u64 || !does_direct_io_well(file) {
        file.write_all_at(data, offset)?;
        return Ok(0);
    }
    let head = (body_start - offset) as usize;
    let body = (body_end - body_start) as usize;
    file.write_all_at(&data[..head], offset)?;
    file.write_all_at(&data[head + body..], body_end)?;
    write_body(file, &data[head..head + body], body_start)
}

/// Writes `body` (aligned in the file, and a whole number of blocks long) with direct I/O,
/// or through the page cache if the file system turns direct I/O down. Returns how many
/// bytes went past the page cache.
fn write_body(file: &File, body: &[u8], offset: u64) -> io::Result<usize> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor `file` keeps open; F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above; F_SETFL takes the new flags as an int.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_DIRECT) } != 0 {
        file.write_all_at(body, offset)?;
        return Ok(0);
    }
    let written = STAGING.with(|staging| -> io::Result<usize> {
        let mut staging = staging.borrow_mut();
        if staging.len() < PIECE + ALIGN {
            staging.resize(PIECE + ALIGN, 0);
        }
        let start = staging.as_ptr().align_offset(ALIGN);
        let buffer = &mut staging[start..start + PIECE];
        let mut done = 0;
        while done < body.len() {
            let n = (body.len() - done).min(PIECE);
            buffer[..n].copy_from_slice(&body[done..done + n]);
            match file.write_at(&buffer[..n], offset + done as u64) {
                // Short writes stay aligned (whole blocks) or the next call refuses them.
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(w) => done += w,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Alignment stricter than ours: the rest through the page cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    });
    // SAFETY: as above; the descriptor's flags as they were.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) };
    let written = written?;
    file.write_all_at(&body[written..], offset + written as u64)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
    }

    /// Writes pieces of `content` at unaligned offsets, out of order, and reads it back;
    /// returns how many bytes went past the page cache.
    fn round_trip(dir: &std::path::Path, content: &[u8], cuts: &[usize]) -> usize {
        let path = dir.join("f");
        let file = File::create(&path).unwrap();
        file.set_len(content.len() as u64).unwrap();
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(content.len());
        let pieces: Vec<_> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let mut direct = 0;
        for &(start, end) in pieces.iter().rev() {
            direct += write_all_at(&file, &content[start..end], start as u64).unwrap();
        }
        drop(file);
        assert!(std::fs::read(&path).unwrap() == content);
        direct
    }

    #[test]
    fn unaligned_pieces_round_trip_wherever_the_test_runs() {
        let dir = tempfile::tempdir().unwrap();
        let content = pattern(3 * PIECE + 12_345);
        round_trip(
            dir.path(),
            &content,
            &[1, 700_001, 2 * PIECE + 4096, 3 * PIECE],
        );
    }

    #[test]
    fn unaligned_pieces_round_trip_on_a_file_system_doing_direct_io() {
        // The build directory is on the disk the project is built on; /tmp may be tmpfs.
        let build_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        std::fs::create_dir_all(&build_dir).unwrap();
        let dir = tempfile::tempdir_in(&build_dir).unwrap();
        let probe = File::create(dir.path().join("probe")).unwrap();
        if !does_direct_io_well(&probe) {
            eprintln!("skipped: the build directory is not on ext4, XFS or btrfs");
            return;
        }
        let content = pattern(5 * PIECE + 777);
        let direct = round_trip(
            dir.path(),
            &content,
            &[4095, 4096 + MIN_DIRECT, 3 * PIECE + 1],
        );
        // All but the partial blocks around the cuts and the pieces too short.
        assert!(direct > 4 * PIECE, "{direct} bytes written with direct I/O");
    }
}
