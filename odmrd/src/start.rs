//! From a configuration file to serving: the steps between `main`'s choice of a run mode and the
//! first session, shared by the inetd and standalone modes and by a SIGHUP reload.
//!
//! Owns: reading the configuration and setting the log target, creating the lock directory for
//! the service user, binding and dropping privileges (standalone), loading the backends, and
//! the start-up failure's 421 to an inetd client. Every failure is logged (and echoed to a
//! person at a terminal) before it is returned, with a [`Failure`] kind for `main`'s exit status.
//!
//! Does not: accept connections or signals ([`crate::server`]), check more than a start needs
//! ([`crate::check`]), or choose the run mode (`main`).

use crate::backend::Backends;
use crate::config::Config;
use crate::locks;
use crate::log;
use crate::server;
use crate::session::Start;
use crate::tls::Identity;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

/// Why odmrd could not start; `main` turns the kind into an exit status.
#[derive(Debug)]
pub enum Failure {
    /// The configuration is wrong (EX_CONFIG).
    Config(String),
    /// A resource is not available, e.g. the port is in use (EX_UNAVAILABLE).
    Unavailable(String),
    /// Switching to the service user failed (EX_NOPERM).
    NoPermission(String),
    /// The operating system failed us (EX_OSERR).
    Os(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Config(m) | Failure::Unavailable(m) | Failure::NoPermission(m) | Failure::Os(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Where sessions come from, as the command line asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    /// `--inetd`: one session on stdin/stdout; `--inetd --tls`: implicit TLS.
    Inetd { tls: bool },
    /// `--listen ADDR:PORT`: standalone on that address.
    On(SocketAddr),
    /// As `[server] listen` says: standalone when it is set, else inetd.
    AsConfigured,
}

/// The service user's identity, resolved from `[server] user`.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Resolve `[server] user`; an error names the file, line and key.
pub fn service_user(config: &Config) -> Result<Option<ServiceUser>, String> {
    let Some(name) = &config.server.user else { return Ok(None) };
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) => {
            Ok(Some(ServiceUser { name: name.clone(), uid: user.uid.as_raw(), gid: user.gid.as_raw() }))
        }
        Ok(None) => Err(config
            .error("server", Some("user"), format!("no such user {name:?} (create it, or remove the key)"))
            .to_string()),
        Err(e) => Err(config.error("server", Some("user"), format!("looking up {name:?}: {e}")).to_string()),
    }
}

/// Create the lock directory when missing: as root for the service user (when `[server] user`
/// is set), otherwise as ourselves. A failure is logged at error level but does not stop the
/// start: sessions that need a lock answer 451 and log the same reason.
pub fn prepare_lock_directory(config: &Config, user: Option<&ServiceUser>) {
    let root = nix::unistd::geteuid().is_root();
    let owner = user.filter(|_| root).map(|u| (u.uid, u.gid));
    match locks::prepare_directory(&config.server.lock_directory, owner) {
        Ok(true) => log::Event::new("created")
            .field("lock_directory", config.server.lock_directory.display())
            .field("mode", "0750")
            .info(),
        Ok(false) => {}
        Err(why) => log::error(&config.error("server", Some("lock_directory"), why).to_string()),
    }
}

/// Read the configuration at `path`, for a start or a reload.
pub fn load_config(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::Config(format!("configuration error: {e}")))
}

/// Load the backends of `config`.
pub fn load_backends(config: &Config) -> Result<Backends, Failure> {
    Backends::load(config).map_err(|e| Failure::Config(e.to_string()))
}

/// The `[tls]` identity, loaded; a certificate close to its end is a warning. An error names
/// the file, line and key.
pub fn load_identity(config: &Config) -> Result<Option<Arc<Identity>>, String> {
    let Some(files) = &config.tls.identity else { return Ok(None) };
    match Identity::load(&files.certificate, &files.key) {
        Ok(identity) => {
            let days = identity.days_left(std::time::SystemTime::now());
            if days < crate::tls::EXPIRY_WARNING_DAYS {
                let message = format!("{} expires in {days} days", files.certificate.display());
                log::warn(&config.error("tls", Some("certificate"), message).to_string());
            }
            Ok(Some(Arc::new(identity)))
        }
        Err(e) => {
            let key = if e.path == files.key { "key" } else { "certificate" };
            Err(config.error("tls", Some(key), e.to_string()).to_string())
        }
    }
}

/// Serve as `listen` says with the configuration at `path` until the end (inetd: one session;
/// standalone: until SIGTERM/SIGINT). A failure has been logged and, under inetd, answered
/// with 421.
pub fn serve(path: PathBuf, listen: Listen) -> Result<(), Failure> {
    // A person who starts odmrd from a terminal sees what goes wrong, whatever [log] says.
    log::echo_to_person(log::stderr_is_terminal());
    let inetd = matches!(listen, Listen::Inetd { .. })
        || (listen == Listen::AsConfigured && server::stdin_is_socket());
    let mut hostname = None;
    let result = serve_from(&path, listen, &mut hostname);
    if let Err(failure) = &result {
        log::error(&failure.to_string());
        if inetd {
            server::refuse_inetd_client(&hostname.unwrap_or_else(crate::config::system_hostname));
        }
    }
    result
}

fn serve_from(path: &Path, listen: Listen, hostname: &mut Option<String>) -> Result<(), Failure> {
    let mut config = load_config(path)?;
    *hostname = Some(config.server.hostname.clone());
    match listen {
        Listen::Inetd { .. } => config.server.listen = None,
        Listen::On(addr) => config.server.listen = Some(addr),
        Listen::AsConfigured => {}
    }
    log::init(&config.log);
    let user = service_user(&config).map_err(Failure::Config)?;
    prepare_lock_directory(&config, user.as_ref());
    let identity = load_identity(&config).map_err(Failure::Config)?;
    let Some(addr) = config.server.listen else {
        let start = match listen {
            Listen::Inetd { tls: true } if identity.is_none() => {
                let why = config.error("tls", None, "--tls needs [tls] certificate and key");
                return Err(Failure::Config(why.to_string()));
            }
            Listen::Inetd { tls: true } => Start::ImplicitTls,
            _ => Start::Clear,
        };
        let backends = load_backends(&config)?;
        server::ignore_habitual_signals();
        return server::run_inetd(&config, &backends, identity.as_deref(), start)
            .map(drop)
            .map_err(|e| Failure::Os(format!("fatal: {e}")));
    };
    let bind = |addr: SocketAddr| {
        server::bind(addr, config.server.listen_backlog)
            .map_err(|e| Failure::Unavailable(format!("cannot listen on {addr}: {e}")))
    };
    let listener = bind(addr)?;
    let tls_listener = config.server.listen_tls.map(bind).transpose()?;
    if let Some(user) = &config.server.user {
        server::drop_privileges(user)
            .map_err(|e| Failure::NoPermission(config.error("server", Some("user"), e).to_string()))?;
    }
    let backends = load_backends(&config)?;
    log::info(&format!("event=plugins {}", backends.describe()));
    let config = Arc::new(config);
    // What the periodic expiry pass works with: the serving pair, replaced by each reload.
    let latest = Arc::new(Mutex::new((Arc::clone(&config), backends.clone())));
    let latest_for_expiry = Arc::clone(&latest);
    crate::expire::spawn_periodic(move || {
        latest_for_expiry.lock().unwrap_or_else(PoisonError::into_inner).clone()
    });
    // SIGHUP: the configuration, the backends and the TLS identity (a renewed certificate).
    let reload = move || -> Result<server::Serving, String> {
        let mut fresh = load_config(path).map_err(|f| f.to_string())?;
        fresh.server.listen = Some(addr);
        let backends = load_backends(&fresh).map_err(|f| f.to_string())?;
        let identity = load_identity(&fresh)?;
        log::init(&fresh.log);
        let fresh = Arc::new(fresh);
        *latest.lock().unwrap_or_else(PoisonError::into_inner) = (Arc::clone(&fresh), backends.clone());
        Ok((fresh, backends, identity))
    };
    server::run_standalone(config, backends, identity, listener, tls_listener, &reload)
        .map_err(|e| Failure::Os(format!("fatal: {e}")))
}
