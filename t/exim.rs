//! End-to-end tests of `builtin:exim` against the real Exim 4.96 (Debian's exim4-daemon-light):
//! Exim queues the mail (`exim -odq`, private `-C` configuration and spool, no daemon), odmrd
//! runs as `odmrd --inetd` on one end of a socketpair, and the test plays the ODMR customer and
//! then, after the turnaround, the customer's MTA. After each session `exim -bp` must show
//! exactly the recipients that should remain. See t/exim_common.rs for the provider.

#[path = "exim_common.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::{is_root, set, Provider, RunAs, PASSWORD, USER};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use support::odmrd::{shared_object, start_inetd_command, Client, EHLO_NAME};

/// A message as the customer's MTA received it.
#[derive(Debug, Clone)]
struct Received {
    from: String,
    rcpts: Vec<String>,
    data: String,
}

/// `odmrd --inetd` as `who`, on a socketpair.
fn start(p: &Provider, who: RunAs) -> Client {
    start_inetd_command(p.odmrd_command(who))
}

/// Log in and send ATRN; returns the (last) reply line.
fn atrn(c: &mut Client, domains: &str) -> String {
    c.login(USER, PASSWORD);
    c.send(&format!("ATRN {domains}"));
    c.reply().pop().unwrap()
}

/// Play the customer's MTA until QUIT: recipients whose local part starts with `defer` get
/// 451, `reject` 550, others 250. `on_data(n)` runs when the n-th message's data has
/// arrived, before the 250 for it.
fn customer(c: &mut Client, mut on_data: impl FnMut(usize)) -> Vec<Received> {
    c.turn_around(EHLO_NAME, &["PIPELINING", "8BITMIME", "SIZE 10000000"]);
    let mut received = Vec::new();
    let mut from = String::new();
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let line = c.line();
        let line = line.trim_end_matches(['\r', '\n']);
        let upper = line.to_ascii_uppercase();
        if line.is_empty() {
            break;
        } else if upper.starts_with("MAIL FROM:<") {
            from = line[11..line.find('>').unwrap()].to_string();
            rcpts.clear();
            c.send("250 OK");
        } else if upper.starts_with("RCPT TO:<") {
            let rcpt = line[9..line.find('>').unwrap()].to_string();
            if rcpt.starts_with("defer") {
                c.send("451 4.3.0 try later");
            } else if rcpt.starts_with("reject") {
                c.send("550 5.1.1 no such user");
            } else {
                rcpts.push(rcpt);
                c.send("250 OK");
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                c.send("554 no valid recipients");
                continue;
            }
            c.send("354 go ahead");
            // Undo the dot-stuffing, keep LF line ends.
            let data = c.data().lines().map(|l| format!("{}\n", l.strip_prefix('.').unwrap_or(l))).collect();
            on_data(received.len());
            received.push(Received { from: from.clone(), rcpts: rcpts.clone(), data });
            c.send("250 OK queued");
        } else if upper == "RSET" {
            c.send("250 OK");
        } else if upper == "QUIT" {
            c.send("221 bye");
            break;
        } else {
            c.send("500 what?");
        }
    }
    received
}

/// One full collection: ATRN must get 250; returns what the customer received and the log.
fn collect(p: &Provider, who: RunAs, domains: &str, on_data: impl FnMut(usize)) -> (Vec<Received>, String) {
    let mut c = start(p, who);
    let reply = atrn(&mut c, domains);
    if !reply.starts_with("250") {
        let (_, log) = c.finish();
        panic!("ATRN {domains}: {reply}\n{log}\n{}", p.exim_logs());
    }
    let received = customer(&mut c, on_data);
    (received, c.finish().1)
}

/// ATRN that must not get 250; returns the reply and the log.
fn refused(p: &Provider, who: RunAs, domains: &str) -> (String, String) {
    let mut c = start(p, who);
    let reply = atrn(&mut c, domains);
    c.send("QUIT");
    (reply, c.finish().1)
}

/// Every (message subject, recipient) the customer got, to check exactly-once delivery.
fn deliveries(received: &[Received]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in received {
        let subject = r
            .data
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("no subject in {}", r.data))
            .to_string();
        for rcpt in &r.rcpts {
            out.push((subject.clone(), rcpt.clone()));
        }
    }
    out.sort();
    out
}

fn map(items: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
    items.iter().map(|(id, rcpts)| (id.to_string(), set(rcpts))).collect()
}

#[test]
fn several_domains_and_a_suffix_domain_stay_apart() {
    let p = Provider::new(false);
    let mixed = p.queue(
        "alice@sender.example",
        &["a@example.org", "B@Example.ORG", "v@example.org.uk", "z@other.example", "c@example.net"],
        "mixed",
        "first line\n.leading dot\nlast line\n",
    );
    let uk_only = p.queue("bob@sender.example", &["victor@example.org.uk"], "uk only", "hello\n");
    let other_only = p.queue("carol@sender.example", &["y@other.example"], "other only", "hi\n");

    let (received, log) = collect(&p, RunAs::EximUser, "example.org,example.net", |_| {});
    assert_eq!(received.len(), 1, "{received:?}\n{log}");
    let r = &received[0];
    assert_eq!(r.from, "alice@sender.example");
    assert_eq!(r.rcpts, ["a@example.org", "B@Example.ORG", "c@example.net"]);
    // Headers from -H (Exim's Received: first), a blank line, then the body with its dot.
    assert!(r.data.starts_with("Received: from "), "{}", r.data);
    assert!(r.data.contains(&format!("id {mixed}")), "{}", r.data);
    assert!(r.data.contains("\nSubject: mixed\n"), "{}", r.data);
    assert!(r.data.ends_with("\n\nfirst line\n.leading dot\nlast line\n"), "{:?}", r.data);

    let expected = map(&[
        (&mixed, &["v@example.org.uk", "z@other.example"]),
        (&uk_only, &["victor@example.org.uk"]),
        (&other_only, &["y@other.example"]),
    ]);
    assert_eq!(p.pending(&[]), expected, "{log}");
    // A queue run merges our journal and neither loses nor redelivers anything.
    p.exim(&["-qff"]);
    assert_eq!(p.pending(&[]), expected);
    assert!(p.journals().is_empty(), "journal not merged: {:?}\n{}", p.journals(), p.exim_logs());
    assert!(p.panics().is_empty(), "{}", p.panics());

    // Nothing left for those domains: 453, not an empty session.
    let (reply, _) = refused(&p, RunAs::EximUser, "example.org,example.net");
    assert!(reply.starts_with("453"), "{reply}");
    // The .uk domain is collected on its own, and the message then leaves the queue.
    let (received, log) = collect(&p, RunAs::EximUser, "example.org.uk", |_| {});
    assert_eq!(
        deliveries(&received),
        [("mixed".into(), "v@example.org.uk".into()), ("uk only".into(), "victor@example.org.uk".into())],
        "{log}"
    );
    assert_eq!(p.pending(&[]), map(&[(&mixed, &["z@other.example"]), (&other_only, &["y@other.example"])]));
    assert!(p.spool_file(&uk_only, "-D").is_none() && p.spool_file(&uk_only, "-H").is_none());
    assert!(!p.spool().join("msglog").join(&uk_only).exists(), "msglog left behind");
}

#[test]
fn a_4xx_recipient_stays_and_a_5xx_recipient_is_bounced_once() {
    let p = Provider::new(true);
    let id = p.queue(
        "alice@sender.example",
        &["ok@example.org", "defer-me@example.org", "reject-me@example.org", "z@other.example"],
        "mixed outcomes",
        "body\n",
    );
    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("mixed outcomes".into(), "ok@example.org".into())], "{log}");
    let dsns = p.sendmail.calls();
    assert_eq!(dsns.len(), 1, "{log}");
    let dsn = String::from_utf8_lossy(&dsns[0].stdin);
    assert!(dsn.contains("reject-me@example.org"), "{dsn}");
    assert!(dsn.contains("alice@sender.example"), "{dsn}");
    let expected = map(&[(&id, &["defer-me@example.org", "z@other.example"])]);
    assert_eq!(p.pending(&[]), expected, "{log}");

    // The next session offers only the deferred one; the bounced one is never sent again.
    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(received.len(), 0, "{log}");
    assert!(log.contains("defer-me@example.org"), "{log}");
    assert!(!log.contains("to=<reject-me@example.org>"), "{log}");
    assert_eq!(p.sendmail.calls().len(), 1);
    p.exim(&["-qff"]);
    assert_eq!(p.pending(&[]), expected);
}

/// DSN parameters as Exim 4.96 spools them (written by `exim -bs`) come out in the
/// customer's MAIL and RCPT when it offers DSN, and in our own DSNs field by field when it
/// does not; NOTIFY=NEVER yields no DSN; RET=FULL returns the whole body.
#[test]
fn dsn_parameters_exim_spooled_reach_the_customer_and_our_dsns() {
    let p = Provider::new(false);
    let body = "From: alice@sender.example\nSubject: dsn\n\n.first\nthe whole body\n";
    let id = p.queue_smtp(
        "<alice@sender.example> RET=FULL ENVID=env+2B1",
        &[
            "<ok@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Ok+2Bx@example.org",
            "<never@example.org> NOTIFY=NEVER",
            "<fail@example.org> NOTIFY=FAILURE ORCPT=rfc822;fail@example.org",
        ],
        body,
    );
    let mut c = start(&p, RunAs::EximUser);
    assert!(atrn(&mut c, "example.org").starts_with("250"));
    c.turn_around(EHLO_NAME, &["DSN"]);
    let (mail, rcpts) = c.transaction(&["250 ok", "451 4.3.0 later", "451 4.3.0 later"], "250 queued");
    assert_eq!(mail, "MAIL FROM:<alice@sender.example> RET=FULL ENVID=env+2B1");
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<ok@example.org> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Ok+2Bx@example.org",
            "RCPT TO:<never@example.org> NOTIFY=NEVER",
            "RCPT TO:<fail@example.org> NOTIFY=FAILURE ORCPT=rfc822;fail@example.org",
        ]
    );
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(p.sendmail.calls().is_empty(), "{log}");
    assert_eq!(p.pending(&[]), map(&[(&id, &["never@example.org", "fail@example.org"])]), "{log}");

    // A customer without DSN refuses both: a DSN for `fail` only, with what Exim kept.
    let mut c = start(&p, RunAs::EximUser);
    assert!(atrn(&mut c, "example.org").starts_with("250"));
    c.turn_around(EHLO_NAME, &[]);
    let (mail, _) = c.transaction(&["550 5.1.1 gone", "550 5.1.1 gone"], "");
    assert_eq!(mail, "MAIL FROM:<alice@sender.example>");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(log.contains("to=<never@example.org> status=bounced dsn=none-notify"), "{log}");
    assert!(p.pending(&[]).is_empty(), "{log}");
    let calls = p.sendmail.calls();
    assert_eq!(calls.len(), 1, "{log}");
    let dsn = String::from_utf8_lossy(&calls[0].stdin).into_owned();
    let field = |name: &str| support::lines_starting(&dsn, name);
    assert_eq!(field("Original-Envelope-Id:"), ["Original-Envelope-Id: env+2B1"]);
    assert_eq!(field("Final-Recipient:"), ["Final-Recipient: rfc822; fail@example.org"]);
    assert_eq!(field("Original-Recipient:"), ["Original-Recipient: rfc822;fail@example.org"]);
    assert_eq!(field("Action:"), ["Action: failed"]);
    assert_eq!(field("Arrival-Date:").len(), 1, "{dsn}");
    assert!(dsn.contains("message/rfc822\r\n\r\n"), "{dsn}");
    let returned = &dsn[dsn.find("message/rfc822\r\n\r\n").unwrap()..];
    assert!(returned.contains("\r\nSubject: dsn\r\n"), "{returned}");
    assert!(returned.contains("\r\n\r\n.first\r\nthe whole body\r\n"), "RET=FULL: {returned}");
}

#[test]
fn frozen_messages_are_not_collected_and_never_cause_an_empty_session() {
    let p = Provider::new(false);
    let frozen = p.queue("alice@sender.example", &["a@example.org"], "frozen", "cold\n");
    p.exim(&["-Mf", &frozen]);
    assert_eq!(p.frozen(), set(&[&frozen]));
    let (reply, log) = refused(&p, RunAs::EximUser, "example.org");
    assert!(reply.starts_with("453"), "only frozen mail must give 453, got {reply}\n{log}");

    let thawed = p.queue("bob@sender.example", &["b@example.org"], "normal", "warm\n");
    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("normal".into(), "b@example.org".into())], "{log}");
    assert_eq!(p.pending(&[]), map(&[(&frozen, &["a@example.org"])]));
    assert_eq!(p.frozen(), set(&[&frozen]));
    assert!(p.spool_file(&thawed, "-H").is_none());
}

/// Hold Exim's lock on a message's -D the way Exim does (a write lock on its first line).
fn lock_data(p: &Provider, id: &str) -> fs::File {
    let path = p.spool_file(id, "-D").unwrap();
    let file = fs::OpenOptions::new().read(true).append(true).open(&path).unwrap();
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: (id.len() + 3) as nix::libc::off_t,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&lock)).unwrap();
    file
}

#[test]
fn a_message_exim_holds_locked_is_retried_later_in_the_same_session() {
    let p = Provider::new(false);
    let held = p.queue("alice@sender.example", &["a@example.org", "z@other.example"], "held", "one\n");
    let free = p.queue("bob@sender.example", &["b@example.org"], "free", "two\n");
    let mut lock = Some(lock_data(&p, &held));
    // `exim -M` agrees that it is locked.
    // (Its log line goes to the main log, or to stderr when Exim cannot open its log as non-root.)
    let out = p.exim_command().args(["-M", &held]).output().unwrap();
    let said = format!(
        "{}{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        p.exim_logs()
    );
    assert!(said.contains(&format!("Spool file for {held} is locked")), "{said}");

    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |n| {
        // Release the lock once the free message has arrived.
        if n == 0 {
            drop(lock.take());
        }
    });
    assert_eq!(received[0].rcpts, ["b@example.org"], "the free message goes first\n{log}");
    assert_eq!(
        deliveries(&received),
        [("free".into(), "b@example.org".into()), ("held".into(), "a@example.org".into())],
        "{log}"
    );
    assert!(log.contains("locked by another process"), "{log}");
    assert_eq!(p.pending(&[]), map(&[(&held, &["z@other.example"])]));
    assert!(p.spool_file(&free, "-H").is_none());
}

#[test]
fn a_message_locked_throughout_is_left_intact() {
    let mut p = Provider::new(false);
    p.queue_extra = "busy_wait = 0.5".into();
    let held = p.queue("alice@sender.example", &["a@example.org"], "held", "one\n");
    let free = p.queue("bob@sender.example", &["b@example.org"], "free", "two\n");
    let before_h = fs::read(p.spool_file(&held, "-H").unwrap()).unwrap();
    let lock = lock_data(&p, &held);
    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("free".into(), "b@example.org".into())], "{log}");
    assert!(log.contains("left queued for a later session"), "{log}");
    assert_eq!(fs::read(p.spool_file(&held, "-H").unwrap()).unwrap(), before_h);
    assert!(p.spool_file(&held, "-J").is_none());

    // Only the locked message left: "try later" (451), never 250 and an empty session.
    let (reply, log) = refused(&p, RunAs::EximUser, "example.org");
    assert!(reply.starts_with("451"), "{reply}\n{log}");
    drop(lock);
    assert_eq!(p.pending(&[]), map(&[(&held, &["a@example.org"])]));
    let (received, _) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("held".into(), "a@example.org".into())]);
    assert!(p.pending(&[]).is_empty());
    assert!(p.spool_file(&free, "-H").is_none());
}

#[test]
fn a_queue_run_racing_a_session_neither_loses_nor_duplicates() {
    let p = Provider::new(true);
    let mut expected_deliveries = Vec::new();
    let mut expected_left = BTreeMap::new();
    for i in 0..40 {
        let subject = format!("race {i:02}");
        let (rcpts, left): (Vec<String>, Vec<String>) = match i % 3 {
            // Only ODMR recipients: we remove the message while Exim may be looking at it.
            0 => (vec![format!("a{i}@example.org"), format!("b{i}@example.net")], vec![]),
            // Mixed: our journal must survive Exim's merge.
            1 => (
                vec![format!("a{i}@example.org"), format!("z{i}@other.example")],
                vec![format!("z{i}@other.example")],
            ),
            _ => (
                vec![
                    format!("A{i}@Example.Org"),
                    format!("v{i}@example.org.uk"),
                    format!("c{i}@example.net"),
                ],
                vec![format!("v{i}@example.org.uk")],
            ),
        };
        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
        let id = p.queue("alice@sender.example", &refs, &subject, &format!("message {i}\n"));
        for r in rcpts.iter().filter(|r| !left.contains(r)) {
            expected_deliveries.push((subject.clone(), r.clone()));
        }
        if !left.is_empty() {
            expected_left.insert(id, left.into_iter().collect::<BTreeSet<_>>());
        }
    }
    expected_deliveries.sort();

    // Three queue runners start before the session and keep going during it.
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (received, log, runs, took) = std::thread::scope(|scope| {
        let runners: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    let mut runs = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
                        assert!(p.spawn_queue_run().wait().unwrap().success());
                        runs += 1;
                    }
                    runs
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // odmrd as the caller: as root this also checks that journals are handed to the Exim user.
        let started = Instant::now();
        // A customer that takes a little time per message, so that the session spans queue runs.
        let (received, log) = collect(&p, RunAs::Caller, "example.org,example.net", |_| {
            std::thread::sleep(Duration::from_millis(20))
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let runs: usize = runners.into_iter().map(|r| r.join().unwrap()).sum();
        (received, log, runs, started.elapsed())
    });
    assert_eq!(deliveries(&received), expected_deliveries, "{log}");
    assert!(took < Duration::from_secs(50));
    // How hard the race was (it varies from run to run; the assertions hold either way).
    eprintln!(
        "race: {runs} queue runs, {} odmrd claims found a message locked by Exim, {} Exim attempts found one locked by odmrd",
        log.matches("is locked by another process").count(),
        p.exim_logs().matches("is locked (another process").count()
    );

    assert_eq!(p.pending(&[]), expected_left, "{log}\n{}", p.exim_logs());
    p.exim(&["-qff"]);
    assert_eq!(p.pending(&[]), expected_left, "{}", p.exim_logs());
    assert!(p.journals().is_empty(), "unmerged journals: {:?}\n{}", p.journals(), p.exim_logs());
    assert!(p.panics().is_empty(), "{}", p.panics());
    let (reply, log) = refused(&p, RunAs::Caller, "example.org,example.net");
    assert!(reply.starts_with("453"), "nothing may be offered twice: {reply}\n{log}");
}

#[test]
fn a_named_queue_with_exim_mc_merging_the_journal_at_once() {
    let mut p = Provider::new(false);
    p.queue_extra = format!("queue = odmr\nexim = {} -C {}", common::EXIM, p.conf().display());
    let id = p.queue("alice@sender.example", &["a@example.org", "z@other.example"], "named", "body\n");
    let default_id = p.queue("bob@sender.example", &["b@example.org"], "default queue", "body\n");
    p.exim(&["-MG", "odmr", &id]);
    assert_eq!(p.ids(&["-qGodmr"]), set(&[&id]));

    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("named".into(), "a@example.org".into())], "{log}");
    // exim -Mc runs after the session released the lock; wait for it to merge the journal.
    let journal = p.spool().join("odmr/input").join(format!("{id}-J"));
    support::wait_until(Duration::from_secs(20), || !journal.exists());
    assert!(!journal.exists(), "-Mc did not merge the journal\n{log}\n{}", p.exim_logs());
    let header = fs::read_to_string(p.spool().join("odmr/input").join(format!("{id}-H"))).unwrap();
    assert!(header.contains("NN a@example.org\n"), "{header}");
    assert_eq!(p.pending(&["-qGodmr"]), map(&[(&id, &["z@other.example"])]));
    assert_eq!(p.pending(&[]), map(&[(&default_id, &["b@example.org"])]));
}

/// A new-format (Exim ≥ 4.97, 23-character id) message written by hand as formats.md 3.4
/// describes, in a split subdirectory, next to an old-format one: Debian's 4.96 writes only
/// the old format, so this spool is checked on disk rather than with `exim -bp`.
#[test]
fn a_hand_built_new_format_spool() {
    let p = Provider::new(false);
    let spool = p.spool();
    let new_id = "1vMkbR-00000000Ab3-0Fq2";
    let input = spool.join("input/R");
    fs::create_dir_all(&input).unwrap();
    fs::create_dir_all(spool.join("msglog/R")).unwrap();
    let headers = [
        ('P', "Received: from mx.sender.example ([192.0.2.10])\n\tby provider.example with esmtps (TLS1.3) (Exim 4.99)\n\t(envelope-from <alice@sender.example>)\n\tid 1vMkbR-00000000Ab3-0Fq2\n\tfor carol@example.org; Sat, 22 Nov 2025 10:12:25 +0000\n"),
        (' ', "Subject: synthetic example\n"),
        ('*', "X-Removed: by a filter\n"),
        ('F', "From: Alice <alice@sender.example>\n"),
        ('T', "To: bob@example.org, carol@example.org\n"),
    ];
    let mut h = format!(
        "{new_id}-H\nDebian-exim 101 103\n<alice@sender.example>\n1763806345 0\n\
         -received_time_usec .123456\n-received_time_complete 1763806345.234567\n\
         --helo_name mx.sender.example\n--host_address [192.0.2.10]:50022\n\
         -interface_address [198.51.100.1]:25\n-received_protocol esmtps\n-aclm 0 11\nhello\nworld\n\
         -body_linecount 2\n-max_received_linelength 74\n-dsn_ret 2\n\
         YN Bob@example.org\nNN Bob@EXAMPLE.org\n4\nBob@EXAMPLE.org\n\
         carol@example.org rfc822;carol@example.org 24,12  0,-1#3\ndave@elsewhere.example\n\
         erin@example.org\n\n"
    );
    for (flag, text) in headers {
        h.push_str(&format!("{:03}{flag} {text}", text.len()));
    }
    fs::write(input.join(format!("{new_id}-H")), h).unwrap();
    fs::write(input.join(format!("{new_id}-D")), format!("{new_id}-D\nnew body\n.dot\n")).unwrap();
    fs::write(input.join(format!("{new_id}-J")), "erin@example.org\n").unwrap();
    fs::write(spool.join("msglog/R").join(new_id), "msglog\n").unwrap();
    let last_id = "1vMkbS-00000000Ab4-0Fq3";
    fs::write(
        spool.join("input").join(format!("{last_id}-H")),
        format!(
            "{last_id}-H\nDebian-exim 101 103\n<>\n1763806346 0\n-received_protocol esmtps\n\
             NN ian@example.net\n2\nian@example.net\nhank@example.net\n\n018  Subject: last one\n"
        ),
    )
    .unwrap();
    fs::write(spool.join("input").join(format!("{last_id}-D")), format!("{last_id}-D\nbounce body\n"))
        .unwrap();
    fs::write(spool.join("input").join(format!("{last_id}-J")), "").unwrap();
    fs::write(spool.join("msglog").join(last_id), "msglog\n").unwrap();
    common::chown_tree(&spool, p.uid, p.gid);
    let old_id = p.queue("frank@sender.example", &["gina@example.org"], "old format", "old body\n");

    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(
        deliveries(&received),
        [
            ("old format".into(), "gina@example.org".into()),
            ("synthetic example".into(), "carol@example.org".into())
        ],
        "{log}"
    );
    let new = received.iter().find(|r| r.data.contains("synthetic")).unwrap();
    assert_eq!(new.from, "alice@sender.example");
    assert!(!new.data.contains("X-Removed"), "a '*' header was sent: {}", new.data);
    assert!(new.data.starts_with("Received: from mx.sender.example"), "{}", new.data);
    assert!(
        new.data.ends_with("To: bob@example.org, carol@example.org\n\nnew body\n.dot\n"),
        "{:?}",
        new.data
    );
    // dave stays pending: the journal records carol, files stay for Exim.
    assert_eq!(
        fs::read_to_string(input.join(format!("{new_id}-J"))).unwrap(),
        "erin@example.org\ncarol@example.org\n"
    );
    assert!(input.join(format!("{new_id}-D")).exists());
    assert!(p.spool_file(&old_id, "-H").is_none());

    let (reply, _) = refused(&p, RunAs::EximUser, "example.org");
    assert!(reply.starts_with("453"), "nothing more for example.org: {reply}");
    // A new-format message whose last pending recipient is ours is removed with all its files.
    let (received, log) = collect(&p, RunAs::EximUser, "example.net", |_| {});
    assert_eq!(deliveries(&received), [("last one".into(), "hank@example.net".into())], "{log}");
    for gone in [
        spool.join("input").join(format!("{last_id}-D")),
        spool.join("input").join(format!("{last_id}-H")),
        spool.join("input").join(format!("{last_id}-J")),
        spool.join("msglog").join(last_id),
    ] {
        assert!(!gone.exists(), "{} left behind", gone.display());
    }
    assert!(input.join(format!("{new_id}-H")).exists());
}

#[test]
fn without_the_exim_users_rights_the_answer_is_451_with_a_clear_log_line() {
    let p = Provider::new(false);
    let id = p.queue("alice@sender.example", &["a@example.org"], "perm", "body\n");
    let who = if is_root() {
        // Group access lets odmrd list and read the spool, but -D is 0640: no lock possible.
        RunAs::NobodyWithEximGroup
    } else {
        let d = p.spool_file(&id, "-D").unwrap();
        fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o440)).unwrap();
        RunAs::EximUser
    };
    let (reply, log) = refused(&p, who, "example.org");
    assert!(reply.starts_with("451"), "{reply}\n{log}");
    assert!(log.contains(&format!("{id}-D")), "the log must name the file: {log}");
    assert!(log.contains("must run as the Exim user"), "the log must say what is needed: {log}");
    assert_eq!(p.pending(&[]), map(&[(&id, &["a@example.org"])]));
}

/// `builtin:exim` is also available as a shared object (issue 5): the same session through
/// `plugin = .../libodmr_backend_exim.so` leaves exactly the other recipients on Exim's queue.
#[test]
fn the_exim_backend_loaded_as_a_shared_object_serves_a_session() {
    let mut p = Provider::new(false);
    let so = shared_object("libodmr_backend_exim.so");
    p.queue_plugin = so.display().to_string();
    let id = p.queue(
        "alice@sender.example",
        &["a@example.org", "defer-me@example.org", "c@example.net", "z@other.example"],
        "by path",
        "body\n.dot\n",
    );
    let other = p.queue("bob@sender.example", &["b@example.net"], "not asked", "later\n");
    let (received, log) = collect(&p, RunAs::EximUser, "example.org", |_| {});
    assert_eq!(deliveries(&received), [("by path".into(), "a@example.org".into())], "{log}");
    assert!(received[0].data.ends_with("\n\nbody\n.dot\n"), "{:?}", received[0].data);
    assert!(log.contains(&format!("section=queue loaded={}", so.display())), "{log}");
    let expected = map(&[
        (&id, &["defer-me@example.org", "c@example.net", "z@other.example"]),
        (&other, &["b@example.net"]),
    ]);
    assert_eq!(p.pending(&[]), expected, "{log}");
    p.exim(&["-qff"]);
    assert_eq!(p.pending(&[]), expected, "{}", p.exim_logs());
    assert!(p.journals().is_empty(), "journal not merged: {:?}\n{}", p.journals(), p.exim_logs());
}
