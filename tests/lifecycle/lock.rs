//! Tests of locks through the binary: conflicts, waiting, stale locks, `arca unlock`.

use std::fs;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arca::repository::{LockKind, Repository};
use arca::storage::LocalStorage;

use crate::common::*;

/// Plants a lock held by this (live) test process, as if another arca were running.
fn plant_lock(env: &TestEnv, kind: LockKind, command: &str) -> PathBuf {
    let repo = Repository::open(
        Arc::new(LocalStorage::new(&env.repo)),
        PASSWORD.as_bytes(),
        &env.cache,
    )
    .unwrap();
    let before = env.repo_dir_files("locks");
    // Keep the lock file but drop the guard without releasing it.
    std::mem::forget(repo.lock(kind, command).unwrap());
    env.repo_dir_files("locks")
        .into_iter()
        .find(|p| !before.contains(p))
        .unwrap()
}

/// Leaves the lock of an arca process that was killed while holding it.
fn lock_of_a_killed_process(env: &TestEnv) -> PathBuf {
    let mut child = std::process::Command::new(env.arca(&[]).get_program())
        .args(["backup", "--stdin", "--stdin-filename", "stream"])
        .env("ARCA_REPOSITORY", &env.repo)
        .env("ARCA_CACHE_DIR", &env.cache)
        .env("ARCA_PASSWORD", PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let lock = loop {
        if let Some(lock) = env.repo_dir_files("locks").into_iter().next() {
            break lock;
        }
        assert!(Instant::now() < deadline, "the backup never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(lock.exists());
    lock
}

#[test]
fn an_exclusive_lock_blocks_a_backup_naming_its_holder() {
    let env = TestEnv::init();
    env.write_file("a", b"hello");
    let planted = plant_lock(&env, LockKind::Exclusive, "prune");
    let out = env.fails(&["backup", env.src.to_str().unwrap()], EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("exclusive lock held by `prune`") && line.contains("arca unlock"),
        "{line}"
    );
    fs::remove_file(planted).unwrap();
    env.backup_src();
    env.assert_verified();
}

#[test]
fn a_shared_lock_lets_backups_run_but_blocks_prune() {
    let env = TestEnv::init();
    env.write_file("a", b"hello");
    let planted = plant_lock(&env, LockKind::Shared, "backup");
    env.backup_src();
    let out = env.fails(&["prune"], EXIT_ERROR);
    assert!(error_line(&out).contains("shared lock held by `backup`"));
    fs::remove_file(planted).unwrap();
    env.arca(&["prune"]).assert().success();
    env.assert_verified();
}

#[test]
fn the_lock_of_a_killed_process_is_stale_and_unlock_removes_it() {
    let env = TestEnv::init();
    let stale = lock_of_a_killed_process(&env);
    let live = plant_lock(&env, LockKind::Exclusive, "prune");
    let out = env.json(&["unlock"]);
    assert_eq!(out["removed"].as_array().unwrap().len(), 1, "{out}");
    assert!(!stale.exists() && live.exists());
    let out = env.json(&["unlock", "--all"]);
    assert_eq!(out["removed"].as_array().unwrap().len(), 1, "{out}");
    assert!(env.repo_dir_files("locks").is_empty());
    env.assert_verified();
}

#[test]
fn a_stale_lock_does_not_block_prune() {
    let env = TestEnv::init();
    lock_of_a_killed_process(&env);
    env.arca(&["prune"]).assert().success();
    env.assert_verified();
}

#[test]
fn retry_lock_waits_for_the_holder_to_finish() {
    let env = TestEnv::init();
    env.write_file("a", b"hello");
    let planted = plant_lock(&env, LockKind::Exclusive, "prune");
    let remover = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        fs::remove_file(planted).unwrap();
    });
    env.arca(&["--retry-lock", "30s", "backup", env.src.to_str().unwrap()])
        .assert()
        .success();
    remover.join().unwrap();
    env.assert_verified();
}

#[test]
fn a_backup_and_a_prune_started_together_lose_nothing() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    env.write_file("old.bin", &pseudo_random(1, 1_500_000));
    let first = env.backup_src();
    fs::remove_file(
        env.repo
            .join("snapshots")
            .join(first["snapshot_id"].as_str().unwrap()),
    )
    .unwrap();
    for i in 0..20u64 {
        env.write_file(&format!("new/{i}.bin"), &pseudo_random(100 + i, 100_000));
    }
    let src = env.src.to_str().unwrap().to_string();
    let mut backup = env.arca(&["--retry-lock", "60s", "--json", "backup", &src]);
    let mut prune = env.arca(&["--retry-lock", "60s", "prune"]);
    let b = std::thread::spawn(move || backup.output().unwrap());
    let p = std::thread::spawn(move || prune.output().unwrap());
    let (b, p) = (b.join().unwrap(), p.join().unwrap());
    assert!(b.status.success(), "{}", stderr(&b));
    assert!(p.status.success(), "{}", stderr(&p));
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    for i in 0..20u64 {
        assert_eq!(
            fs::read(restored.join(format!("new/{i}.bin"))).unwrap(),
            pseudo_random(100 + i, 100_000)
        );
    }
    assert_eq!(
        fs::read(restored.join("old.bin")).unwrap(),
        pseudo_random(1, 1_500_000)
    );
    env.assert_verified();
}
