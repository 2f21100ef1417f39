//! The exported `maildir_plugin_init` driven through its C tables by odmrd's
//! own host code (`odmr_api::host`), as odmrd's built-in registry does:
//! proves the export, the queue table, and that skipped files are reported
//! through the host's log.

mod common;

use common::*;
use odmr_api::ffi::*;
use odmr_api::testing::{describe, TestHost};
use odmr_api::{Outcome, Status};
use odmr_backend_maildir::maildir_plugin_init;

/// A test host with the maildir plugin loaded.
fn host() -> (TestHost, &'static odmr_plugin) {
    let mut host = TestHost::new();
    let d = host.load(maildir_plugin_init);
    (host, d)
}

#[test]
fn descriptor_serves_only_a_queue() {
    let (_host, d) = host();
    assert_eq!(describe(d), ("maildir".to_string(), false, true, true));
    // SAFETY: non-null per `describe`; the kit's tables are static.
    let ops = unsafe { &*d.queue };
    assert_eq!(ops.struct_size as usize, std::mem::size_of::<odmr_queue_ops>());
}

#[test]
fn instance_new_names_the_bad_key() {
    let (host, _) = host();
    let err = host.instance(&[("directory", "/spool/{domain}"), ("lifetime", "14d")]).unwrap_err();
    assert!(err.contains("'lifetime'"), "{err}");
}

#[test]
fn a_whole_collection_through_the_c_tables() {
    let spool = Spool::new();
    let bad = spool.put("example.org", "new/0bad", b"not an envelope\n", 1);
    let msg = spool.put(
        "example.org",
        "new/1good",
        b"MAIL FROM:<s@sender.example>\nRCPT TO:<a@example.org>\nRCPT TO:<b@example.net>\nDATA\n..hi\n.\n",
        2,
    );
    let (host, _) = host();
    let queue = host.queue(&spool.config(&[])).unwrap();
    let domains = ["example.org".to_string()];
    assert_eq!(queue.has_pending(&domains), Ok(true));

    let mut cursor = queue.open(&domains).unwrap();
    let envelope = cursor.next_message().unwrap().unwrap();
    assert_eq!((envelope.id.as_str(), envelope.sender.as_str()), ("new/1good", "s@sender.example"));
    assert_eq!(envelope.recipients, ["a@example.org"]);
    assert!(envelope.size > 0);

    let mut body = Vec::new();
    let mut buf = [0u8; 2];
    loop {
        let n = cursor.read_body(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body, b".hi\n");
    assert_eq!(cursor.set_outcome(5, Outcome::Delivered), Err(Status::InvalidArgument));
    assert_eq!(cursor.set_outcome(0, Outcome::Delivered), Ok(()));
    assert_eq!(cursor.commit(), Ok(()));
    assert_eq!(cursor.next_message(), Ok(None));
    drop(cursor);

    // The example.net recipient stays, alone.
    assert_eq!(read(&msg), b"MAIL FROM:<s@sender.example>\nRCPT TO:<b@example.net>\nDATA\n..hi\n.\n");
    assert_eq!(read(&bad), b"not an envelope\n");
    let lines = host.logs();
    assert!(
        lines.iter().any(|(level, l)| *level == ODMR_LOG_WARN && l.contains("skipped file=new/0bad")),
        "no warning for the malformed file: {lines:?}"
    );
    assert!(lines.iter().any(|(_, l)| l.contains("file=new/1good rewritten")), "{lines:?}");

    // A bad domain is refused through the table too.
    assert_eq!(queue.has_pending(&["../etc".to_string()]), Err(Status::InvalidArgument));
}
