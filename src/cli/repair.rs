//! `arca repair index` and `arca repair snapshots`

use anyhow::Result;
use clap::{Args, Subcommand};

use arca::ops::repair::{self, RepairSnapshotsOptions};

use super::{EXIT_OK, EXIT_PROBLEMS, Global, output};

#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(subcommand)]
    what: RepairWhat,
}

#[derive(Subcommand, Debug)]
enum RepairWhat {
    /// Rebuild the index from the pack headers alone
    Index,
    /// Rewrite snapshots that refer to lost data, without the lost files
    Snapshots(SnapshotsArgs),
}

#[derive(Args, Debug)]
struct SnapshotsArgs {
    /// Snapshots to check (default: all)
    snapshots: Vec<String>,
    /// Remove each original once its corrected snapshot is written
    #[arg(long)]
    forget: bool,
    /// Report what would be lost, change nothing
    #[arg(long)]
    dry_run: bool,
}

pub fn run(global: &Global, args: &RepairArgs) -> Result<i32> {
    let repo = global.open()?;
    match &args.what {
        RepairWhat::Index => {
            let report = repair::repair_index(&repo)?;
            for p in &report.unreadable_packs {
                eprintln!("arca: warning: {}: {}", p.path, p.message);
            }
            if global.json {
                output::json(&report)?;
            } else if !global.quiet {
                println!(
                    "indexed {} blobs in {} packs: wrote {} index segment(s), removed {} old one(s)",
                    report.blobs_indexed,
                    report.packs_indexed,
                    report.segments_written,
                    report.segments_removed
                );
            }
            Ok(if report.unreadable_packs.is_empty() {
                EXIT_OK
            } else {
                EXIT_PROBLEMS
            })
        }
        RepairWhat::Snapshots(a) => {
            let options = RepairSnapshotsOptions {
                snapshots: a.snapshots.clone(),
                forget: a.forget,
                dry_run: a.dry_run,
            };
            let report = repair::repair_snapshots(&repo, &options)?;
            if global.json {
                output::json(&report)?;
            } else if !global.quiet {
                for r in &report.repaired {
                    match &r.repaired {
                        Some(new) => println!(
                            "snapshot {} repaired as {}; lost:",
                            r.original.short(),
                            new.short()
                        ),
                        None => println!("snapshot {} would lose:", r.original.short()),
                    }
                    for l in &r.lost {
                        println!("  {}: {}", l.path, l.message);
                    }
                }
                println!(
                    "{} snapshot(s) checked, {} {}{}",
                    report.snapshots_checked,
                    report.repaired.len(),
                    if a.dry_run {
                        "need repair (dry run: nothing changed)"
                    } else {
                        "repaired"
                    },
                    if report.forgotten.is_empty() {
                        String::new()
                    } else {
                        format!(", {} original(s) removed", report.forgotten.len())
                    }
                );
            }
            Ok(EXIT_OK)
        }
    }
}
