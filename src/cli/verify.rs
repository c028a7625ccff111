//! `arca verify`

use anyhow::Result;
use clap::Args;

use arca::ops::verify::{self, ReadData};

use super::{EXIT_OK, EXIT_PROBLEMS, Global, UsageError, output};

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// Also read all data back: decrypt every blob and check its hash
    #[arg(long)]
    read_data: bool,
    /// Read back only a part: N/M (the Nth of M parts) or P% (a random share)
    #[arg(long, value_name = "N/M|P%")]
    read_data_subset: Option<String>,
    /// Check a copy of a repository without its password: every file must hash to its name
    #[arg(long, value_name = "DIR", conflicts_with_all = ["read_data", "read_data_subset"])]
    mirror: Option<std::path::PathBuf>,
}

pub fn run(global: &Global, args: &VerifyArgs) -> Result<i32> {
    if let Some(dir) = &args.mirror {
        return run_mirror(global, dir);
    }
    let read_data = match (&args.read_data, &args.read_data_subset) {
        (true, Some(_)) => {
            return Err(
                UsageError("--read-data and --read-data-subset exclude each other".into()).into(),
            );
        }
        (true, None) => ReadData::All,
        (false, Some(s)) => ReadData::parse_subset(s).map_err(|e| UsageError(e.to_string()))?,
        (false, None) => ReadData::None,
    };
    let repo = global.open()?;
    let progress = output::ProgressLine::start(global.show_progress(), "verify");
    let report = verify::verify(&repo, read_data, &progress)?;
    progress.finish();
    if global.json {
        output::json(&report)?;
    } else {
        for d in &report.damage {
            println!("damaged {} {}: {}", d.kind, d.object, d.message);
        }
        if !report.damaged_paths.is_empty() {
            println!("entries that cannot be restored whole:");
            for p in &report.damaged_paths {
                println!("  {p}");
            }
        }
        if !global.quiet {
            if !report.unreferenced_packs.is_empty() {
                // Harmless leftovers of an interrupted backup, unless an index segment that
                // listed them is damaged or gone: then they may hold what the damage lost.
                let why = if report.is_clean() {
                    "left by an interrupted backup; harmless"
                } else {
                    "left by an interrupted backup, or listed by a damaged or missing index segment"
                };
                println!(
                    "{} pack(s) are not in any index ({why})",
                    report.unreferenced_packs.len()
                );
            }
            let read = if read_data == ReadData::None {
                String::new()
            } else {
                format!(
                    ", {} packs read back ({})",
                    report.packs_read,
                    output::bytes(report.bytes_read)
                )
            };
            println!(
                "{}: {} snapshots, {} trees, {} data blobs, {} packs{}",
                if report.is_clean() {
                    "no damage found"
                } else {
                    "DAMAGE FOUND"
                },
                report.snapshots,
                report.trees,
                report.data_blobs,
                report.packs,
                read
            );
        }
    }
    Ok(if report.is_clean() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

/// `verify --mirror DIR`: no password, no repository opened; hashes only.
fn run_mirror(global: &Global, dir: &std::path::Path) -> Result<i32> {
    let report = arca::ops::mirror::check_mirror(dir)?;
    if global.json {
        output::json(&report)?;
    } else {
        for p in &report.problems {
            println!("damaged {}: {}", p.path, p.message);
        }
        if !global.quiet {
            if !report.temp_files.is_empty() {
                println!(
                    "{} temporary file(s) of unfinished writes (harmless; safe to delete when nothing runs)",
                    report.temp_files.len()
                );
            }
            println!(
                "{}: {} files ({}) hashed in {}: {} keys, {} snapshots, {} index segments, {} packs",
                if report.is_clean() {
                    "no damage found"
                } else {
                    "DAMAGE FOUND"
                },
                report.files_checked,
                output::bytes(report.bytes_checked),
                dir.display(),
                report.keys.files,
                report.snapshots.files,
                report.index.files,
                report.packs.files
            );
        }
    }
    Ok(if report.is_clean() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
