//! Locks: several readers and writers that only add may share the repository; an
//! operation that removes anything (forget, prune, repair) needs it alone.
//!
//! A lock is a file in `locks/`. Files are written once, so a lock is refreshed by writing
//! a new file and removing the old one. A lock is stale when it has not been refreshed for
//! [`STALE_AFTER`], or when its process, on this host, is gone. A holder that cannot
//! refresh its lock marks it lost, and operations check that before committing anything.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Repository, check_header, lock, open_file, seal_file};
use crate::crypto::{Keys, ObjectKind};
use crate::error::{Error, Result};
use crate::format::FileKind;
use crate::format::lock::LockInfo;
use crate::id::IndexId;
use crate::storage::{FileType, Storage};

/// A lock not refreshed for this long is stale.
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);
/// How often a held lock is refreshed.
const REFRESH_EVERY: Duration = Duration::from_secs(5 * 60);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

/// A lock file as found in `locks/`.
#[derive(Clone, Debug)]
pub struct FoundLock {
    pub name: String,
    /// The lock's contents, or why they could not be read.
    pub info: std::result::Result<LockInfo, String>,
    pub stale: bool,
}

struct Held {
    storage: Arc<dyn Storage>,
    keys: Keys,
    info: Mutex<LockInfo>,
    name: Mutex<String>,
    lost: Mutex<Option<String>>,
}

/// A held lock; released when dropped.
pub struct Lock {
    held: Arc<Held>,
    stop: Option<Sender<()>>,
    refresher: Option<JoinHandle<()>>,
}

fn now_secs() -> i64 {
    crate::platform::now().secs
}

fn process_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether a lock no longer protects anything.
pub fn is_stale(info: &LockInfo, now: i64) -> bool {
    now.saturating_sub(info.time) > STALE_AFTER.as_secs() as i64
        || (info.host == crate::platform::hostname() && !process_alive(info.pid))
}

fn describe(info: &LockInfo, now: i64) -> String {
    format!(
        "{} lock held by `{}` (pid {} on {}, user {}, {}s ago)",
        if info.exclusive {
            "an exclusive"
        } else {
            "a shared"
        },
        info.command,
        info.pid,
        info.host,
        info.user,
        now.saturating_sub(info.time)
    )
}

impl Held {
    fn write(&self, info: &LockInfo) -> Result<String> {
        let bytes = seal_file(
            &self.keys,
            FileKind::Lock,
            ObjectKind::Lock,
            &info.encode_body(),
            None,
        );
        let name = IndexId::of_stored_bytes(&bytes).to_hex();
        self.storage.write(FileType::Lock, &name, &bytes)?;
        Ok(name)
    }

    /// Writes a fresh lock file and removes the previous one.
    fn refresh(&self) -> Result<()> {
        let old = lock(&self.name).clone();
        if self.storage.size(FileType::Lock, &old).is_err() {
            return Err(Error::invalid(
                "the lock file was removed by another process",
            ));
        }
        let mut info = lock(&self.info).clone();
        info.time = now_secs();
        let name = self.write(&info)?;
        *lock(&self.info) = info;
        *lock(&self.name) = name;
        self.storage.remove(FileType::Lock, &old)
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Lock({})", lock(&self.held.name))
    }
}

impl Lock {
    /// Fails if the lock was lost (it could not be refreshed): the caller must not commit.
    pub fn check(&self) -> Result<()> {
        match lock(&self.held.lost).as_ref() {
            Some(reason) => Err(Error::invalid(format!(
                "lost the repository lock: {reason}; nothing was committed"
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.refresher.take() {
            let _ = t.join();
        }
        let name = lock(&self.held.name).clone();
        let _ = self.held.storage.remove(FileType::Lock, &name);
    }
}

fn refresher(held: Arc<Held>, stop: Receiver<()>) {
    let mut last_ok = Instant::now();
    loop {
        match stop.recv_timeout(REFRESH_EVERY) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
        match held.refresh() {
            Ok(()) => last_ok = Instant::now(),
            Err(e) => {
                // Past the stale limit another process may have taken over: give up.
                if last_ok.elapsed() >= STALE_AFTER - REFRESH_EVERY
                    || e.to_string().contains("removed")
                {
                    lock(&held.lost).get_or_insert(e.to_string());
                }
            }
        }
    }
}

impl Repository {
    /// Every lock file, with its holder and whether it is stale.
    pub fn list_locks(&self) -> Result<Vec<FoundLock>> {
        let now = now_secs();
        let mut out = Vec::new();
        for file in self.storage.list(FileType::Lock)? {
            let path = FileType::Lock.relative_path(&file.name);
            let info = self
                .storage
                .read(FileType::Lock, &file.name)
                .and_then(|bytes| {
                    check_header(&bytes, FileKind::Lock, &path)?;
                    open_file(&self.keys, &bytes, FileKind::Lock, ObjectKind::Lock, &path)
                })
                .and_then(|body| {
                    LockInfo::decode_body(&body).map_err(|e| Error::corrupt(&path, e))
                });
            match info {
                Ok(info) => out.push(FoundLock {
                    stale: is_stale(&info, now),
                    name: file.name,
                    info: Ok(info),
                }),
                // Removed while we looked: it is released, not a conflict.
                Err(e) if e.is_not_found() => {}
                // An unreadable lock is kept as a conflict until `arca unlock` removes it,
                // unless it is older than the stale limit.
                Err(e) => out.push(FoundLock {
                    name: file.name,
                    info: Err(e.to_string()),
                    stale: false,
                }),
            }
        }
        Ok(out)
    }

    /// Removes stale locks (all locks with `all`); returns the names removed.
    pub fn unlock(&self, all: bool) -> Result<Vec<FoundLock>> {
        let mut removed = Vec::new();
        for found in self.list_locks()? {
            if all || found.stale {
                self.storage.remove(FileType::Lock, &found.name)?;
                removed.push(found);
            }
        }
        Ok(removed)
    }

    /// Takes a lock, waiting up to the repository's lock wait for conflicting ones to go.
    pub fn lock(&self, kind: LockKind, command: &str) -> Result<Lock> {
        let info = LockInfo {
            time: now_secs(),
            exclusive: kind == LockKind::Exclusive,
            pid: std::process::id(),
            host: crate::platform::hostname(),
            user: crate::platform::username(),
            command: command.to_string(),
        };
        let held = Arc::new(Held {
            storage: Arc::clone(&self.storage),
            keys: self.keys.clone(),
            info: Mutex::new(info.clone()),
            name: Mutex::new(String::new()),
            lost: Mutex::new(None),
        });
        let deadline = Instant::now() + self.lock_wait();
        let mut pause = Duration::from_millis(100);
        loop {
            let own = held.write(&info)?;
            let conflict = self.list_locks()?.into_iter().find(|l| {
                l.name != own
                    && !l.stale
                    && match &l.info {
                        Ok(other) => kind == LockKind::Exclusive || other.exclusive,
                        Err(_) => true,
                    }
            });
            let Some(conflict) = conflict else {
                *lock(&held.name) = own;
                let (stop, stopped) = channel();
                let for_thread = Arc::clone(&held);
                let refresher = std::thread::Builder::new()
                    .name("arca-lock-refresh".into())
                    .spawn(move || refresher(for_thread, stopped))
                    .map_err(|e| Error::io("lock refresh thread", e))?;
                return Ok(Lock {
                    held,
                    stop: Some(stop),
                    refresher: Some(refresher),
                });
            };
            self.storage.remove(FileType::Lock, &own)?;
            let now = Instant::now();
            if now >= deadline {
                let holder = match &conflict.info {
                    Ok(other) => describe(other, now_secs()),
                    Err(e) => format!("an unreadable lock file locks/{} ({e})", conflict.name),
                };
                return Err(Error::Locked(format!(
                    "the repository is in use: {holder}. Wait for it (--retry-lock DURATION), or if that \
                     process is gone, remove stale locks with `arca unlock`"
                )));
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::testing::test_repo;

    #[test]
    fn shared_locks_coexist_and_exclusive_ones_do_not() {
        let (repo, _storage, _cache) = test_repo();
        let a = repo.lock(LockKind::Shared, "backup").unwrap();
        let b = repo.lock(LockKind::Shared, "backup").unwrap();
        let err = repo.lock(LockKind::Exclusive, "prune").unwrap_err();
        assert!(
            err.to_string().contains("a shared lock held by `backup`"),
            "{err}"
        );
        drop((a, b));
        let x = repo.lock(LockKind::Exclusive, "prune").unwrap();
        let err = repo.lock(LockKind::Shared, "backup").unwrap_err();
        assert!(
            err.to_string().contains("exclusive lock held by `prune`"),
            "{err}"
        );
        x.check().unwrap();
        drop(x);
        assert!(repo.list_locks().unwrap().is_empty());
    }

    #[test]
    fn a_lock_of_a_dead_process_is_stale_and_unlock_removes_it() {
        let (repo, storage, _cache) = test_repo();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = child.id();
        child.wait().unwrap();
        let held = Held {
            storage: storage.clone(),
            keys: repo.keys.clone(),
            info: Mutex::new(LockInfo {
                time: now_secs(),
                exclusive: true,
                pid: dead_pid,
                host: crate::platform::hostname(),
                user: "u".into(),
                command: "prune".into(),
            }),
            name: Mutex::new(String::new()),
            lost: Mutex::new(None),
        };
        let info = lock(&held.info).clone();
        held.write(&info).unwrap();
        let old = LockInfo {
            time: now_secs() - 31 * 60,
            pid: std::process::id(),
            ..info.clone()
        };
        held.write(&old).unwrap();
        assert!(repo.list_locks().unwrap().iter().all(|l| l.stale));
        // Stale locks do not block.
        drop(repo.lock(LockKind::Exclusive, "prune").unwrap());
        assert_eq!(repo.unlock(false).unwrap().len(), 2);
        assert!(repo.list_locks().unwrap().is_empty());
    }

    #[test]
    fn a_removed_lock_is_lost_and_check_fails() {
        let (repo, _storage, _cache) = test_repo();
        let l = repo.lock(LockKind::Shared, "backup").unwrap();
        repo.unlock(true).unwrap();
        assert!(l.held.refresh().is_err());
        lock(&l.held.lost).get_or_insert("the lock file was removed by another process".into());
        assert!(
            l.check()
                .unwrap_err()
                .to_string()
                .contains("lost the repository lock")
        );
    }
}
