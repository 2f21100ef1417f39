//! A test aid for plugin authors: a host that drives a plugin through its raw
//! C tables with odmrd's own host code ([`crate::host`]), so that a test
//! proves the exported entry point, `instance_new`'s error reporting and the
//! log up-call end to end.
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
//! Not for production hosts: the log buffer is leaked (the ABI promises
//! plugins that the host outlives them), and every call panics on what a
//! test should not see. For the safe calls odmrd makes, take
//! [`TestHost::credentials`] or [`TestHost::queue`].

use crate::ffi::*;
use crate::host::{CredentialStore, Instance, MailQueue, Plugin, PluginHost, Refusal};
use std::sync::{Arc, Mutex, PoisonError};

/// Log lines as the host received them: raw level (`ODMR_LOG_*`) and text.
type LogLines = Mutex<Vec<(i32, String)>>;

/// A host for tests, with its own log buffer.
pub struct TestHost {
    host: PluginHost,
    log: &'static LogLines,
    plugin: Option<Arc<Plugin>>,
}

impl Default for TestHost {
    fn default() -> Self {
        TestHost::new()
    }
}

impl TestHost {
    /// A host of this crate's ABI version whose log lines are kept.
    pub fn new() -> TestHost {
        TestHost::with_abi(ODMR_ABI_MAJOR, ODMR_ABI_MINOR)
    }

    /// A host claiming another ABI version, to test the version handshake
    /// and what a plugin gives an older host.
    pub fn with_abi(major: u32, minor: u32) -> TestHost {
        let log: &'static LogLines = Box::leak(Box::default());
        let record = move |_: &str, level: crate::LogLevel, text: &str| {
            log.lock().unwrap_or_else(PoisonError::into_inner).push((level.to_raw(), text.to_string()));
        };
        let host = PluginHost::with_abi("test", Arc::new(record), major, minor);
        TestHost { host, log, plugin: None }
    }

    /// The raw host, as a plugin receives it.
    pub fn raw(&self) -> &'static odmr_host {
        self.host.raw()
    }

    /// Call the plugin's `odmr_plugin_init` and check its descriptor as
    /// odmrd does; the refusal otherwise.
    pub fn try_load(&mut self, init: odmr_plugin_init_fn) -> Result<&'static odmr_plugin, Refusal> {
        let plugin = Plugin::load(self.host, init)?;
        // SAFETY: the descriptor passed the host's checks and is static per
        // the ABI; a test reads the fields of its own plugin's minor.
        let descriptor = unsafe { &*plugin.raw_descriptor() };
        self.plugin = Some(plugin);
        Ok(descriptor)
    }

    /// Call the plugin's `odmr_plugin_init`, which must succeed, and keep its
    /// descriptor for [`TestHost::instance`].
    pub fn load(&mut self, init: odmr_plugin_init_fn) -> &'static odmr_plugin {
        self.try_load(init).unwrap_or_else(|refusal| panic!("loading the plugin: {refusal}"))
    }

    /// The loaded plugin.
    pub fn plugin(&self) -> &Arc<Plugin> {
        self.plugin.as_ref().expect("TestHost::load first")
    }

    /// Create an instance from `kvs` as the lines of its ini section: the
    /// raw instance, or the status and the reason the plugin wrote.
    pub fn try_instance<K: AsRef<str>, V: AsRef<str>>(
        &self,
        kvs: &[(K, V)],
    ) -> Result<*mut odmr_instance, (odmr_status, String)> {
        self.plugin()
            .new_instance(kvs)
            .map(|instance| instance.raw())
            .map_err(|r| (r.status.unwrap_or(ODMR_INTERNAL), r.reason))
    }

    /// Create an instance from `kvs`: the raw instance (free it with the
    /// descriptor's `instance_free`), or the plugin's reason.
    pub fn instance<K: AsRef<str>, V: AsRef<str>>(
        &self,
        kvs: &[(K, V)],
    ) -> Result<*mut odmr_instance, String> {
        self.try_instance(kvs).map_err(|(_, reason)| reason)
    }

    /// An instance from `kvs` wrapped as odmrd holds it.
    pub fn live_instance<K: AsRef<str>, V: AsRef<str>>(&self, kvs: &[(K, V)]) -> Result<Instance, String> {
        self.plugin().new_instance(kvs).map_err(|r| r.reason)
    }

    /// An instance from `kvs` as the credential store odmrd calls.
    pub fn credentials<K: AsRef<str>, V: AsRef<str>>(
        &self,
        kvs: &[(K, V)],
    ) -> Result<CredentialStore, String> {
        Ok(self.live_instance(kvs)?.credentials().expect("the plugin serves no credentials"))
    }

    /// An instance from `kvs` as the mail queue odmrd calls.
    pub fn queue<K: AsRef<str>, V: AsRef<str>>(&self, kvs: &[(K, V)]) -> Result<MailQueue, String> {
        Ok(self.live_instance(kvs)?.queue().expect("the plugin serves no queue"))
    }

    /// Every line logged through this host so far: raw level and text.
    pub fn logs(&self) -> Vec<(i32, String)> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// A kit [`Host`](crate::Host) whose log lines this test host records, for
    /// calling a backend's `Instance::new` directly in unit tests.
    pub fn host(&self) -> crate::Host {
        crate::Host { raw: self.host.raw() }
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

/// What a descriptor declares, for one assertion in a plugin's test:
/// (name, serves credentials, serves a queue, thread-safe).
pub fn describe(d: &odmr_plugin) -> (String, bool, bool, bool) {
    // SAFETY: a descriptor's name is a NUL-terminated static string (ABI rule);
    // `load` only hands out descriptors that passed the host's checks.
    let name = unsafe { std::ffi::CStr::from_ptr(d.name) }.to_string_lossy().into_owned();
    (name, !d.credentials.is_null(), !d.queue.is_null(), d.flags & ODMR_F_THREADSAFE != 0)
}

/// What [`tree_snapshot`] records of one entry: its bytes (files only), mode
/// and modification time (seconds, nanoseconds).
pub type EntryState = (Vec<u8>, u32, i64, i64);

/// Every entry under `root` (its relative path → [`EntryState`]), without
/// following symlinks: compare two snapshots to prove that a read-only
/// operation, such as a queue's `list`, changed no byte, mode or time.
pub fn tree_snapshot(root: &std::path::Path) -> std::collections::BTreeMap<String, EntryState> {
    use std::os::unix::fs::MetadataExt;
    let mut all = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for item in std::fs::read_dir(&dir).expect("read_dir") {
            let path = item.expect("read_dir entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("lstat");
            let key = path.strip_prefix(root).expect("under root").display().to_string();
            let bytes = if meta.is_file() { std::fs::read(&path).expect("read") } else { Vec::new() };
            all.insert(key, (bytes, meta.mode(), meta.mtime(), meta.mtime_nsec()));
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    all
}
