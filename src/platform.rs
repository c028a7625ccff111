//! Facts about the running system: host and user names, id-to-name lookups, the clock.

use std::collections::HashMap;
use std::ffi::CStr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::format::tree::Timestamp;

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
