//! arca: a content-addressed, deduplicating, encrypted backup store.
//!
//! Layers, each using only those below it:
//! `ops` (backup, restore, verify, …) → [`repository`] → [`storage`], with pure code at the
//! bottom: [`id`], [`crypto`], [`compress`], [`chunker`], [`format`].

pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod error;
pub mod format;
mod guard;
pub mod id;
pub mod storage;

pub use error::{Error, Result};
pub mod ops;
pub mod platform;
pub mod repository;
