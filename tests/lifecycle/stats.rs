//! Tests of `arca stats`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::common::*;

const FIELDS: [&str; 16] = [
    "snapshots",
    "files",
    "logical_size",
    "blobs",
    "data_blobs",
    "tree_blobs",
    "deduplicated_size",
    "stored_size",
    "packs",
    "pack_size",
    "repository_packs",
    "repository_pack_size",
    "compression_ratio",
    "dedup_ratio",
    "missing_blobs",
    "per_snapshot",
];

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count: {v}"))
}

/// The mtimes of `path` and its ancestors: when one moves (another test creating files in
/// the temporary directory, say), a backup stores a new tree for it.
fn ancestor_mtimes(path: &Path) -> Vec<(i64, i64)> {
    path.ancestors()
        .map(|p| {
            let m = std::fs::symlink_metadata(p).unwrap();
            (m.mtime(), m.mtime_nsec())
        })
        .collect()
}

#[test]
fn stats_figures_are_consistent_and_an_identical_backup_adds_nothing() {
    let env = TestEnv::init();
    let random = pseudo_random(1, 300_000);
    env.write_file("a.bin", &random);
    env.write_file("copy/a.bin", &random);
    let text: Vec<u8> = b"compressible line of text\n"
        .iter()
        .copied()
        .cycle()
        .take(200_000)
        .collect();
    env.write_file("text.txt", &text);
    let per_backup = 2 * 300_000 + 200_000;

    let mtimes = ancestor_mtimes(&env.src);
    let first = env.backup_src();
    let once = env.json(&["stats"]);
    let second = env.backup_src();
    let unmoved = ancestor_mtimes(&env.src) == mtimes;
    let twice = env.json(&["stats"]);

    for field in FIELDS {
        assert!(!twice[field].is_null(), "{field} missing: {twice}");
    }
    assert_eq!(n(&twice, "snapshots"), 2);
    assert_eq!(n(&twice, "files"), 6);
    assert_eq!(n(&twice, "logical_size"), 2 * per_backup);
    assert_eq!(n(&twice, "missing_blobs"), 0);
    // Each file's data is stored once, whatever the number of copies and snapshots.
    assert_eq!(
        n(&twice, "data_blobs"),
        n(&once, "data_blobs"),
        "{once}\n{twice}"
    );
    let dedup = n(&twice, "deduplicated_size");
    assert!(dedup <= n(&twice, "logical_size"), "{twice}");
    assert!(dedup < per_backup, "the copy was stored twice: {twice}");
    assert!(twice["dedup_ratio"].as_f64().unwrap() > 3.0, "{twice}");
    assert!(
        twice["compression_ratio"].as_f64().unwrap() > 1.0,
        "{twice}"
    );
    assert!(
        n(&twice, "stored_size") <= n(&twice, "pack_size"),
        "{twice}"
    );
    assert!(
        n(&twice, "pack_size") <= n(&twice, "repository_pack_size"),
        "{twice}"
    );
    assert_eq!(
        n(&twice, "blobs"),
        n(&twice, "data_blobs") + n(&twice, "tree_blobs")
    );

    let per = twice["per_snapshot"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    assert_eq!(per[0]["id"], first["snapshot_id"]);
    assert_eq!(per[1]["id"], second["snapshot_id"]);
    for p in per {
        assert_eq!(n(p, "files"), 3, "{p}");
        assert_eq!(n(p, "logical_size"), per_backup, "{p}");
    }
    assert_eq!(
        per[0]["bytes_added"],
        first["snapshot"]["summary"]["bytes_added"]
    );
    let added = n(&per[1], "bytes_added");
    if unmoved {
        assert_eq!(added, 0, "{twice}");
    } else {
        // Only the trees of the ancestors whose mtime moved are new.
        assert!(added < 4_096, "{twice}");
    }

    // One snapshot: only what it reaches.
    let latest = env.json(&["stats", "latest"]);
    assert_eq!(n(&latest, "snapshots"), 1);
    assert_eq!(n(&latest, "files"), 3);
    assert_eq!(latest["per_snapshot"][0]["id"], second["snapshot_id"]);
    let none = env.json(&["stats", "--host", "no-such-host"]);
    assert_eq!((n(&none, "snapshots"), n(&none, "files")), (0, 0));

    let out = env.arca(&["stats"]).assert().success().get_output().clone();
    let table = stdout(&out);
    for label in [
        "Logical size:",
        "Deduplicated size:",
        "Stored size:",
        "Deduplication ratio:",
    ] {
        assert!(table.contains(label), "{table}");
    }
    let short = &first["snapshot_id"].as_str().unwrap()[..8];
    assert!(table.lines().any(|l| l.starts_with(short)), "{table}");
    env.assert_verified();
}

#[test]
fn stats_of_an_empty_repository_and_of_an_unknown_snapshot() {
    let env = TestEnv::init();
    let empty = env.json(&["stats"]);
    assert_eq!((n(&empty, "snapshots"), n(&empty, "blobs")), (0, 0));
    assert_eq!(empty["per_snapshot"], serde_json::json!([]));
    let out = env.fails(&["stats", "abcdef12"], EXIT_ERROR);
    assert!(error_line(&out).contains("not found"));
    env.assert_verified();
}
