//! `arca verify --mirror`: check a copy of a repository without its key.
//!
//! Every repository file but `config` is named by the BLAKE3 of its bytes, so anyone can
//! tell whether a mirror holds exactly what was written: each file is hashed and compared
//! with its name. This finds bit rot, truncation, half-copied and misplaced files; it
//! cannot tell whether a file is missing, which needs the key (`arca -r MIRROR verify`).
//!
//! This is the one operation that reads a repository folder directly rather than through
//! [`Repository`](crate::repository::Repository): it has no key to open one with, and it
//! must see the names a repository reader skips (temporary and stray files).

use std::fs::{self, File};
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::storage::{FileType, is_valid_name};

/// Folders whose files are named by their hash. `locks/` is left out: locks come and go
/// and are not mirrored.
const HASHED: [FileType; 4] = [
    FileType::Key,
    FileType::Snapshot,
    FileType::Index,
    FileType::Pack,
];

/// Files of one kind found in the mirror.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct FileCount {
    pub files: u64,
    pub bytes: u64,
}

/// One thing wrong with a mirror.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct MirrorProblem {
    /// The file, relative to the mirror's root (`packs/ab/ab12…`).
    pub path: String,
    pub message: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct MirrorReport {
    pub config: bool,
    pub keys: FileCount,
    pub snapshots: FileCount,
    pub index: FileCount,
    pub packs: FileCount,
    /// Files hashed, and their bytes.
    pub files_checked: u64,
    pub bytes_checked: u64,
    /// Damage: a file that does not hash to its name, a stray or misplaced file, a missing
    /// `config` or folder, an unreadable file.
    pub problems: Vec<MirrorProblem>,
    /// Temporary files (`.tmp-*`) of writes that never finished: harmless, removable.
    pub temp_files: Vec<String>,
}

impl MirrorReport {
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// A file to hash, with what its name says its hash is.
struct Candidate {
    ty: FileType,
    path: PathBuf,
    shown: String,
    name: String,
}

/// Hashes every file of the repository copy at `dir` and checks it against its name.
pub fn check_mirror(dir: &Path) -> Result<MirrorReport> {
    let meta = fs::metadata(dir).at(dir)?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!("{} is not a folder", dir.display())));
    }
    let mut report = MirrorReport::default();
    match fs::metadata(dir.join("config")) {
        Ok(m) if m.is_file() => report.config = true,
        Ok(_) => problem(&mut report, "config", "is not a file"),
        Err(e) if e.kind() == ErrorKind::NotFound => problem(
            &mut report,
            "config",
            "missing: without it the copy is not a repository (copy `config` from the source)",
        ),
        Err(e) => problem(&mut report, "config", &e.to_string()),
    }

    let mut candidates = Vec::new();
    for ty in HASHED {
        let folder = dir.join(ty.dir());
        if !folder.is_dir() {
            problem(&mut report, ty.dir(), "folder missing");
            continue;
        }
        if ty == FileType::Pack {
            for entry in sorted_entries(&folder)? {
                let shown = format!("packs/{}", entry.name);
                if entry.is_dir && is_pack_folder(&entry.name) {
                    collect(ty, &entry.path, &shown, &mut candidates, &mut report)?;
                } else if entry.name.starts_with(".tmp-") {
                    report.temp_files.push(shown);
                } else {
                    problem(
                        &mut report,
                        &shown,
                        "not part of a repository (packs/ holds only the folders 00 … ff)",
                    );
                }
            }
        } else {
            collect(ty, &folder, ty.dir(), &mut candidates, &mut report)?;
        }
    }

    let hashed: Vec<(usize, Option<u64>, Option<String>)> = candidates
        .par_iter()
        .enumerate()
        .map(|(i, c)| match hash_file(&c.path) {
            Ok(None) => (i, None, None), // removed while we looked: not there
            Ok(Some((hash, size))) => {
                let wrong = (hash.to_hex().as_str() != c.name).then(|| {
                    "contents do not match the file name's hash (bit rot, truncation, an \
                     incomplete copy, or a renamed file): copy it again from the source"
                        .to_string()
                });
                (i, Some(size), wrong)
            }
            Err(e) => (i, None, Some(format!("cannot be read: {e}"))),
        })
        .collect();
    for (i, size, wrong) in hashed {
        let c = &candidates[i];
        if let Some(size) = size {
            report.files_checked += 1;
            report.bytes_checked += size;
            let count = match c.ty {
                FileType::Key => &mut report.keys,
                FileType::Snapshot => &mut report.snapshots,
                FileType::Index => &mut report.index,
                _ => &mut report.packs,
            };
            count.files += 1;
            count.bytes += size;
        }
        if let Some(message) = wrong {
            problem(&mut report, &c.shown, &message);
        }
    }
    if dir.join(FileType::Key.dir()).is_dir() && report.keys.files == 0 {
        problem(
            &mut report,
            "keys",
            "no key file: no password can open this copy",
        );
    }
    report.problems.sort();
    report.temp_files.sort();
    Ok(report)
}

fn problem(report: &mut MirrorReport, path: &str, message: &str) {
    report.problems.push(MirrorProblem {
        path: path.to_string(),
        message: message.to_string(),
    });
}

fn is_pack_folder(name: &str) -> bool {
    name.len() == 2 && is_valid_name(&name.repeat(32))
}

struct Entry {
    name: String,
    path: PathBuf,
    is_dir: bool,
}

fn sorted_entries(folder: &Path) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(folder).at(folder)? {
        let entry = entry.at(folder)?;
        let path = entry.path();
        let is_dir = entry.file_type().at(&path)?.is_dir();
        out.push(Entry {
            name: entry.file_name().to_string_lossy().into_owned(),
            path,
            is_dir,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Sorts the entries of one folder into files to hash, temporary files and strays.
fn collect(
    ty: FileType,
    folder: &Path,
    shown_folder: &str,
    candidates: &mut Vec<Candidate>,
    report: &mut MirrorReport,
) -> Result<()> {
    for entry in sorted_entries(folder)? {
        let shown = format!("{shown_folder}/{}", entry.name);
        if entry.name.starts_with(".tmp-") {
            report.temp_files.push(shown);
        } else if entry.is_dir {
            problem(report, &shown, "a folder where only files belong");
        } else if !is_valid_name(&entry.name) {
            problem(
                report,
                &shown,
                "not a repository file name (64 lowercase hex digits); arca ignores it",
            );
        } else if ty == FileType::Pack && !shown_folder.ends_with(&entry.name[..2]) {
            problem(
                report,
                &shown,
                &format!(
                    "in the wrong folder: belongs in packs/{}/",
                    &entry.name[..2]
                ),
            );
        } else {
            candidates.push(Candidate {
                ty,
                path: entry.path,
                shown,
                name: entry.name,
            });
        }
    }
    Ok(())
}

/// The BLAKE3 and size of a file, read in pieces; `None` if it no longer exists.
fn hash_file(path: &Path) -> std::io::Result<Option<(blake3::Hash, u64)>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Some((hasher.finalize(), size)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LocalStorage, Storage};

    fn name_of(bytes: &[u8]) -> String {
        blake3::hash(bytes).to_hex().to_string()
    }

    #[test]
    fn a_good_copy_is_clean_and_every_fault_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage.create().unwrap();
        storage.write(FileType::Config, "config", b"cfg").unwrap();
        for (ty, bytes) in [
            (FileType::Key, b"key".as_slice()),
            (FileType::Pack, b"pack one"),
            (FileType::Index, b"index"),
            (FileType::Snapshot, b"snapshot"),
        ] {
            storage.write(ty, &name_of(bytes), bytes).unwrap();
        }
        let report = check_mirror(dir.path()).unwrap();
        assert!(report.is_clean(), "{report:?}");
        assert_eq!(
            (report.files_checked, report.packs.files, report.packs.bytes),
            (4, 1, 8)
        );

        let pack = dir
            .path()
            .join(FileType::Pack.relative_path(&name_of(b"pack one")));
        fs::write(&pack, b"pack 0ne").unwrap();
        let stray = dir.path().join("index/notes.txt");
        fs::write(&stray, b"x").unwrap();
        fs::write(dir.path().join("snapshots/.tmp-0123"), b"x").unwrap();
        fs::remove_file(dir.path().join("config")).unwrap();
        let report = check_mirror(dir.path()).unwrap();
        let paths: Vec<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
        let pack_path = FileType::Pack.relative_path(&name_of(b"pack one"));
        assert_eq!(
            paths,
            ["config", "index/notes.txt", pack_path.as_str()],
            "{report:?}"
        );
        assert_eq!(report.temp_files, ["snapshots/.tmp-0123"]);
    }
}
