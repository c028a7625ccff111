//! Bad input of every kind: wrong or missing passwords, missing or foreign repositories,
//! hostile key files, damaged repositories, usage errors. Each gives a clear message, the
//! right exit code, no panic, and leaves the repository as it was.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::*;

// ---- passwords ----

#[test]
fn wrong_password_is_refused_with_exit_1() {
    let env = TestEnv::init();
    env.write_file("f", b"x");
    let mut cmd = env.arca(&["backup", env.src.to_str().unwrap()]);
    cmd.env("ARCA_PASSWORD", "not the password");
    let out = fails_with(&env, cmd, EXIT_ERROR);
    assert!(error_line(&out).contains("wrong password"));
    env.assert_verified();
}

#[test]
fn password_is_read_from_arca_password_file() {
    let env = TestEnv::init();
    let file = env.path("pw");
    fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    env.arca(&["snapshots"])
        .env_remove("ARCA_PASSWORD")
        .env("ARCA_PASSWORD_FILE", &file)
        .assert()
        .success();
    // The file comes before ARCA_PASSWORD.
    env.arca(&["snapshots"])
        .env("ARCA_PASSWORD", "wrong")
        .env("ARCA_PASSWORD_FILE", &file)
        .assert()
        .success();
    env.assert_verified();
}

#[test]
fn a_missing_password_file_is_named() {
    let env = TestEnv::init();
    let file = env.path("no-such-password-file");
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env("ARCA_PASSWORD_FILE", &file);
    let out = fails_with(&env, cmd, EXIT_ERROR);
    assert!(error_line(&out).contains(&file.display().to_string()));
}

#[test]
fn password_is_read_from_arca_password_command() {
    let env = TestEnv::init();
    env.arca(&["snapshots"])
        .env_remove("ARCA_PASSWORD")
        .env("ARCA_PASSWORD_COMMAND", format!("echo '{PASSWORD}'"))
        .assert()
        .success();
    env.assert_verified();
}

#[test]
fn a_failing_password_command_is_named() {
    let env = TestEnv::init();
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env_remove("ARCA_PASSWORD")
        .env("ARCA_PASSWORD_COMMAND", "exit 7");
    let out = fails_with(&env, cmd, EXIT_ERROR);
    assert!(error_line(&out).contains("exit 7"));
}

#[test]
fn no_password_and_no_terminal_names_the_variables() {
    let env = TestEnv::init();
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env_remove("ARCA_PASSWORD");
    let out = fails_with(&env, cmd, EXIT_ERROR);
    let line = error_line(&out);
    for var in [
        "ARCA_PASSWORD",
        "ARCA_PASSWORD_FILE",
        "ARCA_PASSWORD_COMMAND",
    ] {
        assert!(line.contains(var), "{line}");
    }
    // init asks before it writes anything.
    let fresh = TestEnv::new();
    let mut cmd = fresh.arca(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    cmd.env_remove("ARCA_PASSWORD");
    fails_with(&fresh, cmd, EXIT_ERROR);
    assert!(!fresh.repo.exists());
}

#[test]
fn an_empty_password_is_refused_from_every_source() {
    let fresh = TestEnv::new();
    let mut cmd = fresh.arca(&["init", "--kdf-memory", "64", "--kdf-iterations", "1"]);
    cmd.env("ARCA_PASSWORD", "");
    let line = error_line(&fails_with(&fresh, cmd, EXIT_ERROR));
    assert!(
        line.contains("ARCA_PASSWORD") && line.contains("empty"),
        "{line}"
    );
    assert!(!fresh.repo.exists());

    let env = TestEnv::init();
    let file = env.path("empty-password");
    fs::write(&file, "\n").unwrap();
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env("ARCA_PASSWORD_FILE", &file);
    let line = error_line(&fails_with(&env, cmd, EXIT_ERROR));
    assert!(
        line.contains(&file.display().to_string()) && line.contains("empty"),
        "{line}"
    );
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env("ARCA_PASSWORD_COMMAND", "true");
    assert!(error_line(&fails_with(&env, cmd, EXIT_ERROR)).contains("empty"));
}

// ---- repositories that are not there, or not ours ----

#[test]
fn no_repository_at_the_path_says_so_and_names_it() {
    let env = TestEnv::new();
    env.write_file("f", b"x");
    for args in [
        vec!["snapshots"],
        vec!["backup", env.src.to_str().unwrap()],
        vec!["verify"],
    ] {
        let out = env.fails(&args, EXIT_ERROR);
        let line = error_line(&out);
        assert!(
            line.contains("no repository") && line.contains(&env.repo.display().to_string()),
            "{line}"
        );
    }
    assert!(
        !env.repo.exists(),
        "a failed command created the repository folder"
    );
}

#[test]
fn no_repository_given_names_the_option_and_variable() {
    let env = TestEnv::new();
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env_remove("ARCA_REPOSITORY");
    let out = fails_with(&env, cmd, EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("--repo") && line.contains("ARCA_REPOSITORY"),
        "{line}"
    );
}

#[test]
fn a_repository_of_an_unknown_version_is_refused_naming_the_version() {
    let env = TestEnv::init();
    let config = env.repo.join("config");
    let mut bytes = fs::read(&config).unwrap();
    bytes[5] = 2;
    write_in_place(&config, &bytes);
    let out = env.fails(&["snapshots"], EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("config") && line.contains("version 2") && line.contains("newer arca"),
        "{line}"
    );
    // The version is checked before the password, so a wrong one changes nothing.
    let mut cmd = env.arca(&["snapshots"]);
    cmd.env("ARCA_PASSWORD", "wrong");
    assert!(error_line(&fails_with(&env, cmd, EXIT_ERROR)).contains("version 2"));
}

#[test]
fn a_key_file_of_an_unknown_version_is_refused_naming_it() {
    let env = TestEnv::init();
    let key = env.repo_dir_files("keys").remove(0);
    let mut bytes = fs::read(&key).unwrap();
    bytes[5] = 9;
    write_in_place(&key, &bytes);
    let out = env.fails(&["snapshots"], EXIT_ERROR);
    let line = error_line(&out);
    assert!(
        line.contains("version 9") && line.contains("keys/"),
        "{line}"
    );
}

#[test]
fn a_key_file_with_out_of_bounds_kdf_parameters_fails_fast() {
    let env = TestEnv::init();
    let key = env.repo_dir_files("keys").remove(0);
    let mut bytes = fs::read(&key).unwrap();
    bytes[8..12].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
    write_in_place(&key, &bytes);
    let started = Instant::now();
    let out = env.fails(&["snapshots"], EXIT_ERROR);
    let took = started.elapsed();
    let line = error_line(&out);
    assert!(
        line.contains("out of bounds") && line.contains("keys/"),
        "{line}"
    );
    assert!(
        took < Duration::from_secs(1),
        "took {took:?}: the KDF must not run with hostile parameters"
    );
}

// ---- damaged repositories ----

/// A repository whose first backup stored `a/one.bin`, and whose second backed up `a/` and
/// `b/` together: `a`'s data stays in the first backup's data pack, `b`'s is in a new one.
struct TwoPacks {
    env: TestEnv,
    /// The pack holding `a/one.bin`'s data.
    a_pack: PathBuf,
    /// The pack holding the first backup's trees, `a`'s among them.
    a_tree_pack: PathBuf,
    /// The index segment of the first backup.
    a_index: PathBuf,
    a_file: PathBuf,
    b_files: Vec<(PathBuf, Vec<u8>)>,
}

fn two_packs() -> TwoPacks {
    let env = TestEnv::init();
    let a_file = env.write_file("a/one.bin", &pseudo_random(1, 200_000));
    let a_dir = env.src.join("a");
    env.backup(&[&a_dir], &[]);
    let first_packs = new_packs(&env, &[]);
    assert_eq!(
        first_packs.len(),
        2,
        "one data pack and one tree pack: {first_packs:?}"
    );
    let (a_pack, a_tree_pack) = (first_packs[0].clone(), first_packs[1].clone());
    let a_index = env.repo_dir_files("index").remove(0);
    let packs_before = env.packs();
    let b_files = vec![
        (
            env.write_file("b/two.bin", &pseudo_random(2, 150_000)),
            pseudo_random(2, 150_000),
        ),
        (env.write_file("b/three.txt", b"three"), b"three".to_vec()),
    ];
    env.backup(&[&a_dir, &env.src.join("b")], &[]);
    let new = new_packs(&env, &packs_before);
    assert!(
        !new.contains(&a_pack),
        "the second backup should not rewrite the first one's pack"
    );
    TwoPacks {
        env,
        a_pack,
        a_tree_pack,
        a_index,
        a_file,
        b_files,
    }
}

impl TwoPacks {
    /// With the first backup's trees lost (their pack, or the index segment that finds
    /// them), the first snapshot cannot be restored at all, the second not below `a`.
    fn lists_trees_of_the_first_backup_as_damaged(&self, report: &str) {
        let a_dir = self.a_file.parent().unwrap().display().to_string();
        assert_eq!(damaged_paths(report), ["/".to_string(), a_dir], "{report}");
    }

    /// Restores the newest snapshot (which has `a` and `b`), expecting exit 3 because `a`'s
    /// data is damaged; checks `b` came back whole and that the warnings name `a/one.bin`.
    fn restore_around_the_damage(&self) {
        let target = self.env.path("restored");
        let out = self.env.fails(
            &["restore", "latest", "--target", target.to_str().unwrap()],
            EXIT_PROBLEMS,
        );
        let inside = |p: &PathBuf| target.join(p.strip_prefix("/").unwrap());
        for (path, data) in &self.b_files {
            assert_eq!(
                &fs::read(inside(path)).unwrap(),
                data,
                "{} was not restored",
                path.display()
            );
        }
        assert!(
            !inside(&self.a_file).exists(),
            "a damaged file must not appear under its name"
        );
        let err = stderr(&out);
        let warning = err
            .lines()
            .find(|l| l.contains("one.bin"))
            .unwrap_or_else(|| panic!("no warning: {err}"));
        assert!(warning.starts_with("arca: warning: "), "{warning}");
        assert_no_temporary_files(&target);
    }

    /// `verify ARGS` exits 3; returns its standard output.
    fn verify_finds_damage(&self, args: &[&str]) -> String {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        let out = self.env.fails(&all, EXIT_PROBLEMS);
        let text = stdout(&out);
        assert!(text.contains("DAMAGE FOUND"), "{text}");
        text
    }

    /// Whether the report lists `a/one.bin` in both snapshots as unrestorable.
    fn lists_a_file_as_damaged(&self, report: &str) -> bool {
        let a_file = self.a_file.display().to_string();
        damaged_paths(report) == [a_file.clone(), a_file]
    }
}

/// The snapshot paths a verify report lists as unrestorable, without their snapshot ids,
/// sorted.
fn damaged_paths(report: &str) -> Vec<String> {
    let mut paths: Vec<String> = report
        .lines()
        .skip_while(|l| !l.starts_with("entries that cannot be restored whole:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim().split_once(':').unwrap().1.to_string())
        .collect();
    paths.sort();
    paths
}

#[test]
fn verify_names_a_truncated_pack_and_restore_works_around_it() {
    let t = two_packs();
    let bytes = fs::read(&t.a_pack).unwrap();
    write_in_place(&t.a_pack, &bytes[..bytes.len() / 2]);
    let report = t.verify_finds_damage(&["--read-data"]);
    let line = report
        .lines()
        .find(|l| l.contains(&pack_name(&t.a_pack)))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("truncated"), "{line}");
    assert!(t.lists_a_file_as_damaged(&report), "{report}");
    // The size check alone finds it, without reading data.
    assert!(t.verify_finds_damage(&[]).contains(&pack_name(&t.a_pack)));
    t.restore_around_the_damage();
}

#[test]
fn verify_read_data_names_the_pack_blob_and_path_of_a_flipped_bit() {
    let t = two_packs();
    flip_bit(&t.a_pack, 100);
    let report = t.verify_finds_damage(&["--read-data"]);
    let pack_line = report
        .lines()
        .find(|l| l.contains(&pack_name(&t.a_pack)))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(pack_line.starts_with("damaged pack "), "{report}");
    let blob_line = report
        .lines()
        .find(|l| l.starts_with("damaged blob "))
        .unwrap_or_else(|| panic!("{report}"));
    let blob_id = blob_line["damaged blob ".len()..]
        .split(':')
        .next()
        .unwrap();
    assert_eq!(blob_id.len(), 64, "{blob_line}");
    assert!(t.lists_a_file_as_damaged(&report), "{report}");
    t.restore_around_the_damage();
}

#[test]
fn verify_and_restore_name_what_a_missing_pack_takes_away() {
    let t = two_packs();
    fs::remove_file(&t.a_pack).unwrap();
    let report = t.verify_finds_damage(&[]);
    let line = report
        .lines()
        .find(|l| l.contains(&pack_name(&t.a_pack)))
        .unwrap_or_else(|| panic!("{report}"));
    assert!(line.contains("missing"), "{line}");
    assert!(t.lists_a_file_as_damaged(&report), "{report}");
    t.restore_around_the_damage();
}

#[test]
fn verify_read_data_reports_a_damaged_pack_header_that_loses_no_data() {
    let t = two_packs();
    let len = fs::metadata(&t.a_pack).unwrap().len() as usize;
    flip_bit(&t.a_pack, len - 20);
    let report = t.verify_finds_damage(&["--read-data"]);
    let name = pack_name(&t.a_pack);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("damaged pack ") && l.contains(&name) && l.contains("header")),
        "{report}"
    );
    // Blobs are found through the index, so every file can still be restored.
    assert!(damaged_paths(&report).is_empty(), "{report}");
    let target = t.env.restore("latest", "restored", &[]);
    let inside = target.join(t.a_file.strip_prefix("/").unwrap());
    assert_eq!(fs::read(inside).unwrap(), pseudo_random(1, 200_000));
}

#[test]
fn restore_skips_a_directory_whose_tree_is_lost_and_restores_the_rest() {
    let t = two_packs();
    fs::remove_file(&t.a_tree_pack).unwrap();
    let report = t.verify_finds_damage(&[]);
    t.lists_trees_of_the_first_backup_as_damaged(&report);
    let target = t.env.path("restored");
    let out = t.env.fails(
        &["restore", "latest", "--target", target.to_str().unwrap()],
        EXIT_PROBLEMS,
    );
    for (path, data) in &t.b_files {
        assert_eq!(
            &fs::read(target.join(path.strip_prefix("/").unwrap())).unwrap(),
            data
        );
    }
    let a_dir = t.a_file.parent().unwrap().display().to_string();
    let err = stderr(&out);
    assert!(
        err.lines()
            .any(|l| l.starts_with("arca: warning: ") && l.contains(&a_dir)),
        "{err}"
    );
}

#[test]
fn verify_names_a_damaged_index_segment() {
    let t = two_packs();
    flip_bit(&t.a_index, 40);
    let report = t.verify_finds_damage(&[]);
    let name = format!("index/{}", t.a_index.file_name().unwrap().to_str().unwrap());
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("damaged index ") && l.contains(&name)),
        "{report}"
    );
    t.lists_trees_of_the_first_backup_as_damaged(&report);
}

#[test]
fn verify_reports_what_a_missing_index_segment_takes_away() {
    let t = two_packs();
    fs::remove_file(&t.a_index).unwrap();
    let report = t.verify_finds_damage(&[]);
    // Nothing names a missing segment, so verify names what it indexed: the pack it listed
    // is no longer in any index, and the blobs in it cannot be found.
    assert!(
        report.contains("2 pack(s) are not in any index"),
        "{report}"
    );
    assert!(!report.contains("harmless"), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("damaged blob ")),
        "{report}"
    );
    t.lists_trees_of_the_first_backup_as_damaged(&report);
    let json = t.env.arca(&["--json", "verify"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let unindexed = json["unreferenced_packs"].as_array().unwrap();
    assert!(
        unindexed.contains(&t.a_pack.file_name().unwrap().to_str().unwrap().into()),
        "{json}"
    );
}

#[test]
fn verify_names_a_bit_flipped_snapshot_file() {
    let t = two_packs();
    let snapshot = t.env.repo_dir_files("snapshots").remove(0);
    let len = fs::metadata(&snapshot).unwrap().len() as usize;
    flip_bit(&snapshot, len - 3);
    // A fresh cache: nothing remembered about the snapshot before it was damaged.
    fs::remove_dir_all(&t.env.cache).unwrap();
    let report = t.verify_finds_damage(&[]);
    let name = format!(
        "snapshots/{}",
        snapshot.file_name().unwrap().to_str().unwrap()
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("damaged snapshot ") && l.contains(&name)),
        "{report}"
    );
}

#[test]

fn verify_names_a_bit_flipped_snapshot_file_even_when_it_is_cached() {
    let t = two_packs();
    // `snapshots` (like any backup, ls or restore) caches every snapshot it reads.
    t.env.arca(&["snapshots"]).assert().success();
    let snapshot = t.env.repo_dir_files("snapshots").remove(0);
    let len = fs::metadata(&snapshot).unwrap().len() as usize;
    flip_bit(&snapshot, len - 3);
    let report = t.verify_finds_damage(&[]);
    let name = format!(
        "snapshots/{}",
        snapshot.file_name().unwrap().to_str().unwrap()
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("damaged snapshot ") && l.contains(&name)),
        "{report}"
    );
}

// ---- usage errors ----

#[test]
fn an_unknown_command_is_a_usage_error() {
    let env = TestEnv::init();
    let out = env.fails(&["frobnicate"], EXIT_USAGE);
    assert!(stderr(&out).contains("frobnicate"));
}

#[test]
fn no_command_is_a_usage_error_and_help_and_version_are_not() {
    let env = TestEnv::new();
    let out = env.fails(&[], EXIT_USAGE);
    assert!(stderr(&out).contains("Usage"));
    let help = env.arca(&["--help"]).assert().success();
    assert!(stdout(help.get_output()).contains("backup"));
    let version = env.arca(&["--version"]).assert().success();
    assert!(stdout(version.get_output()).starts_with("arca "));
}

#[test]
fn backup_without_paths_is_a_usage_error() {
    let env = TestEnv::init();
    let out = env.fails(&["backup"], EXIT_USAGE);
    assert!(error_line(&out).contains("nothing to back up"));
}

#[test]
fn verify_with_both_read_data_options_is_a_usage_error() {
    let env = TestEnv::init();
    let out = env.fails(
        &["verify", "--read-data", "--read-data-subset", "1/2"],
        EXIT_USAGE,
    );
    let line = error_line(&out);
    assert!(
        line.contains("--read-data") && line.contains("--read-data-subset"),
        "{line}"
    );
}

#[test]
fn an_unknown_option_is_a_usage_error() {
    let env = TestEnv::init();
    let out = env.fails(&["snapshots", "--no-such-option"], EXIT_USAGE);
    assert!(stderr(&out).contains("--no-such-option"));
}

#[test]
fn a_backup_of_a_missing_path_fails_naming_it_and_writes_nothing() {
    let env = TestEnv::init();
    let missing = env.path("not-there");
    let out = env.fails(&["backup", missing.to_str().unwrap()], EXIT_ERROR);
    assert!(error_line(&out).contains(&missing.display().to_string()));
    env.assert_verified();
}

#[test]
fn an_invalid_exclude_pattern_is_named() {
    let env = TestEnv::init();
    env.write_file("f", b"x");
    let out = env.fails(
        &["backup", env.src.to_str().unwrap(), "--exclude", "a[b"],
        EXIT_ERROR,
    );
    assert!(error_line(&out).contains("a[b"));
}
