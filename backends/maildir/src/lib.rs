//! `builtin:maildir`: an odmrd queue backend reading per-domain maildirs, as
//! qmail (with or without serialmail), vpopmail, Postfix and Exim write them.
//!
//! Owns: the plugin export and the module wiring. Does not: speak SMTP or
//! ODMR, map statuses to replies, or send bounces (the host does all that).
//!
//! Modules, one concern each:
//! - [`config`]: ini keys, path templates, domain checks;
//! - [`envelope`]: BSMTP and header-mode envelope parsing;
//! - [`body`]: streaming (un-stuffed) content with constant memory;
//! - [`spool`]: listing, locking, unlinking and atomically rewriting files;
//! - [`deferred`]: the last reply that deferred each recipient, for the listing;
//! - [`queue`]: the `Queue`/`Cursor` implementation and the selection rule;
//! - [`claim`]: rename-based claims for a spool shared by several hosts (NFS).
//!
//! The rule above all: never lose mail. Files change only in `commit()`,
//! after the host recorded outcomes; malformed or unreadable files are logged
//! and skipped, never deleted.

#![forbid(unsafe_code)]

pub mod body;
pub mod claim;
pub mod config;
pub mod deferred;
pub mod envelope;
pub mod queue;
pub mod spool;

pub use queue::{Maildir, MaildirCursor};

odmr_api::export_plugin!(fn maildir_plugin_init, "maildir", Maildir: [queue]);
