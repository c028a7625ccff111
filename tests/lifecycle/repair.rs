//! Tests of `arca repair index` and `arca repair snapshots`.

use std::fs;

use crate::common::*;

#[test]
fn repair_index_rebuilds_lost_index_segments_from_the_packs() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(1, 400_000));
    env.write_file("b/c.txt", b"some text");
    env.backup_src();
    for segment in env.repo_dir_files("index") {
        fs::remove_file(segment).unwrap();
    }
    env.fails(&["verify"], EXIT_PROBLEMS);
    let report = env.json(&["repair", "index"]);
    assert!(report["blobs_indexed"].as_u64().unwrap() >= 3, "{report}");
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("a.bin")).unwrap(),
        pseudo_random(1, 400_000)
    );
    env.assert_verified();
}

#[test]
fn repair_snapshots_drops_lost_files_lists_them_and_keeps_the_rest() {
    let env = TestEnv::init();
    env.write_file("keep.txt", b"still here");
    env.backup_src();
    let kept_packs = env.packs();
    env.write_file("lost.bin", &pseudo_random(2, 300_000));
    let second = env.backup_src();
    // Lose the pack that holds lost.bin's data (the second backup's data pack).
    let data_pack = env
        .packs()
        .into_iter()
        .filter(|p| !kept_packs.contains(p))
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    fs::remove_file(&data_pack).unwrap();
    env.fails(&["verify"], EXIT_PROBLEMS);

    let dry = env.json(&["repair", "snapshots", "--dry-run"]);
    assert_eq!(dry["repaired"].as_array().unwrap().len(), 1, "{dry}");
    env.fails(&["verify"], EXIT_PROBLEMS);

    let report = env.json(&["repair", "snapshots", "--forget"]);
    let repaired = &report["repaired"][0];
    assert_eq!(repaired["original"], second["snapshot_id"]);
    let lost: Vec<&str> = repaired["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["path"].as_str().unwrap())
        .collect();
    assert_eq!(lost.len(), 1, "{report}");
    assert!(lost[0].ends_with("/lost.bin"), "{lost:?}");
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(fs::read(restored.join("keep.txt")).unwrap(), b"still here");
    assert!(!restored.join("lost.bin").exists());
    let snapshots = env.json(&["snapshots"]);
    assert!(snapshots.as_array().unwrap().iter().any(|s| {
        s["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "repaired")
    }));
    // With the damage cut out, prune can run again and the repository is whole.
    env.arca(&["prune"]).assert().success();
    env.assert_verified();
}

#[test]
fn the_next_backup_stores_data_again_whose_pack_went_missing() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(3, 300_000));
    env.backup_src();
    for pack in env.packs() {
        fs::remove_file(pack).unwrap();
    }
    let report = env.backup_src();
    assert!(
        report["snapshot"]["summary"]["blobs_added"]
            .as_u64()
            .unwrap()
            >= 2,
        "{report}"
    );
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("a.bin")).unwrap(),
        pseudo_random(3, 300_000)
    );
    // The older snapshot is the only damage: repair rewrites it without the lost file, and
    // prune drops the vanished packs from the index.
    env.arca(&["repair", "snapshots", "--forget"])
        .assert()
        .success();
    env.arca(&["prune"]).assert().success();
    env.assert_verified();
}
