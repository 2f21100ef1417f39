//! Logging: one line per event to syslog (facility from the configuration) and/or stderr.
//!
//! Owns: the process-wide log target, level filtering, and making every message exactly one line
//! (CR, LF and other control characters are escaped, so a peer cannot forge log lines through a
//! user name, a domain or a reply it sends). stderr lines are prefixed `odmrd[PID]: `; syslog
//! messages go to `/dev/log` with ident `odmrd` and the PID.
//!
//! Does not: decide what is logged or format `key=value` pairs (callers do), rotate files, or
//! install the `log` crate facade. Logging never panics and never reports its own failures: a
//! lost log line must not end a mail session.
//!
//! Under inetd, fds 0–2 may be the customer's socket: the server must call [`init`] with the
//! configured target before a session starts. Until the first `init`, messages go to stderr at
//! level Info.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use syslog::{Facility, Formatter3164, Logger, LoggerBackend};

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
    syslog: Option<SyslogLogger>,
    /// A socket path other than the system's (tests only).
    syslog_path: Option<std::path::PathBuf>,
}

/// `None` until the first `init`: stderr at Info.
static STATE: Mutex<Option<State>> = Mutex::new(None);

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

/// Set (or replace) the log target. Connects to syslog now when the target asks for it. If
/// syslog cannot be reached, logging continues on stderr when that is enabled (silently);
/// otherwise the target is still installed (so later calls retry syslog) and the reason is
/// returned.
pub fn init(target: &LogTarget) -> Result<(), String> {
    // Under inetd/xinetd fd 2 can be the customer's socket: never log there.
    let target = LogTarget { stderr: target.stderr && !stderr_is_socket(), ..*target };
    init_at(&target, None)
}

/// The target before the configuration is read: syslog (mail), and stderr
/// unless it is a socket.
pub fn init_early() {
    // Not connected yet: the first line connects (write_syslog), so a start whose configuration
    // turns syslog off, or that logs nothing before it is read, never talks to syslog.
    let target =
        LogTarget { syslog: Some(Facility::LOG_MAIL), stderr: !stderr_is_socket(), level: Level::Info };
    *lock() = Some(State { target, syslog: None, syslog_path: None });
}

fn stderr_is_socket() -> bool {
    crate::conn::fd_is_socket(2)
}

fn init_at(target: &LogTarget, syslog_path: Option<&Path>) -> Result<(), String> {
    let mut result = Ok(());
    let syslog = match target.syslog {
        None => None,
        Some(facility) => match connect(facility, syslog_path) {
            Ok(logger) => Some(logger),
            Err(e) => {
                if !target.stderr {
                    result = Err(format!("cannot connect to syslog: {e}"));
                }
                None
            }
        },
    };
    *lock() = Some(State { target: *target, syslog, syslog_path: syslog_path.map(Path::to_path_buf) });
    result
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

fn write_syslog(state: &mut State, facility: Facility, level: Level, message: &str) {
    if let Some(logger) = state.syslog.as_mut() {
        if send(logger, level, message) {
            return;
        }
    }
    // Not connected, or the daemon went away (restarted syslogd): reconnect once and retry.
    state.syslog = connect(facility, state.syslog_path.as_deref()).ok();
    if let Some(logger) = state.syslog.as_mut() {
        send(logger, level, message);
    }
}

/// Log `message` at `level` as one line.
pub fn log(level: Level, message: &str) {
    let mut guard = lock();
    match guard.as_mut() {
        None => {
            if level <= Level::Info {
                write_stderr(&sanitize(message));
            }
        }
        Some(state) => {
            if level > state.target.level {
                return;
            }
            let message = sanitize(message);
            if let Some(facility) = state.target.syslog {
                write_syslog(state, facility, level, &message);
            }
            if state.target.stderr {
                write_stderr(&message);
            }
        }
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
    fn stderr_line_format() {
        assert_eq!(stderr_line(42, "hello"), "odmrd[42]: hello\n");
    }

    #[test]
    fn logging_without_targets_or_before_init_does_not_panic() {
        let _serial = serial();
        reset();
        debug("before init, not shown");
        let quiet = LogTarget { syslog: None, stderr: false, level: Level::Debug };
        assert_eq!(init(&quiet), Ok(()));
        error("to nowhere");
        reset();
    }

    #[test]
    fn unreachable_syslog_is_an_error_only_without_stderr() {
        let _serial = serial();
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-socket");
        let mut target = LogTarget { syslog: Some(Facility::LOG_MAIL), stderr: false, level: Level::Info };
        let result = init_at(&target, Some(missing.as_path()));
        assert!(result.is_err(), "{result:?}");
        info("dropped without panicking");
        target.stderr = true;
        assert_eq!(init_at(&target, Some(missing.as_path())), Ok(()));
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
        assert_eq!(init_at(&target, Some(path.as_path())), Ok(()));

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
        assert_eq!(init_at(&target, Some(path.as_path())), Ok(()));
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        debug("d");
        let got = receive(&socket).expect("a datagram");
        assert!(got.starts_with(&format!("<{}>", 16 * 8 + 7)), "{got:?}");
        reset();
    }
}
