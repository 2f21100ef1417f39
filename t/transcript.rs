//! Transcript tests: `odmrd --inetd` on one end of a socketpair, the test on
//! the other, speaking first as the ODMR customer and then, after the line is
//! turned around, as the customer's MTA. Every row of the reply table and
//! every way a reversed session can end is driven here, and the maildir queue
//! is inspected afterwards.

#[path = "support/mod.rs"]
mod support;

use base64::Engine as _;
use std::time::Duration;
use support::odmrd::{Client, Provider, EHLO_NAME, PASSWORD, USER};
use support::RecordingSendmail;

/// Log in as the test's customer.
fn login(c: &mut Client) {
    c.login(USER, PASSWORD);
}

/// Play the customer's MTA after the 250.
fn turn_around(c: &mut Client, caps: &[&str]) {
    c.turn_around(EHLO_NAME, caps);
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
fn auth_responses_up_to_12288_octets_are_read_and_the_next_line_is_a_command() {
    let p = Provider::new();
    let mut c = p.start();
    c.expect(220);
    // Longer than a command line may be, but a whole AUTH response (RFC 4954):
    // read to its end and judged as a response.
    c.command("AUTH CRAM-MD5", 334);
    c.command(&"QUJD".repeat(150), 501);
    c.command("AUTH CRAM-MD5", 334);
    c.command(&"A".repeat(12286), 501);
    // One octet more: answered once, and the exchange is over...
    c.command("AUTH CRAM-MD5", 334);
    c.command(&"A".repeat(12287), 500);
    // ...so what follows is a command again, not taken for the response.
    c.command("NOOP", 250);
    c.command("AUTH CRAM-MD5", 334);
    c.command(&"A".repeat(100_000), 500);
    c.command("NOOP", 250);
    // Commands keep their own limit.
    c.command(&format!("NOOP {}", "x".repeat(600)), 500);
    c.auth(USER, PASSWORD, 235);
    c.command("QUIT", 221);
    let (_, log) = c.finish();
    assert_eq!(log.matches("event=auth result=too-long").count(), 2, "{log}");
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
    login(&mut c);
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
    login(&mut c);
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
    login(&mut c);
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
    login(&mut first);
    first.command("ATRN example.org", 250);
    // The first session now waits for its customer's 220 and holds the lock.
    let mut second = p.start();
    login(&mut second);
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
    login(&mut c);
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
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &["SIZE 1000000", "8BITMIME"]);
    let (mail, rcpts, data) = c.receive_data(&[]);
    assert!(mail.starts_with("MAIL FROM:<alice@s.example> SIZE="), "{mail}");
    assert!(!mail.contains("BODY="), "a 7-bit body is not declared 8BITMIME: {mail}");
    assert_eq!(rcpts, ["RCPT TO:<bob@example.org>"]);
    assert_eq!(data, "Subject: hi\r\n\r\n..leading dot\r\nline\r\nlast line without newline\r\n");
    let declared: usize = mail.rsplit_once("SIZE=").unwrap().1.parse().unwrap();
    // What went out after 354: the stuffed data and the final ".\r\n" (not counted by SIZE).
    assert!(declared >= data.len(), "SIZE={declared} is below the {} octets sent", data.len());
    assert!(file.exists(), "nothing is removed before the reply to the final dot");
    c.send("250 queued as X");
    c.expect_quit();
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
    login(&mut c);
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
    c.expect_quit();
    c.finish();
    assert!(p.queued("example.org").is_empty());
}

/// Two messages queued, a customer with PIPELINING; returns the provider, the client after the
/// first message's body, and the two files.
fn two_messages_pipelined() -> (Provider, Client, std::path::PathBuf, std::path::PathBuf) {
    let p = Provider::new();
    let first =
        p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: 1\n\none\n"));
    let second =
        p.queue("example.org", "2.m", &bsmtp("b@s.example", &["y@example.org"], "Subject: 2\n\ntwo\n"));
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &["PIPELINING"]);
    for _ in 0..3 {
        c.line();
    }
    c.send_raw(b"250 ok\r\n250 ok\r\n354 go\r\n");
    while c.line() != ".\r\n" {}
    (p, c, first, second)
}

#[test]
fn pipelining_sends_the_next_envelope_with_the_final_dot() {
    let (p, mut c, first, second) = two_messages_pipelined();
    // RFC 2920: the next transaction goes out before the reply to the dot.
    assert_eq!(c.line(), "MAIL FROM:<b@s.example>\r\n");
    assert_eq!(c.line(), "RCPT TO:<y@example.org>\r\n");
    assert_eq!(c.line(), "DATA\r\n");
    assert!(first.exists() && second.exists(), "nothing removed before its own final 2xx");
    c.send_raw(b"250 one done\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    while c.line() != ".\r\n" {}
    assert!(!first.exists(), "the first is committed once the replies behind its 250 are in step");
    assert!(second.exists(), "the second awaits its own final 2xx");
    c.send("250 two done");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(p.queued("example.org").is_empty(), "{log}");
    assert_eq!(log.matches("status=sent").count(), 2, "{log}");
}

#[test]
fn a_shifted_reply_behind_the_final_dot_keeps_both_messages_queued() {
    let (p, mut c, first, second) = two_messages_pipelined();
    for _ in 0..3 {
        c.line();
    }
    // One reply too many: the second DATA's reply is read as 250, so the first's 250 may have
    // answered something else too.
    c.send_raw(b"250 one done\r\n250 extra\r\n250 ok\r\n250 ok\r\n354 go\r\n");
    c.expect_eof();
    let (_, log) = c.finish();
    assert!(first.exists() && second.exists(), "{log}");
    assert_eq!(p.queued("example.org").len(), 2);
    assert!(log.contains("event=kept queue_id=new/1.m"), "{log}");
    assert!(!log.contains("status=sent"), "{log}");
}

#[test]
fn a_bsmtp_file_of_two_messages_run_together_is_aborted_before_its_final_dot_and_moved_aside() {
    let p = Provider::new();
    let content = format!(
        "{}{}",
        bsmtp("a@s.example", &["x@example.org"], "Subject: 1\n\none\n"),
        bsmtp("b@s.example", &["y@example.org"], "Subject: 2\n\ntwo\n")
    );
    let file = p.queue("example.org", "1.m", &content);
    let good = bsmtp("c@s.example", &["z@example.org"], "Subject: 3\n\nthree\n");
    let after = p.queue("example.org", "2.m", &good);
    // The malformed file is the older: it comes first.
    let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    std::fs::File::options().write(true).open(&file).unwrap().set_modified(old).unwrap();
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    let mut sent = String::new();
    assert!(c.line().starts_with("MAIL FROM:<a@s.example>"));
    c.send("250 ok");
    c.line();
    c.send("250 ok");
    assert_eq!(c.line(), "DATA\r\n");
    c.send("354 go");
    // The data is checked while it streams: the first message's lines go out, but the bytes
    // after its terminator are found before the final dot, which is never sent.
    loop {
        let line = c.line();
        if line.is_empty() {
            break;
        }
        assert_ne!(line, ".\r\n", "the final dot of a malformed file was sent");
        sent.push_str(&line);
    }
    let (_, log) = c.finish();
    assert_eq!(sent, "Subject: 1\r\n\r\none\r\n");
    // Moved aside whole, so that it no longer holds back the message after it.
    let quarantined = file.parent().unwrap().parent().unwrap().join("odmrd-quarantine/1.m");
    assert!(!file.exists(), "{log}");
    assert_eq!(std::fs::read_to_string(&quarantined).unwrap(), content, "{log}");
    assert!(
        log.contains("file=new/1.m moved to odmrd-quarantine/1.m: bytes after the terminating '.' line"),
        "{log}"
    );
    assert_eq!(p.queued("example.org"), [good.as_str()]);

    // The next session delivers the message after it.
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    let (mail, rcpts, data) = c.receive_data(&[]);
    assert!(mail.starts_with("MAIL FROM:<c@s.example>"), "{mail}");
    assert_eq!(rcpts, ["RCPT TO:<z@example.org>"]);
    assert_eq!(data, "Subject: 3\r\n\r\nthree\r\n");
    c.send("250 queued");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(!after.exists(), "{log}");
    assert!(p.queued("example.org").is_empty(), "{log}");
    assert_eq!(std::fs::read_to_string(&quarantined).unwrap(), content, "the quarantined file is left alone");
}

#[test]
fn other_domains_recipients_stay_queued() {
    let p = Provider::new();
    let original = bsmtp("a@s.example", &["x@example.org", "y@example.net"], "Subject: two\n\nbody\n");
    p.queue("example.org", "1.m", &original);
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    let (mail, rcpts, _) = c.receive_one();
    assert_eq!(mail, "MAIL FROM:<a@s.example>");
    assert_eq!(rcpts, ["RCPT TO:<x@example.org>"]);
    c.expect_quit();
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
    login(&mut c);
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
    login(&mut c);
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
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    let (_, rcpts, _) = c.receive_data(&["250 ok", "451 4.3.0 try later", "550 5.1.1 no such user"]);
    assert_eq!(
        rcpts,
        ["RCPT TO:<ok@example.org>", "RCPT TO:<later@example.org>", "RCPT TO:<gone@example.org>"]
    );
    c.send("250 done");
    c.expect_quit();
    let (_, log) = c.finish();
    assert_eq!(
        p.queued("example.org"),
        [bsmtp("alice@s.example", &["later@example.org"], "Subject: mixed\n\nbody\n")]
    );
    assert!(log.contains("to=<later@example.org> status=deferred"), "{log}");
    assert!(log.contains("to=<gone@example.org> status=bounced dsn=sent"), "{log}");

    let calls = p.sendmail.calls();
    assert_eq!(calls.len(), 1, "one DSN");
    assert_eq!(calls[0].args, ["-i", "-f", "<>", "--", "alice@s.example"]);
    let dsn = String::from_utf8(calls[0].stdin.clone()).unwrap();
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
    login(&mut c);
    c.command("ATRN", 250);
    turn_around(&mut c, &[]);
    let (mail, _, _) = c.receive_data(&[]);
    assert_eq!(mail, "MAIL FROM:<>");
    c.send("554 5.6.0 rejected");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(p.queued("example.org").is_empty());
    assert!(p.sendmail.calls().is_empty());
    assert!(log.contains("status=bounced dsn=none-null-sender"), "{log}");
}

#[test]
fn a_failing_dsn_keeps_the_recipient_queued() {
    let p = Provider::with_sendmail(RecordingSendmail::exiting(75));
    let file =
        p.queue("example.org", "1.m", &bsmtp("a@s.example", &["gone@example.org"], "Subject: x\n\nbody\n"));
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    c.line();
    c.send("250 ok");
    c.line();
    c.send("550 no");
    assert_eq!(c.line(), "RSET\r\n");
    c.send("250 ok");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(file.exists(), "{log}");
    assert!(log.contains("event=dsn-failed"), "{log}");
}

#[test]
fn ehlo_refused_falls_back_to_helo() {
    let p = Provider::new();
    p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: h\n\nbody\n"));
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    c.send("220 old.example SMTP");
    assert_eq!(c.line(), "EHLO odmr.test.example\r\n");
    c.send("500 what?");
    assert_eq!(c.line(), "HELO odmr.test.example\r\n");
    c.send("250 old.example");
    let (mail, _, _) = c.receive_one();
    assert_eq!(mail, "MAIL FROM:<a@s.example>", "no ESMTP parameters after HELO");
    assert_eq!(c.line(), "QUIT\r\n");
    c.finish();
    assert!(p.queued("example.org").is_empty());
}

// ---------------------------------------------------------------------------
// Replies out of step: nothing is removed that the customer did not take.

/// Queue one message for two recipients, turn around with `caps`, play the customer's side with
/// `script` (raw replies, in order, after the MAIL line), and return the message file's content
/// afterwards with the log. odmrd must end the session without committing anything.
fn replies_out_of_step(caps: &[&str], script: impl FnOnce(&mut Client)) -> (String, String, String) {
    let p = Provider::new();
    let content = bsmtp("a@s.example", &["x@example.org", "y@example.org"], "Subject: s\n\nbody\n");
    let file = p.queue("example.org", "1.m", &content);
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, caps);
    script(&mut c);
    let (_, log) = c.finish();
    assert!(p.sendmail.calls().is_empty(), "no DSN: {log}");
    (std::fs::read_to_string(&file).unwrap_or_default(), content, log)
}

#[test]
fn a_2xx_to_data_keeps_the_message_queued_and_ends_the_session() {
    let (left, content, log) = replies_out_of_step(&[], |c| {
        assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
        c.send("250 ok");
        assert_eq!(c.line(), "RCPT TO:<x@example.org>\r\n");
        c.send("250 ok");
        assert_eq!(c.line(), "RCPT TO:<y@example.org>\r\n");
        c.send("250 ok");
        assert_eq!(c.line(), "DATA\r\n");
        c.send("250 2.0.0 message accepted");
        c.expect_eof();
    });
    assert_eq!(left, content, "{log}");
    assert!(log.contains("event=out-of-step step=Data reply=\"250 2.0.0 message accepted\""), "{log}");
    assert!(!log.contains("status=sent"), "{log}");
}

#[test]
fn an_unsolicited_reply_shifting_the_pipelined_replies_keeps_the_message_queued() {
    let (left, content, log) = replies_out_of_step(&["PIPELINING"], |c| {
        for _ in 0..4 {
            c.line();
        }
        // One reply too many before the 354: DATA's reply is read as 250.
        c.send_raw(b"250 ok\r\n250 ok\r\n250 extra\r\n250 ok\r\n354 go\r\n");
        c.expect_eof();
    });
    assert_eq!(left, content, "{log}");
    assert!(log.contains("event=out-of-step"), "{log}");
}

#[test]
fn a_reply_behind_the_354_is_refused_before_the_body() {
    let (left, content, log) = replies_out_of_step(&["PIPELINING"], |c| {
        for _ in 0..4 {
            c.line();
        }
        c.send_raw(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n250 early verdict\r\n");
        c.expect_eof();
    });
    assert_eq!(left, content, "{log}");
    assert!(log.contains("event=out-of-step reason=unsolicited-reply"), "{log}");
}

#[test]
fn a_second_reply_to_the_final_dot_keeps_the_message_queued() {
    let (left, content, log) = replies_out_of_step(&[], |c| {
        c.receive_data(&[]);
        c.send_raw(b"250 queued\r\n250 and again\r\n");
        c.expect_eof();
    });
    assert_eq!(left, content, "a duplicate later is tolerable, a wrong verdict is not: {log}");
    assert!(log.contains("event=out-of-step reason=unsolicited-reply"), "{log}");
}

#[test]
fn an_unsolicited_reply_between_commands_ends_the_session() {
    let (left, content, log) = replies_out_of_step(&[], |c| {
        assert_eq!(c.line(), "MAIL FROM:<a@s.example>\r\n");
        c.send_raw(b"250 ok\r\n250 ok\r\n");
        c.expect_eof();
    });
    assert_eq!(left, content, "{log}");
    assert!(log.contains("event=out-of-step reason=unsolicited-reply"), "{log}");
}

#[test]
fn a_552_to_rcpt_is_temporary() {
    let p = Provider::new();
    let file =
        p.queue("example.org", "1.m", &bsmtp("a@s.example", &["x@example.org"], "Subject: t\n\nbody\n"));
    let mut c = p.start();
    login(&mut c);
    c.command("ATRN example.org", 250);
    turn_around(&mut c, &[]);
    c.line();
    c.send("250 ok");
    c.line();
    c.send("552 5.5.3 too many recipients");
    assert_eq!(c.line(), "RSET\r\n");
    c.send("250 ok");
    // The recipient is tried once more in a new transaction; a second refusal
    // without progress leaves it for the next session.
    assert!(c.line().starts_with("MAIL FROM:<a@s.example>"));
    c.send("250 ok");
    assert_eq!(c.line(), "RCPT TO:<x@example.org>\r\n");
    c.send("552 5.5.3 too many recipients");
    assert_eq!(c.line(), "RSET\r\n");
    c.send("250 ok");
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(file.exists(), "RFC 5321 §4.5.3.1.10: 552 to RCPT is treated as temporary: {log}");
    assert!(p.sendmail.calls().is_empty());
    assert!(log.contains("to=<x@example.org> status=deferred"), "{log}");
}
