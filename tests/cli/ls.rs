//! `arca ls`: the entries of a snapshot.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::common::*;

fn listed_env() -> TestEnv {
    let env = TestEnv::init();
    let f = env.write_file("dir/file.txt", b"twelve bytes");
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    env.write_file("other", b"o");
    std::os::unix::fs::symlink("file.txt", env.src.join("dir/link")).unwrap();
    env.backup_src();
    env
}

#[test]
fn ls_lists_every_path_of_a_snapshot() {
    let env = listed_env();
    let out = stdout(env.arca(&["ls", "latest"]).assert().success().get_output());
    let src = env.src.display().to_string();
    for p in ["/dir", "/dir/file.txt", "/dir/link", "/other"] {
        assert!(
            out.lines().any(|l| l == format!("{src}{p}")),
            "{p} missing from:\n{out}"
        );
    }
    // The source path's ancestors are part of the snapshot too.
    assert!(out.lines().any(|l| l == src));
    env.assert_verified();
}

#[test]
fn ls_path_long_shows_type_mode_size_and_link_target() {
    let env = listed_env();
    let dir = format!("{}/dir", env.src.display());
    let out = stdout(
        env.arca(&["ls", "latest", &dir, "--long"])
            .assert()
            .success()
            .get_output(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].starts_with("drwx") && lines[0].ends_with(&dir),
        "{out}"
    );
    let file = lines.iter().find(|l| l.contains("file.txt")).unwrap();
    assert!(
        file.starts_with("-rw-r----- ") && file.contains(" 12 "),
        "{file}"
    );
    let link = lines.iter().find(|l| l.contains("/dir/link")).unwrap();
    assert!(
        link.starts_with('l') && link.ends_with(" -> file.txt"),
        "{link}"
    );
    env.assert_verified();
}

#[test]
fn ls_json_prints_one_object_per_line() {
    let env = listed_env();
    let dir = format!("{}/dir", env.src.display());
    let out = stdout(
        env.arca(&["--json", "ls", "latest", &dir])
            .assert()
            .success()
            .get_output(),
    );
    let entries: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries.len(), 3, "{out}");
    let file = entries
        .iter()
        .find(|e| e["path"] == format!("{dir}/file.txt"))
        .unwrap();
    assert_eq!(file["type"], "file");
    assert_eq!(file["size"], 12);
    assert_eq!(file["mode"].as_u64().unwrap() & 0o7777, 0o640);
    assert_eq!(file["permissions"], "-rw-r-----");
    let link = entries
        .iter()
        .find(|e| e["path"] == format!("{dir}/link"))
        .unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "file.txt");
    assert!(file.get("target").is_none());
    env.assert_verified();
}

#[test]
fn ls_of_a_missing_path_fails_naming_it() {
    let env = listed_env();
    let path = format!("{}/nothing-here", env.src.display());
    let out = env.fails(&["ls", "latest", &path], EXIT_ERROR);
    assert!(error_line(&out).contains("nothing-here"));
}

#[test]
fn ls_latest_in_an_empty_repository_fails() {
    let env = TestEnv::init();
    let out = env.fails(&["ls", "latest"], EXIT_ERROR);
    assert!(error_line(&out).contains("snapshot"));
}
