//! Backends, seen from the host: finding a plugin, checking its descriptor,
//! creating its instance, and safe wrappers over its C function tables.
//!
//! Every backend, built in (`builtin:NAME`) or loaded from a `.so`, is reached
//! through the same `odmr_plugin` descriptor, so the ABI is on every code path.
//! This module owns all `unsafe` calls into plugins and the thread contract:
//! a plugin without `ODMR_F_THREADSAFE` is entered by one thread at a time
//! (one lock per plugin, shared by its instances and cursors). The host reads
//! no descriptor or table field beyond the plugin's `struct_size`.
//! It knows nothing about SMTP; mapping statuses to replies is the session's.

use crate::config::{Config, ConfigError, PluginConfig, PluginSource};
use crate::log::{self, Level};
use odmr_api::ffi::*;
use odmr_api::{Envelope, LogLevel, Outcome, Secret, Status};
use std::ffi::{c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// The backends linked into the binary, by `builtin:` name.
const BUILTINS: &[(&str, odmr_plugin_init_fn)] = &[
    ("passwd", odmr_backend_passwd::passwd_plugin_init),
    ("maildir", odmr_backend_maildir::maildir_plugin_init),
    ("vpopmail", odmr_backend_vpopmail::vpopmail_plugin_init),
    ("exim", odmr_backend_exim::exim_plugin_init),
];

/// Which section a plugin serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `[credentials]`
    Credentials,
    /// `[queue]`
    Queue,
}

impl Kind {
    fn section(self) -> &'static str {
        match self {
            Kind::Credentials => "credentials",
            Kind::Queue => "queue",
        }
    }
}

/// Why a plugin could not be set up. Always names the plugin and the reason.
#[derive(Debug)]
pub struct LoadError {
    /// `builtin:NAME` or the path.
    pub plugin: String,
    /// The section it was configured in.
    pub section: &'static str,
    /// What went wrong.
    pub reason: String,
    /// The reason is the backend's verdict on its settings (they name their keys as `key 'K'`,
    /// the convention of `odmr_api::settings`), not a failure to load the plugin itself.
    pub about_settings: bool,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] plugin {}: {}", self.section, self.plugin, self.reason)
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// The error located in `config` like the parser's own: a failure to load names the `plugin`
    /// key's line; a backend's verdict on its settings names the key it mentions (`key 'file'`)
    /// and that key's line, or the section's line when it names none (a missing key).
    pub fn locate(&self, config: &Config) -> ConfigError {
        if !self.about_settings {
            return config.error(self.section, Some("plugin"), format!("{}: {}", self.plugin, self.reason));
        }
        let (key, message) = split_key(&self.reason);
        let message = format!("{message} (backend {})", self.plugin);
        let given = key.as_deref().is_some_and(|k| config.line(self.section, Some(k)).is_some());
        match key {
            Some(key) if given => config.error(self.section, Some(&key), message),
            Some(key) => {
                let mut e = config.error(self.section, None, message);
                e.key = Some(key);
                e
            }
            None => config.error(self.section, None, message),
        }
    }
}

/// The key a backend's message names as `key 'K'`, and the message without the name:
/// `key 'file': cannot read ...` → (`file`, `cannot read ...`),
/// `unknown key 'x' (known: file)` → (`x`, `unknown key (known: file)`).
fn split_key(reason: &str) -> (Option<String>, String) {
    let Some(at) = reason.find("key '") else { return (None, reason.to_string()) };
    let rest = &reason[at + "key '".len()..];
    let Some(end) = rest.find('\'') else { return (None, reason.to_string()) };
    let key = &rest[..end];
    let after = &rest[end + 1..];
    let message = match after.strip_prefix(": ") {
        Some(tail) if at == 0 => tail.to_string(),
        _ => format!("{}key{after}", &reason[..at]),
    };
    (Some(key.to_string()), message)
}

/// One live plugin instance.
struct Instance {
    name: String,
    /// `NAME VERSION from LABEL, ABI x.y`, for the start-up line.
    loaded: String,
    /// The host's copy of the credential table, if this instance serves one.
    credentials: Option<&'static odmr_credentials_ops>,
    /// The host's copy of the queue table, if this instance serves one.
    queue: Option<&'static odmr_queue_ops>,
    raw: *mut odmr_instance,
    /// Held around every call when the plugin is not thread-safe. Shared by
    /// all instances of the same plugin, so that a C plugin with global state
    /// serving both sections is never entered twice at once either.
    serial: Option<&'static Mutex<()>>,
}

// SAFETY: the instance pointer is only used through `enter`, which serialises
// calls unless the plugin declared ODMR_F_THREADSAFE, i.e. promised that its
// instance functions may run concurrently on any thread.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Take the plugin's lock if it needs one.
    fn enter(&self) -> Option<MutexGuard<'_, ()>> {
        self.serial.map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Map a status from this plugin, logging the ones an operator must see.
    fn failure(&self, what: &str, raw: odmr_status) -> Status {
        let status = Status::from_raw(raw);
        if matches!(status, Status::Panic | Status::Internal | Status::InvalidArgument | Status::Version) {
            log::Event::new("plugin-failed")
                .field("plugin", &self.name)
                .field("call", what)
                .field("status", status)
                .error();
        }
        status
    }
}

/// The lock of each non-thread-safe plugin, by descriptor address. Plugins
/// are never unloaded, so neither are their locks.
fn serial_lock(descriptor: *const odmr_plugin) -> &'static Mutex<()> {
    static LOCKS: Mutex<Vec<(usize, &'static Mutex<()>)>> = Mutex::new(Vec::new());
    let mut locks = LOCKS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let key = descriptor as usize;
    if let Some((_, lock)) = locks.iter().find(|(k, _)| *k == key) {
        return lock;
    }
    let lock: &'static Mutex<()> = Box::leak(Box::new(Mutex::new(())));
    locks.push((key, lock));
    lock
}

fn level_of(raw: i32) -> Level {
    match LogLevel::from_raw(raw) {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
    }
}

/// What the `ctx` of a plugin's host struct points to: how its log lines are
/// tagged. The configured label until the descriptor names the plugin.
struct LogTag {
    label: String,
    name: OnceLock<String>,
}

/// The host's `log` up-call: one line, tagged with the plugin's name.
unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the leaked `LogTag` of this plugin's host struct;
        // `msg` is valid for `len` bytes for this call.
        let (tag, text) = unsafe { (&*ctx.cast::<LogTag>(), OdmrStr { ptr: msg, len }.as_bytes()) };
        let name = tag.name.get().unwrap_or(&tag.label);
        // The plugin's own text follows the host's fields; during a session it carries its id.
        let session = log::session_prefix();
        log::log(level_of(level), &format!("{session}plugin={name} {}", String::from_utf8_lossy(text)));
    }));
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

/// Check a descriptor and copy the parts of it this host reads.
///
/// # Safety
/// `descriptor` must be non-null and point to at least `struct_size` readable
/// bytes, as `odmr_plugin_init` promised on ODMR_OK.
unsafe fn check_descriptor(
    descriptor: *const odmr_plugin,
    kind: Kind,
) -> Result<(odmr_plugin, Option<odmr_credentials_ops>, Option<odmr_queue_ops>), String> {
    // SAFETY: the first word is `struct_size` in every major.
    let struct_size = unsafe { descriptor.cast::<u32>().read_unaligned() };
    if (struct_size as usize) < std::mem::size_of::<Head>() {
        return Err(format!(
            "odmr_plugin struct_size {struct_size} is too small to hold even the ABI version"
        ));
    }
    // SAFETY: the plugin promised `struct_size` bytes, at least a `Head`.
    let head = unsafe { descriptor.cast::<Head>().read_unaligned() };
    if head.abi_major != ODMR_ABI_MAJOR {
        return Err(format!(
            "built for ABI major {} (version {}.{}), this odmrd speaks major {ODMR_ABI_MAJOR} only; \
             rebuild the plugin against this odmrd's odmr_api.h",
            head.abi_major, head.abi_major, head.abi_minor
        ));
    }
    check_size("odmr_plugin", struct_size, ODMR_PLUGIN_V1_0_SIZE)?;
    // SAFETY: at least the v1.0 size is readable (checked), and we read no
    // more than `struct_size`.
    let plugin = unsafe { read_prefix(descriptor, struct_size) };
    if plugin.name.is_null() || plugin.instance_new.is_none() {
        return Err("descriptor lacks a name or instance_new".into());
    }
    let (mut credentials, mut queue) = (None, None);
    match kind {
        Kind::Credentials => {
            if plugin.credentials.is_null() {
                return Err("is not a credentials backend (it has no credentials operations)".into());
            }
            // SAFETY: a non-null table pointer is static per the ABI; its
            // first word is its size.
            let size = unsafe { plugin.credentials.cast::<u32>().read_unaligned() };
            check_size("odmr_credentials_ops", size, ODMR_CREDENTIALS_OPS_V1_0_SIZE)?;
            // SAFETY: the table is at least as large as it says (v1.0 minimum checked).
            let ops = unsafe { read_prefix(plugin.credentials, size) };
            if ops.list_domains.is_none() || (ops.lookup_secret.is_none() && ops.verify_cram_md5.is_none()) {
                return Err("credentials operations are incomplete".into());
            }
            credentials = Some(ops);
        }
        Kind::Queue => {
            if plugin.queue.is_null() {
                return Err("is not a queue backend (it has no queue operations)".into());
            }
            // SAFETY: as above.
            let size = unsafe { plugin.queue.cast::<u32>().read_unaligned() };
            check_size("odmr_queue_ops", size, ODMR_QUEUE_OPS_V1_0_SIZE)?;
            // SAFETY: as above.
            let ops = unsafe { read_prefix(plugin.queue, size) };
            let complete = ops.has_pending.is_some()
                && ops.cursor_open.is_some()
                && ops.cursor_next.is_some()
                && ops.read_body.is_some()
                && ops.set_outcome.is_some()
                && ops.commit.is_some()
                && ops.cursor_close.is_some();
            if !complete {
                return Err("queue operations are incomplete".into());
            }
            queue = Some(ops);
        }
    }
    Ok((plugin, credentials, queue))
}

/// Resolve, initialise and check the plugin of `config`, then create its
/// instance. Plugins are never unloaded: their code lives until exit.
fn instantiate(config: &PluginConfig, kind: Kind) -> Result<Instance, LoadError> {
    let (label, init) = match &config.source {
        PluginSource::Builtin(name) => {
            let label = format!("builtin:{name}");
            let Some((_, init)) = BUILTINS.iter().find(|(n, _)| n == name) else {
                let known: Vec<_> = BUILTINS.iter().map(|(n, _)| format!("builtin:{n}")).collect();
                return Err(LoadError {
                    plugin: label,
                    section: kind.section(),
                    reason: format!("no such built-in backend (known: {})", known.join(", ")),
                    about_settings: false,
                });
            };
            (label, *init)
        }
        PluginSource::Path(path) => (path.display().to_string(), open_shared_object(path, kind)?),
    };
    let fail = |reason: String| LoadError {
        plugin: label.clone(),
        section: kind.section(),
        reason,
        about_settings: false,
    };

    // The host struct and the tag it logs with live as long as the plugin.
    let tag: &'static LogTag = Box::leak(Box::new(LogTag { label: label.clone(), name: OnceLock::new() }));
    let host: &'static odmr_host = Box::leak(Box::new(odmr_host {
        struct_size: std::mem::size_of::<odmr_host>() as u32,
        abi_major: ODMR_ABI_MAJOR,
        abi_minor: ODMR_ABI_MINOR,
        ctx: (tag as *const LogTag).cast_mut().cast(),
        log: Some(host_log),
    }));

    let mut descriptor: *const odmr_plugin = std::ptr::null();
    // SAFETY: `init` has the `odmr_plugin_init` signature (checked by type for
    // built-ins, by symbol name for loaded objects); both pointers are valid.
    let status = unsafe { init(host, &mut descriptor) };
    if status == ODMR_VERSION {
        return Err(fail(format!(
            "odmr_plugin_init refused this odmrd's ABI {ODMR_ABI_MAJOR}.{ODMR_ABI_MINOR} (ODMR_VERSION): \
             the plugin was built for another ABI major"
        )));
    }
    if status != ODMR_OK {
        return Err(fail(format!("odmr_plugin_init failed: {}", Status::from_raw(status))));
    }
    if descriptor.is_null() {
        return Err(fail("odmr_plugin_init returned no descriptor".into()));
    }
    // SAFETY: on ODMR_OK the plugin stored a pointer to its static descriptor.
    let (plugin, credentials, queue) = unsafe { check_descriptor(descriptor, kind) }.map_err(fail)?;
    // SAFETY: the name is a NUL-terminated static string per the ABI (checked non-null).
    let plugin_name = unsafe { CStr::from_ptr(plugin.name) }.to_string_lossy().into_owned();
    let _ = tag.name.set(plugin_name.clone());

    let kvs: Vec<OdmrKv> = config
        .settings
        .iter()
        .map(|s| OdmrKv {
            key: OdmrStr::from_bytes(s.key.as_bytes()),
            value: OdmrStr::from_bytes(s.value.as_bytes()),
        })
        .collect();
    let mut raw = std::ptr::null_mut();
    let mut err = vec![0u8; 1024];
    let mut err_len = 0usize;
    let Some(instance_new) = plugin.instance_new else { unreachable!("checked by check_descriptor") };
    // SAFETY: all pointers are valid for the call; `kvs` borrows `config`.
    let status = unsafe {
        instance_new(host, kvs.as_ptr(), kvs.len(), &mut raw, err.as_mut_ptr(), err.len(), &mut err_len)
    };
    if status != ODMR_OK || raw.is_null() {
        let shown = err_len.min(err.len());
        let mut reason = String::from_utf8_lossy(&err[..shown]).trim().to_string();
        if err_len > shown {
            reason.push_str(" (truncated)");
        }
        let status = if status == ODMR_OK { ODMR_INTERNAL } else { status };
        let reason = if reason.is_empty() {
            format!("{} (the plugin gave no reason)", Status::from_raw(status))
        } else {
            reason
        };
        return Err(LoadError { about_settings: true, ..fail(reason) });
    }
    let threadsafe = plugin.flags & ODMR_F_THREADSAFE != 0;
    // SAFETY: the version is a NUL-terminated static string per the ABI, or NULL.
    let version =
        unsafe { plugin.version.as_ref().map(|v| CStr::from_ptr(v).to_string_lossy().into_owned()) };
    let loaded = format!(
        "{plugin_name} {} from {label}, ABI {}.{}{}",
        version.as_deref().unwrap_or("?"),
        plugin.abi_major,
        plugin.abi_minor,
        if threadsafe { ", thread-safe" } else { "" }
    );
    // At debug: under inetd every connection loads the plugins. A standalone start says it once.
    log::debug(&format!(
        "plugin={plugin_name} version={} section={} loaded={label} abi={}.{} threadsafe={}",
        version.as_deref().unwrap_or("?"),
        kind.section(),
        plugin.abi_major,
        plugin.abi_minor,
        if threadsafe { "yes" } else { "no" }
    ));
    Ok(Instance {
        name: plugin_name,
        loaded,
        credentials: credentials.map(|ops| &*Box::leak(Box::new(ops))),
        queue: queue.map(|ops| &*Box::leak(Box::new(ops))),
        raw,
        serial: (!threadsafe).then(|| serial_lock(descriptor)),
    })
}

/// A plugin's table may be newer (larger) than this host's, never smaller
/// than ABI 1.0's.
fn check_size(what: &str, size: u32, minimum: usize) -> Result<(), String> {
    if (size as usize) < minimum {
        return Err(format!(
            "{what} struct_size {size} is smaller than the {minimum} bytes of ABI {ODMR_ABI_MAJOR}.0"
        ));
    }
    Ok(())
}

/// dlopen a plugin (`RTLD_NOW | RTLD_LOCAL`) and find `odmr_plugin_init`.
fn open_shared_object(path: &Path, kind: Kind) -> Result<odmr_plugin_init_fn, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    let fail = |reason: String| LoadError {
        plugin: path.display().to_string(),
        section: kind.section(),
        reason,
        about_settings: false,
    };
    match std::fs::metadata(path) {
        Err(e) => return Err(fail(format!("cannot open: {e}"))),
        Ok(meta) if !meta.is_file() => return Err(fail("not a shared object: not a regular file".into())),
        Ok(_) => {}
    }
    // SAFETY: loading runs the object's initialisers; that is what the operator
    // configured. The library is never unloaded (forgotten below), so the
    // function pointer stays valid for the life of the process.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| fail(format!("cannot be loaded (dlopen): {}", dl_reason(&e, path))))?;
    // SAFETY: the symbol is declared by the ABI with exactly this type.
    let init = unsafe { library.get::<odmr_plugin_init_fn>(b"odmr_plugin_init\0") }
        .map(|symbol| *symbol)
        .map_err(|e| fail(format!("does not export odmr_plugin_init: {}", dl_reason(&e, path))))?;
    std::mem::forget(library);
    Ok(init)
}

/// dlerror's text without the path it repeats (the message names it already).
fn dl_reason(error: &libloading::Error, path: &Path) -> String {
    let text = error.to_string();
    let prefix = format!("{}: ", path.display());
    match text.find(&prefix) {
        Some(at) => format!("{}{}", &text[..at], &text[at + prefix.len()..]),
        None => text,
    }
}

/// A credential store.
#[derive(Clone)]
pub struct Credentials {
    instance: Arc<Instance>,
}

impl Credentials {
    /// Load the `[credentials]` plugin.
    pub fn load(config: &PluginConfig) -> Result<Credentials, LoadError> {
        Ok(Credentials { instance: Arc::new(instantiate(config, Kind::Credentials)?) })
    }

    fn ops(&self) -> &odmr_credentials_ops {
        self.instance.credentials.expect("checked at load")
    }

    /// The plugin's name, for logs.
    pub fn name(&self) -> &str {
        &self.instance.name
    }

    /// `user`'s secret. `Unsupported` when it has none usable here.
    pub fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        let Some(lookup) = self.ops().lookup_secret else { return Err(Status::Unsupported) };
        let mut buf = vec![0u8; 256];
        loop {
            let (mut kind, mut len) = (0u32, 0usize);
            let status = {
                let _serial = self.instance.enter();
                // SAFETY: instance alive; `user` and `buf` valid for the call.
                unsafe {
                    lookup(
                        self.instance.raw,
                        OdmrStr::from_bytes(user.as_bytes()),
                        &mut kind,
                        buf.as_mut_ptr(),
                        buf.len(),
                        &mut len,
                    )
                }
            };
            match status {
                ODMR_OK if len <= buf.len() => {
                    buf.truncate(len);
                    return match kind {
                        ODMR_SECRET_PLAIN => Ok(Secret::Plain(buf)),
                        ODMR_SECRET_CRAM_MD5_CONTEXT => {
                            <[u8; 32]>::try_from(buf.as_slice()).map(Secret::CramMd5Context).map_err(|_| {
                                self.instance.failure("lookup_secret", ODMR_INTERNAL);
                                Status::Internal
                            })
                        }
                        _ => Err(self.instance.failure("lookup_secret", ODMR_INTERNAL)),
                    };
                }
                ODMR_BUFFER_TOO_SMALL if len > buf.len() && len <= 1 << 20 => buf.resize(len, 0),
                ODMR_OK | ODMR_BUFFER_TOO_SMALL => {
                    return Err(self.instance.failure("lookup_secret", ODMR_INTERNAL))
                }
                other => return Err(self.instance.failure("lookup_secret", other)),
            }
        }
    }

    /// Ask the store to verify a CRAM-MD5 digest (stores that hide secrets).
    pub fn verify_cram_md5(&self, user: &str, challenge: &str, digest: &str) -> Result<bool, Status> {
        let Some(verify) = self.ops().verify_cram_md5 else { return Err(Status::Unsupported) };
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; strings valid for the call.
            unsafe {
                verify(
                    self.instance.raw,
                    OdmrStr::from_bytes(user.as_bytes()),
                    OdmrStr::from_bytes(challenge.as_bytes()),
                    OdmrStr::from_bytes(digest.as_bytes()),
                )
            }
        };
        match status {
            ODMR_OK => Ok(true),
            ODMR_DENIED => Ok(false),
            other => Err(self.instance.failure("verify_cram_md5", other)),
        }
    }

    /// The domains `user` may collect, lower-cased.
    pub fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        unsafe extern "C" fn collect(ctx: *mut c_void, domain: OdmrStr) {
            let _ = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: `ctx` is the Vec passed below, alive for the call;
                // `domain` is borrowed for this callback.
                let (out, bytes) = unsafe { (&mut *ctx.cast::<Vec<String>>(), domain.as_bytes()) };
                out.push(String::from_utf8_lossy(bytes).to_ascii_lowercase());
            }));
        }
        let Some(list) = self.ops().list_domains else { return Err(Status::Unsupported) };
        let mut domains: Vec<String> = Vec::new();
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; the callback context outlives the call.
            unsafe {
                list(
                    self.instance.raw,
                    OdmrStr::from_bytes(user.as_bytes()),
                    (&mut domains as *mut Vec<String>).cast(),
                    collect,
                )
            }
        };
        match status {
            ODMR_OK => Ok(domains),
            other => Err(self.instance.failure("list_domains", other)),
        }
    }
}

/// A queue.
#[derive(Clone)]
pub struct Queue {
    instance: Arc<Instance>,
}

fn borrowed(domains: &[String]) -> Vec<OdmrStr> {
    domains.iter().map(|d| OdmrStr::from_bytes(d.as_bytes())).collect()
}

impl Queue {
    /// Load the `[queue]` plugin.
    pub fn load(config: &PluginConfig) -> Result<Queue, LoadError> {
        Ok(Queue { instance: Arc::new(instantiate(config, Kind::Queue)?) })
    }

    fn ops(&self) -> &odmr_queue_ops {
        self.instance.queue.expect("checked at load")
    }

    /// The plugin's name, for logs.
    pub fn name(&self) -> &str {
        &self.instance.name
    }

    /// Is anything pending for `domains`?
    pub fn has_pending(&self, domains: &[String]) -> Result<bool, Status> {
        let Some(has_pending) = self.ops().has_pending else { unreachable!("checked at load") };
        let list = borrowed(domains);
        let mut pending = 0u32;
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; `list` borrows `domains` for the call.
            unsafe { has_pending(self.instance.raw, list.as_ptr(), list.len(), &mut pending) }
        };
        match status {
            ODMR_OK => Ok(pending != 0),
            other => Err(self.instance.failure("has_pending", other)),
        }
    }

    /// Open a cursor over the messages pending for `domains`.
    pub fn open(&self, domains: &[String]) -> Result<Cursor, Status> {
        let Some(open) = self.ops().cursor_open else { unreachable!("checked at load") };
        let list = borrowed(domains);
        let mut raw = std::ptr::null_mut();
        let status = {
            let _serial = self.instance.enter();
            // SAFETY: instance alive; `list` valid for the call.
            unsafe { open(self.instance.raw, list.as_ptr(), list.len(), &mut raw) }
        };
        match status {
            ODMR_OK if !raw.is_null() => {
                Ok(Cursor { queue: self.clone(), raw, _not_send: Default::default() })
            }
            ODMR_OK => Err(self.instance.failure("cursor_open", ODMR_INTERNAL)),
            other => Err(self.instance.failure("cursor_open", other)),
        }
    }
}

/// An open queue cursor. Not `Send`: a cursor stays on the thread that
/// opened it. Dropping it without `commit` leaves the current message as it was.
pub struct Cursor {
    queue: Queue,
    raw: *mut odmr_cursor,
    _not_send: std::marker::PhantomData<*mut ()>,
}

#[derive(Default)]
struct EnvelopeBuilder {
    envelope: Envelope,
}

unsafe extern "C" fn sink_message(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the builder passed by `next_message`, alive for the
        // call; the strings are borrowed for this callback.
        let (b, id, sender) =
            unsafe { (&mut *ctx.cast::<EnvelopeBuilder>(), id.as_bytes(), sender.as_bytes()) };
        b.envelope.id = String::from_utf8_lossy(id).into_owned();
        b.envelope.sender = String::from_utf8_lossy(sender).into_owned();
        b.envelope.size = size;
    }));
}

unsafe extern "C" fn sink_recipient(ctx: *mut c_void, address: OdmrStr) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: as in `sink_message`.
        let (b, address) = unsafe { (&mut *ctx.cast::<EnvelopeBuilder>(), address.as_bytes()) };
        b.envelope.recipients.push(String::from_utf8_lossy(address).into_owned());
    }));
}

impl Cursor {
    fn call(&self, what: &str, f: impl FnOnce(&odmr_queue_ops) -> odmr_status) -> Result<(), Status> {
        let status = {
            let _serial = self.queue.instance.enter();
            f(self.queue.ops())
        };
        match status {
            ODMR_OK => Ok(()),
            other => Err(self.queue.instance.failure(what, other)),
        }
    }

    /// The next message, or None when the queue has no more for this session.
    pub fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
        let mut builder = EnvelopeBuilder::default();
        let sink = odmr_envelope_sink {
            ctx: (&mut builder as *mut EnvelopeBuilder).cast(),
            message: sink_message,
            recipient: sink_recipient,
        };
        let status = {
            let _serial = self.queue.instance.enter();
            let Some(next) = self.queue.ops().cursor_next else { unreachable!("checked at load") };
            // SAFETY: the cursor is open; `sink` and `builder` outlive the call.
            unsafe { next(self.raw, &sink) }
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
            let Some(read) = self.queue.ops().read_body else { unreachable!("checked at load") };
            // SAFETY: the cursor is open; `buf` is writable for its length.
            unsafe { read(self.raw, buf.as_mut_ptr(), buf.len(), &mut len) }
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
        self.call("set_outcome", |ops| unsafe {
            ops.set_outcome.expect("checked at load")(raw, index, outcome.to_raw())
        })
    }

    /// Apply the recorded outcomes of the current message.
    pub fn commit(&mut self) -> Result<(), Status> {
        let raw = self.raw;
        // SAFETY: the cursor is open.
        self.call("commit", |ops| unsafe { ops.commit.expect("checked at load")(raw) })
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        let _serial = self.queue.instance.enter();
        if let Some(close) = self.queue.ops().cursor_close {
            // SAFETY: the cursor is open and is not used again.
            unsafe { close(self.raw) };
        }
    }
}

/// The two backends a session needs.
#[derive(Clone)]
pub struct Backends {
    /// `[credentials]`
    pub credentials: Credentials,
    /// `[queue]`
    pub queue: Queue,
}

impl Backends {
    /// Load both plugins of a configuration; an error names the file, line, section and key.
    pub fn load(config: &Config) -> Result<Backends, ConfigError> {
        let credentials = Credentials::load(&config.credentials).map_err(|e| e.locate(config))?;
        let queue = Queue::load(&config.queue).map_err(|e| e.locate(config))?;
        Ok(Backends { credentials, queue })
    }

    /// What was loaded, one `key=value` list per backend, for the start-up line.
    pub fn describe(&self) -> String {
        format!(
            "credentials=\"{}\" queue=\"{}\"",
            self.credentials.instance.loaded, self.queue.instance.loaded
        )
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
        }
    }

    #[test]
    fn fields_beyond_a_plugins_struct_size_are_never_read() {
        // As a later host sees an older plugin: pretend `cursor_close` were
        // a field appended after the plugin's minor. The host's copy has it
        // NULL although the memory behind the plugin's table holds a pointer.
        let older = queue_ops(offset_of!(odmr_queue_ops, cursor_close));
        // SAFETY: `older` is a whole table, readable for any prefix.
        let copy = unsafe { read_prefix(&older, older.struct_size) };
        assert!(copy.commit.is_some());
        assert!(copy.cursor_close.is_none());
        assert_eq!(copy.struct_size, older.struct_size);
    }

    #[test]
    fn a_larger_table_from_a_newer_minor_is_read_up_to_what_the_host_knows() {
        let newer = queue_ops(size_of::<odmr_queue_ops>() + 64);
        // SAFETY: read_prefix reads at most size_of::<odmr_queue_ops>() bytes.
        let copy = unsafe { read_prefix(&newer, newer.struct_size) };
        assert!(copy.cursor_close.is_some() && copy.has_pending.is_some());
    }

    #[test]
    fn the_v1_0_minimums_are_the_ends_of_the_last_v1_0_fields() {
        // In ABI 1.0 the structs end with their last v1.0 field.
        assert_eq!(ODMR_PLUGIN_V1_0_SIZE, size_of::<odmr_plugin>());
        assert_eq!(ODMR_QUEUE_OPS_V1_0_SIZE, size_of::<odmr_queue_ops>());
        assert_eq!(ODMR_CREDENTIALS_OPS_V1_0_SIZE, size_of::<odmr_credentials_ops>());
        assert_eq!(ODMR_HOST_V1_0_SIZE, size_of::<odmr_host>());
        assert!(check_size("t", ODMR_QUEUE_OPS_V1_0_SIZE as u32 - 8, ODMR_QUEUE_OPS_V1_0_SIZE)
            .unwrap_err()
            .contains("smaller than the"));
    }

    #[test]
    fn instances_of_one_plugin_share_one_lock() {
        let (a, b) = (1usize as *const odmr_plugin, 2usize as *const odmr_plugin);
        assert!(std::ptr::eq(serial_lock(a), serial_lock(a)));
        assert!(!std::ptr::eq(serial_lock(a), serial_lock(b)));
    }
}
