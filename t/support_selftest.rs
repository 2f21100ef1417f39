//! Proves the end-to-end test support (`t/support/mod.rs`) without odmrd: the private Exim
//! delivers byte for byte, fetchmail runs against a fake ODMR provider with our rc file and
//! FETCHMAILHOME, and the fixtures record what they should.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::thread::JoinHandle;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;

use support::*;

const SECS_30: Duration = Duration::from_secs(30);

#[test]
fn free_port_is_bindable() {
    let port = free_port();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).expect("the port is free");
}

#[test]
fn exim_stores_bodies_byte_for_byte() {
    let mta = CustomerMta::start();
    let (mut c, greeting) = SmtpClient::connect(&mta.addr());
    assert_eq!(greeting.code, 220);
    let ehlo = c.cmd("EHLO odmr.test");
    assert_eq!(ehlo.code, 250);
    assert!(ehlo.lines.iter().any(|l| l == "PIPELINING"), "{ehlo:?}");
    let size: u64 = ehlo.lines.iter().find_map(|l| l.strip_prefix("SIZE ")?.parse().ok()).expect("SIZE");
    assert!(size >= 25 * 1024 * 1024, "SIZE {size}");

    // A header, a line starting with '.', a lone '.', an empty line, 8-bit bytes, and no final
    // newline.
    let first: &[u8] = b"Subject: one\r\nX-Custom: kept\r\n\r\n.leading dot\r\n.\r\n..two\r\n\r\n\xc3\xa9t\xc3\xa9\r\nno final newline";
    assert_eq!(c.cmd("MAIL FROM:<sender@origin.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<joe@example.org>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<Ann@Example.COM>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    assert_eq!(c.send_data(first).code, 250);

    // No header at all, null sender.
    let second: &[u8] = b"just a body line\r\n\r\nand another\r\n";
    assert_eq!(c.cmd("MAIL FROM:<>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<x@example.net>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    assert_eq!(c.send_data(second).code, 250);
    assert_eq!(c.cmd("QUIT").code, 221);

    let got = mta.wait_for(2, SECS_30);
    assert_eq!(got.len(), 2);
    let (m1, m2) = (&got[0], &got[1]);
    let (_, m1_body_sent) = first.split_at(find_blank(first));
    assert_eq!(body_of(m1), &as_exim_stores(m1_body_sent)[..], "{}", String::from_utf8_lossy(m1));
    assert_eq!(body_of(m1), b".leading dot\n.\n..two\n\n\xc3\xa9t\xc3\xa9\nno final newline\n");
    assert_eq!(header(m1, "Subject").as_deref(), Some("one"));
    assert_eq!(header(m1, "x-custom").as_deref(), Some("kept"));
    assert_eq!(header(m1, "Message-ID"), None, "Exim adds no Message-ID to SMTP mail");
    assert_eq!(
        envelope_of(m1),
        (
            "sender@origin.test".to_string(),
            vec!["joe@example.org".to_string(), "Ann@Example.COM".to_string()]
        )
    );
    assert!(!m1.contains(&b'\r'), "stored with LF line ends");
    assert!(exim_id_of(m1).unwrap() < exim_id_of(m2).unwrap(), "received in order");

    assert_eq!(body_of(m2), &as_exim_stores(second)[..], "{}", String::from_utf8_lossy(m2));
    assert_eq!(envelope_of(m2), (String::new(), vec!["x@example.net".to_string()]));
}

/// Where the body starts in a message with a header (index just after the blank line).
fn find_blank(m: &[u8]) -> usize {
    m.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4).expect("blank line")
}

#[test]
fn exim_takes_a_20_mb_message() {
    let mta = CustomerMta::start();
    let mut body = Vec::with_capacity(21 * 1024 * 1024);
    body.extend_from_slice(b"Subject: big\r\n\r\n");
    let mut i = 0u64;
    while body.len() < 20 * 1024 * 1024 {
        if matches!(i % 97, 0) {
            body.extend_from_slice(b".");
        }
        body.extend_from_slice(format!("line {i:010} abcdefghijklmnopqrstuvwxyz0123456789\r\n").as_bytes());
        i += 1;
    }
    let (mut c, _) = SmtpClient::connect(&mta.addr());
    c.cmd("EHLO odmr.test");
    assert_eq!(c.cmd("MAIL FROM:<big@origin.test> SIZE=21000000").code, 250);
    assert_eq!(c.cmd("RCPT TO:<joe@example.org>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    assert_eq!(c.send_data(&body).code, 250);
    c.cmd("QUIT");
    let got = mta.wait_for(1, Duration::from_secs(60));
    let sent_body = &body[find_blank(&body)..];
    let stored = body_of(&got[0]);
    assert_eq!(stored.len(), as_exim_stores(sent_body).len());
    assert!(stored == &as_exim_stores(sent_body)[..], "20 MB body differs");
}

#[test]
fn exim_outcome_conventions() {
    let mta = CustomerMta::start_with(MtaOptions { chunking: false, ..MtaOptions::default() });
    let (mut c, _) = SmtpClient::connect(&mta.addr());
    let ehlo = c.cmd("EHLO odmr.test");
    assert!(!ehlo.lines.iter().any(|l| l == "CHUNKING"), "{ehlo:?}");
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert_eq!(c.cmd("MAIL FROM:<s@origin.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<reject-me@example.org>").code, 550);
    assert_eq!(c.cmd("RCPT TO:<defer-me@example.org>").code, 451);
    assert_eq!(c.cmd("RCPT TO:<ok@example.org>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    assert_eq!(c.send_data(b"X-Test-Reject: yes\r\n\r\nbody\r\n").code, 550);
    assert_eq!(c.cmd("MAIL FROM:<s@origin.test>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<ok@example.org>").code, 250);
    assert_eq!(c.cmd("DATA").code, 354);
    assert_eq!(c.send_data(b"X-Test-Defer: yes\r\n\r\nbody\r\n").code, 451);
    c.cmd("QUIT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(mta.messages().is_empty());
}

/// What the fake provider saw from fetchmail.
#[derive(Debug, Default)]
struct Seen {
    lines: Vec<String>,
    cram_ok: bool,
}

/// A one-connection fake ODMR provider: greeting, EHLO with ATRN, AUTH CRAM-MD5 checked
/// against `password`, then `auth_reply`; if that is 235, `atrn_reply` to ATRN. On a 250 to
/// ATRN it hands the connection to `reversed` (it speaks SMTP to the customer's MTA).
fn fake_provider(
    password: &'static str,
    auth_reply: &'static str,
    atrn_reply: &'static str,
    reversed: Option<fn(SmtpClient)>,
) -> (u16, JoinHandle<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let mut seen = Seen::default();
        // Never hang the test when fetchmail does not connect at all.
        listener.set_nonblocking(true).unwrap();
        let mut accepted = None;
        wait_until(SECS_30, || {
            accepted = listener.accept().ok();
            accepted.is_some()
        });
        let Some((stream, _)) = accepted else {
            return seen;
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut w = stream.try_clone().unwrap();
        let mut r = BufReader::new(stream.try_clone().unwrap());
        let mut read = |seen: &mut Seen| -> Option<String> {
            let mut l = String::new();
            if r.read_line(&mut l).ok()? == 0 {
                return None;
            }
            let l = l.trim_end().to_string();
            seen.lines.push(l.clone());
            Some(l)
        };
        w.write_all(b"220 fake.provider.test ODMR ready\r\n").unwrap();
        let challenge = "<12345.67890@fake.provider.test>";
        while let Some(line) = read(&mut seen) {
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => {
                    w.write_all(b"250-fake.provider.test\r\n250-AUTH CRAM-MD5\r\n250 ATRN\r\n").unwrap()
                }
                "AUTH" => {
                    w.write_all(format!("334 {}\r\n", B64.encode(challenge)).as_bytes()).unwrap();
                    let resp = read(&mut seen).unwrap_or_default();
                    let decoded = String::from_utf8(B64.decode(resp.trim()).unwrap_or_default()).unwrap();
                    let (_user, digest) = decoded.rsplit_once(' ').unwrap_or(("", ""));
                    let mut mac = Hmac::<Md5>::new_from_slice(password.as_bytes()).unwrap();
                    mac.update(challenge.as_bytes());
                    let want: String =
                        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
                    seen.cram_ok = digest == want;
                    w.write_all(format!("{auth_reply}\r\n").as_bytes()).unwrap();
                }
                "ATRN" => {
                    w.write_all(format!("{atrn_reply}\r\n").as_bytes()).unwrap();
                    if atrn_reply.starts_with("250") {
                        if let Some(f) = reversed {
                            f(SmtpClient::from_stream(stream.try_clone().unwrap()));
                        }
                        break;
                    }
                }
                "QUIT" => {
                    w.write_all(b"221 bye\r\n").unwrap();
                    break;
                }
                _ => w.write_all(b"502 not in this fake\r\n").unwrap(),
            }
        }
        seen
    });
    (port, handle)
}

#[test]
fn fetchmail_nothing_queued_exits_0() {
    let (port, provider) = fake_provider("s3\\cr\"et", "235 ok", "453 nothing", None);
    let run = Fetchmail::new(port)
        .user("customer", "s3\\cr\"et")
        .domains(&["example.org", "example.com"])
        .smtp_port(free_port())
        .timeout(SECS_30)
        .run();
    let seen = provider.join().unwrap();
    assert_eq!(run.code, Some(0), "{}\n{seen:?}", run.report());
    assert!(seen.lines[0].starts_with("EHLO "), "{seen:?}");
    assert_eq!(seen.lines[1], "AUTH CRAM-MD5");
    assert!(seen.cram_ok, "CRAM-MD5 digest of the rc file's password: {seen:?}");
    let user = String::from_utf8(B64.decode(&seen.lines[2]).unwrap()).unwrap();
    assert!(user.starts_with("customer "), "{user}");
    assert!(seen.lines.iter().any(|l| l == "ATRN example.org,example.com"), "{seen:?}");
}

#[test]
fn fetchmail_auth_535_exits_128() {
    let (port, provider) = fake_provider("secret", "535 no", "453 nothing", None);
    let run = Fetchmail::new(port).domains(&["example.org"]).timeout(SECS_30).run();
    let seen = provider.join().unwrap();
    assert_eq!(run.code, Some(128), "{}\n{seen:?}", run.report());
    assert!(!seen.lines.iter().any(|l| l.starts_with("ATRN")), "{seen:?}");
}

#[test]
fn fetchmail_relays_the_reversed_session_to_exim() {
    fn deliver(mut c: SmtpClient) {
        assert_eq!(c.reply().code, 220, "the customer MTA's greeting comes first");
        assert_eq!(c.cmd("EHLO fake.provider.test").code, 250);
        assert_eq!(c.cmd("MAIL FROM:<sender@origin.test>").code, 250);
        assert_eq!(c.cmd("RCPT TO:<joe@example.org>").code, 250);
        assert_eq!(c.cmd("DATA").code, 354);
        assert_eq!(c.send_data(b"Subject: relayed\r\n\r\n.dot\r\nend").code, 250);
        assert_eq!(c.cmd("QUIT").code, 221);
    }
    let mta = CustomerMta::start();
    let (port, provider) =
        fake_provider("secret", "235 ok", "250 OK now reversing the connection", Some(deliver));
    let run = Fetchmail::new(port).domains(&["example.org"]).smtp_port(mta.port()).timeout(SECS_30).run();
    let seen = provider.join().unwrap();
    assert_eq!(run.code, Some(0), "{}\n{seen:?}", run.report());
    let got = mta.wait_for(1, SECS_30);
    assert_eq!(body_of(&got[0]), b".dot\nend\n");
    assert_eq!(envelope_of(&got[0]).1, vec!["joe@example.org".to_string()]);
}

#[test]
fn recording_sendmail_records_argv_and_stdin() {
    let sm = RecordingSendmail::new();
    for i in 0..2 {
        let mut child = std::process::Command::new(sm.path())
            .args(["-oi", "-f", "", "--", &format!("rcpt{i}@origin.test")])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("Subject: dsn {i}\n\nbody\n").as_bytes()).unwrap();
        assert!(child.wait().unwrap().success());
    }
    let calls = sm.wait_for(2, SECS_30);
    assert_eq!(calls[0].args, ["-oi", "-f", "", "--", "rcpt0@origin.test"]);
    assert_eq!(calls[1].stdin, b"Subject: dsn 1\n\nbody\n");

    let failing = RecordingSendmail::exiting(75);
    let status =
        std::process::Command::new(failing.path()).stdin(std::process::Stdio::null()).status().unwrap();
    assert_eq!(status.code(), Some(75));
    assert_eq!(failing.calls().len(), 1);
}

#[test]
fn maildir_fixture_and_envelope_forms() {
    let dir = tempfile::tempdir().unwrap();
    let md = Maildir::create(dir.path().join("spool/example.org"));
    for sub in ["new", "cur", "tmp"] {
        assert!(md.path().join(sub).is_dir());
    }
    let a = md.add(&bsmtp("s@origin.test", &["a@example.org", "b@example.org"], b"Subject: x\n\n.dot\nend"));
    let b = md.add(&qmail_message("s@origin.test", "example.org-joe@example.org", b"Subject: y\n\nhi\n"));
    md.add_named("1700000000.fixed.host", b"x\n");
    assert_eq!(md.count(), 3);
    assert!(a.starts_with(md.path().join("new")));
    assert_eq!(
        std::fs::read(&a).unwrap(),
        b"MAIL FROM:<s@origin.test>\nRCPT TO:<a@example.org>\nRCPT TO:<b@example.org>\nDATA\nSubject: x\n\n..dot\nend\n.\n"
    );
    assert!(std::fs::read(&b)
        .unwrap()
        .starts_with(b"Return-Path: <s@origin.test>\nDelivered-To: example.org-joe@"));
    assert!(std::fs::read_dir(md.path().join("tmp")).unwrap().next().is_none());
}

#[test]
fn body_and_header_helpers() {
    let m = b"Return-path: <a@b.test>\nEnvelope-to: x@y.test,\n z@y.test\nSubject: s\n\nbody\n\nmore\n";
    assert_eq!(body_of(m), b"body\n\nmore\n");
    assert_eq!(envelope_of(m), ("a@b.test".into(), vec!["x@y.test".into(), "z@y.test".into()]));
    assert_eq!(body_of(b"A: b\r\n\r\nc\r\n"), b"c\r\n");
    assert_eq!(body_of(b"no blank line"), b"");
    assert_eq!(as_exim_stores(b"a\r\nb"), b"a\nb\n");
    assert_eq!(as_exim_stores(b""), b"");
}

#[test]
fn doveadm_makes_cram_md5_entries() {
    // Dovecot's own test vector (src/lib-auth/test-password-scheme.c).
    assert_eq!(
        doveadm_cram_md5("test"),
        "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6"
    );
}
