//! odmr-api: the stable C ABI between odmrd and its backends.
//!
//! - [`ffi`] is the binary contract: `#[repr(C)]` types, status codes and
//!   function tables (ABI major 1). `include/odmr_api.h` is generated from it.
//! - [`kit`] is the safe Rust side: traits a backend implements,
//!   [`export_plugin!`] which turns them into a descriptor with panics caught
//!   at the boundary, and [`export_shared_object!`] which exports that as the
//!   `odmr_plugin_init` symbol of a cdylib (routing panic messages to the host
//!   log).
//!
//! - [`params`] is what a sender's MAIL and RCPT parameters ask (NOTIFY,
//!   RET, xtext for ENVID and ORCPT), parsed and formatted once.
//! - [`host`] is the host's side: loading a plugin's descriptor, checking it
//!   once, and safe wrappers over its tables (`CredentialStore`,
//!   `MailQueue`, `QueueCursor`), used by odmrd and by [`testing`].
//! - [`names`] is the one domain rule shared by odmrd and every backend
//!   (what a domain is, which domain an address belongs to).
//! - [`outcomes`] is a queue cursor's per-message bookkeeping: the offered
//!   recipients and what the host recorded for each.
//! - [`settings`] reads a plugin's ini section with the shared conventions
//!   (errors name the key; repeated and unknown keys are errors).
//! - [`testing`] is a test aid: [`host`] with a log buffer, driving a plugin
//!   through its C tables as odmrd does.
//!
//! `README.md` beside this crate is the plugin author's guide.
//!
//! This crate owns no policy beyond those shared rules: it does not know
//! SMTP, files or any backend's configuration.

pub mod ffi;
pub mod host;
pub mod kit;
pub mod names;
pub mod outcomes;
pub mod params;
pub mod settings;
pub mod testing;

pub use kit::{
    Account, Credentials, Cursor, Envelope, Host, Instance, Listed, LogLevel, Outcome, Queue,
    RecipientDetails, Secret, Status,
};
pub use params::{Notify, Ret};
