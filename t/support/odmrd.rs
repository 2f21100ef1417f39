//! Running odmrd itself in tests, and speaking to it as the ODMR customer.
//!
//! - [`odmrd_command`]: `odmrd -c CONFIG`, for the caller to add a mode to;
//!   [`check_config`]: `odmrd -c CONFIG --check-config`, its output;
//! - [`start_inetd`]: `odmrd --inetd -c CONFIG` with fds 0 and 1 on one end of
//!   a socketpair (as inetd would), the test holding the other end
//!   ([`start_inetd_command`] for a command prepared by the caller,
//!   [`spawn_inetd_on`] for any socket, [`start_inetd_from`] for a TCP
//!   connection from a given loopback address);
//! - [`Daemon`]: a standalone `odmrd -c CONFIG --listen 127.0.0.1:PORT` on a
//!   free port, with its log captured, stopped by SIGTERM;
//! - [`shared_object`]: the in-tree Rust plugins built as cdylibs, by file name;
//! - [`Provider`]: the files of a provider on the built-in backends;
//! - [`Client`]: the customer's end of a session, before the turnaround
//!   (commands, replies, CRAM-MD5) and after it (raw lines, as the MTA).

use super::RecordingSendmail;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// How long a test waits for any one line from odmrd.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The base64 CRAM-MD5 response of `user` with `password` to the base64
/// `challenge` from a 334 reply (RFC 2195).
pub fn cram_md5_response(user: &str, password: &str, challenge: &str) -> String {
    let challenge =
        base64::engine::general_purpose::STANDARD.decode(challenge.trim()).expect("base64 challenge");
    let mut mac = Hmac::<md5::Md5>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(&challenge);
    let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    base64::engine::general_purpose::STANDARD.encode(format!("{user} {digest}"))
}

pub const USER: &str = "customer";
pub const PASSWORD: &str = "S3cret-odmr";
pub const EHLO_NAME: &str = "odmr.test.example";

/// A provider on the built-in backends: the test's account (`USER`/`PASSWORD`,
/// may collect example.org and example.net), another (`other`, example.com),
/// a maildir spool per domain and a recording sendmail. Its files: configuration, passwd, maildir spool, bounce recorder.
/// The `[credentials]` and `[queue]` sections are fields, to be replaced whole
/// (e.g. by plugins loaded by path).
pub struct Provider {
    dir: tempfile::TempDir,
    /// Records the DSNs odmrd submits.
    pub sendmail: RecordingSendmail,
    /// Extra lines for `[server]`.
    pub extra_server: String,
    /// The lines of `[credentials]`: `builtin:passwd` on the passwd file.
    pub credentials: String,
    /// The lines of `[queue]`: `builtin:maildir` on `spool/{domain}`.
    pub queue: String,
    /// Extra lines for `[auth]`.
    pub extra_auth: String,
    /// Whole sections appended to the file (e.g. `[tls]`).
    pub extra_sections: String,
}

impl Provider {
    pub fn new() -> Provider {
        Provider::with_sendmail(RecordingSendmail::new())
    }

    pub fn with_sendmail(sendmail: RecordingSendmail) -> Provider {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org,example.net\n\
                 other:{{PLAIN}}other-secret::::::odmr_domains=example.com\n"
            ),
        )
        .unwrap();
        // As an operator keeps them: secrets readable by their owner only, the spool there.
        std::fs::set_permissions(
            dir.path().join("passwd"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        // The spool root exists, as the package's tmpfiles.d creates /var/spool/odmr: a
        // domain's maildir then appears with its first message (a missing root is a 451).
        std::fs::create_dir_all(dir.path().join("spool")).unwrap();
        let d = dir.path().display().to_string();
        Provider {
            sendmail,
            extra_server: String::new(),
            credentials: format!("plugin = builtin:passwd\nfile = {d}/passwd\n"),
            queue: format!("plugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n"),
            extra_auth: String::new(),
            extra_sections: String::new(),
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        let d = self.path().display();
        let ini = format!(
            "[server]\nhostname = {EHLO_NAME}\nlock_directory = {d}/locks\n{extra}\n\
             [auth]\nmax_failures = 3\nfailure_delay = 0.01\n{extra_auth}\
             [credentials]\n{credentials}\
             [queue]\n{queue}\
             [bounce]\nsendmail = {sendmail}\n\
             [log]\nsyslog = off\nstderr = yes\nlevel = debug\n{extra_sections}",
            extra = self.extra_server,
            credentials = self.credentials,
            queue = self.queue,
            sendmail = self.sendmail.path().display(),
            extra_auth = self.extra_auth,
            extra_sections = self.extra_sections,
        );
        let path = self.path().join("odmrd.ini");
        std::fs::write(&path, ini).unwrap();
        path
    }

    /// Queue a message file in `domain`'s maildir; returns its path.
    pub fn queue(&self, domain: &str, name: &str, content: &str) -> PathBuf {
        let maildir = self.path().join("spool").join(domain);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(maildir.join(sub)).unwrap();
        }
        let path = maildir.join("new").join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The contents of the messages still queued for `domain`.
    pub fn queued(&self, domain: &str) -> Vec<String> {
        let mut contents = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.path().join("spool").join(domain).join(sub)) {
                for e in entries {
                    contents.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
                }
            }
        }
        contents
    }

    /// odmrd under inetd for one session.
    pub fn start(&self) -> Client {
        start_inetd(&self.config())
    }

    /// A standalone odmrd.
    pub fn start_daemon(&self) -> Daemon {
        Daemon::start(&self.config())
    }
}

/// The workspace's root directory.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// `odmrd -c config`; the caller adds the mode (`--inetd`, `--listen`, ...).
pub fn odmrd_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_odmrd"));
    command.arg("-c").arg(config);
    command
}

/// A copy of the odmrd binary alone in a temporary directory, so that it finds no bundled
/// shared object beside itself: the directory, and what the copy's lookup of `file` tries
/// first, in the plugin directory compiled in. None (the test is skipped, loudly) when `file`
/// is installed there, as odmrd would find it.
pub fn odmrd_alone(file: &str) -> Option<(tempfile::TempDir, PathBuf)> {
    let installed = Path::new(option_env!("ODMRD_PLUGIN_DIR").unwrap_or("/usr/lib/odmrd")).join(file);
    if installed.exists() {
        eprintln!("SKIPPED: {} is installed here, so odmrd finds it", installed.display());
        return None;
    }
    let alone = tempfile::tempdir().unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_odmrd"), alone.path().join("odmrd")).unwrap();
    Some((alone, installed))
}

/// `odmrd -c config --check-config`, run to its end.
pub fn check_config(config: &Path) -> Output {
    odmrd_command(config).arg("--check-config").stdin(Stdio::null()).output().unwrap()
}

/// Spawn `command --inetd` with fds 0 and 1 on `socket` and stderr piped.
pub fn spawn_inetd_on(mut command: Command, socket: impl Into<OwnedFd>) -> Child {
    let socket: OwnedFd = socket.into();
    command
        .arg("--inetd")
        .stdin(Stdio::from(socket.try_clone().unwrap()))
        .stdout(Stdio::from(socket))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Start `odmrd --inetd -c config` on a socketpair.
pub fn start_inetd(config: &Path) -> Client {
    start_inetd_command(odmrd_command(config))
}

/// Start `command --inetd` (an [`odmrd_command`], perhaps with a uid set) on a socketpair.
pub fn start_inetd_command(command: Command) -> Client {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = spawn_inetd_on(command, theirs);
    ours.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let reader = Box::new(ours.try_clone().unwrap());
    Client::new(Box::new(ours), reader, Some(child))
}

/// Start `odmrd --inetd -c config` on a real TCP connection from the loopback
/// address `source` (so odmrd sees that peer address on fd 0).
pub fn start_inetd_from(config: &Path, source: &str) -> Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = connect_from(source, listener.local_addr().unwrap().port());
    let (theirs, _) = listener.accept().unwrap();
    let child = spawn_inetd_on(odmrd_command(config), theirs);
    ours.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let reader = Box::new(ours.try_clone().unwrap());
    Client::new(Box::new(ours), reader, Some(child))
}

/// The in-tree Rust plugins built as cdylibs (`target/<profile>/lib*.so`), by
/// file name, e.g. `libodmr_backend_vpopmail.so`. `cargo test` does not build
/// cdylib members, so all of them are built here, once per test binary.
pub fn shared_object(file_name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(workspace()).arg("build").arg("--message-format=json");
        for package in [
            "odmr-backend-passwd-so",
            "odmr-backend-maildir-so",
            "odmr-backend-vpopmail-so",
            "odmr-backend-exim-so",
            "odmr-backend-sql-so",
            "odmr-test-panicky",
        ] {
            cargo.args(["-p", package]);
        }
        if env!("CARGO_BIN_EXE_odmrd").contains("/release/") {
            cargo.arg("--release");
        }
        let out = cargo.stderr(Stdio::inherit()).output().expect("running cargo build for the plugins");
        assert!(out.status.success(), "cargo build of the plugin cdylibs failed");
        let mut found = HashMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("\"cdylib\"")) {
            let Some(at) = line.find("\"filenames\":[\"") else { continue };
            let rest = &line[at + "\"filenames\":[\"".len()..];
            let path = PathBuf::from(&rest[..rest.find('"').unwrap()]);
            found.insert(path.file_name().unwrap().to_string_lossy().into_owned(), path);
        }
        found
    });
    built.get(file_name).unwrap_or_else(|| panic!("{file_name} was not built: {built:?}")).clone()
}

/// A standalone odmrd on a free loopback port.
pub struct Daemon {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// Start `odmrd -c config --listen 127.0.0.1:PORT` and wait until it listens.
    pub fn start(config: &Path) -> Daemon {
        Daemon::start_command(|| odmrd_command(config))
    }

    /// Start `command() --listen 127.0.0.1:PORT` (`command` makes an
    /// [`odmrd_command`], perhaps with a uid set; it is called again when the
    /// port was taken meanwhile) and wait until it listens.
    pub fn start_command(command: impl Fn() -> Command) -> Daemon {
        for _attempt in 0..5 {
            let port = super::free_port();
            let mut child = command()
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let log = Arc::new(Mutex::new(String::new()));
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut line = String::new();
                while stderr.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                    sink.lock().unwrap().push_str(&line);
                    line.clear();
                }
            });
            let mut daemon = Daemon { child, port, log };
            let up = super::wait_until(Duration::from_secs(20), || {
                daemon.log().contains("event=listening") || daemon.child.try_wait().ok().flatten().is_some()
            });
            if up && daemon.log().contains("event=listening") {
                return daemon;
            }
            if !daemon.log().contains("Address already in use") {
                panic!("odmrd did not start:\n{}", daemon.log());
            }
        }
        panic!("no free port for odmrd after 5 attempts");
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything it logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until its log contains `text`; panics with the log after `timeout`.
    pub fn wait_for_log(&self, text: &str, timeout: Duration) {
        if !super::wait_until(timeout, || self.log().contains(text)) {
            panic!("odmrd never logged {text:?}:\n{}", self.log());
        }
    }

    /// Connect as a customer.
    pub fn connect(&self) -> Client {
        self.connect_from("127.0.0.1")
    }

    /// Connect as a customer from another loopback address (127.0.0.0/8).
    pub fn connect_from(&self, source: &str) -> Client {
        let stream = connect_from(source, self.port);
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let reader = Box::new(stream.try_clone().unwrap());
        Client::new(Box::new(stream), reader, None)
    }

    /// Send `signal` (e.g. `nix::sys::signal::Signal::SIGTERM`).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Wait for it to exit (at most `timeout`); returns its status and log.
    pub fn wait(mut self, timeout: Duration) -> (Option<ExitStatus>, String) {
        super::wait_until(timeout, || self.child.try_wait().ok().flatten().is_some());
        let status = self.child.try_wait().ok().flatten();
        std::thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }

    /// SIGTERM, then wait for it to exit; returns its status and whole log.
    pub fn stop(self) -> (ExitStatus, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let (status, log) = self.wait(Duration::from_secs(30));
        (status.unwrap_or_else(|| panic!("odmrd did not exit after SIGTERM:\n{log}")), log)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP connection to 127.0.0.1:port from the loopback address `source`.
pub fn connect_from(source: &str, port: u16) -> TcpStream {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
    let ip: std::net::Ipv4Addr = source.parse().unwrap();
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(std::net::SocketAddrV4::new(ip, 0)))
        .unwrap();
    let target = SockaddrIn::from(std::net::SocketAddrV4::new([127, 0, 0, 1].into(), port));
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &target).unwrap();
    TcpStream::from(fd)
}

/// The customer's end of a session.
pub struct Client {
    writer: Box<dyn Write + Send>,
    reader: BufReader<Box<dyn Read + Send>>,
    child: Option<Child>,
}

impl Client {
    fn new(writer: Box<dyn Write + Send>, reader: Box<dyn Read + Send>, child: Option<Child>) -> Client {
        Client { writer, reader: BufReader::new(reader), child }
    }

    /// The process id of odmrd under inetd.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("an inetd odmrd").id()
    }

    /// Send one line (CRLF added).
    pub fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    /// Send bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// One reply with all its lines (CR LF checked and removed); panics on EOF.
    pub fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "unexpected EOF after {lines:?}");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    /// Expect a single-line reply with `code`; returns its text.
    pub fn expect(&mut self, code: u16) -> String {
        let reply = self.reply();
        assert_eq!(reply.len(), 1, "single-line reply expected: {reply:?}");
        assert!(reply[0].starts_with(&format!("{code} ")), "expected {code}, got {reply:?}");
        reply[0][4..].to_string()
    }

    /// Send `line`, expect a single-line reply with `code`.
    pub fn command(&mut self, line: &str, code: u16) -> String {
        self.send(line);
        self.expect(code)
    }

    /// One line as sent (for the reversed state, where we are the MTA).
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    /// The data of a message in the reversed state, up to (without) the dot.
    pub fn data(&mut self) -> String {
        let mut data = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "EOF inside DATA after {} bytes", data.len());
            if line == ".\r\n" {
                return data;
            }
            data.push_str(&line);
        }
    }

    /// Play the MTA for one message, accepting everything: (MAIL line, RCPT
    /// lines, data), all without line ends.
    pub fn receive_one(&mut self) -> (String, Vec<String>, String) {
        let message = self.receive_data(&[]);
        self.send("250 accepted");
        message
    }

    /// Play the MTA for one message up to its final dot: 250 to MAIL,
    /// `rcpt_replies[n]` to the n-th RCPT (250 beyond the list), 354 to DATA.
    /// Returns (MAIL line, RCPT lines, data), all without line ends; the reply
    /// to the final dot is the caller's.
    pub fn receive_data(&mut self, rcpt_replies: &[&str]) -> (String, Vec<String>, String) {
        let mail = self.line().trim_end().to_string();
        assert!(mail.starts_with("MAIL FROM:"), "MAIL expected, got {mail:?}");
        self.send("250 ok");
        let mut rcpts = Vec::new();
        loop {
            let line = self.line().trim_end().to_string();
            if line == "DATA" {
                break;
            }
            assert!(line.starts_with("RCPT TO:"), "RCPT or DATA expected after {rcpts:?}, got {line:?}");
            self.send(rcpt_replies.get(rcpts.len()).copied().unwrap_or("250 ok"));
            rcpts.push(line);
        }
        self.send("354 go");
        (mail, rcpts, self.data())
    }

    /// Play the MTA for one transaction without PIPELINING: 250 to MAIL,
    /// `replies[n]` to the n-th RCPT, then 354 and `end` when one was
    /// accepted, else 250 to the RSET. Returns the MAIL line and the RCPT
    /// lines, without line ends.
    pub fn transaction(&mut self, replies: &[&str], end: &str) -> (String, Vec<String>) {
        let mail = self.line().trim_end().to_string();
        assert!(mail.starts_with("MAIL FROM:"), "MAIL expected, got {mail:?}");
        self.send("250 ok");
        let mut rcpts = Vec::new();
        for reply in replies {
            let line = self.line().trim_end().to_string();
            assert!(line.starts_with("RCPT TO:"), "RCPT expected, got {line:?}");
            rcpts.push(line);
            self.send(reply);
        }
        if replies.iter().any(|r| r.starts_with('2')) {
            assert_eq!(self.line(), "DATA\r\n");
            self.send("354 go");
            self.data();
            self.send(end);
        } else {
            assert_eq!(self.line(), "RSET\r\n");
            self.send("250 ok");
        }
        (mail, rcpts)
    }

    /// In the reversed state: expect odmrd's QUIT and answer 221.
    pub fn expect_quit(&mut self) {
        assert_eq!(self.line(), "QUIT\r\n");
        self.send("221 bye");
    }

    /// Expect the connection to be closed by odmrd.
    pub fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        let _ = self.reader.read_to_end(&mut rest);
        assert!(rest.is_empty(), "expected EOF, got {:?}", String::from_utf8_lossy(&rest));
    }

    /// Greeting and EHLO.
    pub fn hello(&mut self) {
        self.expect(220);
        self.send("EHLO customer.example");
        assert!(self.reply().last().unwrap().starts_with("250 "));
    }

    /// AUTH CRAM-MD5 with `user`/`password`, expecting `code` at the end.
    pub fn auth(&mut self, user: &str, password: &str, code: u16) {
        let challenge = self.command("AUTH CRAM-MD5", 334);
        let response = cram_md5_response(user, password, &challenge);
        self.command(&response, code);
    }

    /// Greeting, EHLO and a successful AUTH.
    pub fn login(&mut self, user: &str, password: &str) {
        self.hello();
        self.auth(user, password, 235);
    }

    /// Play the customer's MTA after a 250 to ATRN: greet, check the EHLO,
    /// answer it with `capabilities`.
    pub fn turn_around(&mut self, ehlo_name: &str, capabilities: &[&str]) {
        self.send("220 customer.example ESMTP");
        assert_eq!(self.line(), format!("EHLO {ehlo_name}\r\n"));
        let mut lines = vec!["250-customer.example".to_string()];
        lines.extend(capabilities.iter().map(|cap| format!("250-{cap}")));
        let last = lines.pop().unwrap().replacen("250-", "250 ", 1);
        lines.push(last);
        self.send_raw(format!("{}\r\n", lines.join("\r\n")).as_bytes());
    }

    /// For inetd sessions: close our end, collect odmrd's exit status and log.
    pub fn finish(mut self) -> (ExitStatus, String) {
        self.writer = Box::new(std::io::sink());
        self.reader = BufReader::new(Box::new(std::io::empty()));
        let mut child = self.child.take().expect("finish() is for inetd sessions");
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log).unwrap();
        (child.wait().unwrap(), log)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
