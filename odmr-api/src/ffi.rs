//! The C ABI itself: `#[repr(C)]` types, status codes and function tables.
//!
//! This module owns the binary contract between odmrd (the host) and its
//! backends (plugins). Everything here is part of ABI major 1 and may only grow
//! by appending fields to the end of a struct (detected through `struct_size`)
//! or by adding constants. Nothing here is safe Rust: see [`crate::kit`] for
//! the safe side used by plugin authors and by the host's wrappers.
//!
//! Ownership rules, for every function pointer below:
//! - inputs are borrowed [`OdmrStr`] views, valid only for the duration of the call;
//! - outputs go into caller-owned buffers (`ODMR_BUFFER_TOO_SMALL` reports the
//!   size needed through `*len_out`) or to callbacks whose arguments are
//!   borrowed for the duration of the callback;
//! - no string is ever freed across the boundary; opaque handles are released
//!   only by their own `*_free` / `*_close` function.
//!
//! Threads: `odmr_plugin_init`, `instance_new` and `instance_free` are called on
//! the host's main thread. Instance functions are called concurrently only when
//! the plugin sets [`ODMR_F_THREADSAFE`]; otherwise the host serialises all
//! calls into one instance. A cursor is used only on the thread that opened it.
#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_void};

/// The ABI major version. A host accepts exactly its own major.
pub const ODMR_ABI_MAJOR: u32 = 1;
/// The ABI minor version. Minors only append fields and constants.
pub const ODMR_ABI_MINOR: u32 = 0;

/// Result of every plugin call. Values not listed here are treated as
/// `ODMR_INTERNAL` by the host.
pub type odmr_status = i32;

/// Success.
pub const ODMR_OK: odmr_status = 0;
/// An iteration has no further element (cursor exhausted, body fully read).
pub const ODMR_END: odmr_status = 1;
/// The user, domain or object does not exist.
pub const ODMR_NOT_FOUND: odmr_status = 2;
/// The object exists but is refused (a disabled account, a forbidden domain).
pub const ODMR_DENIED: odmr_status = 3;
/// A temporary failure: retrying later may succeed (SMTP 4xx).
pub const ODMR_TEMPFAIL: odmr_status = 4;
/// A permanent failure: retrying will not help (SMTP 5xx).
pub const ODMR_PERMFAIL: odmr_status = 5;
/// The caller's buffer is too small; the size needed is in `*len_out`.
pub const ODMR_BUFFER_TOO_SMALL: odmr_status = 6;
/// An argument is malformed (not UTF-8, out of range, NULL where not allowed).
pub const ODMR_INVALID_ARGUMENT: odmr_status = 7;
/// The operation is not supported by this plugin or this object.
pub const ODMR_UNSUPPORTED: odmr_status = 8;
/// Version mismatch between host and plugin.
pub const ODMR_VERSION: odmr_status = 9;
/// The plugin panicked; the Rust kit reports this instead of unwinding.
pub const ODMR_PANIC: odmr_status = 10;
/// Any other internal error of the plugin.
pub const ODMR_INTERNAL: odmr_status = 11;

/// Plugin flag: instance functions may be called from several threads at once.
pub const ODMR_F_THREADSAFE: u32 = 1;

/// Log levels of the host's `log` up-call.
pub const ODMR_LOG_ERROR: i32 = 0;
/// A condition the operator should look at.
pub const ODMR_LOG_WARN: i32 = 1;
/// Normal operation.
pub const ODMR_LOG_INFO: i32 = 2;
/// Detail for troubleshooting.
pub const ODMR_LOG_DEBUG: i32 = 3;

/// Kind of secret returned by `lookup_secret`: the clear-text password.
pub const ODMR_SECRET_PLAIN: u32 = 1;
/// Kind of secret returned by `lookup_secret`: Dovecot's 32-byte CRAM-MD5
/// HMAC context (opad MD5 state then ipad MD5 state, little-endian words).
pub const ODMR_SECRET_CRAM_MD5_CONTEXT: u32 = 2;

/// Per-recipient outcome passed to `set_outcome`: the customer accepted it.
pub const ODMR_OUTCOME_DELIVERED: i32 = 0;
/// Per-recipient outcome: temporary failure, the recipient stays queued.
pub const ODMR_OUTCOME_TEMPFAIL: i32 = 1;
/// Per-recipient outcome: permanent failure. The host has already submitted a
/// delivery status notification; the backend removes the recipient.
pub const ODMR_OUTCOME_PERMFAIL: i32 = 2;

/// A borrowed byte string. Not NUL-terminated; `ptr` may be NULL when `len` is 0.
/// Valid only for the duration of the call (or callback) that passes it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdmrStr {
    /// First byte, or NULL for the empty string.
    pub ptr: *const u8,
    /// Number of bytes.
    pub len: usize,
}

/// One `key = value` line of a plugin's ini section, borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct OdmrKv {
    /// The key, as written in the ini file (lower-case by convention).
    pub key: OdmrStr,
    /// The value, with surrounding white space and comments removed.
    pub value: OdmrStr,
}

/// What the host offers a plugin. Owned by the host; valid from
/// `odmr_plugin_init` until the process exits (plugins are never unloaded).
#[repr(C)]
pub struct odmr_host {
    /// `size_of::<odmr_host>()` as the host was built.
    pub struct_size: u32,
    /// The host's ABI major.
    pub abi_major: u32,
    /// The host's ABI minor.
    pub abi_minor: u32,
    /// Opaque host context, passed back to `log`.
    pub ctx: *mut c_void,
    /// Log one line at `level` (ODMR_LOG_*). `msg` is borrowed for the call and
    /// need not be NUL-terminated. Callable from any thread, at any time.
    pub log: Option<unsafe extern "C" fn(ctx: *mut c_void, level: i32, msg: *const u8, len: usize)>,
}

/// Opaque plugin instance, created by `instance_new`, freed by `instance_free`.
#[repr(C)]
pub struct odmr_instance {
    _private: [u8; 0],
}

/// Opaque queue cursor, created by `cursor_open`, freed by `cursor_close`.
#[repr(C)]
pub struct odmr_cursor {
    _private: [u8; 0],
}

/// Receives one domain from `list_domains`. `domain` is borrowed for the call.
pub type odmr_domain_cb = unsafe extern "C" fn(cb_ctx: *mut c_void, domain: OdmrStr);

/// Credential operations. Any thread may call them (subject to ODMR_F_THREADSAFE).
#[repr(C)]
pub struct odmr_credentials_ops {
    /// `size_of::<odmr_credentials_ops>()` as the plugin was built.
    pub struct_size: u32,
    /// Look up `user`'s secret. On ODMR_OK writes the secret into `buf[..cap]`,
    /// its length into `*len_out` and its kind (ODMR_SECRET_*) into `*kind_out`.
    /// ODMR_BUFFER_TOO_SMALL sets `*len_out` to the size needed. ODMR_NOT_FOUND:
    /// no such user. ODMR_DENIED: the account is disabled. ODMR_UNSUPPORTED: the
    /// account exists but has no secret usable for CRAM-MD5 (the plugin logs why).
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
    /// Call `cb` once per domain `user` may collect with ATRN.
    pub list_domains: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            user: OdmrStr,
            cb_ctx: *mut c_void,
            cb: odmr_domain_cb,
        ) -> odmr_status,
    >,
}

/// Envelope of one message, delivered to the host by `cursor_next`.
/// Every string is borrowed for the duration of the callback.
#[repr(C)]
pub struct odmr_envelope_sink {
    /// Opaque host context for the callbacks.
    pub ctx: *mut c_void,
    /// Called once first: queue id (for logs), envelope sender (empty for the
    /// null sender `<>`), and the body size in bytes (0 when unknown).
    pub message: unsafe extern "C" fn(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64),
    /// Called once per pending recipient of a requested domain, in order;
    /// the n-th call is recipient index n for `set_outcome`.
    pub recipient: unsafe extern "C" fn(ctx: *mut c_void, address: OdmrStr),
}

/// Queue operations. A cursor is used only on the thread that opened it.
#[repr(C)]
pub struct odmr_queue_ops {
    /// `size_of::<odmr_queue_ops>()` as the plugin was built.
    pub struct_size: u32,
    /// Is any message pending for one of `domains` (lower-case, validated)?
    /// Sets `*pending` to 1 or 0 on ODMR_OK. Must use the same rule as the
    /// cursor, so that a yes is never followed by an empty session.
    pub has_pending: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            domains: *const OdmrStr,
            n_domains: usize,
            pending: *mut u32,
        ) -> odmr_status,
    >,
    /// Open a cursor over the messages with pending recipients in `domains`.
    /// The cursor holds whatever locks the queue needs until `cursor_close`.
    pub cursor_open: Option<
        unsafe extern "C" fn(
            inst: *mut odmr_instance,
            domains: *const OdmrStr,
            n_domains: usize,
            out: *mut *mut odmr_cursor,
        ) -> odmr_status,
    >,
    /// Advance to the next message and describe it through `sink`.
    /// ODMR_OK: a message; ODMR_END: none left. Unreadable messages are logged
    /// and skipped by the plugin, never reported as errors here.
    pub cursor_next:
        Option<unsafe extern "C" fn(cur: *mut odmr_cursor, sink: *const odmr_envelope_sink) -> odmr_status>,
    /// Read the next bytes of the current message's content (headers and body,
    /// not dot-stuffed, any line ending) into `buf[..cap]`. ODMR_OK with
    /// `*len_out > 0`, or ODMR_END at the end of the message.
    pub read_body: Option<
        unsafe extern "C" fn(
            cur: *mut odmr_cursor,
            buf: *mut u8,
            cap: usize,
            len_out: *mut usize,
        ) -> odmr_status,
    >,
    /// Record recipient `index`'s outcome (ODMR_OUTCOME_*) for the current message.
    /// Nothing changes on disk until `commit`.
    pub set_outcome:
        Option<unsafe extern "C" fn(cur: *mut odmr_cursor, index: usize, outcome: i32) -> odmr_status>,
    /// Apply the recorded outcomes of the current message durably: delivered and
    /// permanently failed recipients leave the queue, the rest stay. A message
    /// never committed is left exactly as it was.
    pub commit: Option<unsafe extern "C" fn(cur: *mut odmr_cursor) -> odmr_status>,
    /// Release the cursor and its locks. Uncommitted outcomes are discarded.
    pub cursor_close: Option<unsafe extern "C" fn(cur: *mut odmr_cursor)>,
}

/// A plugin's static descriptor, returned by `odmr_plugin_init`. Owned by the
/// plugin and valid until the process exits.
#[repr(C)]
pub struct odmr_plugin {
    /// `size_of::<odmr_plugin>()` as the plugin was built.
    pub struct_size: u32,
    /// The plugin's ABI major: must equal the host's.
    pub abi_major: u32,
    /// The plugin's ABI minor: fields beyond what the host knows are ignored.
    pub abi_minor: u32,
    /// NUL-terminated plugin name, for logs.
    pub name: *const c_char,
    /// NUL-terminated plugin version, for logs.
    pub version: *const c_char,
    /// ODMR_F_* bits.
    pub flags: u32,
    /// Create an instance from the kv pairs of the plugin's ini section.
    /// On failure, writes a reason (not NUL-terminated) into `err[..err_cap]`,
    /// its full length into `*err_len`, and returns a non-OK status.
    /// Called on the host's main thread.
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
    /// Free an instance. Called on the host's main thread, if at all.
    pub instance_free: Option<unsafe extern "C" fn(inst: *mut odmr_instance)>,
    /// Nullable: present when the plugin serves credentials.
    pub credentials: *const odmr_credentials_ops,
    /// Nullable: present when the plugin serves a queue.
    pub queue: *const odmr_queue_ops,
}

// SAFETY: the descriptor and its tables are immutable statics that only hold
// pointers to other immutable statics (strings, function tables), so sharing
// them between threads is sound.
unsafe impl Sync for odmr_plugin {}
// SAFETY: as above, the table is immutable.
unsafe impl Sync for odmr_credentials_ops {}
// SAFETY: as above, the table is immutable.
unsafe impl Sync for odmr_queue_ops {}

/// The one symbol a plugin `.so` exports, `odmr_plugin_init`.
/// Checks `host->abi_major`, stores its static descriptor into `*out`.
/// Returns ODMR_VERSION for an unsupported host major.
pub type odmr_plugin_init_fn =
    unsafe extern "C" fn(host: *const odmr_host, out: *mut *const odmr_plugin) -> odmr_status;
