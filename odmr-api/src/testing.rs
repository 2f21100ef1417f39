//! A test aid for plugin authors: a host that drives a plugin through its raw
//! C tables, as odmrd does, so that a test proves the exported entry point,
//! `instance_new`'s error reporting and the log up-call end to end.
//!
//! ```
//! # use odmr_api::{Host, Instance, LogLevel};
//! # struct Demo;
//! # impl Instance for Demo {
//! #     fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
//! #         let mut s = odmr_api::settings::Settings::new(config)?;
//! #         s.finish()?;
//! #         host.log(LogLevel::Info, "ready");
//! #         Ok(Demo)
//! #     }
//! # }
//! # impl odmr_api::Credentials for Demo {
//! #     fn lookup_secret(&self, _: &str) -> Result<odmr_api::Secret, odmr_api::Status> { Err(odmr_api::Status::NotFound) }
//! #     fn domains(&self, _: &str) -> Result<Vec<String>, odmr_api::Status> { Ok(vec![]) }
//! # }
//! # odmr_api::export_plugin!(fn demo_plugin_init, "demo", Demo: [credentials]);
//! use odmr_api::ffi::{ODMR_INVALID_ARGUMENT, ODMR_LOG_INFO};
//! use odmr_api::testing::TestHost;
//!
//! let mut host = TestHost::new();
//! let descriptor = host.load(demo_plugin_init);
//! assert!(!descriptor.credentials.is_null());
//! let (status, reason) = host.try_instance(&[("colour", "blue")]).unwrap_err();
//! assert_eq!(status, ODMR_INVALID_ARGUMENT);
//! assert!(reason.starts_with("unknown key 'colour'"));
//! let instance = host.instance(&[] as &[(&str, &str)]).unwrap();
//! assert_eq!(host.logs(), [(ODMR_LOG_INFO, "ready".to_string())]);
//! // SAFETY: created by this descriptor's instance_new, freed once.
//! unsafe { (descriptor.instance_free.unwrap())(instance) };
//! ```
//!
//! Not for production hosts: the host struct and its log buffer are leaked
//! (the ABI promises plugins that the host outlives them), and every call
//! panics on what a test should not see.

use crate::ffi::*;
use std::ffi::c_void;
use std::sync::{Mutex, PoisonError};

/// Log lines as the host received them: raw level (`ODMR_LOG_*`) and text.
type LogLines = Mutex<Vec<(i32, String)>>;

/// A host for tests, with its own log buffer.
pub struct TestHost {
    host: &'static odmr_host,
    log: &'static LogLines,
    descriptor: Option<&'static odmr_plugin>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

/// Size of the error buffer `instance_new` writes its reason into.
const ERR_CAP: usize = 4096;

unsafe extern "C" fn record_log(ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    // SAFETY: `ctx` is the leaked `LogLines` of the host that was passed to
    // the plugin (see `TestHost::with_abi`), valid until the process exits.
    let lines = unsafe { &*ctx.cast::<LogLines>() };
    // SAFETY: the plugin passes a message valid for `len` bytes for the call.
    let msg = unsafe { OdmrStr { ptr: msg, len }.as_bytes() };
    let text = String::from_utf8_lossy(msg).into_owned();
    lines.lock().unwrap_or_else(PoisonError::into_inner).push((level, text));
}

impl TestHost {
    /// A host of this crate's ABI version whose log lines are kept.
    pub fn new() -> TestHost {
        TestHost::with_abi(ODMR_ABI_MAJOR, ODMR_ABI_MINOR)
    }

    /// A host claiming another ABI version, to test the version handshake.
    pub fn with_abi(major: u32, minor: u32) -> TestHost {
        let log: &'static LogLines = Box::leak(Box::default());
        let host = Box::leak(Box::new(odmr_host {
            struct_size: std::mem::size_of::<odmr_host>() as u32,
            abi_major: major,
            abi_minor: minor,
            ctx: (log as *const LogLines).cast_mut().cast(),
            log: Some(record_log),
        }));
        TestHost { host, log, descriptor: None }
    }

    /// The raw host, as a plugin receives it.
    pub fn raw(&self) -> &'static odmr_host {
        self.host
    }

    /// Call the plugin's `odmr_plugin_init`: its status unless `ODMR_OK`.
    pub fn try_load(&mut self, init: odmr_plugin_init_fn) -> Result<&'static odmr_plugin, odmr_status> {
        let mut out: *const odmr_plugin = std::ptr::null();
        // SAFETY: the host is valid until the process exits; `out` is valid
        // for one write.
        let status = unsafe { init(self.host, &mut out) };
        if status != ODMR_OK {
            return Err(status);
        }
        // SAFETY: on ODMR_OK the plugin stored a pointer to its descriptor,
        // which the ABI requires to be valid until the process exits.
        let descriptor =
            unsafe { out.as_ref() }.expect("odmr_plugin_init returned ODMR_OK and no descriptor");
        self.descriptor = Some(descriptor);
        Ok(descriptor)
    }

    /// Call the plugin's `odmr_plugin_init`, which must succeed, and keep its
    /// descriptor for [`TestHost::instance`].
    pub fn load(&mut self, init: odmr_plugin_init_fn) -> &'static odmr_plugin {
        self.try_load(init).unwrap_or_else(|status| panic!("odmr_plugin_init returned {status}"))
    }

    /// Create an instance from `kvs` as the lines of its ini section: the
    /// raw instance, or the status and the reason the plugin wrote.
    pub fn try_instance<K: AsRef<str>, V: AsRef<str>>(
        &self,
        kvs: &[(K, V)],
    ) -> Result<*mut odmr_instance, (odmr_status, String)> {
        let descriptor = self.descriptor.expect("TestHost::load first");
        let new = descriptor.instance_new.expect("the descriptor has no instance_new");
        let kvs: Vec<OdmrKv> = kvs
            .iter()
            .map(|(k, v)| OdmrKv {
                key: OdmrStr::from_bytes(k.as_ref().as_bytes()),
                value: OdmrStr::from_bytes(v.as_ref().as_bytes()),
            })
            .collect();
        let (mut inst, mut err, mut err_len) = (std::ptr::null_mut(), vec![0u8; ERR_CAP], 0usize);
        // SAFETY: the host lives until exit; `kvs` (borrowing the caller's
        // strings), `inst`, `err` and `err_len` are valid for the call.
        let status = unsafe {
            new(self.host, kvs.as_ptr(), kvs.len(), &mut inst, err.as_mut_ptr(), err.len(), &mut err_len)
        };
        if status == ODMR_OK {
            Ok(inst)
        } else {
            Err((status, String::from_utf8_lossy(&err[..err_len.min(err.len())]).into_owned()))
        }
    }

    /// Create an instance from `kvs`: the raw instance (free it with the
    /// descriptor's `instance_free`), or the plugin's reason.
    pub fn instance<K: AsRef<str>, V: AsRef<str>>(
        &self,
        kvs: &[(K, V)],
    ) -> Result<*mut odmr_instance, String> {
        self.try_instance(kvs).map_err(|(_, reason)| reason)
    }

    /// Every line logged through this host so far: raw level and text.
    pub fn logs(&self) -> Vec<(i32, String)> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A kit [`Host`](crate::Host) whose log lines this test host records, for
    /// calling a backend's `Instance::new` directly in unit tests.
    pub fn host(&self) -> crate::Host {
        crate::Host { raw: self.host }
    }

    /// The messages logged at `level` so far.
    pub fn logs_at(&self, level: crate::LogLevel) -> Vec<String> {
        self.logs().into_iter().filter(|(l, _)| *l == level.to_raw()).map(|(_, m)| m).collect()
    }

    /// Forget the lines logged so far.
    pub fn clear_logs(&self) {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

/// An `odmr_domain_cb` for `list_domains` that appends each domain to the
/// `Vec<String>` passed as `cb_ctx`.
///
/// A domain that is not UTF-8 is kept with replacement characters (a panic
/// here could not unwind out of the callback).
///
/// What a descriptor declares, for one assertion in a plugin's test:
/// (name, serves credentials, serves a queue, thread-safe).
pub fn describe(d: &odmr_plugin) -> (String, bool, bool, bool) {
    // SAFETY: a descriptor's name is a NUL-terminated static string (ABI rule);
    // `load` only hands out descriptors the plugin returned.
    let name = unsafe { std::ffi::CStr::from_ptr(d.name) }.to_string_lossy().into_owned();
    (name, !d.credentials.is_null(), !d.queue.is_null(), d.flags & ODMR_F_THREADSAFE != 0)
}

/// Call a credentials table's `list_domains` for `user`, as the host does:
/// the status and the domains the plugin reported.
///
/// # Safety
/// `inst` must be a live instance of the plugin `ops` belongs to.
pub unsafe fn list_domains(
    ops: &odmr_credentials_ops,
    inst: *mut odmr_instance,
    user: &str,
) -> (odmr_status, Vec<String>) {
    let mut domains: Vec<String> = Vec::new();
    let Some(list) = ops.list_domains else { return (ODMR_UNSUPPORTED, domains) };
    // SAFETY: `inst` per the caller; `domains` outlives the call and is what
    // `collect_domain` expects as its context.
    let status = unsafe {
        list(
            inst,
            OdmrStr::from_bytes(user.as_bytes()),
            (&mut domains as *mut Vec<String>).cast(),
            collect_domain,
        )
    };
    (status, domains)
}

/// # Safety
/// `ctx` must point to a `Vec<String>` not otherwise borrowed during the
/// call; `domain` must be borrowed for the call.
pub unsafe extern "C" fn collect_domain(ctx: *mut c_void, domain: OdmrStr) {
    // SAFETY: guaranteed by the caller.
    let (domains, domain) = unsafe { (&mut *ctx.cast::<Vec<String>>(), domain.as_bytes()) };
    domains.push(String::from_utf8_lossy(domain).into_owned());
}
