//! `arca backup`

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use arca::ops::backup::{self, BackupOptions, BackupReport, StdinOptions};

use super::{EXIT_OK, EXIT_PROBLEMS, Global, UsageError, output};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Files and directories to back up
    paths: Vec<PathBuf>,
    /// Tag the snapshot (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Host name to record (default: this machine's)
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Leave out paths matching this glob (repeatable); without '/' it matches names
    #[arg(long = "exclude", value_name = "GLOB")]
    excludes: Vec<String>,
    /// Read exclude patterns from this file, one per line (repeatable)
    #[arg(long = "exclude-file", value_name = "FILE")]
    exclude_files: Vec<PathBuf>,
    /// Do not cross into other file systems
    #[arg(short = 'x', long)]
    one_file_system: bool,
    /// Back up standard input as one file
    #[arg(long)]
    stdin: bool,
    /// The file name for --stdin
    #[arg(long, value_name = "NAME", default_value = "stdin")]
    stdin_filename: String,
    /// Compare against this snapshot instead of the latest of the same host and paths
    #[arg(long, value_name = "SNAPSHOT")]
    parent: Option<String>,
    /// Read every file, even those the parent snapshot says are unchanged
    #[arg(long)]
    force: bool,
}

pub fn run(global: &Global, args: &BackupArgs) -> Result<i32> {
    if args.stdin && !args.paths.is_empty() {
        return Err(UsageError("--stdin takes no paths".into()).into());
    }
    if !args.stdin && args.paths.is_empty() {
        return Err(UsageError("nothing to back up: give paths, or --stdin".into()).into());
    }
    let mut excludes = args.excludes.clone();
    for file in &args.exclude_files {
        excludes.extend(backup::read_exclude_file(file)?);
    }
    let repo = global.open()?;
    let report = if args.stdin {
        let options = StdinOptions {
            filename: args.stdin_filename.clone(),
            tags: args.tags.clone(),
            host: args.host.clone(),
        };
        backup::backup_stdin(&repo, std::io::stdin().lock(), &options)?
    } else {
        let options = BackupOptions {
            paths: args.paths.clone(),
            tags: args.tags.clone(),
            host: args.host.clone(),
            excludes,
            one_file_system: args.one_file_system,
            parent: args.parent.clone(),
            force_read: args.force,
        };
        let progress = output::ProgressLine::start(global.show_progress(), "backup");
        let report = backup::backup(&repo, &options, &progress)?;
        progress.finish();
        report
    };
    print_report(global, &report)?;
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

fn print_report(global: &Global, report: &BackupReport) -> Result<()> {
    for p in &report.problems {
        eprintln!("arca: warning: {}: {}", p.path, p.message);
    }
    if global.json {
        return output::json(report);
    }
    if global.quiet {
        return Ok(());
    }
    let s = &report.snapshot.summary;
    println!("snapshot {} saved", report.snapshot_id.short());
    if let Some(parent) = &report.parent {
        println!("parent:  {}", parent.short());
    }
    println!(
        "files:   {} new, {} changed, {} unchanged",
        s.files_new, s.files_changed, s.files_unchanged
    );
    println!("dirs:    {}", s.dirs);
    println!("read:    {}", output::bytes(s.bytes_read));
    println!(
        "added:   {} stored in {} new blobs",
        output::bytes(s.bytes_added),
        s.blobs_added
    );
    println!("took:    {:.2}s", s.duration_ms as f64 / 1000.0);
    if !report.problems.is_empty() {
        println!(
            "{} path(s) could not be backed up (see warnings above)",
            report.problems.len()
        );
    }
    Ok(())
}
