//! The real customer: Debian's fetchmail collects from a standalone odmrd on a
//! free port and relays the reversed session to a real Exim (the customer's
//! MTA), which delivers into a maildir this test reads. Bodies are compared
//! byte for byte. Also: the README's demo command, collected the same way.

#[path = "support/mod.rs"]
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use support::odmrd::{Daemon, Provider, PASSWORD, USER};
use support::{as_exim_stores, body_of, envelope_of, qmail_message, CustomerMta, Fetchmail};

/// A body of about `size` bytes: varied lines, dots where SMTP cares, 8-bit text.
fn big_body(size: usize) -> Vec<u8> {
    let mut body = b"Subject: twenty megabytes\nFrom: big@sender.example\n\n".to_vec();
    let mut n = 0u64;
    while body.len() < size {
        n += 1;
        let line = match n % 7 {
            0 => ".".to_string(),
            1 => format!(".line {n} starts with a dot"),
            2 => format!("..{n} two dots"),
            3 => format!("caf\u{e9} na\u{ef}ve \u{2014} line {n}"),
            _ => format!("{n:>12} {}", "abcdefghijklmnopqrstuvwxyz0123456789".repeat((n % 3 + 1) as usize)),
        };
        body.extend_from_slice(line.as_bytes());
        body.push(b'\n');
    }
    body
}

#[test]
fn fetchmail_collects_every_message_byte_for_byte_through_exim() {
    let p = Provider::new();
    let dotted =
        b"Subject: dots\nFrom: alice@sender.example\n\n.starts with a dot\n..two\n.\nlast\n".to_vec();
    let crlf =
        b"Subject: crlf\r\nFrom: carol@sender.example\r\n\r\nwindows line ends\r\nno final newline".to_vec();
    let big = big_body(20 * 1024 * 1024);
    let queued = [
        p.queue(
            "example.org",
            "1.dots",
            &String::from_utf8(qmail_message("alice@sender.example", "bob@example.org", &dotted)).unwrap(),
        ),
        p.queue(
            "example.net",
            "2.crlf",
            &String::from_utf8(qmail_message("carol@sender.example", "dave@example.net", &crlf)).unwrap(),
        ),
        p.queue(
            "example.org",
            "3.big",
            &String::from_utf8(qmail_message("big@sender.example", "erin@example.org", &big)).unwrap(),
        ),
    ];
    let other = p.queue(
        "example.com",
        "4.other",
        "Return-Path: <x@s.example>\nDelivered-To: y@example.com\n\nnot yours\n",
    );

    let daemon = Daemon::start(&p.config());
    let mta = CustomerMta::start();
    let run = Fetchmail::new(daemon.port())
        .user(USER, PASSWORD)
        .domains(&["example.org", "example.net"])
        .smtp_port(mta.port())
        .timeout(Duration::from_secs(120))
        .run();
    assert_eq!(run.code, Some(0), "{}\n--- odmrd\n{}", run.report(), daemon.log());

    let delivered = mta.wait_for(3, Duration::from_secs(60));
    let find = |rcpt: &str| {
        delivered
            .iter()
            .find(|m| envelope_of(m).1 == [rcpt.to_string()])
            .unwrap_or_else(|| panic!("nothing delivered to {rcpt}; log:\n{}", daemon.log()))
    };
    for (rcpt, from, sent) in [
        ("bob@example.org", "alice@sender.example", &dotted),
        ("dave@example.net", "carol@sender.example", &crlf),
        ("erin@example.org", "big@sender.example", &big),
    ] {
        let message = find(rcpt);
        assert_eq!(envelope_of(message).0, from);
        // Exim adds its trace headers in front; everything after them is ours.
        let want = as_exim_stores(sent);
        assert!(
            message.ends_with(&want),
            "{rcpt}: delivered bytes differ ({} delivered, {} sent)",
            message.len(),
            want.len()
        );
        assert_eq!(body_of(message), body_of(&want), "{rcpt}");
    }
    for file in &queued {
        assert!(!file.exists(), "{} was collected and must leave the spool", file.display());
    }
    assert!(other.exists(), "example.com was not requested");
    let log = daemon.log();
    assert_eq!(log.matches("status=sent").count(), 3, "{log}");
    assert!(!log.contains(PASSWORD));
}

#[test]
fn the_readme_demo_can_be_collected_with_fetchmail() {
    let tmp = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_odmrd"))
        .args(["--demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = demo.stderr.take().unwrap();
    let listening = std::thread::spawn(move || {
        let mut log = String::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.unwrap();
            log.push_str(&line);
            log.push('\n');
            if line.contains("event=listening") {
                return (true, log);
            }
        }
        (false, log)
    });
    let (up, log) = listening.join().unwrap();
    assert!(up, "demo did not start:\n{log}");
    let dir = std::fs::read_dir(tmp.path()).unwrap().next().unwrap().unwrap().path();
    let rc = dir.join("fetchmail/fetchmailrc");
    let rc_text = std::fs::read_to_string(&rc).unwrap();
    let out = Command::new(support::FETCHMAIL)
        .args([
            "-f",
            rc.to_str().unwrap(),
            "--nodetach",
            "--pidfile",
            dir.join("fetchmail/pid").to_str().unwrap(),
        ])
        .env("FETCHMAILHOME", dir.join("fetchmail"))
        .output()
        .unwrap();
    let _ = demo.kill();
    let _ = demo.wait();
    assert_eq!(out.status.code(), Some(0), "rc:\n{rc_text}\n{}", String::from_utf8_lossy(&out.stderr));
    let received = std::fs::read_dir(dir.join("received")).unwrap().count();
    assert_eq!(received, 3, "the demo's three messages arrive at its toy MTA");
    for domain in ["example.org", "example.net"] {
        assert_eq!(std::fs::read_dir(dir.join("spool").join(domain).join("new")).unwrap().count(), 0);
    }
}
