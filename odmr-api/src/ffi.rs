//! The C ABI itself: `#[repr(C)]` types, status codes and function tables.
//!
//! This module owns the binary contract between odmrd (the host) and its
//! backends (plugins). Everything here is part of ABI major 1 and may only grow
//! by appending fields to the end of a struct (detected through `struct_size`)
//! or by adding constants. Nothing here is safe Rust: see [`crate::kit`] for
//! the safe side used by plugin authors and by the host's wrappers.
//!
//! `include/odmr_api.h` is generated from this file by cbindgen (see
//! `tests/header.rs`); the doc comments below are copied into it, so they are
//! written for C authors too. In C the types are named `odmr_*`
//! ([`OdmrStr`] is `odmr_str`, [`OdmrKv`] is `odmr_kv`).
//!
//! Ownership rules, for every function pointer below:
//! - inputs are borrowed [`OdmrStr`] views, valid only for the duration of the call;
//! - outputs go into caller-owned buffers (`ODMR_BUFFER_TOO_SMALL` reports the
//!   size needed through `*len_out`) or to callbacks whose arguments are
//!   borrowed for the duration of the callback;
//! - no string is ever freed across the boundary; opaque handles are released
//!   only by their own `*_free` / `*_close` function.
//!
//! ABI 1.1 appended, all nullable or flag-gated (a 1.0 plugin is unchanged):
//! per-message and per-recipient details in the envelope sink (arrival time,
//! ENVID, RET, SMTPUTF8/8-bit, NOTIFY, ORCPT), `odmr_plugin.check`,
//! `odmr_credentials_ops.verify_password`, `allowed_networks` and `list_accounts`, and in `odmr_queue_ops` the
//! `flags` (ODMR_QF_*), the read-only `list` and `set_outcome_reply`.
//!
//! Threads: `odmr_plugin_init`, `instance_new` and `instance_free` are called on
//! the host's main thread. Instance functions are called concurrently only when
//! the plugin sets [`ODMR_F_THREADSAFE`]; otherwise the host never enters the
//! plugin from two threads at once. A cursor is used only on the thread that
//! opened it.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};
use std::mem::{offset_of, size_of};

/// The ABI major version. A host accepts exactly its own major; a plugin
/// returns ODMR_VERSION from `odmr_plugin_init` for any other host major.
pub const ODMR_ABI_MAJOR: u32 = 1;
/// The ABI minor version. Minors only append fields to the end of structs
/// (detected through `struct_size`) and add constants; appended function
/// pointers are nullable.
pub const ODMR_ABI_MINOR: u32 = 1;

/// Result of every plugin call: one of the ODMR_* status values below. Values
/// not listed here are treated as ODMR_INTERNAL by the host. Only the host maps
/// statuses to SMTP replies.
pub type odmr_status = i32;

/// Success.
pub const ODMR_OK: odmr_status = 0;
/// An iteration has no further element (cursor exhausted, body fully read).
pub const ODMR_END: odmr_status = 1;
/// The user, domain or object does not exist. For credentials: the
/// customer gets 535 (authentication failed).
pub const ODMR_NOT_FOUND: odmr_status = 2;
/// The object exists but is refused (a disabled account, a forbidden domain).
/// For credentials: the customer gets 535.
pub const ODMR_DENIED: odmr_status = 3;
/// A temporary failure: retrying later may succeed. The customer gets 451
/// and may try again.
pub const ODMR_TEMPFAIL: odmr_status = 4;
/// A permanent failure: retrying will not help. Logged by the host; the
/// customer still gets 451 (the store, not the customer, is at fault).
pub const ODMR_PERMFAIL: odmr_status = 5;
/// The caller's buffer is too small; the size needed is in `*len_out`. The
/// host grows its buffer and calls again.
pub const ODMR_BUFFER_TOO_SMALL: odmr_status = 6;
/// An argument is malformed (not UTF-8, out of range, NULL where not allowed).
pub const ODMR_INVALID_ARGUMENT: odmr_status = 7;
/// The operation is not supported by this plugin or this object (for
/// `lookup_secret`: the account has no secret usable for CRAM-MD5).
pub const ODMR_UNSUPPORTED: odmr_status = 8;
/// Version mismatch between host and plugin: `odmr_plugin_init` returns it
/// for a host major it does not speak.
pub const ODMR_VERSION: odmr_status = 9;
/// The plugin panicked; the Rust kit reports this instead of unwinding. The
/// host logs it with the plugin's name and answers 451.
pub const ODMR_PANIC: odmr_status = 10;
/// Any other internal error of the plugin. The host logs it and answers 451.
pub const ODMR_INTERNAL: odmr_status = 11;

/// Plugin flag (`odmr_plugin.flags`): instance and cursor functions may be
/// called from several threads at once. Without it the host serialises every
/// call into the plugin, across all its instances and cursors.
pub const ODMR_F_THREADSAFE: u32 = 1;

/// Log level for the host's `log` up-call: an error the operator must fix.
pub const ODMR_LOG_ERROR: i32 = 0;
/// Log level: a condition the operator should look at.
pub const ODMR_LOG_WARN: i32 = 1;
/// Log level: normal operation.
pub const ODMR_LOG_INFO: i32 = 2;
/// Log level: detail for troubleshooting.
pub const ODMR_LOG_DEBUG: i32 = 3;

/// Kind of secret returned by `lookup_secret`: the clear-text password.
pub const ODMR_SECRET_PLAIN: u32 = 1;
/// Kind of secret returned by `lookup_secret`: Dovecot's 32-byte CRAM-MD5
/// HMAC context (opad MD5 state then ipad MD5 state, little-endian words).
pub const ODMR_SECRET_CRAM_MD5_CONTEXT: u32 = 2;

/// ABI 1.1. Queue flag (`odmr_queue_ops.flags`): the host may call
/// `cursor_next` (and then `read_body`) for the next message before it has
/// committed the current one, to pipeline across messages. At most two
/// messages are then open: `read_body` reads the newer, while `set_outcome`,
/// `set_outcome_reply` and `commit` apply to the older until its `commit`,
/// which retires it whether it succeeds or not. Without the flag the host
/// commits each message before asking for the next.
pub const ODMR_QF_NEXT_BEFORE_COMMIT: u32 = 1;

/// ABI 1.1. `ret` of `message_details`: the sender gave no RET (RFC 3461).
pub const ODMR_RET_UNSPECIFIED: u32 = 0;
/// `ret`: RET=FULL, return the whole message in a DSN.
pub const ODMR_RET_FULL: u32 = 1;
/// `ret`: RET=HDRS, return only the headers in a DSN.
pub const ODMR_RET_HDRS: u32 = 2;

/// ABI 1.1. Bits of `notify` (RFC 3461 NOTIFY); 0 means the sender gave no
/// NOTIFY (the host then reports failures, as for FAILURE).
/// NOTIFY=NEVER: no DSN at all. Never combined with the other bits.
pub const ODMR_NOTIFY_NEVER: u32 = 1;
/// NOTIFY=SUCCESS.
pub const ODMR_NOTIFY_SUCCESS: u32 = 2;
/// NOTIFY=FAILURE.
pub const ODMR_NOTIFY_FAILURE: u32 = 4;
/// NOTIFY=DELAY.
pub const ODMR_NOTIFY_DELAY: u32 = 8;

/// ABI 1.1. Bits of a message's `flags`: the envelope needs SMTPUTF8 (it was
/// received with SMTPUTF8, or has UTF-8 addresses).
pub const ODMR_MSG_SMTPUTF8: u32 = 1;
/// The body holds octets above 127 (or was received with BODY=8BITMIME).
pub const ODMR_MSG_8BIT: u32 = 2;
/// The body is known to hold only 7-bit octets. With neither ODMR_MSG_8BIT
/// nor ODMR_MSG_7BIT the backend does not know.
pub const ODMR_MSG_7BIT: u32 = 4;

/// Per-recipient outcome passed to `set_outcome`: the customer accepted it.
/// The backend removes the recipient on `commit`.
pub const ODMR_OUTCOME_DELIVERED: i32 = 0;
/// Per-recipient outcome: temporary failure, the recipient stays queued.
pub const ODMR_OUTCOME_TEMPFAIL: i32 = 1;
/// Per-recipient outcome: permanent failure. The host has already submitted a
/// delivery status notification; the backend removes the recipient on `commit`.
pub const ODMR_OUTCOME_PERMFAIL: i32 = 2;

/// A borrowed byte string (`odmr_str` in C). Not NUL-terminated; `ptr` may be
/// NULL when `len` is 0. Owned by whoever passes it and valid only for the
/// duration of the call (or callback) that passes it: copy what you keep.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdmrStr {
    /// First byte, or NULL for the empty string.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// One `key = value` line of a plugin's ini section (`odmr_kv` in C), in file
/// order, borrowed for the `instance_new` call. `plugin` itself is not passed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdmrKv {
    /// The key, as written in the ini file (lower-case by convention).
    pub key: OdmrStr,
    /// The value, with surrounding white space and comments removed.
    pub value: OdmrStr,
}

/// What the host offers a plugin. Owned by the host and valid from
/// `odmr_plugin_init` until the process exits (plugins are never unloaded).
/// Read-only for the plugin. A v1.0 plugin reads only the v1.0 fields below;
/// a later plugin checks `struct_size` before reading a field appended later.
#[repr(C)]
pub struct odmr_host {
    /// `sizeof(odmr_host)` as the host was built.
    pub struct_size: u32,
    /// The host's ABI major.
    pub abi_major: u32,
    /// The host's ABI minor. Host-provided structs without a `struct_size`
    /// (`odmr_envelope_sink`) have the layout of this minor.
    pub abi_minor: u32,
    /// Opaque host context, passed back to `log`.
    pub ctx: *mut c_void,
    /// Log one line at `level` (ODMR_LOG_*), tagged by the host with the
    /// plugin's name. `msg` is borrowed for the call and need not be
    /// NUL-terminated. Callable from any thread, at any time, also from
    /// inside `instance_new`. Plugins log only through this: under inetd,
    /// file descriptors 0-2 are the customer's socket.
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: i32, msg: *const u8, len: usize)>,
}

/// Opaque plugin instance, created by `instance_new` and owned by the host
/// until it passes it to `instance_free`. Its layout is the plugin's own.
pub struct odmr_instance {
    _private: [u8; 0],
}

/// Opaque queue cursor, created by `cursor_open` and owned by the host until
/// it passes it to `cursor_close`. Used only on the thread that opened it.
pub struct odmr_cursor {
    _private: [u8; 0],
}

/// Receives one domain from `list_domains`, on the calling thread, during the
/// `list_domains` call. `domain` is borrowed for the callback.
pub type odmr_domain_cb = unsafe extern "C" fn(cb_ctx: *mut c_void, domain: OdmrStr);

/// ABI 1.1. Receives one account from `list_accounts`, on the calling
/// thread during the call: its user name, the domains it may collect
/// (comma-separated), its quota of held bytes (0: none; reported by `odmrd
/// --queue`, never enforced) and a contact address for notices (empty:
/// none). Every string is borrowed for the callback.
pub type odmr_account_cb =
    unsafe extern "C" fn(cb_ctx: *mut c_void, user: OdmrStr, domains: OdmrStr, quota: u64, contact: OdmrStr);

/// Credential operations: a static table owned by the plugin, valid until the
/// process exits. Called from any session thread (all at once only with
/// ODMR_F_THREADSAFE). Inputs are borrowed for the call.
#[repr(C)]
pub struct odmr_credentials_ops {
    /// `sizeof(odmr_credentials_ops)` as the plugin was built; at least the
    /// v1.0 size.
    pub struct_size: u32,
    /// Look up `user`'s secret. On ODMR_OK writes the secret into `buf[..cap]`,
    /// its length into `*len_out` and its kind (ODMR_SECRET_*) into `*kind_out`.
    /// ODMR_BUFFER_TOO_SMALL sets `*len_out` to the size needed (the host
    /// calls again with a larger buffer). ODMR_NOT_FOUND: no such user.
    /// ODMR_DENIED: the account is disabled. ODMR_UNSUPPORTED: the account
    /// exists but has no secret usable for CRAM-MD5 (the plugin logs why; the
    /// host then tries `verify_cram_md5`). Nullable if `verify_cram_md5` is set.
    pub lookup_secret: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            user: OdmrStr,
            kind_out: *mut u32,
            buf: *mut u8,
            cap: usize,
            len_out: *mut usize,
        ) -> odmr_status,
    >,
    /// Nullable. For stores that never reveal secrets: verify a CRAM-MD5
    /// `digest` (32 lower-case hex bytes) for `challenge`. ODMR_OK when it
    /// matches, ODMR_DENIED when it does not. Used only when `lookup_secret`
    /// is NULL or returns ODMR_UNSUPPORTED.
    pub verify_cram_md5: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            user: OdmrStr,
            challenge: OdmrStr,
            digest: OdmrStr,
        ) -> odmr_status,
    >,
    /// Call `cb(cb_ctx, domain)` once per domain `user` may collect with ATRN,
    /// synchronously, before returning ODMR_OK. The host compares domains
    /// case-insensitively.
    pub list_domains: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            user: OdmrStr,
            cb_ctx: *mut c_void,
            cb: odmr_domain_cb,
        ) -> odmr_status,
    >,
    /// ABI 1.1, nullable. Verify a clear-text `password` (AUTH PLAIN or LOGIN,
    /// offered only under TLS) for stores that keep only hashes: ODMR_OK when
    /// it matches, ODMR_DENIED when it does not or the account is disabled,
    /// ODMR_NOT_FOUND for no such user, ODMR_UNSUPPORTED when the account's
    /// scheme cannot be checked here. The host compares clear secrets from
    /// `lookup_secret` itself and calls this only otherwise.
    pub verify_password: Option<
        unsafe extern "C" fn(inst: *mut odmr_instance, user: OdmrStr, password: OdmrStr) -> odmr_status,
    >,
    /// ABI 1.1, nullable. The client networks `user` may log in from (as
    /// Dovecot's `allow_nets`): `cb(cb_ctx, net)` once per network, an address
    /// or `address/prefix`, synchronously, before returning ODMR_OK; no call at
    /// all means no restriction. ODMR_DENIED: restricted, but to nothing this
    /// plugin could read (every login is refused). The host refuses a login
    /// from elsewhere like a wrong password, and logs why.
    pub allowed_networks: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            user: OdmrStr,
            cb_ctx: *mut c_void,
            cb: odmr_domain_cb,
        ) -> odmr_status,
    >,
    /// ABI 1.1, nullable. For `odmrd --queue --by-account`: call `cb` once
    /// per account that may collect at least one domain, synchronously,
    /// then return ODMR_OK; ODMR_UNSUPPORTED for stores that cannot
    /// enumerate their accounts. Called from any thread, like `list_domains`.
    pub list_accounts: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            cb_ctx: *mut c_void,
            cb: odmr_account_cb,
        ) -> odmr_status,
    >,
}

/// Where `cursor_next` describes one message: owned by the host, borrowed for
/// the `cursor_next` call; the plugin calls its callbacks on the calling
/// thread before returning. Every string is borrowed for its callback.
#[repr(C)]
pub struct odmr_envelope_sink {
    /// Opaque host context for the callbacks.
    pub ctx: *mut c_void,
    /// Called once first: queue id (for logs), envelope sender (empty for the
    /// null sender `<>`), and the body size in bytes (0 when unknown).
    pub message: unsafe extern "C" fn(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64),
    /// Called once per pending recipient of a requested domain, in order;
    /// the n-th call (from 0) is recipient index n for `set_outcome`.
    pub recipient: unsafe extern "C" fn(ctx: *mut c_void, address: OdmrStr),
    /// ABI 1.1, nullable; present only when `host->abi_minor >= 1` (a 1.0
    /// host's sink ends before it). Called at most once, after `message` and
    /// before the first `recipient`: `arrival` in seconds since the Unix
    /// epoch (0 when unknown); `envid` the RFC 3461 ENVID with its xtext
    /// decoded (empty when none); `ret` an ODMR_RET_* value; `flags` ODMR_MSG_*
    /// bits; `wire_size` an upper bound of the octets the content takes on
    /// the wire, CRLF line ends and dot-stuffing counted (0 when unknown), for
    /// SIZE=. A message without this call has all of them unknown.
    pub message_details: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            arrival: i64,
            envid: OdmrStr,
            ret: u32,
            flags: u32,
            wire_size: u64,
        ),
    >,
    /// ABI 1.1, nullable, as `message_details`. Called at most once right
    /// after a `recipient` call, for that recipient: `notify` ODMR_NOTIFY_*
    /// bits (0: none given); `orcpt` the ORCPT as `addr-type;address` with the
    /// xtext decoded, e.g. `rfc822;bob@example.org` (empty when none).
    pub recipient_details: Option<unsafe extern "C" fn(ctx: *mut c_void, notify: u32, orcpt: OdmrStr)>,
}

/// ABI 1.1. Receives one finding of `odmr_plugin.check`, on the calling
/// thread during the call: `level` is ODMR_LOG_ERROR (the configuration cannot
/// work: `odmrd --check-config` fails) or ODMR_LOG_WARN (it works, but the
/// operator should look); `message` is borrowed for the callback and names the
/// key, file or object concerned.
pub type odmr_check_cb = unsafe extern "C" fn(cb_ctx: *mut c_void, level: i32, message: OdmrStr);

/// ABI 1.1. Where `odmr_queue_ops.list` reports, for a queue listing: owned
/// by the host, borrowed for the `list` call; the plugin calls back on the
/// calling thread before returning. Every string is borrowed for its callback.
/// Fields appended by later minors are present when `struct_size` covers them.
#[repr(C)]
pub struct odmr_list_sink {
    /// `sizeof(odmr_list_sink)` as the host was built.
    pub struct_size: u32,
    /// Opaque host context for the callbacks.
    pub ctx: *mut c_void,
    /// One message with pending recipients in `domain` (one of the requested
    /// domains; a message with pending recipients in several is reported once
    /// per domain): queue id, sender (empty for `<>`), size in bytes (0 when
    /// unknown), arrival in seconds since the Unix epoch (0 when unknown),
    /// ODMR_MSG_* flags.
    pub message: unsafe extern "C" fn(
        ctx: *mut c_void,
        domain: OdmrStr,
        id: OdmrStr,
        sender: OdmrStr,
        size: u64,
        arrival: i64,
        flags: u32,
    ),
    /// One pending recipient of the message last reported, in order, with
    /// the last reply that deferred it if the queue knows it (else empty).
    pub recipient: unsafe extern "C" fn(ctx: *mut c_void, address: OdmrStr, last_reply: OdmrStr),
    /// A file or entry that could not be read as a message: the domain it
    /// was found under (empty when unknown), its id or file name, and why.
    pub unreadable: unsafe extern "C" fn(ctx: *mut c_void, domain: OdmrStr, id: OdmrStr, reason: OdmrStr),
}

/// Queue operations: a static table owned by the plugin, valid until the
/// process exits. `has_pending` and `cursor_open` are called from any session
/// thread; the cursor functions only on the thread that opened the cursor.
/// Without ODMR_F_THREADSAFE no two calls overlap.
#[repr(C)]
pub struct odmr_queue_ops {
    /// `sizeof(odmr_queue_ops)` as the plugin was built; at least the v1.0 size.
    pub struct_size: u32,
    /// Is any message pending for one of `domains` (lower-case, validated,
    /// borrowed for the call)? Sets `*pending` to 1 or 0 on ODMR_OK. Must use
    /// the same rule as the cursor, so that a yes is never followed by an
    /// empty session.
    pub has_pending: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            domains: *const OdmrStr,
            n_domains: usize,
            pending: *mut u32,
        ) -> odmr_status,
    >,
    /// Open a cursor over the messages with pending recipients in `domains`
    /// (borrowed for the call: copy them) and store it in `*out`. The cursor
    /// holds whatever locks the queue needs until `cursor_close`.
    pub cursor_open: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            domains: *const OdmrStr,
            n_domains: usize,
            out: *mut *mut odmr_cursor,
        ) -> odmr_status,
    >,
    /// Advance to the next message and describe it through `sink` (borrowed
    /// for the call). ODMR_OK: a message; ODMR_END: none left. Unreadable
    /// messages are logged and skipped by the plugin, never reported here.
    pub cursor_next:
        Option<unsafe extern "C" fn(cur: *mut odmr_cursor, sink: *const odmr_envelope_sink) -> odmr_status>,
    /// Read the next bytes of the current message's content (headers and body,
    /// not dot-stuffed, any line ending) into `buf[..cap]`. ODMR_OK with
    /// `*len_out > 0`, or ODMR_END (and `*len_out = 0`) at the end of the message.
    pub read_body: Option<
        unsafe extern "C" fn(
            cur: *mut odmr_cursor,
            buf: *mut u8,
            cap: usize,
            len_out: *mut usize,
        ) -> odmr_status,
    >,
    /// Record recipient `index`'s outcome (ODMR_OUTCOME_*) for the current
    /// message. Nothing changes on disk until `commit`.
    pub set_outcome:
        Option<unsafe extern "C" fn(cur: *mut odmr_cursor, index: usize, outcome: i32) -> odmr_status>,
    /// Apply the recorded outcomes of the current message durably: delivered and
    /// permanently failed recipients leave the queue, the rest stay (also those
    /// without a recorded outcome). A message never committed is left exactly
    /// as it was.
    pub commit: Option<unsafe extern "C" fn(cur: *mut odmr_cursor) -> odmr_status>,
    /// Release the cursor and its locks; the handle is invalid afterwards.
    /// Uncommitted outcomes are discarded.
    pub cursor_close: Option<unsafe extern "C" fn(cur: *mut odmr_cursor)>,
    /// ABI 1.1: ODMR_QF_* bits (0 in a 1.0 table).
    pub flags: u32,
    /// ABI 1.1, nullable. A read-only listing for `odmrd --queue`: report
    /// every message with pending recipients in `domains` (borrowed for the
    /// call; none means every domain the queue can enumerate, ODMR_UNSUPPORTED
    /// if it cannot) and every unreadable entry through `sink`, then return
    /// ODMR_OK. Changes nothing, takes no lock a collection would wait for,
    /// and may run while a session collects the same domains. Called from
    /// any thread, like `has_pending`.
    pub list: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            domains: *const OdmrStr,
            n_domains: usize,
            sink: *const odmr_list_sink,
        ) -> odmr_status,
    >,
    /// ABI 1.1, nullable. As `set_outcome`, with the customer's reply (one
    /// line, borrowed for the call), for queues that keep the last deferral
    /// reason for the listing. When present the host calls it instead of
    /// `set_outcome`.
    pub set_outcome_reply: Option<
        unsafe extern "C" fn(
            cur: *mut odmr_cursor,
            index: usize,
            outcome: i32,
            reply: OdmrStr,
        ) -> odmr_status,
    >,
}

/// A plugin's descriptor, returned by `odmr_plugin_init`. Owned by the plugin,
/// immutable, and valid until the process exits (usually a static).
#[repr(C)]
pub struct odmr_plugin {
    /// `sizeof(odmr_plugin)` as the plugin was built. The host refuses a
    /// descriptor smaller than v1.0's and reads no field beyond `struct_size`.
    pub struct_size: u32,
    /// The plugin's ABI major: must equal the host's.
    pub abi_major: u32,
    /// The plugin's ABI minor: fields beyond what the host knows are ignored.
    pub abi_minor: u32,
    /// NUL-terminated plugin name, for logs. Static.
    pub name: *const c_char,
    /// NUL-terminated plugin version, for logs. Static.
    pub version: *const c_char,
    /// ODMR_F_* bits.
    pub flags: u32,
    /// Create an instance from the kv pairs of the plugin's ini section
    /// (borrowed for the call: copy what you keep) and store it in `*out`.
    /// Reject unknown keys. On failure, write a reason (not NUL-terminated,
    /// naming the key) into `err[..err_cap]`, its full length into `*err_len`,
    /// and return a non-OK status: odmrd prints the reason and exits with 78.
    /// Called on the host's main thread, once per section using the plugin.
    pub instance_new: Option<
        unsafe extern "C" fn(
            host: *const odmr_host,
            kvs: *const OdmrKv,
            n_kvs: usize,
            out: *mut *mut odmr_instance,
            err: *mut u8,
            err_cap: usize,
            err_len: *mut usize,
        ) -> odmr_status,
    >,
    /// Free an instance. Called on the host's main thread, if at all (odmrd
    /// may simply exit). Nullable.
    pub instance_free: Option<unsafe extern "C" fn(inst: *mut odmr_instance)>,
    /// Nullable: present when the plugin serves `[credentials]`.
    pub credentials: *const odmr_credentials_ops,
    /// Nullable: present when the plugin serves `[queue]`.
    pub queue: *const odmr_queue_ops,
    /// ABI 1.1, nullable. Check an instance deeper than `instance_new` did,
    /// for `odmrd --check-config`: files readable, directories present, the
    /// database reachable, a sample lookup working. Report each finding
    /// through `cb(cb_ctx, level, message)` and return ODMR_OK once the checks
    /// ran (whatever they found), or a status when they could not run.
    /// Called on the host's main thread.
    pub check: Option<
        unsafe extern "C" fn(inst: *mut odmr_instance, cb_ctx: *mut c_void, cb: odmr_check_cb) -> odmr_status,
    >,
}

// SAFETY: the descriptor and its tables are immutable statics that only hold
// pointers to other immutable statics (strings, function tables), so sharing
// them between threads is sound.
unsafe impl Sync for odmr_plugin {}
// SAFETY: as above, the table is immutable.
unsafe impl Sync for odmr_credentials_ops {}
// SAFETY: as above, the table is immutable.
unsafe impl Sync for odmr_queue_ops {}

/// The type of the one symbol a plugin exports, `odmr_plugin_init`. Called on
/// the host's main thread, once per section that names the plugin, before any
/// other plugin function. Checks `host->abi_major` (returns ODMR_VERSION for a
/// major it does not speak), stores a pointer to its static descriptor into
/// `*out` and returns ODMR_OK. `host` stays valid until the process exits.
pub type odmr_plugin_init_fn =
    unsafe extern "C" fn(host: *const odmr_host, out: *mut *const odmr_plugin) -> odmr_status;

extern "C" {
    /// The one symbol a plugin exports (see `odmr_plugin_init_fn`). Called by
    /// the host on its main thread, once per section naming the plugin, before
    /// any other plugin function. Checks `host->abi_major` (ODMR_VERSION when
    /// it is not ODMR_ABI_MAJOR), stores a pointer to the plugin's static
    /// descriptor in `*out` and returns ODMR_OK. The plugin may keep `host`:
    /// it stays valid until the process exits.
    ///
    /// Declared here only so that the header carries its prototype; the host
    /// finds it with dlsym and never links against it.
    pub fn odmr_plugin_init(host: *const odmr_host, out: *mut *const odmr_plugin) -> odmr_status;
}

// Host-side minimums (not in the header): the size of each struct as ABI
// v1.0 defines it, i.e. the end of its last v1.0 field. When a minor appends
// fields these stay pinned to v1.0, so a v1.1 host still accepts v1.0 plugins
// and reads only the fields within a plugin's own `struct_size`.

/// End of `odmr_host`'s last v1.0 field (`log`).
pub const ODMR_HOST_V1_0_SIZE: usize = offset_of!(odmr_host, log) + size_of::<usize>();
/// End of `odmr_plugin`'s last v1.0 field (`queue`).
pub const ODMR_PLUGIN_V1_0_SIZE: usize = offset_of!(odmr_plugin, queue) + size_of::<usize>();
/// End of `odmr_credentials_ops`'s last v1.0 field (`list_domains`).
pub const ODMR_CREDENTIALS_OPS_V1_0_SIZE: usize =
    offset_of!(odmr_credentials_ops, list_domains) + size_of::<usize>();
/// End of `odmr_queue_ops`'s last v1.0 field (`cursor_close`).
pub const ODMR_QUEUE_OPS_V1_0_SIZE: usize = offset_of!(odmr_queue_ops, cursor_close) + size_of::<usize>();
/// End of `odmr_envelope_sink`'s last v1.0 field (`recipient`): what a
/// plugin may read of the sink of a 1.0 host.
pub const ODMR_ENVELOPE_SINK_V1_0_SIZE: usize =
    offset_of!(odmr_envelope_sink, recipient) + size_of::<usize>();
