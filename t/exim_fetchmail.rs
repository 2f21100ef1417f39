//! End to end with real peers on both sides: Exim 4.96 holds the provider's mail in its spool,
//! odmrd (standalone, as the Exim user) serves that spool with `builtin:exim`, the real
//! fetchmail collects it with `protocol odmr` and relays it to the customer's own Exim
//! (`support::CustomerMta`), which stores it in a maildir.
//!
//! Depends on `t/support/mod.rs` (CustomerMta, Fetchmail) and on t/exim_common.rs.

#[path = "exim_common.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use common::{set, Provider, RunAs, PASSWORD, USER};
use std::collections::BTreeMap;
use std::time::Duration;
use support::odmrd::Daemon;

#[test]
fn fetchmail_collects_from_odmrd_serving_exims_spool() {
    let p = Provider::new(false);
    let mixed = p.queue(
        "alice@sender.example",
        &["a@example.org", "B@Example.ORG", "v@example.org.uk", "z@other.example"],
        "mixed",
        "first line\n.leading dot\nlast line\n",
    );
    let plain = p.queue("bob@sender.example", &["c@example.org"], "plain", "hello\n");
    let not_asked = p.queue("carol@sender.example", &["d@example.net"], "not asked", "later\n");

    let mta = support::CustomerMta::start();
    let odmrd = Daemon::start_command(|| p.odmrd_command(RunAs::EximUser));
    let run = support::Fetchmail::new(odmrd.port())
        .user(USER, PASSWORD)
        .domains(&["example.org"])
        .smtp_port(mta.port())
        .run();
    assert_eq!(run.code, Some(0), "{}", run.report());

    let messages = mta.wait_for(2, Duration::from_secs(20));
    assert_eq!(messages.len(), 2, "{}", mta.diagnostics());
    let mut got: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for m in &messages {
        let subject = support::header(m, "Subject").unwrap();
        got.insert(subject, support::envelope_of(m));
    }
    assert_eq!(
        got["mixed"],
        ("alice@sender.example".into(), vec!["a@example.org".into(), "B@Example.ORG".into()])
    );
    assert_eq!(got["plain"], ("bob@sender.example".into(), vec!["c@example.org".into()]));
    let mixed_message =
        messages.iter().find(|m| support::header(m, "Subject").as_deref() == Some("mixed")).unwrap();
    assert_eq!(support::body_of(mixed_message), b"first line\n.leading dot\nlast line\n");

    // Exim's queue: only what was not collected, and a queue run changes nothing.
    let expected: BTreeMap<_, _> = [
        (mixed.clone(), set(&["v@example.org.uk", "z@other.example"])),
        (not_asked.clone(), set(&["d@example.net"])),
    ]
    .into();
    assert_eq!(p.pending(&[]), expected);
    assert!(p.spool_file(&plain, "-H").is_none());
    p.exim(&["-qff"]);
    assert_eq!(p.pending(&[]), expected);
    assert!(p.journals().is_empty(), "{}", p.exim_logs());

    // A second collection has nothing for example.org: fetchmail gets 453 and exits 0.
    let again = support::Fetchmail::new(odmrd.port())
        .user(USER, PASSWORD)
        .domains(&["example.org"])
        .smtp_port(mta.port())
        .run();
    assert_eq!(again.code, Some(0), "{}", again.report());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(mta.messages().len(), 2, "nothing may arrive twice");
}
