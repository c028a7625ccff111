//! Library-level tests: crash consistency and other properties that need control over
//! the storage underneath a repository.
#![allow(clippy::unwrap_used)]

mod crash;
