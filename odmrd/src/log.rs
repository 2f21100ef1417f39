//! Logging: one line per event to syslog (facility from the configuration) and/or stderr.
//!
//! Owns: the process-wide log target, level filtering, and making every message exactly one line
//! (CR, LF and other control characters are escaped, so a peer cannot forge log lines through a
//! user name, a domain or a reply it sends). stderr lines are prefixed `odmrd[PID]: `; syslog
//! messages go to `/dev/log` with ident `odmrd` and the PID.
//!
//! Logging never stops mail service and never panics:
//! - syslog is reached lazily, at the first line that goes there (`syslog = off` never connects);
//!   when it cannot be reached, the line goes to stderr if stderr is not a socket (a daemon
//!   started by hand, runit, s6), otherwise it is dropped (under inetd fd 2 may be the
//!   customer's connection), and the next line tries again;
//! - a person watching ([`echo_to_person`]: `--check-config`, `--cram-md5`, a start from a
//!   terminal) sees every error and warning on stderr, whatever `[log]` says.
//!
//! Event lines are written with [`Event`]: `session=ID event=NAME key=value ...`, the session
//! taken from the thread's [`SessionScope`] (so a plugin's lines during a session carry it too),
//! every value quoted and escaped when it could be read as more than one value, so a user name
//! like `a b event=forged` stays one field: `user="a b event=forged"`.
//!
//! Does not: decide what is logged, rotate files, or install the `log` crate facade.
//!
//! Until the first [`init`], lines go to syslog (mail) at level Info, with the same fallback.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

/// One event line, built field by field and written once:
/// `log::Event::new("auth").field("client", ip).field("user", user).warn()`.
/// The line starts with `session=ID` when the thread serves a session ([`SessionScope`]).
#[must_use = "an event is written by .info(), .warn(), .error() or .debug()"]
pub struct Event {
    line: String,
}

impl Event {
    /// `[session=ID ]event=NAME`.
    pub fn new(name: &str) -> Event {
        let mut line = String::with_capacity(96);
        SESSION.with(|session| {
            if let Some(id) = session.borrow().as_deref() {
                line.push_str("session=");
                push_value(&mut line, id);
                line.push(' ');
            }
        });
        line.push_str("event=");
        push_value(&mut line, name);
        Event { line }
    }

    /// ` key=value`, the value quoted when needed. Keys are the program's own words.
    pub fn field(mut self, key: &'static str, value: impl fmt::Display) -> Event {
        self.line.push(' ');
        self.line.push_str(key);
        self.line.push('=');
        push_value(&mut self.line, &value.to_string());
        self
    }

    /// `field` when `value` is Some.
    pub fn field_opt(self, key: &'static str, value: Option<impl fmt::Display>) -> Event {
        match value {
            Some(value) => self.field(key, value),
            None => self,
        }
    }

    /// The line as it will be logged (before the one-line sanitising, a no-op for it).
    pub fn line(&self) -> &str {
        &self.line
    }

    pub fn error(self) {
        log(Level::Error, &self.line);
    }

    pub fn warn(self) {
        log(Level::Warn, &self.line);
    }

    pub fn info(self) {
        log(Level::Info, &self.line);
    }

    pub fn debug(self) {
        log(Level::Debug, &self.line);
    }

    /// At `level`.
    pub fn at(self, level: Level) {
        log(level, &self.line);
    }
}

/// A value as one token: bare when it is non-empty printable ASCII without space, `"`, `\\` or
/// `=`; otherwise in double quotes with `"` and `\\` escaped and control characters written as
/// escapes, so it can neither add a field nor a line.
fn push_value(line: &mut String, value: &str) {
    let bare =
        !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'='));
    if bare {
        line.push_str(value);
        return;
    }
    line.push('"');
    for c in value.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                line.push_str(&sanitize(&c.to_string()))
            }
            c => line.push(c),
        }
    }
    line.push('"');
}

thread_local! {
    /// The session this thread serves, for [`Event`] and plugin lines.
    static SESSION: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// While alive, every [`Event`] of this thread starts with `session=ID`.
pub struct SessionScope {
    previous: Option<String>,
}

impl SessionScope {
    pub fn enter(id: &str) -> SessionScope {
        SessionScope { previous: SESSION.with(|s| s.replace(Some(id.to_string()))) }
    }
}

impl Drop for SessionScope {
    fn drop(&mut self) {
        SESSION.with(|s| *s.borrow_mut() = self.previous.take());
    }
}

/// `session=ID ` when this thread serves a session, else empty: for lines not built by
/// [`Event`] (a plugin's own text).
pub fn session_prefix() -> String {
    SESSION.with(|s| s.borrow().as_deref().map(|id| format!("session={id} ")).unwrap_or_default())
}

/// Severity of an event; a target logs its level and everything more severe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    /// The configuration spelling: "error", "warn", "info" or "debug".
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;

    /// "error", "warn" (or "warning"), "info", "debug"; case-insensitive.
    fn from_str(s: &str) -> Result<Level, String> {
        match s.to_ascii_lowercase().as_str() {
            "error" => Ok(Level::Error),
            "warn" | "warning" => Ok(Level::Warn),
            "info" => Ok(Level::Info),
            "debug" => Ok(Level::Debug),
            _ => Err(format!("unknown log level {:?} (expected error, warn, info or debug)", sanitize(s))),
        }
    }
}

/// Where log lines go.
#[derive(Clone, Copy, Debug)]
pub struct LogTarget {
    /// Syslog facility, or `None` for no syslog.
    pub syslog: Option<Facility>,
    /// Also (or only) write to stderr.
    pub stderr: bool,
    /// The least severe level that is logged.
    pub level: Level,
}

type SyslogLogger = Logger<LoggerBackend, Formatter3164>;

struct State {
    target: LogTarget,
    /// Connected at the first line for syslog; `None` again after a failed send.
    syslog: Option<SyslogLogger>,
    /// A socket path other than the system's (tests only).
    syslog_path: Option<std::path::PathBuf>,
}

/// `None` until the first `init`: syslog (mail) at Info.
static STATE: Mutex<Option<State>> = Mutex::new(None);

/// Warnings logged so far, whatever the level filter: `--check-config` counts them (its own and
/// the backends').
static WARNINGS: AtomicUsize = AtomicUsize::new(0);

/// How many warnings were logged since the start.
pub fn warnings_logged() -> usize {
    WARNINGS.load(Ordering::Relaxed)
}

/// A person is watching stderr: errors and warnings go there too (see [`echo_to_person`]).
static ECHO: AtomicBool = AtomicBool::new(false);

/// Longest message we pass on, in bytes; longer ones are cut (syslog daemons truncate anyway).
const MAX_MESSAGE: usize = 4000;

fn lock() -> MutexGuard<'static, Option<State>> {
    // A panic elsewhere while holding the lock leaves consistent data: carry on.
    STATE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Make `message` safe as exactly one log line: CR and LF become `\r` and `\n`, a tab a space,
/// other control characters (C0, DEL, C1) and the Unicode line/paragraph separators `\xNN` or
/// `\u{NNNN}`; messages longer than 4000 bytes are cut and end in `...`.
pub fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE) + 3);
    for c in message.chars() {
        if out.len() >= MAX_MESSAGE {
            out.push_str("...");
            break;
        }
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c if (c as u32) < 0x100 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{{{:04x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

fn connect(facility: Facility, path: Option<&Path>) -> Result<SyslogLogger, String> {
    let formatter =
        Formatter3164 { facility, hostname: None, process: "odmrd".to_string(), pid: std::process::id() };
    let logger = match path {
        Some(path) => syslog::unix_custom(formatter, path),
        None => syslog::unix(formatter),
    };
    logger.map_err(|e| e.to_string())
}

/// Set (or replace) the log target. Nothing is connected here: syslog is reached at the first
/// line for it, so a start with `syslog = off` never touches it, and a missing syslog daemon is
/// never an error (see the module doc).
pub fn init(target: &LogTarget) {
    // Under inetd/xinetd fd 2 can be the customer's socket: never log there.
    let target = LogTarget { stderr: target.stderr && !stderr_is_socket(), ..*target };
    init_at(&target, None);
}

/// Errors and warnings also go to stderr, whatever the target says, when `on` and stderr is not
/// a socket: for `--check-config`, `--cram-md5` and a start from a terminal, where a person
/// reads them.
pub fn echo_to_person(on: bool) {
    ECHO.store(on && !stderr_is_socket(), Ordering::Relaxed);
}

/// Is stderr a terminal (a person started odmrd by hand)?
pub fn stderr_is_terminal() -> bool {
    nix::unistd::isatty(2).unwrap_or(false)
}

fn stderr_is_socket() -> bool {
    crate::conn::fd_is_socket(2)
}

fn init_at(target: &LogTarget, syslog_path: Option<&Path>) {
    *lock() = Some(State { target: *target, syslog: None, syslog_path: syslog_path.map(Path::to_path_buf) });
}

/// The stderr form of a line.
fn stderr_line(pid: u32, message: &str) -> String {
    format!("odmrd[{pid}]: {message}\n")
}

fn write_stderr(message: &str) {
    // The pid once per process, not a system call per line (odmrd never forks).
    static PID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let line = stderr_line(*PID.get_or_init(std::process::id), message);
    // One write for the whole line; nothing sensible can be done about an error here.
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

fn send(logger: &mut SyslogLogger, level: Level, message: &str) -> bool {
    let result = match level {
        Level::Error => logger.err(message),
        Level::Warn => logger.warning(message),
        Level::Info => logger.info(message),
        Level::Debug => logger.debug(message),
    };
    result.is_ok()
}

/// Send one line to syslog; false when syslog could not be reached.
fn write_syslog(state: &mut State, facility: Facility, level: Level, message: &str) -> bool {
    if let Some(logger) = state.syslog.as_mut() {
        if send(logger, level, message) {
            return true;
        }
    }
    // Not connected yet, or the daemon went away (restarted syslogd): connect once and retry.
    state.syslog = connect(facility, state.syslog_path.as_deref()).ok();
    match state.syslog.as_mut() {
        Some(logger) => send(logger, level, message),
        None => false,
    }
}

/// Log `message` at `level` as one line.
pub fn log(level: Level, message: &str) {
    if level == Level::Warn {
        WARNINGS.fetch_add(1, Ordering::Relaxed);
    }
    let mut guard = lock();
    let state = guard.get_or_insert_with(|| State {
        target: LogTarget { syslog: Some(Facility::LOG_MAIL), stderr: false, level: Level::Info },
        syslog: None,
        syslog_path: None,
    });
    if level > state.target.level {
        return;
    }
    let message = sanitize(message);
    let mut to_stderr = state.target.stderr;
    if let Some(facility) = state.target.syslog {
        // syslog unreachable: stderr instead, unless it may be the customer's socket.
        if !write_syslog(state, facility, level, &message) && !stderr_is_socket() {
            to_stderr = true;
        }
    }
    if to_stderr || (level <= Level::Warn && ECHO.load(Ordering::Relaxed)) {
        write_stderr(&message);
    }
}

pub fn error(message: &str) {
    log(Level::Error, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    /// The log target is process-wide: tests that change it run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn serial() -> MutexGuard<'static, ()> {
        SERIAL.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reset() {
        *lock() = None;
    }

    #[test]
    fn level_from_str_table() {
        let cases = [
            ("error", Ok(Level::Error)),
            ("warn", Ok(Level::Warn)),
            ("warning", Ok(Level::Warn)),
            ("info", Ok(Level::Info)),
            ("debug", Ok(Level::Debug)),
            ("DEBUG", Ok(Level::Debug)),
            ("Info", Ok(Level::Info)),
            ("", Err(())),
            ("verbose", Err(())),
            ("info ", Err(())),
        ];
        for (input, want) in cases {
            assert_eq!(input.parse::<Level>().map_err(|_| ()), want, "{input:?}");
        }
        for level in [Level::Error, Level::Warn, Level::Info, Level::Debug] {
            assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        }
    }

    #[test]
    fn levels_are_ordered_by_verbosity() {
        assert!(Level::Error < Level::Warn);
        assert!(Level::Warn < Level::Info);
        assert!(Level::Info < Level::Debug);
    }

    #[test]
    fn sanitize_table() {
        let long = "x".repeat(5000);
        let cases: Vec<(&str, String)> = vec![
            ("plain line", "plain line".into()),
            ("a\r\nb", "a\\r\\nb".into()),
            ("user=x\nsession=2 status=sent", "user=x\\nsession=2 status=sent".into()),
            ("tab\there", "tab here".into()),
            ("nul\0esc\x1b[31mdel\x7f", "nul\\x00esc\\x1b[31mdel\\x7f".into()),
            ("c1\u{85}ls\u{2028}ps\u{2029}", "c1\\x85ls\\u{2028}ps\\u{2029}".into()),
            ("café ü", "café ü".into()),
            (&long, format!("{}...", "x".repeat(MAX_MESSAGE))),
        ];
        for (input, want) in cases {
            let got = sanitize(input);
            assert_eq!(got, want, "{input:?}");
            assert!(!got.chars().any(char::is_control), "{got:?}");
        }
    }

    #[test]
    fn values_never_add_a_field_or_a_line() {
        let cases = [
            ("customer", "user=customer"),
            ("a b event=forged", "user=\"a b event=forged\""),
            ("x=y", "user=\"x=y\""),
            ("", "user=\"\""),
            ("say \"hi\" \\o/", "user=\"say \\\"hi\\\" \\\\o/\""),
            ("line\r\nevent=forged", "user=\"line\\r\\nevent=forged\""),
            ("café", "user=\"café\""),
            ("<a@b.example>", "user=<a@b.example>"),
        ];
        for (value, want) in cases {
            let event = Event::new("auth").field("user", value);
            assert_eq!(event.line(), format!("event=auth {want}"), "{value:?}");
            // Splitting the line at spaces outside quotes gives exactly two fields.
            let mut fields = 0;
            let mut quoted = false;
            let mut escaped = false;
            for c in event.line().chars() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    ' ' if !quoted => fields += 1,
                    _ => {}
                }
            }
            assert_eq!(fields, 1, "{}", event.line());
            assert!(!event.line().chars().any(char::is_control), "{}", event.line());
        }
    }

    #[test]
    fn events_in_a_session_scope_carry_its_id() {
        assert_eq!(Event::new("close").line(), "event=close");
        {
            let _scope = SessionScope::enter("42.7");
            assert_eq!(Event::new("close").field("end", "quit").line(), "session=42.7 event=close end=quit");
            assert_eq!(session_prefix(), "session=42.7 ");
        }
        assert_eq!(session_prefix(), "");
    }

    #[test]
    fn stderr_line_format() {
        assert_eq!(stderr_line(42, "hello"), "odmrd[42]: hello\n");
    }

    #[test]
    fn logging_without_targets_or_before_init_does_not_panic() {
        let _serial = serial();
        reset();
        debug("before init, not shown");
        let quiet = LogTarget { syslog: None, stderr: false, level: Level::Debug };
        init(&quiet);
        error("to nowhere");
        reset();
    }

    #[test]
    fn unreachable_syslog_is_no_error_and_is_retried_at_the_next_line() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let target = LogTarget { syslog: Some(Facility::LOG_MAIL), stderr: false, level: Level::Info };
        init_at(&target, Some(path.as_path()));
        info("syslog is not there yet: to stderr (not a socket here), without panicking");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        info("now it is");
        let got = receive(&socket).expect("a datagram once syslog is there");
        assert!(got.ends_with("now it is"), "{got:?}");
        reset();
    }

    #[test]
    fn syslog_off_never_connects() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        init_at(&LogTarget { syslog: None, stderr: false, level: Level::Debug }, Some(path.as_path()));
        error("not for syslog");
        assert_eq!(receive(&socket), None);
        reset();
    }

    fn receive(socket: &UnixDatagram) -> Option<String> {
        let mut buf = [0u8; 8192];
        match socket.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }

    #[test]
    fn syslog_gets_one_line_per_event_with_facility_severity_and_level_filter() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = LogTarget { syslog: Some(Facility::LOG_MAIL), stderr: false, level: Level::Info };
        init_at(&target, Some(path.as_path()));

        // (call, expected priority = facility * 8 + severity, expected message)
        let cases: Vec<(Level, &str, u32, &str)> = vec![
            (Level::Info, "session=1 client=192.0.2.1", 2 * 8 + 6, "session=1 client=192.0.2.1"),
            (Level::Warn, "user=evil\r\nforged line", 2 * 8 + 4, "user=evil\\r\\nforged line"),
            (Level::Error, "backend down", 2 * 8 + 3, "backend down"),
        ];
        for (level, message, priority, want) in cases {
            log(level, message);
            let got = receive(&socket).expect("a datagram");
            assert!(got.starts_with(&format!("<{priority}>")), "{got:?}");
            let pid = std::process::id();
            assert!(got.ends_with(&format!(" odmrd[{pid}]: {want}")), "{got:?}");
            assert!(!got.contains('\n') && !got.contains('\r'), "{got:?}");
        }

        // Debug is below the target's level: nothing is sent.
        debug("not sent");
        socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        assert_eq!(receive(&socket), None);

        // The helpers map to their levels (local0 = 16, debug = 7).
        let target = LogTarget { syslog: Some(Facility::LOG_LOCAL0), stderr: false, level: Level::Debug };
        init_at(&target, Some(path.as_path()));
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        debug("d");
        let got = receive(&socket).expect("a datagram");
        assert!(got.starts_with(&format!("<{}>", 16 * 8 + 7)), "{got:?}");
        reset();
    }
}
