//! Tests of `arca stats`.
