//! `arca unlock`

use anyhow::Result;
use clap::Args;

use super::{EXIT_OK, Global, output};

#[derive(Args, Debug)]
pub struct UnlockArgs {
    /// Remove every lock, not only stale ones (only when no arca process uses the repository)
    #[arg(long)]
    all: bool,
}

pub fn run(global: &Global, args: &UnlockArgs) -> Result<i32> {
    let repo = global.open()?;
    let removed = repo.unlock(args.all)?;
    if global.json {
        let names: Vec<&str> = removed.iter().map(|l| l.name.as_str()).collect();
        output::json(&serde_json::json!({ "removed": names }))?;
    } else if !global.quiet {
        for l in &removed {
            match &l.info {
                Ok(info) => println!(
                    "removed lock of `{}` (pid {} on {}, user {})",
                    info.command, info.pid, info.host, info.user
                ),
                Err(e) => println!("removed unreadable lock locks/{} ({e})", l.name),
            }
        }
        println!("{} lock(s) removed", removed.len());
    }
    Ok(EXIT_OK)
}
