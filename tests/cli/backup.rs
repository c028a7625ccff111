//! `arca backup`: what goes in comes back out, with its metadata; incremental backups read
//! only what changed; tags, hosts, excludes; unreadable files; standard input.

use std::fs;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use crate::common::*;

/// Sets a file's permission bits.
fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn backup_restores_file_contents_nested_dirs_and_empty_files() {
    let env = TestEnv::init();
    let files = [
        ("top.bin", pseudo_random(1, 70_000)),
        ("a/b/c/deep.bin", pseudo_random(2, 3_000)),
        ("a/text.txt", b"hello\n".to_vec()),
        ("empty", Vec::new()),
        ("a/b/also-empty", Vec::new()),
    ];
    for (name, data) in &files {
        env.write_file(name, data);
    }
    fs::create_dir_all(env.src.join("a/empty-dir")).unwrap();
    let restored = env.round_trip();
    for (name, data) in &files {
        assert_eq!(&fs::read(restored.join(name)).unwrap(), data, "{name}");
    }
    assert!(restored.join("a/empty-dir").is_dir());
    assert_eq!(
        fs::read_dir(restored.join("a/empty-dir")).unwrap().count(),
        0
    );
    env.assert_verified();
}

#[test]
fn a_file_that_repeats_one_chunk_restores_whole() {
    let env = TestEnv::init();
    // Zeros are cut into maximum-size chunks: one blob used at several offsets.
    let data = vec![0u8; 17 << 20];
    env.write_file("zeros", &data);
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert!(fs::read(restored.join("zeros")).unwrap() == data);
    env.assert_verified();
}

#[test]
fn backup_restores_a_symlink_as_a_symlink() {
    let env = TestEnv::init();
    env.write_file("target.txt", b"pointed at");
    std::os::unix::fs::symlink("target.txt", env.src.join("link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", env.src.join("dangling")).unwrap();
    let restored = env.round_trip();
    assert!(
        fs::symlink_metadata(restored.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("target.txt")
    );
    assert_eq!(
        fs::read_link(restored.join("dangling")).unwrap(),
        Path::new("/nonexistent/dangling")
    );
    env.assert_verified();
}

#[test]
fn backup_restores_a_hard_link_pair_as_one_inode() {
    let env = TestEnv::init();
    let first = env.write_file("first", &pseudo_random(3, 5_000));
    fs::hard_link(&first, env.src.join("second")).unwrap();
    let restored = env.round_trip();
    let (a, b) = (
        fs::metadata(restored.join("first")).unwrap(),
        fs::metadata(restored.join("second")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "the restored pair should share an inode");
    assert_eq!(a.nlink(), 2);
    assert_eq!(
        fs::read(restored.join("second")).unwrap(),
        pseudo_random(3, 5_000)
    );
    env.assert_verified();
}

#[test]
fn backup_restores_a_fifo_without_opening_it() {
    let env = TestEnv::init();
    let fifo = env.src.join("pipe");
    run("mkfifo", &[fifo.to_str().unwrap()]);
    let restored = env.round_trip();
    assert!(
        fs::symlink_metadata(restored.join("pipe"))
            .unwrap()
            .file_type()
            .is_fifo()
    );
    env.assert_verified();
}

#[test]
fn backup_restores_a_sparse_file_sparse() {
    let env = TestEnv::init();
    let path = env.src.join("sparse");
    let size: u64 = 8 << 20;
    let file = fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    file.write_all_at(b"tail", size - 4).unwrap();
    drop(file);
    let restored = env.round_trip();
    let meta = fs::metadata(restored.join("sparse")).unwrap();
    assert_eq!(meta.len(), size);
    assert!(
        meta.blocks() * 512 < size / 8,
        "restored sparse file uses {} blocks for {size} bytes",
        meta.blocks()
    );
    let data = fs::read(restored.join("sparse")).unwrap();
    assert!(data[..data.len() - 4].iter().all(|&b| b == 0));
    assert_eq!(&data[data.len() - 4..], b"tail");
    env.assert_verified();
}

#[test]
fn backup_restores_permission_bits() {
    let env = TestEnv::init();
    chmod(&env.write_file("secret", b"s"), 0o640);
    chmod(&env.write_file("tool", b"#!/bin/sh\n"), 0o755);
    chmod(&env.write_file("setgid-ish", b"x"), 0o2711);
    fs::create_dir(env.src.join("private")).unwrap();
    chmod(&env.src.join("private"), 0o700);
    let restored = env.round_trip();
    for (name, mode) in [
        ("secret", 0o640),
        ("tool", 0o755),
        ("setgid-ish", 0o2711),
        ("private", 0o700),
    ] {
        let got = fs::symlink_metadata(restored.join(name)).unwrap().mode() & 0o7777;
        assert_eq!(got, mode, "{name}: {got:o} instead of {mode:o}");
    }
    env.assert_verified();
}

#[test]
fn backup_restores_mtime_to_the_nanosecond() {
    let env = TestEnv::init();
    let file = env.write_file("dir/old", b"from 2001");
    let stamp = "2001-02-03 04:05:06.123456789";
    run("touch", &["-d", stamp, file.to_str().unwrap()]);
    run(
        "touch",
        &["-d", stamp, env.src.join("dir").to_str().unwrap()],
    );
    let original = fs::metadata(&file).unwrap();
    assert_eq!(original.mtime_nsec(), 123_456_789);
    let restored = env.round_trip();
    for name in ["dir/old", "dir"] {
        let got = fs::metadata(restored.join(name)).unwrap();
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (original.mtime(), 123_456_789),
            "{name}"
        );
    }
    env.assert_verified();
}

#[test]
fn backup_restores_mtimes_before_1970_and_far_ahead() {
    let env = TestEnv::init();
    let stamps = [
        ("past", "1960-06-01 12:00:00.5"),
        ("future", "2400-01-01 00:00:00.000000001"),
    ];
    for (name, stamp) in stamps {
        let file = env.write_file(name, name.as_bytes());
        run("touch", &["-d", stamp, file.to_str().unwrap()]);
    }
    let restored = env.round_trip();
    for (name, _) in stamps {
        let (want, got) = (
            fs::metadata(env.src.join(name)).unwrap(),
            fs::metadata(restored.join(name)).unwrap(),
        );
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (want.mtime(), want.mtime_nsec()),
            "{name}"
        );
    }
    assert!(fs::metadata(restored.join("past")).unwrap().mtime() < 0);
    env.assert_verified();
}

#[test]
fn many_small_files_round_trip() {
    let env = TestEnv::init();
    for i in 0..400u64 {
        env.write_file(
            &format!("d{}/f{i}", i % 7),
            &pseudo_random(i, (i as usize * 37) % 3000),
        );
    }
    let report = env.backup_src();
    assert_eq!(report["snapshot"]["summary"]["files_new"], 400);
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    for i in 0..400u64 {
        let got = fs::read(restored.join(format!("d{}/f{i}", i % 7))).unwrap();
        assert!(got == pseudo_random(i, (i as usize * 37) % 3000), "f{i}");
    }
    env.assert_verified();
}

#[test]
fn backup_restores_extended_attributes() {
    let env = TestEnv::init();
    let file = env.write_file("tagged", b"with an xattr");
    if let Err(e) = xattr::set(&file, "user.test", b"hello") {
        eprintln!("skipped: this file system refuses user xattrs ({e})");
        return;
    }
    let restored = env.round_trip();
    assert_eq!(
        xattr::get(restored.join("tagged"), "user.test")
            .unwrap()
            .as_deref(),
        Some(&b"hello"[..])
    );
    env.assert_verified();
}

/// Directories and links whose inode is unchanged are taken from the parent snapshot; a
/// changed extended attribute or link target must still be seen.
#[test]
fn a_second_backup_sees_new_directory_xattrs_and_link_targets() {
    let env = TestEnv::init();
    env.write_file("dir/file", b"content");
    std::os::unix::fs::symlink("first", env.src.join("link")).unwrap();
    env.backup_src();
    if let Err(e) = xattr::set(env.src.join("dir"), "user.test", b"added") {
        eprintln!("skipped: this file system refuses user xattrs ({e})");
        return;
    }
    fs::remove_file(env.src.join("link")).unwrap();
    std::os::unix::fs::symlink("second", env.src.join("link")).unwrap();
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        xattr::get(restored.join("dir"), "user.test")
            .unwrap()
            .as_deref(),
        Some(&b"added"[..])
    );
    assert_eq!(
        fs::read_link(restored.join("link")).unwrap(),
        Path::new("second")
    );
}

/// Regression: a second backup of unchanged files must take them from the parent snapshot
/// without reading their contents.
#[test]
fn unchanged_files_are_not_read_again() {
    let env = TestEnv::init();
    for i in 0..5u64 {
        env.write_file(&format!("d{}/f{i}", i % 2), &pseudo_random(i, 10_000));
    }
    let first = env.backup_src();
    assert_eq!(first["snapshot"]["summary"]["files_new"], 5);
    let second = env.backup_src();
    let summary = &second["snapshot"]["summary"];
    assert_eq!(summary["files_unchanged"], 5, "{second}");
    assert_eq!(summary["files_new"], 0, "{second}");
    assert_eq!(summary["files_changed"], 0, "{second}");
    assert_eq!(summary["bytes_read"], 0, "{second}");
    assert_eq!(second["bytes_read"], 0, "{second}");
    assert_eq!(second["parent"], first["snapshot_id"]);
    env.assert_verified();
}

#[test]
fn a_changed_file_is_the_only_one_read() {
    let env = TestEnv::init();
    for i in 0..4u64 {
        env.write_file(&format!("f{i}"), &pseudo_random(i, 10_000));
    }
    env.backup_src();
    env.write_file("f2", &pseudo_random(99, 12_345));
    let report = env.backup_src();
    let summary = &report["snapshot"]["summary"];
    assert_eq!(summary["files_changed"], 1, "{report}");
    assert_eq!(summary["files_unchanged"], 3, "{report}");
    assert_eq!(summary["bytes_read"], 12_345, "{report}");
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("f2")).unwrap(),
        pseudo_random(99, 12_345)
    );
    env.assert_verified();
}

/// A changed large file is cut where its parent version was cut while the bytes match;
/// the cuts must be those of plain chunking, or the same bytes elsewhere would not
/// deduplicate against it.
#[test]
fn a_changed_large_file_is_cut_as_a_new_copy_of_it_would_be() {
    let env = TestEnv::init();
    let content = pseudo_random(5, 12 << 20);
    let big = env.write_file("big", &content);
    env.backup_src();
    // An edit in each 8 MiB segment the backup reads the file in.
    let file = fs::OpenOptions::new().write(true).open(&big).unwrap();
    file.write_all_at(&[0u8; 100], 2 << 20).unwrap();
    file.write_all_at(&pseudo_random(6, 3000), 9 << 20).unwrap();
    drop(file);
    let changed = env.backup_src();
    assert_eq!(changed["snapshot"]["summary"]["files_changed"], 1);

    // The same bytes under two new names, each in its own source folder without a parent
    // snapshot: the first adds no data blob if the changed file's chunks are the plain ones,
    // so both add the same number of blobs (their trees).
    let edited = fs::read(&big).unwrap();
    let mut added = Vec::new();
    for name in ["copy-a", "copy-b"] {
        let dir = env.path(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("big"), &edited).unwrap();
        let report = env.backup(&[&dir], &[]);
        added.push(report["snapshot"]["summary"]["blobs_added"].clone());
    }
    assert_eq!(added[0], added[1], "{added:?}");
    let spec = format!(
        "{}:{}",
        changed["snapshot_id"].as_str().unwrap(),
        env.path("src").display()
    );
    let restored = env.restore(&spec, "restored", &[]);
    assert_eq!(fs::read(restored.join("big")).unwrap(), edited);
    env.assert_verified();
}

#[test]
fn tags_and_host_are_recorded_and_filter_snapshots() {
    let env = TestEnv::init();
    env.write_file("a", b"alpha's file");
    env.backup(
        &[&env.src],
        &["--tag", "daily", "--tag", "db", "--host", "alpha"],
    );
    fs::remove_file(env.src.join("a")).unwrap();
    env.write_file("b", b"beta's file");
    env.backup(&[&env.src], &["--host", "beta"]);

    let daily = env.json(&["snapshots", "--tag", "daily"]);
    let daily = daily.as_array().unwrap();
    assert_eq!(daily.len(), 1);
    assert_eq!(daily[0]["host"], "alpha");
    assert_eq!(daily[0]["tags"], serde_json::json!(["daily", "db"]));
    let beta = env.json(&["snapshots", "--host", "beta"]);
    assert_eq!(beta.as_array().unwrap().len(), 1);
    assert_eq!(beta[0]["tags"], serde_json::json!([]));
    assert_eq!(
        env.json(&["snapshots", "--host", "gamma"])
            .as_array()
            .unwrap()
            .len(),
        0
    );

    // `latest` is the newest snapshot that passes the filter.
    let listing = |extra: &[&str]| {
        let mut args = vec!["ls", "latest"];
        args.extend_from_slice(extra);
        stdout(env.arca(&args).assert().success().get_output())
    };
    let a = env.src.join("a").display().to_string();
    let b = env.src.join("b").display().to_string();
    let alpha = listing(&["--host", "alpha"]);
    assert!(
        alpha.lines().any(|l| l == a) && !alpha.contains(&b),
        "{alpha}"
    );
    let tagged = listing(&["--tag", "db"]);
    assert!(tagged.lines().any(|l| l == a), "{tagged}");
    let newest = listing(&[]);
    assert!(
        newest.lines().any(|l| l == b) && !newest.contains(&a),
        "{newest}"
    );
    env.assert_verified();
}

#[test]
fn exclude_glob_leaves_matching_files_out() {
    let env = TestEnv::init();
    env.write_file("keep.txt", b"k");
    env.write_file("noise.log", b"n");
    env.write_file("sub/more.log", b"n");
    env.write_file("cache/blob", b"c");
    let cache_glob = format!("{}/cache", env.src.display());
    env.backup(
        &[&env.src],
        &["--exclude", "*.log", "--exclude", &cache_glob],
    );
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert!(restored.join("keep.txt").exists());
    assert!(restored.join("sub").is_dir());
    for gone in ["noise.log", "sub/more.log", "cache"] {
        assert!(
            !restored.join(gone).exists(),
            "{gone} should have been excluded"
        );
    }
    env.assert_verified();
}

#[test]
fn exclude_file_patterns_leave_files_out() {
    let env = TestEnv::init();
    env.write_file("keep.txt", b"k");
    env.write_file("drop.tmp", b"d");
    env.write_file("build/out.o", b"o");
    let list = env.path("excludes.txt");
    fs::write(
        &list,
        format!("# comment\n\n*.tmp\n  {}/build  \n", env.src.display()),
    )
    .unwrap();
    env.backup(&[&env.src], &["--exclude-file", list.to_str().unwrap()]);
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert!(restored.join("keep.txt").exists());
    assert!(!restored.join("drop.tmp").exists());
    assert!(!restored.join("build").exists());
    env.assert_verified();
}

#[test]
fn one_file_system_is_accepted() {
    let env = TestEnv::init();
    env.write_file("f", b"on one file system");
    env.backup(&[&env.src], &["--one-file-system"]);
    env.backup(&[&env.src], &["-x"]);
    env.assert_verified();
}

#[test]
fn an_unreadable_file_is_reported_and_the_backup_completes() {
    let env = TestEnv::init();
    env.write_file("readable", b"fine");
    let secret = env.write_file("locked/secret", b"no access");
    // Root reads any file, whatever its mode.
    let Some(mut cmd) = env.arca_unprivileged(&["--json", "backup", env.src.to_str().unwrap()])
    else {
        return;
    };
    chmod(&secret, 0o000);
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(EXIT_PROBLEMS), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let warning = err
        .lines()
        .find(|l| l.contains("warning"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    assert!(warning.contains(&secret.display().to_string()), "{warning}");
    assert!(
        warning.to_lowercase().contains("permission denied"),
        "{warning}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["problems"][0]["path"], secret.display().to_string());
    assert_eq!(report["snapshot"]["summary"]["errors"], 1);

    let snapshots = env.json(&["snapshots"]);
    assert_eq!(
        snapshots.as_array().unwrap().len(),
        1,
        "the snapshot should exist"
    );
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(fs::read(restored.join("readable")).unwrap(), b"fine");
    assert!(!restored.join("locked/secret").exists());
    env.assert_verified();
}

#[test]
fn stdin_backup_round_trips_through_dump() {
    let env = TestEnv::init();
    let data = pseudo_random(7, 3 << 20);
    let out = env
        .arca(&[
            "--json",
            "backup",
            "--stdin",
            "--stdin-filename",
            "db.sql",
            "--tag",
            "pg",
        ])
        .write_stdin(data.clone())
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["bytes_read"], data.len());
    assert_eq!(report["snapshot"]["paths"], serde_json::json!(["/db.sql"]));
    for path in ["db.sql", "/db.sql"] {
        let dumped = env
            .arca(&["dump", "latest", path])
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        assert!(
            dumped == data,
            "dump latest {path}: {} bytes differ from the {} piped in",
            dumped.len(),
            data.len()
        );
    }
    env.assert_verified();
}

#[test]
fn empty_stdin_is_stored_as_an_empty_file() {
    let env = TestEnv::init();
    env.arca(&["backup", "--stdin"])
        .write_stdin("")
        .assert()
        .success();
    env.arca(&["dump", "latest", "stdin"])
        .assert()
        .success()
        .stdout("");
    env.assert_verified();
}

#[test]
fn stdin_filename_must_be_a_plain_name() {
    let env = TestEnv::init();
    let cmd = {
        let mut c = env.arca(&["backup", "--stdin", "--stdin-filename", "../escape"]);
        c.write_stdin("data");
        c
    };
    let out = fails_with(&env, cmd, EXIT_ERROR);
    assert!(error_line(&out).contains("../escape"));
}

#[test]
fn stdin_with_paths_is_a_usage_error() {
    let env = TestEnv::init();
    let out = env.fails(
        &["backup", "--stdin", env.src.to_str().unwrap()],
        EXIT_USAGE,
    );
    assert!(error_line(&out).contains("--stdin"));
}

#[test]
fn backup_of_a_single_file_path_restores_under_its_own_name() {
    let env = TestEnv::init();
    let file = env.write_file("only.txt", b"just me");
    env.write_file("sibling.txt", b"not backed up");
    env.backup(&[&file], &[]);
    let restored = env.restore(&format!("latest:{}", file.display()), "restored", &[]);
    assert_eq!(files_below(&restored), [restored.join("only.txt")]);
    assert_eq!(fs::read(restored.join("only.txt")).unwrap(), b"just me");
    env.assert_verified();
}

#[test]
fn overlapping_source_paths_store_each_file_once() {
    let env = TestEnv::init();
    env.write_file("a/f", b"f");
    env.write_file("g", b"g");
    let report = env.backup(&[&env.src.join("a"), &env.src, &env.src.join("a/f")], &[]);
    assert_eq!(report["snapshot"]["summary"]["files_new"], 2, "{report}");
    let listing = stdout(env.arca(&["ls", "latest"]).assert().success().get_output());
    let f = env.src.join("a/f").display().to_string();
    assert_eq!(listing.lines().filter(|l| *l == f).count(), 1, "{listing}");
    env.assert_verified();
}

#[test]
fn backup_force_reads_unchanged_files_again() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 10_000));
    env.backup_src();
    let report = env.backup(&[&env.src], &["--force"]);
    assert_eq!(
        report["snapshot"]["summary"]["files_unchanged"], 0,
        "{report}"
    );
    assert_eq!(report["bytes_read"], 10_000, "{report}");
    // Only trees may be new (the temporary directory's ancestors change as tests run).
    assert!(
        report["snapshot"]["summary"]["bytes_added"]
            .as_u64()
            .unwrap()
            < 10_000,
        "data stored again: {report}"
    );
    env.assert_verified();
}

#[test]
fn backup_parent_option_names_the_snapshot_to_compare_with() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 10_000));
    let first = env.backup_src();
    env.backup(&[&env.src], &["--host", "elsewhere"]);
    let id = first["snapshot_id"].as_str().unwrap();
    let report = env.backup(&[&env.src], &["--host", "elsewhere", "--parent", &id[..10]]);
    assert_eq!(report["parent"], first["snapshot_id"], "{report}");
    assert_eq!(
        report["snapshot"]["summary"]["files_unchanged"], 1,
        "{report}"
    );
    env.assert_verified();
}

#[test]
fn file_names_are_restored_byte_for_byte() {
    use std::os::unix::ffi::OsStrExt;
    let env = TestEnv::init();
    let longest = [b'n'; 255];
    let names: [&[u8]; 5] = [
        b"caf\xe9 latin-1",
        "日本語.txt".as_bytes(),
        b"new\nline",
        b" leading space",
        &longest,
    ];
    for (i, name) in names.iter().enumerate() {
        fs::write(env.src.join(std::ffi::OsStr::from_bytes(name)), [i as u8]).unwrap();
    }
    let restored = env.round_trip();
    for (i, name) in names.iter().enumerate() {
        let path = restored.join(std::ffi::OsStr::from_bytes(name));
        assert_eq!(fs::read(&path).unwrap(), [i as u8], "{}", path.display());
    }
    assert_eq!(fs::read_dir(&restored).unwrap().count(), names.len());
    env.assert_verified();
}

#[test]
fn a_damaged_local_cache_is_rebuilt() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 10_000));
    env.backup_src();
    let databases: Vec<_> = files_below(&env.cache)
        .into_iter()
        .filter(|p| p.ends_with("index.sqlite"))
        .collect();
    assert_eq!(databases.len(), 1, "{databases:?}");
    for path in files_below(&env.cache) {
        fs::write(path, b"this is not an SQLite database, not even close.....").unwrap();
    }
    let report = env.backup_src();
    assert_eq!(
        report["snapshot"]["summary"]["files_unchanged"], 1,
        "{report}"
    );
    assert!(
        report["snapshot"]["summary"]["bytes_added"]
            .as_u64()
            .unwrap()
            < 10_000,
        "data stored again: {report}"
    );
    env.assert_verified();
}

#[test]
fn a_cache_that_missed_another_machines_backup_catches_up() {
    let env = TestEnv::init();
    env.write_file("f", b"first");
    env.backup_src();
    env.arca(&["ls", "latest"]).assert().success();
    // Another machine (another cache) adds a snapshot with new data.
    let other_cache = env.path("other-cache");
    env.write_file("g", &pseudo_random(2, 50_000));
    env.arca(&["backup", env.src.to_str().unwrap()])
        .env("ARCA_CACHE_DIR", &other_cache)
        .assert()
        .success();
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_eq!(
        fs::read(restored.join("g")).unwrap(),
        pseudo_random(2, 50_000)
    );
    env.assert_verified();
}

/// Regression: an unchanged file whose chunks' pack had vanished was taken from the parent
/// snapshot unread, so the new snapshot referenced data that no longer existed.
#[test]
fn a_backup_after_a_pack_vanished_stores_its_data_again() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 10_000));
    env.backup_src();
    fs::remove_file(new_packs(&env, &[]).remove(0)).unwrap();
    let report = env.backup_src();
    assert_eq!(
        report["bytes_read"], 10_000,
        "the file's data is gone and must be read again: {report}"
    );
    let target = env.path("restored");
    env.arca(&[
        "restore",
        &env.latest_src(),
        "--target",
        target.to_str().unwrap(),
    ])
    .assert()
    .success();
    assert_eq!(
        fs::read(target.join("f")).unwrap(),
        pseudo_random(1, 10_000)
    );
}

#[test]
fn concurrent_backups_into_one_repository_both_succeed() {
    let env = TestEnv::init();
    let shared = pseudo_random(3, 200_000);
    for dir in ["one", "two"] {
        env.write_file(
            &format!("{dir}/own"),
            &pseudo_random(dir.len() as u64, 300_000),
        );
        env.write_file(&format!("{dir}/shared"), &shared);
    }
    std::thread::scope(|scope| {
        let env = &env;
        let runs: Vec<_> = ["one", "two"]
            .into_iter()
            .map(|dir| scope.spawn(move || env.backup(&[&env.src.join(dir)], &[])))
            .collect();
        for run in runs {
            run.join().unwrap();
        }
    });
    assert_eq!(env.json(&["snapshots"]).as_array().unwrap().len(), 2);
    for dir in ["one", "two"] {
        let spec = format!("latest:{}", env.src.join(dir).display());
        let path = env.src.join(dir).display().to_string();
        let restored = env.restore(&spec, &format!("restored-{dir}"), &["--path", &path]);
        assert!(fs::read(restored.join("shared")).unwrap() == shared);
    }
    env.assert_verified();
}

#[test]
fn relative_source_paths_are_recorded_absolute_and_in_any_order_find_the_parent() {
    let env = TestEnv::init();
    env.write_file("a/f", &pseudo_random(1, 5_000));
    env.write_file("b/g", &pseudo_random(2, 5_000));
    // The command runs in the environment's root, where `src/` is.
    let first = env.json(&["backup", "src/a", "src/b/"]);
    let want = [env.src.join("a"), env.src.join("b")].map(|p| p.display().to_string());
    assert_eq!(first["snapshot"]["paths"], serde_json::json!(want));
    let b = env.src.join("b");
    let second = env.backup(&[&b, &env.src.join("./a/../a")], &[]);
    assert_eq!(second["parent"], first["snapshot_id"], "{second}");
    assert_eq!(
        second["snapshot"]["summary"]["files_unchanged"], 2,
        "{second}"
    );
    env.assert_verified();
}
