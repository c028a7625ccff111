//! Tests of `arca key`: several passwords for one repository, changing a password, and the
//! removals that are refused because they would lock everyone out.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::*;

const SECOND: &str = "a second, different password";

/// Cheap argon2id parameters, as `TestEnv::init` uses.
const CHEAP: [&str; 4] = ["--kdf-memory", "64", "--kdf-iterations", "1"];

/// Writes `password` (with a trailing newline, as an editor would) to a file in `env`.
fn password_file(env: &TestEnv, name: &str, password: &str) -> PathBuf {
    let path = env.path(name);
    fs::write(&path, format!("{password}\n")).unwrap();
    path
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `arca key add` with the cheap KDF and the password in `file`; returns the new key's id.
fn add_key(env: &TestEnv, file: &Path) -> String {
    let mut args = vec!["key", "add", "--new-password-file", s(file)];
    args.extend_from_slice(&CHEAP);
    let out = env.json(&args);
    out["added"].as_str().unwrap().to_string()
}

/// `arca --json ARGS` opened with the password in `file`; expects success.
fn json_with(env: &TestEnv, file: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json", "--password-file", s(file)];
    all.extend_from_slice(args);
    let out = env
        .arca(&all)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    serde_json::from_slice(&out).unwrap()
}

fn key_ids(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect()
}

fn key_in_use(list: &Value) -> String {
    let in_use: Vec<&Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["in_use"] == Value::Bool(true))
        .collect();
    assert_eq!(in_use.len(), 1, "{list}");
    in_use[0]["id"].as_str().unwrap().to_string()
}

/// Every repository file outside `keys/` (and `locks/`, empty between commands).
fn data_files(env: &TestEnv) -> BTreeMap<String, Vec<u8>> {
    let mut files = env.repo_files();
    files.retain(|name, _| !name.starts_with("keys/") && !name.starts_with("locks/"));
    files
}

#[test]
fn an_added_key_opens_the_repository_with_either_password() {
    let env = TestEnv::init();
    env.write_file("db/app.sqlite", &pseudo_random(1, 200_000));
    env.backup_src();
    let first = key_in_use(&env.json(&["key", "list"]));
    let before = data_files(&env);

    let second_file = password_file(&env, "second", SECOND);
    let added = add_key(&env, &second_file);
    assert_ne!(added, first);
    assert_eq!(
        data_files(&env),
        before,
        "adding a key wrote more than a key file"
    );

    // Either password opens it, and each says its own key is the one in use.
    let by_first = env.json(&["key", "list"]);
    let by_second = json_with(&env, &second_file, &["key", "list"]);
    assert_eq!(key_ids(&by_first).len(), 2);
    assert_eq!(key_ids(&by_first), key_ids(&by_second));
    assert_eq!(key_in_use(&by_first), first);
    assert_eq!(key_in_use(&by_second), added);
    assert_eq!(
        json_with(&env, &second_file, &["snapshots"]),
        env.json(&["snapshots"])
    );
    let restored = env.path("restored");
    env.arca(&[
        "--password-file",
        s(&second_file),
        "restore",
        &env.latest_src(),
        "--target",
        s(&restored),
    ])
    .assert()
    .success();
    assert_eq!(
        fs::read(restored.join("db/app.sqlite")).unwrap(),
        pseudo_random(1, 200_000)
    );
    env.assert_verified();
}

#[test]
fn passwd_replaces_the_password_and_rewrites_no_data() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"kept as it is");
    env.write_file("big", &pseudo_random(2, 300_000));
    env.backup_src();
    let snapshots = env.json(&["snapshots"]);
    let old = key_in_use(&env.json(&["key", "list"]));
    let before = data_files(&env);

    let new_file = password_file(&env, "new", SECOND);
    let out = env.json(&["key", "passwd", "--new-password-file", s(&new_file)]);
    assert_eq!(out["removed"].as_str().unwrap(), old);
    let new = out["added"].as_str().unwrap().to_string();
    assert_ne!(new, old);

    // Only the key changed.
    assert_eq!(
        data_files(&env),
        before,
        "changing the password rewrote data"
    );
    let keys: Vec<String> = env
        .repo_dir_files("keys")
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(keys, vec![new.clone()]);

    // The old password no longer opens the repository; the new one does, to the same
    // snapshots, and the new key kept the old one's KDF parameters.
    let line = error_line(&env.fails(&["snapshots"], EXIT_ERROR));
    assert!(line.contains("wrong password"), "{line}");
    assert_eq!(json_with(&env, &new_file, &["snapshots"]), snapshots);
    let list = json_with(&env, &new_file, &["key", "list"]);
    assert_eq!(key_in_use(&list), new);
    assert_eq!(list[0]["kdf"]["memory_kib"], 64);
    assert_eq!(list[0]["kdf"]["iterations"], 1);

    // And back, so the usual password verifies the repository.
    let old_file = password_file(&env, "old", PASSWORD);
    env.arca(&[
        "--password-file",
        s(&new_file),
        "key",
        "passwd",
        "--new-password-file",
        s(&old_file),
    ])
    .assert()
    .success();
    assert_eq!(data_files(&env), before);
    env.assert_verified();
}

#[test]
fn remove_refuses_the_last_key_and_the_key_in_use() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"hello");
    env.backup_src();
    let first = key_in_use(&env.json(&["key", "list"]));

    for args in [
        vec!["key", "remove", &first[..8]],
        vec!["key", "remove", &first, "--force"],
    ] {
        let line = error_line(&env.fails(&args, EXIT_ERROR));
        assert!(
            line.contains("last key") && line.contains("arca key add"),
            "{line}"
        );
    }

    let second_file = password_file(&env, "second", SECOND);
    let second = add_key(&env, &second_file);
    let line = error_line(&env.fails(&["key", "remove", &first[..8]], EXIT_ERROR));
    assert!(
        line.contains("in use") && line.contains("--force"),
        "{line}"
    );
    let line = error_line(&env.fails(&["key", "remove", "0123456789abcdef0123"], EXIT_ERROR));
    assert!(line.contains("not found"), "{line}");
    let line = error_line(&env.fails(&["key", "remove", "not-hex"], EXIT_ERROR));
    assert!(line.contains("not a key id"), "{line}");

    // Another key goes by its prefix; then its password opens nothing.
    let out = env.json(&["key", "remove", &second[..10]]);
    assert_eq!(out["removed"].as_str().unwrap(), second);
    assert_eq!(key_ids(&env.json(&["key", "list"])), vec![first.clone()]);
    let mut cmd = env.arca(&["--password-file", s(&second_file), "snapshots"]);
    cmd.env_remove("ARCA_PASSWORD");
    let line = error_line(&fails_with(&env, cmd, EXIT_ERROR));
    assert!(line.contains("wrong password"), "{line}");

    // With --force, the key in use goes too, as long as another remains.
    let second = add_key(&env, &second_file);
    let out = env.json(&["key", "remove", &first, "--force"]);
    assert_eq!(out["removed"].as_str().unwrap(), first);
    env.fails(&["snapshots"], EXIT_ERROR);
    let list = json_with(&env, &second_file, &["key", "list"]);
    assert_eq!(key_ids(&list), vec![second]);

    let usual = password_file(&env, "usual", PASSWORD);
    env.arca(&[
        "--password-file",
        s(&second_file),
        "key",
        "add",
        "--new-password-file",
        s(&usual),
        CHEAP[0],
        CHEAP[1],
        CHEAP[2],
        CHEAP[3],
    ])
    .assert()
    .success();
    env.assert_verified();
}

#[test]
fn key_list_json_shape_and_table() {
    let env = TestEnv::init();
    let list = env.json(&["key", "list"]);
    let keys = list.as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().unwrap();
    let mut fields: Vec<&str> = key.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(
        fields,
        ["created", "host", "id", "in_use", "kdf", "short_id", "user"]
    );
    let id = key["id"].as_str().unwrap();
    assert_eq!(id.len(), 64);
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(key["short_id"].as_str().unwrap(), &id[..8]);
    assert_eq!(key["in_use"], true);
    assert!(key["created"].as_i64().unwrap() > 1_600_000_000);
    assert!(key["host"].is_string() && key["user"].is_string());
    assert_eq!(
        key["kdf"],
        serde_json::json!({ "memory_kib": 64, "iterations": 1, "parallelism": 4 })
    );
    assert_eq!(
        env.repo_dir_files("keys")[0]
            .file_name()
            .unwrap()
            .to_str()
            .unwrap(),
        id
    );

    let table = stdout(&env.arca(&["key", "list"]).output().unwrap());
    let row = table.lines().find(|l| l.contains(&id[..8])).unwrap();
    assert!(row.starts_with('*'), "{table}");
    assert!(row.contains("64.0 KiB, 1 pass(es), 4 lane(s)"), "{table}");
    env.assert_verified();
}

#[test]
fn a_wrong_old_password_changes_nothing() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"hello");
    env.backup_src();
    let new_file = password_file(&env, "new", SECOND);
    for args in [
        vec!["key", "passwd", "--new-password-file", s(&new_file)],
        vec!["key", "add", "--new-password-file", s(&new_file)],
        vec!["key", "list"],
    ] {
        let mut cmd = env.arca(&args);
        cmd.env("ARCA_PASSWORD", "not the password");
        let line = error_line(&fails_with(&env, cmd, EXIT_ERROR));
        assert!(line.contains("wrong password"), "{line}");
    }
    assert_eq!(env.repo_dir_files("keys").len(), 1);
    env.assert_verified();
}

#[test]
fn a_new_password_must_be_given_and_not_empty() {
    let env = TestEnv::init();
    // No file and no terminal to ask on.
    let mut cmd = env.arca(&["key", "passwd"]);
    cmd.write_stdin("");
    let line = error_line(&fails_with(&env, cmd, EXIT_ERROR));
    assert!(line.contains("--new-password-file"), "{line}");

    let empty = env.path("empty");
    fs::write(&empty, "\n").unwrap();
    let line = error_line(&env.fails(
        &["key", "add", "--new-password-file", s(&empty)],
        EXIT_ERROR,
    ));
    assert!(line.contains("empty"), "{line}");

    let missing = env.path("missing");
    let line = error_line(&env.fails(
        &["key", "passwd", "--new-password-file", s(&missing)],
        EXIT_ERROR,
    ));
    assert!(line.contains("new password file"), "{line}");

    let new_file = password_file(&env, "new", SECOND);
    let line = error_line(&env.fails(
        &[
            "key",
            "add",
            "--new-password-file",
            s(&new_file),
            "--kdf-memory",
            "1",
        ],
        EXIT_ERROR,
    ));
    assert!(line.contains("out of bounds"), "{line}");
    env.assert_verified();
}
