//! `arca verify` on sound repositories, and its options. (Damaged repositories are in
//! `bad_input`.)

use crate::common::*;

fn backed_up() -> TestEnv {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    for i in 0..4u64 {
        env.write_file(&format!("f{i}"), &pseudo_random(i, 700_000));
    }
    env.backup_src();
    env
}

#[test]
fn verify_of_a_clean_repository_exits_0() {
    let env = backed_up();
    let out = stdout(env.arca(&["verify"]).assert().success().get_output());
    assert!(out.contains("no damage found"), "{out}");
    let report = env.json(&["verify", "--read-data"]);
    assert!(report["damage"].as_array().unwrap().is_empty(), "{report}");
    assert_eq!(report["packs_read"], report["packs"], "{report}");
    assert!(
        report["packs"].as_u64().unwrap() >= 3,
        "expected several packs: {report}"
    );
    assert_eq!(report["snapshots"], 1);
    env.assert_verified();
}

#[test]
fn verify_read_data_subsets_are_accepted() {
    let env = backed_up();
    let packs = env.json(&["verify"])["packs"].as_u64().unwrap();
    let first = env.json(&["verify", "--read-data-subset", "1/2"])["packs_read"]
        .as_u64()
        .unwrap();
    let second = env.json(&["verify", "--read-data-subset", "2/2"])["packs_read"]
        .as_u64()
        .unwrap();
    assert_eq!(
        first + second,
        packs,
        "the two halves should cover every pack once"
    );
    env.arca(&["verify", "--read-data-subset", "50%"])
        .assert()
        .success();
    let all = env.json(&["verify", "--read-data-subset", "100%"])["packs_read"]
        .as_u64()
        .unwrap();
    assert_eq!(all, packs);
    env.assert_verified();
}

#[test]
fn verify_refuses_an_invalid_subset_as_a_usage_error() {
    let env = backed_up();
    for bad in ["0/2", "3/2", "abc", "0%", "101%", "1/0", ""] {
        let out = env.fails(&["verify", "--read-data-subset", bad], EXIT_USAGE);
        assert!(
            stderr(&out).contains("--read-data-subset"),
            "{bad}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn verify_of_an_empty_repository_exits_0() {
    let env = TestEnv::init();
    env.assert_verified();
}
