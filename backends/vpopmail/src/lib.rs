//! `builtin:vpopmail`: a credential backend over an existing vpopmail
//! installation, so customers collect their mail with the addresses and
//! passwords they already use for POP and SMTP AUTH.
//!
//! This crate owns the way from a login to an account, as vpopmail's own
//! `vchkpw` takes it:
//! - the login `user@domain` (or `user%domain`, `user/domain`: the configured
//!   separators, like vpopmail's `ATCHARS`; a bare `user` takes the default
//!   domain) is lower-cased and split at the first separator;
//! - the domain is looked up in qmail's users database ([`assign`]:
//!   `users/cdb`, else `users/assign`); an alias domain resolves to its real
//!   domain and that domain's directory. vpopmail's hashed directory layout
//!   is never computed;
//! - the account is read from that directory ([`vpasswd`]: `vpasswd.cdb`,
//!   else `vpasswd`), with a small cdb reader of its own ([`cdb`]);
//! - the account's flag bits ([`flags`]: the `gid` field OR-ed with the
//!   domain's limits file, as `vlimits_setflags()` does) refuse it when they
//!   include one of `refuse_flags` (default `NO_SMTP`, what vpopmail's own SMTP AUTH refuses);
//! - CRAM-MD5 is served from the clear-text 8th field; an account without it
//!   is refused with a log line that says so;
//! - the domains it may collect are its real domain, that domain's alias
//!   domains, and whatever the optional [`grants`] file adds.
//!
//! Nothing is cached: every lookup opens the current files (vpopmail and
//! qmail-newu replace them by `rename()`, so no locks are needed), and cdb
//! lookups are a few seeks, so new accounts and changed passwords work at
//! once, without a restart.
//!
//! It does not verify CRAM-MD5 responses (odmrd's `sasl` does, from the
//! secret returned here), does not map statuses to replies (the host does),
//! and never writes to fds 0-2: everything goes through the host's log, and no
//! log line ever contains a password or a crypted hash.
//!
//! Statuses: unknown domain or user → `NotFound`; refused by its flags →
//! `Denied`; no clear-text password → `Unsupported`; a store that cannot be
//! read (permissions, a corrupt cdb, users database missing) → `TempFail`.
#![deny(unsafe_code)]

pub mod assign;
pub mod cdb;
pub mod flags;
pub mod grants;
pub mod vpasswd;

use assign::Users;
use odmr_api::names::is_valid_domain;
use odmr_api::settings::Settings;
use odmr_api::{Credentials, Host, Instance, LogLevel, Secret, Status};
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;
use vpasswd::{Entry, Lookup};

odmr_api::export_plugin!(
    #[allow(unsafe_code)]
    fn vpopmail_plugin_init, "vpopmail", Vpopmail: [credentials]
);

/// qmail's users directory, as vpopmail is usually built (`QMAILDIR/users`).
pub const DEFAULT_QMAIL_USERS: &str = "/var/qmail/users";
/// vpopmail's home, as vpopmail is usually installed.
pub const DEFAULT_VPOPMAIL_HOME: &str = "/home/vpopmail";
/// Separators accepted besides `@`; vpopmail's `ATCHARS` is `@%/`.
pub const DEFAULT_SEPARATORS: &str = "%/";

/// The backend instance. It holds only configuration; every lookup reads the
/// current files.
pub struct Vpopmail {
    log: Host,
    users: Users,
    home: PathBuf,
    /// Always contains `@`.
    separators: Vec<char>,
    default_domain: Option<String>,
    refuse: u32,
    grants: Option<PathBuf>,
    /// Warnings about stale files already logged (each once per state).
    warned: Mutex<HashSet<String>>,
}

/// An account found for a login.
struct Account {
    /// The local part, lower case.
    local: String,
    /// The domain the customer logged in with (maybe an alias), lower case.
    login_domain: String,
    /// The real domain, lower case.
    real: String,
    dir: PathBuf,
    entry: Entry,
}

impl Account {
    fn name(&self) -> String {
        format!("{}@{}", self.local, self.real)
    }

    /// `customer1@example.com`, or `customer1@example.com (logged in as customer1@alias.example)`.
    fn describe(&self) -> String {
        if self.login_domain == self.real {
            self.name()
        } else {
            format!("{} (logged in as {}@{})", self.name(), self.local, self.login_domain)
        }
    }
}

impl Instance for Vpopmail {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        Self::open(host, config)
    }
}

impl Credentials for Vpopmail {
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        let account = self.account(user)?;
        self.check_flags(&account)?;
        match &account.entry.clear {
            Some(clear) => Ok(Secret::Plain(clear.clone())),
            None => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "vpopmail: account {} has no clear-text password (vpopmail built without \
                         --enable-clear-passwd?); CRAM-MD5 needs the 8th field of its line in {}",
                        account.describe(),
                        vpasswd::text_path(&account.dir).display()
                    ),
                );
                Err(Status::Unsupported)
            }
        }
    }

    /// A clear password (PLAIN or LOGIN under TLS) against `pw_passwd`, the crypt hash vchkpw
    /// checks; the clear-text field only when there is no hash.
    fn verify_password(&self, user: &str, password: &[u8]) -> Result<bool, Status> {
        let account = self.account(user)?;
        self.check_flags(&account)?;
        match (&account.entry.crypted, &account.entry.clear) {
            (Some(hash), _) => Ok(pwhash::unix::verify(password, hash)),
            (None, Some(clear)) => Ok(subtle::ConstantTimeEq::ct_eq(clear.as_slice(), password).into()),
            (None, None) => Err(Status::Unsupported),
        }
    }

    fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        let account = self.account(user)?;
        self.check_flags(&account)?;
        let mut domains = vec![account.real.clone()];
        let aliases = self.users.aliases(&account.real).map_err(|err| self.users_error(&err))?;
        domains.extend(aliases);
        if let Some(path) = &self.grants {
            let grants = self.read_grants(path).map_err(|err| {
                let msg = format!("vpopmail: cannot read grants file {}: {err}", path.display());
                self.log.log(LogLevel::Error, &msg);
                Status::TempFail
            })?;
            for name in [account.name(), format!("{}@{}", account.local, account.login_domain)] {
                if let Some(granted) = grants.by_account.get(&name) {
                    domains.extend(granted.iter().cloned());
                }
            }
        }
        let mut seen = HashSet::new();
        domains.retain(|d| seen.insert(d.clone()));
        Ok(domains)
    }
}

impl Vpopmail {
    /// Read the configuration; `log` receives the backend's log lines.
    fn open(log: Host, config: &[(String, String)]) -> Result<Vpopmail, String> {
        let mut settings = Settings::new(config)?;
        let users_dir = settings.take_path("qmail_users")?;
        let home = settings.take_path("vpopmail_home")?;
        let separators = settings.take_with("separators", |value| {
            match value.chars().find(|c| !c.is_ascii_punctuation() || ":.-_\\#".contains(*c)) {
                Some(bad) => Err(format!(
                    "'{bad}' cannot separate user and domain \
                     (use punctuation such as % or /; '@' is always accepted)"
                )),
                None => Ok(value),
            }
        })?;
        let default_domain = settings.take_with("default_domain", |value| {
            let domain = value.to_ascii_lowercase();
            if is_valid_domain(&domain) {
                Ok(domain)
            } else {
                Err(format!("'{value}' is not a domain name"))
            }
        })?;
        let refuse = settings.take_with("refuse_flags", flags::parse_mask)?.unwrap_or(flags::DEFAULT_REFUSE);
        let grants = settings.take_path("grants")?;
        settings.finish()?;
        let home_given = home.is_some();
        let users_dir = users_dir.unwrap_or_else(|| PathBuf::from(DEFAULT_QMAIL_USERS));
        let home = home.unwrap_or_else(|| PathBuf::from(DEFAULT_VPOPMAIL_HOME));
        let separators = separators.unwrap_or(DEFAULT_SEPARATORS);
        let mut separators: Vec<char> = separators.chars().collect();
        if !separators.contains(&'@') {
            separators.insert(0, '@');
        }
        let backend = Vpopmail {
            log,
            users: Users::new(users_dir),
            home,
            separators,
            default_domain,
            refuse,
            grants,
            warned: Mutex::new(HashSet::new()),
        };
        backend.check_at_start(home_given)?;
        Ok(backend)
    }

    /// Reads what can be read now, so that a wrong path is a configuration
    /// error at start rather than a 451 for every customer.
    fn check_at_start(&self, home_given: bool) -> Result<(), String> {
        let (cdb, assign) = (self.users.cdb_path(), self.users.assign_path());
        let source = match cdb::Cdb::open(&cdb) {
            Ok(Some(_)) => cdb.clone(),
            Ok(None) => match assign::read_file(&assign) {
                Ok(_) => assign.clone(),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    return Err(format!(
                        "key 'qmail_users': neither {} nor {} exists (qmail's users directory; \
                         the default is {DEFAULT_QMAIL_USERS})",
                        cdb.display(),
                        assign.display()
                    ))
                }
                Err(err) => {
                    return Err(format!("key 'qmail_users': cannot read {}: {err}", assign.display()))
                }
            },
            Err(err) => return Err(format!("key 'qmail_users': cannot read {}: {err}", cdb.display())),
        };
        // Walk it once: a corrupt cdb shows up here.
        self.users
            .aliases("")
            .map_err(|err| format!("key 'qmail_users': cannot read {}: {err}", source.display()))?;
        self.warn_if_stale(&assign, &cdb, "qmail-newu");
        if home_given && !self.home.is_dir() {
            return Err(format!("key 'vpopmail_home': {} is not a directory", self.home.display()));
        }
        if let Some(path) = &self.grants {
            self.read_grants(path)
                .map_err(|err| format!("key 'grants': cannot read {}: {err}", path.display()))?;
        }
        self.log.log(
            LogLevel::Info,
            &format!(
                "vpopmail: domains from {}, accounts refused when their flags include {}",
                source.display(),
                if self.refuse == 0 {
                    "(nothing: refuse_flags is empty)".to_owned()
                } else {
                    flags::describe(self.refuse)
                }
            ),
        );
        Ok(())
    }

    /// The account a login names, or why not (logged).
    fn account(&self, login: &str) -> Result<Account, Status> {
        let login = login.to_ascii_lowercase();
        let (local, login_domain) = match login.find(|c| self.separators.contains(&c)) {
            Some(at) => (login[..at].to_owned(), login[at + 1..].to_owned()),
            None => match self.default_domain()? {
                Some(domain) => (login.clone(), domain),
                None => {
                    self.info(&format!(
                        "login '{login}' names no domain (user@domain), and there is no default domain"
                    ));
                    return Err(Status::NotFound);
                }
            },
        };
        if local.is_empty() || local.bytes().any(|b| b == b':' || b.is_ascii_control()) {
            self.info(&format!("login '{login}' has no usable user name"));
            return Err(Status::NotFound);
        }
        if !is_valid_domain(&login_domain) {
            self.info(&format!("login '{login}': '{login_domain}' is not a domain name"));
            return Err(Status::NotFound);
        }
        let assignment = match self.users.lookup(&login_domain) {
            Ok(Some(assignment)) => assignment,
            Ok(None) => {
                self.info(&format!("unknown domain {login_domain} (not in qmail's users database)"));
                return Err(Status::NotFound);
            }
            Err(err) => return Err(self.users_error(&err)),
        };
        if !is_valid_domain(&assignment.real) {
            self.info(&format!(
                "{login_domain} is assigned to '{}', which is not a vpopmail domain",
                assignment.real
            ));
            return Err(Status::NotFound);
        }
        let dir = assignment.dir;
        let (cdb, text) = (vpasswd::cdb_path(&dir), vpasswd::text_path(&dir));
        self.warn_if_stale(&text, &cdb, "vmkpasswd");
        let entry = match vpasswd::lookup(&dir, &local) {
            Ok(Lookup::Found(entry)) => entry,
            Ok(Lookup::NoSuchUser) => {
                self.info(&format!("no account {local} in domain {}", assignment.real));
                return Err(Status::NotFound);
            }
            Ok(Lookup::NoStore) => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "vpopmail: domain {} has neither {} nor {}",
                        assignment.real,
                        cdb.display(),
                        text.display()
                    ),
                );
                return Err(Status::NotFound);
            }
            Err(err) => {
                self.log.log(
                    LogLevel::Error,
                    &format!(
                        "vpopmail: cannot read the accounts of {} in {}: {err}",
                        assignment.real,
                        dir.display()
                    ),
                );
                return Err(Status::TempFail);
            }
        };
        Ok(Account { local, login_domain, real: assignment.real, dir, entry })
    }

    /// `Denied` (logged) when the account's flags include a refused bit.
    fn check_flags(&self, account: &Account) -> Result<(), Status> {
        let Ok(gid) = account.entry.gid else {
            self.log.log(
                LogLevel::Error,
                &format!(
                    "vpopmail: account {}: the gid (flags) field is not a number; refused",
                    account.describe()
                ),
            );
            return Err(Status::Denied);
        };
        let mut effective = gid;
        let mut from_limits = 0;
        if gid & flags::V_OVERRIDE == 0 {
            from_limits = self.domain_limits(&account.dir)?;
            effective |= from_limits;
        }
        let refused = effective & self.refuse;
        if refused == 0 {
            return Ok(());
        }
        let origin = match (gid & refused != 0, from_limits & refused != 0) {
            (true, false) => "its vpasswd gid field",
            (false, true) => "the domain's limits",
            _ => "its vpasswd gid field and the domain's limits",
        };
        self.info(&format!(
            "account {} is disabled: {origin} set{} {}",
            account.describe(),
            if origin.contains(" and ") { "" } else { "s" },
            flags::describe(refused)
        ));
        Err(Status::Denied)
    }

    /// The flag bits of the domain's limits: `.qmailadmin-limits` in its
    /// directory, else vpopmail's `etc/vlimits.default`, else none.
    fn domain_limits(&self, dir: &Path) -> Result<u32, Status> {
        for path in [dir.join(".qmailadmin-limits"), self.home.join("etc/vlimits.default")] {
            match assign::read_file(&path) {
                Ok(content) => return Ok(flags::limits_mask(&content)),
                Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
                Err(err) => {
                    let msg = format!("vpopmail: cannot read limits file {}: {err}", path.display());
                    self.log.log(LogLevel::Error, &msg);
                    return Err(Status::TempFail);
                }
            }
        }
        Ok(0)
    }

    /// The domain for logins without a separator: `default_domain`, else
    /// vpopmail's `etc/defaultdomain`, else none.
    fn default_domain(&self) -> Result<Option<String>, Status> {
        if let Some(domain) = &self.default_domain {
            return Ok(Some(domain.clone()));
        }
        let path = self.home.join("etc/defaultdomain");
        match std::fs::read(&path) {
            Ok(content) => {
                let domain = String::from_utf8_lossy(&content).trim().to_ascii_lowercase();
                Ok((!domain.is_empty()).then_some(domain))
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => {
                self.log.log(LogLevel::Error, &format!("vpopmail: cannot read {}: {err}", path.display()));
                Err(Status::TempFail)
            }
        }
    }

    fn read_grants(&self, path: &Path) -> io::Result<grants::Grants> {
        let content = assign::read_file(path)?;
        let (grants, warnings) = grants::parse(&content);
        for warning in warnings {
            self.warn_once(format!("vpopmail: grants file {} {warning}", path.display()));
        }
        Ok(grants)
    }

    fn users_error(&self, err: &io::Error) -> Status {
        self.log.log(
            LogLevel::Error,
            &format!(
                "vpopmail: cannot read qmail's users database ({} or {}): {err}",
                self.users.cdb_path().display(),
                self.users.assign_path().display()
            ),
        );
        Status::TempFail
    }

    /// Warns (once per state of the two files) when `text` is newer than the
    /// `cdb` built from it: someone edited it without running `tool`, and
    /// the cdb, which is what vpopmail and odmrd read, does not have the edit.
    fn warn_if_stale(&self, text: &Path, cdb: &Path, tool: &str) {
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let (Some(text_time), Some(cdb_time)) = (mtime(text), mtime(cdb)) else { return };
        if text_time > cdb_time {
            let secs =
                |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            self.warn_once(format!(
                "vpopmail: {} is newer than {} (modified at {} and {}); run {tool}: the cdb is what is read",
                text.display(),
                cdb.display(),
                secs(text_time),
                secs(cdb_time)
            ));
        }
    }

    fn warn_once(&self, msg: String) {
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned.len() > 1000 {
            warned.clear();
        }
        if warned.insert(msg.clone()) {
            self.log.log(LogLevel::Warn, &msg);
        }
    }

    fn info(&self, msg: &str) {
        self.log.log(LogLevel::Info, &format!("vpopmail: {msg}"));
    }
}

#[cfg(test)]
mod tests;
