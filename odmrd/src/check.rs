//! `odmrd --check-config`: everything that would break the running service, checked before it
//! runs, and said as it is checked.
//!
//! Owns the list of checks and their verdicts: what was checked goes to stdout (`checked: ...`),
//! each problem is logged as an error or a warning (and so reaches the person at the terminal
//! whatever `[log]` says). Only errors fail the check (exit 78); warnings are things that work
//! today but deserve a look. Run as root with `[server] user` set, the checks after resolving
//! the user run as that user (the process drops to it for good), as the service will: credential files
//! readable, the lock directory writable, the queue loaded, sendmail executable.
//!
//! Does not: start anything, bind the port, or change a file (a missing lock directory is
//! reported as "will be created at start", not created).

use crate::backend::Backends;
use crate::config::{Config, PluginSource};
use crate::log;
use crate::start::{self, ServiceUser};
use nix::unistd::{access, AccessFlags};
use odmr_api::{LogLevel, Status};
use std::path::Path;

/// The verdicts so far.
#[derive(Debug, Default)]
pub struct Verdicts {
    pub errors: usize,
}

impl Verdicts {
    fn checked(&self, what: &str) {
        println!("checked: {what}");
    }

    fn error(&mut self, what: &str) {
        self.errors += 1;
        log::error(&format!("error: {what}"));
    }

    /// An error about `key` of `section`, located in `config` like the parser's own.
    fn error_at(&mut self, config: &Config, section: &str, key: Option<&str>, message: String) {
        self.error(&config.error(section, key, message).to_string());
    }

    /// Counted through [`log::warnings_logged`], like the backends' warnings.
    fn warning(&self, what: &str) {
        log::warn(&format!("warning: {what}"));
    }
}

/// Check the configuration at `path`; Ok with the warnings' count, or Err with a summary when
/// anything is an error.
pub fn run(path: &Path) -> Result<usize, String> {
    log::echo_to_person(true);
    let mut v = Verdicts::default();
    let warnings_before = log::warnings_logged();
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            v.error(&e.to_string());
            return Err(format!("{}: configuration has errors", path.display()));
        }
    };
    log::init(&config.log);
    v.checked(&format!("{} parses", path.display()));
    check_all(&config, &mut v);
    let warnings = log::warnings_logged() - warnings_before;
    let summary = match warnings {
        0 => String::new(),
        1 => " (1 warning)".to_string(),
        n => format!(" ({n} warnings)"),
    };
    if v.errors > 0 {
        let errors = if v.errors == 1 { "1 error".to_string() } else { format!("{} errors", v.errors) };
        return Err(format!("{}: {errors}{summary}", path.display()));
    }
    println!("{}: configuration OK{summary}", path.display());
    Ok(warnings)
}

fn check_all(config: &Config, v: &mut Verdicts) {
    let user = match start::service_user(config) {
        Ok(user) => user,
        Err(e) => {
            v.error(&e);
            None
        }
    };
    let root = nix::unistd::geteuid().is_root();
    match (&user, root) {
        (Some(u), true) => v.checked(&format!(
            "[server] user {}: uid {}, gid {}; the checks below run as {}",
            u.name, u.uid, u.gid, u.name
        )),
        (Some(u), false) => v.warning(&format!(
            "[server] user {}: uid {}, gid {}; not root, so the checks below run as {} \
             (run --check-config as root to check as {})",
            u.name,
            u.uid,
            u.gid,
            crate::locks::who_am_i(),
            u.name
        )),
        (None, _) => {
            v.checked(&format!("no [server] user; the checks below run as {}", crate::locks::who_am_i()))
        }
    }
    // Before becoming the service user: could root create a missing lock directory?
    let lock_directory = &config.server.lock_directory;
    let missing_lock_directory = !lock_directory.is_dir();
    if missing_lock_directory {
        check_creatable(config, v, user.as_ref().filter(|_| root));
    }
    if let (Some(u), true) = (&user, root) {
        // For good: the process exits after checking, and access(2) judges by the real ids.
        if let Err(e) = crate::server::drop_privileges(&u.name) {
            v.error_at(config, "server", Some("user"), e);
            return;
        }
    }
    if !missing_lock_directory {
        match access(lock_directory, AccessFlags::W_OK | AccessFlags::X_OK) {
            Ok(()) => v.checked(&format!("[server] lock_directory {} is writable", lock_directory.display())),
            Err(e) => v.error_at(
                config,
                "server",
                Some("lock_directory"),
                format!(
                    "{} is not writable by {}: {e} (chown it to the service user)",
                    lock_directory.display(),
                    crate::locks::who_am_i()
                ),
            ),
        }
    }
    match Backends::load(config) {
        Ok(backends) => {
            v.checked(&format!("backends load and read their files: {}", backends.describe()));
            check_backends(config, v, &backends);
            check_granted_maildirs(config, v, &backends);
        }
        Err(e) => v.error(&e.to_string()),
    }
    match start::load_identity(config) {
        Ok(Some(_)) => v.checked("[tls] certificate and key load and match"),
        Ok(None) => {}
        Err(e) => v.error(&e),
    }
    check_sendmail(config, v);
}

/// Each backend's own checks (ABI 1.1 `check`): what it checked, its warnings and its errors,
/// located at the key they name.
fn check_backends(config: &Config, v: &mut Verdicts, backends: &Backends) {
    for (section, plugin, findings) in backends.check() {
        match findings {
            Ok(findings) => {
                for (level, message) in findings {
                    let located = crate::backend::locate(config, section, plugin, &message).to_string();
                    match level {
                        LogLevel::Error => v.error(&located),
                        LogLevel::Warn => v.warning(&located),
                        LogLevel::Info | LogLevel::Debug => v.checked(&format!("[{section}] {message}")),
                    }
                }
            }
            Err(Status::Unsupported) => {
                v.checked(&format!("[{section}] {plugin} has no checks of its own (a plugin of ABI 1.0)"))
            }
            Err(status) => {
                v.error_at(config, section, None, format!("{plugin}: its checks failed: {status}"))
            }
        }
    }
}

/// Granted domains whose maildir does not exist yet (`builtin:maildir`): their customers get
/// 453 until the MTA first delivers there, which is also what a typo in a grant or in
/// `directory` looks like, so say which ones. And files the backend moved aside (two BSMTP
/// messages run together) that wait for the operator.
fn check_granted_maildirs(config: &Config, v: &mut Verdicts, backends: &Backends) {
    if config.queue.source != PluginSource::Builtin("maildir".into()) {
        return;
    }
    let Some(directory) = config.queue.settings.iter().find(|s| s.key == "directory") else { return };
    // A store that cannot list its accounts (ABI 1.0, vpopmail) is simply not checked here.
    let Ok(accounts) = backends.credentials.accounts() else { return };
    let mut missing = std::collections::BTreeMap::new();
    let mut present = 0;
    for account in accounts {
        for domain in account.domains {
            let maildir = directory.value.replace("{domain}", &domain);
            if Path::new(&maildir).is_dir() {
                present += 1;
                warn_of_quarantined_files(v, &domain, Path::new(&maildir));
            } else {
                missing.entry(domain).or_insert((maildir, account.user.clone()));
            }
        }
    }
    // With no maildir at all, the backend's own check has already said so once.
    if present == 0 {
        return;
    }
    for (domain, (maildir, user)) in missing {
        v.warning(&format!(
            "{}:{}: [queue] directory: {domain}, granted to {user}, has no maildir yet ({maildir}): \
             its customer gets 453 until the MTA first delivers there",
            config.path.display(),
            directory.line
        ));
    }
}

/// Files in `maildir`'s quarantine (they are never collected): how many, and what to do.
fn warn_of_quarantined_files(v: &mut Verdicts, domain: &str, maildir: &Path) {
    let quarantine = maildir.join(odmr_backend_maildir::spool::QUARANTINE_DIR);
    let Ok(entries) = std::fs::read_dir(&quarantine) else { return };
    let count = entries.filter_map(Result::ok).filter(|e| e.path().is_file()).count();
    if count > 0 {
        v.warning(&format!(
            "{domain}: {count} file(s) in {} are not collected (each holds BSMTP messages run \
             together): split each into one message per file and move the parts into new/",
            quarantine.display()
        ));
    }
}

/// A missing lock directory: fine when its nearest existing parent lets us create it.
fn check_creatable(config: &Config, v: &mut Verdicts, for_user: Option<&ServiceUser>) {
    let dir = &config.server.lock_directory;
    let parent = dir.ancestors().skip(1).find(|p| p.exists()).unwrap_or(Path::new("/"));
    let verdict = if parent.is_dir() {
        access(parent, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|e| e.to_string())
    } else {
        Err("not a directory".to_string())
    };
    match verdict {
        Ok(()) => {
            let owner = for_user.map(|u| format!(", owned by {}", u.name)).unwrap_or_default();
            v.checked(&format!(
                "[server] lock_directory {} is missing; it will be created at start (mode 0750{owner})",
                dir.display()
            ));
        }
        Err(e) => v.error_at(
            config,
            "server",
            Some("lock_directory"),
            format!(
                "{} does not exist and {} cannot create it in {}: {e} \
                         (create it, e.g. with the shipped tmpfiles.d line)",
                dir.display(),
                crate::locks::who_am_i(),
                parent.display()
            ),
        ),
    }
}

/// `[bounce] sendmail` must exist and be executable (by the service user).
fn check_sendmail(config: &Config, v: &mut Verdicts) {
    let Some(program) = config.bounce.sendmail.first() else { return };
    let path = Path::new(program);
    let problem = match std::fs::metadata(path) {
        Err(e) => Some(format!("{program}: {e}")),
        Ok(meta) if !meta.is_file() => Some(format!("{program} is not a file")),
        Ok(_) => access(path, AccessFlags::X_OK)
            .err()
            .map(|e| format!("{program} is not executable by {}: {e}", crate::locks::who_am_i())),
    };
    match problem {
        None => v.checked(&format!("[bounce] sendmail {program} is executable")),
        Some(why) => v.error_at(
            config,
            "bounce",
            Some("sendmail"),
            format!("{why}; DSNs could not be sent and bounced recipients would stay queued"),
        ),
    }
}
