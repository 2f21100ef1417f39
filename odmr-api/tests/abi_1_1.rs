//! What ABI 1.1 appended, driven through a kit plugin's raw C tables: the
//! envelope details reach a 1.1 host's sink and never a 1.0 host's, and the
//! `check`, `verify_password`, `list` and `set_outcome_reply` trampolines
//! carry their values both ways.

use odmr_api::ffi::*;
use odmr_api::testing::TestHost;
use odmr_api::*;
use std::ffi::c_void;
use std::sync::Mutex;
use std::time::{Duration, UNIX_EPOCH};

struct Detailed;

/// The replies `set_outcome_reply` received, across instances of the test.
static REPLIES: Mutex<Vec<(usize, Outcome, String)>> = Mutex::new(Vec::new());

fn envelope() -> Envelope {
    Envelope {
        id: "m1".into(),
        sender: "s@example.net".into(),
        size: 42,
        recipients: vec!["a@example.org".into(), "b@example.org".into()],
        arrival: Some(UNIX_EPOCH + Duration::from_secs(1_795_354_394)),
        envid: Some("env+id".into()),
        ret: Some(Ret::Full),
        smtputf8: true,
        eight_bit: Some(true),
        wire_size: Some(99),
        details: vec![RecipientDetails { notify: Notify::NEVER, orcpt: Some("rfc822;A@example.org".into()) }],
    }
}

impl Instance for Detailed {
    fn new(_: Host, _: &[(String, String)]) -> Result<Self, String> {
        Ok(Detailed)
    }
    fn check(&self, report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        report(LogLevel::Warn, "directory /x is empty");
        report(LogLevel::Error, "file /y unreadable");
        Ok(())
    }
}

impl Credentials for Detailed {
    fn lookup_secret(&self, _: &str) -> Result<Secret, Status> {
        Err(Status::Unsupported)
    }
    fn domains(&self, _: &str) -> Result<Vec<String>, Status> {
        Ok(vec![])
    }
    fn verify_password(&self, user: &str, password: &[u8]) -> Result<bool, Status> {
        match user {
            "alice" => Ok(password == b"secret"),
            _ => Err(Status::NotFound),
        }
    }
}

struct OneMessage(bool);

impl Cursor for OneMessage {
    fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
        Ok(std::mem::replace(&mut self.0, false).then(envelope))
    }
    fn read_body(&mut self, _: &mut [u8]) -> Result<usize, Status> {
        Ok(0)
    }
    fn set_outcome(&mut self, _: usize, _: Outcome) -> Result<(), Status> {
        Ok(())
    }
    fn set_outcome_reply(&mut self, index: usize, outcome: Outcome, reply: &str) -> Result<(), Status> {
        REPLIES.lock().unwrap().push((index, outcome, reply.to_string()));
        Ok(())
    }
    fn commit(&mut self) -> Result<(), Status> {
        Ok(())
    }
}

impl Queue for Detailed {
    type Cursor = OneMessage;
    const NEXT_BEFORE_COMMIT: bool = true;
    fn has_pending(&self, _: &[String]) -> Result<bool, Status> {
        Ok(true)
    }
    fn open(&self, _: &[String]) -> Result<OneMessage, Status> {
        Ok(OneMessage(true))
    }
    fn list(&self, domains: &[String], report: &mut dyn FnMut(Listed<'_>)) -> Result<(), Status> {
        let e = envelope();
        let last = ["451 4.2.2 mailbox full".to_string()];
        report(Listed::Message { domain: &domains[0], envelope: &e, last_replies: &last });
        report(Listed::Unreadable { domain: &domains[0], id: "new/bad", reason: "no MAIL FROM" });
        Ok(())
    }
}

export_plugin!(fn detailed_init, "detailed", Detailed: [credentials, queue]);

/// Everything a sink or callback received, as text lines.
#[derive(Default)]
struct Seen(Vec<String>);

fn seen<'a>(ctx: *mut c_void) -> &'a mut Seen {
    // SAFETY: every test passes a live `Seen` as the context.
    unsafe { &mut *ctx.cast::<Seen>() }
}
fn text(s: OdmrStr) -> String {
    // SAFETY: strings are borrowed for the callback.
    String::from_utf8(unsafe { s.as_bytes() }.to_vec()).unwrap()
}
unsafe extern "C" fn message(ctx: *mut c_void, id: OdmrStr, sender: OdmrStr, size: u64) {
    seen(ctx).0.push(format!("message {} {} {size}", text(id), text(sender)));
}
unsafe extern "C" fn recipient(ctx: *mut c_void, address: OdmrStr) {
    seen(ctx).0.push(format!("recipient {}", text(address)));
}
unsafe extern "C" fn message_details(
    ctx: *mut c_void,
    arrival: i64,
    envid: OdmrStr,
    ret: u32,
    flags: u32,
    wire_size: u64,
) {
    seen(ctx).0.push(format!("details {arrival} {} {ret} {flags} {wire_size}", text(envid)));
}
unsafe extern "C" fn recipient_details(ctx: *mut c_void, notify: u32, orcpt: OdmrStr) {
    seen(ctx).0.push(format!("rcpt-details {notify} {}", text(orcpt)));
}
unsafe extern "C" fn finding(ctx: *mut c_void, level: i32, msg: OdmrStr) {
    seen(ctx).0.push(format!("{level} {}", text(msg)));
}
unsafe extern "C" fn listed(
    ctx: *mut c_void,
    domain: OdmrStr,
    id: OdmrStr,
    sender: OdmrStr,
    size: u64,
    arrival: i64,
    flags: u32,
) {
    seen(ctx).0.push(format!(
        "listed {} {} {} {size} {arrival} {flags}",
        text(domain),
        text(id),
        text(sender)
    ));
}
unsafe extern "C" fn listed_rcpt(ctx: *mut c_void, address: OdmrStr, last: OdmrStr) {
    seen(ctx).0.push(format!("listed-rcpt {} {}", text(address), text(last)));
}
unsafe extern "C" fn unreadable(ctx: *mut c_void, domain: OdmrStr, id: OdmrStr, reason: OdmrStr) {
    seen(ctx).0.push(format!("unreadable {} {} {}", text(domain), text(id), text(reason)));
}

/// One `cursor_next` through a host of ABI `minor`: what its sink saw.
fn next_through_host_of_minor(minor: u32) -> Vec<String> {
    let mut host = TestHost::with_abi(1, minor);
    let d = host.load(detailed_init);
    let inst = host.instance(&[] as &[(&str, &str)]).unwrap();
    // SAFETY: the descriptor's tables are static; the instance is live.
    let ops = unsafe { &*d.queue };
    assert_eq!(ops.flags & ODMR_QF_NEXT_BEFORE_COMMIT, ODMR_QF_NEXT_BEFORE_COMMIT);
    let mut cur = std::ptr::null_mut();
    // SAFETY: as above; `cur` receives the cursor.
    assert_eq!(unsafe { ops.cursor_open.unwrap()(inst, std::ptr::null(), 0, &mut cur) }, ODMR_OK);
    let mut got = Seen::default();
    let sink = odmr_envelope_sink {
        ctx: (&mut got as *mut Seen).cast(),
        message,
        recipient,
        message_details: Some(message_details),
        recipient_details: Some(recipient_details),
    };
    // SAFETY: the cursor is open; the sink and `got` outlive the call.
    assert_eq!(unsafe { ops.cursor_next.unwrap()(cur, &sink) }, ODMR_OK);
    // SAFETY: the cursor is open; the reply is borrowed for the call.
    let rc = unsafe {
        ops.set_outcome_reply.unwrap()(cur, 1, ODMR_OUTCOME_TEMPFAIL, OdmrStr::from_bytes(b"452 4.2.2 full"))
    };
    assert_eq!(rc, ODMR_OK);
    // SAFETY: closed once, not used afterwards.
    unsafe { ops.cursor_close.unwrap()(cur) };
    got.0
}

#[test]
fn a_1_1_host_gets_the_details_and_a_1_0_host_never_sees_them() {
    let flags = ODMR_MSG_SMTPUTF8 | ODMR_MSG_8BIT;
    assert_eq!(
        next_through_host_of_minor(1),
        [
            "message m1 s@example.net 42".to_string(),
            format!("details 1795354394 env+id {ODMR_RET_FULL} {flags} 99"),
            "recipient a@example.org".into(),
            format!("rcpt-details {ODMR_NOTIFY_NEVER} rfc822;A@example.org"),
            "recipient b@example.org".into(),
        ]
    );
    // A 1.0 host's sink ends after `recipient`: the kit must not touch more.
    assert_eq!(
        next_through_host_of_minor(0),
        ["message m1 s@example.net 42", "recipient a@example.org", "recipient b@example.org"]
    );
    assert!(REPLIES.lock().unwrap().contains(&(1, Outcome::TempFail, "452 4.2.2 full".into())));
}

#[test]
fn check_verify_password_and_list_reach_the_backend() {
    let mut host = TestHost::new();
    let d = host.load(detailed_init);
    let inst = host.instance(&[] as &[(&str, &str)]).unwrap();

    let mut findings = Seen::default();
    // SAFETY: the instance is live; `findings` outlives the call.
    let rc = unsafe { d.check.unwrap()(inst, (&mut findings as *mut Seen).cast(), finding) };
    assert_eq!(rc, ODMR_OK);
    assert_eq!(
        findings.0,
        [format!("{ODMR_LOG_WARN} directory /x is empty"), format!("{ODMR_LOG_ERROR} file /y unreadable")]
    );

    // SAFETY: the descriptor's tables are static.
    let creds = unsafe { &*d.credentials };
    let verify = |user: &str, password: &str| {
        let (u, p) = (OdmrStr::from_bytes(user.as_bytes()), OdmrStr::from_bytes(password.as_bytes()));
        // SAFETY: the instance is live; the strings are borrowed for the call.
        unsafe { creds.verify_password.unwrap()(inst, u, p) }
    };
    assert_eq!(verify("alice", "secret"), ODMR_OK);
    assert_eq!(verify("alice", "guess"), ODMR_DENIED);
    assert_eq!(verify("bob", "secret"), ODMR_NOT_FOUND);

    let mut got = Seen::default();
    let sink = odmr_list_sink {
        struct_size: std::mem::size_of::<odmr_list_sink>() as u32,
        ctx: (&mut got as *mut Seen).cast(),
        message: listed,
        recipient: listed_rcpt,
        unreadable,
    };
    let domains = [OdmrStr::from_bytes(b"example.org")];
    // SAFETY: the instance is live; domains and sink outlive the call.
    let rc = unsafe { (*d.queue).list.unwrap()(inst, domains.as_ptr(), 1, &sink) };
    assert_eq!(rc, ODMR_OK);
    let flags = ODMR_MSG_SMTPUTF8 | ODMR_MSG_8BIT;
    assert_eq!(
        got.0,
        [
            format!("listed example.org m1 s@example.net 42 1795354394 {flags}"),
            "listed-rcpt a@example.org 451 4.2.2 mailbox full".into(),
            "listed-rcpt b@example.org ".into(),
            "unreadable example.org new/bad no MAIL FROM".into(),
        ]
    );
    // SAFETY: created by this descriptor's instance_new, freed once.
    unsafe { d.instance_free.unwrap()(inst) };
}

#[test]
fn odmrds_host_code_gets_back_what_the_backend_described() {
    let mut host = TestHost::new();
    host.load(detailed_init);
    let queue = host.queue(&[] as &[(&str, &str)]).unwrap();
    assert!(queue.next_before_commit());
    let mut cursor = queue.open(&["example.org".to_string()]).unwrap();
    assert_eq!(cursor.next_message(), Ok(Some(envelope())));
    assert_eq!(cursor.set_outcome_with_reply(0, Outcome::PermFail, "550 no"), Ok(()));
    drop(cursor);

    let mut listed = Vec::new();
    let mut report = |entry: Listed<'_>| listed.push(format!("{entry:?}"));
    queue.list(&["example.org".to_string()], &mut report).unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed[0].contains("last_replies: [\"451 4.2.2 mailbox full\", \"\"]"), "{listed:?}");
    assert!(listed[1].starts_with("Unreadable { domain: \"example.org\", id: \"new/bad\""), "{listed:?}");

    // An older host's plugin answers the same calls without the details.
    let mut old = TestHost::with_abi(1, 0);
    old.load(detailed_init);
    let mut cursor = old.queue(&[] as &[(&str, &str)]).unwrap().open(&[]).unwrap();
    let bare = Envelope {
        details: vec![],
        arrival: None,
        envid: None,
        ret: None,
        smtputf8: false,
        eight_bit: None,
        wire_size: None,
        ..envelope()
    };
    assert_eq!(cursor.next_message(), Ok(Some(bare)));
}

#[test]
fn a_raw_outcome_the_abi_does_not_define_is_refused() {
    let mut host = TestHost::new();
    let d = host.load(detailed_init);
    let inst = host.instance(&[] as &[(&str, &str)]).unwrap();
    // SAFETY: the descriptor's tables are static; the instance is live.
    let ops = unsafe { &*d.queue };
    let mut cur = std::ptr::null_mut();
    // SAFETY: as above; `cur` receives the cursor.
    assert_eq!(unsafe { ops.cursor_open.unwrap()(inst, std::ptr::null(), 0, &mut cur) }, ODMR_OK);
    // SAFETY: the cursor is open.
    assert_eq!(unsafe { ops.set_outcome.unwrap()(cur, 0, 99) }, ODMR_INVALID_ARGUMENT);
    // SAFETY: closed once.
    unsafe { ops.cursor_close.unwrap()(cur) };
}
