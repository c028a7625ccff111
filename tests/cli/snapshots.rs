//! `arca snapshots`: the list of snapshots.

use crate::common::*;

#[test]
fn snapshots_json_lists_id_paths_tags_host_and_summary() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 1000));
    env.write_file("g/h", b"h");
    let report = env.backup(&[&env.src], &["--tag", "nightly", "--host", "db1"]);
    let list = env.json(&["snapshots"]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let s = &list[0];
    let id = s["id"].as_str().unwrap();
    assert_eq!(id, report["snapshot_id"].as_str().unwrap());
    assert_eq!(id.len(), 64);
    assert_eq!(s["short_id"].as_str().unwrap(), &id[..8]);
    assert_eq!(
        s["paths"],
        serde_json::json!([env.src.display().to_string()])
    );
    assert_eq!(s["tags"], serde_json::json!(["nightly"]));
    assert_eq!(s["host"], "db1");
    assert_eq!(s["summary"]["files_new"], 2);
    assert_eq!(s["summary"]["dirs"], 2);
    assert_eq!(s["summary"]["bytes_read"], 1001);
    assert!(s["time"]["secs"].as_i64().unwrap() > 1_600_000_000);
    env.assert_verified();
}

#[test]
fn snapshots_are_listed_oldest_first_in_text_and_json() {
    let env = TestEnv::init();
    env.write_file("f", b"1");
    let first = env.backup_src();
    env.write_file("f", b"22");
    let second = env.backup_src();
    let list = env.json(&["snapshots"]);
    assert_eq!(list[0]["id"], first["snapshot_id"]);
    assert_eq!(list[1]["id"], second["snapshot_id"]);
    assert_eq!(list[1]["parent"], first["snapshot_id"]);
    let text = stdout(env.arca(&["snapshots"]).assert().success().get_output());
    let short = |v: &serde_json::Value| v["snapshot_id"].as_str().unwrap()[..8].to_string();
    let (a, b) = (
        text.find(&short(&first)).unwrap(),
        text.find(&short(&second)).unwrap(),
    );
    assert!(a < b, "{text}");
    assert!(text.contains("2 snapshot(s)"), "{text}");
    env.assert_verified();
}

#[test]
fn snapshots_of_an_empty_repository_is_an_empty_list() {
    let env = TestEnv::init();
    assert_eq!(env.json(&["snapshots"]), serde_json::json!([]));
    env.assert_verified();
}

#[test]

fn a_damaged_snapshot_file_does_not_hide_the_others_or_stop_backups() {
    let env = TestEnv::init();
    env.write_file("f", b"1");
    env.backup(&[&env.src], &["--tag", "first"]);
    env.write_file("f", b"22");
    env.backup(&[&env.src], &["--tag", "second"]);
    let list = env.json(&["snapshots", "--tag", "first"]);
    let first = list[0]["id"].as_str().unwrap();
    let file = env.repo.join("snapshots").join(first);
    let len = std::fs::metadata(&file).unwrap().len() as usize;
    flip_bit(&file, len - 3);
    std::fs::remove_dir_all(&env.cache).unwrap();
    // The damage is verify's to report; listing, `latest` and new backups still work.
    // Listed with a warning naming the damaged file, and exit 3: completed with problems.
    let out = env.arca(&["--json", "snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("snapshots/"), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    env.restore(&env.latest_src(), "restored", &[]);
    env.backup_src();
}

#[test]
fn snapshots_path_filter_matches_backed_up_paths() {
    let env = TestEnv::init();
    env.write_file("a/f", b"a");
    env.write_file("b/f", b"b");
    env.backup(&[&env.src.join("a")], &[]);
    env.backup(&[&env.src.join("b"), &env.src.join("a")], &[]);
    let a = env.src.join("a").display().to_string();
    let b = env.src.join("b").display().to_string();
    assert_eq!(
        env.json(&["snapshots", "--path", &a])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        env.json(&["snapshots", "--path", &b])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        env.json(&["snapshots", "--path", &a, "--path", &b])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    env.assert_verified();
}
