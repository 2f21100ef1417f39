//! odmrd: an On-Demand Mail Relay (RFC 2645) provider.
//!
//! # Layout
//!
//! The binary (`main.rs`) is thin: arguments → one command → [`start`] (serve), [`check`]
//! (`--check-config`) or [`demo`]. The rest, one concern per module (each says what it owns):
//!
//! - configuration and start: [`config`] (the ini file, every error with file, line, section
//!   and key), [`start`] (from a configuration to serving, shared by start and SIGHUP),
//!   [`check`] (`--check-config`), [`log`] (one line per event);
//! - serving: [`server`] (inetd, the standalone listener, limits, signals), [`session`] (the
//!   ODMR state machine), `relay` (the reversed-state SMTP client) with `verdict` (what the
//!   customer's replies decide for a recipient), `bounce` (DSNs), [`locks`]
//!   (per-domain collection locks, with `sql_locks` for those in a database), [`throttle`] (AUTH throttling per client address),
//!   [`conn`] (a buffered byte pipe with deadlines);
//! - protocol without I/O: [`proto`] (commands, replies, ATRN domains), [`sasl`] (CRAM-MD5),
//!   `refusal` (the refusals of the reply table: code, text, log reason);
//! - plugins: [`backend`] (loading plugins and the safe host side of the C ABI).
//!
//! Public are the modules that the binary, the benchmarks and the tests use; plumbing is
//! private so the compiler reports what nothing uses.

pub mod backend;
mod bounce;
pub mod check;
pub mod config;
pub mod conn;
pub mod demo;
pub mod expire;
pub mod hold_cli;
pub mod listing;
pub mod locks;
pub mod log;
pub mod notify;
pub mod proto;
mod refusal;
mod relay;
pub mod sasl;
pub mod server;
pub mod session;
mod sql_locks;
pub mod start;
pub mod throttle;
pub mod tls;
mod verdict;
