//! Transcript tests: `odmrd --inetd` on one end of a socketpair, the test on
//! the other, speaking first as the ODMR customer and then, after the line is
//! turned around, as the customer's MTA. Every row of the reply table and
//! every way a reversed session can end is driven here, and the maildir queue
//! is inspected afterwards.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const USER: &str = "customer";
const PASSWORD: &str = "S3cret-odmr";

/// A provider's files: configuration, passwd, maildir spool, bounce recorder.
struct Provider {
    dir: tempfile::TempDir,
    extra_server: String,
}

impl Provider {
    fn new() -> Provider {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("passwd"),
            format!(
                "{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org,example.net\n\
                 other:{{PLAIN}}other-secret::::::odmr_domains=example.com\n"
            ),
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
        Provider { dir, extra_server: String::new() }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn config(&self) -> PathBuf {
        let d = self.path().display();
        let ini = format!(
            "[server]\nhostname = odmr.test.example\nlock_directory = {d}/locks\n{extra}\n\
             [auth]\nmax_failures = 3\nfailure_delay = 0.01\n\
             [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
             [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
             [bounce]\nsendmail = {d}/sendmail\n\
             [log]\nsyslog = off\nstderr = yes\nlevel = debug\n",
            extra = self.extra_server
        );
        let path = self.path().join("odmrd.ini");
        std::fs::write(&path, ini).unwrap();
        path
    }

    fn maildir(&self, domain: &str) -> PathBuf {
        let m = self.path().join("spool").join(domain);
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(m.join(sub)).unwrap();
        }
        m
    }

    /// Queue a message file; returns its path.
    fn queue(&self, domain: &str, name: &str, content: &str) -> PathBuf {
        let path = self.maildir(domain).join("new").join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn queued(&self, domain: &str) -> Vec<String> {
        let mut names = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.path().join("spool").join(domain).join(sub)) {
                for e in entries {
                    names.push(std::fs::read_to_string(e.unwrap().path()).unwrap());
                }
            }
        }
        names
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

    fn start(&self) -> Client {
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
        let reader = BufReader::new(ours.try_clone().unwrap());
        Client { stream: ours, reader, child: Some(child) }
    }
}

/// The test's end of the connection.
struct Client {
    stream: UnixStream,
    reader: BufReader<UnixStream>,
    child: Option<Child>,
}

impl Client {
    fn send(&mut self, line: &str) {
        self.stream.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// One reply, all its lines; panics on EOF.
    fn reply(&mut self) -> Vec<String> {
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

    /// A line the provider sends in the reversed state.
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

    fn login(&mut self) {
        self.expect(220);
        self.send("EHLO customer.example");
        self.reply();
        self.auth(USER, PASSWORD, 235);
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

    /// Close our end and collect odmrd's exit status and log.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        let mut child = self.child.take().unwrap();
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

fn bsmtp(from: &str, rcpts: &[&str], body: &str) -> String {
    let mut s = format!("MAIL FROM:<{from}>\n");
    for r in rcpts {
        s.push_str(&format!("RCPT TO:<{r}>\n"));
    }
    s.push_str("DATA\n");
    s.push_str(body);
    s.push_str(".\n");
    s
}

/// Play the customer's MTA: greet, answer EHLO with `caps`.
fn turn_around(c: &mut Client, caps: &[&str]) {
    c.send("220 customer.example ESMTP");
    assert_eq!(c.line(), "EHLO odmr.test.example\r\n");
    let mut lines = vec!["250-customer.example".to_string()];
    for cap in caps {
        lines.push(format!("250-{cap}"));
    }
    let last = lines.pop().unwrap().replacen("250-", "250 ", 1);
    lines.push(last);
    c.send_raw(format!("{}\r\n", lines.join("\r\n")).as_bytes());
}

// ---------------------------------------------------------------------------
// The reply table.

#[test]
fn greeting_ehlo_and_refused_commands() {
    let p = Provider::new();
    let mut c = p.start();
    assert!(c.expect(220).starts_with("odmr.test.example"));
    c.send("EHLO customer.example");
    let ehlo = c.reply();
    assert_eq!(ehlo.first().unwrap(), "250-odmr.test.example");
    assert!(ehlo.contains(&"250-AUTH CRAM-MD5".to_string()), "{ehlo:?}");
    assert_eq!(ehlo.last().unwrap(), "250 ATRN");
    assert!(!ehlo.iter().any(|l| l.contains("PLAIN") || l.contains("LOGIN") || l.contains("STARTTLS")));
    c.command("HELO customer.example", 250);
    for verb in [
        "MAIL FROM:<a@b.example>",
        "RCPT TO:<a@b.example>",
        "DATA",
        "VRFY a",
        "EXPN a",
        "ETRN example.org",
        "TURN",
    ] {
        c.command(verb, 502);
    }
    c.command("FROB", 500);
    c.command("NOOP", 250);
    c.command("RSET", 250);
    c.command("QUIT", 221);
    c.expect_eof();
    let (status, log) = c.finish();
    assert!(status.success());
    assert!(log.contains("event=connect"), "{log}");
}

#[test]
fn a_line_too_long_gets_500_and_the_session_continues() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    c.send(&format!("NOOP {}", "x".repeat(600)));
    c.expect(500);
    c.command("NOOP", 250);
    c.send(&"y".repeat(100_000));
    c.expect(500);
    c.send("EHLO customer.example");
    assert_eq!(c.reply().last().unwrap(), "250 ATRN");
}

#[test]
fn auth_replies() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    c.command("ATRN example.org", 530);
    c.command("AUTH PLAIN", 504);
    c.command("AUTH LOGIN", 504);
    c.command("AUTH CRAM-MD5 dGVzdA==", 501);
    c.command("AUTH CRAM-MD5", 334);
    c.command("*", 501);
    c.command("AUTH CRAM-MD5", 334);
    c.command("not base64 at all!", 501);
    c.auth(USER, PASSWORD, 235);
    c.command("AUTH CRAM-MD5", 503);
    let (_, log) = {
        c.command("QUIT", 221);
        c.finish()
    };
    assert!(log.contains("event=auth user=customer result=ok"), "{log}");
    assert!(!log.contains(PASSWORD), "the secret must never be logged");
}

#[test]
fn challenges_are_unique_and_well_formed() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5 {
        let b64 = c.command("AUTH CRAM-MD5", 334);
        let challenge =
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
        assert!(challenge.starts_with('<') && challenge.ends_with("@odmr.test.example>"), "{challenge}");
        assert!(seen.insert(challenge));
        c.command("*", 501);
    }
}

#[test]
fn wrong_passwords_get_535_then_421_and_close() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    c.auth(USER, "wrong", 535);
    c.auth("nobody", PASSWORD, 535);
    c.auth(USER, "wrong again", 421);
    c.expect_eof();
    let (_, log) = c.finish();
    assert!(log.contains("reason=wrong-password"), "{log}");
    assert!(log.contains("user=nobody result=failed reason=unknown-user"), "{log}");
}

#[test]
fn atrn_syntax_errors_get_501() {
    let p = Provider::new();
    let mut c = p.start();
    c.login();
    for bad in [
        "ATRN ../x",
        "ATRN example",
        "ATRN example.org,",
        "ATRN exa_mple.org",
        "ATRN -a.example",
        "ATRN a..b",
    ] {
        c.command(bad, 501);
    }
    c.command("ATRN example.org", 453);
}

#[test]
fn atrn_for_a_domain_not_permitted_gets_450_and_sends_nothing() {
    let p = Provider::new();
    let org =
        p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: a\n\nbody\n"));
    p.queue("example.com", "2.m", &bsmtp("a@s.example", &["x@example.com"], "Subject: b\n\nbody\n"));
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org,example.com", 450);
    c.command("ATRN EXAMPLE.COM", 450);
    c.command("ATRN example.org.uk", 450);
    c.command("QUIT", 221);
    c.finish();
    assert!(org.exists());
    assert_eq!(p.queued("example.com").len(), 1);
}

#[test]
fn nothing_queued_gets_453_and_the_session_goes_on() {
    let p = Provider::new();
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 453);
    c.command("ATRN", 453);
    c.command("QUIT", 221);
}

#[test]
fn idle_timeout_gets_421_and_close() {
    let mut p = Provider::new();
    p.extra_server = "idle_timeout = 1".into();
    let mut c = p.start();
    c.expect(220);
    std::thread::sleep(Duration::from_millis(1500));
    c.expect(421);
    c.expect_eof();
}

#[test]
fn clients_outside_allow_get_554() {
    let mut p = Provider::new();
    p.extra_server = "allow = 192.0.2.0/24".into();
    let mut c = p.start();
    c.expect(554);
    c.expect_eof();
}

#[test]
fn a_second_collector_of_a_domain_gets_450() {
    let p = Provider::new();
    p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: a\n\nbody\n"));
    let mut first = p.start();
    first.login();
    first.command("ATRN example.org", 250);
    // The first session now waits for its customer's 220 and holds the lock.
    let mut second = p.start();
    second.login();
    let text = second.command("ATRN example.org", 450);
    assert!(text.contains("example.org"), "{text}");
    second.command("ATRN example.net", 453);
    drop(first);
}

#[test]
fn an_unusable_lock_directory_gets_451() {
    let p = Provider::new();
    std::fs::write(p.path().join("locks"), "not a directory").unwrap();
    p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: a\n\nbody\n"));
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 451);
}

#[test]
fn an_unreadable_credential_store_gets_451() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    std::fs::remove_file(p.path().join("passwd")).unwrap();
    c.auth(USER, PASSWORD, 451);
}

// ---------------------------------------------------------------------------
// The reversed state.

#[test]
fn a_message_is_delivered_and_removed_only_after_the_final_2xx() {
    let p = Provider::new();
    let body = "Subject: hi\n\n.leading dot\nline\r\nlast line without newline";
    let file = p.queue(
        "example.org",
        "1.m",
        &format!("Return-Path: <alice@s.example>\nDelivered-To: bob@example.org\n{body}"),
    );
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &["SIZE 1000000", "8BITMIME"]);
    let mail = c.line();
    assert!(mail.starts_with("MAIL FROM:<alice@s.example> SIZE="), "{mail}");
    assert!(mail.ends_with(" BODY=8BITMIME\r\n"), "{mail}");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<bob@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    let mut data = String::new();
    loop {
        let line = c.line();
        if line == ".\r\n" {
            break;
        }
        data.push_str(&line);
    }
    assert_eq!(data, "Subject: hi\r\n\r\n..leading dot\r\nline\r\nlast line without newline\r\n");
    assert!(file.exists(), "nothing is removed before the reply to the final dot");
    c.send("250 queued as X");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (status, log) = c.finish();
    assert!(status.success());
    assert!(!file.exists());
    assert!(log.contains("to=<bob@example.org> status=sent"), "{log}");
}

#[test]
fn pipelining_sends_the_envelope_in_one_batch() {
    let p = Provider::new();
    p.queue(
        "example.org",
        "1.m",
        &bsmtp("a@s.example", &["x@example.org", "y@example.org"], "Subject: p\n\nbody\n"),
    );
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &["PIPELINING"]);
    // All three commands arrive before we answer any of them.
    assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
    assert_eq!(c.line(), "RCPT TO:<x@example.org>\r\n");
    assert_eq!(c.line(), "RCPT TO:<y@example.org>\r\n");
    assert_eq!(c.line(), "DATA\r\n");
    c.send_raw(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    while c.line() != ".\r\n" {}
    c.send("250 done");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    c.finish();
    assert!(p.queued("example.org").is_empty());
}

#[test]
fn other_domains_recipients_stay_queued() {
    let p = Provider::new();
    let original = bsmtp("a@s.example", &["x@example.org", "y@example.net"], "Subject: two\n\nbody\n");
    p.queue("example.org", "1.m", &original);
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<x@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    while c.line() != ".\r\n" {}
    c.send("250 done");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    c.finish();
    let left = p.queued("example.org");
    assert_eq!(left, [bsmtp("a@s.example", &["y@example.net"], "Subject: two\n\nbody\n")]);
}

#[test]
fn atrn_example_org_never_touches_example_org_uk() {
    let p = Provider::new();
    let uk = p.queue(
        "example.org",
        "1.m",
        &bsmtp("a@s.example", &["victor@example.org.uk"], "Subject: uk\n\nbody\n"),
    );
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    c.finish();
    assert!(uk.exists());
}

/// Get a session to the point where the provider sent `stop_after`, then drop
/// the connection; the message must still be queued, byte for byte.
fn disconnect_after(stop_after: &str) {
    let p = Provider::new();
    let content =
        bsmtp("a@s.example", &["x@example.org"], &format!("Subject: d\n\n{}\n", "line\n".repeat(20_000)));
    let file = p.queue("example.org", "1.m", &content);
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    if stop_after != "250" {
        turn_around(&mut c, &[]);
        assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
        if stop_after != "MAIL" {
            c.send("250 ok");
            c.line();
            c.send("250 ok");
            c.line();
            c.send("354 go");
            for _ in 0..100 {
                c.line();
            }
        }
    }
    let (_, log) = c.finish();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), content, "{log}");
}

#[test]
fn a_disconnect_before_the_customers_220_leaves_the_message_queued() {
    disconnect_after("250");
}

#[test]
fn a_disconnect_after_mail_leaves_the_message_queued() {
    disconnect_after("MAIL");
}

#[test]
fn a_disconnect_in_the_middle_of_data_leaves_the_message_queued() {
    disconnect_after("DATA");
}

#[test]
fn a_4xx_recipient_stays_queued_and_a_5xx_one_is_bounced_with_a_dsn() {
    let p = Provider::new();
    p.queue(
        "example.org",
        "1.m",
        &bsmtp(
            "alice@s.example",
            &["ok@example.org", "later@example.org", "gone@example.org"],
            "Subject: mixed\n\nbody\n",
        ),
    );
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    c.line();
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<ok@example.org>\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<later@example.org>\r\n");
    c.send("451 4.3.0 try later");
    assert_eq!(c.line(), "RCPT TO:<gone@example.org>\r\n");
    c.send("550 5.1.1 no such user");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    while c.line() != ".\r\n" {}
    c.send("250 done");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (_, log) = c.finish();
    assert_eq!(
        p.queued("example.org"),
        [bsmtp("alice@s.example", &["later@example.org"], "Subject: mixed\n\nbody\n")]
    );
    assert!(log.contains("to=<later@example.org> status=deferred"), "{log}");
    assert!(log.contains("to=<gone@example.org> status=bounced dsn=sent"), "{log}");

    let dsns = p.dsns();
    assert_eq!(dsns.len(), 1, "one DSN");
    let (args, dsn) = &dsns[0];
    assert_eq!(args, "-i\n-f\n<>\n--\nalice@s.example\n");
    assert!(dsn.contains("Content-Type: multipart/report; report-type=delivery-status;"), "{dsn}");
    assert!(dsn.contains("Content-Type: message/delivery-status"), "{dsn}");
    assert!(
        dsn.contains("Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"),
        "{dsn}"
    );
    assert!(dsn.contains("Diagnostic-Code: smtp; 550 5.1.1 no such user"), "{dsn}");
    assert!(dsn.contains("Content-Type: text/rfc822-headers\r\n\r\nSubject: mixed\r\n"), "{dsn}");
    assert!(!dsn.contains("later@example.org") && !dsn.contains("ok@example.org"), "{dsn}");
}

#[test]
fn a_rejected_message_from_the_null_sender_is_removed_without_a_dsn() {
    let p = Provider::new();
    p.queue("example.org", "1.m", "Return-Path: <>\nDelivered-To: x@example.org\nSubject: bounce\n\nbody\n");
    let mut c = p.start();
    c.login();
    c.command("ATRN", 250);
    turn_around(&mut c, &[]);
    assert_eq!(c.line(), "MAIL FROM:<>\r\n");
    c.send("250 ok");
    c.line();
    c.send("250 ok");
    c.line();
    c.send("354 go");
    while c.line() != ".\r\n" {}
    c.send("554 5.6.0 rejected");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (_, log) = c.finish();
    assert!(p.queued("example.org").is_empty());
    assert!(p.dsns().is_empty());
    assert!(log.contains("status=bounced dsn=none-null-sender"), "{log}");
}

#[test]
fn a_failing_dsn_keeps_the_recipient_queued() {
    let p = Provider::new();
    std::fs::write(p.path().join("sendmail"), "#!/bin/sh\nexit 75\n").unwrap();
    let file =
        p.queue("example.org", "1.m", &bsmtp("a@s.example", &["gone@example.org"], "Subject: x\n\nbody\n"));
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    c.line();
    c.send("250 ok");
    c.line();
    c.send("550 no");
    assert_eq!(c.line(), "RSET\r\n");
    c.send("250 ok");
    assert_eq!(c.line(), "QUIT\r\n");
    c.send("221 bye");
    let (_, log) = c.finish();
    assert!(file.exists(), "{log}");
    assert!(log.contains("event=dsn-failed"), "{log}");
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let p = Provider::new();
    p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: h\n\nbody\n"));
    let mut c = p.start();
    c.login();
    c.command("ATRN example.org", 250);
    c.send("220 old.example SMTP");
    assert_eq!(c.line(), "EHLO odmr.test.example\r\n");
    c.send("500 what?");
    assert_eq!(c.line(), "HELO odmr.test.example\r\n");
    c.send("250 old.example");
    assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n", "no ESMTP parameters after HELO");
    c.send("250 ok");
    c.line();
    c.send("250 ok");
    c.line();
    c.send("354 go");
    while c.line() != ".\r\n" {}
    c.send("250 ok");
    assert_eq!(c.line(), "QUIT\r\n");
    c.finish();
    assert!(p.queued("example.org").is_empty());
}
