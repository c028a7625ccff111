//! Integration tests of the repository lifecycle commands, through the `arca` binary.
#![allow(clippy::unwrap_used)]

#[path = "../cli/common/mod.rs"]
#[allow(dead_code)]
mod common;

mod copy;
mod diff;
mod forget;
mod key;
mod lock;
mod mirror;
mod prune;
mod repair;
mod stats;
