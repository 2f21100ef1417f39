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
//! Does not: decide what is logged or format `key=value` pairs (callers do), rotate files, or
//! install the `log` crate facade.
//!
//! Until the first [`init`], lines go to syslog (mail) at level Info, with the same fallback.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    let line = stderr_line(std::process::id(), message);
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
