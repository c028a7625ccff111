//! Key files: wrapping the master key under passwords, and unwrapping it.

use crate::crypto::{self, KdfParams, Keys, ObjectKind};
use crate::error::{Error, Result};
use crate::format::FileKind;
use crate::format::keyfile::KeyFile;
use crate::id::KeyId;
use crate::storage::{FileType, Storage};

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
        let name = FileType::Key.relative_path(&file.name);
        let key = match read_key_file(storage, &file.name, &name) {
            Ok(key) => key,
            Err(e) => {
                damaged.get_or_insert(e);
                continue;
            }
        };
        // Bounds first: a hostile key file must not make us allocate gigabytes.
        if let Err(e) = key.kdf.check() {
            damaged.get_or_insert(Error::corrupt(name, e.to_string()));
            continue;
        }
        let wrapping = crypto::derive_wrapping_key(password, &key.salt, &key.kdf)?;
        if let Some(master) = crypto::open(&wrapping, &wrapping_ad(&key), &key.sealed_master) {
            let master: [u8; 32] = master
                .try_into()
                .map_err(|_| Error::corrupt(&name, "master key has the wrong length"))?;
            return Ok((Keys::from_master(master), file.name.parse()?));
        }
    }
    Err(match damaged {
        None => Error::WrongPassword,
        // A key of a newer format may be the one this password opens.
        Some(e @ Error::UnsupportedVersion { .. }) => e,
        Some(e) => Error::invalid(format!("wrong password, or {e}")),
    })
}

fn read_key_file(storage: &dyn Storage, file: &str, name: &str) -> Result<KeyFile> {
    let bytes = storage.read(FileType::Key, file)?;
    let body = super::check_header(&bytes, FileKind::Key, name)?;
    KeyFile::decode_body(body).map_err(|e| Error::corrupt(name, e))
}
