//! `arca init`

use anyhow::Result;
use clap::Args;

use arca::crypto::KdfParams;
use arca::repository::{InitOptions, Repository};

use super::{EXIT_OK, Global, output, password};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// argon2id memory cost in KiB (default 65536 = 64 MiB)
    #[arg(long, value_name = "KIB", default_value_t = KdfParams::DEFAULT.memory_kib)]
    kdf_memory: u32,
    /// argon2id passes
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.iterations)]
    kdf_iterations: u32,
    /// argon2id lanes
    #[arg(long, value_name = "N", default_value_t = KdfParams::DEFAULT.parallelism)]
    kdf_parallelism: u32,
    /// zstd compression level (1-22; negative levels are faster)
    #[arg(
        long,
        value_name = "LEVEL",
        default_value_t = 3,
        allow_negative_numbers = true
    )]
    compression: i32,
    /// Target pack size in MiB
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pack_size: u32,
}

pub fn run(global: &Global, args: &InitArgs) -> Result<i32> {
    let storage = global.storage()?;
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: args.kdf_memory,
            iterations: args.kdf_iterations,
            parallelism: args.kdf_parallelism,
        },
        pack_size: args.pack_size.saturating_mul(1 << 20),
        compression_level: args.compression,
        ..InitOptions::default()
    };
    if global.repo_path()?.join("config").exists() {
        return Err(
            arca::Error::RepositoryExists(global.repo_path()?.display().to_string()).into(),
        );
    }
    let password = password::get(global, true)?;
    let repo = Repository::init(storage, password.as_bytes(), &options, &global.cache_dir)?;
    if global.json {
        output::json(&serde_json::json!({
            "repository": repo.location(),
            "id": hex::encode(repo.config().repo_id),
            "key": repo.key_id(),
            "config": repo.config(),
        }))?;
    } else if !global.quiet {
        println!(
            "created repository {} at {}",
            &hex::encode(repo.config().repo_id)[..8],
            repo.location()
        );
        println!("keep the password safe: without it nothing in the repository can be read");
    }
    Ok(EXIT_OK)
}
