//! The whole envelope reaches the customer (issue 10), over scripted
//! customers: DSN parameters passed on or honoured in our own DSNs,
//! RCPTMAX/452 answered with more transactions on the same connection,
//! MAILMAX, SIZE as the wire size, SMTPUTF8 and 8-bit bodies. The queue is
//! maildir with BSMTP files carrying the sender's parameters.

#[path = "support/mod.rs"]
mod support;

use support::odmrd::{Client, Provider, EHLO_NAME, PASSWORD, USER};

/// A BSMTP file: `mail` is the MAIL FROM line's argument with parameters,
/// `rcpts` the RCPT TO arguments, `body` the (unstuffed) message.
fn bsmtp(mail: &str, rcpts: &[&str], body: &str) -> String {
    let mut s = format!("MAIL FROM:{mail}\n");
    for r in rcpts {
        s.push_str(&format!("RCPT TO:{r}\n"));
    }
    s.push_str("DATA\n");
    for line in body.split_inclusive('\n') {
        if line.starts_with('.') {
            s.push('.');
        }
        s.push_str(line);
    }
    s.push_str(".\n");
    s
}

/// Log in, ATRN example.org, and greet odmrd with `caps`.
fn collect(p: &Provider, caps: &[&str]) -> Client {
    let mut c = p.start();
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, caps);
    c
}

const DSN_MAIL: &str = "<alice@s.example> RET=FULL ENVID=env+2B1";
const DSN_RCPTS: [&str; 3] = [
    "<fail@example.org> NOTIFY=FAILURE ORCPT=rfc822;Fail+2Bx@example.org",
    "<never@example.org> NOTIFY=NEVER",
    "<ok@example.org> NOTIFY=SUCCESS",
];
const DSN_BODY: &str = "Subject: with dsn\n\n.dot line\nthe whole body\n";

#[test]
fn dsn_parameters_go_to_a_customer_that_offers_dsn() {
    let p = Provider::new();
    p.queue("example.org", "1795354394.M1P1.h", &bsmtp(DSN_MAIL, &DSN_RCPTS, DSN_BODY));
    let mut c = collect(&p, &["DSN"]);
    let (mail, rcpts) = c.transaction(&["250 ok", "250 ok", "250 ok"], "250 queued");
    assert_eq!(mail, "MAIL FROM:<alice@s.example> RET=FULL ENVID=env+2B1");
    assert_eq!(
        rcpts,
        [
            "RCPT TO:<fail@example.org> NOTIFY=FAILURE ORCPT=rfc822;Fail+2Bx@example.org",
            "RCPT TO:<never@example.org> NOTIFY=NEVER",
            "RCPT TO:<ok@example.org> NOTIFY=SUCCESS",
        ]
    );
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(p.sendmail.calls().is_empty(), "the customer reports on NOTIFY=SUCCESS itself: {log}");
    assert!(p.queued("example.org").is_empty());
}

#[test]
fn our_dsns_follow_notify_and_return_the_whole_message_for_ret_full() {
    let p = Provider::new();
    p.queue("example.org", "1795354394.M1P1.h", &bsmtp(DSN_MAIL, &DSN_RCPTS, DSN_BODY));
    let mut c = collect(&p, &[]);
    let (mail, rcpts) = c.transaction(&["550 5.1.1 no such user", "550 5.1.1 gone", "250 ok"], "250 queued");
    assert_eq!(mail, "MAIL FROM:<alice@s.example>", "no DSN parameters to a customer without DSN");
    assert_eq!(rcpts[1], "RCPT TO:<never@example.org>");
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("to=<never@example.org> status=bounced dsn=none-notify"), "{log}");
    assert!(p.queued("example.org").is_empty(), "bounced and delivered recipients all leave");

    let calls = p.sendmail.calls();
    assert_eq!(calls.len(), 1, "one DSN for the failure and the relayed success: {log}");
    let dsn = String::from_utf8_lossy(&calls[0].stdin).into_owned();
    let field = |name: &str| support::lines_starting(&dsn, name);
    assert_eq!(field("Original-Envelope-Id:"), ["Original-Envelope-Id: env+2B1"]);
    assert_eq!(field("Arrival-Date:"), ["Arrival-Date: Sun, 22 Nov 2026 13:33:14 +0000"], "from the queue");
    assert_eq!(field("Original-Recipient:"), ["Original-Recipient: rfc822;Fail+2Bx@example.org"]);
    assert_eq!(
        field("Final-Recipient:"),
        ["Final-Recipient: rfc822; fail@example.org", "Final-Recipient: rfc822; ok@example.org"]
    );
    assert_eq!(
        field("Action:"),
        ["Action: failed", "Action: relayed"],
        "NEVER gets no line; SUCCESS is relayed"
    );
    assert!(
        dsn.contains(
            "Content-Type: message/rfc822\r\n\r\nSubject: with dsn\r\n\r\n.dot line\r\nthe whole body\r\n"
        ),
        "RET=FULL returns the whole message: {dsn}"
    );
}

#[test]
fn ret_full_is_returned_from_the_queue_when_no_body_was_sent() {
    let p = Provider::new();
    p.queue("example.org", "1.m", &bsmtp(DSN_MAIL, &DSN_RCPTS[..1], DSN_BODY));
    let mut c = collect(&p, &[]);
    c.transaction(&["550 5.1.1 no such user"], "");
    c.expect_quit();
    let (_, log) = c.finish();
    let calls = p.sendmail.calls();
    assert_eq!(calls.len(), 1, "{log}");
    let dsn = String::from_utf8_lossy(&calls[0].stdin);
    assert!(
        dsn.contains("message/rfc822\r\n\r\nSubject: with dsn\r\n\r\n.dot line\r\nthe whole body\r\n"),
        "{dsn}"
    );
}

#[test]
fn rcptmax_and_452_leave_nothing_for_the_next_session() {
    let p = Provider::new();
    let rcpts: Vec<String> = (1..=5).map(|n| format!("<r{n}@example.org>")).collect();
    let rcpts: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    let file = p.queue("example.org", "1.m", &bsmtp("<a@s.example>", &rcpts, "Subject: many\n\nbody\n"));
    let mut c = collect(&p, &["LIMITS RCPTMAX=2"]);
    let (_, first) = c.transaction(&["250 ok", "250 ok"], "250 queued");
    assert_eq!(first, ["RCPT TO:<r1@example.org>", "RCPT TO:<r2@example.org>"]);
    assert!(file.exists(), "three recipients are still to go");
    let (_, second) = c.transaction(&["250 ok", "452 4.5.3 Too many recipients"], "250 queued");
    assert_eq!(second, ["RCPT TO:<r3@example.org>", "RCPT TO:<r4@example.org>"]);
    let (_, third) = c.transaction(&["250 ok", "250 ok"], "250 queued");
    assert_eq!(third, ["RCPT TO:<r4@example.org>", "RCPT TO:<r5@example.org>"]);
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(!file.exists(), "every recipient delivered in one session: {log}");
    assert_eq!(log.matches("status=sent").count(), 5, "{log}");
    assert!(!log.contains("status=deferred"), "{log}");
}

#[test]
fn mailmax_ends_the_session_cleanly_and_the_rest_stays_queued() {
    let p = Provider::new();
    for n in 1..=3 {
        p.queue(
            "example.org",
            &format!("{n}.m"),
            &bsmtp("<a@s.example>", &[&format!("<r{n}@example.org>")], "x\n"),
        );
    }
    let mut c = collect(&p, &["LIMITS MAILMAX=2"]);
    c.transaction(&["250 ok"], "250 queued");
    c.transaction(&["250 ok"], "250 queued");
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("event=mailmax-reached transactions=2"), "{log}");
    assert_eq!(p.queued("example.org").len(), 1, "{log}");
}

#[test]
fn smtputf8_envelopes_wait_for_a_customer_that_offers_it() {
    let p = Provider::new();
    let file = p.queue(
        "example.org",
        "1.m",
        &bsmtp("<\u{fc}ser@s.example> SMTPUTF8", &["<bob@example.org>"], "x\n"),
    );
    let mut c = collect(&p, &["8BITMIME"]);
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(log.contains("to=<bob@example.org> status=deferred reason=smtputf8-not-offered"), "{log}");
    assert!(file.exists());

    let mut c = collect(&p, &["8BITMIME", "SMTPUTF8"]);
    let (mail, _) = c.transaction(&["250 ok"], "250 queued");
    assert_eq!(mail, "MAIL FROM:<\u{fc}ser@s.example> SMTPUTF8");
    c.expect_quit();
    c.finish();
    assert!(!file.exists());
}

#[test]
fn body_8bitmime_only_for_8bit_bodies_and_what_a_7bit_customer_gets_is_logged() {
    let p = Provider::new();
    let long = "x".repeat(1200);
    p.queue("example.org", "1.m", &bsmtp("<a@s.example>", &["<r1@example.org>"], "Subject: 7\n\nplain\n"));
    p.queue(
        "example.org",
        "2.m",
        &bsmtp("<a@s.example>", &["<r2@example.org>"], &format!("Subject: 8\n\nh\u{e9}\n{long}\n")),
    );
    let mut c = collect(&p, &["8BITMIME"]);
    let (seven, _) = c.transaction(&["250 ok"], "250 queued");
    let (eight, _) = c.transaction(&["250 ok"], "250 queued");
    c.expect_quit();
    let (_, log) = c.finish();
    assert_eq!(seven, "MAIL FROM:<a@s.example>");
    assert_eq!(eight, "MAIL FROM:<a@s.example> BODY=8BITMIME");
    assert!(log.contains("event=long-lines longest=1200"), "{log}");
    assert!(!log.contains("event=8bit-to-7bit-customer"), "{log}");

    p.queue("example.org", "3.m", &bsmtp("<a@s.example>", &["<r3@example.org>"], "h\u{e9}\n"));
    let mut c = collect(&p, &[]);
    let (mail, _) = c.transaction(&["250 ok"], "250 queued");
    c.expect_quit();
    let (_, log) = c.finish();
    assert_eq!(mail, "MAIL FROM:<a@s.example>");
    assert!(log.contains("event=8bit-to-7bit-customer"), "sent as is, but logged: {log}");
}

#[test]
fn size_is_never_below_the_octets_sent() {
    let p = Provider::new();
    // Bare LFs and leading dots: both grow on the wire.
    let body = "Subject: dots\n\n.\n..\n.x\nbare\nlines\n";
    p.queue("example.org", "1.m", &bsmtp("<a@s.example>", &["<r1@example.org>"], body));
    let headers_form =
        format!("Return-Path: <a@s.example>\nDelivered-To: r2@example.org\n{body}.\nno line end");
    p.queue("example.org", "2.m", &headers_form);
    let mut c = collect(&p, &["SIZE 1000000"]);
    for _ in 0..2 {
        let (mail, _, data) = c.receive_data(&[]);
        c.send("250 queued");
        let declared: usize = mail.rsplit_once("SIZE=").expect(&mail).1.parse().unwrap();
        assert!(declared >= data.len(), "SIZE={declared} for {} octets: {data:?}", data.len());
    }
    c.expect_quit();
    c.finish();
}

#[test]
fn an_atrn_list_with_spaces_is_served_and_logged() {
    let p = Provider::new();
    p.queue("example.org", "1.m", &bsmtp("<a@s.example>", &["<r@example.org>"], "x\n"));
    let mut c = p.start();
    c.login(USER, PASSWORD);
    c.command("ATRN example.org, example.net", 250);
    c.turn_around(EHLO_NAME, &[]);
    c.transaction(&["250 ok"], "250 queued");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(log.contains("event=atrn-list-with-spaces"), "{log}");
    assert!(log.contains("domains=example.org,example.net result=250"), "{log}");
}
