//! Tests of offsite mirrors: the rsync script of `docs/offsite.md`, run as written, and
//! `arca verify --mirror`.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;

use crate::common::*;

/// The first `sh` block of `docs/offsite.md`: the mirror script, exactly as documented.
fn mirror_script(env: &TestEnv) -> PathBuf {
    let doc =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/offsite.md")).unwrap();
    let start = doc
        .find("```sh\n")
        .expect("docs/offsite.md has a ```sh block")
        + 6;
    let len = doc[start..].find("\n```").unwrap();
    let script = &doc[start..start + len + 1];
    assert!(
        script.contains("rsync") && script.contains("set -e"),
        "{script}"
    );
    let path = env.path("arca-mirror");
    fs::write(&path, script).unwrap();
    path
}

/// Runs the documented mirror script from the environment's repository into `dest`.
fn mirror(env: &TestEnv, dest: &Path) {
    if !have("rsync") {
        panic!("rsync is needed to test mirrors (CI installs it)");
    }
    let out = std::process::Command::new("sh")
        .arg(mirror_script(env))
        .arg(&env.repo)
        .arg(dest)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the mirror script failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// `arca ARGS` on the mirror, with a cache of its own (it has the source's repository id).
fn on_mirror(env: &TestEnv, dest: &Path, args: &[&str]) -> Command {
    let mut cmd = env.arca(args);
    cmd.env("ARCA_REPOSITORY", dest)
        .env("ARCA_CACHE_DIR", env.path("mirror-cache"));
    cmd
}

/// `arca verify --mirror DIR` with no password and no repository in the environment.
fn verify_mirror(env: &TestEnv, dest: &Path, json: bool) -> std::process::Output {
    let mut args = vec!["verify", "--mirror", dest.to_str().unwrap()];
    if json {
        args.insert(0, "--json");
    }
    let mut cmd = env.arca(&args);
    cmd.env_remove("ARCA_PASSWORD")
        .env_remove("ARCA_REPOSITORY");
    cmd.output().unwrap()
}

/// `arca backup PATH` for each of `paths` in turn, in the background.
fn spawn_backups(env: &TestEnv, paths: &[PathBuf]) -> Child {
    let pinned = env.path("arca");
    let bin = if pinned.exists() {
        pinned
    } else {
        assert_cmd::cargo::cargo_bin("arca")
    };
    let mut cmd = std::process::Command::new("sh");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ARCA_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("ARCA_REPOSITORY", &env.repo)
        .env("ARCA_CACHE_DIR", &env.cache)
        .env("ARCA_PASSWORD", PASSWORD)
        .env("ARCA_BIN", bin)
        .current_dir(env.root())
        .args([
            "-c",
            "set -e; for p in \"$@\"; do \"$ARCA_BIN\" -q backup \"$p\"; done",
            "sh",
        ])
        .args(paths)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Every snapshot id of a repository, through `snapshots --json`.
fn snapshot_ids(listing: &Value) -> Vec<String> {
    listing
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn file_names(dir: &Path) -> BTreeSet<String> {
    files_below(dir)
        .iter()
        .map(|p| p.strip_prefix(dir).unwrap().display().to_string())
        .collect()
}

/// About 30 MB in 300 files of 20–180 KB, in 15 folders.
fn write_large_tree(env: &TestEnv) {
    for i in 0..300u64 {
        let len = 20_000 + (i as usize * 7_919) % 160_000;
        env.write_file(
            &format!("big/d{:02}/f{i:03}.bin", i % 15),
            &pseudo_random(100 + i, len),
        );
    }
}

#[test]
fn a_mirror_taken_during_a_backup_is_consistent_and_the_next_one_complete() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    env.write_file("small/a.txt", b"already backed up\n");
    env.write_file("small/b.bin", &pseudo_random(1, 300_000));
    env.backup_src();
    write_large_tree(&env);
    let dest = env.path("mirror");
    let packs_before = pack_count(&env.repo);

    // A backup of each folder of the large tree, then of the whole tree: 16 backups, each
    // ending with an index segment and a snapshot, written while the mirror runs.
    let mut paths: Vec<PathBuf> = (0..15)
        .map(|d| env.src.join(format!("big/d{d:02}")))
        .collect();
    paths.push(env.src.clone());
    let mut backup = spawn_backups(&env, &paths);
    // Start mirroring once the first backup has written a pack, and mirror again and
    // again until the backups end, so that passes run while they write their index and
    // snapshot.
    // Each state of the mirror is kept (hard links: files are never modified) and checked
    // afterwards: every one must be usable, or name precisely what it lacks.
    let deadline = Instant::now() + Duration::from_secs(20);
    while pack_count(&env.repo) == packs_before && Instant::now() < deadline {
        if backup.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut states = Vec::new();
    let mut during = 0;
    while states.is_empty() || (backup.try_wait().unwrap().is_none() && states.len() < 40) {
        if backup.try_wait().unwrap().is_none() {
            during += 1;
        }
        mirror(&env, &dest);
        let state = env.path(&format!("mirror-state-{}", states.len()));
        link_copy(&dest, &state);
        states.push(state);
    }
    eprintln!(
        "{during} of {} mirror(s) started while backups ran",
        states.len()
    );
    for state in &states {
        let out = on_mirror(&env, state, &["verify"]).output().unwrap();
        let report = stdout(&out);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                let damaged: Vec<&str> = report
                    .lines()
                    .filter(|l| l.starts_with("damaged "))
                    .collect();
                assert!(
                    !damaged.is_empty()
                        && damaged
                            .iter()
                            .all(|l| l.contains("packs/") || l.contains("index/")),
                    "verify of a mirror made during a backup must name the pack or index files \
                     it lacks:\n{report}"
                );
            }
            other => panic!(
                "verify of {} exited {other:?}:\n{report}{}",
                state.display(),
                stderr(&out)
            ),
        }
    }
    let done = backup.wait_with_output().unwrap();
    assert!(done.status.success(), "a backup failed:\n{}", stderr(&done));

    // After the backup: one more mirror holds everything.
    mirror(&env, &dest);
    on_mirror(&env, &dest, &["verify", "--read-data"])
        .assert()
        .success();
    let out = verify_mirror(&env, &dest, false);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut source_files = file_names(&env.repo);
    source_files.retain(|f| !f.starts_with("locks/"));
    let mut mirror_files = file_names(&dest);
    mirror_files.retain(|f| !f.starts_with("locks/"));
    assert_eq!(source_files, mirror_files);

    let listing = env.json(&["snapshots"]);
    let ids = snapshot_ids(&listing);
    assert_eq!(ids.len(), 17);
    let mirrored = on_mirror(&env, &dest, &["--json", "snapshots"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(
        snapshot_ids(&serde_json::from_slice(&mirrored).unwrap()),
        ids
    );
    for (i, id) in ids.iter().enumerate() {
        let spec = format!("{id}:{}", env.src.display());
        let from_source = env.restore(&spec, &format!("source-{i}"), &[]);
        let target = env.path(&format!("mirror-{i}"));
        on_mirror(
            &env,
            &dest,
            &["restore", &spec, "--target", target.to_str().unwrap()],
        )
        .assert()
        .success();
        assert_same_files(&from_source, &target);
    }
    assert_same_files(&env.src, &env.path("mirror-16"));
    env.assert_verified();
}

/// The packs of a repository a backup is writing to (its temporary files come and go).
fn pack_count(repo: &Path) -> usize {
    let mut count = 0;
    for folder in fs::read_dir(repo.join("packs")).unwrap().flatten() {
        if let Ok(files) = fs::read_dir(folder.path()) {
            count += files
                .flatten()
                .filter(|f| !f.file_name().to_string_lossy().starts_with('.'))
                .count();
        }
    }
    count
}

/// A copy of `from` at `to` made of hard links.
fn link_copy(from: &Path, to: &Path) {
    fs::create_dir(to).unwrap();
    for path in entries_below(from) {
        let dest = to.join(path.strip_prefix(from).unwrap());
        if fs::symlink_metadata(&path).unwrap().is_dir() {
            fs::create_dir(&dest).unwrap();
        } else {
            fs::hard_link(&path, &dest).unwrap();
        }
    }
}

/// Two folders hold the same files with the same contents.
fn assert_same_files(a: &Path, b: &Path) {
    let names = file_names(a);
    assert_eq!(names, file_names(b), "{} and {}", a.display(), b.display());
    for name in names {
        assert!(
            fs::read(a.join(&name)).unwrap() == fs::read(b.join(&name)).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn verify_mirror_needs_no_password_and_names_each_bad_file() {
    let env = TestEnv::init();
    env.write_file("a.bin", &pseudo_random(2, 400_000));
    env.write_file("b.txt", b"some text\n");
    env.backup_src();
    let dest = env.path("mirror");
    mirror(&env, &dest);

    let out = verify_mirror(&env, &dest, true);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["config"], true);
    assert_eq!(report["snapshots"]["files"], 1);
    assert_eq!(report["keys"]["files"], 1);
    assert_eq!(
        report["packs"]["files"].as_u64(),
        Some(env.packs().len() as u64)
    );
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);

    // A flipped bit in a pack.
    let pack = files_below(&dest.join("packs"))[0].clone();
    let original = fs::read(&pack).unwrap();
    flip_bit(&pack, original.len() / 2);
    let out = verify_mirror(&env, &dest, false);
    assert_eq!(out.status.code(), Some(EXIT_PROBLEMS), "{}", stdout(&out));
    let text = stdout(&out);
    let name = pack_name(&pack);
    assert!(
        text.contains(&format!("damaged {name}: contents do not match")),
        "{text}"
    );
    assert_eq!(
        text.lines().filter(|l| l.starts_with("damaged")).count(),
        1,
        "{text}"
    );
    write_in_place(&pack, &original);

    // A snapshot renamed to another id, an index segment renamed out of the way.
    let snapshot = files_below(&dest.join("snapshots"))[0].clone();
    let id = snapshot.file_name().unwrap().to_str().unwrap().to_string();
    let other = format!(
        "{}{}",
        if id.starts_with('0') { "1" } else { "0" },
        &id[1..]
    );
    fs::rename(&snapshot, dest.join("snapshots").join(&other)).unwrap();
    let index = files_below(&dest.join("index"))[0].clone();
    let index_id = index.file_name().unwrap().to_str().unwrap().to_string();
    fs::rename(&index, dest.join("index").join(format!("{index_id}.old"))).unwrap();
    let out = verify_mirror(&env, &dest, false);
    assert_eq!(out.status.code(), Some(EXIT_PROBLEMS), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("damaged snapshots/{other}: contents do not match")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "damaged index/{index_id}.old: not a repository file name"
        )),
        "{text}"
    );

    // The mirror script puts things right; a missing config is named too.
    mirror(&env, &dest);
    assert_eq!(verify_mirror(&env, &dest, false).status.code(), Some(0));
    fs::remove_file(dest.join("config")).unwrap();
    let out = verify_mirror(&env, &dest, false);
    assert_eq!(out.status.code(), Some(EXIT_PROBLEMS));
    assert!(
        stdout(&out).contains("damaged config: missing"),
        "{}",
        stdout(&out)
    );
    let out = verify_mirror(&env, &env.path("no-such-mirror"), false);
    assert_eq!(out.status.code(), Some(EXIT_ERROR));
    assert!(error_line(&out).contains("no-such-mirror"));
    env.assert_verified();
}

#[test]
fn a_mirror_follows_forget_and_prune() {
    let env = TestEnv::init_with(&["--pack-size", "1"]);
    env.write_file("old.bin", &pseudo_random(3, 1_500_000));
    let first = env.backup_src();
    fs::remove_file(env.src.join("old.bin")).unwrap();
    env.write_file("new.bin", &pseudo_random(4, 1_500_000));
    env.backup_src();
    let dest = env.path("mirror");
    mirror(&env, &dest);
    fs::remove_file(
        env.repo
            .join("snapshots")
            .join(first["snapshot_id"].as_str().unwrap()),
    )
    .unwrap();
    env.arca(&["prune"]).assert().success();
    mirror(&env, &dest);
    let mut source = file_names(&env.repo);
    source.retain(|f| !f.starts_with("locks/"));
    assert_eq!(
        file_names(&dest),
        source,
        "the mirror still holds what prune removed"
    );
    on_mirror(&env, &dest, &["verify", "--read-data"])
        .assert()
        .success();
    assert_eq!(verify_mirror(&env, &dest, false).status.code(), Some(0));
    let restored = env.path("restored");
    on_mirror(
        &env,
        &dest,
        &[
            "restore",
            &format!("latest:{}", env.src.display()),
            "--target",
            restored.to_str().unwrap(),
        ],
    )
    .assert()
    .success();
    assert_same_files(&env.src, &restored);
    env.assert_verified();
}
