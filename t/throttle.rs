//! Authentication throttling across connections (`[auth] address_*`): a
//! second connection from a guessing address waits its penalty and is then
//! refused with 421, while another address is served meanwhile, also when
//! every other place in `max_sessions` is taken; under inetd, successive
//! processes share the count through the state file under `lock_directory`.
//! Clients connect from several loopback addresses (127.0.0.0/8).

#[path = "support/mod.rs"]
mod support;

use std::path::PathBuf;
use std::time::Duration;
use support::odmrd::{start_inetd_from, Daemon, Provider, PASSWORD, USER};

/// The provider's configuration with `lines` added to `[auth]`.
fn config_with_auth(p: &Provider, lines: &str) -> PathBuf {
    let config = p.config();
    let text = std::fs::read_to_string(&config).unwrap().replace("[auth]\n", &format!("[auth]\n{lines}\n"));
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn a_guessing_address_waits_then_gets_421_while_another_address_is_served() {
    let mut p = Provider::new();
    // Two places in all: the guesser's two sessions would take both, were the
    // waiting one not set aside.
    p.extra_server = "max_sessions = 2\nmax_sessions_per_ip = 2".into();
    let config = config_with_auth(
        &p,
        "address_penalty = 5\naddress_max_penalty = 5\naddress_max_failures = 2\naddress_failure_window = 3600",
    );
    let daemon = Daemon::start(&config);
    let mut first = daemon.connect_from("127.0.0.2");
    first.hello();
    first.auth(USER, "guess-1", 535);

    // The same address's next attempt, on a new connection, waits its penalty...
    let mut second = daemon.connect_from("127.0.0.2");
    second.hello();
    second.send("AUTH CRAM-MD5");
    daemon.wait_for_log("client=127.0.0.2 decision=wait wait_ms=", Duration::from_secs(10));

    // ...without its place: a customer from another address is served meanwhile, at once.
    let mut customer = daemon.connect_from("127.0.0.3");
    customer.login(USER, PASSWORD);
    customer.command("ATRN example.org", 453);
    customer.command("QUIT", 221);

    // The second guess fails and reaches the cap: 421, for this session and the address.
    let challenge = second.expect(334);
    second.send(&support::odmrd::cram_md5_response(USER, "guess-2", &challenge));
    let text = second.expect(421);
    assert!(text.contains("Too many authentication failures from your address"), "{text}");
    second.expect_eof();
    let text = first.command("AUTH CRAM-MD5", 421);
    assert!(text.contains("from your address"), "{text}");
    let text = daemon.connect_from("127.0.0.2").expect(421);
    assert!(text.contains("Too many authentication failures from your address"), "{text}");

    // The other address still is not throttled.
    let mut again = daemon.connect_from("127.0.0.3");
    again.login(USER, PASSWORD);
    again.command("QUIT", 221);

    let (_, log) = daemon.stop();
    assert!(log.contains("client=127.0.0.2 decision=refuse reason=too-many-failures failures=2"), "{log}");
    assert!(log.contains("event=throttle client=127.0.0.2 stage=connect decision=refuse"), "{log}");
    assert!(!log.contains("event=throttle client=127.0.0.3"), "{log}");
    assert!(!log.contains("reason=too-many-sessions"), "{log}");
}

#[test]
fn inetd_processes_share_the_count_through_the_state_file() {
    let p = Provider::new();
    let config = config_with_auth(
        &p,
        "address_penalty = 3\naddress_max_penalty = 3\naddress_max_failures = 2\naddress_failure_window = 3600",
    );
    let state = p.path().join("locks/auth-throttle.state");

    let mut first = start_inetd_from(&config, "127.0.0.2");
    first.hello();
    first.auth(USER, "guess-1", 535);
    first.command("QUIT", 221);
    let (_, log) = first.finish();
    assert!(log.contains("result=failed"), "{log}");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.lines().any(|l| l.starts_with("127.0.0.2 ")), "{text}");

    // A second process: the penalty, then the cap.
    let mut second = start_inetd_from(&config, "127.0.0.2");
    second.hello();
    let challenge = second.command("AUTH CRAM-MD5", 334);
    second.send(&support::odmrd::cram_md5_response(USER, "guess-2", &challenge));
    second.expect(421);
    let (_, log) = second.finish();
    assert!(log.contains("event=throttle client=127.0.0.2 decision=wait wait_ms="), "{log}");
    assert!(
        log.contains("event=throttle client=127.0.0.2 decision=refuse reason=too-many-failures"),
        "{log}"
    );

    // A third is refused at connect, before any dialogue.
    let mut third = start_inetd_from(&config, "127.0.0.2");
    let text = third.expect(421);
    assert!(text.contains("from your address"), "{text}");
    third.expect_eof();
    let (_, log) = third.finish();
    assert!(log.contains("event=throttle client=127.0.0.2 stage=connect decision=refuse"), "{log}");

    // Another address is served without delay, and leaves no record.
    let mut customer = start_inetd_from(&config, "127.0.0.3");
    customer.login(USER, PASSWORD);
    customer.command("QUIT", 221);
    let (_, log) = customer.finish();
    assert!(!log.contains("event=throttle"), "{log}");
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(!text.contains("127.0.0.3"), "{text}");
    assert_eq!(text.lines().count(), 2, "{text}");
}
