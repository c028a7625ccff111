//! `arca stats`

use anyhow::Result;
use clap::Args;

use arca::ops::stats::{self, Stats};

use super::{EXIT_OK, EXIT_PROBLEMS, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Snapshot ids (or unique prefixes), or `latest`; default: every snapshot
    snapshots: Vec<String>,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: &StatsArgs) -> Result<i32> {
    let repo = global.open()?;
    let chosen = stats::select_snapshots(&repo, &args.snapshots, &args.filter.filter())?;
    for (path, e) in &chosen.unreadable {
        eprintln!("arca: warning: {path} cannot be read and is not counted: {e}");
    }
    let progress = output::ProgressLine::start(global.show_progress(), "stats");
    let stats = stats::stats(&repo, &chosen.snapshots, &progress)?;
    progress.finish();
    if stats.missing_blobs > 0 {
        eprintln!(
            "arca: warning: {} blobs the snapshots need are in no index and are not counted: run `arca verify`",
            stats.missing_blobs
        );
    }
    if global.json {
        output::json(&stats)?;
    } else {
        print(global, &stats);
    }
    Ok(
        if chosen.unreadable.is_empty() && stats.missing_blobs == 0 {
            EXIT_OK
        } else {
            EXIT_PROBLEMS
        },
    )
}

fn print(global: &Global, s: &Stats) {
    if !global.quiet && !s.per_snapshot.is_empty() {
        println!(
            "{:<8}  {:<19}  {:>10}  {:>10}  {:>10}",
            "id", "time", "files", "size", "added"
        );
        for p in &s.per_snapshot {
            println!(
                "{:<8}  {:<19}  {:>10}  {:>10}  {:>10}",
                p.short_id,
                output::time(p.time),
                p.files,
                output::bytes(p.logical_size),
                output::bytes(p.bytes_added)
            );
        }
        println!();
    }
    let rows = [
        ("Snapshots", s.snapshots.to_string()),
        ("Files", format!("{} (counted in every snapshot)", s.files)),
        ("Logical size", output::bytes(s.logical_size)),
        (
            "Deduplicated size",
            format!(
                "{} in {} blobs ({} data, {} trees)",
                output::bytes(s.deduplicated_size),
                s.blobs,
                s.data_blobs,
                s.tree_blobs
            ),
        ),
        (
            "Stored size",
            format!(
                "{} (compressed and encrypted)",
                output::bytes(s.stored_size)
            ),
        ),
        (
            "Packs",
            format!("{} holding {}", s.packs, output::bytes(s.pack_size)),
        ),
        (
            "Repository packs",
            format!(
                "{} holding {}",
                s.repository_packs,
                output::bytes(s.repository_pack_size)
            ),
        ),
        ("Compression ratio", format!("{:.2}x", s.compression_ratio)),
        ("Deduplication ratio", format!("{:.2}x", s.dedup_ratio)),
    ];
    for (label, value) in rows {
        println!("{:<20} {value}", format!("{label}:"));
    }
}
