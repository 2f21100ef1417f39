//! `builtin:exim`: an odmrd queue backend that delivers the mail Exim holds
//! in its own spool, alongside Exim's queue runners, without racing them.
//!
//! Owns: the plugin export and the module wiring. Does not: speak SMTP or
//! ODMR, map statuses to replies, or send bounces (the host does all that).
//!
//! Modules, one concern each:
//! - [`config`]: the `[queue]` keys and their defaults;
//! - [`header`]: message ids, the `-H` envelope and header records, `-J`;
//! - [`spool`]: listing, the `-D` lock, journal appends, removal;
//! - [`queue`]: the `Queue`/`Cursor` implementation and the selection rule.
//!
//! The protocol is formats.md 3.7: an unlocked scan is only a hint; a
//! message is claimed with a write lock on `-D` (the lock Exim takes), `-H`
//! and `-J` are re-read under it, delivered recipients are appended to `-J`
//! and fsynced under it, and a message with nothing left pending is removed
//! under it, `-H` first so that an interrupted removal never leaves Exim a
//! `-H` without its `-D` (what is left instead is reclaimed by the next
//! cursor; `spool::remove`).

#![deny(unsafe_code)]

pub mod config;
pub mod header;
pub mod queue;
pub mod spool;

pub use queue::{Exim, EximCursor};

odmr_api::export_plugin!(
    #[allow(unsafe_code)]
    fn exim_plugin_init, "exim", Exim: [queue]
);
