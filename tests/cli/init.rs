//! `arca init`

use crate::common::*;

#[test]
fn init_creates_a_repository() {
    let env = TestEnv::new();
    let out = env
        .arca(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .assert()
        .success();
    assert!(stdout(out.get_output()).contains("created repository"));
    assert!(env.repo.join("config").is_file());
    assert_eq!(env.repo_dir_files("keys").len(), 1);
    for dir in ["index", "snapshots", "locks", "packs/00", "packs/ff"] {
        assert!(env.repo.join(dir).is_dir(), "{dir} missing");
    }
    env.assert_verified();
}

#[test]
fn init_twice_fails_saying_the_repository_exists() {
    let env = TestEnv::init();
    let out = env.fails(
        &["init", "--kdf-memory", "64", "--kdf-iterations", "1"],
        EXIT_ERROR,
    );
    let line = error_line(&out);
    assert!(line.contains("already exists"), "{line}");
    assert!(line.contains(&env.repo.display().to_string()), "{line}");
    env.assert_verified();
}

#[test]
fn init_json_output_parses() {
    let env = TestEnv::new();
    let v = env.json(&[
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "--pack-size",
        "2",
    ]);
    let id = v["id"].as_str().unwrap();
    assert_eq!(id.len(), 64, "{v}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{v}");
    assert_eq!(
        v["repository"].as_str().unwrap(),
        env.repo.display().to_string()
    );
    assert_eq!(v["config"]["pack_size"], 2 << 20, "{v}");
    assert_eq!(v["config"]["repo_id"].as_str().unwrap(), id);
    env.assert_verified();
}

#[test]
fn init_refuses_an_out_of_range_pack_size() {
    let env = TestEnv::new();
    let out = env.fails(
        &[
            "init",
            "--kdf-memory",
            "64",
            "--kdf-iterations",
            "1",
            "--pack-size",
            "0",
        ],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("pack size"));
    assert!(!env.repo.join("config").exists());
}

#[test]
fn init_into_an_existing_empty_directory_works() {
    let env = TestEnv::new();
    std::fs::create_dir(&env.repo).unwrap();
    env.arca(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"])
        .assert()
        .success();
    env.assert_verified();
}

#[test]
fn the_repository_can_be_given_with_r_instead_of_the_environment() {
    let env = TestEnv::new();
    let repo = env.repo.to_str().unwrap();
    let init = [
        "init",
        "--kdf-memory",
        "64",
        "--kdf-iterations",
        "1",
        "-r",
        repo,
    ];
    env.arca(&init)
        .env_remove("ARCA_REPOSITORY")
        .assert()
        .success();
    env.arca(&["snapshots", "--repo", repo])
        .env_remove("ARCA_REPOSITORY")
        .assert()
        .success();
    env.assert_verified();
}
