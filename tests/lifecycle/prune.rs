//! Tests of `arca prune`.
