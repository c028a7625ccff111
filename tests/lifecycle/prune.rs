//! Tests of `arca prune`.

use std::fs;

use crate::common::*;

/// Three backups of a changing tree; returns the snapshot ids, oldest first.
fn three_generations(env: &TestEnv) -> Vec<String> {
    let mut ids = Vec::new();
    for generation in 0..3u64 {
        env.write_file("stable.bin", &pseudo_random(1, 300_000));
        env.write_file(
            &format!("gen{generation}.bin"),
            &pseudo_random(10 + generation, 1_500_000),
        );
        if generation > 0 {
            fs::remove_file(env.src.join(format!("gen{}.bin", generation - 1))).unwrap();
        }
        let report = env.backup_src();
        ids.push(report["snapshot_id"].as_str().unwrap().to_string());
    }
    ids
}

fn forget_snapshot(env: &TestEnv, id: &str) {
    fs::remove_file(env.repo.join("snapshots").join(id)).unwrap();
}

#[test]
fn prune_deletes_what_no_snapshot_needs_and_the_rest_still_restores() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    let ids = three_generations(&env);
    forget_snapshot(&env, &ids[0]);
    let before: u64 = env
        .packs()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    let out = env.json(&["prune"]);
    assert!(
        out["report"]["bytes_freed"].as_i64().unwrap() > 1_000_000,
        "{out}"
    );
    let after: u64 = env
        .packs()
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert!(after + 1_000_000 < before, "{before} -> {after}");
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("gen2.bin")).unwrap(),
        pseudo_random(12, 1_500_000)
    );
    assert_eq!(
        fs::read(restored.join("stable.bin")).unwrap(),
        pseudo_random(1, 300_000)
    );
    let second = format!("{}:{}", &ids[1][..8], env.src.display());
    let restored = env.restore(&second, "second", &[]);
    assert_eq!(
        fs::read(restored.join("gen1.bin")).unwrap(),
        pseudo_random(11, 1_500_000)
    );
    env.assert_verified();
}

#[test]
fn prune_dry_run_prints_the_plan_and_changes_nothing() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    let ids = three_generations(&env);
    forget_snapshot(&env, &ids[0]);
    let before = env.repo_files();
    let out = env
        .arca(&["prune", "--dry-run"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = text(&out);
    assert!(
        text.contains("delete") && text.contains("dry run"),
        "{text}"
    );
    let plan = env.json(&["prune", "--dry-run"]);
    assert!(
        plan["plan"]["packs_to_delete"].as_u64().unwrap() >= 1,
        "{plan}"
    );
    assert!(plan["report"].is_null());
    let mut after = env.repo_files();
    after.retain(|k, _| !k.starts_with("locks/"));
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    env.assert_verified();
}

#[test]
fn a_second_prune_has_nothing_left_to_do() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    let ids = three_generations(&env);
    forget_snapshot(&env, &ids[1]);
    env.arca(&["prune"]).assert().success();
    let plan = env.json(&["prune", "--dry-run"]);
    assert_eq!(plan["plan"]["packs_to_delete"], 0, "{plan}");
    assert_eq!(plan["plan"]["packs_to_repack"], 0, "{plan}");
    env.assert_verified();
}

#[test]
fn prune_refuses_to_delete_anything_when_a_needed_pack_is_missing() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(3, 200_000));
    env.backup_src();
    env.write_file("b.bin", &pseudo_random(4, 200_000));
    let second = env.backup_src();
    forget_snapshot(&env, second["snapshot_id"].as_str().unwrap());
    // The first snapshot's data is gone: prune must not take that as licence to delete.
    for pack in env.packs() {
        fs::remove_file(pack).unwrap();
    }
    let out = env.fails(&["prune"], EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("prune deletes nothing") && line.contains("arca repair snapshots"),
        "{line}"
    );
}

#[test]
fn prune_keeps_data_a_tolerated_amount_of_waste_allows() {
    let env = TestEnv::init();
    // One pack holds both files; forgetting the snapshot with the small one leaves waste
    // far below 50%, so nothing is repacked.
    env.write_file("big.bin", &pseudo_random(5, 2_000_000));
    let first = env.backup_src();
    env.write_file("small.bin", &pseudo_random(6, 20_000));
    env.backup_src();
    forget_snapshot(&env, first["snapshot_id"].as_str().unwrap());
    let plan = env.json(&["prune", "--dry-run", "--max-unused", "50%"]);
    assert_eq!(plan["plan"]["packs_to_repack"], 0, "{plan}");
    let bad = env.fails(&["prune", "--max-unused", "150%"], EXIT_USAGE);
    assert!(error_line(&bad).contains("max-unused"));
    env.assert_verified();
}

#[test]
fn partly_used_tree_packs_are_repacked_whatever_waste_is_tolerated() {
    let env = TestEnv::init();
    env.write_file("a/kept.txt", b"unchanged directory");
    env.write_file("b/changes.txt", b"first version");
    let first = env.backup_src();
    env.write_file("b/changes.txt", b"second version, longer");
    env.backup_src();
    // The first backup's tree pack still holds a/'s tree (shared with the second snapshot)
    // next to the first versions of b/ and the root, which nothing needs any more.
    forget_snapshot(&env, first["snapshot_id"].as_str().unwrap());
    let plan = env.json(&["prune", "--dry-run", "--max-unused", "100%"]);
    let repacked: Vec<&serde_json::Value> = plan["plan"]["packs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["action"] == "repack")
        .collect();
    assert_eq!(repacked.len(), 1, "{plan}");
    assert_eq!(repacked[0]["trees"], true, "{plan}");
    env.arca(&["prune", "--max-unused", "100%"])
        .assert()
        .success();
    let after = env.json(&["prune", "--dry-run", "--max-unused", "100%"]);
    assert_eq!(after["plan"]["packs_to_repack"], 0, "{after}");
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("a/kept.txt")).unwrap(),
        b"unchanged directory"
    );
    env.assert_verified();
}

#[test]
fn prune_refuses_to_delete_anything_when_an_index_segment_is_damaged() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    let ids = three_generations(&env);
    forget_snapshot(&env, &ids[0]);
    let segment = fs::read_dir(env.repo.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&segment, &bytes).unwrap();
    let before = env.repo_files();
    let out = env.fails(&["prune"], EXIT_ERROR);
    let line = error_line(&out);
    let name = segment.file_name().unwrap().to_str().unwrap();
    assert!(
        line.contains(name) && line.contains("prune deletes nothing"),
        "{line}"
    );
    assert_eq!(
        env.repo_files().keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
}
