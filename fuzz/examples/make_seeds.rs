//! Writes `seeds/<target>/*`: valid encodings, made with arca's own encoders, from which the
//! fuzzers start (libFuzzer alone rarely builds, say, a whole 144-byte key file in a minute).
//! Run from `fuzz/` after a format change: `cargo run --example make_seeds`.

use std::fs;

use arca::chunker::ChunkerParams;
use arca::crypto::KdfParams;
use arca::format::config::RepoConfig;
use arca::format::index::{IndexSegment, IndexedPack};
use arca::format::keyfile::{KeyFile, SEALED_MASTER_LEN};
use arca::format::pack::{BlobKind, PackEntry, encode_entries, encode_trailer};
use arca::format::snapshot::{Snapshot, Summary};
use arca::format::tree::{Node, NodeKind, Timestamp, Tree};
use arca::format::wire::Writer;
use arca::format::{encode_payload, tree};
use arca::id::{BlobId, IndexId, PackId, SnapshotId};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = format!("seeds/{target}");
    fs::create_dir_all(&dir).expect("create seed directory");
    fs::write(format!("{dir}/{name}"), bytes).expect("write seed");
}

fn entries() -> Vec<PackEntry> {
    vec![
        PackEntry { kind: BlobKind::Data, id: BlobId([1; 32]), offset: 0, length: 100, raw_length: 70 },
        PackEntry { kind: BlobKind::Tree, id: BlobId([2; 32]), offset: 100, length: 60, raw_length: 200 },
    ]
}

fn main() {
    let key = KeyFile {
        kdf: KdfParams::MINIMAL,
        salt: [5; 32],
        created: 1_700_000_000,
        host: "db1".into(),
        user: "root".into(),
        sealed_master: vec![1; SEALED_MASTER_LEN],
    };
    write("key_file", "valid", &key.encode());

    let config = RepoConfig {
        repo_id: [8; 32],
        chunker: ChunkerParams::DEFAULT,
        pack_size: 16 << 20,
        compression_level: 3,
        created: 42,
    };
    write("config", "valid", &config.encode_body());

    // Data length ‖ entries ‖ a trailer naming the entries as the sealed header.
    let mut w = Writer::new();
    w.u64(160);
    encode_entries(&entries(), &mut w);
    let header_len = w.buf.len() as u32 - 8;
    w.raw(&encode_trailer(header_len));
    write("pack_header", "valid", &w.buf);

    let segment = IndexSegment {
        packs: vec![IndexedPack { id: PackId([3; 32]), size: 160, blobs: entries() }],
        supersedes: vec![IndexId([5; 32])],
    };
    write("index_segment", "valid", &segment.encode_body());

    let time = Timestamp { secs: 1_700_000_000, nanos: 5 };
    let file = Node {
        name: b"file".to_vec(),
        kind: NodeKind::File,
        mode: 0o100644,
        user: b"root".to_vec(),
        group: b"root".to_vec(),
        mtime: time,
        ctime: time,
        size: 5,
        links: 1,
        content: vec![BlobId([1; 32])],
        xattrs: vec![(b"user.a".to_vec(), b"b".to_vec())],
        ..Node::default()
    };
    let dir = Node { name: b"sub".to_vec(), kind: NodeKind::Dir, subtree: Some(BlobId([2; 32])), ..file.clone() };
    let link = Node { name: b"z-link".to_vec(), kind: NodeKind::Symlink, target: b"../file".to_vec(), ..Node::default() };
    let tree = Tree { nodes: vec![file, dir, link] };
    assert!(tree.nodes.iter().all(|n| tree::is_safe_name(&n.name)));
    write("tree", "valid", &tree.encode_body());

    let snapshot = Snapshot {
        time,
        host: "db1".into(),
        user: "root".into(),
        paths: vec!["/etc".into(), "/home".into()],
        tags: vec!["daily".into()],
        parent: Some(SnapshotId([4; 32])),
        tree: BlobId([9; 32]),
        program_version: "arca 0.1.0".into(),
        summary: Summary { files_new: 3, dirs: 1, bytes_read: 4096, ..Summary::default() },
    };
    write("snapshot", "valid", &snapshot.encode_body());

    let text = b"tree tree tree tree tree tree tree tree tree tree".repeat(20);
    write("payload", "zstd", &encode_payload(&text, Some(3)));
    write("payload", "raw", &encode_payload(b"tiny", None));
}
