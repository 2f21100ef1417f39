//! Choosing and loading the configured backends: the built-in registry,
//! dlopen for `.so` paths, the section check, and the log line per plugin.
//!
//! Most built-in backends are linked in. `builtin:sql` is not: its drivers
//! (PostgreSQL, MariaDB, libsqlite3) would make every start of odmrd, and so
//! every inetd session, pay for their relocations. It is the shared object
//! shipped with odmrd, `libodmr_backend_sql.so`, found by [`bundled_object`]
//! and loaded through the same ABI as any `.so` plugin.
//!
//! Every backend, built in (`builtin:NAME`) or loaded from a `.so`, is reached
//! through the same `odmr_plugin` descriptor, so the ABI is on every code path.
//! The host's side of that ABI (checking the descriptor, the thread contract,
//! the safe wrappers over the tables) is `odmr_api::host`; this module only
//! finds the entry point and says, for the operator, which section and which
//! file a refusal is about. It knows nothing about SMTP; mapping statuses to
//! replies is the session's.

use crate::config::{Config, ConfigError, PluginConfig, PluginSource};
use crate::log::{self, Level};
use odmr_api::ffi::*;
use odmr_api::host::{CredentialStore, Instance, LogFn, MailQueue, Plugin, PluginHost};
use odmr_api::LogLevel;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The backends linked into the binary, by `builtin:` name.
const BUILTINS: &[(&str, odmr_plugin_init_fn)] = &[
    ("passwd", odmr_backend_passwd::passwd_plugin_init),
    ("maildir", odmr_backend_maildir::maildir_plugin_init),
    ("vpopmail", odmr_backend_vpopmail::vpopmail_plugin_init),
    ("exim", odmr_backend_exim::exim_plugin_init),
];

/// The built-in backends shipped beside the binary as shared objects, by `builtin:` name.
const BUNDLED: &[(&str, &str)] = &[("sql", SQL_OBJECT)];

/// The shared object of `builtin:sql` (and of the database locks, `crate::sql_locks`).
pub const SQL_OBJECT: &str = "libodmr_backend_sql.so";

/// Where the bundled shared objects are looked for, in order: the directory of the running
/// executable (a cargo build's `target/<profile>/`, whose objects are of the same build), then
/// the plugin directory compiled in (`ODMRD_PLUGIN_DIR` at build time, `/usr/lib/odmrd` by
/// default: where the package installs them; `/usr/sbin` has none).
pub fn plugin_directories() -> Vec<PathBuf> {
    let installed = PathBuf::from(option_env!("ODMRD_PLUGIN_DIR").unwrap_or("/usr/lib/odmrd"));
    let own = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf));
    let mut directories: Vec<PathBuf> = own.into_iter().collect();
    if !directories.contains(&installed) {
        directories.push(installed);
    }
    directories
}

/// The path of the bundled shared object `file`, or why not: every path tried.
pub fn bundled_object(file: &str) -> Result<PathBuf, String> {
    let tried: Vec<PathBuf> = plugin_directories().into_iter().map(|d| d.join(file)).collect();
    if let Some(found) = tried.iter().find(|path| path.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    Err(format!("{file}, shipped with odmrd, was not found (tried {})", tried.join(", ")))
}

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
    fn new(plugin: &str, kind: Kind, reason: String) -> LoadError {
        LoadError { plugin: plugin.to_string(), section: kind.section(), reason, about_settings: false }
    }

    /// The error located in `config` like the parser's own: a failure to load names the `plugin`
    /// key's line; a backend's verdict on its settings names the key it mentions (`key 'file'`)
    /// and that key's line, or the section's line when it names none (a missing key).
    pub fn locate(&self, config: &Config) -> ConfigError {
        if !self.about_settings {
            return config.error(self.section, Some("plugin"), format!("{}: {}", self.plugin, self.reason));
        }
        locate(config, self.section, &self.plugin, &self.reason)
    }
}

/// A backend's message about its section located like the parser's errors: the key it names as
/// `key 'K'` and that key's line (the section's when the key is not written, e.g. missing),
/// with the backend named at the end.
pub fn locate(config: &Config, section: &str, plugin: &str, message: &str) -> ConfigError {
    let (key, message) = split_key(message);
    let message = format!("{message} (backend {plugin})");
    match key {
        Some(key) if config.line(section, Some(&key)) != config.line(section, None) => {
            config.error(section, Some(&key), message)
        }
        Some(key) => ConfigError { key: Some(key), ..config.error(section, None, message) },
        None => config.error(section, None, message),
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

fn level_of(level: LogLevel) -> Level {
    match level {
        LogLevel::Error => Level::Error,
        LogLevel::Warn => Level::Warn,
        LogLevel::Info => Level::Info,
        LogLevel::Debug => Level::Debug,
    }
}

/// Plugins log through odmrd's log, one line tagged with their name (and, during a session,
/// its `session=`); the plugin's own text follows the host's fields.
fn plugin_log() -> LogFn {
    Arc::new(|name: &str, level: LogLevel, text: &str| {
        log::log(level_of(level), &format!("{}plugin={name} {text}", log::session_prefix()))
    })
}

/// Resolve, initialise and check the plugin of `config`, then create its
/// instance; with it, what it is (`passwd 0.1.0 from builtin:passwd, ABI 1.1`).
/// Plugins are never unloaded: their code lives until exit.
pub fn instantiate(config: &PluginConfig, kind: Kind) -> Result<(Instance, String), LoadError> {
    let (label, init) = match &config.source {
        PluginSource::Builtin(name) => {
            let label = format!("builtin:{name}");
            let fail = |reason: String| LoadError::new(&label, kind, reason);
            if let Some((_, init)) = BUILTINS.iter().find(|(n, _)| n == name) {
                (label, *init)
            } else if let Some((_, file)) = BUNDLED.iter().find(|(n, _)| n == name) {
                let path = bundled_object(file).map_err(fail)?;
                let init = open_shared_object(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
                (format!("{label} ({})", path.display()), init)
            } else {
                let names = BUILTINS.iter().map(|(n, _)| *n).chain(BUNDLED.iter().map(|(n, _)| *n));
                let known: Vec<_> = names.map(|n| format!("builtin:{n}")).collect();
                return Err(fail(format!("no such built-in backend (known: {})", known.join(", "))));
            }
        }
        PluginSource::Path(path) => {
            let label = path.display().to_string();
            let init = open_shared_object(path).map_err(|e| LoadError::new(&label, kind, e))?;
            (label, init)
        }
    };
    let fail = |reason: String| LoadError::new(&label, kind, reason);
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
        plugin.new_instance(&settings).map_err(|r| LoadError { about_settings: true, ..fail(r.reason) })?;
    let (major, minor) = plugin.abi();
    // At debug: under inetd every connection loads the plugins. A standalone start says it once.
    log::debug(&format!(
        "plugin={} version={} section={} loaded={label} abi={major}.{minor} threadsafe={}",
        plugin.name(),
        plugin.version().unwrap_or("?"),
        kind.section(),
        if plugin.threadsafe() { "yes" } else { "no" }
    ));
    let about = format!(
        "{} {} from {label}, ABI {major}.{minor}{}",
        plugin.name(),
        plugin.version().unwrap_or("?"),
        if plugin.threadsafe() { ", thread-safe" } else { "" }
    );
    Ok((instance, about))
}

/// dlopen a plugin (`RTLD_NOW | RTLD_LOCAL`) and find `odmr_plugin_init`.
fn open_shared_object(path: &Path) -> Result<odmr_plugin_init_fn, String> {
    let library = open_library(path)?;
    // SAFETY: the symbol is declared by the ABI with exactly this type.
    unsafe { library.get::<odmr_plugin_init_fn>(b"odmr_plugin_init\0") }
        .map(|symbol| *symbol)
        .map_err(|e| format!("does not export odmr_plugin_init: {}", dl_reason(&e, path)))
}

/// dlopen `path` (`RTLD_NOW | RTLD_LOCAL`) for good: the one loader of plugins, also for the
/// private symbols of a bundled object. The reason names no path (the caller's message does).
pub(crate) fn open_library(path: &Path) -> Result<&'static libloading::os::unix::Library, String> {
    use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};
    match std::fs::metadata(path) {
        Err(e) => return Err(format!("cannot open: {e}")),
        Ok(meta) if !meta.is_file() => return Err("not a shared object: not a regular file".into()),
        Ok(_) => {}
    }
    // SAFETY: loading runs the object's initialisers; that is what the operator
    // configured (or the object shipped with odmrd). The library is never
    // unloaded (leaked below), so symbols taken from it stay valid for the
    // life of the process.
    let library = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }
        .map_err(|e| format!("cannot be loaded (dlopen): {}", dl_reason(&e, path)))?;
    Ok(Box::leak(Box::new(library)))
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

/// A backend's findings from its `check` call, or the status it failed with
/// (`Unsupported`: it has no `check`).
pub type Findings = Result<Vec<(LogLevel, String)>, odmr_api::Status>;

/// The two backends a session needs.
#[derive(Clone)]
pub struct Backends {
    /// `[credentials]`
    pub credentials: CredentialStore,
    /// `[queue]`
    pub queue: MailQueue,
    /// What each is and where it came from, for the start-up line.
    loaded: [String; 2],
}

impl Backends {
    /// Load both plugins of a configuration; an error names the file, line, section and key.
    pub fn load(config: &Config) -> Result<Backends, ConfigError> {
        let (credentials, about_credentials) =
            instantiate(&config.credentials, Kind::Credentials).map_err(|e| e.locate(config))?;
        let (queue, about_queue) = instantiate(&config.queue, Kind::Queue).map_err(|e| e.locate(config))?;
        Ok(Backends {
            credentials: credentials.credentials().expect("instantiate checked the section"),
            queue: queue.queue().expect("instantiate checked the section"),
            loaded: [about_credentials, about_queue],
        })
    }

    /// What was loaded, for the start-up line: `credentials="passwd 0.1.0 from builtin:passwd,
    /// ABI 1.1" queue="..."`.
    pub fn describe(&self) -> String {
        format!("credentials=\"{}\" queue=\"{}\"", self.loaded[0], self.loaded[1])
    }

    /// Each backend's own checks (ABI 1.1 `check`, for `--check-config`): its section, and its
    /// findings (warnings, and errors: what would fail in service). A backend without the call
    /// reports nothing.
    pub fn check(&self) -> Vec<(&'static str, &str, Findings)> {
        let credentials = self.credentials.instance();
        let queue = self.queue.instance();
        vec![
            (Kind::Credentials.section(), credentials.plugin().name(), credentials.check()),
            (Kind::Queue.section(), queue.plugin().name(), queue.check()),
        ]
    }
}
