//! Tests of `arca lock`.
