//! `arca restore`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use arca::ops::restore::{self, RestoreOptions};

use super::{EXIT_OK, EXIT_PROBLEMS, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// SNAPSHOT or SNAPSHOT:PATH (`latest` names the newest snapshot)
    snapshot: String,
    /// Directory to restore into (created if missing)
    #[arg(short, long, value_name = "DIR")]
    target: PathBuf,
    /// Restore only entries matching this glob (repeatable)
    #[arg(long = "include", value_name = "GLOB")]
    includes: Vec<String>,
    /// Leave out entries matching this glob (repeatable)
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Do not wait for the restored files to reach the disk before returning. Faster, but
    /// a crash soon after may leave them empty, and files they replaced lost
    #[arg(long)]
    no_sync: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: &RestoreArgs) -> Result<i32> {
    let (spec, path) = match args.snapshot.split_once(':') {
        Some((s, p)) => (s, p.to_string()),
        None => (args.snapshot.as_str(), String::new()),
    };
    let repo = global.open()?;
    let (id, snapshot) = repo.find_snapshot(spec, &args.filter.filter())?;
    let options = RestoreOptions {
        target: args.target.clone(),
        path,
        includes: args.includes.clone(),
        excludes: args.excludes.clone(),
        no_sync: args.no_sync,
    };
    let progress = output::ProgressLine::start(global.show_progress(), "restore");
    let report = restore::restore(&repo, &snapshot.tree, &options, &progress)?;
    progress.finish();
    for p in &report.problems {
        eprintln!("arca: warning: {}: {}", p.path, p.message);
    }
    if global.json {
        output::json(&report)?;
    } else if !global.quiet {
        println!(
            "restored snapshot {} to {}: {} files, {} directories, {} other entries, {}",
            id.short(),
            args.target.display(),
            report.files,
            report.dirs,
            report.other,
            output::bytes(report.bytes)
        );
        if !report.problems.is_empty() {
            println!(
                "{} entries could not be restored (see warnings above)",
                report.problems.len()
            );
        }
    }
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}
