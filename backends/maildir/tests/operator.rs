//! What an operator relies on (issue 13): `Envelope-to:` files as Exim's
//! `envelope_to_add` writes them, "no mail" (453) only when there is none,
//! and a listing that reads without locking or changing anything.

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use odmr_api::testing::tree_snapshot;
use odmr_api::{Cursor, Host, Instance, Listed, Outcome, Queue, Status};
use odmr_backend_maildir::Maildir;
use std::fs;
use std::os::unix::fs::MetadataExt;

fn instance(spool: &Spool) -> Maildir {
    Maildir::new(Host::detached(), &spool.config(&[])).unwrap()
}

/// The header block Exim 4.96's appendfile writes with `return_path_add`,
/// `envelope_to_add` and `delivery_date_add` (CRLF as it came over SMTP is
/// stored with LF by appendfile; both are read).
const EXIM_ENVELOPE_TO: &[u8] = b"Return-path: <alice@sender.example>\n\
Envelope-to: a@example.org, b@example.org, x@other.example,\n\tc@example.org\n\
Delivery-date: Thu, 26 Nov 2026 10:00:00 +0000\n\
Received: from sender.example by provider.test with esmtp (Exim 4.96)\n\
Subject: held\n\nbody\n";

#[test]
fn envelope_to_offers_only_this_maildirs_addresses_and_a_partial_commit_rewrites_the_list() {
    let spool = Spool::new();
    let path = spool.put("example.org", "new/1790000000.M1P2.provider", EXIM_ENVELOPE_TO, 1_790_000_000);
    let q = instance(&spool);
    // other.example's own maildir holds its own copy: this file is not its.
    let mut cursor = q.open(&domains(&["example.org", "other.example"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.sender, "alice@sender.example");
    assert_eq!(env.recipients, ["a@example.org", "b@example.org", "c@example.org"]);
    let sent = body(&mut cursor, 5);
    assert!(
        sent.starts_with(b"Delivery-date:"),
        "envelope fields transmitted: {}",
        String::from_utf8_lossy(&sent)
    );
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.set_outcome(1, Outcome::TempFail).unwrap();
    cursor.set_outcome(2, Outcome::PermFail).unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    let rewritten = read(&path);
    let expected = String::from_utf8_lossy(EXIM_ENVELOPE_TO)
        .replace("a@example.org, b@example.org, x@other.example,\n\tc@example.org", "b@example.org");
    assert_eq!(String::from_utf8_lossy(&rewritten), expected);
    assert_eq!(fs::metadata(&path).unwrap().mtime(), 1_790_000_000, "arrival order kept");

    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    assert_eq!(cursor.next_message().unwrap().unwrap().recipients, ["b@example.org"]);
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    assert!(!path.exists(), "all of this maildir's recipients are done: the file goes");
}

#[test]
fn postfix_x_original_to_and_delivered_to_files_are_offered() {
    let spool = Spool::new();
    spool.put("example.org", "new/1", b"Return-Path: <a@s.example>\nX-Original-To: u1@example.org\n\nx\n", 1);
    spool.put(
        "example.org",
        "new/2",
        b"Return-Path: <a@s.example>\nX-Original-To: alias@example.org\nDelivered-To: u2@example.org\n\nx\n",
        2,
    );
    let q = instance(&spool);
    let all = drain(&mut q.open(&domains(&["example.org"])).unwrap());
    let rcpts: Vec<_> = all.iter().map(|(e, _)| e.recipients.clone()).collect();
    assert_eq!(rcpts, [vec!["u1@example.org".to_string()], vec!["u2@example.org".to_string()]]);
    assert_eq!(all[0].1, b"\nx\n");
    assert_eq!(all[1].1, b"X-Original-To: alias@example.org\n\nx\n");
}

#[test]
fn no_maildir_yet_is_no_mail_but_a_missing_spool_root_is_a_temporary_failure() {
    let spool = Spool::new();
    let q = instance(&spool);
    // The root exists, example.org has never received mail: 453 is true.
    assert_eq!(q.has_pending(&domains(&["example.org"])), Ok(false));
    assert_eq!(q.open(&domains(&["example.org"])).unwrap().next_message().unwrap(), None);

    // A typo in `directory` (or an unmounted spool): never "no mail".
    let missing = spool.root.path().join("not-there/{domain}");
    let config = [("directory".to_string(), missing.display().to_string())];
    let q = Maildir::new(Host::detached(), &config).unwrap();
    assert_eq!(q.has_pending(&domains(&["example.org"])), Err(Status::TempFail));
    assert_eq!(q.open(&domains(&["example.org"])).unwrap().next_message(), Err(Status::TempFail));
}

#[test]
fn a_busy_seriallock_on_the_only_domain_with_mail_is_a_temporary_failure() {
    let spool = Spool::new();
    spool.put("a.example", "new/m", b"MAIL FROM:<>\nRCPT TO:<x@a.example>\nDATA\n.\n", 1);
    let file = fs::File::create(spool.root.path().join("a.example/seriallock")).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
    let q = instance(&spool);
    let mut cursor = q.open(&domains(&["a.example", "b.example"])).unwrap();
    assert_eq!(cursor.next_message(), Err(Status::TempFail), "serialmail collecting must not read as 453");
    drop(cursor);
    drop(held);
    assert!(q.open(&domains(&["a.example"])).unwrap().next_message().unwrap().is_some());
}

#[derive(Debug, PartialEq)]
enum Row {
    Message { domain: String, id: String, sender: String, recipients: Vec<String>, arrival: i64 },
    Unreadable { domain: String, id: String },
}

fn listing(q: &Maildir, wanted: &[&str]) -> Vec<Row> {
    let mut rows = Vec::new();
    q.list(&domains(wanted), &mut |entry| {
        rows.push(match entry {
            Listed::Message { domain, envelope, .. } => Row::Message {
                domain: domain.into(),
                id: envelope.id.clone(),
                sender: envelope.sender.clone(),
                recipients: envelope.recipients.clone(),
                arrival: odmr_api::kit::arrival_to_raw(envelope.arrival),
            },
            Listed::Unreadable { domain, id, .. } => Row::Unreadable { domain: domain.into(), id: id.into() },
        })
    })
    .unwrap();
    rows
}

#[test]
fn the_listing_reads_under_a_held_seriallock_and_changes_no_byte() {
    let spool = Spool::new();
    spool.put("example.org", "new/1790000000.M1P2.h", EXIM_ENVELOPE_TO, 1_790_000_000);
    spool.put("example.org", "cur/junk", b"garbage\n", 5);
    spool.put("example.net", "new/b", b"MAIL FROM:<>\nRCPT TO:<z@example.net>\nDATA\n.\n", 7);
    fs::write(spool.maildir("example.org").join("tmp/1.M1P1Q1.odmrd-rewrite"), b"leftover").unwrap();
    fs::create_dir(spool.root.path().join("not a domain")).unwrap();
    // A collection holds example.org: the listing neither waits nor fails.
    let file = fs::File::create(spool.root.path().join("example.org/seriallock")).unwrap();
    let _held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
    let before = tree_snapshot(spool.root.path());
    let q = instance(&spool);
    let every = listing(&q, &[]);
    assert_eq!(
        every,
        [
            Row::Message {
                domain: "example.net".into(),
                id: "new/b".into(),
                sender: String::new(),
                recipients: vec!["z@example.net".into()],
                arrival: 7
            },
            Row::Unreadable { domain: "example.org".into(), id: "cur/junk".into() },
            Row::Message {
                domain: "example.org".into(),
                id: "new/1790000000.M1P2.h".into(),
                sender: "alice@sender.example".into(),
                recipients: vec!["a@example.org".into(), "b@example.org".into(), "c@example.org".into()],
                arrival: 1_790_000_000
            },
        ]
    );
    assert_eq!(listing(&q, &["EXAMPLE.NET"]).len(), 1);
    assert!(listing(&q, &["never-delivered.example"]).is_empty());
    assert_eq!(tree_snapshot(spool.root.path()), before, "the listing changed the spool");
}

#[test]
fn the_reply_that_deferred_a_recipient_is_listed_until_it_is_delivered() {
    let spool = Spool::new();
    spool.put(
        "example.org",
        "new/1790000000.M1P2.h",
        b"MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nRCPT TO:<y@example.org>\nDATA\n\n.\n",
        1,
    );
    let q = instance(&spool);
    let replies = |q: &Maildir| {
        let mut all = Vec::new();
        q.list(&domains(&["example.org"]), &mut |entry| {
            if let Listed::Message { envelope, last_replies, .. } = entry {
                for (i, r) in envelope.recipients.iter().enumerate() {
                    all.push((r.clone(), last_replies.get(i).cloned().unwrap_or_default()));
                }
            }
        })
        .unwrap();
        all
    };
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome_reply(0, Outcome::TempFail, "450 4.2.1 mailbox busy").unwrap();
    cursor.set_outcome_reply(1, Outcome::TempFail, "451 4.3.0 try later").unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    assert_eq!(
        replies(&q),
        [
            ("x@example.org".to_string(), "450 4.2.1 mailbox busy".to_string()),
            ("y@example.org".to_string(), "451 4.3.0 try later".to_string())
        ]
    );
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome_reply(0, Outcome::Delivered, "250 ok").unwrap();
    cursor.set_outcome_reply(1, Outcome::TempFail, "452 4.2.2 over quota").unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    assert_eq!(replies(&q), [("y@example.org".to_string(), "452 4.2.2 over quota".to_string())]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome_reply(0, Outcome::Delivered, "250 ok").unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    assert!(replies(&q).is_empty());
    let records = spool.root.path().join("example.org/odmrd-deferred");
    assert_eq!(fs::read_dir(records).unwrap().count(), 0, "the record outlived its message");
}
