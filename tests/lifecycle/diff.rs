//! Tests of `arca diff`.
