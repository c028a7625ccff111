//! Tests of `arca forget`. Time bucketing (days, weeks, clock changes) is tested in the
//! policy's unit tests: backups made here are seconds apart.

use std::fs;
use std::sync::Arc;

use arca::repository::{LockKind, Repository};
use arca::storage::LocalStorage;
use serde_json::Value;

use crate::common::*;

/// Backs up `src/` with `extra` options; returns the snapshot id.
fn backup(env: &TestEnv, extra: &[&str]) -> String {
    let report = env.backup(&[&env.src], extra);
    report["snapshot_id"].as_str().unwrap().to_string()
}

/// Three backups of a changing file; returns their ids, oldest first.
fn three_backups(env: &TestEnv) -> Vec<String> {
    (0..3u64)
        .map(|n| {
            env.write_file("data.bin", &pseudo_random(n, 20_000));
            backup(env, &[])
        })
        .collect()
}

/// The ids of the repository's snapshots, oldest first.
fn snapshot_ids(env: &TestEnv) -> Vec<String> {
    let listed = env.json(&["snapshots"]);
    listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn short(id: &str) -> &str {
    &id[..8]
}

/// The printed line of a snapshot in `forget`'s listing.
fn line_of<'a>(stdout: &'a str, id: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(short(id)))
        .unwrap_or_else(|| panic!("no line for {id} in:\n{stdout}"))
}

/// The plan's snapshots of every group, in order, as (id, action, reasons).
fn planned(plan: &Value) -> Vec<(String, String, Vec<String>)> {
    plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["snapshots"].as_array().unwrap())
        .map(|s| {
            let reasons = s["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_string())
                .collect();
            (
                s["id"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
                reasons,
            )
        })
        .collect()
}

#[test]
fn keep_last_removes_older_snapshots_and_the_rest_still_restores() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    let out = env.arca(&["forget", "--keep-last", "2"]).assert().success();
    let printed = stdout(out.get_output());
    assert!(line_of(&printed, &ids[2]).contains("keep"), "{printed}");
    assert!(line_of(&printed, &ids[2]).ends_with("last"), "{printed}");
    assert!(line_of(&printed, &ids[1]).contains("keep"), "{printed}");
    assert!(line_of(&printed, &ids[0]).contains("remove"), "{printed}");
    assert!(
        printed.contains("keep 2, remove 1 snapshot(s) in 1 group(s)"),
        "{printed}"
    );
    assert!(printed.contains("removed 1 snapshot(s)"), "{printed}");
    assert_eq!(snapshot_ids(&env), ids[1..]);
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("data.bin")).unwrap(),
        pseudo_random(2, 20_000)
    );
    assert!(env.repo_dir_files("locks").is_empty());
    env.assert_verified();
}

#[test]
fn a_dry_run_prints_the_plan_and_changes_nothing() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    let before = env.repo_files();
    let out = env
        .arca(&["forget", "--keep-last", "1", "--dry-run"])
        .assert()
        .success();
    let printed = stdout(out.get_output());
    assert!(line_of(&printed, &ids[0]).contains("remove"), "{printed}");
    assert!(
        printed.contains("dry run: nothing was removed"),
        "{printed}"
    );
    let json = env.json(&["forget", "--keep-last", "1", "-n"]);
    assert!(json["report"].is_null(), "{json}");
    assert_eq!(json["plan"]["remove"], 2, "{json}");
    assert!(
        env.repo_files() == before,
        "a dry run changed the repository"
    );
    assert_eq!(snapshot_ids(&env), ids);
    env.assert_verified();
}

#[test]
fn json_lists_every_snapshot_with_its_reasons_and_what_was_removed() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"one");
    let tagged = backup(&env, &["--tag", "keep"]);
    env.write_file("a.txt", b"two");
    let middle = backup(&env, &[]);
    env.write_file("a.txt", b"three");
    let newest = backup(&env, &[]);
    let json = env.json(&["forget", "--keep-last", "1", "--keep-tag", "keep"]);
    let plan = &json["plan"];
    assert_eq!(plan["groups"].as_array().unwrap().len(), 1, "{json}");
    let key = &plan["groups"][0]["key"];
    assert_eq!(key["paths"], env.json(&["snapshots"])[0]["paths"], "{json}");
    assert!(
        key["host"].is_string() && key.get("tags").is_none(),
        "{json}"
    );
    assert_eq!(
        planned(plan),
        vec![
            (newest.clone(), "keep".into(), vec!["last".into()]),
            (middle.clone(), "remove".into(), vec![]),
            (tagged.clone(), "keep".into(), vec!["tag:keep".into()]),
        ]
    );
    assert_eq!(
        (plan["keep"].as_u64(), plan["remove"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(plan["policy"]["keep_last"], 1);
    assert_eq!(plan["policy"]["keep_tags"][0], "keep");
    assert_eq!(json["report"]["removed"], serde_json::json!([middle]));
    assert_eq!(snapshot_ids(&env), vec![tagged, newest]);
    env.assert_verified();
}

#[test]
fn json_with_prune_is_one_document_holding_what_prune_did() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    env.write_file("old.bin", &pseudo_random(3, 1_500_000));
    let old = backup(&env, &[]);
    fs::remove_file(env.src.join("old.bin")).unwrap();
    env.write_file("new.bin", &pseudo_random(4, 300_000));
    backup(&env, &[]);

    // Parsed as a single JSON value: a second document after the first fails here.
    let json = env.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(
        json["report"]["removed"],
        serde_json::json!([old]),
        "{json}"
    );
    let prune = &json["prune"];
    assert!(
        prune["report"]["packs_deleted"].as_u64().unwrap() >= 1,
        "{json}"
    );
    assert!(
        prune["report"]["bytes_freed"].as_i64().unwrap() > 1_000_000,
        "{json}"
    );
    assert!(prune["plan"]["packs"].is_array(), "{json}");

    // Nothing removed: prune does not run, and says so with null.
    let json = env.json(&["forget", "--keep-last", "1", "--prune"]);
    assert!(json["prune"].is_null(), "{json}");
    env.assert_verified();
}

#[test]
fn each_host_is_a_group_and_host_filters_what_the_policy_touches() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"same everywhere");
    let alpha1 = backup(&env, &["--host", "alpha"]);
    let beta1 = backup(&env, &["--host", "beta"]);
    let alpha2 = backup(&env, &["--host", "alpha"]);
    let beta2 = backup(&env, &["--host", "beta"]);

    let json = env.json(&["forget", "--host", "alpha", "--keep-last", "1"]);
    assert_eq!(
        json["plan"]["groups"].as_array().unwrap().len(),
        1,
        "{json}"
    );
    assert_eq!(json["plan"]["groups"][0]["key"]["host"], "alpha");
    assert_eq!(
        snapshot_ids(&env),
        vec![beta1.clone(), alpha2.clone(), beta2.clone()]
    );
    assert_ne!(alpha1, alpha2);

    let out = env.arca(&["forget", "--keep-last", "1"]).assert().success();
    let printed = stdout(out.get_output());
    assert!(printed.contains("host alpha, paths "), "{printed}");
    assert!(printed.contains("host beta, paths "), "{printed}");
    assert!(
        printed.contains("keep 2, remove 1 snapshot(s) in 2 group(s)"),
        "{printed}"
    );
    assert_eq!(snapshot_ids(&env), vec![alpha2.clone(), beta2.clone()]);

    let json = env.json(&["forget", "--group-by", "", "--keep-last", "1"]);
    assert_eq!(
        json["plan"]["groups"][0]["key"],
        serde_json::json!({}),
        "{json}"
    );
    assert_eq!(json["report"]["removed"], serde_json::json!([alpha2]));
    assert_eq!(snapshot_ids(&env), vec![beta2]);
    env.assert_verified();
}

#[test]
fn grouping_by_tags_keeps_the_newest_of_each_tag_set() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"x");
    let daily1 = backup(&env, &["--tag", "daily"]);
    let manual = backup(&env, &["--tag", "manual"]);
    let daily2 = backup(&env, &["--tag", "daily"]);
    let json = env.json(&["forget", "--group-by", "host,tags", "--keep-last", "1"]);
    assert_eq!(
        json["plan"]["groups"].as_array().unwrap().len(),
        2,
        "{json}"
    );
    assert_eq!(json["report"]["removed"], serde_json::json!([daily1]));
    assert_eq!(snapshot_ids(&env), vec![manual, daily2]);
    env.assert_verified();
}

#[test]
fn snapshots_named_by_id_are_removed_whatever_the_policy() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    let out = env.arca(&["forget", short(&ids[1])]).assert().success();
    let printed = stdout(out.get_output());
    let line = line_of(&printed, &ids[1]);
    assert!(
        line.contains("remove") && line.contains("named on the command line"),
        "{printed}"
    );
    assert!(printed.contains("keep 0, remove 1"), "{printed}");
    assert_eq!(snapshot_ids(&env), vec![ids[0].clone(), ids[2].clone()]);

    // `latest` is removed although --keep-last 5 would keep it; the policy keeps the rest.
    let json = env.json(&["forget", "latest", "--keep-last", "5"]);
    assert_eq!(
        json["report"]["removed"],
        serde_json::json!([ids[2]]),
        "{json}"
    );
    assert_eq!(snapshot_ids(&env), vec![ids[0].clone()]);

    let out = env.fails(&["forget", "ffffffffffff"], EXIT_ERROR);
    assert!(error_line(&out).contains("not found"), "{}", stderr(&out));
    let out = env.fails(&["forget", "not-an-id"], EXIT_ERROR);
    assert!(error_line(&out).contains("not-an-id"), "{}", stderr(&out));
    env.assert_verified();
}

#[test]
fn keep_within_keeps_what_was_made_within_the_duration_of_the_newest() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    let out = env
        .arca(&["forget", "--keep-within", "1d"])
        .assert()
        .success();
    let printed = stdout(out.get_output());
    for id in &ids {
        assert!(line_of(&printed, id).ends_with("within 1d"), "{printed}");
    }
    assert_eq!(snapshot_ids(&env), ids);
    env.assert_verified();
}

#[test]
fn forget_without_a_policy_or_ids_and_bad_options_are_usage_errors() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    for args in [
        &["forget"][..],
        &["forget", "--keep-last", "0"],
        &["forget", "--dry-run"],
    ] {
        let out = env.fails(args, EXIT_USAGE);
        let line = error_line(&out);
        assert!(
            line.contains("--keep-last") && line.contains("ids"),
            "{line}"
        );
    }
    let bad: [(&[&str], &str); 5] = [
        (&["forget", "--keep-within", "7x"], "'x' is not a unit"),
        (
            &["forget", "--keep-within-daily", "0d"],
            "zero keeps nothing",
        ),
        (&["forget", "--keep-daily", "-1"], "-1"),
        (&["forget", "--keep-weekly", "many"], "many"),
        (
            &["forget", "--keep-last", "1", "--group-by", "hostname"],
            "\"hostname\"",
        ),
    ];
    for (args, why) in bad {
        let out = env.fails(args, EXIT_USAGE);
        assert!(stderr(&out).contains(why), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(snapshot_ids(&env), ids);
    env.assert_verified();
}

#[test]
fn forget_waits_for_nobody_and_removes_nothing_while_the_repository_is_locked() {
    let env = TestEnv::init();
    let ids = three_backups(&env);
    let repo = Repository::open(
        Arc::new(LocalStorage::new(&env.repo)),
        PASSWORD.as_bytes(),
        &env.cache,
    )
    .unwrap();
    let held = repo.lock(LockKind::Shared, "backup").unwrap();
    let out = env.fails(&["forget", "--keep-last", "1"], EXIT_ERROR);
    assert!(error_line(&out).contains("in use"), "{}", stderr(&out));
    // A dry run takes no lock.
    let json = env.json(&["forget", "--keep-last", "1", "--dry-run"]);
    assert_eq!(json["plan"]["remove"], 2);
    drop(held);
    assert_eq!(snapshot_ids(&env), ids);
    env.arca(&["forget", "--keep-last", "1"]).assert().success();
    assert_eq!(snapshot_ids(&env), ids[2..]);
    env.assert_verified();
}

#[test]
fn forget_with_prune_removes_the_data_only_forgotten_snapshots_needed() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    env.write_file("old.bin", &pseudo_random(1, 1_500_000));
    backup(&env, &[]);
    fs::remove_file(env.src.join("old.bin")).unwrap();
    env.write_file("new.bin", &pseudo_random(2, 300_000));
    let newest = backup(&env, &[]);
    let size = |env: &TestEnv| -> u64 {
        env.packs()
            .iter()
            .map(|p| fs::metadata(p).unwrap().len())
            .sum()
    };
    let before = size(&env);

    // A dry run neither forgets nor prunes.
    let out = env
        .arca(&["forget", "--keep-last", "1", "--prune", "--dry-run"])
        .assert()
        .success();
    assert!(stdout(out.get_output()).contains("prune not run"));
    assert_eq!(size(&env), before);

    let out = env
        .arca(&["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    let printed = stdout(out.get_output());
    assert!(
        printed.contains("removed 1 snapshot(s)") && printed.contains("freed"),
        "{printed}"
    );
    assert!(
        size(&env) + 1_000_000 < before,
        "{before} -> {}",
        size(&env)
    );
    assert_eq!(snapshot_ids(&env), vec![newest]);
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("new.bin")).unwrap(),
        pseudo_random(2, 300_000)
    );
    // Nothing to forget: prune is not run.
    let out = env
        .arca(&["forget", "--keep-last", "1", "--prune"])
        .assert()
        .success();
    assert!(!stdout(out.get_output()).contains("freed"));
    env.assert_verified();
}
