#![no_main]
//! Fuzzes decoding of tree blobs: exact re-encoding, and only safe, sorted, unique names.

use arca::format::tree::{Tree, is_safe_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = Tree::decode_body(data) {
        assert_eq!(tree.encode_body(), data, "tree does not re-encode to the bytes it came from");
        for node in &tree.nodes {
            assert!(is_safe_name(&node.name), "unsafe name {:?} accepted", node.name);
        }
        assert!(tree.nodes.windows(2).all(|w| w[0].name < w[1].name), "names not strictly sorted");
    }
});
