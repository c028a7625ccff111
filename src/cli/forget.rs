//! `arca forget`

use anyhow::Result;
use clap::Args;

use arca::ops::forget::{
    self, Action, ForgetOptions, ForgetPlan, ForgetReport, GroupBy, GroupKey, Policy, Span,
};

use super::{EXIT_OK, EXIT_PROBLEMS, FilterArgs, Global, UsageError, output};

#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to remove whatever the policy says (ids, unique id prefixes, or `latest`)
    #[arg(value_name = "SNAPSHOT")]
    snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(short = 'l', long, value_name = "N")]
    keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the N newest hours
    #[arg(short = 'H', long, value_name = "N")]
    keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest days
    #[arg(short = 'd', long, value_name = "N")]
    keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the N newest ISO weeks
    #[arg(short = 'w', long, value_name = "N")]
    keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest months
    #[arg(short = 'm', long, value_name = "N")]
    keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the N newest years
    #[arg(short = 'y', long, value_name = "N")]
    keep_yearly: Option<u32>,
    /// Keep snapshots made within this duration of the newest (e.g. 7d, 1y6m, 2d12h)
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within: Option<Span>,
    /// Keep one snapshot an hour within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_hourly: Option<Span>,
    /// Keep one snapshot a day within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_daily: Option<Span>,
    /// Keep one snapshot a week within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_weekly: Option<Span>,
    /// Keep one snapshot a month within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_monthly: Option<Span>,
    /// Keep one snapshot a year within this duration of the newest
    #[arg(long, value_name = "DURATION", value_parser = parse_span)]
    keep_within_yearly: Option<Span>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    keep_tags: Vec<String>,
    /// Apply the policy to each group of snapshots sharing these (host, paths, tags; "" for one group)
    #[arg(long, value_name = "FIELDS", default_value = "host,paths", value_parser = parse_group_by)]
    group_by: GroupBy,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print what would be removed and change nothing
    #[arg(short = 'n', long)]
    dry_run: bool,
    /// Run prune afterwards if any snapshot was removed
    #[arg(long)]
    prune: bool,
}

fn parse_span(s: &str) -> std::result::Result<Span, String> {
    s.parse().map_err(|e: arca::Error| e.to_string())
}

fn parse_group_by(s: &str) -> std::result::Result<GroupBy, String> {
    s.parse().map_err(|e: arca::Error| e.to_string())
}

impl ForgetArgs {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last.unwrap_or(0),
            keep_hourly: self.keep_hourly.unwrap_or(0),
            keep_daily: self.keep_daily.unwrap_or(0),
            keep_weekly: self.keep_weekly.unwrap_or(0),
            keep_monthly: self.keep_monthly.unwrap_or(0),
            keep_yearly: self.keep_yearly.unwrap_or(0),
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            keep_tags: self.keep_tags.clone(),
        }
    }
}

pub fn run(global: &Global, args: &ForgetArgs) -> Result<i32> {
    let options = ForgetOptions {
        policy: args.policy(),
        group_by: args.group_by,
        filter: args.filter.filter(),
        ids: args.snapshots.clone(),
        dry_run: args.dry_run,
    };
    if options.policy.is_empty() && options.ids.is_empty() {
        return Err(UsageError(
            "nothing to forget: give a policy (--keep-last N, --keep-daily N, --keep-within 30d, \
             --keep-tag TAG, …) or the ids of the snapshots to remove"
                .into(),
        )
        .into());
    }
    let repo = global.open()?;
    let (plan, report) = forget::forget(&repo, &options)?;
    if !global.json {
        print(global, &plan, report.as_ref());
    }
    for path in &plan.unreadable {
        eprintln!(
            "arca: warning: {path} cannot be read and was left alone (see `arca repair snapshots`)"
        );
    }
    let code = if plan.unreadable.is_empty() {
        EXIT_OK
    } else {
        EXIT_PROBLEMS
    };
    let removed_some = report.as_ref().is_some_and(|r| !r.removed.is_empty());
    if args.prune && report.is_none() && !global.quiet && !global.json {
        println!("dry run: prune not run");
    }
    // Prune only when snapshots went: otherwise it would find nothing newly unused.
    let pruned = if args.prune && removed_some {
        super::prune::prune_after_forget(global, &repo).map(Some)
    } else {
        Ok(None)
    };
    // With --json, one document for the whole command; what forget did is printed even
    // when the prune after it failed (its error then goes to standard error).
    let prune_done = pruned.as_ref().ok().and_then(Option::as_ref);
    if global.json {
        let prune =
            prune_done.map(|(plan, report)| serde_json::json!({ "plan": plan, "report": report }));
        output::json(&serde_json::json!({ "plan": plan, "report": report, "prune": prune }))?;
    } else if let Some((plan, report)) = prune_done {
        super::prune::print(global, plan, report.as_ref());
    }
    pruned?;
    Ok(code)
}

fn describe(key: &GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(host) = &key.host {
        parts.push(format!("host {host}"));
    }
    if let Some(paths) = &key.paths {
        parts.push(format!("paths {}", paths.join(" ")));
    }
    if let Some(tags) = &key.tags {
        if tags.is_empty() {
            parts.push("no tags".to_string());
        } else {
            parts.push(format!("tags {}", tags.join(",")));
        }
    }
    if parts.is_empty() {
        "all snapshots".to_string()
    } else {
        parts.join(", ")
    }
}

/// The text output; `--json` is printed by the caller, as one document with prune's.
fn print(global: &Global, plan: &ForgetPlan, report: Option<&ForgetReport>) {
    if global.quiet {
        return;
    }
    for group in &plan.groups {
        println!("{}:", describe(&group.key));
        println!("  {:<8}  {:<19}  {:<6}  reasons", "id", "time", "action");
        for s in &group.snapshots {
            let action = match s.action {
                Action::Keep => "keep",
                Action::Remove => "remove",
            };
            let reasons = if s.explicit {
                "named on the command line".to_string()
            } else {
                s.reasons
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let line = format!(
                "  {:<8}  {:<19}  {:<6}  {}",
                s.short_id,
                output::time(s.time),
                action,
                reasons
            );
            println!("{}", line.trim_end());
        }
        println!();
    }
    println!(
        "keep {}, remove {} snapshot(s) in {} group(s)",
        plan.keep,
        plan.remove,
        plan.groups.len()
    );
    match report {
        None => println!("dry run: nothing was removed"),
        Some(r) => println!("removed {} snapshot(s)", r.removed.len()),
    }
}
