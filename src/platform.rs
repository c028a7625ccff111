//! Facts about the running system: host and user names, id-to-name lookups, the clock,
//! which file systems do direct I/O well.

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::tree::Timestamp;

/// Alignment of offsets, lengths and memory for direct I/O (`O_DIRECT`): a multiple of every
/// common logical block size (512 and 4096 bytes).
pub const DIRECT_IO_ALIGN: usize = 4096;

const EXT4_SUPER_MAGIC: i64 = 0xEF53;
const XFS_SUPER_MAGIC: i64 = 0x5846_5342;
const BTRFS_SUPER_MAGIC: i64 = 0x9123_683E;

/// Whether `file` lives on a file system where direct I/O is known to work well: local
/// ext4, XFS and btrfs.
pub fn does_direct_io_well(file: &File) -> bool {
    // SAFETY: an all-zero statfs is a valid value for fstatfs to fill.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: the descriptor is open and `stat` is a valid statfs to write.
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut stat) } != 0 {
        return false;
    }
    matches!(
        stat.f_type as i64,
        EXT4_SUPER_MAGIC | XFS_SUPER_MAGIC | BTRFS_SUPER_MAGIC
    )
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

pub fn username() -> String {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    user_name(uid)
        .map(|n| String::from_utf8_lossy(&n).into_owned())
        .unwrap_or_else(|| uid.to_string())
}

/// Whether this process runs as root (asked once: restore asks for every file).
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions.
    *ROOT.get_or_init(|| unsafe { libc::geteuid() == 0 })
}

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: d.as_secs() as i64,
        nanos: d.subsec_nanos(),
    }
}

/// Names by numeric id, looked up once each.
type NameCache = Mutex<Option<HashMap<u32, Option<Vec<u8>>>>>;

static USERS: NameCache = Mutex::new(None);
static GROUPS: NameCache = Mutex::new(None);

fn cached(
    cache: &NameCache,
    id: u32,
    lookup: impl FnOnce(u32) -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .get_or_insert_with(HashMap::new)
        .entry(id)
        .or_insert_with(|| lookup(id))
        .clone()
}

/// The name of user `uid`, from the system's user database (cached).
pub fn user_name(uid: u32) -> Option<Vec<u8>> {
    cached(&USERS, uid, |uid| {
        let mut buf = vec![0 as libc::c_char; 16384];
        // SAFETY: passwd is plain data, zero is a valid initial value for it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: all pointers refer to live buffers of the stated sizes.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success pw_name points at a NUL-terminated string inside buf.
        Some(unsafe { CStr::from_ptr(pwd.pw_name) }.to_bytes().to_vec())
    })
}

/// The name of group `gid`, from the system's group database (cached).
pub fn group_name(gid: u32) -> Option<Vec<u8>> {
    cached(&GROUPS, gid, |gid| {
        let mut buf = vec![0 as libc::c_char; 65536];
        // SAFETY: group is plain data, zero is a valid initial value for it.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::group = std::ptr::null_mut();
        // SAFETY: all pointers refer to live buffers of the stated sizes.
        let rc =
            unsafe { libc::getgrgid_r(gid, &mut grp, buf.as_mut_ptr(), buf.len(), &mut result) };
        if rc != 0 || result.is_null() {
            return None;
        }
        // SAFETY: on success gr_name points at a NUL-terminated string inside buf.
        Some(unsafe { CStr::from_ptr(grp.gr_name) }.to_bytes().to_vec())
    })
}
