//! Tests of `arca forget`.
