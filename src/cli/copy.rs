//! `arca copy`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;

use arca::ops::copy::{self, CopiedSnapshot, CopyOptions, CopyReport};
use arca::repository::Repository;
use arca::storage::LocalStorage;

use super::{EXIT_OK, EXIT_PROBLEMS, FilterArgs, Global, output};

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// Snapshots to copy (default: all, or all matching --host/--path/--tag)
    snapshots: Vec<String>,
    /// The repository to copy into; it must exist (create it with `arca -r REPO init`)
    #[arg(long = "to", value_name = "REPO")]
    to: PathBuf,
    /// Read the target repository's password from this file (else ARCA_TO_PASSWORD)
    #[arg(long, env = "ARCA_TO_PASSWORD_FILE", value_name = "FILE")]
    to_password_file: Option<PathBuf>,
    /// Show which snapshots would be copied; write nothing
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    filter: FilterArgs,
}

pub fn run(global: &Global, args: &CopyArgs) -> Result<i32> {
    // Say so before asking for any password.
    if !args.to.join("config").exists() {
        bail!(
            "no repository at {} to copy into: create it first with `arca -r {} init`",
            args.to.display(),
            args.to.display()
        );
    }
    let source = global.open()?;
    let password = target_password(args)?;
    let storage = Arc::new(LocalStorage::new(&args.to));
    let target = Repository::open(storage, password.as_bytes(), &global.cache_dir)
        .with_context(|| format!("target repository {}", args.to.display()))?;
    target.set_lock_wait(global.retry_lock);
    let options = CopyOptions {
        snapshots: args.snapshots.clone(),
        filter: args.filter.filter(),
        dry_run: args.dry_run,
    };
    let progress = output::ProgressLine::start(global.show_progress(), "copy");
    let report = copy::copy(&source, &target, &options, &progress)?;
    progress.finish();
    for p in &report.problems {
        eprintln!("arca: warning: {}: {}", p.path, p.message);
    }
    if global.json {
        output::json(&report)?;
    } else if !global.quiet {
        print_report(&report, &args.to, args.dry_run);
    }
    Ok(if report.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    })
}

fn print_report(report: &CopyReport, to: &Path, dry_run: bool) {
    let line = |s: &CopiedSnapshot| {
        format!(
            "{}  {}  {}  {}",
            s.source.short(),
            output::time(s.time),
            s.host,
            s.paths.join(" ")
        )
    };
    for s in &report.skipped {
        let existing = s.target.map(|t| t.short()).unwrap_or_default();
        println!("already there: {} (as {existing})", line(s));
    }
    for s in &report.copied {
        match s.target {
            Some(t) => println!("copied:        {} (as {})", line(s), t.short()),
            None => println!("would copy:    {}", line(s)),
        }
    }
    if dry_run {
        println!(
            "{} snapshot(s) to copy into {}, {} already there (dry run: nothing written)",
            report.copied.len(),
            to.display(),
            report.skipped.len()
        );
        return;
    }
    println!(
        "{} snapshot(s) copied into {}, {} already there; added {} in {} new blobs \
         (read {} from the source)",
        report.copied.len(),
        to.display(),
        report.skipped.len(),
        output::bytes(report.bytes_added),
        report.blobs_added,
        output::bytes(report.bytes_read)
    );
}

fn strip_newline(mut s: String) -> String {
    if s.ends_with('\n') {
        s.pop();
        if s.ends_with('\r') {
            s.pop();
        }
    }
    s
}

/// The target's password: --to-password-file (or ARCA_TO_PASSWORD_FILE), ARCA_TO_PASSWORD,
/// or a prompt. Never the source's variables: two repositories, two passwords.
fn target_password(args: &CopyArgs) -> Result<String> {
    let (password, source) = if let Some(file) = &args.to_password_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading target password file {}", file.display()))?;
        (
            strip_newline(text),
            format!("target password file {}", file.display()),
        )
    } else if let Ok(pw) = std::env::var("ARCA_TO_PASSWORD") {
        (pw, "ARCA_TO_PASSWORD".to_string())
    } else if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password(format!(
            "password of the target repository {}: ",
            args.to.display()
        ))
        .context("reading the target password")?;
        (pw, "the terminal".to_string())
    } else {
        bail!(
            "no password for the target repository {}: set ARCA_TO_PASSWORD or \
             ARCA_TO_PASSWORD_FILE, or use --to-password-file",
            args.to.display()
        );
    };
    if password.is_empty() {
        bail!("the target password from {source} is empty, and an empty password is not allowed");
    }
    Ok(password)
}
