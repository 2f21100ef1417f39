//! Fault injection: the customer disconnects at every step of an ODMR session — before and
//! during authentication, around ATRN, and at each step of the reversed SMTP dialogue (greeting,
//! EHLO, MAIL, RCPT, DATA, inside the body, before and inside the final reply, after it, at
//! QUIT) — with and without PIPELINING, over a maildir spool. Each time nothing is lost: a
//! message the customer did not acknowledge with 2xx after its final dot is byte for byte as it
//! was, and of an acknowledged one only the recipients the customer accepted may be gone.
//!
//! Also a customer that answers DATA with 250 instead of 354 (a broken MTA, a proxy, or a reply
//! shifted by one in a pipeline): the body was never sent, so nothing may be removed.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use support::odmrd::{cram_md5_response, Provider, EHLO_NAME, PASSWORD, USER};

/// Where the customer hangs up. Steps of the reversed dialogue apply to the first message
/// offered, except `SecondMail`, `Quit` and `AfterQuit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    AfterGreeting,
    AfterEhlo,
    InsideAuth,
    AfterAuth,
    WithAtrnUnanswered,
    AfterAtrn,
    AfterCustomerGreeting,
    WithEhloUnanswered,
    AfterCapabilities,
    WithMailUnanswered,
    AfterMail,
    AfterFirstRcpt,
    WithDataUnanswered,
    After354,
    InsideBody,
    BeforeFinalReply,
    InsideFinalReply,
    AfterFinalReply,
    SecondMail,
    WithQuitUnanswered,
    AfterQuit,
    /// Not a disconnect: DATA answered 250, then the customer plays along until odmrd ends.
    DataAnswered250,
}

const CUTS: [Cut; 22] = [
    Cut::AfterGreeting,
    Cut::AfterEhlo,
    Cut::InsideAuth,
    Cut::AfterAuth,
    Cut::WithAtrnUnanswered,
    Cut::AfterAtrn,
    Cut::AfterCustomerGreeting,
    Cut::WithEhloUnanswered,
    Cut::AfterCapabilities,
    Cut::WithMailUnanswered,
    Cut::AfterMail,
    Cut::AfterFirstRcpt,
    Cut::WithDataUnanswered,
    Cut::After354,
    Cut::InsideBody,
    Cut::BeforeFinalReply,
    Cut::InsideFinalReply,
    Cut::AfterFinalReply,
    Cut::SecondMail,
    Cut::WithQuitUnanswered,
    Cut::AfterQuit,
    Cut::DataAnswered250,
];

/// A queued message: its marker (`Subject:`), recipients and the file's bytes.
struct Queued {
    marker: &'static str,
    recipients: &'static [&'static str],
    file: Vec<u8>,
}

/// Two messages: one with recipients in both collected domains and one elsewhere (a partial
/// commit rewrites it) and a body long enough to cut inside, and a small one.
fn queue(p: &Provider) -> Vec<Queued> {
    let long_body = "a line of the body\n..and a stuffed one\n".repeat(2000);
    let messages = [
        ("example.org", "m1", &["a@example.org", "b@example.net", "x@example.com"][..], long_body),
        ("example.net", "m2", &["c@example.net"][..], "short\n".to_string()),
    ];
    messages
        .into_iter()
        .enumerate()
        .map(|(n, (domain, marker, recipients, body))| {
            let text = format!("Subject: {marker}\n\n{body}");
            let file = support::bsmtp("s@sender.example", recipients, text.as_bytes());
            p.queue(domain, &format!("{n}.M1P1.provider"), std::str::from_utf8(&file).unwrap());
            Queued { marker, recipients, file }
        })
        .collect()
}

/// One session as the customer, hanging up at `cut`. Returns the (marker, recipient) pairs the
/// customer acknowledged (accepted RCPT, then 2xx to the final dot) and odmrd's log.
fn session(p: &Provider, cut: Cut, pipelining: bool) -> (Vec<(String, String)>, String) {
    let mut c = p.start();
    let mut acked = Vec::new();
    // Hang up here if this is the step.
    macro_rules! at {
        ($step:expr) => {
            if cut == $step {
                let (_, log) = c.finish();
                return (acked, log);
            }
        };
    }
    c.expect(220);
    at!(Cut::AfterGreeting);
    c.send("EHLO customer.example");
    c.reply();
    at!(Cut::AfterEhlo);
    let challenge = c.command("AUTH CRAM-MD5", 334);
    at!(Cut::InsideAuth);
    c.command(&cram_md5_response(USER, PASSWORD, &challenge), 235);
    at!(Cut::AfterAuth);
    c.send("ATRN example.org,example.net");
    at!(Cut::WithAtrnUnanswered);
    c.expect(250);
    at!(Cut::AfterAtrn);
    c.send("220 customer.example ESMTP");
    at!(Cut::AfterCustomerGreeting);
    assert_eq!(c.line(), format!("EHLO {EHLO_NAME}\r\n"));
    at!(Cut::WithEhloUnanswered);
    c.send(if pipelining { "250-customer.example\r\n250 PIPELINING" } else { "250 customer.example" });
    at!(Cut::AfterCapabilities);
    for n in 0.. {
        let line = c.line();
        if line == "QUIT\r\n" {
            at!(Cut::WithQuitUnanswered);
            c.send("221 bye");
            at!(Cut::AfterQuit);
            break;
        }
        assert!(line.starts_with("MAIL FROM:"), "MAIL expected, got {line:?}");
        let first = n == 0;
        if first {
            at!(Cut::WithMailUnanswered);
        } else {
            at!(Cut::SecondMail);
        }
        c.send("250 ok");
        if first {
            at!(Cut::AfterMail);
        }
        let mut rcpts = Vec::new();
        loop {
            let line = c.line();
            if line == "DATA\r\n" {
                break;
            }
            let rcpt = line.strip_prefix("RCPT TO:<").and_then(|r| r.split('>').next());
            rcpts.push(rcpt.unwrap_or_else(|| panic!("RCPT or DATA expected, got {line:?}")).to_string());
            c.send("250 ok");
            if first && rcpts.len() == 1 {
                at!(Cut::AfterFirstRcpt);
            }
        }
        if first {
            at!(Cut::WithDataUnanswered);
        }
        if cut == Cut::DataAnswered250 {
            c.send("250 ok");
            // Play along with whatever odmrd does next, until it quits or hangs up.
            loop {
                match c.line().as_str() {
                    "" => break,
                    "QUIT\r\n" => {
                        c.send("221 bye");
                        break;
                    }
                    _ => c.send("250 ok"),
                }
            }
            let (_, log) = c.finish();
            return (acked, log);
        }
        c.send("354 go ahead");
        if first {
            at!(Cut::After354);
        }
        let mut marker = String::new();
        for lines in 1.. {
            let line = c.line();
            assert!(!line.is_empty(), "EOF inside the body");
            if line == ".\r\n" {
                break;
            }
            if let Some(subject) = line.strip_prefix("Subject: ") {
                marker = subject.trim_end().to_string();
            }
            if first && lines == 100 {
                at!(Cut::InsideBody);
            }
        }
        if first {
            at!(Cut::BeforeFinalReply);
            if cut == Cut::InsideFinalReply {
                c.send_raw(b"25");
                let (_, log) = c.finish();
                return (acked, log);
            }
        }
        c.send("250 ok, delivered");
        acked.extend(rcpts.into_iter().map(|r| (marker.clone(), r)));
        if first {
            at!(Cut::AfterFinalReply);
        }
    }
    let (_, log) = c.finish();
    (acked, log)
}

/// The recipients still queued for each message (by marker), and the files' bytes.
fn still_queued(p: &Provider) -> Vec<(String, BTreeSet<String>, Vec<u8>)> {
    let mut out = Vec::new();
    for domain in ["example.org", "example.net"] {
        for text in p.queued(domain) {
            let marker =
                text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_string();
            let rcpts = text.lines().take_while(|l| *l != "DATA").filter_map(|l| l.strip_prefix("RCPT TO:<"));
            let rcpts = rcpts.map(|r| r.trim_end_matches('>').to_string()).collect();
            out.push((marker, rcpts, text.into_bytes()));
        }
    }
    out
}

/// Run every cut with and without PIPELINING; check each time that nothing unacknowledged left
/// the queue. Returns how many sessions removed something.
fn every_cut(cuts: &[Cut]) -> usize {
    let mut sessions_that_removed = 0;
    for pipelining in [false, true] {
        for &cut in cuts {
            let p = Provider::new();
            let queued = queue(&p);
            let (acked, log) = session(&p, cut, pipelining);
            let what = format!("cut {cut:?}, pipelining {pipelining}");
            assert!(!log.contains("panicked"), "{what}: odmrd panicked\n{log}");
            let now = still_queued(&p);
            let mut removed_any = false;
            for q in &queued {
                let acked_here: BTreeSet<&str> =
                    acked.iter().filter(|(m, _)| m == q.marker).map(|(_, r)| r.as_str()).collect();
                let found = now.iter().find(|(m, _, _)| m == q.marker);
                if acked_here.is_empty() {
                    let unchanged = found.is_some_and(|(_, _, bytes)| *bytes == q.file);
                    assert!(unchanged, "{what}: {} changed without an acknowledgement\n{log}", q.marker);
                    continue;
                }
                let left = found.map(|(_, r, _)| r.clone()).unwrap_or_default();
                for r in q.recipients {
                    let kept = left.contains(*r);
                    assert!(kept || acked_here.contains(r), "{what}: {} lost {r}\n{log}", q.marker);
                    removed_any |= !kept;
                }
            }
            let tmp = ["example.org", "example.net"]
                .map(|d| std::fs::read_dir(p.path().join("spool").join(d).join("tmp")).unwrap().count());
            assert_eq!(tmp, [0, 0], "{what}: files left in tmp/\n{log}");
            sessions_that_removed += usize::from(removed_any);
        }
    }
    sessions_that_removed
}

#[test]
fn a_customer_hanging_up_at_any_step_loses_nothing() {
    let cuts: Vec<Cut> = CUTS.into_iter().filter(|c| *c != Cut::DataAnswered250).collect();
    let removed = every_cut(&cuts);
    println!(
        "disconnects at {} protocol steps × with/without PIPELINING = {} sessions: lost=0; \
         {removed} sessions removed acknowledged recipients",
        cuts.len(),
        cuts.len() * 2
    );
    // The cuts after the first message's final 250 (and the whole session) commit it.
    assert!(removed >= 2, "no session committed anything: the test no longer reaches a commit");
}

#[test]
fn a_customer_answering_data_with_250_gets_nothing_removed() {
    assert_eq!(every_cut(&[Cut::DataAnswered250]), 0);
}
