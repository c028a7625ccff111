//! Password-based key derivation (argon2id) with parameter bounds checked before it runs.

use serde::Serialize;

use super::KEY_LEN;
use crate::error::{Error, Result};

/// argon2id cost parameters, as stored in a key file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct KdfParams {
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl KdfParams {
    /// The default for new keys, RFC 9106's second recommended setting: 64 MiB, 3 passes,
    /// 4 lanes (computed in parallel: about 0.1 s on two cores).
    pub const DEFAULT: KdfParams = KdfParams {
        memory_kib: 64 * 1024,
        iterations: 3,
        parallelism: 4,
    };
    /// The cheapest parameters accepted; for tests only.
    pub const MINIMAL: KdfParams = KdfParams {
        memory_kib: 8,
        iterations: 1,
        parallelism: 1,
    };

    /// Largest accepted memory cost (4 GiB): a hostile key file must not exhaust memory.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// Largest accepted number of passes.
    pub const MAX_ITERATIONS: u32 = 100;
    /// Largest accepted number of lanes.
    pub const MAX_PARALLELISM: u32 = 64;

    /// Rejects parameters outside the accepted bounds, before any memory is spent on them.
    pub fn check(&self) -> Result<()> {
        let ok = (1..=Self::MAX_PARALLELISM).contains(&self.parallelism)
            && (1..=Self::MAX_ITERATIONS).contains(&self.iterations)
            && self.memory_kib >= 8 * self.parallelism
            && self.memory_kib <= Self::MAX_MEMORY_KIB;
        if ok {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "argon2id parameters out of bounds (memory {} KiB, {} passes, {} lanes; accepted: \
                 memory 8×lanes..{} KiB, passes 1..{}, lanes 1..{})",
                self.memory_kib,
                self.iterations,
                self.parallelism,
                Self::MAX_MEMORY_KIB,
                Self::MAX_ITERATIONS,
                Self::MAX_PARALLELISM
            )))
        }
    }
}

/// Derives the key that wraps the master key in a key file.
pub fn derive_wrapping_key(
    password: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<[u8; KEY_LEN]> {
    params.check()?;
    let argon_params = argon2::Params::new(
        params.memory_kib,
        params.iterations,
        params.parallelism,
        Some(KEY_LEN),
    )
    .map_err(|e| Error::invalid(format!("argon2id parameters rejected: {e}")))?;
    let mut memory = WorkingMemory::new(argon_params.block_count())?;
    let argon = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon_params,
    );
    let mut out = [0u8; KEY_LEN];
    let hashed = argon.hash_password_into_with_memory(password, salt, &mut out, &mut memory);
    release_in_background(memory);
    hashed.map_err(|e| Error::invalid(format!("argon2id failed: {e}")))?;
    Ok(out)
}

/// Unmaps the working memory on a thread of its own: handing 64 MiB back to the kernel
/// takes it 10 to 20 ms on one core, during which the command can already get on with its
/// work. Should no thread start, the memory is unmapped here, with the closure holding it.
fn release_in_background(memory: WorkingMemory) {
    let _ = std::thread::Builder::new()
        .name("arca-kdf-release".into())
        .spawn(move || drop(memory));
}

/// argon2id's working memory, mapped fresh from the kernel. Its pages are zero until first
/// touched, so they are faulted in by the lanes as they fill them, on every core; memory
/// from the allocator would be cleared first, page by page on one core, which took longer
/// than the lanes' first pass. Ordinary pages, never huge ones: on a virtual machine that
/// hands free memory back to its host, huge pages idle for a few seconds have gone back,
/// and faulting 64 MiB of them in again cost more than the whole derivation's saving
/// (`arca snapshots` after a pause of 6 s: median 0.116 s against 0.147 s with huge pages).
struct WorkingMemory {
    map: memmap2::MmapMut,
    blocks: usize,
}

impl WorkingMemory {
    fn new(blocks: usize) -> Result<WorkingMemory> {
        let map = memmap2::MmapMut::map_anon(blocks * argon2::Block::SIZE).map_err(|e| {
            Error::invalid(format!(
                "cannot map {} KiB for argon2id: {e}",
                blocks * argon2::Block::SIZE / 1024
            ))
        })?;
        // Also where the system makes huge pages by default.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::NoHugePage);
        Ok(WorkingMemory { map, blocks })
    }
}

impl AsMut<[argon2::Block]> for WorkingMemory {
    fn as_mut(&mut self) -> &mut [argon2::Block] {
        // SAFETY: the mapping is page-aligned (a Block needs 64 bytes), exactly `blocks`
        // blocks long, zero-filled by the kernel, and borrowed mutably for the slice's
        // lifetime; a Block is an array of u64, valid for any bytes.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().cast(), self.blocks) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden vector: argon2id with the minimal parameters.
    #[test]
    fn kdf_golden_vector() {
        let key = derive_wrapping_key(b"correct horse", &[9u8; 32], &KdfParams::MINIMAL).unwrap();
        assert_eq!(
            hex::encode(key),
            "d4074c332a7df601cc035c634566a232e944f64cc58bb435d1fbb36a3598dcda"
        );
    }

    /// Golden vector for the default parameters, whose four lanes are computed in parallel.
    #[test]
    fn kdf_default_parameters_golden_vector() {
        let key = derive_wrapping_key(b"correct horse", &[9u8; 32], &KdfParams::DEFAULT).unwrap();
        assert_eq!(
            hex::encode(key),
            "7234ac1c93e9f2de230a56d054a609496a0cc563db6f903aa38a7490471fbe2e"
        );
    }

    #[test]
    fn out_of_bounds_parameters_are_refused_before_running() {
        for bad in [
            KdfParams {
                memory_kib: u32::MAX,
                iterations: 1,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 0,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 1_000_000,
                parallelism: 1,
            },
            KdfParams {
                memory_kib: 64,
                iterations: 1,
                parallelism: 0,
            },
            KdfParams {
                memory_kib: 4,
                iterations: 1,
                parallelism: 1,
            },
        ] {
            let err = derive_wrapping_key(b"pw", &[0; 32], &bad).unwrap_err();
            assert!(err.to_string().contains("out of bounds"), "{err}");
        }
    }
}
