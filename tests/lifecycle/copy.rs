//! Tests of `arca copy`.
