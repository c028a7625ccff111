//! Tests of `arca diff`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};

use serde_json::Value;

use crate::common::*;

/// The changes below `src/` (exactly), and the markers given to `src/` and its ancestors,
/// which change as other tests create files next to ours.
fn split_lines(env: &TestEnv, text: &str) -> (BTreeSet<String>, Vec<String>) {
    let src = format!("{}/", env.src.display());
    let mut below = BTreeSet::new();
    let mut above = Vec::new();
    for line in text.lines() {
        let (marker, path) = line.split_once(' ').unwrap();
        if path.starts_with(&src) && path != src {
            below.insert(format!("{marker} {}", &path[src.len()..]));
        } else if src.starts_with(path.trim_end_matches('/')) {
            above.push(line.to_string());
        } else {
            panic!("unexpected line {line:?}");
        }
    }
    (below, above)
}

const KIND: &[u8] = b"a file, then a directory";

/// Two backups of `src/`, between which one entry of every kind of change is made.
/// Returns the two snapshot ids.
fn two_backups(env: &TestEnv) -> (String, String) {
    env.write_file("keep.txt", b"unchanged");
    env.write_file("stable/deep.txt", b"unchanged too");
    env.write_file("sub/deep.txt", b"version one");
    env.write_file("change.txt", &pseudo_random(1, 50_000));
    env.write_file("remove.txt", &pseudo_random(2, 30_000));
    env.write_file("chmod.txt", b"permissions change");
    env.write_file("olddir/f.txt", &pseudo_random(3, 1_000));
    env.write_file("kind", KIND);
    symlink("keep.txt", env.src.join("link")).unwrap();
    let first = env.backup_src();

    env.write_file("new.txt", &pseudo_random(4, 7_000));
    env.write_file("newdir/a.txt", &pseudo_random(5, 2_000));
    fs::remove_file(env.src.join("remove.txt")).unwrap();
    // Same size, different content: only the blob list tells.
    env.write_file("change.txt", &pseudo_random(6, 50_000));
    env.write_file("sub/deep.txt", b"version two");
    fs::set_permissions(env.src.join("chmod.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir_all(env.src.join("olddir")).unwrap();
    fs::remove_file(env.src.join("kind")).unwrap();
    env.write_file("kind/x.txt", &pseudo_random(7, 500));
    fs::remove_file(env.src.join("link")).unwrap();
    symlink("new.txt", env.src.join("link")).unwrap();
    let second = env.backup_src();
    let id = |r: &Value| r["snapshot_id"].as_str().unwrap().to_string();
    (id(&first), id(&second))
}

fn expected() -> BTreeSet<String> {
    [
        "M change.txt",
        "U chmod.txt",
        "T kind/",
        "+ kind/x.txt",
        "U link",
        "+ new.txt",
        "+ newdir/",
        "+ newdir/a.txt",
        "- olddir/",
        "- olddir/f.txt",
        "- remove.txt",
        "M sub/deep.txt",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn diff_reports_exactly_what_changed_between_two_backups() {
    let env = TestEnv::init();
    let (first, second) = two_backups(&env);
    let out = env
        .arca(&["diff", &first[..8], "latest"])
        .assert()
        .success()
        .get_output()
        .clone();
    let text = stdout(&out);
    let mut lines: Vec<&str> = text.lines().collect();
    let summary_line = lines.pop().unwrap();
    let (below, above) = split_lines(&env, &lines.join("\n"));
    assert_eq!(below, expected(), "{text}");
    for line in &above {
        assert!(
            line.starts_with("U "),
            "an ancestor of src/ changed more than its metadata: {text}"
        );
    }
    // src/ itself lost and gained entries, so its mtime moved.
    assert!(
        above.contains(&format!("U {}/", env.src.display())),
        "{text}"
    );
    assert!(
        summary_line.starts_with("4 added, 3 removed, 2 modified,")
            && summary_line.contains("1 type changed"),
        "{summary_line}"
    );

    // The same through JSON, with the fields that changed and the sizes.
    let json = env.json(&["diff", &first, &second]);
    assert_eq!(json["old"], first.as_str());
    assert_eq!(json["new"], second.as_str());
    let summary = &json["summary"];
    assert_eq!(summary["added"], 4, "{summary}");
    assert_eq!(summary["removed"], 3, "{summary}");
    assert_eq!(summary["modified"], 2, "{summary}");
    assert_eq!(summary["type_changed"], 1, "{summary}");
    assert_eq!(
        summary["metadata"].as_u64().unwrap(),
        2 + above.len() as u64,
        "{summary}"
    );
    // new.txt, newdir/a.txt, kind/x.txt; remove.txt, olddir/f.txt, the file `kind`.
    assert_eq!(summary["bytes_added"], 7_000 + 2_000 + 500, "{summary}");
    assert_eq!(
        summary["bytes_removed"],
        30_000 + 1_000 + KIND.len(),
        "{summary}"
    );
    let find = |suffix: &str| -> Value {
        let path = format!("{}/{suffix}", env.src.display());
        json["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == path.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{suffix} missing from {json}"))
    };
    assert_eq!(find("chmod.txt")["fields"], serde_json::json!(["mode"]));
    assert_eq!(find("link")["change"], "metadata");
    assert!(
        find("link")["fields"]
            .as_array()
            .unwrap()
            .contains(&"target".into())
    );
    let kind = find("kind");
    assert_eq!(
        (kind["change"].clone(), kind["type"].clone()),
        ("type".into(), "dir".into())
    );
    assert_eq!(kind["old_type"], "file");
    let changed = find("change.txt");
    assert_eq!(
        (changed["old_size"].clone(), changed["new_size"].clone()),
        (50_000.into(), 50_000.into())
    );
    env.assert_verified();
}

#[test]
fn diff_of_a_snapshot_with_itself_is_empty_and_arguments_are_checked() {
    let env = TestEnv::init();
    env.write_file("a.txt", b"a");
    let id = env.backup_src()["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = env
        .arca(&["diff", &id, "latest"])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(
        stdout(&out),
        "0 added, 0 removed, 0 modified, 0 metadata only, 0 type changed; 0 B added, 0 B removed\n"
    );
    let json = env.json(&["diff", "latest", &id[..12]]);
    assert_eq!(json["changes"], serde_json::json!([]));
    let quiet = env
        .arca(&["diff", "-q", &id, &id])
        .assert()
        .success()
        .get_output()
        .clone();
    assert_eq!(stdout(&quiet), "");

    let missing = env.fails(&["diff", &id, "0123abcd"], EXIT_ERROR);
    assert!(error_line(&missing).contains("snapshot 0123abcd not found"));
    env.fails(&["diff", &id], EXIT_USAGE);
    env.assert_verified();
}
