//! Tests of `arca key`.
