//! `arca ls`

use std::io::Write;

use anyhow::Result;
use clap::Args;

use arca::ops::ls;

use super::{EXIT_OK, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Snapshot id (or a unique prefix), or `latest`
    snapshot: String,
    /// Only entries at and below this path in the snapshot
    path: Option<String>,
    /// Show type, permissions, owner, size and time
    #[arg(short, long)]
    long: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: &LsArgs) -> Result<i32> {
    let repo = global.open()?;
    let (_, snapshot) = repo.find_snapshot(&args.snapshot, &args.filter.filter())?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    ls::list(
        &repo,
        &snapshot.tree,
        args.path.as_deref().unwrap_or(""),
        &mut |entry| {
            let result = if global.json {
                serde_json::to_writer(&mut out, &entry)
                    .map_err(std::io::Error::from)
                    .and_then(|()| writeln!(out))
            } else if args.long {
                let target = entry
                    .target
                    .as_deref()
                    .map(|t| format!(" -> {t}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{} {:>8} {:>8} {:>12} {} {}{}",
                    entry.permissions,
                    if entry.user.is_empty() {
                        entry.uid.to_string()
                    } else {
                        entry.user.clone()
                    },
                    if entry.group.is_empty() {
                        entry.gid.to_string()
                    } else {
                        entry.group.clone()
                    },
                    entry.size,
                    output::time(entry.mtime),
                    entry.path,
                    target
                )
            } else {
                writeln!(out, "{}", entry.path)
            };
            if let Err(e) = result {
                write_error.get_or_insert(e);
            }
        },
    )?;
    out.flush()?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    Ok(EXIT_OK)
}
