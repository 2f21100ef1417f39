//! The maildir backend driven through the `Queue`/`Cursor` traits, as the
//! host's safe wrappers drive it, over real temporary maildirs.

mod common;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use odmr_api::testing::TestHost;
use odmr_api::{Cursor, Host, Instance, Listed, LogLevel, Outcome, Queue, Status};
use odmr_backend_maildir::Maildir;
use std::fs;
use std::os::unix::fs::MetadataExt;

fn instance(spool: &Spool, extra: &[(&str, &str)]) -> Maildir {
    Maildir::new(Host::detached(), &spool.config(extra)).unwrap()
}

const BSMTP_LF: &[u8] = b"MAIL FROM:<bob@sender.example> SIZE=99\nRCPT TO:<u1@example.org>\nDATA\n\
Subject: bsmtp\n\n..leading dot\n...two\nmid.dle\n.\n";
const BSMTP_CRLF: &[u8] = b"MAIL FROM:<>\r\nRCPT TO:<u2@example.org>\r\nDATA\r\n\
Subject: crlf\r\n\r\n..x\r\n.\r\n";

#[test]
fn bsmtp_files_are_unstuffed_exactly_with_lf_and_crlf() {
    let spool = Spool::new();
    spool.put("example.org", "new/1.M1P1.h", BSMTP_LF, 100);
    spool.put("example.org", "cur/2.M2P2.h:2,S", BSMTP_CRLF, 200);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let got = drain(&mut cursor);
    assert_eq!(got.len(), 2);
    let (env, body) = &got[0];
    assert_eq!((env.id.as_str(), env.sender.as_str()), ("new/1.M1P1.h", "bob@sender.example"));
    assert_eq!(env.recipients, ["u1@example.org"]);
    assert_eq!(env.size, BSMTP_LF.len() as u64);
    assert_eq!(body, b"Subject: bsmtp\n\n.leading dot\n..two\nmid.dle\n");
    let (env, body) = &got[1];
    assert_eq!((env.id.as_str(), env.sender.as_str()), ("cur/2.M2P2.h:2,S", ""));
    assert_eq!(body, b"Subject: crlf\r\n\r\n.x\r\n");
}

#[test]
fn header_mode_consumes_the_envelope_fields_only() {
    let spool = Spool::new();
    let qmail = b"Return-Path: <alice@sender.example>\nDelivered-To: bob@virt.dom\nReceived: x\nSubject: hi\n\nbody\n";
    let postfix = b"Return-Path: <#@[]>\r\nX-Original-To: carol@virt.dom\r\nDelivered-To: carol@virt.dom\r\n\r\n.dot stays\r\n";
    spool.put("virt.dom", "new/a", qmail, 10);
    spool.put("virt.dom", "new/b", postfix, 20);
    let q = instance(&spool, &[]);
    let got = drain(&mut q.open(&domains(&["virt.dom"])).unwrap());
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].0.sender.as_str(), got[0].0.recipients.clone()),
        ("alice@sender.example", vec!["bob@virt.dom".into()])
    );
    assert_eq!(got[0].1, b"Received: x\nSubject: hi\n\nbody\n");
    // qmail's double bounce becomes the null sender.
    assert_eq!((got[1].0.sender.as_str(), got[1].0.recipients.clone()), ("", vec!["carol@virt.dom".into()]));
    assert_eq!(got[1].1, b"X-Original-To: carol@virt.dom\r\n\r\n.dot stays\r\n");
}

#[test]
fn strip_prefix_recovers_the_recipient_and_skips_files_without_it() {
    let spool = Spool::new();
    let good = spool.put(
        "example.com",
        "new/good",
        b"Return-Path: <a@b.example>\nDelivered-To: example.com-joe@example.com\n\nhello\n",
        10,
    );
    let bad = spool.put(
        "example.com",
        "new/bad",
        b"Return-Path: <a@b.example>\nDelivered-To: joe@example.com\n\nx\n",
        20,
    );
    let q = instance(&spool, &[("strip_prefix", "{domain}-")]);
    assert!(q.has_pending(&domains(&["example.com"])).unwrap());
    let mut cursor = q.open(&domains(&["example.com"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!((env.id.as_str(), env.recipients.clone()), ("new/good", vec!["joe@example.com".to_string()]));
    // Only the envelope fields go: the blank line ending the header block stays.
    assert_eq!(body(&mut cursor, 4), b"\nhello\n");
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert!(cursor.next_message().unwrap().is_none());
    drop(cursor);
    assert!(!good.exists(), "delivered file not removed");
    assert!(bad.exists(), "file without the prefix must stay");

    let spool = Spool::new();
    spool.put("virt.dom", "new/x", b"Return-Path: <a@b>\nDelivered-To: autoturn-1.2.3.4-bob@virt.dom\n\n", 1);
    let q = instance(&spool, &[("strip_prefix", "autoturn-1.2.3.4-")]);
    let got = drain(&mut q.open(&domains(&["virt.dom"])).unwrap());
    assert_eq!(got[0].0.recipients, ["bob@virt.dom"]);
}

#[test]
fn domains_match_exactly_but_case_insensitively() {
    let spool = Spool::new();
    let rcpts = ["a@example.org", "b@example.org.uk", "c@xexample.org", "d@EXAMPLE.ORG", "e@sub.example.org"];
    let mut text = String::from("MAIL FROM:<s@x.example>\n");
    for r in rcpts {
        text.push_str(&format!("RCPT TO:<{r}>\n"));
    }
    text.push_str("DATA\nbody\n.\n");
    spool.put("example.org", "new/m", text.as_bytes(), 1);
    spool.put("example.org", "new/uk-only", b"MAIL FROM:<>\nRCPT TO:<z@example.org.uk>\nDATA\n.\n", 2);
    let q = instance(&spool, &[]);
    let got = drain(&mut q.open(&domains(&["example.org"])).unwrap());
    assert_eq!(got.len(), 1, "a file without a matching recipient was offered");
    assert_eq!(got[0].0.recipients, ["a@example.org", "d@EXAMPLE.ORG"]);
    // The host passes lower case; upper case is accepted and folded too.
    let got = drain(&mut q.open(&domains(&["EXAMPLE.ORG"])).unwrap());
    assert_eq!(got[0].0.recipients, ["a@example.org", "d@EXAMPLE.ORG"]);
}

#[test]
fn partial_delivery_rewrites_bsmtp_keeping_other_domains_byte_for_byte() {
    let spool = Spool::new();
    let original: &[u8] = b"MAIL FROM:<bob@sender.example> BODY=8BITMIME\r\n\
RCPT TO:<a@example.org>\r\nRCPT TO:<b@other.example>\r\nRCPT TO:<c@example.org>\r\nrcpt to:<d@example.org>\r\nDATA\r\n\
Subject: multi\r\n\r\n..stuffed\r\n.\r\n";
    let path = spool.put("example.org", "new/1700000000.M5P6.mx", original, 1_700_000_000);
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.recipients, ["a@example.org", "c@example.org", "d@example.org"]);
    assert_eq!(body(&mut cursor, 7), b"Subject: multi\r\n\r\n.stuffed\r\n");
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.set_outcome(1, Outcome::TempFail).unwrap();
    // d: no outcome recorded → stays.
    assert_eq!(read(&path), original, "changed before commit");
    cursor.commit().unwrap();
    let expected: &[u8] = b"MAIL FROM:<bob@sender.example> BODY=8BITMIME\r\n\
RCPT TO:<b@other.example>\r\nRCPT TO:<c@example.org>\r\nrcpt to:<d@example.org>\r\nDATA\r\n\
Subject: multi\r\n\r\n..stuffed\r\n.\r\n";
    assert_eq!(read(&path), expected);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!((meta.mtime(), meta.mode() & 0o777), (1_700_000_000, 0o640), "mtime or mode not kept");
    assert_eq!(fs::read_dir(spool.root.path().join("example.org/tmp")).unwrap().count(), 0, "tmp/ not clean");
    // Committing again is a no-op.
    cursor.commit().unwrap();
    assert_eq!(read(&path), expected);
    drop(cursor);

    // Next session: c and d permanently fail / are delivered; b (other domain) remains.
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.recipients, ["c@example.org", "d@example.org"]);
    cursor.set_outcome(0, Outcome::PermFail).unwrap();
    cursor.set_outcome(1, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert_eq!(
        read(&path),
        b"MAIL FROM:<bob@sender.example> BODY=8BITMIME\r\nRCPT TO:<b@other.example>\r\nDATA\r\n\
Subject: multi\r\n\r\n..stuffed\r\n.\r\n"
    );
    drop(cursor);
    assert!(!q.has_pending(&domains(&["example.org"])).unwrap());
    assert!(q.has_pending(&domains(&["other.example", "example.org"])).unwrap());

    // Asked for both domains, example.org's maildir offers the other-domain
    // recipient too; when it is delivered the file goes.
    let mut cursor = q.open(&domains(&["example.org", "other.example"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.recipients, ["b@other.example"]);
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert!(!path.exists());
}

#[test]
fn tempfail_and_missing_outcomes_leave_the_file_alone() {
    let spool = Spool::new();
    let path = spool.put("example.org", "new/m", BSMTP_LF, 5);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome(0, Outcome::TempFail).unwrap();
    cursor.commit().unwrap();
    assert_eq!(read(&path), BSMTP_LF);
    assert_eq!(fs::metadata(&path).unwrap().mtime(), 5);
    cursor.commit().unwrap(); // no outcome changes: no-op
    assert_eq!(read(&path), BSMTP_LF);
    assert_eq!(cursor.set_outcome(1, Outcome::Delivered), Err(Status::InvalidArgument));
    drop(cursor);
    assert!(q.has_pending(&domains(&["example.org"])).unwrap());
}

#[test]
fn a_cursor_dropped_without_commit_changes_nothing() {
    let spool = Spool::new();
    let a = spool.put("example.org", "new/a", BSMTP_LF, 1);
    let b = spool.put("example.org", "new/b", b"Return-Path: <x@y>\nDelivered-To: q@example.org\n\nq\n", 2);
    let before = (read(&a), read(&b));
    let q = instance(&spool, &[]);
    {
        let mut cursor = q.open(&domains(&["example.org"])).unwrap();
        cursor.next_message().unwrap().unwrap();
        body(&mut cursor, 3);
        cursor.set_outcome(0, Outcome::Delivered).unwrap();
        // Moving on without commit discards the outcome.
        cursor.next_message().unwrap().unwrap();
        cursor.set_outcome(0, Outcome::PermFail).unwrap();
        // Dropped here, without commit.
    }
    assert_eq!((read(&a), read(&b)), before);
    assert_eq!(fs::read_dir(spool.root.path().join("example.org/tmp")).unwrap().count(), 0);
    assert_eq!(drain(&mut q.open(&domains(&["example.org"])).unwrap()).len(), 2);
}

#[test]
fn malformed_unreadable_and_symlinked_files_are_skipped_and_kept() {
    let spool = Spool::new();
    let junk = spool.put("example.org", "new/junk", b"\x00\x01 not mail", 1);
    let truncated =
        spool.put("example.org", "new/truncated", b"MAIL FROM:<a@b>\nRCPT TO:<u@example.org>\nDATA\nhalf", 2);
    let two = spool.put(
        "example.org",
        "new/two",
        b"MAIL FROM:<a@b>\nRCPT TO:<u@example.org>\nDATA\n.\nMAIL FROM:<c@d>\n",
        3,
    );
    let empty = spool.put("example.org", "new/empty", b"", 4);
    let good = spool.put("example.org", "new/good", BSMTP_LF, 5);
    let target = spool.put("example.org", "tmp-target", BSMTP_LF, 6);
    std::os::unix::fs::symlink(&target, spool.root.path().join("example.org/new/link")).unwrap();
    fs::write(spool.root.path().join("example.org/new/.dotfile"), BSMTP_LF).unwrap();
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.id, "new/good");
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert!(cursor.next_message().unwrap().is_none());
    drop(cursor);
    assert!(!good.exists());
    for kept in [&junk, &truncated, &two, &empty, &target] {
        assert!(kept.exists(), "{} was removed", kept.display());
    }
    assert!(fs::symlink_metadata(spool.root.path().join("example.org/new/link")).is_ok());
    // Only unparseable files are left: that is not "no mail" (453) but 451.
    assert_eq!(q.has_pending(&domains(&["example.org"])).unwrap_err(), Status::TempFail);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    assert_eq!(cursor.next_message().unwrap_err(), Status::TempFail);
}

#[test]
fn a_busy_seriallock_hides_only_that_domain() {
    let spool = Spool::new();
    let locked = spool.put("a.example", "new/m", b"MAIL FROM:<>\nRCPT TO:<x@a.example>\nDATA\n.\n", 1);
    spool.put("b.example", "new/m", b"MAIL FROM:<>\nRCPT TO:<y@b.example>\nDATA\n.\n", 2);
    let lockfile = spool.root.path().join("a.example/seriallock");
    let file = fs::File::create(&lockfile).unwrap();
    let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["a.example", "b.example"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.recipients, ["y@b.example"]);
    assert!(cursor.next_message().unwrap().is_none());
    drop(cursor);
    assert!(locked.exists());
    drop(held);

    // Released: the domain is served, and the cursor itself holds the lock.
    let mut cursor = q.open(&domains(&["a.example"])).unwrap();
    let probe = fs::File::open(&lockfile).unwrap();
    assert!(Flock::lock(probe, FlockArg::LockExclusiveNonblock).is_err(), "cursor does not hold seriallock");
    assert_eq!(cursor.next_message().unwrap().unwrap().recipients, ["x@a.example"]);
    drop(cursor);
    let probe = fs::File::open(&lockfile).unwrap();
    assert!(Flock::lock(probe, FlockArg::LockExclusiveNonblock).is_ok(), "lock outlived the cursor");
}

#[test]
fn has_pending_agrees_with_the_cursor() {
    type Setup = fn(&Spool);
    let cases: &[(&str, Setup)] = &[
        ("missing maildir", |_| {}),
        ("empty maildir", |s| {
            s.maildir("example.org");
        }),
        ("only malformed", |s| {
            s.put("example.org", "new/x", b"garbage\n", 1);
        }),
        ("only other domains", |s| {
            s.put("example.org", "new/x", b"MAIL FROM:<>\nRCPT TO:<a@example.net>\nDATA\n.\n", 1);
        }),
        ("only a symlink", |s| {
            let t = s.put("elsewhere", "new/t", BSMTP_LF, 1);
            std::os::unix::fs::symlink(t, s.maildir("example.org").join("new/l")).unwrap();
        }),
        ("only a dot file", |s| {
            s.put("example.org", "new/.x", BSMTP_LF, 1);
        }),
        ("a prefix mismatch", |s| {
            s.put("example.org", "new/x", b"Return-Path: <>\nDelivered-To: u1@example.org\n\n", 1);
        }),
        ("one good file", |s| {
            s.put("example.org", "cur/x:2,", BSMTP_LF, 1);
        }),
        ("good after bad", |s| {
            s.put("example.org", "new/bad", b"MAIL FROM:<>\n", 1);
            s.put("example.org", "new/good", b"Return-Path: <>\nDelivered-To: p-u@example.org\n\n", 2);
        }),
    ];
    for (name, setup) in cases {
        let spool = Spool::new();
        setup(&spool);
        let prefixed = name.contains("prefix") || name.contains("good after");
        let q = instance(&spool, if prefixed { &[("strip_prefix", "p-")] } else { &[] });
        let pending = q.has_pending(&domains(&["example.org"]));
        let mut cursor = q.open(&domains(&["example.org"])).unwrap();
        let first = cursor.next_message().map(|m| m.is_some());
        assert_eq!(pending, first, "{name}: has_pending and the cursor's first message disagree");
        // Unparseable files alone are a temporary failure (451), never "no mail" (453).
        let unparseable = name.contains("malformed") || name.contains("prefix");
        let expected = if unparseable { Err(Status::TempFail) } else { Ok(name.contains("good")) };
        assert_eq!(pending, expected, "{name}");
    }
}

#[test]
fn a_20_mb_body_streams_through_small_buffers() {
    let spool = Spool::new();
    let mut file = b"MAIL FROM:<big@sender.example>\r\nRCPT TO:<u@example.org>\r\nDATA\r\n".to_vec();
    let mut expected = Vec::new();
    let mut i = 0u64;
    while expected.len() < 20 * 1024 * 1024 {
        let line = match i % 5 {
            0 => format!(".line {i} starts with a dot\r\n"),
            1 => format!("..{i} two dots\r\n"),
            _ => format!("line {i} {}\r\n", "x".repeat((i % 97) as usize)),
        };
        // Stuff: a line starting with '.' gets one more.
        if line.starts_with('.') {
            file.push(b'.');
        }
        file.extend_from_slice(line.as_bytes());
        expected.extend_from_slice(line.as_bytes());
        i += 1;
    }
    file.extend_from_slice(b".\r\n");
    let path = spool.put("example.org", "new/big", &file, 1);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let env = cursor.next_message().unwrap().unwrap();
    assert_eq!(env.size, file.len() as u64);
    let got = body(&mut cursor, 4096);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "streamed body differs");
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert!(!path.exists());
}

/// Files just under the size read whole and just over it (streamed) give the
/// same exact bodies, in both forms, and a partial commit of a message read
/// whole still rewrites it byte for byte after the buffer went to the next.
#[test]
fn messages_either_side_of_the_whole_read_size_stream_exactly() {
    use odmr_backend_maildir::queue::WHOLE_MESSAGE;
    let spool = Spool::new();
    let mut want = Vec::new();
    for (i, size) in [WHOLE_MESSAGE - 200, WHOLE_MESSAGE + 200].into_iter().enumerate() {
        let line = |n: usize| format!("line {n} {}\n", "y".repeat(n % 61));
        let mut data = String::new();
        let mut n = 0;
        while data.len() < size {
            data.push_str(&line(n));
            n += 1;
        }
        let headers =
            format!("Return-Path: <a@s.example>\nDelivered-To: h{i}@example.org\nSubject: {i}\n\n{data}");
        spool.put("example.org", &format!("new/h{i}"), headers.as_bytes(), 10 + 2 * i as u64);
        want.push(format!("Subject: {i}\n\n{data}").into_bytes());
        let stuffed = data.replace("\nline 1", "\n.line 1");
        let bsmtp = format!(
            "MAIL FROM:<a@s.example>\nRCPT TO:<b{i}@example.org>\nRCPT TO:<b@other.example>\nDATA\n.{stuffed}.\n"
        );
        spool.put("example.org", &format!("new/b{i}"), bsmtp.as_bytes(), 11 + 2 * i as u64);
        want.push(stuffed.replace("\n.line 1", "\nline 1").into_bytes());
    }
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    for (k, want) in want.iter().enumerate() {
        let env = cursor.next_message().unwrap().unwrap();
        let got = body(&mut cursor, 1000);
        assert!(&got == want, "message {k} ({}) differs", env.id);
        cursor.set_outcome(0, Outcome::Delivered).unwrap();
        cursor.commit().unwrap();
    }
    assert!(cursor.next_message().unwrap().is_none());
    drop(cursor);
    // The BSMTP files were rewritten for their other domain's recipient, the rest kept.
    for i in 0..2 {
        let left = read(&spool.maildir("example.org").join(format!("new/b{i}")));
        assert!(left.starts_with(b"MAIL FROM:<a@s.example>\nRCPT TO:<b@other.example>\nDATA\n.line 0"));
        assert!(left.ends_with(b"\n.\n"));
        assert!(!spool.maildir("example.org").join(format!("new/h{i}")).exists());
    }
}

#[test]
fn bad_domains_are_refused_before_touching_the_file_system() {
    let spool = Spool::new();
    let q = instance(&spool, &[]);
    for bad in ["../etc", "a/b", "..", "example..org", ""] {
        assert_eq!(q.has_pending(&domains(&[bad])).unwrap_err(), Status::InvalidArgument, "{bad:?}");
        assert!(matches!(q.open(&domains(&["example.org", bad])), Err(Status::InvalidArgument)), "{bad:?}");
    }
    assert!(!spool.root.path().join("..").join("etc").join("seriallock").exists());
}

#[test]
fn instance_errors_name_the_key() {
    let spool = Spool::new();
    let err = Maildir::new(Host::detached(), &spool.config(&[("strip", "x")])).err().unwrap();
    assert!(err.contains("'strip'"), "{err}");
    let err = Maildir::new(Host::detached(), &[]).err().unwrap();
    assert!(err.contains("'directory'"), "{err}");
}

#[test]
fn messages_come_oldest_first_across_new_and_cur() {
    let spool = Spool::new();
    let msg = |r: &str| format!("MAIL FROM:<>\nRCPT TO:<{r}@example.org>\nDATA\n.\n").into_bytes();
    spool.put("example.org", "cur/c:2,S", &msg("third"), 300);
    spool.put("example.org", "new/b", &msg("second"), 200);
    spool.put("example.org", "new/a", &msg("first"), 200);
    spool.put("example.org", "cur/z", &msg("zeroth"), 100);
    let q = instance(&spool, &[]);
    let order: Vec<String> = drain(&mut q.open(&domains(&["example.org"])).unwrap())
        .into_iter()
        .map(|(e, _)| e.recipients[0].clone())
        .collect();
    assert_eq!(order, ["zeroth@example.org", "first@example.org", "second@example.org", "third@example.org"]);
}

#[test]
fn calls_out_of_order_are_refused_not_obeyed() {
    let spool = Spool::new();
    let path = spool.put("example.org", "new/m", BSMTP_LF, 1);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    assert_eq!(cursor.set_outcome(0, Outcome::Delivered), Err(Status::InvalidArgument));
    assert_eq!(cursor.commit(), Err(Status::InvalidArgument));
    assert_eq!(cursor.read_body(&mut [0u8; 8]), Err(Status::InvalidArgument));
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert_eq!(
        cursor.set_outcome(0, Outcome::TempFail),
        Err(Status::InvalidArgument),
        "outcome after commit"
    );
    assert!(!path.exists());
}

#[test]
fn a_failed_rewrite_keeps_the_message_and_reports_tempfail() {
    let spool = Spool::new();
    let text: &[u8] = b"MAIL FROM:<>\nRCPT TO:<a@example.org>\nRCPT TO:<b@example.net>\nDATA\nx\n.\n";
    let path = spool.put("example.org", "new/m", text, 1);
    fs::remove_dir(spool.root.path().join("example.org/tmp")).unwrap();
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    assert_eq!(cursor.commit(), Err(Status::TempFail));
    drop(cursor);
    assert_eq!(read(&path), text);
}

#[test]
fn opening_a_cursor_cleans_tmp_only_under_the_lock_and_never_a_fresh_delivery() {
    let spool = Spool::new();
    spool.put("example.org", "new/m", b"MAIL FROM:<>\nRCPT TO:<x@example.org>\nDATA\n.\n", 1);
    // What a rewrite killed before its rename leaves (fresh), another writer's
    // delivery in progress (fresh) and another writer's long-dead one.
    let ours = "1795354421.M53429P17987Q3.odmrd-rewrite";
    let fresh = "1795354421.M1P2.mda.example";
    let now = std::time::SystemTime::now();
    let dead = spool.put("example.org", "tmp/1600000000.M1P2.mda.example", b"x", 1_600_000_000);
    fs::File::options()
        .write(true)
        .open(&dead)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(now - std::time::Duration::from_secs(37 * 3600)))
        .unwrap();
    let ours_path = spool.root.path().join("example.org/tmp").join(ours);
    fs::write(&ours_path, b"MAIL FROM:<>\n").unwrap();
    let fresh_path = spool.root.path().join("example.org/tmp").join(fresh);
    fs::write(&fresh_path, b"half a delivery").unwrap();
    let q = instance(&spool, &[]);

    // Someone else holds the maildir: nothing in tmp/ is touched.
    let lockfile = spool.root.path().join("example.org/seriallock");
    let held = Flock::lock(fs::File::create(&lockfile).unwrap(), FlockArg::LockExclusiveNonblock)
        .map_err(|(_, e)| e)
        .unwrap();
    drop(q.open(&domains(&["example.org"])).unwrap());
    assert!(ours_path.exists() && fresh_path.exists() && dead.exists());
    drop(held);

    let cursor = q.open(&domains(&["example.org"])).unwrap();
    assert!(!ours_path.exists(), "our rewrite leftover stayed");
    assert!(!dead.exists(), "a file untouched for 37 hours stayed");
    assert_eq!(fs::read(&fresh_path).unwrap(), b"half a delivery", "another writer's fresh file was touched");
    drop(cursor);
    assert!(spool.root.path().join("example.org/new/m").exists());
}

#[test]
fn bsmtp_parameters_and_the_file_fill_the_abi_1_1_envelope() {
    use odmr_api::params::{Notify, Ret};
    use std::time::{Duration, UNIX_EPOCH};
    let spool = Spool::new();
    let with_dsn = b"MAIL FROM:<bob@sender.example> RET=HDRS ENVID=q+2B1 BODY=7BIT\n\
RCPT TO:<u1@example.org> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;U1+2Bx@example.org\n\
RCPT TO:<u2@example.org> NOTIFY=NEVER\nRCPT TO:<u3@example.org> NOTIFY=bogus\nDATA\nSubject: p\n\nh\xc3\xa9\n.\n";
    spool.put("example.org", "new/1795354394.M1P1.h", with_dsn, 100);
    let utf8 = "MAIL FROM:<\u{fc}@sender.example> SMTPUTF8\nRCPT TO:<u4@example.org>\nDATA\nx\n.\n";
    spool.put("example.org", "new/1795354395.M2P2.h", utf8.as_bytes(), 200);
    let headers = b"Return-Path: <a@sender.example>\nDelivered-To: u5@example.org\n\nplain\n";
    spool.put("example.org", "new/h-form", headers, 300);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    let got = drain(&mut cursor);
    assert_eq!(got.len(), 3);

    let e = &got[0].0;
    assert_eq!(
        (e.envid.as_deref(), e.ret, e.smtputf8, e.eight_bit),
        (Some("q+1"), Some(Ret::Headers), false, Some(true))
    );
    assert_eq!(e.arrival, Some(UNIX_EPOCH + Duration::from_secs(1795354394)), "from the maildir name");
    let d0 = e.recipient_details(0);
    assert_eq!(
        (d0.notify, d0.orcpt.as_deref()),
        (Notify::parse("SUCCESS,DELAY").unwrap(), Some("rfc822;U1+x@example.org"))
    );
    assert_eq!(e.recipient_details(1).notify, Notify::NEVER);
    assert_eq!(e.recipient_details(2).notify, Notify::UNSPECIFIED, "a bad NOTIFY is as if absent");

    // Data "Subject: p\n\nhé\n" is 16 octets with CRLF: the bound covers it.
    assert!(e.wire_size.is_some_and(|w| w >= 16), "{:?}", e.wire_size);
    let e = &got[1].0;
    assert_eq!((e.smtputf8, e.eight_bit, e.envid.as_deref()), (true, Some(false), None));

    let e = &got[2].0;
    assert_eq!((e.smtputf8, e.eight_bit), (false, Some(false)));
    assert_eq!(e.arrival, Some(UNIX_EPOCH + Duration::from_secs(300)), "no time in the name: the file's");
}

/// NEXT_BEFORE_COMMIT: the next message is handed out (and its body read) while the first
/// awaits its commit; outcomes and the commit go to the first, which alone leaves the spool,
/// and only at its own commit.
#[test]
fn the_next_message_is_handed_out_before_the_current_is_committed() {
    const { assert!(<Maildir as Queue>::NEXT_BEFORE_COMMIT) };
    let spool = Spool::new();
    let first = spool.put(
        "example.org",
        "new/1",
        b"Return-Path: <a@s.example>\nDelivered-To: one@example.org\n\nfirst\n",
        10,
    );
    let second = spool.put(
        "example.org",
        "new/2",
        b"Return-Path: <a@s.example>\nDelivered-To: two@example.org\n\nsecond\n",
        20,
    );
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    assert_eq!(cursor.next_message().unwrap().unwrap().id, "new/1");
    assert_eq!(body(&mut cursor, 4096), b"\nfirst\n");
    assert_eq!(cursor.next_message().unwrap().unwrap().id, "new/2");
    assert_eq!(body(&mut cursor, 4096), b"\nsecond\n");
    // Both still queued: neither got its commit.
    assert!(first.exists() && second.exists());
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    assert!(!first.exists(), "the older was committed");
    assert!(second.exists(), "the newer awaits its own commit");
    // Now outcomes go to the newer; left without commit, it stays.
    cursor.set_outcome(0, Outcome::TempFail).unwrap();
    cursor.commit().unwrap();
    assert!(cursor.next_message().unwrap().is_none());
    drop(cursor);
    assert!(second.exists());
}

/// `claim = yes`: a message being sent is hidden under a claim name (another
/// front end neither sees nor gets it), comes back under its own name when
/// left without a verdict, and is removed after one; a stale claim of a dead
/// front end is returned when the spool is next opened.
#[test]
fn claims_hide_return_and_remove_messages() {
    let spool = Spool::new();
    let first = spool.put("example.org", "new/1.M1P1.h", BSMTP_LF, 100);
    let claims = [("claim", "yes"), ("claim_host", "front-a")];
    let q = instance(&spool, &claims);
    let other = instance(&spool, &[("claim", "yes"), ("claim_host", "front-b")]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    assert!(cursor.next_message().unwrap().is_some());
    assert!(!first.exists(), "claimed: renamed away");
    assert!(!other.has_pending(&domains(&["example.org"])).unwrap());
    assert!(other.open(&domains(&["example.org"])).unwrap().next_message().unwrap().is_none());
    drop(cursor);
    assert_eq!(read(&first), BSMTP_LF, "left without a verdict: back under its own name");

    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    cursor.set_outcome(0, Outcome::Delivered).unwrap();
    cursor.commit().unwrap();
    drop(cursor);
    let left: Vec<_> = fs::read_dir(spool.maildir("example.org").join("new")).unwrap().collect();
    assert!(left.is_empty(), "delivered: removed, claim and all: {left:?}");

    // A claim a dead front end left an hour and more ago.
    let stale = spool.put("example.org", "cur/.odmrd-claim.1000.front-c.77.2.M2P2.h:2,S", BSMTP_CRLF, 200);
    assert!(q.has_pending(&domains(&["example.org"])).unwrap());
    assert!(!stale.exists());
    assert_eq!(read(&spool.maildir("example.org").join("cur/2.M2P2.h:2,S")), BSMTP_CRLF);
}

/// A BSMTP file holding two messages run together, the first with a body of
/// about `body_size` bytes.
fn run_together(body_size: usize) -> Vec<u8> {
    let mut file = b"MAIL FROM:<a@s.example>\nRCPT TO:<u1@example.org>\nDATA\nSubject: 1\n\n".to_vec();
    for _ in 0..body_size / 100 {
        file.extend_from_slice(&[b'x'; 99]);
        file.push(b'\n');
    }
    file.extend_from_slice(b".\nMAIL FROM:<b@s.example>\nRCPT TO:<u2@example.org>\nDATA\nSubject: 2\n\n.\n");
    file
}

/// Read the current message's body until it fails.
fn read_until_error(cursor: &mut impl Cursor) -> Status {
    let mut buf = vec![0u8; 4096];
    loop {
        match cursor.read_body(&mut buf) {
            Ok(0) => panic!("the body ended without an error"),
            Ok(_) => {}
            Err(status) => return status,
        }
    }
}

#[test]
fn a_bsmtp_file_of_two_messages_run_together_is_quarantined_and_the_next_is_delivered() {
    // Read whole and streamed; under the seriallock and claimed.
    for (body_size, claims) in [(0, false), (300 * 1024, false), (0, true), (300 * 1024, true)] {
        let case = format!("body_size={body_size} claims={claims}");
        let spool = Spool::new();
        let content = run_together(body_size);
        let bad = spool.put("example.org", "new/1.M1P1.h", &content, 100);
        spool.put("example.org", "cur/2.M2P2.h:2,S", BSMTP_CRLF, 200);
        // A file quarantined earlier under the same name stays as it was.
        let quarantine = spool.maildir("example.org").join("odmrd-quarantine");
        fs::create_dir(&quarantine).unwrap();
        fs::write(quarantine.join("1.M1P1.h"), "earlier").unwrap();
        let host = TestHost::new();
        let extra: &[(&str, &str)] =
            if claims { &[("claim", "yes"), ("claim_host", "front-a")] } else { &[] };
        let q = Maildir::new(host.host(), &spool.config(extra)).unwrap();

        let mut cursor = q.open(&domains(&["example.org"])).unwrap();
        assert_eq!(cursor.next_message().unwrap().unwrap().id, "new/1.M1P1.h", "{case}");
        assert_eq!(read_until_error(&mut cursor), Status::TempFail, "{case}");
        assert!(!bad.exists(), "{case}: still queued");
        assert_eq!(read(&quarantine.join("1.M1P1.h.1")), content, "{case}: not moved unchanged");
        assert_eq!(read(&quarantine.join("1.M1P1.h")), b"earlier", "{case}: overwritten");
        let errors = host.logs_at(LogLevel::Error);
        let said = errors.iter().any(|line| {
            line.contains(
                "file=new/1.M1P1.h moved to odmrd-quarantine/1.M1P1.h.1: bytes after the terminating '.' line",
            ) && line.contains("move the parts back into new/")
        });
        assert!(said, "{case}: {errors:?}");
        drop(cursor);
        let new: Vec<_> = fs::read_dir(spool.maildir("example.org").join("new")).unwrap().collect();
        assert!(new.is_empty(), "{case}: a claim brought it back: {new:?}");

        // `--queue` lists the message after it, and nothing of the quarantine.
        let mut listed = Vec::new();
        q.list(&domains(&["example.org"]), &mut |entry| match entry {
            Listed::Message { envelope, .. } => listed.push(envelope.id.clone()),
            Listed::Unreadable { id, reason, .. } => listed.push(format!("unreadable {id}: {reason}")),
        })
        .unwrap();
        assert_eq!(listed, ["cur/2.M2P2.h:2,S"], "{case}");
        // The next session delivers it.
        let mut cursor = q.open(&domains(&["example.org"])).unwrap();
        let got = drain(&mut cursor);
        let ids: Vec<_> = got.iter().map(|(envelope, _)| envelope.id.as_str()).collect();
        assert_eq!(ids, ["cur/2.M2P2.h:2,S"], "{case}");
        assert_eq!(got[0].1, b"Subject: crlf\r\n\r\n.x\r\n");
    }
}

#[test]
fn a_read_failing_for_another_reason_leaves_the_file_in_place() {
    let spool = Spool::new();
    // Streamed (too large to be read whole), and cut short while it streams: the
    // read fails with the terminating line missing, as with an I/O error.
    let content = run_together(300 * 1024);
    let file = spool.put("example.org", "new/1.M1P1.h", &content, 100);
    let q = instance(&spool, &[]);
    let mut cursor = q.open(&domains(&["example.org"])).unwrap();
    cursor.next_message().unwrap().unwrap();
    fs::File::options().write(true).open(&file).unwrap().set_len(200 * 1024).unwrap();
    assert_eq!(read_until_error(&mut cursor), Status::TempFail);
    drop(cursor);
    assert_eq!(read(&file), content[..200 * 1024], "only two messages run together are moved aside");
    assert!(!spool.maildir("example.org").join("odmrd-quarantine").exists());
}
