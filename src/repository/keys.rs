//! Key files: wrapping the master key under passwords, unwrapping it, and managing the set
//! of keys (list, add, remove, change a password) without touching any other file.

use serde::Serialize;

use super::{LockKind, Repository};
use crate::crypto::{self, KdfParams, Keys, ObjectKind};
use crate::error::{Error, Result};
use crate::format::FileKind;
use crate::format::keyfile::KeyFile;
use crate::id::KeyId;
use crate::storage::{FileType, Storage};

/// One key file as listed: who made it, when, and what its password costs to try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyEntry {
    pub id: KeyId,
    /// Creation time, seconds since the Unix epoch.
    pub created: i64,
    pub host: String,
    pub user: String,
    pub kdf: KdfParams,
    /// Whether this is the key whose password opened the repository.
    pub in_use: bool,
}

/// A key file that cannot be read: its path in the repository, and why.
pub type UnreadableKey = (String, Error);

/// Writes a new key file wrapping `keys` under `password`; returns its id.
pub fn write_key_file(
    storage: &dyn Storage,
    keys: &Keys,
    password: &[u8],
    kdf: KdfParams,
) -> Result<KeyId> {
    let mut key = KeyFile {
        kdf,
        salt: crypto::random_bytes(),
        created: crate::platform::now().secs,
        host: crate::platform::hostname(),
        user: crate::platform::username(),
        sealed_master: Vec::new(),
    };
    let wrapping = crypto::derive_wrapping_key(password, &key.salt, &kdf)?;
    let ad = wrapping_ad(&key);
    key.sealed_master = crypto::seal(&wrapping, &ad, keys.master());
    let bytes = key.encode();
    let id = KeyId::of_stored_bytes(&bytes);
    storage.write(FileType::Key, &id.to_hex(), &bytes)?;
    Ok(id)
}

fn wrapping_ad(key: &KeyFile) -> Vec<u8> {
    let mut ad = crypto::associated_data(ObjectKind::MasterKey, None);
    ad.extend_from_slice(&key.encode_unsealed_part());
    ad
}

/// Finds the key file that `password` opens and returns the master keys.
pub fn unlock(storage: &dyn Storage, password: &[u8]) -> Result<(Keys, KeyId)> {
    let files = storage.list(FileType::Key)?;
    if files.is_empty() {
        return Err(Error::corrupt("keys/", "the repository has no key files"));
    }
    let mut damaged = None;
    for file in files {
        let key = match read_checked(storage, &file.name) {
            Ok(key) => key,
            Err(e) => {
                damaged.get_or_insert(e);
                continue;
            }
        };
        if let Some(keys) = try_open(&key, password, &file.name)? {
            return Ok((keys, file.name.parse()?));
        }
    }
    Err(match damaged {
        None => Error::WrongPassword,
        // A key of a newer format may be the one this password opens.
        Some(e @ Error::UnsupportedVersion { .. }) => e,
        Some(e) => Error::invalid(format!("wrong password, or {e}")),
    })
}

/// The master keys if `password` opens `key`, `None` if it does not.
fn try_open(key: &KeyFile, password: &[u8], file: &str) -> Result<Option<Keys>> {
    let wrapping = crypto::derive_wrapping_key(password, &key.salt, &key.kdf)?;
    let Some(master) = crypto::open(&wrapping, &wrapping_ad(key), &key.sealed_master) else {
        return Ok(None);
    };
    let master: [u8; 32] = master.try_into().map_err(|_| {
        Error::corrupt(
            FileType::Key.relative_path(file),
            "master key has the wrong length",
        )
    })?;
    Ok(Some(Keys::from_master(master)))
}

/// Reads and decodes a key file, and checks its KDF parameters, so that a key file this
/// returns can be tried with a password.
fn read_checked(storage: &dyn Storage, file: &str) -> Result<KeyFile> {
    let name = FileType::Key.relative_path(file);
    let bytes = storage.read(FileType::Key, file)?;
    let body = super::check_header(&bytes, FileKind::Key, &name)?;
    let key = KeyFile::decode_body(body).map_err(|e| Error::corrupt(&name, e))?;
    // Bounds first: a hostile key file must not make us allocate gigabytes.
    key.kdf
        .check()
        .map_err(|e| Error::corrupt(&name, e.to_string()))?;
    Ok(key)
}

fn refuse_empty(password: &[u8]) -> Result<()> {
    if password.is_empty() {
        return Err(Error::invalid(
            "an empty password is not allowed: it would protect nothing",
        ));
    }
    Ok(())
}

impl Repository {
    /// Every key file, in id order; fails if any of them cannot be read.
    pub fn list_keys(&self) -> Result<Vec<KeyEntry>> {
        let (keys, mut damaged) = self.list_readable_keys()?;
        match damaged.drain(..).next() {
            Some((_, e)) => Err(e),
            None => Ok(keys),
        }
    }

    /// Every readable key file, in id order, and the key files that cannot be read (with
    /// their paths), so a listing still shows the good keys when one is damaged.
    pub fn list_readable_keys(&self) -> Result<(Vec<KeyEntry>, Vec<UnreadableKey>)> {
        let mut files = self.storage.list(FileType::Key)?;
        files.sort_by(|a, b| a.name.cmp(&b.name));
        let mut good = Vec::with_capacity(files.len());
        let mut damaged = Vec::new();
        for file in files {
            let key = match read_checked(self.storage.as_ref(), &file.name) {
                Ok(key) => key,
                // Removed while we looked: simply not there.
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    damaged.push((FileType::Key.relative_path(&file.name), e));
                    continue;
                }
            };
            let id: KeyId = file.name.parse()?;
            good.push(KeyEntry {
                id,
                created: key.created,
                host: key.host,
                user: key.user,
                kdf: key.kdf,
                in_use: id == self.key_id,
            });
        }
        Ok((good, damaged))
    }

    /// Adds a key: a new key file wrapping the same master key under `password`. No other
    /// file is written, so every snapshot opens with either password.
    pub fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        refuse_empty(password)?;
        kdf.check()?;
        let lock = self.lock(LockKind::Exclusive, "key add")?;
        lock.check()?;
        write_key_file(self.storage.as_ref(), &self.keys, password, kdf)
    }

    /// Removes the key named by `id_or_prefix` (a full id or a unique prefix). Never the
    /// last key that can be read, and never the key in use unless `force`.
    pub fn remove_key(&self, id_or_prefix: &str, force: bool) -> Result<KeyId> {
        let lock = self.lock(LockKind::Exclusive, "key remove")?;
        let id = self.resolve_key(id_or_prefix)?;
        // First: --force cannot help with this one.
        self.check_another_key_remains(id)?;
        if id == self.key_id && !force {
            return Err(Error::invalid(format!(
                "key {} is the key in use: its password opened the repository. Open the \
                 repository with another key's password to remove it, or add --force",
                id.short()
            )));
        }
        lock.check()?;
        self.storage.remove(FileType::Key, &id.to_hex())?;
        Ok(id)
    }

    /// Changes the password of the key in use: adds a key under `new_password`, checks that
    /// it opens, then removes the key in use. A crash in between leaves both keys, never
    /// none. No data is rewritten: the master key, and so every other file, stays the same.
    /// Returns the new key's id, which becomes the key in use.
    pub fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<KeyId> {
        refuse_empty(new_password)?;
        kdf.check()?;
        let lock = self.lock(LockKind::Exclusive, "key passwd")?;
        lock.check()?;
        let old = self.key_id;
        let new = write_key_file(self.storage.as_ref(), &self.keys, new_password, kdf)?;
        // Read the new key back before the old one goes: it must be the way in from now on.
        let stored = read_checked(self.storage.as_ref(), &new.to_hex())?;
        let opened = try_open(&stored, new_password, &new.to_hex())?;
        if opened.map(|k| k.master() == self.keys.master()) != Some(true) {
            return Err(Error::corrupt(
                FileType::Key.relative_path(&new.to_hex()),
                "the new key file does not open with the new password as written; the old \
                 key was kept",
            ));
        }
        self.key_id = new;
        lock.check()?;
        match self.storage.remove(FileType::Key, &old.to_hex()) {
            Ok(()) => Ok(new),
            // Already gone (removed by another process before we locked): nothing to do.
            Err(e) if e.is_not_found() => Ok(new),
            Err(e) => Err(Error::invalid(format!(
                "the new key {} was added, but the old key {} could not be removed ({e}); \
                 the old password still opens the repository: remove it with `arca key remove {}`",
                new.short(),
                old.short(),
                old.short()
            ))),
        }
    }

    /// Resolves a full key id or a unique prefix of one to a key file that exists.
    fn resolve_key(&self, spec: &str) -> Result<KeyId> {
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::invalid(format!(
                "{spec:?} is not a key id (hex digits, as shown by `arca key list`)"
            )));
        }
        let spec = spec.to_ascii_lowercase();
        let matches: Vec<KeyId> = self
            .storage
            .list(FileType::Key)?
            .iter()
            .filter(|f| f.name.starts_with(&spec))
            .filter_map(|f| f.name.parse().ok())
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::NotFound(format!(
                "key {spec} (`arca key list` shows the keys)"
            ))),
            _ => Err(Error::invalid(format!(
                "key id prefix {spec} is ambiguous ({} keys match): give more digits",
                matches.len()
            ))),
        }
    }

    /// Fails unless a key file other than `removing` can be read: removing the last one
    /// would leave a repository that no password opens.
    fn check_another_key_remains(&self, removing: KeyId) -> Result<()> {
        let others: Vec<String> = self
            .storage
            .list(FileType::Key)?
            .into_iter()
            .map(|f| f.name)
            .filter(|name| *name != removing.to_hex())
            .collect();
        if others.is_empty() {
            return Err(Error::invalid(format!(
                "key {} is the repository's last key: without it no password opens the \
                 repository. Add another key first (`arca key add`)",
                removing.short()
            )));
        }
        let mut first_problem = None;
        for name in &others {
            match read_checked(self.storage.as_ref(), name) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    first_problem.get_or_insert(e);
                }
            }
        }
        Err(Error::invalid(format!(
            "key {} is the repository's last readable key: every other key file is damaged \
             ({}). Add another key first (`arca key add`)",
            removing.short(),
            first_problem.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::repository::testing::test_repo;
    use crate::storage::MemoryStorage;

    const CHEAP: KdfParams = KdfParams::MINIMAL;

    fn open(storage: &Arc<MemoryStorage>, password: &[u8]) -> Result<Repository> {
        let cache = tempfile::tempdir().unwrap();
        Repository::open(storage.clone(), password, cache.path())
    }

    /// Every file but the key files and locks, to show that key operations write no data.
    fn non_key_files(storage: &MemoryStorage) -> Vec<(FileType, String, Vec<u8>)> {
        let mut out = Vec::new();
        for ty in FileType::ALL {
            if matches!(ty, FileType::Key | FileType::Lock) {
                continue;
            }
            for f in storage.list(ty).unwrap() {
                let bytes = storage.read(ty, &f.name).unwrap();
                out.push((ty, f.name, bytes));
            }
        }
        out
    }

    #[test]
    fn an_added_key_opens_the_same_repository() {
        let (repo, storage, _cache) = test_repo();
        let before = non_key_files(&storage);
        let added = repo.add_key(b"second", CHEAP).unwrap();
        assert_ne!(added, repo.key_id());
        assert_eq!(non_key_files(&storage), before);
        assert!(storage.list(FileType::Lock).unwrap().is_empty());

        let by_second = open(&storage, b"second").unwrap();
        assert_eq!(by_second.key_id(), added);
        assert_eq!(by_second.keys().master(), repo.keys().master());
        assert_eq!(open(&storage, b"pw").unwrap().key_id(), repo.key_id());

        let listed = by_second.list_keys().unwrap();
        assert_eq!(listed.len(), 2);
        let in_use: Vec<KeyId> = listed.iter().filter(|k| k.in_use).map(|k| k.id).collect();
        assert_eq!(in_use, vec![added]);
        let entry = listed.iter().find(|k| k.id == added).unwrap();
        assert_eq!(entry.kdf, CHEAP);
        assert_eq!(entry.host, crate::platform::hostname());
        assert!((crate::platform::now().secs - entry.created).abs() < 60);
    }

    #[test]
    fn empty_passwords_and_bad_parameters_are_refused() {
        let (repo, storage, _cache) = test_repo();
        assert!(repo.add_key(b"", CHEAP).is_err());
        let bad = KdfParams {
            memory_kib: 1,
            ..CHEAP
        };
        let err = repo.add_key(b"x", bad).unwrap_err();
        assert!(err.to_string().contains("out of bounds"), "{err}");
        assert_eq!(storage.list(FileType::Key).unwrap().len(), 1);
    }

    #[test]
    fn the_last_key_is_never_removed() {
        let (repo, storage, _cache) = test_repo();
        let only = repo.key_id();
        for force in [false, true] {
            let err = repo.remove_key(&only.to_hex(), force).unwrap_err();
            assert!(err.to_string().contains("last key"), "{err}");
        }
        assert_eq!(storage.list(FileType::Key).unwrap().len(), 1);
        assert!(storage.list(FileType::Lock).unwrap().is_empty());
    }

    #[test]
    fn the_key_in_use_needs_force_and_another_key_goes_by_prefix() {
        let (repo, storage, _cache) = test_repo();
        let other = repo.add_key(b"second", CHEAP).unwrap();
        let err = repo.remove_key(&repo.key_id().short(), false).unwrap_err();
        assert!(
            err.to_string().contains("in use") && err.to_string().contains("--force"),
            "{err}"
        );

        assert_eq!(
            repo.remove_key(&other.to_hex()[..12], false).unwrap(),
            other
        );
        assert!(matches!(
            open(&storage, b"second"),
            Err(Error::WrongPassword)
        ));

        let other = repo.add_key(b"second", CHEAP).unwrap();
        let first = repo.key_id();
        assert_eq!(
            repo.remove_key(&first.short().to_uppercase(), true)
                .unwrap(),
            first
        );
        assert!(matches!(open(&storage, b"pw"), Err(Error::WrongPassword)));
        assert_eq!(open(&storage, b"second").unwrap().key_id(), other);
        assert!(repo.list_keys().unwrap().iter().all(|k| !k.in_use));
    }

    #[test]
    fn key_prefixes_must_name_exactly_one_key() {
        let (repo, storage, _cache) = test_repo();
        let bytes = storage
            .read(FileType::Key, &repo.key_id().to_hex())
            .unwrap();
        // Copies under chosen names: resolution goes by name alone.
        for last in ["1", "2"] {
            let name = format!("{}{last}", "ab".repeat(31) + "c");
            storage.write(FileType::Key, &name, &bytes).unwrap();
        }
        let err = repo.remove_key("abab", false).unwrap_err();
        assert!(err.to_string().contains("ambiguous"), "{err}");
        let err = repo.remove_key(&"f".repeat(64), false).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let err = repo.remove_key("xyz", false).unwrap_err();
        assert!(err.to_string().contains("not a key id"), "{err}");
        let err = repo.remove_key("", false).unwrap_err();
        assert!(err.to_string().contains("not a key id"), "{err}");
        assert_eq!(storage.list(FileType::Key).unwrap().len(), 3);
    }

    #[test]
    fn a_key_is_not_removed_when_every_other_key_is_damaged() {
        let (repo, storage, _cache) = test_repo();
        let other = repo.add_key(b"second", CHEAP).unwrap();
        storage.corrupt(FileType::Key, &other.to_hex(), |b| b.truncate(20));
        let err = repo.remove_key(&repo.key_id().to_hex(), true).unwrap_err();
        assert!(err.to_string().contains("last readable key"), "{err}");

        let (good, damaged) = repo.list_readable_keys().unwrap();
        assert_eq!(
            good.iter().map(|k| k.id).collect::<Vec<_>>(),
            vec![repo.key_id()]
        );
        assert_eq!(damaged.len(), 1);
        assert_eq!(damaged[0].0, format!("keys/{other}"));
        assert!(repo.list_keys().is_err());
        // The damaged key itself may go.
        assert_eq!(repo.remove_key(&other.to_hex(), false).unwrap(), other);
    }

    #[test]
    fn changing_the_password_replaces_the_key_and_rewrites_no_data() {
        let (mut repo, storage, _cache) = test_repo();
        let saver = repo.saver().unwrap();
        saver
            .save(crate::format::pack::BlobKind::Data, b"some data")
            .unwrap();
        saver.finish().unwrap();
        let before = non_key_files(&storage);
        let old = repo.key_id();

        let new = repo.change_password(b"new", CHEAP).unwrap();
        assert_eq!(repo.key_id(), new);
        assert_eq!(non_key_files(&storage), before);
        let keys: Vec<String> = storage
            .list(FileType::Key)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(keys, vec![new.to_hex()]);
        assert!(storage.list(FileType::Lock).unwrap().is_empty());
        assert!(matches!(open(&storage, b"pw"), Err(Error::WrongPassword)));
        let reopened = open(&storage, b"new").unwrap();
        assert_eq!(reopened.keys().master(), repo.keys().master());
        assert_ne!(old, new);
        assert!(repo.list_keys().unwrap()[0].in_use);
    }

    #[test]
    fn key_changes_wait_for_other_processes_locks() {
        let (mut repo, storage, _cache) = test_repo();
        let other = open(&storage, b"pw").unwrap();
        let held = other.lock(LockKind::Shared, "backup").unwrap();
        let err = repo.add_key(b"second", CHEAP).unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        assert!(repo.change_password(b"new", CHEAP).is_err());
        assert_eq!(storage.list(FileType::Key).unwrap().len(), 1);
        drop(held);
        repo.add_key(b"second", CHEAP).unwrap();
    }
}
