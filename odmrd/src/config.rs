//! Reading `/etc/odmrd.ini` into a validated [`Config`].
//!
//! Owns: the configuration contract of design.md (sections, keys, defaults, value syntax) and
//! error messages that name the file, the line, the section and the key
//! (`FILE:LINE: [section] key: message`). Parsing is done by the `rust-ini` crate; because it
//! reports no line numbers for what it accepted, a small pre-scan of the raw text records the
//! line of every section and key (and strips inline comments, which rust-ini would reject).
//!
//! Does not: open sockets, resolve the `user`, create the lock directory, load plugins, or check
//! the keys of `[credentials]` and `[queue]` other than `plugin` — those are handed to the backend,
//! with their line numbers, and the backend rejects what it does not know.
//!
//! Syntax accepted: `[section]` headers; `key = value` (or `key: value`) lines; comment lines
//! starting with `;` or `#`; and inline comments: a `;` or `#` preceded by whitespace ends the
//! value (`a#b` stays intact). Quotes and backslashes are taken literally; a value may not end in
//! a backslash (rust-ini would join it with the next line). Sections and keys are case-sensitive
//! and may appear only once. Control characters other than tab are errors.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ini::{Ini, ParseOption, Properties};
use ipnet::IpNet;

use crate::log::{Level, LogTarget};

/// The configuration file used when none is given.
pub const DEFAULT_PATH: &str = "/etc/odmrd.ini";

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from (for messages).
    pub path: PathBuf,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub credentials: PluginConfig,
    pub queue: PluginConfig,
    /// The `[queue]` keys odmrd reads itself (see [`HoldConfig`]).
    pub hold: HoldConfig,
    pub bounce: BounceConfig,
    pub log: LogTarget,
    pub tls: TlsConfig,
    /// Where each section and key is, so that later checks (backends, `--check-config`) can name
    /// the line too.
    lines: Locator,
}

/// `[tls]`. STARTTLS is offered once `certificate` and `key` are set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// PEM chain, end entity first, and the PEM private key; both or neither.
    pub identity: Option<TlsFiles>,
    /// Key `require`: no AUTH before TLS. Default no.
    pub require: bool,
    /// Key `framing`: TLS records of the reversed state. Default `line` (safe for fetchmail).
    pub framing: crate::tls::Framing,
}

/// The certificate and key files, with their lines for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub certificate_line: usize,
    pub key: PathBuf,
    pub key_line: usize,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Greeting and EHLO name; default: the system's host name.
    pub hostname: String,
    /// Standalone listener address; absent → inetd mode (one session on stdin/stdout).
    pub listen: Option<SocketAddr>,
    /// Standalone: drop to this user after binding.
    pub user: Option<String>,
    /// Default 100, at least 1.
    pub max_sessions: usize,
    /// Default 10, at least 1.
    pub max_sessions_per_ip: usize,
    /// Clients allowed to connect; empty = all. Host bits of networks are cleared.
    pub allow: Vec<IpNet>,
    /// Per-domain collection locks; default `/run/odmrd`; absolute.
    pub lock_directory: PathBuf,
    /// Key `lock`: where the per-domain collection locks live.
    pub lock: LockKind,
    /// Key `idle_timeout`, whole seconds, default 300, at least 1: the wait for a command line's
    /// first byte, and again from that byte to the line's end.
    pub idle_timeout: Duration,
    /// Standalone: an implicit-TLS listener (fetchmail's `ssl`); needs `[tls]`.
    pub listen_tls: Option<SocketAddr>,
    /// Key `session_timeout`, whole seconds, default 600, at least 1: the whole dialogue before
    /// ATRN's 250 (the reversed state has RFC 5321's limits per reply instead).
    pub session_timeout: Duration,
    /// Key `shutdown_grace`, seconds (decimals allowed), default 30: after SIGTERM, how long
    /// running sessions may go on before their connections are closed (current messages stay
    /// queued).
    pub shutdown_grace: Duration,
    /// Key `listen_backlog`, at least 1; None (the default): the system's maximum
    /// (`net.core.somaxconn`).
    pub listen_backlog: Option<u32>,
}

/// `[server] lock`: `flock` (the default, one host) or `database` (the
/// `[credentials]` database of `builtin:sql`, shared by several hosts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    Flock,
    Database,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::named(system_hostname())
    }
}

impl ServerConfig {
    /// The defaults with `hostname`.
    fn named(hostname: String) -> Self {
        ServerConfig {
            hostname,
            listen: None,
            user: None,
            max_sessions: 100,
            max_sessions_per_ip: 10,
            allow: Vec::new(),
            lock_directory: PathBuf::from("/run/odmrd"),
            lock: LockKind::Flock,
            idle_timeout: Duration::from_secs(300),
            listen_tls: None,
            session_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(30),
            listen_backlog: None,
        }
    }
}

/// `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// Upper-case, de-duplicated, in the order given; default `["CRAM-MD5"]`; always contains
    /// CRAM-MD5; only CRAM-MD5, PLAIN and LOGIN are known.
    pub mechanisms: Vec<String>,
    /// Default 3, at least 1.
    pub max_failures: u32,
    /// Key `failure_delay`, seconds (decimals allowed), default 1.
    pub failure_delay: Duration,
    /// Key `address_penalty`, seconds (decimals allowed), default 2: after a failure from a client
    /// address, its next AUTH waits this long, doubling with each further failure (0: no penalty).
    /// See [`crate::throttle`].
    pub address_penalty: Duration,
    /// Key `address_max_penalty`, seconds (decimals allowed), default 15, at least
    /// `address_penalty`: where the doubling stops.
    pub address_max_penalty: Duration,
    /// Key `address_max_failures`, default 20, at least 1: failed AUTH attempts from one client
    /// address per window; beyond them the address gets 421 until the window ends.
    pub address_max_failures: u32,
    /// Key `address_failure_window`, whole seconds, default 3600, at least 1.
    pub address_failure_window: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mechanisms: vec!["CRAM-MD5".to_string()],
            max_failures: 3,
            failure_delay: Duration::from_secs(1),
            address_penalty: Duration::from_secs(2),
            address_max_penalty: Duration::from_secs(15),
            address_max_failures: 20,
            address_failure_window: Duration::from_secs(3600),
        }
    }
}

/// Where a backend comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// `builtin:NAME`: the NAME.
    Builtin(String),
    /// An absolute path to a shared object.
    Path(PathBuf),
}

/// One key of a backend's section, for the backend to validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: String,
    /// 1-based line in the configuration file.
    pub line: usize,
}

/// `[credentials]` or `[queue]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// `"credentials"` or `"queue"`.
    pub section: &'static str,
    pub source: PluginSource,
    /// Every key but `plugin`, in file order.
    pub settings: Vec<Setting>,
}

/// What odmrd itself does with held mail: the `[queue]` keys in [`HOLD_KEYS`].
/// They are taken out of the section before the backend sees it (a backend
/// rejects keys it does not know), so every queue backend gets them alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldConfig {
    /// Key `max_hold`, default 14 days; `0` (None) = never expire. Recipients
    /// held longer are bounced and removed by `odmrd --expire`.
    pub max_hold: Option<Duration>,
    /// Key `delay_warning`, default `0` (None) = off: after this long, one
    /// delay DSN per message.
    pub delay_warning: Option<Duration>,
    /// Key `state_directory`, default `/var/lib/odmrd`, absolute: what
    /// `--expire` remembers (the delay warnings sent, the notices run).
    pub state_directory: PathBuf,
    /// Key `notify_after`, default `0` (None) = off: once a domain's oldest
    /// held message is this old, run `notify_command` ("mail is waiting").
    pub notify_after: Option<Duration>,
    /// Key `notify_interval`, default 1 day: at most one notice per domain
    /// per this long.
    pub notify_interval: Duration,
    /// Key `notify_command`: the command split on white space, the program
    /// an absolute path; required when `notify_after` is set.
    pub notify_command: Vec<String>,
}

impl Default for HoldConfig {
    fn default() -> Self {
        HoldConfig {
            max_hold: Some(Duration::from_secs(14 * 86_400)),
            delay_warning: None,
            state_directory: PathBuf::from("/var/lib/odmrd"),
            notify_after: None,
            notify_interval: Duration::from_secs(86_400),
            notify_command: Vec::new(),
        }
    }
}

/// `[queue]` keys for odmrd, not for the backend.
pub const HOLD_KEYS: &[&str] =
    &["max_hold", "delay_warning", "state_directory", "notify_after", "notify_interval", "notify_command"];

/// `[bounce]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BounceConfig {
    /// The command split on whitespace; the program is an absolute path.
    /// Default `["/usr/sbin/sendmail"]`.
    pub sendmail: Vec<String>,
}

impl Default for BounceConfig {
    fn default() -> Self {
        BounceConfig { sendmail: vec!["/usr/sbin/sendmail".to_string()] }
    }
}

/// The `[log]` defaults: syslog facility mail, no stderr, level info.
pub fn default_log_target() -> LogTarget {
    LogTarget { syslog: Some(syslog::Facility::LOG_MAIL), stderr: false, level: Level::Info }
}

/// What is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub section: Option<String>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE: [section] key: message`; parts that do not apply are left out
    /// (`FILE: [section]: message`, `FILE:LINE: message`, ...).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match (&self.section, &self.key) {
            (Some(section), Some(key)) => write!(f, "[{section}] {key}: ")?,
            (Some(section), None) => write!(f, "[{section}]: ")?,
            (None, Some(key)) => write!(f, "{key}: ")?,
            (None, None) => {}
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

const SECTIONS: &[&str] = &["server", "auth", "credentials", "queue", "bounce", "log", "tls"];
const SERVER_KEYS: &[&str] = &[
    "hostname",
    "listen",
    "user",
    "max_sessions",
    "max_sessions_per_ip",
    "allow",
    "lock_directory",
    "lock",
    "idle_timeout",
    "listen_tls",
    "session_timeout",
    "shutdown_grace",
    "listen_backlog",
];
const AUTH_KEYS: &[&str] = &[
    "mechanisms",
    "max_failures",
    "failure_delay",
    "address_penalty",
    "address_max_penalty",
    "address_max_failures",
    "address_failure_window",
];
const BOUNCE_KEYS: &[&str] = &["sendmail"];
const LOG_KEYS: &[&str] = &["syslog", "stderr", "level"];
const TLS_KEYS: &[&str] = &["certificate", "key", "require", "framing"];
const MECHANISMS: &[&str] = &["CRAM-MD5", "PLAIN", "LOGIN"];

impl Config {
    /// Read and validate `path`. A missing or unreadable file is an error naming the path and
    /// the operating system's reason.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            section: None,
            key: None,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Validate `text`; `path` is used in messages and stored in the result.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let (cleaned, locator) = prescan(text, path)?;
        let option = ParseOption { enabled_quote: false, enabled_escape: false, ..ParseOption::default() };
        let ini = Ini::load_from_str_opt(&cleaned, option).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: Some(e.line),
            section: None,
            key: None,
            message: format!("syntax error: {}", e.msg),
        })?;
        let ctx = Ctx { path, locator: &locator };

        for (name, properties) in ini.iter() {
            match name {
                Some(name) if SECTIONS.contains(&name) => {}
                Some(name) => {
                    return Err(ctx.error(
                        name,
                        None,
                        format!("unknown section (expected {})", list(SECTIONS)),
                    ))
                }
                // The pre-scan rejects keys outside of sections; rust-ini always has this one.
                None if properties.is_empty() => {}
                None => {
                    return Err(ctx.error_at(None, None, None, "key outside of any section"));
                }
            }
        }
        let section = |name: &str| ini.section(Some(name));

        let config = Config {
            path: path.to_path_buf(),
            server: parse_server(&ctx, section("server"))?,
            auth: parse_auth(&ctx, section("auth"))?,
            credentials: parse_plugin(&ctx, "credentials", section("credentials"))?,
            queue: parse_plugin(&ctx, "queue", section("queue"))?,
            hold: parse_hold(&ctx, section("queue"))?,
            bounce: parse_bounce(&ctx, section("bounce"))?,
            log: parse_log(&ctx, section("log"))?,
            tls: parse_tls(&ctx, section("tls"))?,
            lines: locator,
        };
        if config.server.lock == LockKind::Database {
            crate::locks::Locker::new(&config).map_err(|e| config.error("server", Some("lock"), e))?;
        }
        config.check_tls()
    }

    /// The line of `key` in `section` (of the section header when `key` is None or absent).
    pub fn line(&self, section: &str, key: Option<&str>) -> Option<usize> {
        self.lines.line(section, key).or_else(|| self.lines.line(section, None))
    }

    /// An error about `key` of `section` found after parsing (by a backend, by
    /// `--check-config`), located like the parser's own: `FILE:LINE: [section] key: message`.
    pub fn error(&self, section: &str, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.clone(),
            line: self.line(section, key),
            section: Some(section.to_string()),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Locating lines
// ---------------------------------------------------------------------------------------------

/// The line of every section header and key, found by scanning the raw text.
#[derive(Debug, Default, Clone)]
struct Locator {
    sections: HashMap<String, usize>,
    keys: HashMap<(String, String), usize>,
}

impl Locator {
    fn line(&self, section: &str, key: Option<&str>) -> Option<usize> {
        match key {
            Some(key) => self.keys.get(&(section.to_string(), key.to_string())).copied(),
            None => self.sections.get(section).copied(),
        }
    }
}

/// Where `;` or `#` starts a comment: at the start of the line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let mut after_space = true;
    for (i, c) in line.char_indices() {
        if (c == ';' || c == '#') && after_space {
            return &line[..i];
        }
        after_space = c == ' ' || c == '\t';
    }
    line
}

/// Check the shape of every line, record where each section and key is, and produce the text for
/// rust-ini: the same lines (so its line numbers match) without comments or indentation.
fn prescan(text: &str, path: &Path) -> Result<(String, Locator), ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut locator = Locator::default();
    let mut cleaned = String::with_capacity(text.len());
    let mut current: Option<String> = None;
    let error = |line: usize, section: &Option<String>, key: Option<&str>, message: String| ConfigError {
        file: path.to_path_buf(),
        line: Some(line),
        section: section.clone(),
        key: key.map(str::to_string),
        message,
    };
    for (index, raw) in text.split('\n').enumerate() {
        let number = index + 1;
        if index > 0 {
            cleaned.push('\n');
        }
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(c) = raw.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(error(number, &current, None, format!("control character U+{:04X}", c as u32)));
        }
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if let Some(rest) = content.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                return Err(error(
                    number,
                    &None,
                    None,
                    "a section header must be `[name]` alone on its line".to_string(),
                ));
            };
            let name = name.trim();
            if name.is_empty() || name.contains(['[', ']']) {
                return Err(error(number, &None, None, format!("invalid section name {name:?}")));
            }
            let section = Some(name.to_string());
            if let Some(first) = locator.sections.get(name) {
                return Err(error(
                    number,
                    &section,
                    None,
                    format!("section appears twice (first on line {first})"),
                ));
            }
            locator.sections.insert(name.to_string(), number);
            cleaned.push_str(&format!("[{name}]"));
            current = section;
            continue;
        }
        let Some(separator) = content.find(['=', ':']) else {
            return Err(error(
                number,
                &current,
                None,
                format!("expected `key = value` or `[section]`, found {content:?}"),
            ));
        };
        let key = content[..separator].trim();
        let value = content[separator + 1..].trim();
        if key.is_empty() {
            return Err(error(number, &current, None, "missing key name before the `=`".to_string()));
        }
        let Some(section) = &current else {
            return Err(error(number, &None, Some(key), "key outside of any section".to_string()));
        };
        if value.ends_with('\\') {
            return Err(error(
                number,
                &current,
                Some(key),
                "a value must not end with a backslash".to_string(),
            ));
        }
        let slot = (section.clone(), key.to_string());
        if let Some(first) = locator.keys.get(&slot) {
            return Err(error(number, &current, Some(key), format!("duplicate key (first on line {first})")));
        }
        locator.keys.insert(slot, number);
        cleaned.push_str(key);
        cleaned.push('=');
        cleaned.push_str(value);
    }
    Ok((cleaned, locator))
}

/// Builds errors with the line found by the locator.
struct Ctx<'a> {
    path: &'a Path,
    locator: &'a Locator,
}

impl Ctx<'_> {
    fn error(&self, section: &str, key: Option<&str>, message: impl Into<String>) -> ConfigError {
        let line = self.locator.line(section, key).or_else(|| self.locator.line(section, None));
        self.error_at(line, Some(section), key, message)
    }

    fn error_at(
        &self,
        line: Option<usize>,
        section: Option<&str>,
        key: Option<&str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line,
            section: section.map(str::to_string),
            key: key.map(str::to_string),
            message: message.into(),
        }
    }

    fn unknown_key(&self, section: &str, key: &str, known: &[&str]) -> ConfigError {
        self.error(section, Some(key), format!("unknown key (expected {})", list(known)))
    }
}

fn list(items: &[&str]) -> String {
    items.join(", ")
}

// ---------------------------------------------------------------------------------------------
// Sections
// ---------------------------------------------------------------------------------------------

fn parse_server(ctx: &Ctx, properties: Option<&Properties>) -> Result<ServerConfig, ConfigError> {
    // The system's name is looked up (files read) only when the key does not give one: an
    // inetd session pays for every start-up step.
    let mut server = match properties.and_then(|p| p.get("hostname")) {
        Some(_) => ServerConfig::named(String::new()),
        None => ServerConfig::default(),
    };
    for (key, value) in properties.into_iter().flat_map(Properties::iter) {
        let fail = |message: String| ctx.error("server", Some(key), message);
        match key {
            "hostname" => server.hostname = parse_hostname(value).map_err(fail)?,
            "listen" => server.listen = Some(parse_socket_addr(value).map_err(fail)?),
            "listen_tls" => server.listen_tls = Some(parse_socket_addr(value).map_err(fail)?),
            "user" => {
                if value.is_empty() || value.contains(char::is_whitespace) {
                    return Err(fail(format!("{value:?} is not a user name")));
                }
                server.user = Some(value.to_string());
            }
            "max_sessions" => server.max_sessions = parse_count(value).map_err(fail)?,
            "max_sessions_per_ip" => server.max_sessions_per_ip = parse_count(value).map_err(fail)?,
            "allow" => server.allow = parse_allow(value).map_err(fail)?,
            "lock_directory" => {
                if !value.starts_with('/') {
                    return Err(fail(format!("{value:?} is not an absolute path")));
                }
                server.lock_directory = PathBuf::from(value);
            }
            "lock" => {
                server.lock = match value {
                    "flock" => LockKind::Flock,
                    "database" => LockKind::Database,
                    _ => return Err(fail(format!("{value:?} is not flock or database"))),
                }
            }
            "idle_timeout" => server.idle_timeout = parse_whole_seconds(value).map_err(fail)?,
            "session_timeout" => server.session_timeout = parse_whole_seconds(value).map_err(fail)?,
            "shutdown_grace" => server.shutdown_grace = parse_seconds(value).map_err(fail)?,
            "listen_backlog" => {
                let n = parse_count(value).map_err(&fail)?;
                let n = u32::try_from(n).ok().filter(|&n| n <= i32::MAX as u32);
                server.listen_backlog = Some(n.ok_or_else(|| fail(format!("{value:?} is too large")))?);
            }
            _ => return Err(ctx.unknown_key("server", key, SERVER_KEYS)),
        }
    }
    Ok(server)
}

fn parse_auth(ctx: &Ctx, properties: Option<&Properties>) -> Result<AuthConfig, ConfigError> {
    let mut auth = AuthConfig::default();
    for (key, value) in properties.into_iter().flat_map(Properties::iter) {
        let fail = |message: String| ctx.error("auth", Some(key), message);
        match key {
            "mechanisms" => auth.mechanisms = parse_mechanisms(value).map_err(fail)?,
            "max_failures" => auth.max_failures = parse_count_u32(value).map_err(fail)?,
            "failure_delay" => auth.failure_delay = parse_seconds(value).map_err(fail)?,
            "address_penalty" => auth.address_penalty = parse_seconds(value).map_err(fail)?,
            "address_max_penalty" => auth.address_max_penalty = parse_seconds(value).map_err(fail)?,
            "address_max_failures" => auth.address_max_failures = parse_count_u32(value).map_err(fail)?,
            "address_failure_window" => {
                auth.address_failure_window = parse_whole_seconds(value).map_err(fail)?
            }
            _ => return Err(ctx.unknown_key("auth", key, AUTH_KEYS)),
        }
    }
    if auth.address_max_penalty < auth.address_penalty {
        let message = format!(
            "{}s is less than address_penalty ({}s)",
            auth.address_max_penalty.as_secs_f64(),
            auth.address_penalty.as_secs_f64()
        );
        return Err(ctx.error("auth", Some("address_max_penalty"), message));
    }
    Ok(auth)
}

fn parse_plugin(
    ctx: &Ctx,
    section: &'static str,
    properties: Option<&Properties>,
) -> Result<PluginConfig, ConfigError> {
    let Some(properties) = properties else {
        return Err(ctx.error(
            section,
            None,
            format!("missing section [{section}]: it must name a backend with `plugin`"),
        ));
    };
    let mut source = None;
    let mut settings = Vec::new();
    for (key, value) in properties.iter() {
        if key == "plugin" {
            source = Some(parse_plugin_source(value).map_err(|m| ctx.error(section, Some(key), m))?);
        } else if section == "queue" && HOLD_KEYS.contains(&key) {
            // odmrd's own: parse_hold reads them.
        } else {
            settings.push(Setting {
                key: key.to_string(),
                value: value.to_string(),
                line: ctx.locator.line(section, Some(key)).unwrap_or(0),
            });
        }
    }
    let Some(source) = source else {
        return Err(ctx.error(
            section,
            Some("plugin"),
            "missing: name a backend (builtin:NAME or an absolute path to a .so)",
        ));
    };
    Ok(PluginConfig { section, source, settings })
}

fn parse_hold(ctx: &Ctx, properties: Option<&Properties>) -> Result<HoldConfig, ConfigError> {
    let mut hold = HoldConfig::default();
    for (key, value) in properties.into_iter().flat_map(Properties::iter) {
        let fail = |message: String| ctx.error("queue", Some(key), message);
        match key {
            "max_hold" => hold.max_hold = parse_age(value).map_err(fail)?,
            "delay_warning" => hold.delay_warning = parse_age(value).map_err(fail)?,
            "state_directory" => {
                if !value.starts_with('/') {
                    return Err(fail("expected an absolute path".into()));
                }
                hold.state_directory = PathBuf::from(value);
            }
            "notify_after" => hold.notify_after = parse_age(value).map_err(fail)?,
            "notify_interval" => {
                hold.notify_interval =
                    parse_age(value).map_err(&fail)?.ok_or_else(|| fail("must be more than 0".into()))?
            }
            "notify_command" => hold.notify_command = parse_command(value).map_err(fail)?,
            _ => {}
        }
    }
    if hold.notify_after.is_some() && hold.notify_command.is_empty() {
        return Err(ctx.error("queue", Some("notify_after"), "needs notify_command (the program to run)"));
    }
    Ok(hold)
}

/// A command line split on white space; the program must be an absolute path.
fn parse_command(value: &str) -> Result<Vec<String>, String> {
    let words: Vec<String> = value.split_whitespace().map(str::to_string).collect();
    match words.first() {
        Some(program) if program.starts_with('/') => Ok(words),
        _ => Err("expected a command starting with an absolute path".into()),
    }
}

/// An age such as `14d`, `36h`, `90m`, `45s`, `2w` or plain seconds; `0` is None (off).
pub fn parse_age(value: &str) -> Result<Option<Duration>, String> {
    let (digits, unit) = value.split_at(value.find(|c: char| !c.is_ascii_digit()).unwrap_or(value.len()));
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(format!("{value:?}: expected a number with s, m, h, d or w (e.g. 14d)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{value:?}: expected a number with s, m, h, d or w (e.g. 14d)"))?;
    let seconds = n.checked_mul(scale).ok_or_else(|| format!("{value:?} is too large"))?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

fn parse_bounce(ctx: &Ctx, properties: Option<&Properties>) -> Result<BounceConfig, ConfigError> {
    let mut bounce = BounceConfig::default();
    for (key, value) in properties.into_iter().flat_map(Properties::iter) {
        match key {
            "sendmail" => {
                bounce.sendmail = parse_command(value).map_err(|m| ctx.error("bounce", Some(key), m))?;
            }
            _ => return Err(ctx.unknown_key("bounce", key, BOUNCE_KEYS)),
        }
    }
    Ok(bounce)
}

fn parse_tls(ctx: &Ctx, properties: Option<&Properties>) -> Result<TlsConfig, ConfigError> {
    let mut tls = TlsConfig::default();
    let (mut certificate, mut key) = (None, None);
    for (name, value) in properties.into_iter().flat_map(Properties::iter) {
        let fail = |message: String| ctx.error("tls", Some(name), message);
        let absolute = |value: &str| {
            if value.starts_with('/') {
                Ok((PathBuf::from(value), ctx.locator.line("tls", Some(name)).unwrap_or(0)))
            } else {
                Err(fail(format!("{value:?} is not an absolute path")))
            }
        };
        match name {
            "certificate" => certificate = Some(absolute(value)?),
            "key" => key = Some(absolute(value)?),
            "require" => tls.require = parse_bool(value).map_err(fail)?,
            "framing" => tls.framing = value.parse().map_err(fail)?,
            _ => return Err(ctx.unknown_key("tls", name, TLS_KEYS)),
        }
    }
    tls.identity = match (certificate, key) {
        (Some((certificate, certificate_line)), Some((key, key_line))) => {
            Some(TlsFiles { certificate, certificate_line, key, key_line })
        }
        (None, None) => None,
        (Some(_), None) => return Err(ctx.error("tls", Some("certificate"), "needs `key` as well")),
        (None, Some(_)) => return Err(ctx.error("tls", Some("key"), "needs `certificate` as well")),
    };
    Ok(tls)
}

impl Config {
    /// What needs a certificate has one.
    fn check_tls(self) -> Result<Config, ConfigError> {
        if self.tls.identity.is_none() {
            if self.tls.require {
                return Err(self.error("tls", Some("require"), "needs `certificate` and `key`"));
            }
            if self.server.listen_tls.is_some() {
                return Err(self.error("server", Some("listen_tls"), "needs [tls] `certificate` and `key`"));
            }
        }
        Ok(self)
    }
}

fn parse_log(ctx: &Ctx, properties: Option<&Properties>) -> Result<LogTarget, ConfigError> {
    let mut target = default_log_target();
    for (key, value) in properties.into_iter().flat_map(Properties::iter) {
        let fail = |message: String| ctx.error("log", Some(key), message);
        match key {
            "syslog" => {
                target.syslog = if value.eq_ignore_ascii_case("off") {
                    None
                } else {
                    Some(value.parse::<syslog::Facility>().map_err(|()| {
                        fail(format!(
                            "unknown syslog facility {value:?} (expected e.g. mail, daemon, \
                             user, local0..local7, or off)"
                        ))
                    })?)
                };
            }
            "stderr" => target.stderr = parse_bool(value).map_err(fail)?,
            "level" => target.level = value.parse::<Level>().map_err(fail)?,
            _ => return Err(ctx.unknown_key("log", key, LOG_KEYS)),
        }
    }
    Ok(target)
}

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// The system's fully qualified host name (greeting, EHLO, `MAILER-DAEMON@` of DSNs): the
/// kernel's name when it has a dot, else its canonical name in `/etc/hosts` (what `hostname -f`
/// finds there), else Debian's `/etc/mailname`, else the short name; `localhost` when none.
pub fn system_hostname() -> String {
    let short = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    if short.contains('.') {
        return short;
    }
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    qualify(&short, &read("/etc/hosts"))
        .or_else(|| {
            Some(read("/etc/mailname").trim().to_string())
                .filter(|m| parse_hostname(m).is_ok() && m.contains('.'))
        })
        .unwrap_or(short)
}

/// The canonical (first) name of the `/etc/hosts` line that lists `short`, if it has a dot.
fn qualify(short: &str, hosts: &str) -> Option<String> {
    hosts.lines().map(strip_comment).find_map(|line| {
        let names: Vec<&str> = line.split_whitespace().skip(1).collect();
        let canonical = *names.first()?;
        (names.contains(&short) && canonical.contains('.') && parse_hostname(canonical).is_ok())
            .then(|| canonical.to_string())
    })
}

/// Letters, digits and hyphens in dot-separated labels (one label is enough: `localhost`).
fn parse_hostname(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 255
        && value.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if valid {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a host name (labels of letters, digits and hyphens)"))
    }
}

fn parse_socket_addr(value: &str) -> Result<SocketAddr, String> {
    value
        .parse::<SocketAddr>()
        .map_err(|_| format!("{value:?} is not ADDRESS:PORT (e.g. 0.0.0.0:366 or [::]:366)"))
}

/// A whole number, at least 1.
fn parse_count(value: &str) -> Result<usize, String> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{value:?} is not a whole number"));
    }
    match value.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{value:?} is too large")),
    }
}

/// A whole number, at least 1, that fits in 32 bits.
fn parse_count_u32(value: &str) -> Result<u32, String> {
    u32::try_from(parse_count(value)?).map_err(|_| format!("{value:?} is too large"))
}

/// Whole seconds, at least 1.
fn parse_whole_seconds(value: &str) -> Result<Duration, String> {
    parse_count(value).map(|seconds| Duration::from_secs(seconds as u64))
}

/// Seconds, decimals allowed (`1`, `0.5`, `2.`), at least 0.
fn parse_seconds(value: &str) -> Result<Duration, String> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty()) || !digits(whole) || !digits(fraction) {
        return Err(format!("{value:?} is not a number of seconds"));
    }
    let seconds: f64 = value.parse().map_err(|_| format!("{value:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{value:?} is too large"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("{value:?} is not yes or no")),
    }
}

/// Comma-separated CIDR networks or bare addresses; empty = everyone.
fn parse_allow(value: &str) -> Result<Vec<IpNet>, String> {
    if value.is_empty() {
        return Ok(Vec::new());
    }
    let mut nets = Vec::new();
    for item in value.split(',').map(str::trim) {
        if item.is_empty() {
            return Err("empty entry in the list".to_string());
        }
        let net = if let Ok(net) = item.parse::<IpNet>() {
            net.trunc()
        } else if let Ok(addr) = item.parse::<IpAddr>() {
            IpNet::from(addr)
        } else {
            return Err(format!("{item:?} is not an IP address or CIDR network"));
        };
        if !nets.contains(&net) {
            nets.push(net);
        }
    }
    Ok(nets)
}

/// Mechanism names separated by commas and/or whitespace.
fn parse_mechanisms(value: &str) -> Result<Vec<String>, String> {
    let mut mechanisms: Vec<String> = Vec::new();
    for name in value.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty()) {
        let name = name.to_ascii_uppercase();
        if !MECHANISMS.contains(&name.as_str()) {
            return Err(format!("unknown mechanism {name:?} (known: {})", list(MECHANISMS)));
        }
        if !mechanisms.contains(&name) {
            mechanisms.push(name);
        }
    }
    if !mechanisms.iter().any(|m| m == "CRAM-MD5") {
        return Err("must include CRAM-MD5 (RFC 2645 requires it)".to_string());
    }
    Ok(mechanisms)
}

fn parse_plugin_source(value: &str) -> Result<PluginSource, String> {
    if let Some(name) = value.strip_prefix("builtin:") {
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            return Ok(PluginSource::Builtin(name.to_string()));
        }
        return Err(format!("{value:?}: invalid built-in backend name"));
    }
    if value.starts_with('/') {
        return Ok(PluginSource::Path(PathBuf::from(value)));
    }
    Err(format!("{value:?} is neither builtin:NAME nor an absolute path to a .so"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/etc/odmrd.ini";

    /// The sample of design.md, verbatim.
    const SAMPLE: &str = "\
[server]
hostname = odmr.example.net        ; greeting and EHLO name; default: the system's hostname
listen = 0.0.0.0:366               ; standalone; absent → serve one session on stdin/stdout
user = odmrd                       ; standalone: drop to this user after binding
max_sessions = 100
max_sessions_per_ip = 10
allow = 127.0.0.0/8, 192.0.2.0/24  ; optional; others get 554
lock_directory = /run/odmrd        ; per-domain collection locks

[auth]
mechanisms = CRAM-MD5              ; PLAIN and LOGIN are offered only under TLS
max_failures = 3

[credentials]
plugin = builtin:passwd            ; or builtin:vpopmail, or a path to a .so
file = /etc/odmrd/passwd           ; every other key is the backend's own

[queue]
plugin = builtin:maildir           ; or builtin:exim, or a path to a .so
directory = /var/spool/odmr/{domain}

[bounce]
sendmail = /usr/sbin/sendmail      ; used to submit delivery status notifications

[log]
syslog = mail                      ; facility, or \"off\"
stderr = no
level = info                       ; error, warn, info or debug
";

    const MINIMAL: &str = "\
[credentials]
plugin = builtin:passwd
[queue]
plugin = builtin:maildir
";

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new(FILE))
    }

    fn facility(target: &LogTarget) -> Option<i32> {
        target.syslog.map(|f| f as i32)
    }

    #[test]
    fn hold_keys_are_odmrds_and_never_reach_the_backend() {
        let text = SAMPLE.replace(
            "[queue]\n",
            "[queue]\nmax_hold = 3d\ndelay_warning = 24h\nstate_directory = /var/lib/x\n",
        );
        let config = parse(&text).unwrap();
        assert_eq!(
            config.hold,
            HoldConfig {
                max_hold: Some(Duration::from_secs(3 * 86_400)),
                delay_warning: Some(Duration::from_secs(86_400)),
                state_directory: "/var/lib/x".into(),
                ..HoldConfig::default()
            }
        );
        let keys: Vec<&str> = config.queue.settings.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["directory"]);
        let notices = "[queue]\nnotify_after = 24h\nnotify_command = /usr/local/bin/tell --quietly\n";
        let hold = parse(&SAMPLE.replace("[queue]\n", notices)).unwrap().hold;
        assert_eq!(hold.notify_after, Some(Duration::from_secs(86_400)));
        assert_eq!(hold.notify_interval, Duration::from_secs(86_400));
        assert_eq!(hold.notify_command, ["/usr/local/bin/tell", "--quietly"]);
        let err = parse(&SAMPLE.replace("[queue]\n", "[queue]\nnotify_after = 1h\n")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("notify_after"), "{err}");
        let never = parse(&SAMPLE.replace("[queue]\n", "[queue]\nmax_hold = 0\n")).unwrap();
        assert_eq!(never.hold.max_hold, None);
        for (bad, key) in [
            ("max_hold = 14 days", "max_hold"),
            ("delay_warning = -1", "delay_warning"),
            ("state_directory = rel", "state_directory"),
        ] {
            let err = parse(&SAMPLE.replace("[queue]\n", &format!("[queue]\n{bad}\n"))).unwrap_err();
            assert_eq!((err.section.as_deref(), err.key.as_deref()), (Some("queue"), Some(key)), "{err}");
        }
        assert_eq!(parse_age("2w"), Ok(Some(Duration::from_secs(14 * 86_400))));
        assert_eq!(parse_age("90m"), Ok(Some(Duration::from_secs(5400))));
        assert_eq!(parse_age("45"), Ok(Some(Duration::from_secs(45))));
        assert!(parse_age("d").is_err() && parse_age("1.5d").is_err() && parse_age("").is_err());
    }

    #[test]
    fn design_sample_parses() {
        let config = parse(SAMPLE).unwrap();
        assert_eq!(config.path, PathBuf::from(FILE));
        assert_eq!(
            config.server,
            ServerConfig {
                hostname: "odmr.example.net".into(),
                listen: Some("0.0.0.0:366".parse().unwrap()),
                user: Some("odmrd".into()),
                max_sessions: 100,
                max_sessions_per_ip: 10,
                allow: vec!["127.0.0.0/8".parse().unwrap(), "192.0.2.0/24".parse().unwrap()],
                lock_directory: "/run/odmrd".into(),
                lock: LockKind::Flock,
                idle_timeout: Duration::from_secs(300),
                listen_tls: None,
                session_timeout: Duration::from_secs(600),
                shutdown_grace: Duration::from_secs(30),
                listen_backlog: None,
            }
        );
        assert_eq!(config.auth, AuthConfig::default());
        assert_eq!(
            config.credentials,
            PluginConfig {
                section: "credentials",
                source: PluginSource::Builtin("passwd".into()),
                settings: vec![Setting { key: "file".into(), value: "/etc/odmrd/passwd".into(), line: 16 }],
            }
        );
        assert_eq!(
            config.queue,
            PluginConfig {
                section: "queue",
                source: PluginSource::Builtin("maildir".into()),
                settings: vec![Setting {
                    key: "directory".into(),
                    value: "/var/spool/odmr/{domain}".into(),
                    line: 20,
                }],
            }
        );
        assert_eq!(config.hold, HoldConfig::default());
        assert_eq!(config.bounce.sendmail, vec!["/usr/sbin/sendmail"]);
        assert_eq!(facility(&config.log), Some(syslog::Facility::LOG_MAIL as i32));
        assert!(!config.log.stderr);
        assert_eq!(config.log.level, Level::Info);
    }

    #[test]
    fn the_shipped_sample_file_parses_if_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/odmrd.ini");
        if path.exists() {
            if let Err(e) = Config::load(&path) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(config.server, ServerConfig::default());
        assert_eq!(config.server.hostname, system_hostname());
        assert_eq!(config.server.listen, None);
        assert_eq!(config.server.user, None);
        assert_eq!(config.server.max_sessions, 100);
        assert_eq!(config.server.max_sessions_per_ip, 10);
        assert!(config.server.allow.is_empty());
        assert_eq!(config.server.lock_directory, PathBuf::from("/run/odmrd"));
        assert_eq!(config.server.idle_timeout, Duration::from_secs(300));
        assert_eq!(config.server.session_timeout, Duration::from_secs(600));
        assert_eq!(config.server.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.server.listen_backlog, None);
        assert_eq!(config.auth.mechanisms, vec!["CRAM-MD5"]);
        assert_eq!(config.auth.max_failures, 3);
        assert_eq!(config.auth.failure_delay, Duration::from_secs(1));
        assert_eq!(config.auth.address_penalty, Duration::from_secs(2));
        assert_eq!(config.auth.address_max_penalty, Duration::from_secs(15));
        assert_eq!(config.auth.address_max_failures, 20);
        assert_eq!(config.auth.address_failure_window, Duration::from_secs(3600));
        assert!(config.credentials.settings.is_empty());
        assert_eq!(config.bounce.sendmail, vec!["/usr/sbin/sendmail"]);
        assert_eq!(facility(&config.log), Some(syslog::Facility::LOG_MAIL as i32));
        assert!(!config.log.stderr);
        assert_eq!(config.log.level, Level::Info);
    }

    /// MINIMAL plus one section with `body`: the parsed config.
    fn with(section: &str, body: &str) -> Result<Config, ConfigError> {
        parse(&format!("{MINIMAL}[{section}]\n{body}\n"))
    }

    #[test]
    fn good_values_table() {
        type Check = fn(&Config) -> bool;
        let cases: Vec<(&str, &str, Check)> = vec![
            ("server", "hostname = localhost", |c| c.server.hostname == "localhost"),
            ("server", "listen = [::1]:10366", |c| c.server.listen == Some("[::1]:10366".parse().unwrap())),
            ("server", "allow = 192.0.2.7, 2001:db8::/32, 10.1.2.3/8", |c| {
                c.server.allow
                    == vec![
                        "192.0.2.7/32".parse::<IpNet>().unwrap(),
                        "2001:db8::/32".parse().unwrap(),
                        "10.0.0.0/8".parse().unwrap(),
                    ]
            }),
            ("server", "allow =", |c| c.server.allow.is_empty()),
            ("server", "idle_timeout = 60", |c| c.server.idle_timeout == Duration::from_secs(60)),
            ("server", "session_timeout = 90", |c| c.server.session_timeout == Duration::from_secs(90)),
            ("server", "shutdown_grace = 0", |c| c.server.shutdown_grace.is_zero()),
            ("server", "shutdown_grace = 2.5", |c| c.server.shutdown_grace == Duration::from_millis(2500)),
            ("server", "listen_backlog = 4096", |c| c.server.listen_backlog == Some(4096)),
            ("server", "max_sessions = 1", |c| c.server.max_sessions == 1),
            ("server", "lock_directory = /var/lock/odmrd # here", |c| {
                c.server.lock_directory == Path::new("/var/lock/odmrd")
            }),
            ("auth", "mechanisms = plain, cram-md5 LOGIN,PLAIN", |c| {
                c.auth.mechanisms == vec!["PLAIN", "CRAM-MD5", "LOGIN"]
            }),
            ("auth", "failure_delay = 0.25", |c| c.auth.failure_delay == Duration::from_millis(250)),
            ("auth", "failure_delay = 0", |c| c.auth.failure_delay.is_zero()),
            ("auth", "failure_delay = 2.", |c| c.auth.failure_delay == Duration::from_secs(2)),
            ("auth", "max_failures: 5", |c| c.auth.max_failures == 5),
            ("auth", "address_penalty = 0\naddress_max_penalty = 0", |c| {
                c.auth.address_penalty.is_zero() && c.auth.address_max_penalty.is_zero()
            }),
            ("auth", "address_penalty = 0.5\naddress_max_penalty = 0.5", |c| {
                c.auth.address_max_penalty == Duration::from_millis(500)
            }),
            ("auth", "address_max_failures = 5", |c| c.auth.address_max_failures == 5),
            ("auth", "address_failure_window = 600", |c| {
                c.auth.address_failure_window == Duration::from_secs(600)
            }),
            ("bounce", "sendmail = /usr/sbin/sendmail -i  -t", |c| {
                c.bounce.sendmail == vec!["/usr/sbin/sendmail", "-i", "-t"]
            }),
            ("log", "syslog = off", |c| c.log.syslog.is_none()),
            ("log", "syslog = local3", |c| facility(&c.log) == Some(syslog::Facility::LOG_LOCAL3 as i32)),
            ("log", "syslog = DAEMON", |c| facility(&c.log) == Some(syslog::Facility::LOG_DAEMON as i32)),
            ("log", "stderr = yes", |c| c.log.stderr),
            ("log", "stderr = On", |c| c.log.stderr),
            ("log", "stderr = 1", |c| c.log.stderr),
            ("log", "stderr = false", |c| !c.log.stderr),
            ("log", "level = debug", |c| c.log.level == Level::Debug),
            ("log", "level = error", |c| c.log.level == Level::Error),
        ];
        for (section, body, check) in cases {
            match with(section, body) {
                Ok(config) => assert!(check(&config), "[{section}] {body}: {config:?}"),
                Err(e) => panic!("[{section}] {body}: {e}"),
            }
        }
    }

    /// (text, line, section, key, part of the message)
    type Bad = (String, Option<usize>, Option<&'static str>, Option<&'static str>, &'static str);

    fn bad(
        text: &str,
        line: Option<usize>,
        section: Option<&'static str>,
        key: Option<&'static str>,
        message: &'static str,
    ) -> Bad {
        (text.to_string(), line, section, key, message)
    }

    /// MINIMAL occupies lines 1–4, so a section appended by `in_section` starts on line 5 and
    /// its first key is on line 6.
    fn in_section(section: &str, body: &str) -> String {
        format!("{MINIMAL}[{section}]\n{body}\n")
    }

    #[test]
    fn bad_values_table() {
        let s = Some("server");
        let a = Some("auth");
        let cases: Vec<Bad> = vec![
            bad(
                &in_section("server", "hostname = bad_host"),
                Some(6),
                s,
                Some("hostname"),
                "not a host name",
            ),
            bad(&in_section("server", "hostname = a..b"), Some(6), s, Some("hostname"), "not a host name"),
            bad(&in_section("server", "hostname ="), Some(6), s, Some("hostname"), "not a host name"),
            bad(&in_section("server", "listen = 0.0.0.0"), Some(6), s, Some("listen"), "ADDRESS:PORT"),
            bad(&in_section("server", "listen = host:366"), Some(6), s, Some("listen"), "ADDRESS:PORT"),
            bad(&in_section("server", "user ="), Some(6), s, Some("user"), "not a user name"),
            bad(&in_section("server", "user = a b"), Some(6), s, Some("user"), "not a user name"),
            bad(&in_section("server", "\nmax_sessions = 0"), Some(7), s, Some("max_sessions"), "at least 1"),
            bad(
                &in_section("server", "session_timeout = 0"),
                Some(6),
                s,
                Some("session_timeout"),
                "at least 1",
            ),
            bad(
                &in_section("server", "shutdown_grace = soon"),
                Some(6),
                s,
                Some("shutdown_grace"),
                "seconds",
            ),
            bad(
                &in_section("server", "listen_backlog = 0"),
                Some(6),
                s,
                Some("listen_backlog"),
                "at least 1",
            ),
            bad(
                &in_section("server", "listen_backlog = 4294967296"),
                Some(6),
                s,
                Some("listen_backlog"),
                "too large",
            ),
            bad(&in_section("server", "max_sessions = -1"), Some(6), s, Some("max_sessions"), "whole number"),
            bad(
                &in_section("server", "max_sessions = ten"),
                Some(6),
                s,
                Some("max_sessions"),
                "whole number",
            ),
            bad(
                &in_section("server", "max_sessions = 99999999999999999999999"),
                Some(6),
                s,
                Some("max_sessions"),
                "too large",
            ),
            bad(
                &in_section("server", "max_sessions_per_ip = 0"),
                Some(6),
                s,
                Some("max_sessions_per_ip"),
                "at least 1",
            ),
            bad(
                &in_section("server", "allow = 192.0.2.0/33"),
                Some(6),
                s,
                Some("allow"),
                "not an IP address",
            ),
            bad(&in_section("server", "allow = 192.0.2.1,"), Some(6), s, Some("allow"), "empty entry"),
            bad(&in_section("server", "allow = example.org"), Some(6), s, Some("allow"), "not an IP address"),
            bad(
                &in_section("server", "lock_directory = run/odmrd"),
                Some(6),
                s,
                Some("lock_directory"),
                "absolute path",
            ),
            bad(&in_section("server", "idle_timeout = 0"), Some(6), s, Some("idle_timeout"), "at least 1"),
            bad(
                &in_section("server", "idle_timeout = 1.5"),
                Some(6),
                s,
                Some("idle_timeout"),
                "whole number",
            ),
            bad(&in_section("server", "max_session = 5"), Some(6), s, Some("max_session"), "unknown key"),
            bad(&in_section("server", "Hostname = x.example"), Some(6), s, Some("Hostname"), "unknown key"),
            bad(
                &in_section("auth", "mechanisms = PLAIN"),
                Some(6),
                a,
                Some("mechanisms"),
                "must include CRAM-MD5",
            ),
            bad(&in_section("auth", "mechanisms ="), Some(6), a, Some("mechanisms"), "must include CRAM-MD5"),
            bad(
                &in_section("auth", "mechanisms = CRAM-MD5 DIGEST-MD5"),
                Some(6),
                a,
                Some("mechanisms"),
                "unknown mechanism",
            ),
            bad(&in_section("auth", "max_failures = 0"), Some(6), a, Some("max_failures"), "at least 1"),
            bad(
                &in_section("auth", "max_failures = 4294967296"),
                Some(6),
                a,
                Some("max_failures"),
                "too large",
            ),
            bad(&in_section("auth", "failure_delay = -1"), Some(6), a, Some("failure_delay"), "seconds"),
            bad(&in_section("auth", "failure_delay = 1e3"), Some(6), a, Some("failure_delay"), "seconds"),
            bad(&in_section("auth", "failure_delay = ."), Some(6), a, Some("failure_delay"), "seconds"),
            bad(&in_section("auth", "failure_delay = inf"), Some(6), a, Some("failure_delay"), "seconds"),
            bad(&in_section("auth", "delay = 1"), Some(6), a, Some("delay"), "unknown key"),
            bad(&in_section("auth", "address_penalty = 2s"), Some(6), a, Some("address_penalty"), "seconds"),
            bad(
                &in_section("auth", "address_penalty = 20"),
                Some(5),
                a,
                Some("address_max_penalty"),
                "less than address_penalty",
            ),
            bad(
                &in_section("auth", "address_penalty = 4\naddress_max_penalty = 3"),
                Some(7),
                a,
                Some("address_max_penalty"),
                "less than address_penalty",
            ),
            bad(
                &in_section("auth", "address_max_failures = 0"),
                Some(6),
                a,
                Some("address_max_failures"),
                "at least 1",
            ),
            bad(
                &in_section("auth", "address_failure_window = 0.5"),
                Some(6),
                a,
                Some("address_failure_window"),
                "whole number",
            ),
            bad(
                &in_section("bounce", "sendmail ="),
                Some(6),
                Some("bounce"),
                Some("sendmail"),
                "absolute path",
            ),
            bad(
                &in_section("bounce", "sendmail = sendmail -t"),
                Some(6),
                Some("bounce"),
                Some("sendmail"),
                "absolute path",
            ),
            bad(
                &in_section("bounce", "command = /bin/true"),
                Some(6),
                Some("bounce"),
                Some("command"),
                "unknown key",
            ),
            bad(
                &in_section("log", "syslog = mial"),
                Some(6),
                Some("log"),
                Some("syslog"),
                "unknown syslog facility",
            ),
            bad(&in_section("log", "stderr = maybe"), Some(6), Some("log"), Some("stderr"), "not yes or no"),
            bad(
                &in_section("log", "level = verbose"),
                Some(6),
                Some("log"),
                Some("level"),
                "unknown log level",
            ),
            bad(
                &in_section("log", "file = /var/log/odmrd"),
                Some(6),
                Some("log"),
                Some("file"),
                "unknown key",
            ),
            bad(&in_section("global", "x = 1"), Some(5), Some("global"), None, "unknown section"),
            bad(&in_section("Server", ""), Some(5), Some("Server"), None, "unknown section"),
            bad(
                &in_section("server", "hostname = a.example\nhostname = b.example"),
                Some(7),
                s,
                Some("hostname"),
                "duplicate key (first on line 6)",
            ),
            bad(
                &format!("{MINIMAL}[server]\n[server]\n"),
                Some(6),
                s,
                None,
                "section appears twice (first on line 5)",
            ),
            bad(
                &format!("hostname = x\n{MINIMAL}"),
                Some(1),
                None,
                Some("hostname"),
                "outside of any section",
            ),
            bad(&in_section("server", "hostname"), Some(6), s, None, "expected `key = value`"),
            bad(&in_section("server", "= x"), Some(6), s, None, "missing key name"),
            bad(
                &in_section("server", "lock_directory = /run/odmrd\\"),
                Some(6),
                s,
                Some("lock_directory"),
                "backslash",
            ),
            bad(&format!("{MINIMAL}[server\n"), Some(5), None, None, "section header"),
            bad(&format!("{MINIMAL}[server] x\n"), Some(5), None, None, "section header"),
            bad(&format!("{MINIMAL}[]\n"), Some(5), None, None, "invalid section name"),
            bad(&in_section("server", "hostname = a\u{7}b"), Some(6), s, None, "control character"),
        ];
        for (text, line, section, key, message) in cases {
            let e = match parse(&text) {
                Ok(config) => panic!("accepted {text:?}: {config:?}"),
                Err(e) => e,
            };
            assert_eq!(e.file, PathBuf::from(FILE), "{text:?}");
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert_eq!(e.section.as_deref(), section, "{text:?}: {e}");
            assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
            assert!(e.message.contains(message), "{text:?}: {e}");
        }
    }

    /// The expected source and (key, value, line) of each setting.
    type PluginOk<'a> = (PluginSource, Vec<(&'a str, &'a str, usize)>);
    /// The expected error's line, key and part of its message.
    type PluginErr<'a> = (Option<usize>, Option<&'a str>, &'a str);
    type PluginCase<'a> = (&'a str, Result<PluginOk<'a>, PluginErr<'a>>);

    #[test]
    fn plugin_sections() {
        let cases: Vec<PluginCase> = vec![
            (
                "[credentials]\nplugin = builtin:passwd\n[queue]\nplugin = /usr/lib/odmrd/libq.so\nb = 2 ; c\na = x#y\nempty =\n",
                Ok((
                    PluginSource::Path("/usr/lib/odmrd/libq.so".into()),
                    vec![("b", "2", 5), ("a", "x#y", 6), ("empty", "", 7)],
                )),
            ),
            ("[credentials]\nplugin = builtin:passwd\n", Err((None, None, "missing section [queue]"))),
            ("[queue]\nplugin = builtin:maildir\n", Err((None, None, "missing section [credentials]"))),
            (
                "[credentials]\nfile = /etc/passwd\n[queue]\nplugin = builtin:maildir\n",
                Err((Some(1), Some("plugin"), "missing")),
            ),
            (
                "[credentials]\nplugin = passwd\n[queue]\nplugin = builtin:maildir\n",
                Err((Some(2), Some("plugin"), "neither builtin:NAME nor an absolute path")),
            ),
            (
                "[credentials]\nplugin = builtin:\n[queue]\nplugin = builtin:maildir\n",
                Err((Some(2), Some("plugin"), "invalid built-in backend name")),
            ),
            (
                "[credentials]\nplugin = builtin:../x\n[queue]\nplugin = builtin:maildir\n",
                Err((Some(2), Some("plugin"), "invalid built-in backend name")),
            ),
        ];
        for (text, want) in cases {
            match (parse(text), want) {
                (Ok(config), Ok((source, settings))) => {
                    assert_eq!(config.queue.section, "queue");
                    assert_eq!(config.queue.source, source);
                    let got: Vec<(&str, &str, usize)> = config
                        .queue
                        .settings
                        .iter()
                        .map(|s| (s.key.as_str(), s.value.as_str(), s.line))
                        .collect();
                    assert_eq!(got, settings, "{text:?}");
                }
                (Err(e), Err((line, key, message))) => {
                    assert_eq!(e.line, line, "{text:?}: {e}");
                    assert!(e.section.is_some(), "{text:?}: {e}");
                    assert_eq!(e.key.as_deref(), key, "{text:?}: {e}");
                    assert!(e.message.contains(message), "{text:?}: {e}");
                }
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn comments_whitespace_and_line_ends() {
        let text = "\u{feff}; leading comment\r\n# another\r\n  ; indented comment\r\n\
                    [credentials]   ; comment after a header\r\n\
                    \tplugin\t=\tbuiltin:passwd\t# tab before the comment\r\n\
                    file = /etc/odmrd/pass#word\r\n\
                    quoted = \"a b\" ; kept literally\r\n\
                    [queue]\r\nplugin = builtin:maildir";
        let config = parse(text).unwrap();
        assert_eq!(config.credentials.source, PluginSource::Builtin("passwd".into()));
        let settings: Vec<(&str, &str, usize)> =
            config.credentials.settings.iter().map(|s| (s.key.as_str(), s.value.as_str(), s.line)).collect();
        assert_eq!(settings, vec![("file", "/etc/odmrd/pass#word", 6), ("quoted", "\"a b\"", 7)]);
    }

    #[test]
    fn a_short_host_name_is_qualified_from_etc_hosts() {
        let hosts = "127.0.0.1\tlocalhost\n# 10.0.0.1 mx.example.net mx\n\
                     127.0.1.1\tmx.example.net mx # the host\n::1 localhost ip6-localhost\n";
        assert_eq!(qualify("mx", hosts), Some("mx.example.net".to_string()));
        assert_eq!(qualify("other", hosts), None);
        assert_eq!(qualify("mx", "127.0.1.1 mx\n"), None, "no dotted canonical name");
    }

    #[test]
    fn display_table() {
        let e = |line, section: Option<&str>, key: Option<&str>| ConfigError {
            file: PathBuf::from("/etc/odmrd.ini"),
            line,
            section: section.map(str::to_string),
            key: key.map(str::to_string),
            message: "bad".to_string(),
        };
        let cases = [
            (e(Some(7), Some("server"), Some("listen")), "/etc/odmrd.ini:7: [server] listen: bad"),
            (e(None, Some("queue"), None), "/etc/odmrd.ini: [queue]: bad"),
            (e(Some(3), Some("log"), None), "/etc/odmrd.ini:3: [log]: bad"),
            (e(Some(1), None, Some("x")), "/etc/odmrd.ini:1: x: bad"),
            (e(None, None, None), "/etc/odmrd.ini: bad"),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
        let real = parse(&in_section("server", "listen = nowhere")).unwrap_err();
        assert_eq!(
            real.to_string(),
            "/etc/odmrd.ini:6: [server] listen: \"nowhere\" is not ADDRESS:PORT (e.g. 0.0.0.0:366 or [::]:366)"
        );
    }

    #[test]
    fn load_reads_files_and_names_the_os_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.ini");
        let e = Config::load(&missing).unwrap_err();
        assert_eq!(e.file, missing);
        assert_eq!(e.line, None);
        let text = e.to_string();
        assert!(text.starts_with(&format!("{}: ", missing.display())), "{text}");
        assert!(text.contains("No such file or directory"), "{text}");

        let path = dir.path().join("odmrd.ini");
        std::fs::write(&path, SAMPLE).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.path, path);
        assert_eq!(config.server.hostname, "odmr.example.net");

        std::fs::write(&path, b"[server]\nhostname = \xff\n").unwrap();
        let e = Config::load(&path).unwrap_err();
        assert!(e.message.contains("cannot read"), "{e}");
    }

    #[test]
    fn tls_section() {
        let config = with(
            "tls",
            "certificate = /etc/odmrd/cert.pem\nkey = /etc/odmrd/key.pem\nrequire = yes\nframing = packed",
        )
        .unwrap();
        let files = config.tls.identity.as_ref().unwrap();
        assert_eq!(
            (files.certificate.as_path(), files.certificate_line),
            (Path::new("/etc/odmrd/cert.pem"), 6)
        );
        assert_eq!((files.key.as_path(), files.key_line), (Path::new("/etc/odmrd/key.pem"), 7));
        assert!(config.tls.require);
        assert_eq!(config.tls.framing, crate::tls::Framing::Packed);
        let default = parse(MINIMAL).unwrap().tls;
        assert_eq!(
            (default.identity, default.require, default.framing),
            (None, false, crate::tls::Framing::Line)
        );

        let both = "certificate = /c.pem\nkey = /k.pem";
        let text = format!("{MINIMAL}[server]\nlisten_tls = 127.0.0.1:10995\n[tls]\n{both}\n");
        assert_eq!(parse(&text).unwrap().server.listen_tls, Some("127.0.0.1:10995".parse().unwrap()));

        let cases = [
            (in_section("tls", "certificate = /c.pem"), "[tls] certificate", "needs `key`"),
            (in_section("tls", "key = /k.pem"), "[tls] key", "needs `certificate`"),
            (in_section("tls", "certificate = c.pem\nkey = /k.pem"), "[tls] certificate", "absolute path"),
            (in_section("tls", "require = yes"), "[tls] require", "needs `certificate`"),
            (in_section("tls", &format!("{both}\nframing = records")), "[tls] framing", "not a framing"),
            (in_section("tls", &format!("{both}\nciphers = all")), "[tls] ciphers", "unknown key"),
            (in_section("server", "listen_tls = 127.0.0.1:995"), "[server] listen_tls", "needs [tls]"),
        ];
        for (text, place, message) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(place) && e.contains(message), "{text:?}: {e}");
        }
    }
}
