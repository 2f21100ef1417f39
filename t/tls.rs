//! TLS end to end: the real fetchmail with `ssl` against odmrd's implicit-TLS port, relaying to
//! a real Exim; a scripted customer doing STARTTLS (fetchmail cannot on ODMR); Debian's
//! `openssl s_client -starttls smtp`. The test's own CA is made with rcgen.

#[path = "support/mod.rs"]
mod support;

use base64::Engine as _;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use support::odmrd::{spawn_inetd_on, Daemon, Provider, EHLO_NAME, PASSWORD, USER};
use support::{body_of, envelope_of, qmail_message, CustomerMta, Fetchmail};

/// The name on odmrd's certificate.
const SERVER_NAME: &str = "odmr.test.example";

/// A CA and a server certificate for [`SERVER_NAME`] signed by it, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca_der: Vec<u8>,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "odmrd test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![SERVER_NAME.to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, SERVER_NAME);
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Pki { ca_der: ca.der().to_vec(), dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `[tls]` section for odmrd.
    fn section(&self, extra: &str) -> String {
        format!(
            "[tls]\ncertificate = {}\nkey = {}\n{extra}\n",
            self.path("cert.pem").display(),
            self.path("key.pem").display()
        )
    }

    fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(rustls::pki_types::CertificateDer::from(self.ca_der.clone())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

/// A provider whose config has `[tls]` (plus `tls_extra` in it) and `[auth] mechanisms`.
fn provider_with_tls(pki: &Pki, tls_extra: &str, mechanisms: &str) -> Provider {
    let mut p = Provider::new();
    p.extra_auth = format!("mechanisms = {mechanisms}\n");
    p.extra_sections = pki.section(tls_extra);
    p
}

// ---------------------------------------------------------------------------------------------
// fetchmail with `ssl`

#[test]
fn fetchmail_ssl_collects_everything_over_implicit_tls() {
    let pki = Pki::new();
    let mut p = provider_with_tls(&pki, "", "CRAM-MD5");
    let tls_port = support::free_port();
    p.extra_server = format!("listen_tls = 127.0.0.1:{tls_port}\n");

    let mut expected = Vec::new();
    for n in 0..500 {
        let body = format!("Subject: small {n}\nFrom: s@sender.example\n\nmessage {n}\n.dot line\n");
        expected.push((format!("r{n}@example.org"), body.clone().into_bytes()));
        let file = qmail_message("s@sender.example", &format!("r{n}@example.org"), body.as_bytes());
        p.queue("example.org", &format!("{n}.small"), &String::from_utf8(file).unwrap());
    }
    let mut big = b"Subject: big\nFrom: big@sender.example\n\n".to_vec();
    let mut n = 0;
    while big.len() < 20 * 1024 * 1024 {
        n += 1;
        big.extend_from_slice(
            format!("{}line {n} of the big one\n", if n % 5 == 0 { "." } else { "" }).as_bytes(),
        );
    }
    p.queue(
        "example.net",
        "big",
        &String::from_utf8(qmail_message("big@sender.example", "b@example.net", &big)).unwrap(),
    );
    expected.push(("b@example.net".into(), big));

    let daemon = p.start_daemon();
    daemon.wait_for_log("tls=implicit", Duration::from_secs(10));
    let mta = CustomerMta::start();
    let run = Fetchmail::new(tls_port)
        .user(USER, PASSWORD)
        .domains(&["example.org", "example.net"])
        .smtp_port(mta.port())
        .verbose(false)
        .timeout(Duration::from_secs(400))
        .poll_extra(&format!(
            "ssl sslcertck sslcertfile {} sslcommonname {SERVER_NAME}",
            pki.path("ca.pem").display()
        ))
        .run();
    assert_eq!(run.code, Some(0), "{}\n--- odmrd\n{}", run.report(), daemon.log());

    let delivered = mta.wait_for(expected.len(), Duration::from_secs(60));
    assert_eq!(delivered.len(), expected.len(), "{}", mta.diagnostics());
    for (rcpt, body) in &expected {
        let message = delivered
            .iter()
            .find(|m| envelope_of(m).1 == [rcpt.clone()])
            .unwrap_or_else(|| panic!("nothing for {rcpt}"));
        let body_start = body.windows(2).position(|w| w == b"\n\n").unwrap() + 2;
        assert_eq!(body_of(message), &body[body_start..], "{rcpt}");
    }
    assert!(p.queued("example.org").is_empty() && p.queued("example.net").is_empty());
    let log = daemon.log();
    assert!(log.contains("event=tls result=ok version=TLSv1_3"), "{log}");
    assert!(log.contains("sni=no") || log.contains("sni=yes"), "{log}");
    assert!(log.contains("end=done"), "the session ends with QUIT, not a timeout:\n{log}");
}

#[test]
fn fetchmail_rejecting_the_certificate_leaves_the_queue_alone() {
    let pki = Pki::new();
    let other_ca = Pki::new();
    let mut p = provider_with_tls(&pki, "", "CRAM-MD5");
    let tls_port = support::free_port();
    p.extra_server = format!("listen_tls = 127.0.0.1:{tls_port}\n");
    let file = p.queue(
        "example.org",
        "1.m",
        &String::from_utf8(qmail_message("s@sender.example", "x@example.org", b"Subject: x\n\nbody\n"))
            .unwrap(),
    );
    let daemon = p.start_daemon();
    daemon.wait_for_log("tls=implicit", Duration::from_secs(10));
    let mta = CustomerMta::start();
    let run = Fetchmail::new(tls_port)
        .user(USER, PASSWORD)
        .domains(&["example.org"])
        .smtp_port(mta.port())
        .poll_extra(&format!(
            "ssl sslcertck sslcertfile {} sslcommonname {SERVER_NAME}",
            other_ca.path("ca.pem").display()
        ))
        .run();
    assert_ne!(run.code, Some(0), "{}", run.report());
    assert!(file.exists(), "{}", daemon.log());
    assert!(mta.messages().is_empty());
}

// ---------------------------------------------------------------------------------------------
// A scripted customer with STARTTLS

/// A customer on a socketpair to `odmrd --inetd`, in clear text until [`Customer::starttls`].
struct Customer {
    clear: Option<BufReader<UnixStream>>,
    tls: Option<BufReader<rustls::StreamOwned<rustls::ClientConnection, UnixStream>>>,
    child: std::process::Child,
}

impl Customer {
    fn start(p: &Provider) -> Customer {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let child = spawn_inetd_on(support::odmrd::odmrd_command(&p.config()), theirs);
        Customer { clear: Some(BufReader::new(ours)), tls: None, child }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        match (&mut self.tls, &mut self.clear) {
            (Some(tls), _) => tls.get_mut().write_all(bytes).unwrap(),
            (None, Some(clear)) => clear.get_mut().write_all(bytes).unwrap(),
            _ => unreachable!(),
        }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        match (&mut self.tls, &mut self.clear) {
            (Some(tls), _) => tls.read_line(&mut line).unwrap(),
            (None, Some(clear)) => clear.read_line(&mut line).unwrap(),
            _ => unreachable!(),
        };
        line
    }

    /// One reply: its lines without CRLF.
    fn reply(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let line = self.line();
            assert!(!line.is_empty(), "EOF after {lines:?}");
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.trim_end().to_string());
            if last {
                return lines;
            }
        }
    }

    fn command(&mut self, line: &str, code: u16) -> Vec<String> {
        self.send_raw(format!("{line}\r\n").as_bytes());
        let reply = self.reply();
        assert!(
            reply.last().unwrap().starts_with(&code.to_string()),
            "{line}: expected {code}, got {reply:?}"
        );
        reply
    }

    fn starttls(&mut self, pki: &Pki) {
        let clear = self.clear.take().unwrap();
        assert!(clear.buffer().is_empty(), "odmrd sent more after 220");
        let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
        let conn = rustls::ClientConnection::new(pki.client_config(), name).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, clear.into_inner());
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        self.tls = Some(BufReader::new(stream));
    }

    fn log(mut self) -> String {
        drop(self.tls.take());
        drop(self.clear.take());
        let mut log = String::new();
        std::io::Read::read_to_string(&mut self.child.stderr.take().unwrap(), &mut log).unwrap();
        let _ = self.child.wait();
        log
    }
}

fn plain(user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
}

#[test]
fn starttls_then_auth_plain_then_several_messages_under_tls() {
    let pki = Pki::new();
    let p = provider_with_tls(&pki, "", "CRAM-MD5 PLAIN LOGIN");
    for n in 0..5 {
        let file = qmail_message(
            "s@sender.example",
            &format!("u{n}@example.org"),
            format!("Subject: {n}\n\n.{n}\n").as_bytes(),
        );
        p.queue("example.org", &format!("{n}.m"), &String::from_utf8(file).unwrap());
    }
    let mut c = Customer::start(&p);
    c.reply();
    let ehlo = c.command("EHLO customer.example", 250);
    assert!(ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| l.ends_with("AUTH CRAM-MD5")), "PLAIN/LOGIN only under TLS: {ehlo:?}");
    c.command(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 538);
    c.command("STARTTLS", 220);
    c.starttls(&pki);
    c.command(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 503);
    let ehlo = c.command("EHLO customer.example", 250);
    assert!(!ehlo.iter().any(|l| l.ends_with("STARTTLS")), "{ehlo:?}");
    assert!(ehlo.iter().any(|l| l.ends_with("AUTH CRAM-MD5 PLAIN LOGIN")), "{ehlo:?}");
    c.command("STARTTLS", 503);
    c.command(&format!("AUTH PLAIN {}", plain(USER, "wrong")), 535);
    c.command(&format!("AUTH PLAIN {}", plain(USER, PASSWORD)), 235);
    c.command("ATRN example.org", 250);
    c.send_raw(b"220 customer.example ESMTP\r\n");
    assert_eq!(c.line(), format!("EHLO {EHLO_NAME}\r\n"));
    c.send_raw(b"250-customer.example\r\n250 PIPELINING\r\n");
    let mut received = Vec::new();
    loop {
        let mail = c.line();
        if mail == "QUIT\r\n" {
            c.send_raw(b"221 bye\r\n");
            break;
        }
        assert!(mail.starts_with("MAIL FROM:"), "{mail:?}");
        let rcpt = c.line();
        assert_eq!(c.line(), "DATA\r\n");
        c.send_raw(b"250 ok\r\n250 ok\r\n354 go\r\n");
        let mut data = String::new();
        loop {
            let line = c.line();
            if line == ".\r\n" {
                break;
            }
            data.push_str(&line);
        }
        c.send_raw(b"250 queued\r\n");
        received.push((rcpt, data));
    }
    let log = c.log();
    assert_eq!(received.len(), 5, "{log}");
    assert!(
        received.iter().any(|(r, d)| r == "RCPT TO:<u3@example.org>\r\n" && d.ends_with("\r\n..3\r\n")),
        "{received:?}"
    );
    assert!(p.queued("example.org").is_empty(), "{log}");
    assert!(log.contains("event=tls result=ok"), "{log}");
    assert!(log.contains("mechanism=PLAIN"), "{log}");
}

#[test]
fn commands_injected_behind_starttls_get_no_reply() {
    let pki = Pki::new();
    let p = provider_with_tls(&pki, "", "CRAM-MD5");
    let mut c = Customer::start(&p);
    c.reply();
    c.command("EHLO customer.example", 250);
    c.send_raw(b"STARTTLS\r\nEHLO injected.example\r\n");
    assert!(c.reply()[0].starts_with("220 "));
    c.starttls(&pki);
    // The first reply under TLS answers our NOOP, not the injected EHLO.
    assert_eq!(c.command("NOOP", 250), ["250 OK"]);
    c.command("QUIT", 221);
    let log = c.log();
    assert!(log.contains("discarded 23 octets"), "{log}");
}

#[test]
fn require_refuses_auth_before_tls() {
    let pki = Pki::new();
    let p = provider_with_tls(&pki, "require = yes", "CRAM-MD5");
    let mut c = Customer::start(&p);
    c.reply();
    c.command("EHLO customer.example", 250);
    let reply = c.command("AUTH CRAM-MD5", 530);
    assert_eq!(reply, ["530 5.7.0 Must issue a STARTTLS command first"]);
    c.command("ATRN example.org", 530);
    c.command("STARTTLS", 220);
    c.starttls(&pki);
    c.command("EHLO customer.example", 250);
    c.command("AUTH CRAM-MD5", 334);
    c.command("*", 501);
    c.command("QUIT", 221);
    c.log();
}

#[test]
fn openssl_s_client_completes_a_starttls_handshake() {
    let pki = Pki::new();
    let p = provider_with_tls(&pki, "", "CRAM-MD5");
    let daemon = Daemon::start(&p.config());
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-connect", &format!("127.0.0.1:{}", daemon.port())])
        .args(["-servername", SERVER_NAME, "-verify_return_error", "-CAfile"])
        .arg(pki.path("ca.pem"))
        .stdin(Stdio::null())
        .output()
        .expect("openssl (Debian's openssl package)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}\n{}", daemon.log());
    assert!(stdout.contains("Verify return code: 0 (ok)"), "{stdout}");
    daemon.wait_for_log("event=tls result=ok", Duration::from_secs(5));
    assert!(daemon.log().contains("sni=yes"), "{}", daemon.log());
}

#[test]
fn check_config_names_a_key_that_does_not_fit() {
    let pki = Pki::new();
    let other = Pki::new();
    let mut p = Provider::new();
    p.extra_sections = format!(
        "[tls]\ncertificate = {}\nkey = {}\n",
        pki.path("cert.pem").display(),
        other.path("key.pem").display()
    );
    let out = support::odmrd::check_config(&p.config());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("[tls] key") && stderr.contains("does not fit"), "{stderr}");
}

#[test]
fn a_crypt_hashed_account_logs_in_with_plain_under_tls_and_not_with_cram_md5() {
    let pki = Pki::new();
    let mut p = provider_with_tls(&pki, "", "CRAM-MD5 PLAIN");
    let hash = Command::new("doveadm")
        .args(["pw", "-s", "SHA512-CRYPT", "-p", "hashed-secret"])
        .output()
        .expect("doveadm (dovecot-core, t/setup-deps)");
    let hash = String::from_utf8(hash.stdout).unwrap();
    assert!(hash.starts_with("{SHA512-CRYPT}$6$"), "{hash}");
    let passwd = p.path().join("passwd");
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str(&format!("hashed:{}::::::odmr_domains=example.org\n", hash.trim()));
    std::fs::write(&passwd, text).unwrap();
    p.credentials = format!("plugin = builtin:passwd\nfile = {}\n", passwd.display());

    let mut c = Customer::start(&p);
    c.reply();
    c.command("EHLO customer.example", 250);
    // CRAM-MD5 cannot be checked against a hash.
    let challenge = c.command("AUTH CRAM-MD5", 334)[0][4..].to_string();
    c.command(&support::odmrd::cram_md5_response("hashed", "hashed-secret", &challenge), 535);
    c.command("STARTTLS", 220);
    c.starttls(&pki);
    c.command("EHLO customer.example", 250);
    c.command(&format!("AUTH PLAIN {}", plain("hashed", "wrong")), 535);
    c.command(&format!("AUTH PLAIN {}", plain("hashed", "hashed-secret")), 235);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let log = c.log();
    assert!(
        log.contains("cannot serve CRAM-MD5; the customer can log in with PLAIN or LOGIN under TLS"),
        "{log}"
    );
    assert!(log.contains("user=hashed result=ok mechanism=PLAIN"), "{log}");
    assert!(!log.contains("hashed-secret"), "no secret in the log: {log}");
}

/// What `openssl s_client -starttls smtp` makes of the daemon's certificate, trusting `ca`:
/// (exit success, stdout).
fn s_client(port: u16, ca: &std::path::Path) -> (bool, String) {
    let out = Command::new("openssl")
        .args(["s_client", "-starttls", "smtp", "-connect", &format!("127.0.0.1:{port}")])
        .args(["-servername", SERVER_NAME, "-verify_return_error", "-CAfile"])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("openssl (Debian's openssl package)");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn sighup_with_a_new_certificate_serves_it_to_the_next_handshake_and_spares_a_running_session() {
    let (old, new) = (Pki::new(), Pki::new());
    // The configured files, replaced in place as certbot and the like do.
    let files = tempfile::tempdir().unwrap();
    for name in ["cert.pem", "key.pem"] {
        std::fs::copy(old.path(name), files.path().join(name)).unwrap();
    }
    let mut p = Provider::new();
    p.extra_sections = format!(
        "[tls]\ncertificate = {}\nkey = {}\n",
        files.path().join("cert.pem").display(),
        files.path().join("key.pem").display()
    );
    let daemon = Daemon::start(&p.config());
    assert!(s_client(daemon.port(), &old.path("ca.pem")).0, "{}", daemon.log());

    let mut running = daemon.connect();
    running.hello();
    for name in ["cert.pem", "key.pem"] {
        std::fs::copy(new.path(name), files.path().join(name)).unwrap();
    }
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    daemon.wait_for_log("event=reloaded", Duration::from_secs(20));

    let (trusted, stdout) = s_client(daemon.port(), &new.path("ca.pem"));
    assert!(trusted && stdout.contains("Verify return code: 0 (ok)"), "{stdout}\n{}", daemon.log());
    assert!(!s_client(daemon.port(), &old.path("ca.pem")).0, "the old certificate is still served");
    // The session that was running across the reload goes on.
    running.command("NOOP", 250);
    running.command("QUIT", 221);
}
