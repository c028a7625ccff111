//! `arca snapshots`

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use arca::format::snapshot::Snapshot;
use arca::id::SnapshotId;

use super::{EXIT_OK, EXIT_PROBLEMS, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Serialize)]
struct Listed<'a> {
    id: SnapshotId,
    short_id: String,
    #[serde(flatten)]
    snapshot: &'a Snapshot,
}

pub fn run(global: &Global, args: &SnapshotsArgs) -> Result<i32> {
    let repo = global.open()?;
    let filter = args.filter.filter();
    let (all, damaged) = repo.list_readable_snapshots()?;
    for (path, e) in &damaged {
        eprintln!("arca: warning: {path} cannot be read: {e}");
    }
    let snapshots: Vec<_> = all.into_iter().filter(|(_, s)| filter.matches(s)).collect();
    if global.json {
        let listed: Vec<Listed<'_>> = snapshots
            .iter()
            .map(|(id, s)| Listed {
                id: *id,
                short_id: id.short(),
                snapshot: s,
            })
            .collect();
        output::json(&listed)?;
        return Ok(if damaged.is_empty() {
            EXIT_OK
        } else {
            EXIT_PROBLEMS
        });
    }
    println!(
        "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  paths",
        "id", "time", "host", "tags", "added"
    );
    for (id, s) in &snapshots {
        println!(
            "{:<8}  {:<19}  {:<16}  {:<12}  {:>10}  {}",
            id.short(),
            output::time(s.time),
            s.host,
            s.tags.join(","),
            output::bytes(s.summary.bytes_added),
            s.paths.join(" ")
        );
    }
    if !global.quiet {
        println!("{} snapshot(s)", snapshots.len());
    }
    Ok(if damaged.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
