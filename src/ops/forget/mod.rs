//! `arca forget`: remove snapshots by a retention policy, or by id.
//!
//! A plan first: the snapshots are grouped (by host and paths unless told otherwise), the
//! [`policy`] decides within each group which to keep and why, and snapshots named by id are
//! removed whatever the policy says. Executing the plan takes the exclusive lock, checks that
//! every snapshot the plan looked at is still there (a plan made on a different set of
//! snapshots could keep the wrong ones), and removes snapshot files. Their data stays until
//! `prune` finds it unreferenced.

pub mod policy;

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::snapshot::Snapshot;
use crate::format::tree::Timestamp;
use crate::id::SnapshotId;
use crate::repository::{LockKind, Repository, SnapshotFilter};
use crate::storage::FileType;

pub use policy::{Calendar, Policy, Reason, Span, SystemCalendar};

/// Which snapshot fields make up a group; the policy applies to each group on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct GroupBy {
    pub host: bool,
    pub paths: bool,
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// Parses a comma-separated list of `host`, `paths`, `tags`; empty means one group.
    fn from_str(s: &str) -> Result<GroupBy> {
        let mut by = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "host" => by.host = true,
                "paths" => by.paths = true,
                "tags" => by.tags = true,
                _ => {
                    return Err(Error::invalid(format!(
                        "cannot group by {word:?}: give a comma-separated list of host, paths and tags, or an empty one for a single group"
                    )));
                }
            }
        }
        Ok(by)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    pub policy: Policy,
    pub group_by: GroupBy,
    /// Only snapshots matching this are subject to the policy.
    pub filter: SnapshotFilter,
    /// Snapshots to remove whatever the policy says: ids, unique id prefixes or `latest`.
    pub ids: Vec<String>,
    pub dry_run: bool,
}

/// The fields a group shares; those not grouped by are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    /// Sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(snapshot: &Snapshot, by: GroupBy) -> GroupKey {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        GroupKey {
            host: by.host.then(|| snapshot.host.clone()),
            paths: by.paths.then(|| sorted(&snapshot.paths)),
            tags: by.tags.then(|| sorted(&snapshot.tags)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Keep,
    Remove,
}

/// One snapshot and what the plan does with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedSnapshot {
    pub id: SnapshotId,
    pub short_id: String,
    pub time: Timestamp,
    pub host: String,
    pub paths: Vec<String>,
    pub tags: Vec<String>,
    pub action: Action,
    /// Why it is kept; empty when it is removed.
    pub reasons: Vec<Reason>,
    /// Named on the command line: removed whatever the policy says.
    pub explicit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForgetGroup {
    pub key: GroupKey,
    /// Newest first.
    pub snapshots: Vec<PlannedSnapshot>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ForgetPlan {
    pub policy: Policy,
    /// Ordered by key.
    pub groups: Vec<ForgetGroup>,
    pub keep: u64,
    pub remove: u64,
    /// Snapshot files that could not be read, so took no part (`arca repair snapshots`).
    pub unreadable: Vec<String>,
}

impl ForgetPlan {
    /// The snapshots to remove, group by group, newest first.
    pub fn to_remove(&self) -> impl Iterator<Item = &PlannedSnapshot> {
        self.groups
            .iter()
            .flat_map(|g| &g.snapshots)
            .filter(|s| s.action == Action::Remove)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ForgetReport {
    pub removed: Vec<SnapshotId>,
}

/// Plans with the clock and the system's time zone.
pub fn plan(repo: &Repository, options: &ForgetOptions) -> Result<ForgetPlan> {
    plan_at(repo, options, crate::platform::now(), &SystemCalendar)
}

/// Plans as if the time were `now`, in `calendar`'s time zone. Refuses a plan with neither
/// a policy nor ids: it would remove nothing, and applied, an empty policy removes everything.
pub fn plan_at(
    repo: &Repository,
    options: &ForgetOptions,
    now: Timestamp,
    calendar: &dyn Calendar,
) -> Result<ForgetPlan> {
    let rules = &options.policy;
    if rules.is_empty() && options.ids.is_empty() {
        return Err(Error::invalid(
            "no policy and no snapshot ids: give --keep-* rules or the snapshots to remove",
        ));
    }
    let mut explicit: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for spec in &options.ids {
        let (id, snapshot) = repo.find_snapshot(spec, &options.filter)?;
        if !explicit.iter().any(|(known, _)| *known == id) {
            explicit.push((id, snapshot));
        }
    }
    let explicit_ids: HashSet<SnapshotId> = explicit.iter().map(|(id, _)| *id).collect();

    let (all, damaged) = repo.list_readable_snapshots()?;
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    if !rules.is_empty() {
        for (id, snapshot) in all {
            if options.filter.matches(&snapshot) && !explicit_ids.contains(&id) {
                groups
                    .entry(GroupKey::of(&snapshot, options.group_by))
                    .or_default()
                    .push((id, snapshot));
            }
        }
    }
    let mut plan = ForgetPlan {
        policy: rules.clone(),
        unreadable: damaged.into_iter().map(|(path, _)| path).collect(),
        ..ForgetPlan::default()
    };
    // Explicit snapshots join their group's listing but not its policy: the policy decides
    // among the snapshots that will remain.
    let mut explicit_by_group: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, snapshot) in explicit {
        let key = GroupKey::of(&snapshot, options.group_by);
        groups.entry(key.clone()).or_default();
        explicit_by_group
            .entry(key)
            .or_default()
            .push((id, snapshot));
    }
    for (key, members) in groups {
        let candidates: Vec<policy::Candidate<'_>> = members
            .iter()
            .map(|(id, s)| policy::Candidate {
                id: *id,
                time: s.time,
                tags: &s.tags,
            })
            .collect();
        let decisions = if rules.is_empty() {
            Vec::new()
        } else {
            policy::apply(rules, &candidates, now, calendar)
        };
        let by_id: BTreeMap<SnapshotId, &Snapshot> =
            members.iter().map(|(id, s)| (*id, s)).collect();
        let mut snapshots: Vec<PlannedSnapshot> = Vec::with_capacity(members.len());
        for decision in decisions {
            let Some(snapshot) = by_id.get(&decision.id) else {
                continue;
            };
            let action = if decision.keep {
                Action::Keep
            } else {
                Action::Remove
            };
            snapshots.push(planned(
                decision.id,
                snapshot,
                action,
                decision.reasons,
                false,
            ));
        }
        for (id, snapshot) in explicit_by_group.remove(&key).unwrap_or_default() {
            snapshots.push(planned(id, &snapshot, Action::Remove, Vec::new(), true));
        }
        snapshots.sort_by_key(|s| std::cmp::Reverse((s.time, s.id)));
        for s in &snapshots {
            match s.action {
                Action::Keep => plan.keep += 1,
                Action::Remove => plan.remove += 1,
            }
        }
        plan.groups.push(ForgetGroup { key, snapshots });
    }
    Ok(plan)
}

fn planned(
    id: SnapshotId,
    snapshot: &Snapshot,
    action: Action,
    reasons: Vec<Reason>,
    explicit: bool,
) -> PlannedSnapshot {
    PlannedSnapshot {
        id,
        short_id: id.short(),
        time: snapshot.time,
        host: snapshot.host.clone(),
        paths: snapshot.paths.clone(),
        tags: snapshot.tags.clone(),
        action,
        reasons,
        explicit,
    }
}

/// Removes the snapshots the plan removes, under the exclusive lock. Refuses, removing
/// nothing, when a snapshot the plan looked at has gone since: the plan is out of date.
pub fn execute(repo: &Repository, plan: &ForgetPlan) -> Result<ForgetReport> {
    let mut report = ForgetReport::default();
    if plan.remove == 0 {
        return Ok(report);
    }
    let lock = repo.lock(LockKind::Exclusive, "forget")?;
    let present: HashSet<SnapshotId> = repo
        .list_files(FileType::Snapshot)?
        .iter()
        .filter_map(|f| f.name.parse().ok())
        .collect();
    let mut planned = plan.groups.iter().flat_map(|g| &g.snapshots);
    if let Some(gone) = planned.find(|s| !present.contains(&s.id)) {
        return Err(Error::invalid(format!(
            "snapshot {} was removed since the plan was made; nothing was removed: run forget again",
            gone.short_id
        )));
    }
    for snapshot in plan.to_remove() {
        // A lost lock means another process may have taken over: stop before each removal.
        lock.check()?;
        repo.remove_snapshot(&snapshot.id)?;
        report.removed.push(snapshot.id);
    }
    lock.check()?;
    Ok(report)
}

/// Plans, then unless `dry_run`, executes. The report is `None` for a dry run.
pub fn forget(
    repo: &Repository,
    options: &ForgetOptions,
) -> Result<(ForgetPlan, Option<ForgetReport>)> {
    let plan = plan(repo, options)?;
    if options.dry_run {
        return Ok((plan, None));
    }
    let report = execute(repo, &plan)?;
    Ok((plan, Some(report)))
}

#[cfg(test)]
mod tests {
    use super::policy::FixedOffset;
    use super::*;
    use crate::format::snapshot::Summary;
    use crate::id::BlobId;

    use crate::repository::testing::test_repo;

    const DAY: i64 = 86_400;
    /// 2023-11-14 22:13:20 UTC.
    const T0: i64 = 1_700_000_000;

    fn snapshot(host: &str, path: &str, tags: &[&str], secs: i64) -> Snapshot {
        Snapshot {
            time: Timestamp { secs, nanos: 0 },
            host: host.into(),
            user: "u".into(),
            paths: vec![path.into()],
            tags: tags.iter().map(|t| t.to_string()).collect(),
            parent: None,
            tree: BlobId([7; 32]),
            program_version: "test".into(),
            summary: Summary::default(),
        }
    }

    fn options(policy: Policy) -> ForgetOptions {
        ForgetOptions {
            policy,
            ..ForgetOptions::default()
        }
    }

    fn plan_utc(repo: &Repository, options: &ForgetOptions) -> Result<ForgetPlan> {
        plan_at(
            repo,
            options,
            Timestamp {
                secs: T0 + 100 * DAY,
                nanos: 0,
            },
            &FixedOffset::UTC,
        )
    }

    fn remaining(repo: &Repository) -> Vec<SnapshotId> {
        repo.list_snapshots()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect()
    }

    #[test]
    fn each_host_and_path_is_a_group_of_its_own() {
        let (repo, _storage, _cache) = test_repo();
        let mut ids = Vec::new();
        for (n, (host, path)) in [
            ("a", "/x"),
            ("a", "/x"),
            ("a", "/y"),
            ("b", "/x"),
            ("b", "/x"),
        ]
        .iter()
        .enumerate()
        {
            ids.push(
                repo.save_snapshot(&snapshot(host, path, &[], T0 + n as i64 * DAY))
                    .unwrap(),
            );
        }
        let plan = plan_utc(
            &repo,
            &options(Policy {
                keep_last: 1,
                ..Policy::default()
            }),
        )
        .unwrap();
        let keys: Vec<(Option<&str>, Vec<String>)> = plan
            .groups
            .iter()
            .map(|g| (g.key.host.as_deref(), g.key.paths.clone().unwrap()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (Some("a"), vec!["/x".to_string()]),
                (Some("a"), vec!["/y".to_string()]),
                (Some("b"), vec!["/x".to_string()]),
            ]
        );
        assert_eq!((plan.keep, plan.remove), (3, 2));
        let removed: Vec<SnapshotId> = plan.to_remove().map(|s| s.id).collect();
        assert_eq!(removed, vec![ids[0], ids[3]]);
        assert_eq!(plan.groups[0].snapshots[0].reasons, vec![Reason::Last]);

        let report = execute(&repo, &plan).unwrap();
        assert_eq!(report.removed, removed);
        let mut left = remaining(&repo);
        left.sort();
        let mut want = vec![ids[1], ids[2], ids[4]];
        want.sort();
        assert_eq!(left, want);
        assert!(repo.list_locks().unwrap().is_empty());
    }

    #[test]
    fn grouping_by_nothing_makes_one_group_and_by_tags_splits_them() {
        let (repo, _storage, _cache) = test_repo();
        repo.save_snapshot(&snapshot("a", "/x", &["t"], T0))
            .unwrap();
        repo.save_snapshot(&snapshot("b", "/y", &[], T0 + 1))
            .unwrap();
        let mut opts = options(Policy {
            keep_last: 1,
            ..Policy::default()
        });
        opts.group_by = "".parse().unwrap();
        let plan = plan_utc(&repo, &opts).unwrap();
        assert_eq!(plan.groups.len(), 1);
        assert_eq!(plan.groups[0].key, GroupKey::default());
        assert_eq!((plan.keep, plan.remove), (1, 1));
        opts.group_by = "tags".parse().unwrap();
        let plan = plan_utc(&repo, &opts).unwrap();
        assert_eq!(plan.groups.len(), 2);
        assert_eq!(plan.remove, 0);
    }

    #[test]
    fn the_filter_limits_what_the_policy_touches() {
        let (repo, _storage, _cache) = test_repo();
        for n in 0..3 {
            repo.save_snapshot(&snapshot("a", "/x", &[], T0 + n))
                .unwrap();
            repo.save_snapshot(&snapshot("b", "/x", &[], T0 + n))
                .unwrap();
        }
        let mut opts = options(Policy {
            keep_last: 1,
            ..Policy::default()
        });
        opts.filter.hosts = vec!["b".into()];
        let plan = plan_utc(&repo, &opts).unwrap();
        assert_eq!(plan.groups.len(), 1);
        assert!(plan.to_remove().all(|s| s.host == "b"));
        assert_eq!(plan.remove, 2);
    }

    #[test]
    fn explicit_ids_are_removed_even_when_the_policy_would_keep_them() {
        let (repo, _storage, _cache) = test_repo();
        let old = repo.save_snapshot(&snapshot("a", "/x", &[], T0)).unwrap();
        let new = repo
            .save_snapshot(&snapshot("a", "/x", &["keep"], T0 + DAY))
            .unwrap();
        let mut opts = options(Policy {
            keep_last: 1,
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        });
        opts.ids = vec![new.to_hex()[..10].to_string(), new.to_hex()];
        let plan = plan_utc(&repo, &opts).unwrap();
        let group = &plan.groups[0].snapshots;
        assert_eq!(group.len(), 2);
        assert_eq!(
            (group[0].id, group[0].action, group[0].explicit),
            (new, Action::Remove, true)
        );
        // The policy decides among what remains: the older one is now the last.
        assert_eq!(
            (group[1].id, group[1].action, &group[1].reasons),
            (old, Action::Keep, &vec![Reason::Last])
        );
        execute(&repo, &plan).unwrap();
        assert_eq!(remaining(&repo), vec![old]);
    }

    #[test]
    fn ids_without_a_policy_list_only_those_snapshots() {
        let (repo, _storage, _cache) = test_repo();
        let a = repo.save_snapshot(&snapshot("a", "/x", &[], T0)).unwrap();
        let b = repo
            .save_snapshot(&snapshot("a", "/x", &[], T0 + 1))
            .unwrap();
        let opts = ForgetOptions {
            ids: vec!["latest".into()],
            ..ForgetOptions::default()
        };
        let plan = plan_utc(&repo, &opts).unwrap();
        assert_eq!((plan.keep, plan.remove), (0, 1));
        assert_eq!(plan.to_remove().next().unwrap().id, b);
        execute(&repo, &plan).unwrap();
        assert_eq!(remaining(&repo), vec![a]);
    }

    #[test]
    fn unknown_ids_and_empty_policies_are_refused() {
        let (repo, _storage, _cache) = test_repo();
        repo.save_snapshot(&snapshot("a", "/x", &[], T0)).unwrap();
        let err = plan_utc(&repo, &ForgetOptions::default()).unwrap_err();
        assert!(err.to_string().contains("no policy"), "{err}");
        let opts = ForgetOptions {
            ids: vec!["00ff".into()],
            ..ForgetOptions::default()
        };
        assert!(plan_utc(&repo, &opts).unwrap_err().is_not_found());
        assert_eq!(remaining(&repo).len(), 1);
    }

    #[test]
    fn a_plan_made_before_a_snapshot_vanished_is_refused() {
        let (repo, _storage, _cache) = test_repo();
        let a = repo.save_snapshot(&snapshot("a", "/x", &[], T0)).unwrap();
        let b = repo
            .save_snapshot(&snapshot("a", "/x", &[], T0 + DAY))
            .unwrap();
        let c = repo
            .save_snapshot(&snapshot("a", "/x", &[], T0 + 2 * DAY))
            .unwrap();
        let plan = plan_utc(
            &repo,
            &options(Policy {
                keep_last: 2,
                ..Policy::default()
            }),
        )
        .unwrap();
        repo.remove_snapshot(&c).unwrap();
        let err = execute(&repo, &plan).unwrap_err();
        assert!(err.to_string().contains("run forget again"), "{err}");
        assert_eq!(remaining(&repo), vec![a, b]);
        // A snapshot added since is simply not part of the plan.
        let plan = plan_utc(
            &repo,
            &options(Policy {
                keep_last: 1,
                ..Policy::default()
            }),
        )
        .unwrap();
        let d = repo
            .save_snapshot(&snapshot("a", "/x", &[], T0 + 3 * DAY))
            .unwrap();
        assert_eq!(execute(&repo, &plan).unwrap().removed, vec![a]);
        assert_eq!(remaining(&repo), vec![b, d]);
    }

    #[test]
    fn forget_is_refused_while_another_process_holds_a_lock() {
        let (repo, _storage, _cache) = test_repo();
        repo.save_snapshot(&snapshot("a", "/x", &[], T0)).unwrap();
        repo.save_snapshot(&snapshot("a", "/x", &[], T0 + 1))
            .unwrap();
        let plan = plan_utc(
            &repo,
            &options(Policy {
                keep_last: 1,
                ..Policy::default()
            }),
        )
        .unwrap();
        let held = repo.lock(LockKind::Shared, "backup").unwrap();
        let err = execute(&repo, &plan).unwrap_err();
        assert!(matches!(err, Error::Locked(_)), "{err}");
        drop(held);
        assert_eq!(remaining(&repo).len(), 2);
    }

    #[test]
    fn a_dry_run_removes_nothing_and_the_plan_serialises() {
        let (repo, _storage, _cache) = test_repo();
        repo.save_snapshot(&snapshot("a", "/x", &["keep"], T0))
            .unwrap();
        repo.save_snapshot(&snapshot("a", "/x", &[], T0 + 1))
            .unwrap();
        let mut opts = options(Policy {
            keep_within: Some("1h".parse().unwrap()),
            keep_tags: vec!["keep".into()],
            ..Policy::default()
        });
        opts.dry_run = true;
        let (plan, report) = forget(&repo, &opts).unwrap();
        assert!(report.is_none());
        assert_eq!(remaining(&repo).len(), 2);
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["policy"]["keep_within"], "1h");
        assert_eq!(json["groups"][0]["key"]["host"], "a");
        assert!(json["groups"][0]["key"].get("tags").is_none());
        let first = &json["groups"][0]["snapshots"][0];
        assert_eq!(first["action"], "keep");
        assert_eq!(first["reasons"][0], "within 1h");
        assert_eq!(json["groups"][0]["snapshots"][1]["reasons"][0], "tag:keep");
    }

    #[test]
    fn group_by_parses_words_and_refuses_others() {
        let by: GroupBy = "host,paths,tags".parse().unwrap();
        assert!(by.host && by.paths && by.tags);
        let by: GroupBy = " tags ".parse().unwrap();
        assert!(!by.host && !by.paths && by.tags);
        let by: GroupBy = "".parse().unwrap();
        assert!(!by.host && !by.paths && !by.tags);
        assert_eq!(GroupBy::default(), "host,paths".parse().unwrap());
        let err = "host,hostname".parse::<GroupBy>().unwrap_err();
        assert!(err.to_string().contains("\"hostname\""), "{err}");
    }
}
