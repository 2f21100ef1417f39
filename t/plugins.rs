//! Plugins loaded by path, end to end: the odmrd binary is run against real
//! shared objects built here, with `cc` from C sources (the example backend in
//! `backends/example-c`, and `t/plugins/testplugin.c` shaped by -D flags into
//! broken, older, newer and concurrent plugins) and with cargo from Rust
//! (the in-tree backends as cdylibs, and a plugin that panics).
//!
//! Covered: every way loading fails (one message naming the path and the
//! reason, exit 78, and 421 to an inetd client); a full ODMR session through
//! the C example, with a recipient deferred and one bounced; the maildir and
//! passwd backends loaded by path; a plugin of the next minor; a panicking
//! Rust plugin under the standalone daemon; and the thread contract.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Barrier, Mutex, OnceLock};
use std::time::{Duration, Instant};

const USER: &str = "customer";
const PASSWORD: &str = "S3cret-odmr";

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// Compile C `src` into the shared object `out` against the committed header.
fn cc_shared(src: &Path, out: &Path, defines: &[&str]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let result = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(workspace().join("odmr-api/include"))
        .args(defines)
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(result.status.success(), "{cc} {defines:?} failed:\n{}", String::from_utf8_lossy(&result.stderr));
}

/// `t/plugins/testplugin.c` built with `defines` into `dir/name`.
fn test_plugin(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(name);
    cc_shared(&workspace().join("t/plugins/testplugin.c"), &out, defines);
    out
}

/// The C example backend built into `dir/libexample.so`.
fn example_plugin(dir: &Path) -> PathBuf {
    let out = dir.join("libexample.so");
    cc_shared(&workspace().join("backends/example-c/example.c"), &out, &[]);
    out
}

/// The Rust plugins built as cdylibs, by file name. `cargo test` does not
/// build cdylib members, so they are built here once per test binary.
fn rust_plugin(file_name: &str) -> PathBuf {
    static BUILT: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(workspace()).args([
            "build",
            "--message-format=json",
            "-p",
            "odmr-backend-maildir-so",
            "-p",
            "odmr-backend-passwd-so",
            "-p",
            "odmr-test-panicky",
        ]);
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

/// A provider's files: configuration, spool, bounce recorder; the two
/// plugin sections are given whole.
struct Provider {
    dir: tempfile::TempDir,
    credentials: String,
    queue: String,
}

impl Provider {
    fn new() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org,example.net\n"),
        )
        .unwrap();
        let recorder = dir.path().join("sendmail");
        std::fs::write(
            &recorder,
            format!(
                "#!/bin/sh\nn=$(date +%s%N)\nprintf '%s\\n' \"$@\" > {d}/dsn.$n.args\ncat > {d}/dsn.$n.msg\n",
                d = dir.path().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&recorder, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let d = dir.path().display().to_string();
        Provider {
            credentials: format!("plugin = builtin:passwd\nfile = {d}/passwd\n"),
            queue: format!("plugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n"),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        let d = self.path().display();
        let ini = format!(
            "[server]\nhostname = odmr.test.example\nlock_directory = {d}/locks\nmax_sessions_per_ip = 50\n\
             [auth]\nmax_failures = 3\nfailure_delay = 0.01\n\
             [credentials]\n{}\
             [queue]\n{}\
             [bounce]\nsendmail = {d}/sendmail\n\
             [log]\nsyslog = off\nstderr = yes\nlevel = debug\n",
            self.credentials, self.queue
        );
        let path = self.path().join("odmrd.ini");
        std::fs::write(&path, ini).unwrap();
        path
    }

    fn check_config(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_odmrd"))
            .args(["--check-config", "-c"])
            .arg(self.config())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn start_inetd(&self) -> Client {
        let config = self.config();
        let (ours, theirs) = UnixStream::pair().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_odmrd"))
            .args(["--inetd", "-c"])
            .arg(&config)
            .stdin(Stdio::from(OwnedFd::from(theirs.try_clone().unwrap())))
            .stdout(Stdio::from(OwnedFd::from(theirs)))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reader = BufReader::new(Box::new(ours.try_clone().unwrap()) as Box<dyn Read + Send>);
        Client { writer: Box::new(ours), reader, child: Some(child) }
    }

    /// odmrd standalone on a free loopback port, its log collected.
    fn start_standalone(&self) -> Daemon {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = Command::new(env!("CARGO_BIN_EXE_odmrd"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "-c"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (sink, mut stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut daemon = Daemon { child, log, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !daemon.log().contains("event=listening") {
            assert!(Instant::now() < deadline, "odmrd did not start listening:\n{}", daemon.log());
            let exited = daemon.child.try_wait().unwrap();
            assert!(exited.is_none(), "odmrd exited ({exited:?}):\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        daemon
    }

    /// The files of the C example's queue directory, by name.
    fn queue_files(&self) -> Vec<(String, String)> {
        let mut files: Vec<_> = std::fs::read_dir(self.path().join("queue"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    /// Recorded DSNs: (argv, message).
    fn dsns(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(self.path()).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "msg") {
                let args = std::fs::read_to_string(p.with_extension("args")).unwrap();
                out.push((args, std::fs::read_to_string(&p).unwrap()));
            }
        }
        out
    }
}

/// A standalone odmrd; stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    port: u16,
}

impl Daemon {
    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn connect(&self) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let reader = BufReader::new(Box::new(stream.try_clone().unwrap()) as Box<dyn Read + Send>);
        Client { writer: Box::new(stream), reader, child: None }
    }

    /// SIGTERM, wait, and the whole log.
    fn stop(mut self) -> (std::process::ExitStatus, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        (status, self.log())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test's end of a connection, as the ODMR customer and then its MTA.
struct Client {
    writer: Box<dyn Write + Send>,
    reader: BufReader<Box<dyn Read + Send>>,
    child: Option<Child>,
}

impl Client {
    fn send(&mut self, line: &str) {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "unexpected EOF after {lines:?}");
            let line = line.trim_end().to_string();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines;
            }
        }
    }

    fn expect(&mut self, code: u16) -> String {
        let reply = self.reply();
        assert_eq!(reply.len(), 1, "single-line reply expected: {reply:?}");
        assert!(reply[0].starts_with(&format!("{code} ")), "expected {code}, got {reply:?}");
        reply[0][4..].to_string()
    }

    fn command(&mut self, line: &str, code: u16) -> String {
        self.send(line);
        self.expect(code)
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line
    }

    fn expect_eof(&mut self) {
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "expected EOF, got {:?}", String::from_utf8_lossy(&rest));
    }

    fn hello(&mut self) {
        self.expect(220);
        self.send("EHLO customer.example");
        self.reply();
    }

    fn auth(&mut self, user: &str, password: &str, code: u16) {
        let challenge = self.command("AUTH CRAM-MD5", 334);
        let challenge = base64::engine::general_purpose::STANDARD.decode(challenge).unwrap();
        let mut mac = Hmac::<md5::Md5>::new_from_slice(password.as_bytes()).unwrap();
        mac.update(&challenge);
        let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        let response = base64::engine::general_purpose::STANDARD.encode(format!("{user} {digest}"));
        self.command(&response, code);
    }

    fn login(&mut self) {
        self.hello();
        self.auth(USER, PASSWORD, 235);
    }

    /// Play the customer's MTA after the turnaround: greet, answer EHLO.
    fn turn_around(&mut self) {
        self.send("220 customer.example ESMTP");
        assert_eq!(self.line(), "EHLO odmr.test.example\r\n");
        self.send("250 customer.example");
    }

    /// Read DATA up to the final dot.
    fn data(&mut self) -> String {
        let mut data = String::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "EOF in DATA after {data:?}");
            if line == ".\r\n" {
                return data;
            }
            data.push_str(&line);
        }
    }

    /// Close our end; odmrd's exit status and log (inetd only).
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        drop(std::mem::replace(&mut self.writer, Box::new(std::io::sink())));
        let mut child = self.child.take().expect("an inetd client");
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

// ---------------------------------------------------------------------------
// Every way loading fails: one message naming the path and the reason, exit
// 78 (EX_CONFIG), and under inetd a 421 to the client first.

/// `plugin` configured in `section` must be refused with a message holding
/// every fragment of `reason`, in `--check-config` and in `--inetd` mode.
fn assert_refused(p: &Provider, section: &str, plugin: &Path, reason: &[&str]) {
    let plugin = plugin.display().to_string();
    let what = format!("[{section}] plugin {plugin}: ");
    let check = |log: &str, mode: &str| {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&what)).collect();
        assert_eq!(lines.len(), 1, "{mode}: one message naming {plugin}, got:\n{log}");
        for fragment in reason {
            assert!(lines[0].contains(fragment), "{mode}: {fragment:?} missing from {:?}", lines[0]);
        }
        assert!(lines[0].contains(&p.path().join("odmrd.ini").display().to_string()), "{}", lines[0]);
    };

    let out = p.check_config();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "--check-config: {log}");
    assert!(out.stdout.is_empty(), "nothing says OK: {:?}", String::from_utf8_lossy(&out.stdout));
    check(&log, "--check-config");

    let mut c = p.start_inetd();
    let text = c.expect(421);
    assert!(text.starts_with("odmr.test.example"), "{text}");
    c.expect_eof();
    let (status, log) = c.finish();
    assert_eq!(status.code(), Some(78), "--inetd: {log}");
    check(&log, "--inetd");
}

fn refused_credentials(plugin: &Path, reason: &[&str], p: &mut Provider) {
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", plugin.display());
    assert_refused(p, "credentials", plugin, reason);
}

#[test]
fn a_missing_file_is_refused() {
    let mut p = Provider::new();
    let path = p.path().join("no-such-plugin.so");
    refused_credentials(&path, &["cannot open", "No such file"], &mut p);
}

#[test]
fn a_file_that_is_not_a_shared_object_is_refused() {
    let mut p = Provider::new();
    let path = p.path().join("libtext.so");
    std::fs::write(&path, "this is a text file, not ELF\n").unwrap();
    refused_credentials(&path, &["cannot be loaded (dlopen): "], &mut p);
    // A shared object whose own dependencies do not resolve (RTLD_NOW).
    let src = p.path().join("undefined.c");
    std::fs::write(
        &src,
        "int missing_dependency(void);\nint odmr_plugin_init(void) { return missing_dependency(); }\n",
    )
    .unwrap();
    let path = p.path().join("libundefined.so");
    cc_shared(&src, &path, &[]);
    refused_credentials(
        &path,
        &["cannot be loaded (dlopen): ", "undefined symbol: missing_dependency"],
        &mut p,
    );
    let directory = p.path().to_path_buf();
    refused_credentials(&directory, &["not a shared object: not a regular file"], &mut p);
}

#[test]
fn a_shared_object_without_odmr_plugin_init_is_refused() {
    let mut p = Provider::new();
    let path = test_plugin(p.path(), "libnoinit.so", &["-DNO_INIT"]);
    refused_credentials(&path, &["does not export odmr_plugin_init"], &mut p);
}

#[test]
fn a_plugin_of_another_major_is_refused() {
    let mut p = Provider::new();
    let path = test_plugin(p.path(), "libmajor2.so", &["-DMAJOR=2"]);
    refused_credentials(&path, &["built for ABI major 2", "speaks major 1 only", "rebuild"], &mut p);
    // A plugin that itself refuses this host's major.
    let path = test_plugin(p.path(), "libversion.so", &["-DINIT_VERSION"]);
    refused_credentials(&path, &["odmr_plugin_init refused this odmrd's ABI 1.0", "ODMR_VERSION"], &mut p);
}

#[test]
fn a_struct_size_below_v1_0_is_refused() {
    let mut p = Provider::new();
    let path = test_plugin(p.path(), "libsmall.so", &["-DSHRINK=8"]);
    refused_credentials(&path, &["odmr_plugin struct_size", "smaller than the", "ABI 1.0"], &mut p);
    let path = test_plugin(p.path(), "libsmallops.so", &["-DOPS_SHRINK=8"]);
    refused_credentials(&path, &["odmr_credentials_ops struct_size", "smaller than the"], &mut p);
}

#[test]
fn instance_new_failing_is_refused_with_the_plugins_reason() {
    let mut p = Provider::new();
    let path = test_plugin(p.path(), "libfailnew.so", &["-DFAIL_NEW"]);
    refused_credentials(
        &path,
        &["instance_new failed: cannot open the user database /nonexistent/users.db: No such file"],
        &mut p,
    );
    // The section's keys reach instance_new: the C example names a key it
    // does not know.
    let example = example_plugin(p.path());
    p.credentials = format!("plugin = {}\nbogus = 1\n", example.display());
    assert_refused(&p, "credentials", &example, &["instance_new failed: unknown key 'bogus'"]);
}

#[test]
fn a_plugin_of_the_wrong_kind_for_its_section_is_refused() {
    let p = &mut Provider::new();
    let credentials_only = test_plugin(p.path(), "libcreds.so", &[]);
    p.queue = format!("plugin = {}\nuser = a:b:example.org\n", credentials_only.display());
    assert_refused(p, "queue", &credentials_only, &["is not a queue backend"]);
    let queue_only = rust_plugin("libodmr_backend_maildir.so");
    p.queue = "plugin = builtin:maildir\ndirectory = /tmp/{domain}\n".into();
    p.credentials = format!("plugin = {}\ndirectory = /tmp/{{domain}}\n", queue_only.display());
    assert_refused(p, "credentials", &queue_only, &["is not a credentials backend"]);
}

// ---------------------------------------------------------------------------
// The C example backend: credentials and queue, a full session.

fn example_message(from: &str, to: &[&str], content: &str) -> String {
    let mut s = format!("Envelope-From: <{from}>\n");
    for rcpt in to {
        s.push_str(&format!("Envelope-To: <{rcpt}>\n"));
    }
    s.push('\n');
    s.push_str(content);
    s
}

#[test]
fn the_c_example_serves_a_whole_session_with_a_deferred_and_a_bounced_recipient() {
    let mut p = Provider::new();
    let so = example_plugin(p.path());
    let d = p.path().display().to_string();
    p.credentials = format!(
        "plugin = {}\nuser = {USER}:{PASSWORD}:example.org,example.net\nuser2 = other:pw:example.com\n",
        so.display()
    );
    p.queue = format!("plugin = {}\ndirectory = {d}/queue\n", so.display());
    std::fs::create_dir(p.path().join("queue")).unwrap();
    let content = "Subject: mixed\nFrom: alice@s.example\n\n.leading dot\nbody\n";
    let mixed = example_message(
        "alice@s.example",
        &["ok@example.org", "later@example.org", "gone@example.org", "x@example.com"],
        content,
    );
    let other = example_message("bob@s.example", &["y@example.com"], "Subject: other\n\nbody\n");
    std::fs::write(p.path().join("queue/1-mixed"), &mixed).unwrap();
    std::fs::write(p.path().join("queue/2-other"), &other).unwrap();
    std::fs::write(p.path().join("queue/.hidden"), "not a message").unwrap();

    let mut c = p.start_inetd();
    c.hello();
    c.auth(USER, "wrong", 535);
    c.auth("nobody", PASSWORD, 535);
    c.auth(USER, PASSWORD, 235);
    c.command("ATRN example.com", 450); // not one of this user's domains
    c.command("ATRN example.net", 453); // nothing queued for it
    c.command("ATRN example.org", 250);
    c.turn_around();
    assert_eq!(c.line(), "MAIL FROM:<alice@s.example>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<ok@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<later@example.org>\r\n");
    c.send("451 4.3.0 try later");
    assert_eq!(c.line(), "RCPT TO:<gone@example.org>\r\n");
    c.send("550 5.1.1 no such user");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    assert_eq!(c.data(), "Subject: mixed\r\nFrom: alice@s.example\r\n\r\n..leading dot\r\nbody\r\n");
    assert_eq!(p.queue_files()[1].1, mixed, "nothing changes before the reply to the final dot");
    c.send("250 queued");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");

    // The delivered and the bounced recipients left the queue; the deferred
    // one and the other domain's stay, with the content byte for byte.
    let expected_left = example_message("alice@s.example", &["later@example.org", "x@example.com"], content);
    assert_eq!(
        p.queue_files(),
        [
            (".hidden".to_string(), "not a message".to_string()),
            ("1-mixed".to_string(), expected_left),
            ("2-other".to_string(), other),
        ]
    );
    assert!(log.contains("to=<ok@example.org> status=sent"), "{log}");
    assert!(log.contains("to=<later@example.org> status=deferred"), "{log}");
    assert!(log.contains("to=<gone@example.org> status=bounced dsn=sent"), "{log}");
    // The plugin logs through the host, tagged with its name.
    assert!(log.contains("plugin=example-c example: 2 users, queue directory (none)"), "{log}");
    assert!(
        log.contains("plugin=example-c example: message 1-mixed: 2 recipient(s) removed, 2 stay queued"),
        "{log}"
    );
    assert!(log.contains("plugin=example-c version=1.0 section=queue"), "{log}");
    assert!(log.contains("threadsafe=no"), "{log}");

    let dsns = p.dsns();
    assert_eq!(dsns.len(), 1, "one DSN");
    assert_eq!(dsns[0].0, "-i\n-f\n<>\n--\nalice@s.example\n");
    assert!(dsns[0].1.contains("Final-Recipient: rfc822; gone@example.org"), "{}", dsns[0].1);

    // The deferred recipient is delivered next time; then only example.com's remain.
    let mut c = p.start_inetd();
    c.login();
    c.command("ATRN", 250);
    c.turn_around();
    assert_eq!(c.line(), "MAIL FROM:<alice@s.example>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<later@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    c.data();
    c.send("250 queued");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    c.finish();
    let left = p.queue_files();
    assert_eq!(left[1].1, example_message("alice@s.example", &["x@example.com"], content));
}

// ---------------------------------------------------------------------------
// The guide's minimal C example, taken from odmr-api/README.md as written.

#[test]
fn the_guides_minimal_c_example_compiles_and_is_served() {
    let guide = std::fs::read_to_string(workspace().join("odmr-api/README.md")).unwrap();
    let block = &guide[guide.find("<!-- minimal-example:start").expect("the marked example")..];
    let code = &block[block.find("```c\n").unwrap() + "```c\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    let mut p = Provider::new();
    let (src, so) = (p.path().join("one.c"), p.path().join("libone.so"));
    std::fs::write(&src, code).unwrap();
    cc_shared(&src, &so, &[]);

    p.credentials =
        format!("plugin = {}\nuser = {USER}\npassword = {PASSWORD}\ndomain = example.org\n", so.display());
    let mut c = p.start_inetd();
    c.hello();
    c.auth(USER, "wrong", 535);
    c.auth("nobody", PASSWORD, 535);
    c.auth(USER, PASSWORD, 235);
    c.command("ATRN example.net", 450);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("plugin=one one user configured"), "{log}");
    assert!(log.contains("plugin=one version=1.0 section=credentials"), "{log}");

    p.credentials = format!("plugin = {}\ncolour = blue\n", so.display());
    assert_refused(&p, "credentials", &so, &["instance_new failed: unknown key or value too long: 'colour'"]);
}

// ---------------------------------------------------------------------------
// The in-tree Rust backends, built as cdylibs, loaded by path.

#[test]
fn the_maildir_and_passwd_backends_load_by_path_and_serve_a_session() {
    let mut p = Provider::new();
    let (passwd, maildir) =
        (rust_plugin("libodmr_backend_passwd.so"), rust_plugin("libodmr_backend_maildir.so"));
    let d = p.path().display().to_string();
    p.credentials = format!("plugin = {}\nfile = {d}/passwd\n", passwd.display());
    p.queue = format!("plugin = {}\ndirectory = {d}/spool/{{domain}}\n", maildir.display());
    let new = p.path().join("spool/example.org/new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::create_dir_all(p.path().join("spool/example.org/cur")).unwrap();
    std::fs::create_dir_all(p.path().join("spool/example.org/tmp")).unwrap();
    std::fs::write(
        new.join("1.m"),
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: so\n\nbody\n.\n",
    )
    .unwrap();

    assert!(p.check_config().status.success());
    let mut c = p.start_inetd();
    c.login();
    c.command("ATRN example.org", 250);
    c.turn_around();
    assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<x@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    assert_eq!(c.data(), "Subject: so\r\n\r\nbody\r\n");
    c.send("250 queued");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(!new.join("1.m").exists(), "delivered, so removed");
    assert!(
        log.contains(&format!("plugin=maildir version=0.1.0 section=queue loaded={}", maildir.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!("plugin=passwd version=0.1.0 section=credentials loaded={}", passwd.display())),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Evolution: a plugin of the next minor (appended fields, larger struct_size)
// loads and works on this host.

#[test]
fn a_plugin_of_a_newer_minor_with_appended_fields_loads_and_works() {
    let mut p = Provider::new();
    let so = test_plugin(p.path(), "libnext.so", &["-DNEWER_MINOR"]);
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", so.display());
    let out = p.check_config();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = p.start_inetd();
    c.login();
    c.command("ATRN example.net", 450);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success());
    assert!(log.contains("plugin=testplugin version=next-minor section=credentials"), "{log}");
    assert!(log.contains(" abi=1.1 "), "{log}");
}

// ---------------------------------------------------------------------------
// A panicking Rust plugin never takes the daemon down.

#[test]
fn a_panicking_rust_plugin_gets_451_and_the_daemon_and_other_sessions_carry_on() {
    let mut p = Provider::new();
    let so = rust_plugin("libodmr_test_panicky.so");
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", so.display());
    let daemon = p.start_standalone();

    let mut first = daemon.connect();
    first.hello();
    first.auth("panic", "whatever", 451);
    // The same session goes on, and so does a second one.
    first.auth(USER, PASSWORD, 235);
    let mut second = daemon.connect();
    second.login();
    second.command("ATRN example.org", 453);
    second.command("QUIT", 221);
    first.command("ATRN example.org", 453);
    first.command("QUIT", 221);

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // The panic message went through the host log with the plugin's name...
    let panic_line = log.lines().find(|l| l.contains("deliberate panic for user panic")).expect(&log);
    assert!(panic_line.contains("plugin=panicky panic in thread"), "{panic_line}");
    assert!(panic_line.contains("t/plugins/panicky/src/lib.rs"), "{panic_line}");
    // ...and the host logged the failed call, also by name.
    assert!(log.contains("plugin=panicky call=lookup_secret status=plugin panicked"), "{log}");
    // Nothing reached stderr around the host's log (std's default hook).
    for line in log.lines() {
        assert!(line.starts_with("odmrd["), "a line not written by odmrd's log: {line:?}");
    }
}

// ---------------------------------------------------------------------------
// The thread contract.

/// Run `n` sessions at once against `daemon`: each authenticates (one
/// `lookup_secret`) and asks for example.org (one `list_domains`).
fn parallel_sessions(daemon: &Daemon, n: usize) {
    let barrier = Arc::new(Barrier::new(n));
    let sessions: Vec<_> = (0..n)
        .map(|_| {
            let mut c = daemon.connect();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                c.hello();
                barrier.wait();
                c.auth(USER, PASSWORD, 235);
                // list_domains runs first; then the domain's lock decides
                // between "nothing queued" and "being collected".
                c.send("ATRN example.org");
                let reply = c.reply();
                assert!(reply[0].starts_with("453 ") || reply[0].starts_with("450 "), "{reply:?}");
                c.command("QUIT", 221);
            })
        })
        .collect();
    for s in sessions {
        s.join().expect("a session failed");
    }
}

/// The largest `max=` the test plugin logged, and how many calls logged.
fn entries(log: &str) -> (usize, usize) {
    let maxima: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("plugin=testplugin entries"))
        .map(|l| l.rsplit_once("max=").unwrap().1.trim().parse().unwrap())
        .collect();
    (maxima.iter().copied().max().unwrap_or(0), maxima.len())
}

#[test]
fn a_plugin_without_threadsafe_is_never_entered_twice_at_once() {
    let mut p = Provider::new();
    let so = test_plugin(p.path(), "libserial.so", &[]);
    p.credentials =
        format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\nsleep_ms = 20\n", so.display());
    let daemon = p.start_standalone();
    parallel_sessions(&daemon, 20);
    let (_, log) = daemon.stop();
    assert!(log.contains("plugin=testplugin version=test section=credentials"), "{log}");
    let (max, calls) = entries(&log);
    assert_eq!(calls, 40, "20 lookups and 20 domain lists:\n{log}");
    assert_eq!(max, 1, "entered concurrently:\n{log}");
}

#[test]
fn a_threadsafe_plugin_is_called_concurrently() {
    let mut p = Provider::new();
    let so = test_plugin(p.path(), "libconcurrent.so", &["-DTHREADSAFE"]);
    p.credentials =
        format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\nsleep_ms = 300\n", so.display());
    let daemon = p.start_standalone();
    parallel_sessions(&daemon, 10);
    let (_, log) = daemon.stop();
    assert!(log.contains("threadsafe=yes"), "{log}");
    let (max, calls) = entries(&log);
    assert_eq!(calls, 20, "{log}");
    assert!(max > 1, "ten sessions sleeping 300 ms each inside the plugin never overlapped:\n{log}");
}
