//! The exported `maildir_plugin_init` driven through the raw C tables, as
//! odmrd's built-in registry and a C host would: proves the export, the
//! queue table, and that skipped files are reported through the host's log.

mod common;

use common::*;
use odmr_api::ffi::*;
use odmr_api::testing::{describe, TestHost};
use odmr_backend_maildir::maildir_plugin_init;
use std::ffi::c_void;
use std::ptr;

/// A test host with the maildir plugin loaded.
fn host() -> (TestHost, &'static odmr_plugin) {
    let mut host = TestHost::new();
    let d = host.load(maildir_plugin_init);
    (host, d)
}

#[derive(Default)]
struct Seen {
    id: String,
    sender: String,
    size: u64,
    recipients: Vec<String>,
}

unsafe extern "C" fn on_message(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64) {
    let seen = unsafe { &mut *ctx.cast::<Seen>() };
    seen.id = unsafe { id.as_str() }.unwrap().to_owned();
    seen.sender = unsafe { sender.as_str() }.unwrap().to_owned();
    seen.size = size;
    seen.recipients.clear();
}

unsafe extern "C" fn on_recipient(ctx: *mut c_void, address: OdmrStr) {
    let seen = unsafe { &mut *ctx.cast::<Seen>() };
    seen.recipients.push(unsafe { address.as_str() }.unwrap().to_owned());
}

#[test]
fn descriptor_serves_only_a_queue() {
    let (_host, d) = host();
    assert_eq!(describe(d), ("maildir".to_string(), false, true, true));
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
    let (host, d) = host();
    let ops = unsafe { &*d.queue };
    let inst = host.instance(&spool.config(&[])).unwrap();
    let names = [b"example.org".as_slice()];
    let doms: Vec<OdmrStr> = names.iter().map(|n| OdmrStr::from_bytes(n)).collect();

    let mut pending = 7u32;
    assert_eq!(unsafe { (ops.has_pending.unwrap())(inst, doms.as_ptr(), doms.len(), &mut pending) }, ODMR_OK);
    assert_eq!(pending, 1);

    let mut cur = ptr::null_mut();
    assert_eq!(unsafe { (ops.cursor_open.unwrap())(inst, doms.as_ptr(), doms.len(), &mut cur) }, ODMR_OK);
    let mut seen = Seen::default();
    let sink = odmr_envelope_sink {
        ctx: (&mut seen as *mut Seen).cast(),
        message: on_message,
        recipient: on_recipient,
        message_details: None,
        recipient_details: None,
    };
    assert_eq!(unsafe { (ops.cursor_next.unwrap())(cur, &sink) }, ODMR_OK);
    assert_eq!((seen.id.as_str(), seen.sender.as_str()), ("new/1good", "s@sender.example"));
    assert_eq!(seen.recipients, ["a@example.org"]);
    assert!(seen.size > 0);

    let mut body = Vec::new();
    let mut buf = [0u8; 2];
    loop {
        let mut n = 0usize;
        let rc = unsafe { (ops.read_body.unwrap())(cur, buf.as_mut_ptr(), buf.len(), &mut n) };
        if rc == ODMR_END {
            break;
        }
        assert_eq!(rc, ODMR_OK);
        body.extend_from_slice(&buf[..n]);
    }
    assert_eq!(body, b".hi\n");
    assert_eq!(unsafe { (ops.set_outcome.unwrap())(cur, 0, 99) }, ODMR_INVALID_ARGUMENT);
    assert_eq!(unsafe { (ops.set_outcome.unwrap())(cur, 5, ODMR_OUTCOME_DELIVERED) }, ODMR_INVALID_ARGUMENT);
    assert_eq!(unsafe { (ops.set_outcome.unwrap())(cur, 0, ODMR_OUTCOME_DELIVERED) }, ODMR_OK);
    assert_eq!(unsafe { (ops.commit.unwrap())(cur) }, ODMR_OK);
    assert_eq!(unsafe { (ops.cursor_next.unwrap())(cur, &sink) }, ODMR_END);
    unsafe { (ops.cursor_close.unwrap())(cur) };

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
    let evil = [OdmrStr::from_bytes(b"../etc")];
    assert_eq!(
        unsafe { (ops.has_pending.unwrap())(inst, evil.as_ptr(), 1, &mut pending) },
        ODMR_INVALID_ARGUMENT
    );
    unsafe { (d.instance_free.unwrap())(inst) };
}
