//! Support for odmrd's end-to-end tests: the real peers and small fixtures.
//!
//! Include it from a test file in `t/` with
//!
//! ```ignore
//! #[path = "support/mod.rs"]
//! mod support;
//! ```
//!
//! What is here:
//! - [`CustomerMta`]: a private, real Exim (`/usr/sbin/exim4`) on a free loopback port that
//!   accepts everything and delivers each message into one maildir ([`body_of`], [`envelope_of`],
//!   [`as_exim_stores`] to compare what arrived);
//! - [`Fetchmail`]: the real `/usr/bin/fetchmail` as the ODMR customer, with a private rc file
//!   and `FETCHMAILHOME`, run with a timeout;
//! - [`RecordingSendmail`]: a sendmail stand-in that records each call's argv and stdin;
//! - [`Maildir`]: create a maildir and drop message files into `new/` (with [`bsmtp`] and
//!   [`qmail_message`] to build the two envelope forms odmrd's maildir backend reads);
//! - [`SmtpClient`]: a line-oriented SMTP client for speaking to a server directly;
//! - [`free_port`], [`wait_until`], [`doveadm_cram_md5`];
//! - [`databases`]: private PostgreSQL and MariaDB servers for the SQL tests;
//! - [`odmrd`]: odmrd itself, under inetd (a socketpair) or standalone, and the customer's client.
//!
//! The peers come from Debian packages that `t/setup-deps` installs. Everything works as root
//! (CI) and as an ordinary user; see [`CustomerMta`] for how Exim is run in both cases.
#![allow(dead_code)]

pub mod databases;
pub mod odmrd;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Debian's Exim binary (package `exim4-daemon-light`).
pub const EXIM: &str = "/usr/sbin/exim4";
/// Debian's fetchmail binary (package `fetchmail`).
pub const FETCHMAIL: &str = "/usr/bin/fetchmail";

/// A TCP port on 127.0.0.1 that was free a moment ago: binds `127.0.0.1:0`, reads the port the
/// kernel chose and closes the socket again. Another process may take it before the caller
/// binds it, so servers started on it should be retried on "address in use".
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Polls `done` every 20 ms until it returns true (→ true) or `timeout` has passed (→ false).
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The body of a delivered message: the bytes after the first empty line (`\n\n` or
/// `\r\n\r\n`, whichever comes first), or an empty slice when there is no empty line.
///
/// For a message delivered by [`CustomerMta`] the first empty line is the end of the header
/// (Exim's own added header lines come first, then the message's). When the message that was
/// sent had no header at all, Exim inserted the empty line itself after its own header lines,
/// so `body_of` still returns exactly the lines that were sent.
pub fn body_of(message: &[u8]) -> &[u8] {
    let lf = find(message, b"\n\n").map(|i| i + 2);
    let crlf = find(message, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => &message[a.min(b)..],
        (Some(a), None) => &message[a..],
        (None, Some(b)) => &message[b..],
        (None, None) => &[],
    }
}

/// The header section of a message: everything before [`body_of`]'s body (including the empty
/// line that ends it).
pub fn header_section(message: &[u8]) -> &[u8] {
    let body = body_of(message);
    if body.is_empty() && find(message, b"\n\n").is_none() && find(message, b"\r\n\r\n").is_none() {
        return message;
    }
    &message[..message.len() - body.len()]
}

/// Every line of `text` (a DSN, say) that starts with `prefix` (`"Action:"`), whole, in order:
/// for checking the fields of all parts of a report at once.
pub fn lines_starting(text: &str, prefix: &str) -> Vec<String> {
    text.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect()
}

/// The value of the first header field called `name` (case-insensitive) in the header section,
/// unfolded (continuation lines joined with one space) and trimmed; `None` if absent.
pub fn header(message: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(header_section(message)).replace("\r\n", "\n");
    let mut found: Option<String> = None;
    for line in text.split('\n') {
        if let Some(value) = found.as_mut() {
            if line.starts_with(' ') || line.starts_with('\t') {
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            break;
        }
        if let Some((field, value)) = line.split_once(':') {
            if field.eq_ignore_ascii_case(name) {
                found = Some(value.trim().to_string());
            }
        }
    }
    found
}

/// The envelope of a message delivered by [`CustomerMta`]: the sender from `Return-path:`
/// (without the angle brackets; empty for the null sender) and the recipients from
/// `Envelope-to:`, in the order Exim lists them.
pub fn envelope_of(message: &[u8]) -> (String, Vec<String>) {
    let from = header(message, "Return-path").unwrap_or_default();
    let from = from.trim().trim_start_matches('<').trim_end_matches('>').to_string();
    let to = header(message, "Envelope-to")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    (from, to)
}

/// What [`CustomerMta`] stores for a body that was sent as `sent` (the bytes before the SMTP
/// dot-stuffing): every CRLF becomes LF, and a final LF is added when `sent` does not end with
/// one (SMTP cannot carry a body without a final line end). Compare `body_of(delivered)` with
/// this. Bare CR and bare LF inside lines are not covered: Exim 4.96 turns a bare CR into a
/// line end and a bare LF into a space, so tests should not rely on them.
pub fn as_exim_stores(sent: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sent.len() + 1);
    let mut i = 0;
    while i < sent.len() {
        if sent[i] == b'\r' && sent.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(sent[i]);
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out
}

/// The Exim message id from the first `Received:` line (`… id 1xV8FG-0002H3-1V …`) of a
/// message delivered by [`CustomerMta`].
pub fn exim_id_of(message: &[u8]) -> Option<String> {
    let received = header(message, "Received")?;
    let mut words = received.split_whitespace();
    while let Some(w) = words.next() {
        if w == "id" {
            return words.next().map(|id| id.trim_end_matches(';').to_string());
        }
    }
    None
}

/// Sort key for Exim ids (4.96 `tttttt-pppppp-ff`: base-62 time, pid, fraction of a second;
/// base 62 in 0-9A-Za-z sorts like ASCII): time, then fraction, then pid.
fn exim_id_order(id: &str) -> String {
    let parts: Vec<&str> = id.split('-').collect();
    match parts.as_slice() {
        [time, pid, frac] => format!("{time}-{frac}-{pid}"),
        _ => id.to_string(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Runs `doveadm pw -s CRAM-MD5 -p PASSWORD` (package `dovecot-core`) and returns its output,
/// `{CRAM-MD5}` followed by 64 hex digits: the reference for odmrd's passwd entries.
pub fn doveadm_cram_md5(password: &str) -> String {
    let out = Command::new("doveadm")
        .args(["pw", "-s", "CRAM-MD5", "-p", password])
        .output()
        .expect("run doveadm (package dovecot-core; see t/setup-deps)");
    assert!(out.status.success(), "doveadm failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("doveadm output is UTF-8").trim().to_string()
}

/// The uid and gid a private Exim runs as: the caller's, or `Debian-exim`'s (falling back to
/// `nobody`) when the caller is root.
fn exim_identity() -> (u32, u32) {
    use nix::unistd::{getegid, geteuid, User};
    if !geteuid().is_root() {
        return (geteuid().as_raw(), getegid().as_raw());
    }
    for name in ["Debian-exim", "nobody"] {
        if let Ok(Some(user)) = User::from_name(name) {
            return (user.uid.as_raw(), user.gid.as_raw());
        }
    }
    panic!("running as root and neither Debian-exim nor nobody exists to run Exim as");
}

/// Options for [`CustomerMta::start_with`]. `Default` is what [`CustomerMta::start`] uses.
#[derive(Clone, Debug)]
pub struct MtaOptions {
    /// Exim's `message_size_limit` (advertised as `SIZE`); default `30M` (31457280 bytes).
    pub message_size_limit: String,
    /// Advertise `PIPELINING` (default true, as Exim does).
    pub pipelining: bool,
    /// Advertise `CHUNKING` (default true, as Exim does: odmrd must still not send BDAT through
    /// fetchmail).
    pub chunking: bool,
    /// Extra lines for the main section of the configuration (e.g. `smtp_receive_timeout = 5s`).
    pub main_extra: String,
    /// Extra lines for the `to_maildir` appendfile transport (e.g. `use_bsmtp`).
    pub transport_extra: String,
}

impl Default for MtaOptions {
    fn default() -> Self {
        MtaOptions {
            message_size_limit: "30M".into(),
            pipelining: true,
            chunking: true,
            main_extra: String::new(),
            transport_extra: String::new(),
        }
    }
}

/// The customer's own MTA: a real Exim daemon (`exim4 -C CONFIG -bdf`) with a private
/// configuration and spool in a temporary directory, listening on `127.0.0.1:`[`port`].
///
/// It accepts mail from anyone for any recipient and delivers each message (all its recipients
/// in one file) into the maildir at [`maildir`]; [`messages`] and [`wait_for`] read `new/`.
/// Conventions for testing per-recipient and per-message outcomes:
///
/// | what the client sends | Exim's reply |
/// |---|---|
/// | `RCPT TO:<reject…@any>` (local part starts with `reject`) | `550 rejected by the test MTA` |
/// | `RCPT TO:<defer…@any>` (local part starts with `defer`) | `451 deferred by the test MTA` |
/// | a message with a header `X-Test-Reject:` | `550 data rejected by the test MTA` after the data |
/// | a message with a header `X-Test-Defer:` | `451 data deferred by the test MTA` after the data |
/// | more than `message_size_limit` bytes | `552` |
///
/// What the stored file looks like: Exim adds `Return-path:`, `Envelope-to:` (all recipients,
/// see [`envelope_of`]), `Delivery-date:` and `Received:` in front of the message's header; it
/// does not add `Message-ID:` or `Date:` to mail received over SMTP. The body is stored with LF
/// line ends, dot-stuffing removed, and a final LF (see [`as_exim_stores`]); a message sent
/// without any header gets an empty line inserted after Exim's header lines. TLS is not
/// offered (`STARTTLS` must never be used in the reversed state anyway).
///
/// Privileges: with `-C` and a file that is not listed in Debian's `TRUSTED_CONFIG_LIST`
/// (`/etc/exim4/trusted_configs`) Exim gives up root at once and runs as its caller (it logs
/// "exim user lost privilege for using -C option" to the panic log each time; harmless). So
/// the daemon is started as the caller, or, when the caller is root, as `Debian-exim` (its
/// temporary directory is handed to that user); the configuration sets `exim_user`,
/// `exim_group` and the transport's `user`/`group` to that same uid, so reception, the
/// re-executed delivery processes and the maildir writes all run as one user and nothing
/// needs root. Deliveries as root would be refused anyway (Debian's fixed `never_users` is 0).
///
/// The daemon is killed (SIGTERM, then waited for) on drop.
///
/// [`port`]: CustomerMta::port
/// [`maildir`]: CustomerMta::maildir
/// [`messages`]: CustomerMta::messages
/// [`wait_for`]: CustomerMta::wait_for
pub struct CustomerMta {
    dir: TempDir,
    port: u16,
    child: Child,
}

impl CustomerMta {
    /// Starts Exim with [`MtaOptions::default`] and waits until it answers with its 220
    /// greeting. Panics (with Exim's logs) if it does not come up within 15 seconds.
    pub fn start() -> CustomerMta {
        CustomerMta::start_with(MtaOptions::default())
    }

    /// Starts Exim with the given options; see [`CustomerMta::start`]. Retries on another port
    /// when the free port was taken in the meantime.
    pub fn start_with(options: MtaOptions) -> CustomerMta {
        assert!(Path::new(EXIM).exists(), "{EXIM} is missing: install exim4-daemon-light (run t/setup-deps)");
        let mut last_error = String::new();
        for _attempt in 0..5 {
            match CustomerMta::try_start(&options) {
                Ok(mta) => return mta,
                Err((error, port_taken)) => {
                    last_error = error;
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        panic!("Exim did not start: {last_error}");
    }

    fn try_start(options: &MtaOptions) -> Result<CustomerMta, (String, bool)> {
        let (uid, gid) = exim_identity();
        let dir = tempfile::Builder::new().prefix("odmrd-mta.").tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        for sub in ["spool", "maildir", "maildir/new", "maildir/cur", "maildir/tmp"] {
            fs::create_dir(root.join(sub)).expect("mkdir");
        }
        let port = free_port();
        fs::write(root.join("exim.conf"), exim_config(&root, port, uid, gid, options))
            .expect("write exim.conf");
        fs::set_permissions(root.join("exim.conf"), fs::Permissions::from_mode(0o644)).expect("chmod");
        chown_tree(&root, uid, gid);
        let log = fs::File::create(root.join("exim.stderr")).expect("create exim.stderr");
        let mut cmd = Command::new(EXIM);
        cmd.arg("-C").arg(root.join("exim.conf")).arg("-bdf");
        cmd.stdin(Stdio::null()).stdout(log.try_clone().expect("dup")).stderr(log);
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").current_dir(&root);
        if nix::unistd::geteuid().is_root() {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {EXIM}: {e}"));
        let mut mta = CustomerMta { dir, port, child };
        match mta.wait_ready(Duration::from_secs(15)) {
            Ok(()) => Ok(mta),
            Err(e) => {
                mta.stop();
                let diagnostics = mta.diagnostics();
                let port_taken = diagnostics.contains("ddress already in use");
                Err((format!("{e}\n{diagnostics}"), port_taken))
            }
        }
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("exim exited early: {status}"));
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let mut line = String::new();
                let mut reader = BufReader::new(&stream);
                if reader.read_line(&mut line).is_ok() && line.starts_with("220") {
                    let _ = (&stream).write_all(b"QUIT\r\n");
                    let _ = reader.read_line(&mut line);
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err("no 220 greeting in time".into());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The TCP port Exim listens on (on 127.0.0.1): fetchmail's `smtphost 127.0.0.1/PORT`.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for connecting to it directly.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The maildir every message is delivered into (Exim writes `new/`).
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// The private directory holding `exim.conf`, `spool/` (with `log/mainlog`) and `maildir/`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The contents of every file in `new/`, in the order Exim received the messages (by the
    /// message id in Exim's `Received:` line, see [`exim_id_of`]; deliveries run in parallel,
    /// so the order of the files themselves can differ).
    pub fn messages(&self) -> Vec<Vec<u8>> {
        let mut found: Vec<(String, String, Vec<u8>)> = Vec::new();
        for entry in fs::read_dir(self.maildir().join("new")).expect("read maildir/new") {
            let entry = entry.expect("dir entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let contents = fs::read(entry.path()).expect("read message");
            let key = exim_id_of(&contents).map(|id| exim_id_order(&id)).unwrap_or_default();
            found.push((key, name, contents));
        }
        found.sort();
        found.into_iter().map(|(_, _, contents)| contents).collect()
    }

    /// Waits until at least `n` messages have been delivered and returns [`messages`]. Panics
    /// with Exim's logs when `timeout` passes first.
    ///
    /// [`messages`]: CustomerMta::messages
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Vec<u8>> {
        if wait_until(timeout, || self.messages().len() >= n) {
            return self.messages();
        }
        panic!(
            "expected {n} message(s) in {}, found {} after {timeout:?}\n{}",
            self.maildir().display(),
            self.messages().len(),
            self.diagnostics()
        );
    }

    /// Exim's main log (`spool/log/mainlog`): one line per reception, delivery and rejection.
    pub fn mainlog(&self) -> String {
        fs::read_to_string(self.dir.path().join("spool/log/mainlog")).unwrap_or_default()
    }

    /// Exim's reject log (`spool/log/rejectlog`).
    pub fn rejectlog(&self) -> String {
        fs::read_to_string(self.dir.path().join("spool/log/rejectlog")).unwrap_or_default()
    }

    /// Everything useful when something went wrong: Exim's stderr, main log and the panic log
    /// without the expected "lost privilege" lines.
    pub fn diagnostics(&self) -> String {
        let read = |p: &str| fs::read_to_string(self.dir.path().join(p)).unwrap_or_default();
        let panic: String = read("spool/log/paniclog")
            .lines()
            .filter(|l| !l.contains("lost privilege for using -C option"))
            .map(|l| format!("{l}\n"))
            .collect();
        format!(
            "--- exim stderr\n{}--- mainlog\n{}--- paniclog\n{}",
            read("exim.stderr")
                .lines()
                .filter(|l| !l.contains("lost privilege for using -C option"))
                .map(|l| format!("{l}\n"))
                .collect::<String>(),
            self.mainlog(),
            panic
        )
    }

    fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let stopped = wait_until(Duration::from_secs(5), || !matches!(self.child.try_wait(), Ok(None)));
            if !stopped {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
    }
}

impl Drop for CustomerMta {
    fn drop(&mut self) {
        self.stop();
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), uid, gid);
        }
    }
}

fn exim_config(root: &Path, port: u16, uid: u32, gid: u32, o: &MtaOptions) -> String {
    let root = root.display();
    let yes_no = |b: bool| if b { "*" } else { "" };
    format!(
        r#"# Private Exim configuration written by t/support/mod.rs (CustomerMta).
exim_user = {uid}
exim_group = {gid}
primary_hostname = customer-mta.test
qualify_domain = customer-mta.test
spool_directory = {root}/spool
log_file_path = {root}/spool/log/%slog
pid_file_path = {root}/spool/exim.pid
daemon_smtp_ports = {port}
local_interfaces = 127.0.0.1
message_size_limit = {size}
# odmrd sends many messages over one connection: deliver them all at once.
smtp_accept_queue_per_connection = 0
smtp_accept_max_per_connection = 0
smtp_accept_max = 50
pipelining_advertise_hosts = {pipelining}
chunking_advertise_hosts = {chunking}
tls_advertise_hosts =
host_lookup =
keep_environment =
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
{extra}

begin acl

acl_rcpt:
  deny    local_parts = ^reject
          message = rejected by the test MTA
  defer   local_parts = ^defer
          message = deferred by the test MTA
  accept

acl_data:
  deny    condition = ${{if def:h_X-Test-Reject:{{yes}}{{no}}}}
          message = data rejected by the test MTA
  defer   condition = ${{if def:h_X-Test-Defer:{{yes}}{{no}}}}
          message = data deferred by the test MTA
  accept

begin routers

everything:
  driver = accept
  transport = to_maildir

begin transports

to_maildir:
  driver = appendfile
  directory = {root}/maildir
  maildir_format
  create_directory
  user = {uid}
  group = {gid}
  mode = 0644
  # Keep the body as sent: no "From " escaping.
  check_string =
  escape_string =
  # One file per message, all its recipients in Envelope-to.
  batch_max = 10000
  return_path_add
  envelope_to_add
  delivery_date_add
{transport_extra}

begin retry

*   *   F,1h,1m
"#,
        size = o.message_size_limit,
        pipelining = yes_no(o.pipelining),
        chunking = yes_no(o.chunking),
        extra = o.main_extra,
        transport_extra = o.transport_extra,
    )
}

/// The result of one [`Fetchmail::run`].
#[derive(Debug)]
pub struct FetchmailRun {
    /// The exit code; `None` when it was killed (by the timeout or a signal).
    pub code: Option<i32>,
    /// True when the timeout passed and fetchmail was killed.
    pub timed_out: bool,
    /// Everything fetchmail wrote to stdout.
    pub stdout: String,
    /// Everything fetchmail wrote to stderr.
    pub stderr: String,
    /// The rc file it was given (the password included).
    pub rc: String,
}

impl FetchmailRun {
    /// A printable summary for assertion messages: code, rc file, stdout, stderr.
    pub fn report(&self) -> String {
        format!(
            "fetchmail exit code {:?}{}\n--- rc\n{}--- stdout\n{}--- stderr\n{}",
            self.code,
            if self.timed_out { " (killed after the timeout)" } else { "" },
            self.rc,
            self.stdout,
            self.stderr
        )
    }
}

/// The real fetchmail as the ODMR customer (`protocol odmr`), built up and then [`run`].
///
/// Each run writes a fresh rc file (mode 0600) in a private directory that is also
/// `FETCHMAILHOME` and `HOME`, so its id file and `.netrc` never clash with another fetchmail,
/// and runs `fetchmail -f RC --nodetach --pidfile DIR/fetchmail.pid [-v]` with a timeout
/// (`--pidfile` because as root fetchmail locks `/var/run/fetchmail.pid` regardless of
/// `FETCHMAILHOME`, and concurrent tests would then exit 8):
///
/// ```text
/// set no syslog
/// poll 127.0.0.1 protocol odmr service PORT timeout 30
///     user "U" password "P"
///     fetchdomains D1,D2
///     smtphost 127.0.0.1/MTAPORT
/// ```
///
/// Exit codes (peers.md): 0 nothing to do or done, 3 AUTH not answered 334 / ATRN 530,
/// 4 no ATRN in EHLO / ATRN 450 or 502, 8 ATRN 451, 11 its own host name does not resolve,
/// 128 AUTH 535.
///
/// Host name: with `protocol odmr` fetchmail qualifies its own host name (it is the EHLO
/// argument and the default domain list) and exits 11 if a name without a dot does not
/// resolve (a name with a dot is taken as is). `t/setup-deps` adds an `/etc/hosts` entry when
/// needed; if the name still does not resolve, [`run`] runs fetchmail as root in its own UTS
/// namespace (`unshare --uts`) with the host name `fetchmail.odmrd.test`, or panics saying
/// what to fix.
///
/// [`run`]: Fetchmail::run
#[derive(Clone, Debug)]
pub struct Fetchmail {
    port: u16,
    user: String,
    password: String,
    domains: Vec<String>,
    smtphost: Option<String>,
    timeout: Duration,
    verbose: bool,
    poll_extra: String,
    args: Vec<OsString>,
}

impl Fetchmail {
    /// A customer of the provider at `127.0.0.1:port`, user `customer`, password `secret`, no
    /// `fetchdomains` (fetchmail then sends its own host name), no `smtphost`, a 60 s timeout
    /// and `-v`.
    pub fn new(port: u16) -> Fetchmail {
        Fetchmail {
            port,
            user: "customer".into(),
            password: "secret".into(),
            domains: Vec::new(),
            smtphost: None,
            timeout: Duration::from_secs(60),
            verbose: true,
            poll_extra: String::new(),
            args: Vec::new(),
        }
    }

    /// Sets the user name and password it authenticates with (CRAM-MD5).
    pub fn user(mut self, user: &str, password: &str) -> Fetchmail {
        self.user = user.into();
        self.password = password.into();
        self
    }

    /// Sets `fetchdomains` (sent as `ATRN d1,d2`).
    pub fn domains(mut self, domains: &[&str]) -> Fetchmail {
        self.domains = domains.iter().map(|d| d.to_string()).collect();
        self
    }

    /// Sets `smtphost 127.0.0.1/PORT`: where it relays the reversed session (a [`CustomerMta`]).
    pub fn smtp_port(mut self, port: u16) -> Fetchmail {
        self.smtphost = Some(format!("127.0.0.1/{port}"));
        self
    }

    /// Sets `smtphost` verbatim (`HOST/PORT`, or a path to a Unix socket).
    pub fn smtphost(mut self, smtphost: &str) -> Fetchmail {
        self.smtphost = Some(smtphost.into());
        self
    }

    /// Sets how long [`run`](Fetchmail::run) waits before killing it (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Fetchmail {
        self.timeout = timeout;
        self
    }

    /// Passes `-v` (default true): the ODMR dialogue appears in stdout/stderr.
    pub fn verbose(mut self, verbose: bool) -> Fetchmail {
        self.verbose = verbose;
        self
    }

    /// Appends text to the `poll` entry of the rc file (e.g. `ssl sslcertck`).
    pub fn poll_extra(mut self, text: &str) -> Fetchmail {
        self.poll_extra = text.into();
        self
    }

    /// Adds a command-line argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Fetchmail {
        self.args.push(arg.into());
        self
    }

    /// The rc file this configuration writes.
    pub fn rc_text(&self) -> String {
        let mut rc = String::from("set no syslog\n");
        rc.push_str(&format!("poll 127.0.0.1 protocol odmr service {} timeout 30\n", self.port));
        rc.push_str(&format!("    user {} password {}\n", rc_quote(&self.user), rc_quote(&self.password)));
        if !self.domains.is_empty() {
            rc.push_str(&format!("    fetchdomains {}\n", self.domains.join(",")));
        }
        if let Some(host) = &self.smtphost {
            rc.push_str(&format!("    smtphost {host}\n"));
        }
        if !self.poll_extra.is_empty() {
            rc.push_str(&format!("    {}\n", self.poll_extra));
        }
        rc
    }

    /// Runs fetchmail once and waits for it (at most the timeout). Panics only when fetchmail
    /// cannot be started.
    pub fn run(&self) -> FetchmailRun {
        assert!(Path::new(FETCHMAIL).exists(), "{FETCHMAIL} is missing: install fetchmail (t/setup-deps)");
        let home = tempfile::Builder::new().prefix("odmrd-fetchmail.").tempdir().expect("tempdir");
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).unwrap();
        let rc_path = home.path().join("fetchmailrc");
        let rc = self.rc_text();
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&rc_path).unwrap();
        f.write_all(rc.as_bytes()).unwrap();
        drop(f);

        // As root fetchmail's lock is /var/run/fetchmail.pid whatever FETCHMAILHOME says, so
        // concurrent runs would refuse with "another foreground fetchmail is running" (exit 8).
        let mut fm_args: Vec<OsString> = vec![
            "-f".into(),
            rc_path.clone().into(),
            "--nodetach".into(),
            "--pidfile".into(),
            home.path().join("fetchmail.pid").into(),
        ];
        if self.verbose {
            fm_args.push("-v".into());
        }
        fm_args.extend(self.args.iter().cloned());

        let mut cmd = if own_host_name_ok() {
            let mut c = Command::new(FETCHMAIL);
            c.args(&fm_args);
            c
        } else if nix::unistd::geteuid().is_root() && Path::new("/usr/bin/unshare").exists() {
            let mut c = Command::new("/usr/bin/unshare");
            c.args([
                "--uts",
                "/bin/sh",
                "-c",
                "hostname fetchmail.odmrd.test && exec \"$0\" \"$@\"",
                FETCHMAIL,
            ]);
            c.args(&fm_args);
            c
        } else {
            panic!(
                "fetchmail would exit 11: this machine's host name {:?} does not resolve. \
                 Add it to /etc/hosts (t/setup-deps does that as root), e.g. `127.0.1.1 {}`",
                host_name(),
                host_name()
            );
        };
        cmd.env("FETCHMAILHOME", home.path())
            .env("HOME", home.path())
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {FETCHMAIL}: {e}"));
        let (status, timed_out, stdout, stderr) = wait_with_timeout(&mut child, self.timeout);
        FetchmailRun { code: status.and_then(|s| s.code()), timed_out, stdout, stderr, rc }
    }
}

/// Quotes a string for the rc file. fetchmail's lexer handles `\\` inside quotes but not `\"`
/// (a `"` inside `"…"` ends the string early and the quotes become part of the value), so a
/// value containing `"` is put in single quotes instead; one containing both kinds is refused.
fn rc_quote(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\");
    if !s.contains('"') {
        format!("\"{escaped}\"")
    } else if !s.contains('\'') {
        format!("'{escaped}'")
    } else {
        panic!("fetchmail's rc file cannot hold {s:?} (it has both kinds of quote)");
    }
}

fn host_name() -> String {
    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Whether fetchmail can qualify this machine's host name (see [`Fetchmail`]).
pub fn own_host_name_ok() -> bool {
    let name = host_name();
    !name.is_empty() && (name.contains('.') || (name.as_str(), 0).to_socket_addrs().is_ok())
}

/// Waits for `child` at most `timeout` (killing it then), collecting stdout and stderr.
/// Returns (status if it exited, whether it timed out, stdout, stderr).
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> (Option<ExitStatus>, bool, String, String) {
    fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            String::from_utf8_lossy(&buf).into_owned()
        })
    }
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let mut status = None;
    let finished = wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status, !finished, out.join().unwrap_or_default(), err.join().unwrap_or_default())
}

/// One recorded call of a [`RecordingSendmail`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendmailCall {
    /// The arguments after the program name.
    pub args: Vec<String>,
    /// Everything it read on stdin (the message).
    pub stdin: Vec<u8>,
}

/// A stand-in for `/usr/sbin/sendmail` (odmrd's `[bounce] sendmail`): an executable shell
/// script in a temporary directory that records every call, its arguments (one per line) and
/// its stdin, in `calls/N/`, and exits with a chosen status. The directory is world-writable
/// (sticky) so the script also works after odmrd has dropped privileges.
pub struct RecordingSendmail {
    dir: TempDir,
}

impl RecordingSendmail {
    /// A recorder that exits 0.
    pub fn new() -> RecordingSendmail {
        RecordingSendmail::exiting(0)
    }

    /// A recorder that exits with `status` (e.g. 75, EX_TEMPFAIL) after recording.
    pub fn exiting(status: u8) -> RecordingSendmail {
        let dir = tempfile::Builder::new().prefix("odmrd-sendmail.").tempdir().expect("tempdir");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let calls = dir.path().join("calls");
        fs::DirBuilder::new().mode(0o1777).create(&calls).unwrap();
        fs::set_permissions(&calls, fs::Permissions::from_mode(0o1777)).unwrap();
        let script = format!(
            r#"#!/bin/sh
# Recording sendmail written by t/support/mod.rs: keeps argv and stdin of every call.
calls='{calls}'
n=0
while ! mkdir "$calls/$n" 2>/dev/null; do n=$((n + 1)); done
for a in "$@"; do printf '%s\n' "$a"; done > "$calls/$n/argv"
cat > "$calls/$n/stdin"
: > "$calls/$n/done"
exit {status}
"#,
            calls = calls.display()
        );
        let path = dir.path().join("sendmail");
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        RecordingSendmail { dir }
    }

    /// The script's path, for `[bounce] sendmail = PATH`.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("sendmail")
    }

    /// The finished calls so far, in the order they started.
    pub fn calls(&self) -> Vec<SendmailCall> {
        let calls = self.dir.path().join("calls");
        let mut numbers: Vec<u64> = fs::read_dir(&calls)
            .expect("read calls")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|n: &u64| calls.join(n.to_string()).join("done").exists())
            .collect();
        numbers.sort();
        numbers
            .into_iter()
            .map(|n| {
                let d = calls.join(n.to_string());
                let argv = fs::read_to_string(d.join("argv")).unwrap_or_default();
                SendmailCall {
                    args: argv.lines().map(str::to_string).collect(),
                    stdin: fs::read(d.join("stdin")).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// Waits until at least `n` calls have finished and returns them; panics after `timeout`.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<SendmailCall> {
        if wait_until(timeout, || self.calls().len() >= n) {
            return self.calls();
        }
        panic!("expected {n} sendmail call(s), got {:?} after {timeout:?}", self.calls());
    }
}

impl Default for RecordingSendmail {
    fn default() -> Self {
        RecordingSendmail::new()
    }
}

/// A maildir fixture: creates `new/`, `cur/` and `tmp/` and drops message files into `new/`
/// the way an MDA does (written in `tmp/`, then renamed).
pub struct Maildir {
    root: PathBuf,
}

impl Maildir {
    /// Creates the maildir at `path` (and missing parents); existing contents are kept.
    pub fn create(path: impl AsRef<Path>) -> Maildir {
        let root = path.as_ref().to_path_buf();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(root.join(sub)).expect("create maildir");
        }
        Maildir { root }
    }

    /// The maildir's directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Writes `contents` as `new/NAME` (through `tmp/`) and returns the file's path.
    pub fn add_named(&self, name: &str, contents: &[u8]) -> PathBuf {
        let tmp = self.root.join("tmp").join(name);
        fs::write(&tmp, contents).expect("write maildir message");
        let dest = self.root.join("new").join(name);
        fs::rename(&tmp, &dest).expect("rename into new/");
        dest
    }

    /// Writes `contents` into `new/` under a fresh unique name (`TIME.PID_N.odmrd-test`, so names
    /// sort in the order they were added) and returns the file's path.
    pub fn add(&self, contents: &[u8]) -> PathBuf {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        self.add_named(&format!("{secs}.P{}Q{n:06}.odmrd-test", std::process::id()), contents)
    }

    /// The names of the files in `new/` and `cur/` (sorted), i.e. what is still queued.
    pub fn files(&self) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            for entry in fs::read_dir(self.root.join(sub)).expect("read maildir") {
                let name = entry.expect("dir entry").file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') {
                    names.push(format!("{sub}/{name}"));
                }
            }
        }
        names.sort();
        names
    }

    /// How many messages are in `new/` and `cur/`.
    pub fn count(&self) -> usize {
        self.files().len()
    }
}

/// A BSMTP message file as Exim's `use_bsmtp` writes it: `MAIL FROM:<from>`, one
/// `RCPT TO:<r>` per recipient, `DATA`, the message dot-stuffed with LF line ends (a final LF
/// added if missing), and `.`.
pub fn bsmtp(from: &str, recipients: &[&str], message: &[u8]) -> Vec<u8> {
    let mut out = format!("MAIL FROM:<{from}>\n").into_bytes();
    for r in recipients {
        out.extend_from_slice(format!("RCPT TO:<{r}>\n").as_bytes());
    }
    out.extend_from_slice(b"DATA\n");
    let body = as_exim_stores(message);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\n");
    out
}

/// A message as qmail-local stores it in a maildir: `Return-Path: <from>` and
/// `Delivered-To: to` in front of `message` (for a vpopmail domain `to` carries the
/// virtualdomains prefix, e.g. `example.org-joe@example.org`, which `strip_prefix` removes).
pub fn qmail_message(from: &str, delivered_to: &str, message: &[u8]) -> Vec<u8> {
    let mut out = format!("Return-Path: <{from}>\nDelivered-To: {delivered_to}\n").into_bytes();
    out.extend_from_slice(message);
    out
}

/// A minimal SMTP client over TCP for speaking to a server directly (Exim, odmrd, a fake).
/// Replies are read whole (all continuation lines); every read has a 30 s timeout.
pub struct SmtpClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

/// One SMTP reply: its code and the text of each line (without code and separator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line.
    pub lines: Vec<String>,
}

impl SmtpClient {
    /// Connects to `addr` (e.g. `127.0.0.1:2525`) and returns the client and the greeting.
    pub fn connect(addr: &str) -> (SmtpClient, Reply) {
        let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let mut client = SmtpClient::from_stream(stream);
        let greeting = client.reply();
        (client, greeting)
    }

    /// Wraps an already connected stream (e.g. the provider's end of a reversed ODMR session,
    /// where the first thing to read is the customer MTA's greeting).
    pub fn from_stream(stream: TcpStream) -> SmtpClient {
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let writer = stream.try_clone().unwrap();
        SmtpClient { reader: BufReader::new(stream), writer }
    }

    /// Reads one (possibly multi-line) reply; panics on EOF or a malformed line.
    pub fn reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply (got {lines:?})");
            let line = line.trim_end_matches(['\r', '\n']);
            assert!(line.len() >= 3, "malformed reply line {line:?}");
            let code: u16 = line[..3].parse().unwrap_or_else(|_| panic!("malformed reply line {line:?}"));
            lines.push((code, line.get(4..).unwrap_or("").to_string()));
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        Reply { code: lines[0].0, lines: lines.into_iter().map(|(_, t)| t).collect() }
    }

    /// Sends `line` plus CRLF and reads the reply.
    pub fn cmd(&mut self, line: &str) -> Reply {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// Sends raw bytes (nothing added).
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// Sends a message body after `DATA`'s 354: dot-stuffed, line ends made CRLF, a final CRLF
    /// added if missing, then `.`; returns the reply to the end of data.
    pub fn send_data(&mut self, body: &[u8]) -> Reply {
        let mut out = Vec::with_capacity(body.len() + body.len() / 50 + 8);
        for line in as_exim_stores(body).split_inclusive(|&b| b == b'\n') {
            if line.starts_with(b".") {
                out.push(b'.');
            }
            out.extend_from_slice(&line[..line.len() - 1]);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.send(&out);
        self.reply()
    }
}
