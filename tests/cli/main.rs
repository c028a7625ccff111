//! Integration tests of the `arca` command line, one module per command.
#![allow(clippy::unwrap_used)]

mod common;

mod backup;
mod bad_input;
mod dump;
mod init;
mod ls;
mod restore;
mod snapshots;
mod verify;
