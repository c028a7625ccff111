//! Tests of `arca mirror`.
