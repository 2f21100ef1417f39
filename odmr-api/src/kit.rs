//! The safe Rust side of the ABI: status values, traits for backends, and the
//! trampolines that turn a trait implementation into the C function tables.
//!
//! This module owns the only `unsafe` code a Rust plugin needs: converting raw
//! pointers into borrowed slices, boxing instances and cursors behind opaque
//! handles, and catching panics so that they never unwind into C. It does not
//! know about SMTP, files or configuration; backends do.
//!
//! A backend implements [`Instance`] plus [`Credentials`] and/or [`Queue`] and
//! names itself with [`crate::export_plugin!`]. Instances must be `Send + Sync`,
//! so plugins built with this kit always declare `ODMR_F_THREADSAFE`. A cdylib
//! crate then exports it by path with [`crate::export_shared_object!`]; odmrd
//! links its built-ins as rlibs without that symbol.

use crate::ffi::*;
use crate::params::{Notify, Ret};
use std::ffi::c_void;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A failure status, the non-success half of [`odmr_status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// `ODMR_NOT_FOUND`
    NotFound,
    /// `ODMR_DENIED`
    Denied,
    /// `ODMR_TEMPFAIL`
    TempFail,
    /// `ODMR_PERMFAIL`
    PermFail,
    /// `ODMR_BUFFER_TOO_SMALL`
    BufferTooSmall,
    /// `ODMR_INVALID_ARGUMENT`
    InvalidArgument,
    /// `ODMR_UNSUPPORTED`
    Unsupported,
    /// `ODMR_VERSION`
    Version,
    /// `ODMR_PANIC`
    Panic,
    /// `ODMR_INTERNAL`, and every value the host does not know.
    Internal,
}

impl Status {
    /// The C value of this status.
    pub fn to_raw(self) -> odmr_status {
        match self {
            Status::NotFound => ODMR_NOT_FOUND,
            Status::Denied => ODMR_DENIED,
            Status::TempFail => ODMR_TEMPFAIL,
            Status::PermFail => ODMR_PERMFAIL,
            Status::BufferTooSmall => ODMR_BUFFER_TOO_SMALL,
            Status::InvalidArgument => ODMR_INVALID_ARGUMENT,
            Status::Unsupported => ODMR_UNSUPPORTED,
            Status::Version => ODMR_VERSION,
            Status::Panic => ODMR_PANIC,
            Status::Internal => ODMR_INTERNAL,
        }
    }

    /// The status for a C value that is neither `ODMR_OK` nor `ODMR_END`;
    /// unknown values (and those two, if passed by mistake) become `Internal`.
    pub fn from_raw(raw: odmr_status) -> Status {
        match raw {
            ODMR_NOT_FOUND => Status::NotFound,
            ODMR_DENIED => Status::Denied,
            ODMR_TEMPFAIL => Status::TempFail,
            ODMR_PERMFAIL => Status::PermFail,
            ODMR_BUFFER_TOO_SMALL => Status::BufferTooSmall,
            ODMR_INVALID_ARGUMENT => Status::InvalidArgument,
            ODMR_UNSUPPORTED => Status::Unsupported,
            ODMR_VERSION => Status::Version,
            ODMR_PANIC => Status::Panic,
            _ => Status::Internal,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Status::NotFound => "not found",
            Status::Denied => "denied",
            Status::TempFail => "temporary failure",
            Status::PermFail => "permanent failure",
            Status::BufferTooSmall => "buffer too small",
            Status::InvalidArgument => "invalid argument",
            Status::Unsupported => "unsupported",
            Status::Version => "ABI version mismatch",
            Status::Panic => "plugin panicked",
            Status::Internal => "internal plugin error",
        };
        f.write_str(text)
    }
}

impl std::error::Error for Status {}

/// Log levels for [`Host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// `ODMR_LOG_ERROR`
    Error,
    /// `ODMR_LOG_WARN`
    Warn,
    /// `ODMR_LOG_INFO`
    Info,
    /// `ODMR_LOG_DEBUG`
    Debug,
}

impl LogLevel {
    /// The C value of this level.
    pub fn to_raw(self) -> i32 {
        match self {
            LogLevel::Error => ODMR_LOG_ERROR,
            LogLevel::Warn => ODMR_LOG_WARN,
            LogLevel::Info => ODMR_LOG_INFO,
            LogLevel::Debug => ODMR_LOG_DEBUG,
        }
    }

    /// The level for a C value; unknown values log as errors, never dropped.
    pub fn from_raw(raw: i32) -> LogLevel {
        match raw {
            ODMR_LOG_WARN => LogLevel::Warn,
            ODMR_LOG_INFO => LogLevel::Info,
            ODMR_LOG_DEBUG => LogLevel::Debug,
            _ => LogLevel::Error,
        }
    }
}

/// The host as a plugin sees it: a handle for logging.
#[derive(Clone, Copy)]
pub struct Host {
    pub(crate) raw: *const odmr_host,
}

// SAFETY: the host struct is immutable and lives until the process exits, and
// its `log` up-call is documented as callable from any thread.
unsafe impl Send for Host {}
// SAFETY: as above.
unsafe impl Sync for Host {}

impl Host {
    /// A host that discards every log line, for plugin unit tests.
    pub fn detached() -> Host {
        Host { raw: std::ptr::null() }
    }

    /// The host's ABI minor (0 for a detached host): which appended fields
    /// of the host-provided structs without a `struct_size` exist.
    pub fn abi_minor(&self) -> u32 {
        // SAFETY: `raw` is null or the host pointer, valid until exit.
        unsafe { self.raw.as_ref() }.map_or(0, |h| h.abi_minor)
    }

    /// Log `msg` through the host (never to fds 0-2: under inetd those are the
    /// customer's socket).
    pub fn log(&self, level: LogLevel, msg: &str) {
        // SAFETY: `raw` is either null or the host pointer passed to
        // `instance_new`, valid for the life of the process.
        let Some(host) = (unsafe { self.raw.as_ref() }) else { return };
        if let Some(log) = host.log {
            // SAFETY: `msg` is valid for the call; `ctx` is the host's own.
            unsafe { log(host.ctx, level.to_raw(), msg.as_ptr(), msg.len()) };
        }
    }
}

/// A user's secret, as a credential store holds it.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// The clear-text password.
    Plain(Vec<u8>),
    /// Dovecot's 32-byte CRAM-MD5 context (opad state, then ipad state).
    CramMd5Context([u8; 32]),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print a secret, not even in a debug dump.
        match self {
            Secret::Plain(_) => f.write_str("Secret::Plain(<redacted>)"),
            Secret::CramMd5Context(_) => f.write_str("Secret::CramMd5Context(<redacted>)"),
        }
    }
}

/// The envelope of one queued message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Queue id, for logs.
    pub id: String,
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// Body size in bytes, 0 when unknown.
    pub size: u64,
    /// The pending recipients of the requested domains, in order.
    pub recipients: Vec<String>,
    /// ABI 1.1: when the message reached the queue, if known.
    pub arrival: Option<SystemTime>,
    /// ABI 1.1: the sender's ENVID (xtext decoded), if any.
    pub envid: Option<String>,
    /// ABI 1.1: the sender's RET, if any.
    pub ret: Option<Ret>,
    /// ABI 1.1: the envelope needs SMTPUTF8.
    pub smtputf8: bool,
    /// ABI 1.1: Some(true) for a body with 8-bit octets, Some(false) for a
    /// 7-bit one, None when the backend does not know.
    pub eight_bit: Option<bool>,
    /// ABI 1.1: an upper bound of the content's octets on the wire (CRLF
    /// and dot-stuffing counted), if known; see `params::wire_size_bound`.
    pub wire_size: Option<u64>,
    /// ABI 1.1: NOTIFY and ORCPT of `recipients[i]` at index `i`; shorter
    /// (usually empty) when the backend knows none. Read it through
    /// [`Envelope::recipient_details`].
    pub details: Vec<RecipientDetails>,
}

/// ABI 1.1: what the sender asked of one recipient (RFC 3461).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecipientDetails {
    /// NOTIFY.
    pub notify: Notify,
    /// ORCPT as `addr-type;address` (xtext decoded), if given.
    pub orcpt: Option<String>,
}

impl Envelope {
    /// The details of recipient `index` (defaults when the backend gave none).
    pub fn recipient_details(&self, index: usize) -> RecipientDetails {
        self.details.get(index).cloned().unwrap_or_default()
    }

    /// The ODMR_MSG_* bits of this envelope.
    pub fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.smtputf8 {
            flags |= ODMR_MSG_SMTPUTF8;
        }
        match self.eight_bit {
            Some(true) => flags |= ODMR_MSG_8BIT,
            Some(false) => flags |= ODMR_MSG_7BIT,
            None => {}
        }
        flags
    }

    /// Set `smtputf8` and `eight_bit` from ODMR_MSG_* bits.
    pub fn set_flags(&mut self, flags: u32) {
        self.smtputf8 = flags & ODMR_MSG_SMTPUTF8 != 0;
        self.eight_bit = if flags & ODMR_MSG_8BIT != 0 {
            Some(true)
        } else if flags & ODMR_MSG_7BIT != 0 {
            Some(false)
        } else {
            None
        };
    }
}

/// Seconds since the Unix epoch as the ABI passes arrival times (0: unknown).
pub fn arrival_to_raw(arrival: Option<SystemTime>) -> i64 {
    arrival
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The arrival time for an ABI value (0 and negatives: unknown).
pub fn arrival_from_raw(raw: i64) -> Option<SystemTime> {
    u64::try_from(raw).ok().filter(|&s| s > 0).map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

/// ABI 1.1: one entry of a queue listing ([`Queue::list`]).
#[derive(Debug, Clone, Copy)]
pub enum Listed<'a> {
    /// A message with pending recipients in `domain`; `last_replies[i]` is
    /// the reply that last deferred `envelope.recipients[i]` (empty when
    /// unknown; the slice may be shorter).
    Message {
        /// The requested domain it is listed under.
        domain: &'a str,
        /// Its envelope (recipients: the pending ones of `domain`).
        envelope: &'a Envelope,
        /// Last deferral replies, by recipient index.
        last_replies: &'a [String],
    },
    /// An entry that could not be read as a message.
    Unreadable {
        /// The domain it was found under ("" when unknown).
        domain: &'a str,
        /// Its id or file name.
        id: &'a str,
        /// Why.
        reason: &'a str,
    },
}

/// The outcome of one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The customer accepted it after the data: remove it.
    Delivered,
    /// A 4xx: keep it queued.
    TempFail,
    /// A 5xx: a DSN has been sent; remove it.
    PermFail,
}

impl Outcome {
    /// The C value of this outcome.
    pub fn to_raw(self) -> i32 {
        match self {
            Outcome::Delivered => ODMR_OUTCOME_DELIVERED,
            Outcome::TempFail => ODMR_OUTCOME_TEMPFAIL,
            Outcome::PermFail => ODMR_OUTCOME_PERMFAIL,
        }
    }

    /// The outcome for a C value, if valid.
    pub fn from_raw(raw: i32) -> Option<Outcome> {
        match raw {
            ODMR_OUTCOME_DELIVERED => Some(Outcome::Delivered),
            ODMR_OUTCOME_TEMPFAIL => Some(Outcome::TempFail),
            ODMR_OUTCOME_PERMFAIL => Some(Outcome::PermFail),
            _ => None,
        }
    }
}

/// A plugin instance, built from its ini section.
pub trait Instance: Sized + Send + Sync + 'static {
    /// Build an instance from the `(key, value)` pairs of the plugin's ini
    /// section. Reject unknown keys; the error names the key and the reason.
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String>;

    /// ABI 1.1: check deeper than `new` did, for `odmrd --check-config`
    /// (files readable, database reachable...). Report each finding with
    /// `LogLevel::Error` (cannot work) or `LogLevel::Warn`; Err only when the
    /// checks could not run. The default finds nothing.
    fn check(&self, _report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        Ok(())
    }
}

/// A credential store.
pub trait Credentials: Instance {
    /// The secret of `user`. `Unsupported` when the account has none usable
    /// for CRAM-MD5 (log why), `Denied` when it is disabled.
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status>;

    /// Verify a CRAM-MD5 digest without revealing the secret; only for stores
    /// that cannot return one. Ok(true) when it matches.
    fn verify_cram_md5(&self, _user: &str, _challenge: &str, _digest: &str) -> Result<bool, Status> {
        Err(Status::Unsupported)
    }

    /// The domains `user` may collect with ATRN.
    fn domains(&self, user: &str) -> Result<Vec<String>, Status>;

    /// ABI 1.1: verify a clear-text password (AUTH PLAIN/LOGIN under TLS)
    /// for stores that keep only hashes. Ok(true) when it matches; the
    /// default is `Unsupported`.
    fn verify_password(&self, _user: &str, _password: &[u8]) -> Result<bool, Status> {
        Err(Status::Unsupported)
    }

    /// ABI 1.1: the client networks (`address` or `address/prefix`) `user`
    /// may log in from; None (the default) for no restriction, an empty list
    /// for nowhere.
    fn allowed_networks(&self, _user: &str) -> Result<Option<Vec<String>>, Status> {
        Ok(None)
    }

    /// ABI 1.1: every account that may collect a domain, for `odmrd --queue
    /// --by-account`. The default is `Unsupported`.
    fn accounts(&self) -> Result<Vec<Account>, Status> {
        Err(Status::Unsupported)
    }
}

/// ABI 1.1: one account of a credential store ([`Credentials::accounts`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Account {
    /// The user name it logs in with.
    pub user: String,
    /// The domains it may collect (lower case).
    pub domains: Vec<String>,
    /// Its quota of held bytes (`odmr_quota=`), reported and never enforced.
    pub quota: Option<u64>,
    /// A contact address for notices (`odmr_notify=`).
    pub contact: Option<String>,
}

/// A queue reader.
pub trait Queue: Instance {
    /// What `open` returns.
    type Cursor: Cursor;

    /// Is any message pending for one of `domains`? Must agree with `open`.
    fn has_pending(&self, domains: &[String]) -> Result<bool, Status>;

    /// A cursor over the messages with pending recipients in `domains`.
    fn open(&self, domains: &[String]) -> Result<Self::Cursor, Status>;

    /// ABI 1.1: whether the cursor supports `ODMR_QF_NEXT_BEFORE_COMMIT`
    /// (see the constant: at most two messages open, outcomes and commit for
    /// the older). Off by default.
    const NEXT_BEFORE_COMMIT: bool = false;

    /// ABI 1.1: a read-only listing of the messages pending for `domains`
    /// (empty: every domain the queue can enumerate), one [`Listed`] each,
    /// without taking any lock a collection would wait for. The default is
    /// `Unsupported`.
    fn list(&self, _domains: &[String], _report: &mut dyn FnMut(Listed<'_>)) -> Result<(), Status> {
        Err(Status::Unsupported)
    }
}

/// Iteration over the messages of one collection, and their acknowledgement.
pub trait Cursor: 'static {
    /// The next message, or None at the end. Skip (and log) unreadable ones.
    fn next_message(&mut self) -> Result<Option<Envelope>, Status>;
    /// Copy the next bytes of the current message into `buf`; 0 at the end.
    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Status>;
    /// Record the outcome of recipient `index` of the current message.
    fn set_outcome(&mut self, index: usize, outcome: Outcome) -> Result<(), Status>;
    /// ABI 1.1: as `set_outcome`, with the customer's reply, for queues that
    /// keep the last deferral reason. The default forgets the reply.
    fn set_outcome_reply(&mut self, index: usize, outcome: Outcome, _reply: &str) -> Result<(), Status> {
        self.set_outcome(index, outcome)
    }
    /// Apply the recorded outcomes durably.
    fn commit(&mut self) -> Result<(), Status>;
}

// ---------------------------------------------------------------------------
// Conversions shared by the trampolines and by the host's safe wrappers.

impl OdmrStr {
    /// Borrow `bytes` for a call.
    pub fn from_bytes(bytes: &[u8]) -> OdmrStr {
        OdmrStr { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// View the bytes.
    ///
    /// # Safety
    /// `ptr` must be valid for `len` bytes for the lifetime `'a` (or `len` is 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.len == 0 || self.ptr.is_null() {
            &[]
        } else {
            // SAFETY: guaranteed by the caller.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }

    /// View the bytes as UTF-8, `InvalidArgument` otherwise.
    ///
    /// # Safety
    /// As for [`OdmrStr::as_bytes`].
    pub unsafe fn as_str<'a>(self) -> Result<&'a str, Status> {
        // SAFETY: guaranteed by the caller.
        std::str::from_utf8(unsafe { self.as_bytes() }).map_err(|_| Status::InvalidArgument)
    }
}

/// Copy `src` into a caller's buffer, reporting the length either way.
///
/// # Safety
/// `buf` must be valid for `cap` bytes of writes; `len_out` for one write.
pub unsafe fn write_out(src: &[u8], buf: *mut u8, cap: usize, len_out: *mut usize) -> odmr_status {
    if len_out.is_null() {
        return ODMR_INVALID_ARGUMENT;
    }
    // SAFETY: checked non-null; valid per the caller's contract.
    unsafe { *len_out = src.len() };
    if src.len() > cap {
        return ODMR_BUFFER_TOO_SMALL;
    }
    if !src.is_empty() {
        if buf.is_null() {
            return ODMR_INVALID_ARGUMENT;
        }
        // SAFETY: `buf` holds at least `cap >= src.len()` bytes.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), buf, src.len()) };
    }
    ODMR_OK
}

/// Run `body`, turning a panic into `ODMR_PANIC` so it never crosses the ABI.
pub fn guard(body: impl FnOnce() -> odmr_status) -> odmr_status {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(ODMR_PANIC)
}

fn status_of(result: Result<(), Status>) -> odmr_status {
    match result {
        Ok(()) => ODMR_OK,
        Err(status) => status.to_raw(),
    }
}

/// The `n` strings at `domains`, owned (a call's domain list); InvalidArgument for a null
/// pointer with items or a string that is not UTF-8.
///
/// # Safety
/// `domains` must point to `n` valid `OdmrStr`s, each valid for the call.
pub unsafe fn domain_list(domains: *const OdmrStr, n: usize) -> Result<Vec<String>, Status> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if domains.is_null() {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: guaranteed by the caller.
    let items = unsafe { std::slice::from_raw_parts(domains, n) };
    // SAFETY: each item is valid for the call.
    items.iter().map(|d| unsafe { d.as_str() }.map(str::to_owned)).collect()
}

/// The `n` key-value pairs at `kvs` (a section's settings), owned; InvalidArgument for a
/// null pointer with items or a string that is not UTF-8.
///
/// # Safety
/// `kvs` must point to `n` valid `OdmrKv`s, each string valid for the call.
pub unsafe fn owned_pairs(kvs: *const OdmrKv, n: usize) -> Result<Vec<(String, String)>, Status> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if kvs.is_null() {
        return Err(Status::InvalidArgument);
    }
    // SAFETY: non-null (checked) and valid for `n` items per the caller's contract.
    let pairs = unsafe { std::slice::from_raw_parts(kvs, n) };
    pairs
        .iter()
        // SAFETY: each kv is borrowed for the call.
        .map(|kv| Ok((unsafe { kv.key.as_str() }?.to_owned(), unsafe { kv.value.as_str() }?.to_owned())))
        .collect()
}

/// `reason` into a caller's error buffer: as much as fits in `cap` bytes, and its whole
/// length in `len` (longer than `cap`: it was cut). Nothing when `len` is null.
///
/// # Safety
/// `buf` must be valid for `cap` bytes of writes (or null with `cap` 0); `len` for one write
/// (or null).
pub unsafe fn write_error(reason: &str, buf: *mut u8, cap: usize, len: *mut usize) {
    if len.is_null() {
        return;
    }
    let n = reason.len().min(cap);
    // SAFETY: `buf` is valid for `cap >= n` bytes, `len` for one write (checked non-null).
    unsafe {
        write_out(&reason.as_bytes()[..n], buf, cap, len);
        *len = reason.len();
    }
}

// ---------------------------------------------------------------------------
// Trampolines: `extern "C"` functions generic over the backend type. The
// `export_plugin!` macro instantiates them into a static descriptor.

/// `odmr_plugin_init` body: check the host's ABI, hand out the descriptor.
///
/// # Safety
/// `host` must be null or valid; `out` must be null or valid for one write.
pub unsafe fn plugin_init(
    host: *const odmr_host,
    out: *mut *const odmr_plugin,
    descriptor: &'static odmr_plugin,
) -> odmr_status {
    guard(|| {
        // SAFETY: the caller passes a valid host or null.
        let Some(host) = (unsafe { host.as_ref() }) else { return ODMR_INVALID_ARGUMENT };
        if out.is_null() {
            return ODMR_INVALID_ARGUMENT;
        }
        if host.abi_major != ODMR_ABI_MAJOR {
            return ODMR_VERSION;
        }
        // SAFETY: checked non-null above.
        unsafe { *out = descriptor };
        ODMR_OK
    })
}

/// Trampoline for `instance_new`.
///
/// # Safety
/// Pointers as documented on `odmr_plugin::instance_new`.
pub unsafe extern "C" fn instance_new<T: Instance>(
    host: *const odmr_host,
    kvs: *const OdmrKv,
    n_kvs: usize,
    out: *mut *mut odmr_instance,
    err: *mut u8,
    err_cap: usize,
    err_len: *mut usize,
) -> odmr_status {
    guard(|| {
        if out.is_null() {
            return ODMR_INVALID_ARGUMENT;
        }
        // SAFETY: `kvs` holds `n_kvs` pairs borrowed for the call, per the contract.
        let config = match unsafe { owned_pairs(kvs, n_kvs) } {
            Ok(config) => config,
            Err(status) => return status.to_raw(),
        };
        let host = Host { raw: host };
        match T::new(host, &config) {
            Ok(inner) => {
                // SAFETY: `out` checked non-null.
                unsafe { *out = Box::into_raw(Box::new(Hosted { host, inner })).cast() };
                ODMR_OK
            }
            Err(reason) => {
                // SAFETY: `err` is valid for `err_cap` bytes, `err_len` for one write (or null).
                unsafe { write_error(&reason, err, err_cap, err_len) };
                ODMR_INVALID_ARGUMENT
            }
        }
    })
}

/// Trampoline for `instance_free`.
///
/// # Safety
/// `inst` must come from `instance_new::<T>` and not be used afterwards.
pub unsafe extern "C" fn instance_free<T: Instance>(inst: *mut odmr_instance) {
    guard(|| {
        if !inst.is_null() {
            // SAFETY: created by `Box::into_raw` in `instance_new::<T>`.
            drop(unsafe { Box::from_raw(inst.cast::<Hosted<T>>()) });
        }
        ODMR_OK
    });
}

/// What an `odmr_instance` handle of the kit points to: the backend and the
/// host it was created for (whose minor says what the host's structs hold).
struct Hosted<T> {
    host: Host,
    inner: T,
}

/// What an `odmr_cursor` handle of the kit points to: the backend's cursor
/// and the host's ABI minor (the layout of the sinks it passes).
struct HostedCursor<C> {
    host_minor: u32,
    inner: C,
}

/// # Safety
/// `inst` must come from `instance_new::<T>` and still be alive.
unsafe fn hosted<'a, T: Instance>(inst: *mut odmr_instance) -> Result<&'a Hosted<T>, Status> {
    // SAFETY: guaranteed by the caller.
    unsafe { inst.cast::<Hosted<T>>().as_ref() }.ok_or(Status::InvalidArgument)
}

/// # Safety
/// `inst` must come from `instance_new::<T>` and still be alive.
unsafe fn instance_ref<'a, T: Instance>(inst: *mut odmr_instance) -> Result<&'a T, Status> {
    // SAFETY: guaranteed by the caller.
    unsafe { hosted::<T>(inst) }.map(|h| &h.inner)
}

unsafe extern "C" fn check<T: Instance>(
    inst: *mut odmr_instance,
    cb_ctx: *mut c_void,
    cb: odmr_check_cb,
) -> odmr_status {
    guard(|| {
        let mut report = |level: LogLevel, message: &str| {
            // SAFETY: the host's callback, with a message borrowed for the call.
            unsafe { cb(cb_ctx, level.to_raw(), OdmrStr::from_bytes(message.as_bytes())) }
        };
        // SAFETY: `inst` is ours.
        status_of(unsafe { instance_ref::<T>(inst) }.and_then(|i| i.check(&mut report)))
    })
}

unsafe extern "C" fn lookup_secret<T: Credentials>(
    inst: *mut odmr_instance,
    user: OdmrStr,
    kind_out: *mut u32,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
) -> odmr_status {
    guard(|| {
        let lookup = || -> Result<Secret, Status> {
            // SAFETY: `inst` is ours; `user` is borrowed for the call.
            unsafe { instance_ref::<T>(inst)?.lookup_secret(user.as_str()?) }
        };
        match lookup() {
            Ok(secret) => {
                if kind_out.is_null() {
                    return ODMR_INVALID_ARGUMENT;
                }
                let (kind, bytes): (u32, &[u8]) = match &secret {
                    Secret::Plain(p) => (ODMR_SECRET_PLAIN, p),
                    Secret::CramMd5Context(c) => (ODMR_SECRET_CRAM_MD5_CONTEXT, c),
                };
                // SAFETY: checked non-null.
                unsafe { *kind_out = kind };
                // SAFETY: caller's buffer contract.
                unsafe { write_out(bytes, buf, cap, len_out) }
            }
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn verify_cram_md5<T: Credentials>(
    inst: *mut odmr_instance,
    user: OdmrStr,
    challenge: OdmrStr,
    digest: OdmrStr,
) -> odmr_status {
    guard(|| {
        let verify = || -> Result<bool, Status> {
            // SAFETY: `inst` is ours; the strings are borrowed for the call.
            unsafe {
                instance_ref::<T>(inst)?.verify_cram_md5(
                    user.as_str()?,
                    challenge.as_str()?,
                    digest.as_str()?,
                )
            }
        };
        match verify() {
            Ok(true) => ODMR_OK,
            Ok(false) => ODMR_DENIED,
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn verify_password<T: Credentials>(
    inst: *mut odmr_instance,
    user: OdmrStr,
    password: OdmrStr,
) -> odmr_status {
    guard(|| {
        // SAFETY: `inst` is ours; the strings are borrowed for the call.
        let verify =
            || unsafe { instance_ref::<T>(inst)?.verify_password(user.as_str()?, password.as_bytes()) };
        match verify() {
            Ok(true) => ODMR_OK,
            Ok(false) => ODMR_DENIED,
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn list_accounts<T: Credentials>(
    inst: *mut odmr_instance,
    cb_ctx: *mut c_void,
    cb: odmr_account_cb,
) -> odmr_status {
    guard(|| {
        // SAFETY: `inst` is ours.
        let accounts = match unsafe { instance_ref::<T>(inst).and_then(|i| i.accounts()) } {
            Ok(accounts) => accounts,
            Err(status) => return status.to_raw(),
        };
        for account in &accounts {
            let domains = account.domains.join(",");
            let contact = account.contact.as_deref().unwrap_or("");
            let (user, domains, contact) = (
                OdmrStr::from_bytes(account.user.as_bytes()),
                OdmrStr::from_bytes(domains.as_bytes()),
                OdmrStr::from_bytes(contact.as_bytes()),
            );
            // SAFETY: the host's callback, with strings borrowed for the call.
            unsafe { cb(cb_ctx, user, domains, account.quota.unwrap_or(0), contact) };
        }
        ODMR_OK
    })
}

unsafe extern "C" fn list_domains<T: Credentials>(
    inst: *mut odmr_instance,
    user: OdmrStr,
    cb_ctx: *mut c_void,
    cb: odmr_domain_cb,
) -> odmr_status {
    guard(|| {
        // SAFETY: `inst` is ours; `user` is borrowed for the call.
        match unsafe { instance_ref::<T>(inst).and_then(|i| i.domains(user.as_str()?)) } {
            // SAFETY: the host's callback and its context, for this call.
            Ok(domains) => unsafe { report_each(&domains, cb_ctx, cb) },
            Err(status) => status.to_raw(),
        }
    })
}

/// Call the host's `cb(cb_ctx, item)` once per item, then ODMR_OK.
///
/// # Safety
/// `cb` and `cb_ctx` must be the host's callback and context of the current call.
unsafe fn report_each(items: &[String], cb_ctx: *mut c_void, cb: odmr_domain_cb) -> odmr_status {
    for item in items {
        // SAFETY: the host's callback (caller), with a string borrowed for the call.
        unsafe { cb(cb_ctx, OdmrStr::from_bytes(item.as_bytes())) };
    }
    ODMR_OK
}

unsafe extern "C" fn allowed_networks<T: Credentials>(
    inst: *mut odmr_instance,
    user: OdmrStr,
    cb_ctx: *mut c_void,
    cb: odmr_domain_cb,
) -> odmr_status {
    guard(|| {
        // SAFETY: `inst` is ours; `user` is borrowed for the call.
        match unsafe { instance_ref::<T>(inst).and_then(|i| i.allowed_networks(user.as_str()?)) } {
            Ok(None) => ODMR_OK,
            Ok(Some(nets)) if nets.is_empty() => ODMR_DENIED,
            // SAFETY: the host's callback and its context, for this call.
            Ok(Some(nets)) => unsafe { report_each(&nets, cb_ctx, cb) },
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn has_pending<T: Queue>(
    inst: *mut odmr_instance,
    domains: *const OdmrStr,
    n_domains: usize,
    pending: *mut u32,
) -> odmr_status {
    guard(|| {
        if pending.is_null() {
            return ODMR_INVALID_ARGUMENT;
        }
        // SAFETY: `inst` is ours; `domains` valid for the call.
        let answer =
            unsafe { instance_ref::<T>(inst).and_then(|i| i.has_pending(&domain_list(domains, n_domains)?)) };
        match answer {
            Ok(yes) => {
                // SAFETY: checked non-null.
                unsafe { *pending = u32::from(yes) };
                ODMR_OK
            }
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn cursor_open<T: Queue>(
    inst: *mut odmr_instance,
    domains: *const OdmrStr,
    n_domains: usize,
    out: *mut *mut odmr_cursor,
) -> odmr_status {
    guard(|| {
        if out.is_null() {
            return ODMR_INVALID_ARGUMENT;
        }
        // SAFETY: `inst` is ours; `domains` valid for the call.
        match unsafe {
            hosted::<T>(inst).and_then(|h| Ok((h.host, h.inner.open(&domain_list(domains, n_domains)?)?)))
        } {
            Ok((host, inner)) => {
                let cursor = HostedCursor { host_minor: host.abi_minor(), inner };
                // SAFETY: checked non-null.
                unsafe { *out = Box::into_raw(Box::new(cursor)).cast() };
                ODMR_OK
            }
            Err(status) => status.to_raw(),
        }
    })
}

/// # Safety
/// `cur` must come from `cursor_open::<T>` and still be open.
unsafe fn hosted_cursor<'a, T: Queue>(
    cur: *mut odmr_cursor,
) -> Result<&'a mut HostedCursor<T::Cursor>, Status> {
    // SAFETY: guaranteed by the caller.
    unsafe { cur.cast::<HostedCursor<T::Cursor>>().as_mut() }.ok_or(Status::InvalidArgument)
}

/// # Safety
/// `cur` must come from `cursor_open::<T>` and still be open.
unsafe fn cursor_mut<'a, T: Queue>(cur: *mut odmr_cursor) -> Result<&'a mut T::Cursor, Status> {
    // SAFETY: guaranteed by the caller.
    unsafe { hosted_cursor::<T>(cur) }.map(|c| &mut c.inner)
}

fn str_of(s: &str) -> OdmrStr {
    OdmrStr::from_bytes(s.as_bytes())
}

/// Describe `envelope` through a host's sink; the ABI 1.1 callbacks only when
/// the host's minor says its sink has them.
///
/// # Safety
/// `sink` must be a valid sink of a host of minor `host_minor`.
pub unsafe fn describe_envelope(sink: &odmr_envelope_sink, host_minor: u32, envelope: &Envelope) {
    let (message_details, recipient_details) =
        if host_minor >= 1 { (sink.message_details, sink.recipient_details) } else { (None, None) };
    // SAFETY (all calls): the host's callbacks, strings borrowed for each call.
    unsafe { (sink.message)(sink.ctx, str_of(&envelope.id), str_of(&envelope.sender), envelope.size) };
    if let Some(details) = message_details {
        let envid = envelope.envid.as_deref().unwrap_or("");
        let raw_arrival = arrival_to_raw(envelope.arrival);
        // SAFETY: as above.
        let (ret, wire_size) = (Ret::to_raw(envelope.ret), envelope.wire_size.unwrap_or(0));
        // SAFETY: as above.
        unsafe { details(sink.ctx, raw_arrival, str_of(envid), ret, envelope.flags(), wire_size) };
    }
    for (i, rcpt) in envelope.recipients.iter().enumerate() {
        // SAFETY: as above.
        unsafe { (sink.recipient)(sink.ctx, str_of(rcpt)) };
        if let (Some(details), Some(d)) = (recipient_details, envelope.details.get(i)) {
            let orcpt = d.orcpt.as_deref().unwrap_or("");
            // SAFETY: as above.
            unsafe { details(sink.ctx, d.notify.to_raw(), str_of(orcpt)) };
        }
    }
}

unsafe extern "C" fn cursor_next<T: Queue>(
    cur: *mut odmr_cursor,
    sink: *const odmr_envelope_sink,
) -> odmr_status {
    guard(|| {
        // SAFETY: the sink is borrowed for the call.
        let Some(sink) = (unsafe { sink.as_ref() }) else { return ODMR_INVALID_ARGUMENT };
        // SAFETY: `cur` is ours.
        let cursor = match unsafe { hosted_cursor::<T>(cur) } {
            Ok(cursor) => cursor,
            Err(status) => return status.to_raw(),
        };
        match cursor.inner.next_message() {
            Ok(Some(envelope)) => {
                // SAFETY: the host's sink, of the minor it was opened with.
                unsafe { describe_envelope(sink, cursor.host_minor, &envelope) };
                ODMR_OK
            }
            Ok(None) => ODMR_END,
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn read_body<T: Queue>(
    cur: *mut odmr_cursor,
    buf: *mut u8,
    cap: usize,
    len_out: *mut usize,
) -> odmr_status {
    guard(|| {
        if len_out.is_null() || (cap > 0 && buf.is_null()) {
            return ODMR_INVALID_ARGUMENT;
        }
        let slice: &mut [u8] = if cap == 0 {
            &mut []
        } else {
            // SAFETY: non-null (checked) and writable for `cap` bytes per the contract.
            unsafe { std::slice::from_raw_parts_mut(buf, cap) }
        };
        // SAFETY: `cur` is ours.
        match unsafe { cursor_mut::<T>(cur).and_then(|c| c.read_body(slice)) } {
            Ok(0) => {
                // SAFETY: checked non-null.
                unsafe { *len_out = 0 };
                ODMR_END
            }
            Ok(n) => {
                // SAFETY: checked non-null.
                unsafe { *len_out = n };
                ODMR_OK
            }
            Err(status) => status.to_raw(),
        }
    })
}

unsafe extern "C" fn set_outcome<T: Queue>(cur: *mut odmr_cursor, index: usize, outcome: i32) -> odmr_status {
    guard(|| {
        let Some(outcome) = Outcome::from_raw(outcome) else { return ODMR_INVALID_ARGUMENT };
        // SAFETY: `cur` is ours.
        status_of(unsafe { cursor_mut::<T>(cur).and_then(|c| c.set_outcome(index, outcome)) })
    })
}

unsafe extern "C" fn set_outcome_reply<T: Queue>(
    cur: *mut odmr_cursor,
    index: usize,
    outcome: i32,
    reply: OdmrStr,
) -> odmr_status {
    guard(|| {
        let Some(outcome) = Outcome::from_raw(outcome) else { return ODMR_INVALID_ARGUMENT };
        // SAFETY: the reply is borrowed for the call; not UTF-8 is kept lossily.
        let reply = String::from_utf8_lossy(unsafe { reply.as_bytes() });
        // SAFETY: `cur` is ours.
        status_of(unsafe { cursor_mut::<T>(cur).and_then(|c| c.set_outcome_reply(index, outcome, &reply)) })
    })
}

unsafe extern "C" fn list<T: Queue>(
    inst: *mut odmr_instance,
    domains: *const OdmrStr,
    n_domains: usize,
    sink: *const odmr_list_sink,
) -> odmr_status {
    guard(|| {
        // SAFETY: the sink is borrowed for the call.
        let Some(sink) = (unsafe { sink.as_ref() }) else { return ODMR_INVALID_ARGUMENT };
        let mut report = |entry: Listed<'_>| match entry {
            Listed::Message { domain, envelope, last_replies } => {
                let e = envelope;
                // SAFETY (all calls): the host's callbacks, strings borrowed for each call.
                unsafe {
                    (sink.message)(
                        sink.ctx,
                        str_of(domain),
                        str_of(&e.id),
                        str_of(&e.sender),
                        e.size,
                        arrival_to_raw(e.arrival),
                        e.flags(),
                    )
                };
                for (i, rcpt) in e.recipients.iter().enumerate() {
                    let last = last_replies.get(i).map_or("", String::as_str);
                    // SAFETY: as above.
                    unsafe { (sink.recipient)(sink.ctx, str_of(rcpt), str_of(last)) };
                }
            }
            Listed::Unreadable { domain, id, reason } => {
                // SAFETY: as above.
                unsafe { (sink.unreadable)(sink.ctx, str_of(domain), str_of(id), str_of(reason)) };
            }
        };
        // SAFETY: `inst` is ours; `domains` valid for the call.
        status_of(unsafe {
            instance_ref::<T>(inst).and_then(|i| i.list(&domain_list(domains, n_domains)?, &mut report))
        })
    })
}

unsafe extern "C" fn commit<T: Queue>(cur: *mut odmr_cursor) -> odmr_status {
    // SAFETY: `cur` is ours.
    guard(|| status_of(unsafe { cursor_mut::<T>(cur).and_then(|c| c.commit()) }))
}

unsafe extern "C" fn cursor_close<T: Queue>(cur: *mut odmr_cursor) {
    guard(|| {
        if !cur.is_null() {
            // SAFETY: created by `Box::into_raw` in `cursor_open::<T>`.
            drop(unsafe { Box::from_raw(cur.cast::<HostedCursor<T::Cursor>>()) });
        }
        ODMR_OK
    });
}

/// The credential table for `T`, for [`crate::export_plugin!`].
pub const fn credentials_ops<T: Credentials>() -> odmr_credentials_ops {
    odmr_credentials_ops {
        struct_size: std::mem::size_of::<odmr_credentials_ops>() as u32,
        lookup_secret: Some(lookup_secret::<T>),
        verify_cram_md5: Some(verify_cram_md5::<T>),
        list_domains: Some(list_domains::<T>),
        verify_password: Some(verify_password::<T>),
        allowed_networks: Some(allowed_networks::<T>),
        list_accounts: Some(list_accounts::<T>),
    }
}

/// The queue table for `T`, for [`crate::export_plugin!`].
pub const fn queue_ops<T: Queue>() -> odmr_queue_ops {
    odmr_queue_ops {
        struct_size: std::mem::size_of::<odmr_queue_ops>() as u32,
        has_pending: Some(has_pending::<T>),
        cursor_open: Some(cursor_open::<T>),
        cursor_next: Some(cursor_next::<T>),
        read_body: Some(read_body::<T>),
        set_outcome: Some(set_outcome::<T>),
        commit: Some(commit::<T>),
        cursor_close: Some(cursor_close::<T>),
        flags: if T::NEXT_BEFORE_COMMIT { ODMR_QF_NEXT_BEFORE_COMMIT } else { 0 },
        list: Some(list::<T>),
        set_outcome_reply: Some(set_outcome_reply::<T>),
    }
}

/// Build `T`'s descriptor; used by [`crate::export_plugin!`].
pub const fn descriptor<T: Instance>(
    name: &'static str,
    version: &'static str,
    credentials: *const odmr_credentials_ops,
    queue: *const odmr_queue_ops,
) -> odmr_plugin {
    odmr_plugin {
        struct_size: std::mem::size_of::<odmr_plugin>() as u32,
        abi_major: ODMR_ABI_MAJOR,
        abi_minor: ODMR_ABI_MINOR,
        name: name.as_ptr().cast(),
        version: version.as_ptr().cast(),
        flags: ODMR_F_THREADSAFE,
        instance_new: Some(instance_new::<T>),
        instance_free: Some(instance_free::<T>),
        credentials,
        queue,
        check: Some(check::<T>),
    }
}

/// Turns a backend type into a plugin entry point.
///
/// `export_plugin!(fn maildir_plugin_init, "maildir", Maildir: [queue]);`
/// defines `pub unsafe extern "C" fn maildir_plugin_init(host, out)` with the
/// signature of `odmr_plugin_init`, serving the listed capabilities
/// (`[credentials]`, `[queue]`, or `[credentials, queue]`).
#[macro_export]
macro_rules! export_plugin {
    ($(#[$attr:meta])* fn $init:ident, $name:literal, $ty:ty : [$($kind:ident),+ $(,)?]) => {
        /// The plugin's `odmr_plugin_init` entry point.
        ///
        /// # Safety
        /// `host` must be null or valid, `out` null or valid for one write.
        $(#[$attr])*
        pub unsafe extern "C" fn $init(
            host: *const $crate::ffi::odmr_host,
            out: *mut *const $crate::ffi::odmr_plugin,
        ) -> $crate::ffi::odmr_status {
            static DESCRIPTOR: $crate::ffi::odmr_plugin = $crate::kit::descriptor::<$ty>(
                concat!($name, "\0"),
                concat!(env!("CARGO_PKG_VERSION"), "\0"),
                $crate::__odmr_ops!(credentials, [$($kind),+], $ty),
                $crate::__odmr_ops!(queue, [$($kind),+], $ty),
            );
            // SAFETY: forwarded from our own caller's contract.
            unsafe { $crate::kit::plugin_init(host, out, &DESCRIPTOR) }
        }
    };
}

/// Entry point of a plugin built as a shared object; the body of the
/// `odmr_plugin_init` that [`crate::export_shared_object!`] defines.
///
/// Before forwarding to `init`, it routes the plugin's panic messages to the
/// host's log: a cdylib has its own copy of std, whose default panic hook
/// would print to fd 2, which under inetd may be the customer's socket. The
/// panic itself is still caught at the boundary and reported as ODMR_PANIC.
///
/// # Safety
/// `host` must be null or valid until the process exits (the ABI promises
/// it); `out` null or valid for one write; `init` an `export_plugin!` entry.
pub unsafe fn shared_object_init(
    host: *const odmr_host,
    out: *mut *const odmr_plugin,
    init: odmr_plugin_init_fn,
) -> odmr_status {
    guard(|| {
        if !host.is_null() {
            route_panics_to_host(host);
        }
        // SAFETY: forwarded from our caller's contract.
        unsafe { init(host, out) }
    })
}

/// Replace this copy of std's panic hook with one that logs through `host`
/// (the first host seen; every host struct lives until the process exits).
fn route_panics_to_host(host: *const odmr_host) {
    use std::sync::atomic::{AtomicPtr, Ordering};
    static HOST: AtomicPtr<odmr_host> = AtomicPtr::new(std::ptr::null_mut());
    static HOOK: std::sync::Once = std::sync::Once::new();
    let _ = HOST.compare_exchange(std::ptr::null_mut(), host.cast_mut(), Ordering::AcqRel, Ordering::Acquire);
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(no message)");
            let place = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let thread = std::thread::current();
            let host = Host { raw: HOST.load(Ordering::Acquire) };
            host.log(
                LogLevel::Error,
                &format!(
                    "panic in thread {}{place}: {message} (caught; the call fails with ODMR_PANIC)",
                    thread.name().unwrap_or("unnamed")
                ),
            );
        }));
    });
}

/// Exports a plugin's entry point as the `odmr_plugin_init` symbol of a
/// shared object (a `crate-type = ["cdylib"]` crate), so that odmrd can load
/// it with `plugin = /path/to/libNAME.so`.
///
/// `export_shared_object!(my_backend::my_plugin_init);` where
/// `my_plugin_init` was defined with [`crate::export_plugin!`]. Use it only
/// in a cdylib: two crates linked into one binary must not both define the
/// symbol (odmrd links its built-in backends as rlibs, without it). It also
/// routes the plugin's panic messages to the host log (see
/// [`kit::shared_object_init`](crate::kit::shared_object_init)).
#[macro_export]
macro_rules! export_shared_object {
    ($init:path) => {
        /// `odmr_plugin_init`: the one symbol odmrd looks up in this object.
        ///
        /// # Safety
        /// As documented in `odmr_api.h`: `host` valid until exit or null,
        /// `out` valid for one write or null.
        #[no_mangle]
        pub unsafe extern "C" fn odmr_plugin_init(
            host: *const $crate::ffi::odmr_host,
            out: *mut *const $crate::ffi::odmr_plugin,
        ) -> $crate::ffi::odmr_status {
            // SAFETY: forwarded from our own caller's contract.
            unsafe { $crate::kit::shared_object_init(host, out, $init) }
        }
    };
}

/// Internal to `export_plugin!`: a pointer to the table of `$want` if the
/// capability list names it, else null.
#[doc(hidden)]
#[macro_export]
macro_rules! __odmr_ops {
    (credentials, [credentials $(, $rest:ident)*], $ty:ty) => {
        &$crate::kit::credentials_ops::<$ty>() as *const $crate::ffi::odmr_credentials_ops
    };
    (queue, [queue $(, $rest:ident)*], $ty:ty) => {
        &$crate::kit::queue_ops::<$ty>() as *const $crate::ffi::odmr_queue_ops
    };
    ($want:ident, [$other:ident $(, $rest:ident)*], $ty:ty) => {
        $crate::__odmr_ops!($want, [$($rest),*], $ty)
    };
    ($want:ident, [], $ty:ty) => {
        ::std::ptr::null()
    };
}
