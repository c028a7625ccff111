//! `arca dump`

use anyhow::Result;
use clap::Args;

use arca::ops::dump;

use super::{EXIT_OK, FilterArgs, Global};

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Snapshot id (or a unique prefix), or `latest`
    snapshot: String,
    /// Path of the file in the snapshot
    path: String,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: &DumpArgs) -> Result<i32> {
    let repo = global.open()?;
    let (_, snapshot) = repo.find_snapshot(&args.snapshot, &args.filter.filter())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    dump::dump(&repo, &snapshot.tree, &args.path, &mut out)?;
    Ok(EXIT_OK)
}
