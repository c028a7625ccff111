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
    files_below(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
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
    assert_eq!(
        fs::read(restored.join("a.bin")).unwrap(),
        pseudo_random(1, 20_000)
    );
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
    assert_eq!(
        relative_files(&restored),
        ["data/b.txt", "data/deep/c.txt", "notes.txt"]
    );
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
    let restored = env.restore(
        &env.latest_src(),
        "restored",
        &["--exclude", "*.txt", "--exclude", "logs"],
    );
    assert_eq!(relative_files(&restored), ["data/a.bin"]);
    env.assert_verified();
}

#[test]
fn restore_into_a_non_empty_target_overwrites_files() {
    overwrites_files(&[]);
}

#[test]
fn restore_no_sync_into_a_non_empty_target_overwrites_files() {
    overwrites_files(&["--no-sync"]);
}

#[test]
fn restore_of_many_files_into_a_non_empty_target_overwrites_them() {
    // More entries than a restore syncs one by one: whole file systems are synced, and the
    // files in the way are replaced in batches.
    // 4,200 of them: one full batch is synced and renamed while contents are still being
    // written, the rest at the end.
    let env = TestEnv::init();
    for i in 0..4200 {
        env.write_file(&format!("d{}/f{i}", i % 4), format!("new {i}").as_bytes());
    }
    env.backup_src();
    let base = env.path("restored");
    for i in 0..4200 {
        let path = base.join(format!("d{}/f{i}", i % 4));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, format!("old contents of {i}")).unwrap();
    }
    env.restore(&env.latest_src(), "restored", &[]);
    for i in 0..4200 {
        let path = base.join(format!("d{}/f{i}", i % 4));
        assert_eq!(fs::read(&path).unwrap(), format!("new {i}").as_bytes());
    }
    assert_eq!(files_below(&base).len(), 4200, "no temporary file left");
    env.assert_verified();
}

/// Files, a symlink and a file of several chunks in the way are replaced, and so are files
/// in the way of a symlink and of a hard link; what the snapshot does not name is left
/// alone. Restoring again over the result changes nothing.
fn overwrites_files(args: &[&str]) {
    use std::os::unix::fs::MetadataExt;
    let env = populated();
    env.write_file("big.bin", &pseudo_random(2, 3 << 20));
    std::os::unix::fs::symlink("notes.txt", env.src.join("link")).unwrap();
    fs::hard_link(env.src.join("data/b.txt"), env.src.join("data/hard")).unwrap();
    env.backup_src();
    let base = env.path("restored");
    fs::create_dir_all(base.join("data/deep")).unwrap();
    fs::write(base.join("notes.txt"), vec![b'x'; 50_000]).unwrap();
    fs::write(base.join("data/b.txt"), b"").unwrap();
    fs::write(base.join("big.bin"), pseudo_random(3, 1 << 20)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", base.join("data/deep/c.txt")).unwrap();
    fs::write(base.join("unrelated"), b"left alone").unwrap();
    fs::write(base.join("link"), b"in the way of a symlink").unwrap();
    fs::write(base.join("data/hard"), b"in the way of a hard link").unwrap();
    env.restore(&env.latest_src(), "restored", args);
    env.restore(&env.latest_src(), "restored", args);
    assert_eq!(
        fs::read_link(base.join("link")).unwrap(),
        std::path::Path::new("notes.txt")
    );
    assert_eq!(
        fs::metadata(base.join("data/hard")).unwrap().ino(),
        fs::metadata(base.join("data/b.txt")).unwrap().ino()
    );
    assert_eq!(fs::read(base.join("notes.txt")).unwrap(), b"notes");
    assert_eq!(fs::read(base.join("data/b.txt")).unwrap(), b"bee");
    assert_eq!(
        fs::read(base.join("big.bin")).unwrap(),
        pseudo_random(2, 3 << 20)
    );
    let c = base.join("data/deep/c.txt");
    assert!(
        !fs::symlink_metadata(&c).unwrap().file_type().is_symlink(),
        "a symlink in the target was written through"
    );
    assert_eq!(fs::read(&c).unwrap(), b"sea");
    assert_eq!(fs::read(base.join("unrelated")).unwrap(), b"left alone");
    assert_no_temporary_files(&base);
    env.assert_verified();
}

#[test]
fn restore_accepts_a_snapshot_id_prefix() {
    let env = populated();
    env.backup_src();
    env.write_file("later.txt", b"only in the second snapshot");
    env.backup_src();
    let first = env.json(&["snapshots"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let spec = format!("{}:{}", &first[..8], env.src.display());
    let restored = env.restore(&spec, "restored", &[]);
    assert!(restored.join("notes.txt").exists());
    assert!(
        !restored.join("later.txt").exists(),
        "restored the newest snapshot, not the one named"
    );
    let upper = format!("{}:{}", first[..12].to_uppercase(), env.src.display());
    env.restore(&upper, "restored-upper", &[]);
    env.assert_verified();
}

#[test]
fn restore_leaves_no_temporary_files() {
    let env = populated();
    env.write_file("big.bin", &pseudo_random(5, 3 << 20));
    // One chunk, large enough for its whole blocks to be written with direct I/O.
    env.write_file("medium.bin", &pseudo_random(6, 300_001));
    env.write_file("empty", b"");
    env.backup_src();
    let restored = env.restore(&env.latest_src(), "restored", &[]);
    assert_no_temporary_files(&restored);
    assert_eq!(
        fs::read(restored.join("big.bin")).unwrap(),
        pseudo_random(5, 3 << 20)
    );
    assert_eq!(
        fs::read(restored.join("medium.bin")).unwrap(),
        pseudo_random(6, 300_001)
    );
    env.assert_verified();
}

#[test]
fn restore_of_a_missing_path_fails_naming_it() {
    let env = populated();
    env.backup_src();
    let spec = format!("latest:{}/no-such-thing", env.src.display());
    let target = env.path("restored");
    let out = env.fails(
        &["restore", &spec, "--target", target.to_str().unwrap()],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("no-such-thing"));
    env.assert_verified();
}

#[test]
fn restore_of_an_unknown_snapshot_fails_naming_it() {
    let env = populated();
    env.backup_src();
    let target = env.path("restored");
    let out = env.fails(
        &["restore", "abcdef12", "--target", target.to_str().unwrap()],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("abcdef12"));
    let out = env.fails(
        &["restore", "not-an-id", "--target", target.to_str().unwrap()],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("not-an-id"));
}

#[test]
fn restore_refuses_to_write_through_a_symlinked_directory_in_the_target() {
    let env = populated();
    env.backup_src();
    let outside = env.path("outside");
    fs::create_dir(&outside).unwrap();
    let target = env.path("restored");
    fs::create_dir(&target).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("data")).unwrap();
    let spec = env.latest_src();
    let out = env.fails(
        &["restore", &spec, "--target", target.to_str().unwrap()],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("symlink"));
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "restore wrote outside the target"
    );
    env.assert_verified();
}

#[test]
fn an_ordinary_user_restores_read_only_files_and_directories_with_xattrs() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::init();
    let file = env.write_file("ro/file", b"read-only, with an xattr");
    let dir = env.src.join("ro");
    for path in [&file, &dir] {
        if let Err(e) = xattr::set(path, "user.test", b"kept") {
            eprintln!("skipped: this file system refuses user xattrs ({e})");
            return;
        }
    }
    // Only the owner's write permission lets an ordinary user set xattrs: restore must set
    // them before it makes the file or directory read-only.
    fs::set_permissions(&file, fs::Permissions::from_mode(0o444)).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o555)).unwrap();
    env.backup_src();
    let target = env.path("restored");
    let spec = env.latest_src();
    let Some(mut cmd) =
        env.arca_unprivileged(&["restore", &spec, "--target", target.to_str().unwrap()])
    else {
        return;
    };
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for (path, mode) in [(target.join("ro/file"), 0o444), (target.join("ro"), 0o555)] {
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            mode
        );
        assert_eq!(
            xattr::get(&path, "user.test").unwrap().as_deref(),
            Some(&b"kept"[..]),
            "{}",
            path.display()
        );
    }
    assert_eq!(
        fs::read(target.join("ro/file")).unwrap(),
        b"read-only, with an xattr"
    );
    env.assert_verified();
}

#[test]
fn restore_reports_a_directory_in_the_way_of_a_file_and_restores_the_rest() {
    let env = populated();
    env.backup_src();
    let target = env.path("restored");
    fs::create_dir_all(target.join("notes.txt/inside")).unwrap();
    let spec = env.latest_src();
    let out = env.fails(
        &["restore", &spec, "--target", target.to_str().unwrap()],
        EXIT_PROBLEMS,
    );
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("arca: warning: ") && l.contains("notes.txt")),
        "{err}"
    );
    assert!(
        target.join("notes.txt/inside").is_dir(),
        "restore removed a directory in its way"
    );
    assert_eq!(fs::read(target.join("data/deep/c.txt")).unwrap(), b"sea");
    assert_no_temporary_files(&target);
    env.assert_verified();
}

/// Regression: with a blob stored twice (its first pack lost, then stored again), a cache
/// that had loaded the first location kept it, and restore read from the missing pack.
#[test]
fn restore_uses_the_copy_of_a_blob_whose_pack_still_exists() {
    let env = TestEnv::init();
    env.write_file("f", &pseudo_random(1, 10_000));
    env.backup_src();
    // A second cache (another machine) learns where the data is.
    let other_cache = env.path("other-cache");
    env.arca(&["ls", "latest"])
        .env("ARCA_CACHE_DIR", &other_cache)
        .assert()
        .success();
    // The pack is lost; a forced backup stores the data again, in a new pack.
    fs::remove_file(new_packs(&env, &[]).remove(0)).unwrap();
    let report = env.backup(&[&env.src], &["--force"]);
    assert!(
        report["snapshot"]["summary"]["bytes_added"]
            .as_u64()
            .unwrap()
            >= 10_000,
        "{report}"
    );
    // The newest snapshot is whole, and every cache must find its data.
    for cache in [&env.cache, &other_cache] {
        let target = env.path("restored");
        let _ = fs::remove_dir_all(&target);
        env.arca(&[
            "restore",
            &env.latest_src(),
            "--target",
            target.to_str().unwrap(),
        ])
        .env("ARCA_CACHE_DIR", cache)
        .assert()
        .success();
        assert_eq!(
            fs::read(target.join("f")).unwrap(),
            pseudo_random(1, 10_000)
        );
    }
}

#[test]
fn restore_of_a_wide_deep_tree_recreates_every_entry_with_its_metadata() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = TestEnv::init();
    // 258 directories on three levels, each deepest one with a small file and a symlink;
    // a file of several chunks, hard-linked from elsewhere; directories with their own
    // modes and times, which restore sets deepest first once everything is in place.
    for a in 0..6 {
        for b in 0..6 {
            for c in 0..6 {
                let dir = format!("d{a}/e{b}/f{c}");
                env.write_file(&format!("{dir}/small"), format!("{a}{b}{c}").as_bytes());
                std::os::unix::fs::symlink("small", env.src.join(&dir).join("link")).unwrap();
            }
        }
    }
    env.write_file("d0/big", &pseudo_random(3, 6 << 20));
    fs::hard_link(env.src.join("d0/big"), env.src.join("d5/e5/big-link")).unwrap();
    for a in 0..6 {
        for (b, mode) in [(0, 0o750), (3, 0o700)] {
            let dir = env.src.join(format!("d{a}/e{b}"));
            fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).unwrap();
            run(
                "touch",
                &["-d", "2001-02-03 04:05:06", dir.to_str().unwrap()],
            );
        }
    }
    let restored = env.round_trip();

    let relative = |root: &std::path::Path| -> Vec<std::path::PathBuf> {
        entries_below(root)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
            .collect()
    };
    let entries = relative(&env.src);
    assert_eq!(relative(&restored), entries);
    assert_eq!(entries.len(), 6 + 36 + 216 * 3 + 2);
    for rel in &entries {
        let (want, got) = (
            fs::symlink_metadata(env.src.join(rel)).unwrap(),
            fs::symlink_metadata(restored.join(rel)).unwrap(),
        );
        let shown = rel.display();
        assert_eq!(got.file_type(), want.file_type(), "{shown}");
        if want.is_symlink() {
            assert_eq!(
                fs::read_link(restored.join(rel)).unwrap(),
                fs::read_link(env.src.join(rel)).unwrap(),
                "{shown}"
            );
            continue;
        }
        assert_eq!(got.mode() & 0o7777, want.mode() & 0o7777, "{shown}");
        assert_eq!(
            (got.mtime(), got.mtime_nsec()),
            (want.mtime(), want.mtime_nsec()),
            "{shown}"
        );
        if want.is_file() {
            assert_eq!(
                fs::read(restored.join(rel)).unwrap(),
                fs::read(env.src.join(rel)).unwrap(),
                "{shown}"
            );
        }
    }
    assert_eq!(
        fs::metadata(restored.join("d0/big")).unwrap().ino(),
        fs::metadata(restored.join("d5/e5/big-link")).unwrap().ino()
    );
    env.assert_verified();
}

/// A file system mounted for a test, unmounted when dropped.
struct Mounted(std::path::PathBuf);

impl Mounted {
    /// A tmpfs of `size` at `dir`, or `None` where this process may not mount one.
    fn tmpfs(dir: &std::path::Path, size: &str) -> Option<Mounted> {
        fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success()).then(|| Mounted(dir.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn restore_onto_a_full_file_system_stops_at_the_first_file_that_does_not_fit() {
    let env = TestEnv::init();
    // A file whose data is lost before the restore: a problem found before the disk fills,
    // which must still be reported.
    env.write_file("lost", &pseudo_random(1000, 5_000));
    env.backup_src();
    let lost_packs = env.packs();
    for i in 0..300 {
        env.write_file(&format!("f{i:03}"), &pseudo_random(i, 16_000));
    }
    env.write_file("big.bin", &pseudo_random(999, 3 << 20));
    env.backup_src();
    for pack in lost_packs {
        fs::remove_file(pack).unwrap();
    }
    let target = env.path("small");
    let Some(_mounted) = Mounted::tmpfs(&target, "1m") else {
        eprintln!("skipped: this process may not mount a file system");
        return;
    };
    // A file in the way keeps its old contents unless it was replaced whole.
    fs::write(target.join("f299"), b"old").unwrap();
    let out = env
        .arca(&[
            "restore",
            &env.latest_src(),
            "--target",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("the restore stopped there"), "{err}");
    let (stop, earlier) = err
        .split_once("before it stopped, ")
        .unwrap_or_else(|| panic!("the earlier problems are missing: {err}"));
    assert!(
        stop.lines().count() <= 3,
        "one error, not one per file: {err}"
    );
    assert!(
        earlier.contains("lost") && earlier.contains("missing"),
        "{err}"
    );
    assert!(err.contains(" of 302 files written"), "{err}");
    let in_the_way = fs::read(target.join("f299")).unwrap();
    assert!(
        in_the_way == b"old" || in_the_way == pseudo_random(299, 16_000),
        "f299 is neither its old contents nor its new"
    );
    assert_no_temporary_files(&target);
    // What was written is whole.
    for path in files_below(&target) {
        let name = path.file_name().unwrap().to_str().unwrap();
        if let Some(i) = name.strip_prefix('f').filter(|_| name != "f299") {
            let i: u64 = i.parse().unwrap();
            let whole = fs::read(&path).unwrap() == pseudo_random(i, 16_000);
            assert!(whole, "{name} was left short");
        }
    }
}
