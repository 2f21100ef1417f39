//! odmrd: an On-Demand Mail Relay (RFC 2645) provider.
//!
//! The binary (`main.rs`) is thin: arguments → configuration → [`server`].
//! Each module owns one concern; see its doc comment.

pub mod backend;
pub mod bounce;
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
pub mod relay;
pub mod sasl;
pub mod server;
pub mod session;
pub mod throttle;
pub mod tls;
pub mod verdict;
