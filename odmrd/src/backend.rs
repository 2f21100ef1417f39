//! Backends, seen from the host: finding a plugin, checking its descriptor,
//! creating its instance, and safe wrappers over its C function tables.
//!
//! Every backend, built in (`builtin:NAME`) or loaded from a `.so`, is reached
//! through the same `odmr_plugin` descriptor, so the ABI is on every code path.
//! This module owns all `unsafe` calls into plugins and the thread contract:
//! an instance without `ODMR_F_THREADSAFE` is entered by one thread at a time.
//! It knows nothing about SMTP; mapping statuses to replies is the session's.

use crate::config::{PluginConfig, PluginSource};
use crate::log::{self, Level};
use odmr_api::ffi::*;
use odmr_api::{Envelope, LogLevel, Outcome, Secret, Status};
use std::ffi::{c_void, CStr};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

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
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] plugin {}: {}", self.section, self.plugin, self.reason)
    }
}

impl std::error::Error for LoadError {}

/// One live plugin instance.
struct Instance {
    name: String,
    plugin: &'static odmr_plugin,
    raw: *mut odmr_instance,
    /// Held around every call when the plugin is not thread-safe.
    serial: Option<Mutex<()>>,
}

// SAFETY: the instance pointer is only used through `enter`, which serialises
// calls unless the plugin declared ODMR_F_THREADSAFE, i.e. promised that its
// instance functions may run concurrently on any thread.
unsafe impl Send for Instance {}
// SAFETY: as above.
unsafe impl Sync for Instance {}

impl Instance {
    /// Take the instance's lock if it needs one.
    fn enter(&self) -> Option<MutexGuard<'_, ()>> {
        self.serial.as_ref().map(|m| m.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Map a status from this plugin, logging the ones an operator must see.
    fn failure(&self, what: &str, raw: odmr_status) -> Status {
        let status = Status::from_raw(raw);
        if matches!(status, Status::Panic | Status::Internal | Status::InvalidArgument | Status::Version) {
            log::error(&format!("plugin={} call={what} status={status}", self.name));
        }
        status
    }
}

fn level_of(raw: i32) -> Level {
    match LogLevel::from_raw(raw) {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
    }
}

/// The host's `log` up-call: one line, tagged with the plugin's name.
unsafe extern "C" fn host_log(ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `ctx` is the leaked plugin name given to this plugin's host
        // struct; `msg` is valid for `len` bytes for this call.
        let (name, text) = unsafe { (&*ctx.cast::<String>(), OdmrStr { ptr: msg, len }.as_bytes()) };
        log::log(level_of(level), &format!("plugin={name} {}", String::from_utf8_lossy(text)));
    }));
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
                });
            };
            (label, *init)
        }
        PluginSource::Path(path) => (path.display().to_string(), open_shared_object(path, kind)?),
    };
    let fail = |reason: String| LoadError { plugin: label.clone(), section: kind.section(), reason };

    // The host struct and the name it logs with live as long as the plugin.
    let name: &'static mut String = Box::leak(Box::new(label.clone()));
    let host: &'static odmr_host = Box::leak(Box::new(odmr_host {
        struct_size: std::mem::size_of::<odmr_host>() as u32,
        abi_major: ODMR_ABI_MAJOR,
        abi_minor: ODMR_ABI_MINOR,
        ctx: (name as *mut String).cast(),
        log: Some(host_log),
    }));

    let mut descriptor: *const odmr_plugin = std::ptr::null();
    // SAFETY: `init` has the `odmr_plugin_init` signature (checked by type for
    // built-ins, by symbol name for loaded objects); both pointers are valid.
    let status = unsafe { init(host, &mut descriptor) };
    if status == ODMR_VERSION {
        return Err(fail(format!("refuses ABI major {ODMR_ABI_MAJOR} of this odmrd")));
    }
    if status != ODMR_OK {
        return Err(fail(format!("odmr_plugin_init failed: {}", Status::from_raw(status))));
    }
    // SAFETY: on ODMR_OK the plugin stored a pointer to its static descriptor.
    let Some(plugin) = (unsafe { descriptor.as_ref() }) else {
        return Err(fail("odmr_plugin_init returned no descriptor".into()));
    };
    check_descriptor(plugin, kind).map_err(fail)?;
    // SAFETY: the name is a NUL-terminated static string per the ABI (checked non-null).
    let plugin_name = unsafe { CStr::from_ptr(plugin.name) }.to_string_lossy().into_owned();
    *name = plugin_name.clone();

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
        let reason = String::from_utf8_lossy(&err[..err_len.min(err.len())]).into_owned();
        let reason = if reason.is_empty() { Status::from_raw(status).to_string() } else { reason };
        return Err(fail(format!("instance_new failed: {reason}")));
    }
    let threadsafe = plugin.flags & ODMR_F_THREADSAFE != 0;
    log::info(&format!(
        "plugin={plugin_name} section={} loaded={label} threadsafe={}",
        kind.section(),
        if threadsafe { "yes" } else { "no" }
    ));
    Ok(Instance { name: plugin_name, plugin, raw, serial: (!threadsafe).then(|| Mutex::new(())) })
}

/// The v1.0 size of a table: a plugin may be newer (larger), never smaller.
fn check_size(what: &str, size: u32, minimum: usize) -> Result<(), String> {
    if (size as usize) < minimum {
        return Err(format!("{what} struct_size {size} is smaller than the {minimum} bytes of ABI 1.0"));
    }
    Ok(())
}

fn check_descriptor(plugin: &odmr_plugin, kind: Kind) -> Result<(), String> {
    if plugin.abi_major != ODMR_ABI_MAJOR {
        return Err(format!(
            "built for ABI major {}, this odmrd speaks major {ODMR_ABI_MAJOR}",
            plugin.abi_major
        ));
    }
    check_size("odmr_plugin", plugin.struct_size, std::mem::size_of::<odmr_plugin>())?;
    if plugin.name.is_null() || plugin.instance_new.is_none() {
        return Err("descriptor lacks a name or instance_new".into());
    }
    match kind {
        Kind::Credentials => {
            // SAFETY: a non-null table pointer is static per the ABI.
            let Some(ops) = (unsafe { plugin.credentials.as_ref() }) else {
                return Err("is not a credentials backend (it has no credentials operations)".into());
            };
            check_size("odmr_credentials_ops", ops.struct_size, std::mem::size_of::<odmr_credentials_ops>())?;
            if ops.list_domains.is_none() || (ops.lookup_secret.is_none() && ops.verify_cram_md5.is_none()) {
                return Err("credentials operations are incomplete".into());
            }
        }
        Kind::Queue => {
            // SAFETY: as above.
            let Some(ops) = (unsafe { plugin.queue.as_ref() }) else {
                return Err("is not a queue backend (it has no queue operations)".into());
            };
            check_size("odmr_queue_ops", ops.struct_size, std::mem::size_of::<odmr_queue_ops>())?;
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
        }
    }
    Ok(())
}

/// dlopen a plugin (`RTLD_NOW | RTLD_LOCAL`) and find `odmr_plugin_init`.
fn open_shared_object(path: &PathBuf, kind: Kind) -> Result<odmr_plugin_init_fn, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    let fail =
        |reason: String| LoadError { plugin: path.display().to_string(), section: kind.section(), reason };
    if let Err(e) = std::fs::metadata(path) {
        return Err(fail(format!("cannot open: {e}")));
    }
    // SAFETY: loading runs the object's initialisers; that is what the operator
    // configured. The library is never unloaded (forgotten below), so the
    // function pointer stays valid for the life of the process.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| fail(format!("not a loadable shared object: {e}")))?;
    // SAFETY: the symbol is declared by the ABI with exactly this type.
    let init = unsafe { library.get::<odmr_plugin_init_fn>(b"odmr_plugin_init\0") }
        .map(|symbol| *symbol)
        .map_err(|e| fail(format!("does not export odmr_plugin_init: {e}")))?;
    std::mem::forget(library);
    Ok(init)
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
        // SAFETY: checked non-null and complete at load; static for the process.
        unsafe { &*self.instance.plugin.credentials }
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
        // SAFETY: checked non-null and complete at load; static for the process.
        unsafe { &*self.instance.plugin.queue }
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
    /// Load both plugins of a configuration.
    pub fn load(credentials: &PluginConfig, queue: &PluginConfig) -> Result<Backends, LoadError> {
        Ok(Backends { credentials: Credentials::load(credentials)?, queue: Queue::load(queue)? })
    }
}
