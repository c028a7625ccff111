//! `arca prune`

use anyhow::Result;
use clap::Args;

use arca::ops::prune::{self, PackAction, PruneOptions, PrunePlan, PruneReport};
use arca::repository::Repository;

use super::{EXIT_OK, Global, UsageError, output};

#[derive(Args, Debug, Clone, Default)]
pub struct PruneArgs {
    /// Unused space tolerated in kept packs, in percent of the used space
    #[arg(long, value_name = "PERCENT", default_value = "5%")]
    max_unused: String,
    /// Rewrite at most this much data in one run (e.g. 500M, 20G)
    #[arg(long, value_name = "SIZE")]
    max_repack_size: Option<String>,
    /// Print the plan and change nothing
    #[arg(long)]
    dry_run: bool,
}

fn parse_percent(s: &str) -> Result<f64> {
    let n: f64 = s.trim().trim_end_matches('%').parse().map_err(|_| {
        UsageError(format!(
            "--max-unused {s:?}: expected a percentage such as 5%"
        ))
    })?;
    if !(0.0..=100.0).contains(&n) {
        return Err(UsageError(format!("--max-unused {s:?} must be between 0% and 100%")).into());
    }
    Ok(n)
}

/// Parses a size such as `500M`, `20G` or a number of bytes.
pub fn parse_size(s: &str) -> Result<u64> {
    let bad = || UsageError(format!("{s:?} is not a size such as 500M or 20G"));
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let mult: u64 = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(bad().into()),
    };
    n.checked_mul(mult).ok_or_else(|| bad().into())
}

pub fn run(global: &Global, args: &PruneArgs) -> Result<i32> {
    let options = PruneOptions {
        max_unused_percent: parse_percent(&args.max_unused)?,
        max_repack_bytes: args
            .max_repack_size
            .as_deref()
            .map(parse_size)
            .transpose()?,
        dry_run: args.dry_run,
    };
    run_on(global, &global.open()?, &options)
}

fn run_on(global: &Global, repo: &Repository, options: &PruneOptions) -> Result<i32> {
    let (plan, report) = prune_with_progress(global, repo, options)?;
    if global.json {
        output::json(&serde_json::json!({ "plan": plan, "report": report }))?;
    } else {
        print(global, &plan, report.as_ref());
    }
    Ok(EXIT_OK)
}

fn prune_with_progress(
    global: &Global,
    repo: &Repository,
    options: &PruneOptions,
) -> Result<(PrunePlan, Option<PruneReport>)> {
    let progress = output::ProgressLine::start(global.show_progress(), "prune");
    let outcome = prune::prune(repo, options, &progress)?;
    progress.finish();
    Ok(outcome)
}

/// `arca forget --prune`: prune with the default options after forgetting, in the
/// repository `forget` opened (the password is not asked for, nor the key derived, twice).
/// Returns what prune did for `forget` to print with its own output.
pub fn prune_after_forget(
    global: &Global,
    repo: &Repository,
) -> Result<(PrunePlan, Option<PruneReport>)> {
    prune_with_progress(global, repo, &PruneOptions::default())
}

/// The text output; `--json` is printed by the caller.
pub fn print(global: &Global, plan: &PrunePlan, report: Option<&PruneReport>) {
    if global.quiet {
        return;
    }
    if report.is_none() {
        for p in &plan.packs {
            if p.action != PackAction::Keep {
                let action = match p.action {
                    PackAction::Keep => "keep",
                    PackAction::KeepPartial => "keep (partly unused)",
                    PackAction::Repack => "repack",
                    PackAction::Delete => "delete",
                };
                println!(
                    "{:<22} pack {}  {} used, {} unused",
                    action,
                    p.id.short(),
                    output::bytes(p.used_bytes),
                    output::bytes(p.unused_bytes)
                );
            }
        }
    }
    println!(
        "{} snapshots use {} blobs; {} of {} packs to delete ({}), {} to repack ({}); {} unused would remain",
        plan.snapshots,
        plan.used_blobs,
        plan.packs_to_delete,
        plan.packs.len(),
        output::bytes(plan.bytes_to_delete),
        plan.packs_to_repack,
        output::bytes(plan.bytes_to_repack),
        output::bytes(plan.unused_bytes_after)
    );
    match report {
        None => println!("dry run: nothing was changed"),
        Some(r) => println!(
            "deleted {} packs, repacked {} into {} new, removed {} old index segments; freed {}",
            r.packs_deleted,
            r.packs_repacked,
            r.packs_written,
            r.index_segments_removed,
            output::bytes(r.bytes_freed.max(0) as u64)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_percentages_parse() {
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("123").unwrap(), 123);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert_eq!(parse_percent("5%").unwrap(), 5.0);
        assert!(parse_percent("120%").is_err());
    }
}
