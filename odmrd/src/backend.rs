//! Choosing and loading the configured backends: the built-in registry,
//! dlopen for `.so` paths, the section check, and the log line per plugin.
//!
//! Every backend, built in (`builtin:NAME`) or loaded from a `.so`, is reached
//! through the same `odmr_plugin` descriptor, so the ABI is on every code path.
//! The host's side of that ABI (checking the descriptor, the thread contract,
//! the safe wrappers over the tables) is `odmr_api::host`; this module only
//! finds the entry point and says, for the operator, which section and which
//! file a refusal is about. It knows nothing about SMTP; mapping statuses to
//! replies is the session's.

use crate::config::{PluginConfig, PluginSource};
use crate::log::{self, Level};
use odmr_api::ffi::*;
use odmr_api::host::{CredentialStore, Instance, LogFn, MailQueue, Plugin, PluginHost};
use odmr_api::LogLevel;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The backends linked into the binary, by `builtin:` name.
const BUILTINS: &[(&str, odmr_plugin_init_fn)] = &[
    ("passwd", odmr_backend_passwd::passwd_plugin_init),
    ("maildir", odmr_backend_maildir::maildir_plugin_init),
    ("vpopmail", odmr_backend_vpopmail::vpopmail_plugin_init),
    ("exim", odmr_backend_exim::exim_plugin_init),
    ("sql", odmr_backend_sql::sql_plugin_init),
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

fn level_of(level: LogLevel) -> Level {
    match level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
    }
}

/// Plugins log through odmrd's log, one line tagged with their name.
fn plugin_log() -> LogFn {
    Arc::new(|name: &str, level: LogLevel, text: &str| {
        log::log(level_of(level), &format!("plugin={name} {text}"))
    })
}

/// Resolve, initialise and check the plugin of `config`, then create its
/// instance. Plugins are never unloaded: their code lives until exit.
pub fn instantiate(config: &PluginConfig, kind: Kind) -> Result<Instance, LoadError> {
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
    let plugin = Plugin::load(PluginHost::new(&label, plugin_log()), init).map_err(|r| fail(r.reason))?;
    let serves = match kind {
        Kind::Credentials => plugin.serves_credentials(),
        Kind::Queue => plugin.serves_queue(),
    };
    if !serves {
        let section = kind.section();
        return Err(fail(format!("is not a {section} backend (it has no {section} operations)")));
    }
    let settings: Vec<(&str, &str)> =
        config.settings.iter().map(|s| (s.key.as_str(), s.value.as_str())).collect();
    let instance =
        plugin.new_instance(&settings).map_err(|r| fail(format!("instance_new failed: {}", r.reason)))?;
    let (major, minor) = plugin.abi();
    log::info(&format!(
        "plugin={} version={} section={} loaded={label} abi={major}.{minor} threadsafe={}",
        plugin.name(),
        plugin.version().unwrap_or("?"),
        kind.section(),
        if plugin.threadsafe() { "yes" } else { "no" }
    ));
    Ok(instance)
}

/// dlopen a plugin (`RTLD_NOW | RTLD_LOCAL`) and find `odmr_plugin_init`.
fn open_shared_object(path: &Path, kind: Kind) -> Result<odmr_plugin_init_fn, LoadError> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    let fail =
        |reason: String| LoadError { plugin: path.display().to_string(), section: kind.section(), reason };
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

/// The two backends a session needs.
#[derive(Clone)]
pub struct Backends {
    /// `[credentials]`
    pub credentials: CredentialStore,
    /// `[queue]`
    pub queue: MailQueue,
}

impl Backends {
    /// Load both plugins of a configuration.
    pub fn load(credentials: &PluginConfig, queue: &PluginConfig) -> Result<Backends, LoadError> {
        let credentials = instantiate(credentials, Kind::Credentials)?
            .credentials()
            .expect("instantiate checked the section");
        let queue = instantiate(queue, Kind::Queue)?.queue().expect("instantiate checked the section");
        Ok(Backends { credentials, queue })
    }
}
