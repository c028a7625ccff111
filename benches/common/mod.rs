//! Helpers shared by the benches: input sizes, data, and throwaway repositories.
//!
//! `cargo test --all-targets` runs every bench once, as a test, without `--bench`: inputs
//! are then small, so that it takes seconds. `cargo bench` gets the full sizes.

// Each bench binary uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arca::crypto::KdfParams;
use arca::repository::{InitOptions, Repository};
use arca::storage::LocalStorage;

/// Whether this is a measuring run (`cargo bench`), not a test run of the benches.
pub fn full_size() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// `full` under `cargo bench`, `quick` when the benches run as tests.
pub fn size<T>(full: T, quick: T) -> T {
    if full_size() { full } else { quick }
}

/// `len` bytes that do not compress, the same for the same `seed`.
pub fn random_bytes(seed: &[u8], len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    blake3::Hasher::new()
        .update(seed)
        .finalize_xof()
        .fill(&mut data);
    data
}

/// A new repository on local disk under `dir` (its cache too), with the cheapest key
/// derivation: the benches measure storing and reading, not unlocking.
pub fn local_repository(dir: &Path, options: InitOptions) -> Repository {
    let options = InitOptions {
        kdf: KdfParams::MINIMAL,
        ..options
    };
    let storage = Arc::new(LocalStorage::new(dir.join("repo")));
    Repository::init(storage, b"bench", &options, &dir.join("cache")).expect("init repository")
}

/// The cargo target folder this bench was built into (`<target>/<profile>/deps/<bench>`),
/// where inputs too costly to build on every run are kept.
pub fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            let deps = exe.parent()?;
            (deps.file_name()? == "deps").then(|| deps.parent()?.parent().map(Path::to_path_buf))?
        })
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}
