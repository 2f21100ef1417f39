//! Fault injection: the customer disconnects at every step of an ODMR session — before and
//! during authentication, around ATRN, and at each step of the reversed SMTP dialogue (greeting,
//! EHLO, MAIL, RCPT, DATA, inside the body, before and inside the final reply, after it, at
//! QUIT) — with and without PIPELINING, over a maildir spool and over a real Exim 4.96 spool
//! (t/exim_common.rs). Each time nothing is lost: a message the customer did not acknowledge
//! with 2xx after its final dot is byte for byte as it was (its files, and no journal), and of
//! an acknowledged one only the recipients the customer accepted may be gone.
//!
//! Also a customer that answers DATA with 250 instead of 354 (a broken MTA, a proxy, or a reply
//! shifted by one in a pipeline): the body was never sent, so nothing may be removed.

#[path = "exim_common.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use support::odmrd::{cram_md5_response, Client, EHLO_NAME, PASSWORD, USER};

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

/// Two messages, each with a body long enough to cut inside: one with recipients in both
/// collected domains and one elsewhere (a partial commit), and one with a single recipient.
const MESSAGES: [(&str, &[&str]); 2] =
    [("m1", &["a@example.org", "b@example.net", "x@elsewhere.example"]), ("m2", &["c@example.net"])];

fn body() -> String {
    "a line of the body\n..and a stuffed one\n".repeat(2000)
}

/// A spool under test, holding [`MESSAGES`].
trait Spool {
    /// odmrd for one session (under inetd).
    fn start(&self) -> Client;
    /// Per message still queued: its marker, pending recipients, and the bytes of its files.
    fn state(&self) -> Vec<(String, BTreeSet<String>, Vec<u8>)>;
    /// Files of an unfinished change (maildir `tmp/`).
    fn leftovers(&self) -> usize;
}

/// Maildir: BSMTP files in the maildir of the first recipient's domain.
struct Maildir(support::odmrd::Provider);

const MAILDIR_DOMAINS: [&str; 2] = ["example.org", "example.net"];

impl Maildir {
    fn new() -> Maildir {
        let p = support::odmrd::Provider::new();
        for (n, (marker, recipients)) in MESSAGES.into_iter().enumerate() {
            let text = format!("Subject: {marker}\n\n{}", body());
            let file = support::bsmtp("s@sender.example", recipients, text.as_bytes());
            let domain = recipients[0].split('@').nth(1).unwrap();
            p.queue(domain, &format!("{n}.M1P1.provider"), std::str::from_utf8(&file).unwrap());
        }
        Maildir(p)
    }
}

impl Spool for Maildir {
    fn start(&self) -> Client {
        self.0.start()
    }

    fn state(&self) -> Vec<(String, BTreeSet<String>, Vec<u8>)> {
        let mut out = Vec::new();
        for domain in MAILDIR_DOMAINS {
            for text in self.0.queued(domain) {
                let marker = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default();
                let rcpts =
                    text.lines().take_while(|l| *l != "DATA").filter_map(|l| l.strip_prefix("RCPT TO:<"));
                let rcpts = rcpts.map(|r| r.trim_end_matches('>').to_string()).collect();
                out.push((marker.to_string(), rcpts, text.clone().into_bytes()));
            }
        }
        out
    }

    fn leftovers(&self) -> usize {
        let tmp =
            |d: &str| std::fs::read_dir(self.0.path().join("spool").join(d).join("tmp")).unwrap().count();
        MAILDIR_DOMAINS.map(tmp).iter().sum()
    }
}

/// Exim: queued by the real Exim (`exim -odq`); odmrd runs as the Exim user.
struct Exim {
    provider: common::Provider,
    /// Exim's id → marker.
    ids: Mutex<BTreeMap<String, String>>,
}

impl Exim {
    fn new() -> Exim {
        let provider = common::Provider::new(false);
        let mut ids = BTreeMap::new();
        for (marker, recipients) in MESSAGES {
            ids.insert(provider.queue("s@sender.example", recipients, marker, &body()), marker.to_string());
        }
        Exim { provider, ids: Mutex::new(ids) }
    }
}

impl Spool for Exim {
    fn start(&self) -> Client {
        support::odmrd::start_inetd_command(self.provider.odmrd_command(common::RunAs::EximUser))
    }

    fn state(&self) -> Vec<(String, BTreeSet<String>, Vec<u8>)> {
        let ids = self.ids.lock().unwrap();
        let mut out = Vec::new();
        for (id, rcpts) in self.provider.pending(&[]) {
            let mut bytes = Vec::new();
            for suffix in ["-H", "-D", "-J"] {
                if let Some(path) = self.provider.spool_file(&id, suffix) {
                    bytes.extend(format!("{suffix}:").bytes());
                    bytes.extend(std::fs::read(path).unwrap());
                }
            }
            out.push((ids[&id].clone(), rcpts, bytes));
        }
        out
    }

    fn leftovers(&self) -> usize {
        0
    }
}

/// One session as the customer, hanging up at `cut`. Returns the (marker, recipient) pairs the
/// customer acknowledged (accepted RCPT, then 2xx to the final dot) and odmrd's log.
fn session(spool: &impl Spool, cut: Cut, pipelining: bool) -> (Vec<(String, String)>, String) {
    let mut c = spool.start();
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
    panic!("the session ended without reaching {cut:?}");
}

/// Run every cut with and without PIPELINING; check each time that nothing unacknowledged left
/// the queue. Returns how many sessions removed something.
fn every_cut<S: Spool>(new: impl Fn() -> S, cuts: &[Cut]) -> usize {
    let mut sessions_that_removed = 0;
    for pipelining in [false, true] {
        for &cut in cuts {
            let spool = new();
            let queued = spool.state();
            assert_eq!(queued.len(), MESSAGES.len());
            let (acked, log) = session(&spool, cut, pipelining);
            let what = format!("cut {cut:?}, pipelining {pipelining}");
            assert!(!log.contains("panicked"), "{what}: odmrd panicked\n{log}");
            let now = spool.state();
            let mut removed_any = false;
            for (marker, recipients, bytes) in &queued {
                let acked_here: BTreeSet<&str> =
                    acked.iter().filter(|(m, _)| m == marker).map(|(_, r)| r.as_str()).collect();
                let found = now.iter().find(|(m, _, _)| m == marker);
                if acked_here.is_empty() {
                    let unchanged = found.is_some_and(|(_, _, now)| now == bytes);
                    assert!(unchanged, "{what}: {marker} changed without an acknowledgement\n{log}");
                    continue;
                }
                let left = found.map(|(_, r, _)| r.clone()).unwrap_or_default();
                for r in recipients {
                    let kept = left.contains(r);
                    assert!(kept || acked_here.contains(r.as_str()), "{what}: {marker} lost {r}\n{log}");
                    removed_any |= !kept;
                }
            }
            assert_eq!(spool.leftovers(), 0, "{what}: files left in tmp/\n{log}");
            sessions_that_removed += usize::from(removed_any);
        }
    }
    sessions_that_removed
}

/// Every disconnect, then the check that some sessions did commit (else the test would no
/// longer reach a commit and prove nothing).
fn hang_up_everywhere<S: Spool>(name: &str, new: impl Fn() -> S) {
    let cuts: Vec<Cut> = CUTS.into_iter().filter(|c| *c != Cut::DataAnswered250).collect();
    let removed = every_cut(new, &cuts);
    println!(
        "{name}: disconnects at {} protocol steps, with and without PIPELINING ({} sessions): \
         lost=0; {removed} sessions removed acknowledged recipients",
        cuts.len(),
        cuts.len() * 2
    );
    assert!(removed >= 2, "{name}: no session committed anything");
}

#[test]
fn a_customer_hanging_up_at_any_step_loses_nothing_over_maildir() {
    hang_up_everywhere("maildir", Maildir::new);
}

#[test]
fn a_customer_hanging_up_at_any_step_loses_nothing_over_an_exim_spool() {
    hang_up_everywhere("exim", Exim::new);
}

#[test]
fn a_customer_answering_data_with_250_gets_nothing_removed() {
    assert_eq!(every_cut(Maildir::new, &[Cut::DataAnswered250]), 0);
    assert_eq!(every_cut(Exim::new, &[Cut::DataAnswered250]), 0);
}
