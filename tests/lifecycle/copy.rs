//! Tests of `arca copy`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

use crate::common::*;

/// A second repository beside the environment's own, with a password of its own.
struct Target {
    path: PathBuf,
    password: &'static str,
}

impl Target {
    /// `arca init` of `name` inside the environment, with the cheap KDF.
    fn init(env: &TestEnv, name: &str, password: &'static str) -> Target {
        let target = Target {
            path: env.path(name),
            password,
        };
        target
            .arca(
                env,
                &["init", "--kdf-memory", "64", "--kdf-iterations", "1"],
            )
            .assert()
            .success();
        target
    }

    /// `arca ARGS` on this repository.
    fn arca(&self, env: &TestEnv, args: &[&str]) -> Command {
        let mut cmd = env.arca(args);
        cmd.env("ARCA_REPOSITORY", &self.path)
            .env("ARCA_PASSWORD", self.password);
        cmd
    }

    fn json(&self, env: &TestEnv, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self
            .arca(env, &all)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    }

    fn snapshots(&self, env: &TestEnv) -> Vec<Value> {
        self.json(env, &["snapshots"]).as_array().unwrap().clone()
    }

    fn restore(&self, env: &TestEnv, spec: &str, into: &str) -> PathBuf {
        let dest = env.path(into);
        self.arca(env, &["restore", spec, "--target", dest.to_str().unwrap()])
            .assert()
            .success();
        dest
    }

    fn assert_verified(&self, env: &TestEnv) {
        let out = self.arca(env, &["verify", "--read-data"]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "verify --read-data of the target found problems:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    /// Every file of the repository but the locks (relative path → content).
    fn files(&self) -> BTreeMap<String, Vec<u8>> {
        files_below(&self.path)
            .into_iter()
            .map(|p| {
                (
                    p.strip_prefix(&self.path).unwrap().display().to_string(),
                    fs::read(&p).unwrap(),
                )
            })
            .filter(|(rel, _)| !rel.starts_with("locks/"))
            .collect()
    }

    fn pack_names(&self) -> BTreeSet<String> {
        names_below(&self.path.join("packs"))
    }
}

/// `arca copy --to TARGET ARGS`, with the target's password in `ARCA_TO_PASSWORD`.
fn copy_cmd(env: &TestEnv, target: &Target, args: &[&str]) -> Command {
    let mut all = vec!["copy", "--to", target.path.to_str().unwrap()];
    all.extend_from_slice(args);
    let mut cmd = env.arca(&all);
    cmd.env("ARCA_TO_PASSWORD", target.password);
    cmd
}

/// Runs `arca --json copy --to TARGET ARGS` and expects exit 0.
fn copy(env: &TestEnv, target: &Target, args: &[&str]) -> Value {
    let mut cmd = env.arca(&["--json", "copy", "--to", target.path.to_str().unwrap()]);
    cmd.args(args).env("ARCA_TO_PASSWORD", target.password);
    let out = cmd.assert().success().get_output().stdout.clone();
    serde_json::from_slice(&out)
        .unwrap_or_else(|e| panic!("copy printed invalid JSON ({e}): {}", text(&out)))
}

fn names_below(dir: &Path) -> BTreeSet<String> {
    files_below(dir)
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect()
}

/// What a restored folder holds: each entry's kind, mode and content (or link target).
fn contents(dir: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    entries_below(dir)
        .into_iter()
        .map(|p| {
            let meta = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let entry = if meta.file_type().is_symlink() {
                (
                    "link".into(),
                    0,
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else if meta.is_dir() {
                ("dir".into(), meta.permissions().mode(), Vec::new())
            } else {
                (
                    "file".into(),
                    meta.permissions().mode(),
                    fs::read(&p).unwrap(),
                )
            };
            (rel, entry)
        })
        .collect()
}

/// A small tree with what a copy must keep: several chunks, duplicates, an empty file, a
/// symlink, nested folders, an unusual mode.
fn write_tree(env: &TestEnv) {
    env.write_file("big.bin", &pseudo_random(1, 3_000_000));
    env.write_file("again/big-copy.bin", &pseudo_random(1, 3_000_000));
    env.write_file("notes/a.txt", b"first notes\n");
    env.write_file("notes/deep/er/b.txt", &pseudo_random(2, 70_000));
    env.write_file("empty", b"");
    let script = env.write_file("run.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("notes/a.txt", env.src.join("link")).unwrap();
}

fn ids(report: &Value, list: &str, side: &str) -> Vec<String> {
    report[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[side].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn copy_brings_every_snapshot_and_each_restores_bit_identically() {
    let env = TestEnv::init();
    write_tree(&env);
    env.backup_src();
    env.write_file("notes/a.txt", b"second notes\n");
    env.write_file("new.bin", &pseudo_random(3, 200_000));
    env.backup(&[&env.src], &["--tag", "nightly", "--tag", "db"]);
    let target = Target::init(&env, "target", "another password entirely");

    let report = copy(&env, &target, &[]);
    assert_eq!(ids(&report, "copied", "source").len(), 2, "{report}");
    assert_eq!(report["skipped"].as_array().unwrap().len(), 0);
    assert!(report["blobs_added"].as_u64().unwrap() >= 6, "{report}");
    assert!(
        report["bytes_added"].as_u64().unwrap() > 3_000_000,
        "{report}"
    );

    // Same backups: time, host, user, paths, tags, summary, program version.
    let source = env.json(&["snapshots"]);
    let copied = target.snapshots(&env);
    assert_eq!(copied.len(), 2);
    for (s, t) in source.as_array().unwrap().iter().zip(&copied) {
        for field in [
            "time",
            "host",
            "user",
            "paths",
            "tags",
            "summary",
            "program_version",
        ] {
            assert_eq!(s[field], t[field], "{field}");
        }
        // The target has its own key, hence its own ids.
        assert_ne!(s["tree"], t["tree"]);
        assert_ne!(s["id"], t["id"]);
    }
    assert_eq!(copied[0]["parent"], Value::Null);
    assert_eq!(
        copied[1]["parent"], copied[0]["id"],
        "the parent is the copy of the parent"
    );
    assert_eq!(
        ids(&report, "copied", "target"),
        [
            copied[0]["id"].as_str().unwrap(),
            copied[1]["id"].as_str().unwrap()
        ]
    );
    assert!(
        target
            .pack_names()
            .is_disjoint(&names_below(&env.repo.join("packs")))
    );
    assert!(
        names_below(&target.path.join("index")).is_disjoint(&names_below(&env.repo.join("index")))
    );

    for (i, (s, t)) in source.as_array().unwrap().iter().zip(&copied).enumerate() {
        let from_source = env.restore(
            &format!("{}:{}", s["id"].as_str().unwrap(), env.src.display()),
            &format!("s{i}"),
            &[],
        );
        let from_target = target.restore(
            &env,
            &format!("{}:{}", t["id"].as_str().unwrap(), env.src.display()),
            &format!("t{i}"),
        );
        assert_eq!(
            contents(&from_target),
            contents(&from_source),
            "snapshot {i}"
        );
    }
    assert_eq!(contents(&env.path("t1")), contents(&env.src));
    assert_eq!(
        fs::read(env.path("t0/notes/a.txt")).unwrap(),
        b"first notes\n"
    );
    env.assert_verified();
    target.assert_verified(&env);
}

#[test]
fn a_rerun_copies_only_what_is_new() {
    let env = TestEnv::init();
    write_tree(&env);
    env.backup_src();
    let target = Target::init(&env, "target", "target password");
    let first = copy(&env, &target, &[]);
    assert_eq!(ids(&first, "copied", "source").len(), 1);
    let before = target.files();

    let again = copy(&env, &target, &[]);
    assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(
        ids(&again, "skipped", "target"),
        ids(&first, "copied", "target")
    );
    assert_eq!(
        (again["blobs_added"].as_u64(), again["bytes_read"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        target.files() == before,
        "a rerun with nothing new wrote to the target"
    );

    // A later backup: only it is copied, and its unchanged files are not read again.
    env.write_file("notes/a.txt", b"changed\n");
    let later = env.backup_src();
    let third = copy(&env, &target, &[]);
    assert_eq!(
        ids(&third, "copied", "source"),
        [later["snapshot_id"].as_str().unwrap()]
    );
    assert_eq!(third["skipped"].as_array().unwrap().len(), 1);
    let read = third["bytes_read"].as_u64().unwrap();
    assert!(
        read < 100_000,
        "read {read} bytes from the source for an 8-byte change: {third}"
    );
    let copied = target.snapshots(&env);
    assert_eq!(copied[1]["parent"], copied[0]["id"]);
    let restored = target.restore(&env, &format!("latest:{}", env.src.display()), "restored");
    assert_eq!(contents(&restored), contents(&env.src));
    env.assert_verified();
    target.assert_verified(&env);
}

#[test]
fn named_snapshots_alone_are_copied() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(4, 100_000));
    let first = env.backup_src();
    env.write_file("b.bin", &pseudo_random(5, 100_000));
    env.backup_src();
    let target = Target::init(&env, "target", "target password");
    let report = copy(&env, &target, &["latest"]);
    assert_eq!(report["copied"].as_array().unwrap().len(), 1, "{report}");
    // Its parent was not copied: the copy has none.
    assert_eq!(target.snapshots(&env)[0]["parent"], Value::Null);
    let dry = copy(&env, &target, &["--dry-run"]);
    assert_eq!(
        ids(&dry, "copied", "source"),
        [first["snapshot_id"].as_str().unwrap()]
    );
    assert_eq!(dry["copied"][0]["target"], Value::Null);
    assert_eq!(
        target.snapshots(&env).len(),
        1,
        "a dry run wrote a snapshot"
    );
    let out = copy_cmd(&env, &target, &[])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = text(&out);
    assert!(
        text.contains("1 snapshot(s) copied") && text.contains("1 already there"),
        "{text}"
    );
    assert_eq!(target.snapshots(&env).len(), 2);
    env.assert_verified();
    target.assert_verified(&env);
}

#[test]
fn a_wrong_target_password_fails_cleanly() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(6, 50_000));
    env.backup_src();
    let target = Target::init(&env, "target", "the right one");
    let before = target.files();
    let wrong = Target {
        path: target.path.clone(),
        password: "not the right one",
    };
    let out = fails_with(&env, copy_cmd(&env, &wrong, &[]), EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("wrong password") && line.contains(target.path.to_str().unwrap()),
        "{line}"
    );
    // The source's password is never used for the target, even when they are the same.
    let twin = Target::init(&env, "twin", PASSWORD);
    let out = fails_with(
        &env,
        env.arca(&["copy", "--to", twin.path.to_str().unwrap()]),
        EXIT_ERROR,
    );
    let line = error_line(&out);
    assert!(
        line.contains("no password for the target") && line.contains("ARCA_TO_PASSWORD"),
        "{line}"
    );
    assert!(twin.snapshots(&env).is_empty());
    assert!(target.files() == before, "the target changed");
    env.assert_verified();
    target.assert_verified(&env);
}

#[test]
fn a_missing_or_identical_target_is_refused_by_name() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(7, 50_000));
    env.backup_src();
    let missing = Target {
        path: env.path("nowhere"),
        password: "x",
    };
    let out = fails_with(&env, copy_cmd(&env, &missing, &[]), EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("no repository at") && line.contains(missing.path.to_str().unwrap()),
        "{line}"
    );
    assert!(!missing.path.exists());

    let same = Target {
        path: env.repo.clone(),
        password: PASSWORD,
    };
    let out = fails_with(&env, copy_cmd(&env, &same, &[]), EXIT_ERROR);
    assert!(error_line(&out).contains("same repository"));
    env.assert_verified();
}
