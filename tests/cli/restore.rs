//! `arca restore`: whole snapshots, subtrees, include and exclude filters, overwriting.

use std::fs;

use crate::common::*;

/// `src/` with a little of everything the filters can pick from.
fn populated() -> TestEnv {
    let env = TestEnv::init();
    env.write_file("notes.txt", b"notes");
    env.write_file("data/a.bin", &pseudo_random(1, 20_000));
    env.write_file("data/b.txt", b"bee");
    env.write_file("data/deep/c.txt", b"sea");
    env.write_file("logs/app.log", b"log line");
    env
}

/// The files below `dir` as paths relative to it, sorted.
fn relative_files(dir: &std::path::Path) -> Vec<String> {
    files_below(dir).iter().map(|p| p.strip_prefix(dir).unwrap().display().to_string()).collect()
}

#[test]
fn restore_of_a_whole_snapshot_recreates_absolute_paths_below_the_target() {
    let env = populated();
    env.backup_src();
    let restored = env.restore("latest", "restored", &[]);
    let inner = restored.join(env.src.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inner.join("data/deep/c.txt")).unwrap(), b"sea");
    assert_eq!(relative_files(&inner).len(), 5);
    env.assert_verified();
}

#[test]
fn restore_snapshot_colon_path_restores_that_subtree_into_the_target() {
    let env = populated();
    env.backup_src();
    let spec = format!("latest:{}/data", env.src.display());
    let restored = env.restore(&spec, "restored", &[]);
    assert_eq!(relative_files(&restored), ["a.bin", "b.txt", "deep/c.txt"]);
    assert_eq!(fs::read(restored.join("a.bin")).unwrap(), pseudo_random(1, 20_000));
    env.assert_verified();
}

#[test]
fn restore_of_a_single_file_puts_it_under_its_own_name() {
    let env = populated();
    env.backup_src();
    let spec = format!("latest:{}/data/b.txt", env.src.display());
    let restored = env.restore(&spec, "restored", &[]);
    assert_eq!(relative_files(&restored), ["b.txt"]);
    env.assert_verified();
}

#[test]
fn restore_include_glob_restores_only_matching_entries() {
    let env = populated();
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &["--include", "*.txt"]);
    assert_eq!(relative_files(&restored), ["data/b.txt", "data/deep/c.txt", "notes.txt"]);
    env.assert_verified();
}

#[test]
fn restore_include_of_a_directory_takes_everything_below_it() {
    let env = populated();
    env.backup_src();
    let glob = format!("{}/data/deep", env.src.display());
    let restored = env.restore(&env.latest_src(), "restored", &["--include", &glob]);
    assert_eq!(relative_files(&restored), ["data/deep/c.txt"]);
    env.assert_verified();
}

#[test]
fn restore_exclude_glob_leaves_matching_entries_out() {
    let env = populated();
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &["--exclude", "*.txt", "--exclude", "logs"]);
    assert_eq!(relative_files(&restored), ["data/a.bin"]);
    env.assert_verified();
}

#[test]
fn restore_into_a_non_empty_target_overwrites_files() {
    let env = populated();
    env.backup_src();
    let target = env.path("restored");
    fs::create_dir_all(target.join("data/deep")).unwrap();
    fs::write(target.join("notes.txt"), vec![b'x'; 50_000]).unwrap();
    fs::write(target.join("data/b.txt"), b"").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", target.join("data/deep/c.txt")).unwrap();
    fs::write(target.join("unrelated"), b"left alone").unwrap();
    env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(fs::read(target.join("notes.txt")).unwrap(), b"notes");
    assert_eq!(fs::read(target.join("data/b.txt")).unwrap(), b"bee");
    let c = target.join("data/deep/c.txt");
    assert!(!fs::symlink_metadata(&c).unwrap().file_type().is_symlink(), "a symlink in the target was written through");
    assert_eq!(fs::read(&c).unwrap(), b"sea");
    assert_eq!(fs::read(target.join("unrelated")).unwrap(), b"left alone");
    env.assert_verified();
}

#[test]
fn restore_accepts_a_snapshot_id_prefix() {
    let env = populated();
    env.backup_src();
    env.write_file("later.txt", b"only in the second snapshot");
    env.backup_src();
    let first = env.json(&["snapshots"])[0]["id"].as_str().unwrap().to_string();
    let spec = format!("{}:{}", &first[..8], env.src.display());
    let restored = env.restore(&spec, "restored", &[]);
    assert!(restored.join("notes.txt").exists());
    assert!(!restored.join("later.txt").exists(), "restored the newest snapshot, not the one named");
    let upper = format!("{}:{}", first[..12].to_uppercase(), env.src.display());
    env.restore(&upper, "restored-upper", &[]);
    env.assert_verified();
}

#[test]
fn restore_leaves_no_temporary_files() {
    let env = populated();
    env.write_file("big.bin", &pseudo_random(5, 3 << 20));
    env.write_file("empty", b"");
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    let leftovers: Vec<_> =
        entries_below(&restored).into_iter().filter(|p| p.to_string_lossy().contains(".arca-restore-")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(fs::read(restored.join("big.bin")).unwrap(), pseudo_random(5, 3 << 20));
    env.assert_verified();
}

#[test]
fn restore_of_a_missing_path_fails_naming_it() {
    let env = populated();
    env.backup_src();
    let spec = format!("latest:{}/no-such-thing", env.src.display());
    let target = env.path("restored");
    let out = env.fails(&["restore", &spec, "--target", target.to_str().unwrap()], EXIT_ERROR);
    assert!(error_line(&out).contains("no-such-thing"));
    env.assert_verified();
}

#[test]
fn restore_of_an_unknown_snapshot_fails_naming_it() {
    let env = populated();
    env.backup_src();
    let target = env.path("restored");
    let out = env.fails(&["restore", "abcdef12", "--target", target.to_str().unwrap()], EXIT_ERROR);
    assert!(error_line(&out).contains("abcdef12"));
    let out = env.fails(&["restore", "not-an-id", "--target", target.to_str().unwrap()], EXIT_ERROR);
    assert!(error_line(&out).contains("not-an-id"));
}
