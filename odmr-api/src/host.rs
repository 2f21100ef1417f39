//! The host's side of the ABI: calling a plugin's `odmr_plugin_init`,
//! checking its descriptor once, creating instances, and safe wrappers over
//! its C function tables. odmrd and the test host ([`crate::testing`]) both
//! go through here, so the unsafe calls into plugins exist once.
//!
//! This module owns every `unsafe` call from a host into a plugin and the
//! thread contract: a plugin without `ODMR_F_THREADSAFE` is entered by one
//! thread at a time (one lock per plugin, shared by its instances and
//! cursors). It reads no descriptor or table field beyond the plugin's
//! `struct_size`, and what it checked at load (required functions present)
//! is kept in types, so no call re-checks. It does not find plugins (odmrd's
//! built-in registry and dlopen do), knows no SMTP, and maps no status to a
//! reply.
//!
//! The names differ from the plugin kit's traits on purpose: a host holds a
//! [`CredentialStore`], a [`MailQueue`] and a [`QueueCursor`]; a plugin
//! implements [`crate::Credentials`], [`crate::Queue`] and [`crate::Cursor`].

use crate::ffi::*;
use crate::kit::{arrival_from_raw, Envelope, Listed, LogLevel, Outcome, RecipientDetails, Secret, Status};
use crate::params::{Notify, Ret};
use std::ffi::{c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Where a plugin's log lines go: `(plugin name, level, text)`. Before the
/// descriptor names the plugin, the name is the label the host gave it.
pub type LogFn = Arc<dyn Fn(&str, LogLevel, &str) + Send + Sync>;

/// What the `ctx` of a plugin's host struct points to.
struct LogTag {
    label: String,
    name: OnceLock<String>,
    log: LogFn,
}

impl LogTag {
    fn log(&self, level: LogLevel, text: &str) {
        (self.log)(self.name.get().unwrap_or(&self.label), level, text);
    }
}

/// The host's `log` up-call.
unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the leaked `LogTag` of this host struct; `msg` is
        // valid for `len` bytes for this call.
        let (tag, text) = unsafe { (&*ctx.cast::<LogTag>(), OdmrStr { ptr: msg, len }.as_bytes()) };
        tag.log(LogLevel::from_raw(level), &String::from_utf8_lossy(text));
    }));
}

/// One `odmr_host` struct as a plugin receives it, with its log tag. Both are
/// leaked: the ABI promises plugins that the host struct lives until exit.
#[derive(Clone, Copy)]
pub struct PluginHost {
    raw: &'static odmr_host,
    tag: &'static LogTag,
}

impl PluginHost {
    /// A host of this crate's ABI whose plugin logs through `log`, tagged
    /// `label` until the descriptor names the plugin.
    pub fn new(label: &str, log: LogFn) -> PluginHost {
        PluginHost::with_abi(label, log, ODMR_ABI_MAJOR, ODMR_ABI_MINOR)
    }

    /// A host claiming another ABI version (tests of the handshake and of
    /// what a plugin gives an older host).
    pub fn with_abi(label: &str, log: LogFn, major: u32, minor: u32) -> PluginHost {
        let tag: &'static LogTag =
            Box::leak(Box::new(LogTag { label: label.to_string(), name: OnceLock::new(), log }));
        let raw: &'static odmr_host = Box::leak(Box::new(odmr_host {
            struct_size: std::mem::size_of::<odmr_host>() as u32,
            abi_major: major,
            abi_minor: minor,
            ctx: (tag as *const LogTag).cast_mut().cast(),
            log: Some(host_log),
        }));
        PluginHost { raw, tag }
    }

    /// The raw struct, as a plugin receives it.
    pub fn raw(&self) -> &'static odmr_host {
        self.raw
    }
}

/// Why a plugin was refused: its own status when one of its calls failed
/// (`odmr_plugin_init`, `instance_new`), none when the host refused what it
/// returned; and a reason naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The plugin's status, when a plugin call failed.
    pub status: Option<odmr_status>,
    /// One line for the operator.
    pub reason: String,
}

impl Refusal {
    fn host(reason: impl Into<String>) -> Refusal {
        Refusal { status: None, reason: reason.into() }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

type LookupSecretFn =
    unsafe extern "C" fn(*mut odmr_instance, OdmrStr, *mut u32, *mut u8, usize, *mut usize) -> odmr_status;
type VerifyCramFn = unsafe extern "C" fn(*mut odmr_instance, OdmrStr, OdmrStr, OdmrStr) -> odmr_status;
type ListDomainsFn =
    unsafe extern "C" fn(*mut odmr_instance, OdmrStr, *mut c_void, odmr_domain_cb) -> odmr_status;
type VerifyPasswordFn = unsafe extern "C" fn(*mut odmr_instance, OdmrStr, OdmrStr) -> odmr_status;
type ListAccountsFn = unsafe extern "C" fn(*mut odmr_instance, *mut c_void, odmr_account_cb) -> odmr_status;
type DomainsFn = unsafe extern "C" fn(*mut odmr_instance, *const OdmrStr, usize, *mut u32) -> odmr_status;
type OpenFn =
    unsafe extern "C" fn(*mut odmr_instance, *const OdmrStr, usize, *mut *mut odmr_cursor) -> odmr_status;
type NextFn = unsafe extern "C" fn(*mut odmr_cursor, *const odmr_envelope_sink) -> odmr_status;
type ReadFn = unsafe extern "C" fn(*mut odmr_cursor, *mut u8, usize, *mut usize) -> odmr_status;
type OutcomeFn = unsafe extern "C" fn(*mut odmr_cursor, usize, i32) -> odmr_status;
type OutcomeReplyFn = unsafe extern "C" fn(*mut odmr_cursor, usize, i32, OdmrStr) -> odmr_status;
type CommitFn = unsafe extern "C" fn(*mut odmr_cursor) -> odmr_status;
type CloseFn = unsafe extern "C" fn(*mut odmr_cursor);
type ListFn =
    unsafe extern "C" fn(*mut odmr_instance, *const OdmrStr, usize, *const odmr_list_sink) -> odmr_status;
type InstanceNewFn = unsafe extern "C" fn(
    *const odmr_host,
    *const OdmrKv,
    usize,
    *mut *mut odmr_instance,
    *mut u8,
    usize,
    *mut usize,
) -> odmr_status;
type CheckFn = unsafe extern "C" fn(*mut odmr_instance, *mut c_void, odmr_check_cb) -> odmr_status;

/// A credential table as checked at load: `list_domains` and at least one
/// of the secret calls are present.
#[derive(Clone, Copy)]
struct CredentialFns {
    lookup_secret: Option<LookupSecretFn>,
    verify_cram_md5: Option<VerifyCramFn>,
    list_domains: ListDomainsFn,
    verify_password: Option<VerifyPasswordFn>,
    allowed_networks: Option<ListDomainsFn>,
    list_accounts: Option<ListAccountsFn>,
}

/// A queue table as checked at load: every v1.0 function is present.
#[derive(Clone, Copy)]
struct QueueFns {
    has_pending: DomainsFn,
    cursor_open: OpenFn,
    cursor_next: NextFn,
    read_body: ReadFn,
    set_outcome: OutcomeFn,
    commit: CommitFn,
    cursor_close: CloseFn,
    flags: u32,
    list: Option<ListFn>,
    set_outcome_reply: Option<OutcomeReplyFn>,
}

/// The structs whose prefix the host copies; all-zero is a valid value of
/// each (zero integers, NULL pointers, `None` function pointers).
trait Table {}
impl Table for odmr_plugin {}
impl Table for odmr_credentials_ops {}
impl Table for odmr_queue_ops {}

/// The host's copy of a plugin's table: its first `struct_size` bytes (as far
/// as this host knows the struct), the rest zero. So a host never reads past
/// the end of an older, smaller table, and fields appended after the
/// plugin's minor read as NULL.
///
/// # Safety
/// `ptr` must be valid for reads of `min(struct_size, size_of::<T>())` bytes.
unsafe fn read_prefix<T: Table>(ptr: *const T, struct_size: u32) -> T {
    let mut copy = std::mem::MaybeUninit::<T>::zeroed();
    let n = (struct_size as usize).min(std::mem::size_of::<T>());
    // SAFETY: `ptr` is readable for `n` bytes (caller), `copy` is writable for
    // `size_of::<T>() >= n` bytes, and they do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), copy.as_mut_ptr().cast::<u8>(), n) };
    // SAFETY: every byte is either copied from a valid `T` prefix or zero,
    // and zero is valid for every field of a `Table`.
    unsafe { copy.assume_init() }
}

/// The common head of `odmr_host` and `odmr_plugin`, the same in every major.
#[repr(C)]
struct Head {
    struct_size: u32,
    abi_major: u32,
    abi_minor: u32,
}

/// A plugin's table may be newer (larger) than this host's, never smaller
/// than ABI 1.0's.
fn check_size(what: &str, size: u32, minimum: usize) -> Result<(), Refusal> {
    if (size as usize) < minimum {
        return Err(Refusal::host(format!(
            "{what} struct_size {size} is smaller than the {minimum} bytes of ABI {ODMR_ABI_MAJOR}.0"
        )));
    }
    Ok(())
}

/// The lock of each non-thread-safe plugin, by descriptor address. Plugins
/// are never unloaded, so neither are their locks.
fn serial_lock(descriptor: *const odmr_plugin) -> &'static Mutex<()> {
    static LOCKS: Mutex<Vec<(usize, &'static Mutex<()>)>> = Mutex::new(Vec::new());
    let mut locks = LOCKS.lock().unwrap_or_else(PoisonError::into_inner);
    let key = descriptor as usize;
    if let Some((_, lock)) = locks.iter().find(|(k, _)| *k == key) {
        return lock;
    }
    let lock: &'static Mutex<()> = Box::leak(Box::new(Mutex::new(())));
    locks.push((key, lock));
    lock
}

/// A plugin whose descriptor passed the checks: what it is, and the
/// functions it serves.
pub struct Plugin {
    host: PluginHost,
    descriptor: *const odmr_plugin,
    name: String,
    version: Option<String>,
    abi_major: u32,
    abi_minor: u32,
    threadsafe: bool,
    instance_new: InstanceNewFn,
    check: Option<CheckFn>,
    credentials: Option<CredentialFns>,
    queue: Option<QueueFns>,
    /// Held around every call when the plugin is not thread-safe. Shared by
    /// all instances of the same plugin, so that a C plugin with global state
    /// serving both sections is never entered twice at once either.
    serial: Option<&'static Mutex<()>>,
}

// SAFETY: the descriptor pointer and the function pointers refer to the
// plugin's immutable statics, valid until exit; calls through them go through
// `enter`, which serialises them unless the plugin declared ODMR_F_THREADSAFE.
unsafe impl Send for Plugin {}
// SAFETY: as above.
unsafe impl Sync for Plugin {}

impl Plugin {
    /// Call `init` with `host`, then check the descriptor it returns, once:
    /// major, sizes, name, `instance_new`, and each table it offers complete.
    pub fn load(host: PluginHost, init: odmr_plugin_init_fn) -> Result<Arc<Plugin>, Refusal> {
        let mut descriptor: *const odmr_plugin = std::ptr::null();
        // SAFETY: `init` has the `odmr_plugin_init` signature (by type for
        // built-ins, by symbol name for loaded objects); both pointers are valid.
        let status = unsafe { init(host.raw, &mut descriptor) };
        if status == ODMR_VERSION {
            return Err(Refusal {
                status: Some(status),
                reason: format!(
                    "odmr_plugin_init refused this odmrd's ABI {}.{} (ODMR_VERSION): the plugin was built \
                     for another ABI major",
                    host.raw.abi_major, host.raw.abi_minor
                ),
            });
        }
        if status != ODMR_OK {
            return Err(Refusal {
                status: Some(status),
                reason: format!("odmr_plugin_init failed: {}", Status::from_raw(status)),
            });
        }
        if descriptor.is_null() {
            return Err(Refusal::host("odmr_plugin_init returned no descriptor"));
        }
        // SAFETY: on ODMR_OK the plugin stored a pointer to its static descriptor.
        let plugin = unsafe { Plugin::checked(host, descriptor) }?;
        let _ = host.tag.name.set(plugin.name.clone());
        Ok(Arc::new(plugin))
    }

    /// # Safety
    /// `descriptor` must be non-null and point to at least `struct_size`
    /// readable bytes that stay valid until exit, as `odmr_plugin_init`
    /// promised on ODMR_OK.
    unsafe fn checked(host: PluginHost, descriptor: *const odmr_plugin) -> Result<Plugin, Refusal> {
        // SAFETY: the first word is `struct_size` in every major.
        let struct_size = unsafe { descriptor.cast::<u32>().read_unaligned() };
        if (struct_size as usize) < std::mem::size_of::<Head>() {
            return Err(Refusal::host(format!(
                "odmr_plugin struct_size {struct_size} is too small to hold even the ABI version"
            )));
        }
        // SAFETY: the plugin promised `struct_size` bytes, at least a `Head`.
        let head = unsafe { descriptor.cast::<Head>().read_unaligned() };
        if head.abi_major != ODMR_ABI_MAJOR {
            return Err(Refusal::host(format!(
                "built for ABI major {} (version {}.{}), this odmrd speaks major {ODMR_ABI_MAJOR} only; \
                 rebuild the plugin against this odmrd's odmr_api.h",
                head.abi_major, head.abi_major, head.abi_minor
            )));
        }
        check_size("odmr_plugin", struct_size, ODMR_PLUGIN_V1_0_SIZE)?;
        // SAFETY: at least the v1.0 size is readable (checked), and we read no
        // more than `struct_size`.
        let d = unsafe { read_prefix(descriptor, struct_size) };
        let (false, Some(instance_new)) = (d.name.is_null(), d.instance_new) else {
            return Err(Refusal::host("descriptor lacks a name or instance_new"));
        };
        // SAFETY: the name is a NUL-terminated static string per the ABI (checked non-null).
        let name = unsafe { CStr::from_ptr(d.name) }.to_string_lossy().into_owned();
        // SAFETY: the version is a NUL-terminated static string per the ABI, or NULL.
        let version = unsafe { d.version.as_ref().map(|v| CStr::from_ptr(v).to_string_lossy().into_owned()) };
        // SAFETY: a non-null table pointer is a static of the plugin per the ABI.
        let credentials = (!d.credentials.is_null()).then(|| unsafe { check_credentials(d.credentials) });
        // SAFETY: as above.
        let queue = (!d.queue.is_null()).then(|| unsafe { check_queue(d.queue) });
        let (credentials, queue) = (credentials.transpose()?, queue.transpose()?);
        let threadsafe = d.flags & ODMR_F_THREADSAFE != 0;
        Ok(Plugin {
            host,
            descriptor,
            name,
            version,
            abi_major: head.abi_major,
            abi_minor: head.abi_minor,
            threadsafe,
            instance_new,
            check: d.check,
            credentials,
            queue,
            serial: (!threadsafe).then(|| serial_lock(descriptor)),
        })
    }

    /// The plugin's name, from its descriptor.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's version, if it gave one.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }

    /// The ABI (major, minor) the plugin was built for.
    pub fn abi(&self) -> (u32, u32) {
        (self.abi_major, self.abi_minor)
    }

    /// Did the plugin declare ODMR_F_THREADSAFE?
    pub fn threadsafe(&self) -> bool {
        self.threadsafe
    }

    /// Does it serve `[credentials]`?
    pub fn serves_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Does it serve `[queue]`?
    pub fn serves_queue(&self) -> bool {
        self.queue.is_some()
    }

    /// The plugin's own descriptor, for tests that drive its tables raw.
    /// Fields beyond its `struct_size` must not be read.
    pub fn raw_descriptor(&self) -> *const odmr_plugin {
        self.descriptor
    }

    /// Create an instance from `settings`, the lines of its ini section, in
    /// order. A refusal carries the plugin's status and its reason.
    pub fn new_instance<K: AsRef<str>, V: AsRef<str>>(
        self: &Arc<Self>,
        settings: &[(K, V)],
    ) -> Result<Instance, Refusal> {
        let kvs: Vec<OdmrKv> = settings
            .iter()
            .map(|(k, v)| OdmrKv {
                key: OdmrStr::from_bytes(k.as_ref().as_bytes()),
                value: OdmrStr::from_bytes(v.as_ref().as_bytes()),
            })
            .collect();
        let (mut raw, mut err, mut err_len) = (std::ptr::null_mut(), vec![0u8; 1024], 0usize);
        // SAFETY: the host lives until exit; `kvs` (borrowing `settings`),
        // `raw`, `err` and `err_len` are valid for the call.
        let status = unsafe {
            (self.instance_new)(
                self.host.raw,
                kvs.as_ptr(),
                kvs.len(),
                &mut raw,
                err.as_mut_ptr(),
                err.len(),
                &mut err_len,
            )
        };
        if status == ODMR_OK && !raw.is_null() {
            return Ok(Instance { inner: Arc::new(Live { plugin: self.clone(), raw }) });
        }
        let shown = err_len.min(err.len());
        let mut reason = String::from_utf8_lossy(&err[..shown]).trim().to_string();
        if err_len > shown {
            reason.push_str(" (truncated)");
        }
        let status = if status == ODMR_OK { ODMR_INTERNAL } else { status };
        if reason.is_empty() {
            reason = format!("{} (the plugin gave no reason)", Status::from_raw(status));
        }
        Err(Refusal { status: Some(status), reason })
    }
}

/// # Safety
/// `table` must point to a table of at least the size its first word says,
/// valid until exit (a plugin's static).
unsafe fn check_credentials(table: *const odmr_credentials_ops) -> Result<CredentialFns, Refusal> {
    // SAFETY: the first word of every table is its size.
    let size = unsafe { table.cast::<u32>().read_unaligned() };
    check_size("odmr_credentials_ops", size, ODMR_CREDENTIALS_OPS_V1_0_SIZE)?;
    // SAFETY: the table is at least as large as it says (v1.0 minimum checked).
    let ops = unsafe { read_prefix(table, size) };
    match ops.list_domains {
        Some(list_domains) if ops.lookup_secret.is_some() || ops.verify_cram_md5.is_some() => {
            Ok(CredentialFns {
                lookup_secret: ops.lookup_secret,
                verify_cram_md5: ops.verify_cram_md5,
                list_domains,
                verify_password: ops.verify_password,
                allowed_networks: ops.allowed_networks,
                list_accounts: ops.list_accounts,
            })
        }
        _ => Err(Refusal::host("credentials operations are incomplete")),
    }
}

/// # Safety
/// As for `check_credentials`.
unsafe fn check_queue(table: *const odmr_queue_ops) -> Result<QueueFns, Refusal> {
    // SAFETY: the first word of every table is its size.
    let size = unsafe { table.cast::<u32>().read_unaligned() };
    check_size("odmr_queue_ops", size, ODMR_QUEUE_OPS_V1_0_SIZE)?;
    // SAFETY: as in `check_credentials`.
    let ops = unsafe { read_prefix(table, size) };
    let incomplete = || Refusal::host("queue operations are incomplete");
    Ok(QueueFns {
        has_pending: ops.has_pending.ok_or_else(incomplete)?,
        cursor_open: ops.cursor_open.ok_or_else(incomplete)?,
        cursor_next: ops.cursor_next.ok_or_else(incomplete)?,
        read_body: ops.read_body.ok_or_else(incomplete)?,
        set_outcome: ops.set_outcome.ok_or_else(incomplete)?,
        commit: ops.commit.ok_or_else(incomplete)?,
        cursor_close: ops.cursor_close.ok_or_else(incomplete)?,
        flags: ops.flags,
        list: ops.list,
        set_outcome_reply: ops.set_outcome_reply,
    })
}

struct Live {
    plugin: Arc<Plugin>,
    raw: *mut odmr_instance,
}

/// One live plugin instance. Never freed: odmrd exits with its plugins
/// loaded, and `instance_free` is optional in the ABI.
#[derive(Clone)]
pub struct Instance {
    inner: Arc<Live>,
}

// SAFETY: the instance pointer is only used through `enter`, which serialises
// calls unless the plugin declared ODMR_F_THREADSAFE, i.e. promised that its
// instance functions may run concurrently on any thread.
unsafe impl Send for Live {}
// SAFETY: as above.
unsafe impl Sync for Live {}

impl Instance {
    /// The plugin this is an instance of.
    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.inner.plugin
    }

    /// The raw handle, for tests that drive the plugin's tables directly.
    pub fn raw(&self) -> *mut odmr_instance {
        self.inner.raw
    }

    /// Take the plugin's lock if it needs one.
    fn enter(&self) -> Option<MutexGuard<'_, ()>> {
        self.inner.plugin.serial.map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Map a status from this plugin, logging (through the plugin's log,
    /// with its name) the ones an operator must see.
    fn failure(&self, what: &str, raw: odmr_status) -> Status {
        let status = Status::from_raw(raw);
        if matches!(status, Status::Panic | Status::Internal | Status::InvalidArgument | Status::Version) {
            self.inner.plugin.host.tag.log(LogLevel::Error, &format!("call={what} status={status}"));
        }
        status
    }

    /// ABI 1.1: the plugin's deeper checks (for `--check-config`): each
    /// finding with its level. `Unsupported` when the plugin has no `check`.
    pub fn check(&self) -> Result<Vec<(LogLevel, String)>, Status> {
        unsafe extern "C" fn collect(ctx: *mut c_void, level: i32, message: OdmrStr) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `ctx` is the Vec passed below, alive for the call;
                // `message` is borrowed for this callback.
                let (out, bytes) =
                    unsafe { (&mut *ctx.cast::<Vec<(LogLevel, String)>>(), message.as_bytes()) };
                out.push((LogLevel::from_raw(level), String::from_utf8_lossy(bytes).into_owned()));
            }));
        }
        let Some(check) = self.inner.plugin.check else { return Err(Status::Unsupported) };
        let mut findings: Vec<(LogLevel, String)> = Vec::new();
        let status = {
            let _serial = self.enter();
            // SAFETY: instance alive; the callback context outlives the call.
            unsafe { check(self.inner.raw, (&mut findings as *mut Vec<(LogLevel, String)>).cast(), collect) }
        };
        match status {
            ODMR_OK => Ok(findings),
            other => Err(self.failure("check", other)),
        }
    }

    /// The instance as a credential store, if its plugin serves one.
    pub fn credentials(&self) -> Option<CredentialStore> {
        let fns = self.inner.plugin.credentials?;
        Some(CredentialStore { instance: self.clone(), fns })
    }

    /// The instance as a mail queue, if its plugin serves one.
    pub fn queue(&self) -> Option<MailQueue> {
        let fns = self.inner.plugin.queue?;
        Some(MailQueue { instance: self.clone(), fns })
    }
}

/// A credential store: an instance of a plugin that serves `[credentials]`.
#[derive(Clone)]
pub struct CredentialStore {
    instance: Instance,
    fns: CredentialFns,
}

impl CredentialStore {
    /// The plugin's name, for logs.
    pub fn name(&self) -> &str {
        self.instance.plugin().name()
    }

    /// The instance behind it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// `user`'s secret. `Unsupported` when it has none usable here.
    pub fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        let Some(lookup) = self.fns.lookup_secret else { return Err(Status::Unsupported) };
        let inst = &self.instance;
        let mut buf = vec![0u8; 256];
        loop {
            let (mut kind, mut len) = (0u32, 0usize);
            let status = {
                let _serial = inst.enter();
                let user = OdmrStr::from_bytes(user.as_bytes());
                // SAFETY: instance alive; `user` and `buf` valid for the call.
                unsafe { lookup(inst.inner.raw, user, &mut kind, buf.as_mut_ptr(), buf.len(), &mut len) }
            };
            match status {
                ODMR_OK if len <= buf.len() => {
                    buf.truncate(len);
                    return match kind {
                        ODMR_SECRET_PLAIN => Ok(Secret::Plain(buf)),
                        ODMR_SECRET_CRAM_MD5_CONTEXT => <[u8; 32]>::try_from(buf.as_slice())
                            .map(Secret::CramMd5Context)
                            .map_err(|_| inst.failure("lookup_secret", ODMR_INTERNAL)),
                        _ => Err(inst.failure("lookup_secret", ODMR_INTERNAL)),
                    };
                }
                ODMR_BUFFER_TOO_SMALL if len > buf.len() && len <= 1 << 20 => buf.resize(len, 0),
                ODMR_OK | ODMR_BUFFER_TOO_SMALL => return Err(inst.failure("lookup_secret", ODMR_INTERNAL)),
                other => return Err(inst.failure("lookup_secret", other)),
            }
        }
    }

    /// Ask the store to verify a CRAM-MD5 digest (stores that hide secrets).
    pub fn verify_cram_md5(&self, user: &str, challenge: &str, digest: &str) -> Result<bool, Status> {
        let Some(verify) = self.fns.verify_cram_md5 else { return Err(Status::Unsupported) };
        let s = |t: &str| OdmrStr::from_bytes(t.as_bytes());
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; strings valid for the call.
            unsafe { verify(self.instance.inner.raw, s(user), s(challenge), s(digest)) }
        };
        match status {
            ODMR_OK => Ok(true),
            ODMR_DENIED => Ok(false),
            other => Err(self.instance.failure("verify_cram_md5", other)),
        }
    }

    /// ABI 1.1: ask the store to verify a clear-text password (hash-only
    /// stores). `Unsupported` when the plugin cannot.
    pub fn verify_password(&self, user: &str, password: &[u8]) -> Result<bool, Status> {
        let Some(verify) = self.fns.verify_password else { return Err(Status::Unsupported) };
        let status = {
            let _serial = self.instance.enter();
            let (user, password) = (OdmrStr::from_bytes(user.as_bytes()), OdmrStr::from_bytes(password));
            // SAFETY: instance alive; strings valid for the call.
            unsafe { verify(self.instance.inner.raw, user, password) }
        };
        match status {
            ODMR_OK => Ok(true),
            ODMR_DENIED => Ok(false),
            other => Err(self.instance.failure("verify_password", other)),
        }
    }

    /// ABI 1.1: every account with its domains, quota and contact;
    /// `Unsupported` when the plugin cannot enumerate them.
    pub fn accounts(&self) -> Result<Vec<crate::kit::Account>, Status> {
        unsafe extern "C" fn collect(
            ctx: *mut c_void,
            user: OdmrStr,
            domains: OdmrStr,
            quota: u64,
            contact: OdmrStr,
        ) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `ctx` is the Vec passed below, alive for the call;
                // the strings are borrowed for this callback.
                let (out, user, domains, contact) = unsafe {
                    (
                        &mut *ctx.cast::<Vec<crate::kit::Account>>(),
                        user.as_bytes(),
                        domains.as_bytes(),
                        contact.as_bytes(),
                    )
                };
                let domains = String::from_utf8_lossy(domains);
                out.push(crate::kit::Account {
                    user: String::from_utf8_lossy(user).into_owned(),
                    domains: domains
                        .split(',')
                        .filter(|d| !d.is_empty())
                        .map(str::to_ascii_lowercase)
                        .collect(),
                    quota: (quota > 0).then_some(quota),
                    contact: (!contact.is_empty()).then(|| String::from_utf8_lossy(contact).into_owned()),
                });
            }));
        }
        let Some(list) = self.fns.list_accounts else { return Err(Status::Unsupported) };
        let mut accounts = Vec::new();
        let status = {
            let _serial = self.instance.enter();
            let ctx = (&mut accounts as *mut Vec<crate::kit::Account>).cast();
            // SAFETY: instance alive; the callback context outlives the call.
            unsafe { list(self.instance.inner.raw, ctx, collect) }
        };
        match status {
            ODMR_OK => Ok(accounts),
            other => Err(self.instance.failure("list_accounts", other)),
        }
    }

    /// The domains `user` may collect, lower-cased.
    pub fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        self.strings("list_domains", self.fns.list_domains, user)
    }

    /// ABI 1.1: the client networks `user` may log in from, as the plugin
    /// wrote them; None when it sets no restriction (or has no such call),
    /// an empty list when the user may log in from nowhere.
    pub fn allowed_networks(&self, user: &str) -> Result<Option<Vec<String>>, Status> {
        let Some(call) = self.fns.allowed_networks else { return Ok(None) };
        match self.strings("allowed_networks", call, user) {
            Ok(nets) if nets.is_empty() => Ok(None),
            Ok(nets) => Ok(Some(nets)),
            Err(Status::Denied) => Ok(Some(Vec::new())),
            Err(status) => Err(status),
        }
    }

    /// A call that reports strings through an `odmr_domain_cb`, lower-cased.
    fn strings(&self, what: &str, call: ListDomainsFn, user: &str) -> Result<Vec<String>, Status> {
        unsafe extern "C" fn collect(ctx: *mut c_void, item: OdmrStr) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `ctx` is the Vec passed below, alive for the call;
                // `item` is borrowed for this callback.
                let (out, bytes) = unsafe { (&mut *ctx.cast::<Vec<String>>(), item.as_bytes()) };
                out.push(String::from_utf8_lossy(bytes).to_ascii_lowercase());
            }));
        }
        let mut items: Vec<String> = Vec::new();
        let status = {
            let _serial = self.instance.enter();
            let user = OdmrStr::from_bytes(user.as_bytes());
            let ctx = (&mut items as *mut Vec<String>).cast();
            // SAFETY: instance alive; the callback context outlives the call.
            unsafe { call(self.instance.inner.raw, user, ctx, collect) }
        };
        match status {
            ODMR_OK => Ok(items),
            other => Err(self.instance.failure(what, other)),
        }
    }
}

/// A mail queue: an instance of a plugin that serves `[queue]`.
#[derive(Clone)]
pub struct MailQueue {
    instance: Instance,
    fns: QueueFns,
}

fn borrowed(domains: &[String]) -> Vec<OdmrStr> {
    domains.iter().map(|d| OdmrStr::from_bytes(d.as_bytes())).collect()
}

impl MailQueue {
    /// The plugin's name, for logs.
    pub fn name(&self) -> &str {
        self.instance.plugin().name()
    }

    /// The instance behind it.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// ABI 1.1: may the host fetch the next envelope before committing the
    /// current one (`ODMR_QF_NEXT_BEFORE_COMMIT`)?
    pub fn next_before_commit(&self) -> bool {
        self.fns.flags & ODMR_QF_NEXT_BEFORE_COMMIT != 0
    }

    /// Is anything pending for `domains`?
    pub fn has_pending(&self, domains: &[String]) -> Result<bool, Status> {
        let list = borrowed(domains);
        let mut pending = 0u32;
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; `list` borrows `domains` for the call.
            unsafe {
                (self.fns.has_pending)(self.instance.inner.raw, list.as_ptr(), list.len(), &mut pending)
            }
        };
        match status {
            ODMR_OK => Ok(pending != 0),
            other => Err(self.instance.failure("has_pending", other)),
        }
    }

    /// Open a cursor over the messages pending for `domains`.
    pub fn open(&self, domains: &[String]) -> Result<QueueCursor, Status> {
        let list = borrowed(domains);
        let mut raw = std::ptr::null_mut();
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; `list` valid for the call.
            unsafe { (self.fns.cursor_open)(self.instance.inner.raw, list.as_ptr(), list.len(), &mut raw) }
        };
        match status {
            ODMR_OK if !raw.is_null() => {
                Ok(QueueCursor { queue: self.clone(), raw, _not_send: Default::default() })
            }
            ODMR_OK => Err(self.instance.failure("cursor_open", ODMR_INTERNAL)),
            other => Err(self.instance.failure("cursor_open", other)),
        }
    }

    /// ABI 1.1: the read-only listing of the messages pending for `domains`
    /// (empty: all the queue can enumerate), one [`Listed`] each, in the
    /// plugin's order. `Unsupported` when the plugin has no `list`.
    pub fn list(&self, domains: &[String], report: &mut dyn FnMut(Listed<'_>)) -> Result<(), Status> {
        let Some(list) = self.fns.list else { return Err(Status::Unsupported) };
        let mut builder = ListBuilder { report, current: None };
        let sink = odmr_list_sink {
            struct_size: std::mem::size_of::<odmr_list_sink>() as u32,
            ctx: (&mut builder as *mut ListBuilder<'_>).cast(),
            message: list_message,
            recipient: list_recipient,
            unreadable: list_unreadable,
        };
        let domains = borrowed(domains);
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; `domains`, `sink` and `builder` outlive the call.
            unsafe { list(self.instance.inner.raw, domains.as_ptr(), domains.len(), &sink) }
        };
        builder.flush();
        match status {
            ODMR_OK => Ok(()),
            other => Err(self.instance.failure("list", other)),
        }
    }
}

/// A listed message while its recipients arrive.
struct ListedMessage {
    domain: String,
    envelope: Envelope,
    last_replies: Vec<String>,
}

/// What `odmr_list_sink.ctx` points to during `MailQueue::list`.
struct ListBuilder<'r> {
    report: &'r mut dyn FnMut(Listed<'_>),
    current: Option<ListedMessage>,
}

impl ListBuilder<'_> {
    /// Report the message whose recipients are complete, if any.
    fn flush(&mut self) {
        if let Some(m) = self.current.take() {
            (self.report)(Listed::Message {
                domain: &m.domain,
                envelope: &m.envelope,
                last_replies: &m.last_replies,
            });
        }
    }
}

fn lossy(s: OdmrStr) -> String {
    // SAFETY: every string a plugin passes is borrowed for its callback.
    String::from_utf8_lossy(unsafe { s.as_bytes() }).into_owned()
}

/// # Safety
/// `ctx` must be the `ListBuilder` of the running `list` call.
unsafe fn list_builder<'a>(ctx: *mut c_void) -> &'a mut ListBuilder<'a> {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut *ctx.cast::<ListBuilder<'a>>() }
}

unsafe extern "C" fn list_message(
    ctx: *mut c_void,
    domain: OdmrStr,
    id: OdmrStr,
    sender: OdmrStr,
    size: u64,
    arrival: i64,
    flags: u32,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin calls back with our context during `list`.
        let b = unsafe { list_builder(ctx) };
        b.flush();
        let mut envelope = Envelope {
            id: lossy(id),
            sender: lossy(sender),
            size,
            arrival: arrival_from_raw(arrival),
            ..Envelope::default()
        };
        envelope.set_flags(flags);
        b.current = Some(ListedMessage { domain: lossy(domain), envelope, last_replies: Vec::new() });
    }));
}

unsafe extern "C" fn list_recipient(ctx: *mut c_void, address: OdmrStr, last_reply: OdmrStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `list_message`.
        let b = unsafe { list_builder(ctx) };
        if let Some(m) = b.current.as_mut() {
            m.envelope.recipients.push(lossy(address));
            m.last_replies.push(lossy(last_reply));
        }
    }));
}

unsafe extern "C" fn list_unreadable(ctx: *mut c_void, domain: OdmrStr, id: OdmrStr, reason: OdmrStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `list_message`.
        let b = unsafe { list_builder(ctx) };
        b.flush();
        let (domain, id, reason) = (lossy(domain), lossy(id), lossy(reason));
        (b.report)(Listed::Unreadable { domain: &domain, id: &id, reason: &reason });
    }));
}

/// An open queue cursor. Not `Send`: a cursor stays on the thread that
/// opened it. Dropping it closes it; a message not committed stays as it was.
pub struct QueueCursor {
    queue: MailQueue,
    raw: *mut odmr_cursor,
    _not_send: std::marker::PhantomData<*mut ()>,
}

/// What `odmr_envelope_sink.ctx` points to during `cursor_next`.
#[derive(Default)]
struct EnvelopeBuilder {
    envelope: Envelope,
}

/// # Safety
/// `ctx` must be the `EnvelopeBuilder` of the running `cursor_next` call.
unsafe fn envelope_of<'a>(ctx: *mut c_void) -> &'a mut Envelope {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut (*ctx.cast::<EnvelopeBuilder>()).envelope }
}

unsafe extern "C" fn sink_message(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the plugin calls back with our context during `cursor_next`.
        let e = unsafe { envelope_of(ctx) };
        (e.id, e.sender, e.size) = (lossy(id), lossy(sender), size);
    }));
}

unsafe extern "C" fn sink_recipient(ctx: *mut c_void, address: OdmrStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `sink_message`.
        unsafe { envelope_of(ctx) }.recipients.push(lossy(address));
    }));
}

unsafe extern "C" fn sink_message_details(
    ctx: *mut c_void,
    arrival: i64,
    envid: OdmrStr,
    ret: u32,
    flags: u32,
    wire_size: u64,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `sink_message`.
        let e = unsafe { envelope_of(ctx) };
        e.arrival = arrival_from_raw(arrival);
        e.envid = Some(lossy(envid)).filter(|s| !s.is_empty());
        e.ret = Ret::from_raw(ret);
        e.set_flags(flags);
        e.wire_size = Some(wire_size).filter(|&w| w > 0);
    }));
}

unsafe extern "C" fn sink_recipient_details(ctx: *mut c_void, notify: u32, orcpt: OdmrStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `sink_message`.
        let e = unsafe { envelope_of(ctx) };
        // The details belong to the recipient just reported; earlier ones
        // reported without details keep the defaults.
        let Some(index) = e.recipients.len().checked_sub(1) else { return };
        e.details.resize(index + 1, RecipientDetails::default());
        e.details[index] = RecipientDetails {
            notify: Notify::from_raw(notify),
            orcpt: Some(lossy(orcpt)).filter(|s| !s.is_empty()),
        };
    }));
}

impl QueueCursor {
    fn call(&self, what: &str, f: impl FnOnce(&QueueFns) -> odmr_status) -> Result<(), Status> {
        let status = {
            let _serial = self.queue.instance.enter();
            f(&self.queue.fns)
        };
        match status {
            ODMR_OK => Ok(()),
            other => Err(self.queue.instance.failure(what, other)),
        }
    }

    /// ABI 1.1: may [`QueueCursor::next_message`] be called before the current message is
    /// committed (the queue's `ODMR_QF_NEXT_BEFORE_COMMIT`)? Then `read_body` reads the newer
    /// message and outcomes and `commit` go to the older until its commit.
    pub fn next_before_commit(&self) -> bool {
        self.queue.next_before_commit()
    }

    /// The next message, or None when the queue has no more for this session.
    pub fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
        let mut builder = EnvelopeBuilder::default();
        let sink = odmr_envelope_sink {
            ctx: (&mut builder as *mut EnvelopeBuilder).cast(),
            message: sink_message,
            recipient: sink_recipient,
            message_details: Some(sink_message_details),
            recipient_details: Some(sink_recipient_details),
        };
        let status = {
            let _serial = self.queue.instance.enter();
            // SAFETY: the cursor is open; `sink` and `builder` outlive the call.
            unsafe { (self.queue.fns.cursor_next)(self.raw, &sink) }
        };
        match status {
            ODMR_OK => Ok(Some(builder.envelope)),
            ODMR_END => Ok(None),
            other => Err(self.queue.instance.failure("cursor_next", other)),
        }
    }

    /// Copy the next content bytes into `buf`; Ok(0) at the end.
    pub fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Status> {
        let mut len = 0usize;
        let status = {
            let _serial = self.queue.instance.enter();
            // SAFETY: the cursor is open; `buf` is writable for its length.
            unsafe { (self.queue.fns.read_body)(self.raw, buf.as_mut_ptr(), buf.len(), &mut len) }
        };
        match status {
            ODMR_OK if len > 0 && len <= buf.len() => Ok(len),
            ODMR_END => Ok(0),
            ODMR_OK => Err(self.queue.instance.failure("read_body", ODMR_INTERNAL)),
            other => Err(self.queue.instance.failure("read_body", other)),
        }
    }

    /// Record recipient `index`'s outcome.
    pub fn set_outcome(&mut self, index: usize, outcome: Outcome) -> Result<(), Status> {
        let raw = self.raw;
        // SAFETY: the cursor is open.
        self.call("set_outcome", |fns| unsafe { (fns.set_outcome)(raw, index, outcome.to_raw()) })
    }

    /// Record recipient `index`'s outcome with the customer's reply, for
    /// queues that keep it (ABI 1.1); others get `set_outcome`.
    pub fn set_outcome_with_reply(
        &mut self,
        index: usize,
        outcome: Outcome,
        reply: &str,
    ) -> Result<(), Status> {
        let Some(with_reply) = self.queue.fns.set_outcome_reply else {
            return self.set_outcome(index, outcome);
        };
        let raw = self.raw;
        let reply = OdmrStr::from_bytes(reply.as_bytes());
        // SAFETY: the cursor is open; `reply` is borrowed for the call.
        self.call("set_outcome_reply", |_| unsafe { with_reply(raw, index, outcome.to_raw(), reply) })
    }

    /// Apply the recorded outcomes of the current message.
    pub fn commit(&mut self) -> Result<(), Status> {
        let raw = self.raw;
        // SAFETY: the cursor is open.
        self.call("commit", |fns| unsafe { (fns.commit)(raw) })
    }
}

impl Drop for QueueCursor {
    fn drop(&mut self) {
        let _serial = self.queue.instance.enter();
        // SAFETY: the cursor is open and is not used again.
        unsafe { (self.queue.fns.cursor_close)(self.raw) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    unsafe extern "C" fn has_pending(_: *mut odmr_instance, _: *const OdmrStr, _: usize, _: *mut u32) -> i32 {
        ODMR_OK
    }
    unsafe extern "C" fn open(
        _: *mut odmr_instance,
        _: *const OdmrStr,
        _: usize,
        _: *mut *mut odmr_cursor,
    ) -> i32 {
        ODMR_OK
    }
    unsafe extern "C" fn next(_: *mut odmr_cursor, _: *const odmr_envelope_sink) -> i32 {
        ODMR_END
    }
    unsafe extern "C" fn read(_: *mut odmr_cursor, _: *mut u8, _: usize, _: *mut usize) -> i32 {
        ODMR_END
    }
    unsafe extern "C" fn outcome(_: *mut odmr_cursor, _: usize, _: i32) -> i32 {
        ODMR_OK
    }
    unsafe extern "C" fn commit(_: *mut odmr_cursor) -> i32 {
        ODMR_OK
    }
    unsafe extern "C" fn close(_: *mut odmr_cursor) {}

    fn queue_ops(struct_size: usize) -> odmr_queue_ops {
        odmr_queue_ops {
            struct_size: struct_size as u32,
            has_pending: Some(has_pending),
            cursor_open: Some(open),
            cursor_next: Some(next),
            read_body: Some(read),
            set_outcome: Some(outcome),
            commit: Some(commit),
            cursor_close: Some(close),
            flags: ODMR_QF_NEXT_BEFORE_COMMIT,
            list: None,
            set_outcome_reply: None,
        }
    }

    #[test]
    fn fields_beyond_a_plugins_struct_size_are_never_read() {
        // A 1.0 plugin's table seen by this host: the 1.1 `flags` behind it
        // in memory reads as 0.
        let older = queue_ops(ODMR_QUEUE_OPS_V1_0_SIZE);
        // SAFETY (here and below): whole tables, readable for any prefix.
        let fns = unsafe { check_queue(&older) }.unwrap();
        assert_eq!(fns.flags, 0);
        // As a later host sees an older plugin: pretend `cursor_close` were
        // appended after the plugin's minor. The copy has it NULL although
        // the memory behind the plugin's table holds a pointer.
        let oldest = queue_ops(offset_of!(odmr_queue_ops, cursor_close));
        // SAFETY: `oldest` is a whole table, readable for any prefix.
        let copy = unsafe { read_prefix(&oldest, oldest.struct_size) };
        assert!(copy.commit.is_some() && copy.cursor_close.is_none());
        assert_eq!(copy.struct_size, oldest.struct_size);
    }

    #[test]
    fn a_larger_table_from_a_newer_minor_is_read_up_to_what_the_host_knows() {
        let newer = queue_ops(size_of::<odmr_queue_ops>() + 64);
        // SAFETY: read_prefix reads at most size_of::<odmr_queue_ops>() bytes.
        let copy = unsafe { read_prefix(&newer, newer.struct_size) };
        assert!(copy.cursor_close.is_some() && copy.has_pending.is_some());
        assert_eq!(unsafe { check_queue(&newer) }.unwrap().flags, ODMR_QF_NEXT_BEFORE_COMMIT);
    }

    #[test]
    fn tables_are_checked_complete_and_at_least_v1_0_sized() {
        let mut t = queue_ops(size_of::<odmr_queue_ops>());
        t.commit = None;
        // SAFETY: whole tables, readable for any prefix.
        assert_eq!(unsafe { check_queue(&t) }.err().unwrap().reason, "queue operations are incomplete");
        let small = queue_ops(ODMR_QUEUE_OPS_V1_0_SIZE - 8);
        // SAFETY: as above.
        assert!(unsafe { check_queue(&small) }.err().unwrap().reason.contains("smaller than the"));
    }

    #[test]
    fn the_v1_0_minimums_are_the_ends_of_the_last_v1_0_fields() {
        // ABI 1.1 appended fields after each of these.
        assert_eq!(ODMR_PLUGIN_V1_0_SIZE, offset_of!(odmr_plugin, check));
        assert_eq!(ODMR_QUEUE_OPS_V1_0_SIZE, offset_of!(odmr_queue_ops, flags));
        assert_eq!(ODMR_CREDENTIALS_OPS_V1_0_SIZE, offset_of!(odmr_credentials_ops, verify_password));
        assert_eq!(ODMR_ENVELOPE_SINK_V1_0_SIZE, offset_of!(odmr_envelope_sink, message_details));
        assert_eq!(ODMR_HOST_V1_0_SIZE, size_of::<odmr_host>());
    }

    #[test]
    fn instances_of_one_plugin_share_one_lock() {
        let (a, b) = (1usize as *const odmr_plugin, 2usize as *const odmr_plugin);
        assert!(std::ptr::eq(serial_lock(a), serial_lock(a)));
        assert!(!std::ptr::eq(serial_lock(a), serial_lock(b)));
    }
}
