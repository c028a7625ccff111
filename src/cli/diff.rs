//! `arca diff`

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use arca::format::tree::NodeKind;
use arca::id::SnapshotId;
use arca::ops::diff::{self, Change, DiffSummary};

use super::{EXIT_OK, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// The earlier snapshot: an id (or a unique prefix), or `latest`
    old: String,
    /// The later snapshot: an id (or a unique prefix), or `latest`
    new: String,
    #[command(flatten)]
    filter: FilterArgs,
}

#[derive(Serialize)]
struct Report<'a> {
    old: SnapshotId,
    new: SnapshotId,
    changes: &'a [Change],
    summary: &'a DiffSummary,
}

pub fn run(global: &Global, args: &DiffArgs) -> Result<i32> {
    let repo = global.open()?;
    let filter = args.filter.filter();
    let (old_id, old) = repo.find_snapshot(&args.old, &filter)?;
    let (new_id, new) = repo.find_snapshot(&args.new, &filter)?;

    if global.json {
        let mut changes = Vec::new();
        let summary = diff::diff(&repo, &old.tree, &new.tree, &mut |c| {
            changes.push(c);
            Ok(())
        })?;
        output::json(&Report {
            old: old_id,
            new: new_id,
            changes: &changes,
            summary: &summary,
        })?;
        return Ok(EXIT_OK);
    }

    // Lines are written as they are found: a large diff starts showing at once.
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    let summary = diff::diff(&repo, &old.tree, &new.tree, &mut |c| {
        let slash = if c.kind == NodeKind::Dir { "/" } else { "" };
        if let Err(e) = writeln!(out, "{} {}{slash}", c.change.symbol(), c.path) {
            write_error.get_or_insert(e);
        }
        Ok(())
    })?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    if !global.quiet {
        writeln!(
            out,
            "{} added, {} removed, {} modified, {} metadata only, {} type changed; {} added, {} removed",
            summary.added,
            summary.removed,
            summary.modified,
            summary.metadata,
            summary.type_changed,
            output::bytes(summary.bytes_added),
            output::bytes(summary.bytes_removed)
        )?;
    }
    out.flush()?;
    Ok(EXIT_OK)
}
