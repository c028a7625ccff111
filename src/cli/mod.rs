//! Command-line parsing and dispatch. Everything here is presentation: the work is done
//! by `arca::ops` and `arca::repository`.

mod backup;
mod copy;
mod diff;
mod dump;
mod forget;
mod init;
mod key;
mod ls;
mod output;
mod password;
mod prune;
mod repair;
mod restore;
mod snapshots;
mod stats;
mod unlock;
mod verify;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};

use arca::repository::{Repository, SnapshotFilter, default_cache_dir};
use arca::storage::LocalStorage;

/// Exit codes, as documented in the README.
pub const EXIT_OK: i32 = 0;
pub const EXIT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_PROBLEMS: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "arca",
    version,
    about = "Deduplicating, encrypted backups of files, directories and databases"
)]
pub struct Cli {
    /// Repository location (a directory)
    #[arg(
        short = 'r',
        long = "repo",
        env = "ARCA_REPOSITORY",
        global = true,
        value_name = "REPO"
    )]
    repo: Option<PathBuf>,

    /// Read the password from this file
    #[arg(long, env = "ARCA_PASSWORD_FILE", global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// Run this shell command and use its output as the password
    #[arg(
        long,
        env = "ARCA_PASSWORD_COMMAND",
        global = true,
        value_name = "COMMAND"
    )]
    password_command: Option<String>,

    /// Local cache folder (default: $XDG_CACHE_HOME/arca)
    #[arg(long, env = "ARCA_CACHE_DIR", global = true, value_name = "DIR")]
    cache_dir: Option<PathBuf>,

    /// Wait up to this long for another process's lock (e.g. 30s, 10m, 1h)
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_wait)]
    retry_lock: Option<std::time::Duration>,

    /// Print machine-readable JSON instead of text
    #[arg(long, global = true)]
    json: bool,

    /// Print only errors and warnings
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new repository
    Init(init::InitArgs),
    /// Back up files and directories, or a stream from standard input
    Backup(backup::BackupArgs),
    /// List snapshots
    Snapshots(snapshots::SnapshotsArgs),
    /// List the entries of a snapshot
    Ls(ls::LsArgs),
    /// Show what changed between two snapshots
    Diff(diff::DiffArgs),
    /// Show how much the snapshots hold and how much space they take
    Stats(stats::StatsArgs),
    /// Restore a snapshot, or part of one, into a directory
    Restore(restore::RestoreArgs),
    /// Write one file of a snapshot to standard output
    Dump(dump::DumpArgs),
    /// Check the repository's integrity (and with --read-data, its data)
    Verify(verify::VerifyArgs),
    /// Remove stale locks left by processes that are gone
    Unlock(unlock::UnlockArgs),
    /// Remove snapshots by a retention policy (--keep-*) or by id
    Forget(forget::ForgetArgs),
    /// Remove data no snapshot needs, and repack mostly unused packs
    Prune(prune::PruneArgs),
    /// Repair a damaged repository: rebuild the index, or rewrite snapshots without lost files
    Repair(repair::RepairArgs),
    /// Manage keys: list, add and remove passwords, or change one
    Key(key::KeyArgs),
    /// Copy snapshots into another repository (with its own password and key)
    Copy(copy::CopyArgs),
}

/// `--host`, `--path`, `--tag`: which snapshots `latest` may name.
#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    /// Only snapshots of this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    hosts: Vec<String>,
    /// Only snapshots that include this path (repeatable)
    #[arg(long = "path", value_name = "PATH")]
    paths: Vec<String>,
    /// Only snapshots with this tag (repeatable)
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> SnapshotFilter {
        SnapshotFilter {
            hosts: self.hosts.clone(),
            paths: self.paths.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// What every command gets: the global options.
pub struct Global {
    repo: Option<PathBuf>,
    password_file: Option<PathBuf>,
    password_command: Option<String>,
    cache_dir: PathBuf,
    retry_lock: std::time::Duration,
    pub json: bool,
    pub quiet: bool,
}

impl Global {
    fn repo_path(&self) -> Result<&PathBuf> {
        self.repo
            .as_ref()
            .context("no repository given: use -r/--repo or set ARCA_REPOSITORY")
    }

    fn storage(&self) -> Result<Arc<LocalStorage>> {
        Ok(Arc::new(LocalStorage::new(self.repo_path()?)))
    }

    /// Opens the repository, asking for the password if needed.
    pub fn open(&self) -> Result<Repository> {
        let storage = self.storage()?;
        // Say "no repository" before asking for a password that cannot help.
        if !self.repo_path()?.join("config").exists() {
            return Err(arca::Error::NoRepository(self.repo_path()?.display().to_string()).into());
        }
        let password = password::get(self, false)?;
        let repo = Repository::open(storage, password.as_bytes(), &self.cache_dir)?;
        repo.set_lock_wait(self.retry_lock);
        Ok(repo)
    }

    /// Whether to show live progress: on a terminal, unless asked for quiet or JSON.
    pub fn show_progress(&self) -> bool {
        use std::io::IsTerminal;
        !self.quiet && !self.json && std::io::stderr().is_terminal()
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    EXIT_OK
                }
                _ => EXIT_USAGE,
            };
        }
    };
    let global = Global {
        repo: cli.repo,
        password_file: cli.password_file,
        password_command: cli.password_command,
        cache_dir: cli.cache_dir.unwrap_or_else(default_cache_dir),
        retry_lock: cli.retry_lock.unwrap_or_default(),
        json: cli.json,
        quiet: cli.quiet,
    };
    let result = match &cli.command {
        Command::Init(args) => init::run(&global, args),
        Command::Backup(args) => backup::run(&global, args),
        Command::Snapshots(args) => snapshots::run(&global, args),
        Command::Ls(args) => ls::run(&global, args),
        Command::Diff(args) => diff::run(&global, args),
        Command::Stats(args) => stats::run(&global, args),
        Command::Restore(args) => restore::run(&global, args),
        Command::Dump(args) => dump::run(&global, args),
        Command::Verify(args) => verify::run(&global, args),
        Command::Unlock(args) => unlock::run(&global, args),
        Command::Forget(args) => forget::run(&global, args),
        Command::Prune(args) => prune::run(&global, args),
        Command::Repair(args) => repair::run(&global, args),
        Command::Key(args) => key::run(&global, args),
        Command::Copy(args) => copy::run(&global, args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("arca: error: {}", output::error_chain(&e));
            if e.downcast_ref::<UsageError>().is_some() {
                EXIT_USAGE
            } else {
                EXIT_ERROR
            }
        }
    }
}

/// A command line that parsed but does not make sense (exit code 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses a wait such as `90s`, `10m`, `1h30m` (a bare number is seconds).
fn parse_wait(s: &str) -> std::result::Result<std::time::Duration, String> {
    let bad = || format!("{s:?} is not a duration like 30s, 10m or 1h30m");
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.saturating_mul(unit));
    }
    if !number.is_empty() || s.is_empty() {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::parse_wait;
    use std::time::Duration;

    #[test]
    fn waits_parse() {
        assert_eq!(parse_wait("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_wait("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_wait("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_wait("10x").is_err());
        assert!(parse_wait("m").is_err());
        assert!(parse_wait("5m3").is_err());
    }
}
