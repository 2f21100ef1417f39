//! Standalone mode and inetd mode on a real TCP socket: session limits, the
//! allow list by client address, graceful SIGTERM/SIGINT, and the peer
//! address taken from fd 0 under inetd. Clients connect from several loopback
//! addresses (127.0.0.0/8) to tell them apart.

#[path = "support/mod.rs"]
mod support;

use nix::sys::signal::Signal;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::odmrd::{
    check_config, connect_from, odmrd_command, spawn_inetd_on, start_inetd, Daemon, Provider, PASSWORD, USER,
};

#[test]
fn sessions_beyond_the_limits_get_421() {
    let mut p = Provider::new();
    p.extra_server = "max_sessions = 2\nmax_sessions_per_ip = 1".into();
    let daemon = Daemon::start(&p.config());
    let mut first = daemon.connect_from("127.0.0.1");
    first.expect(220);
    let text = daemon.connect_from("127.0.0.1").expect(421);
    assert!(text.contains("from your address"), "{text}");
    let mut second = daemon.connect_from("127.0.0.2");
    second.expect(220);
    let text = daemon.connect_from("127.0.0.3").expect(421);
    assert!(text.contains("too many sessions"), "{text}");

    // A finished session frees its place.
    first.command("QUIT", 221);
    drop(first);
    daemon.wait_for_log("end=normal", Duration::from_secs(10));
    support::wait_until(Duration::from_secs(5), || {
        let mut c = daemon.connect_from("127.0.0.1");
        let ok = c.reply()[0].starts_with("220 ");
        if ok {
            c.command("QUIT", 221);
        }
        ok
    });
    second.command("NOOP", 250);
}

#[test]
fn clients_outside_allow_get_554_and_others_are_served() {
    let mut p = Provider::new();
    p.extra_server = "allow = 127.0.0.2/32, 192.0.2.0/24".into();
    let daemon = Daemon::start(&p.config());
    let mut outsider = daemon.connect_from("127.0.0.1");
    outsider.expect(554);
    outsider.expect_eof();
    let mut insider = daemon.connect_from("127.0.0.2");
    insider.login(USER, PASSWORD);
    insider.command("QUIT", 221);
    daemon.wait_for_log("client=127.0.0.1 result=554 reason=not-in-allow-list", Duration::from_secs(5));
}

fn graceful_stop(signal: Signal) {
    let p = Provider::new();
    let daemon = Daemon::start(&p.config());
    let mut running = daemon.connect();
    running.login(USER, PASSWORD);
    daemon.signal(signal);
    daemon.wait_for_log("event=shutdown", Duration::from_secs(10));
    // No longer accepting...
    assert!(std::net::TcpStream::connect(("127.0.0.1", daemon.port())).is_err());
    // ...but the running session is served to its end.
    running.command("NOOP", 250);
    running.command("ATRN example.org", 453);
    running.command("QUIT", 221);
    let (status, log) = daemon.wait(Duration::from_secs(10));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("event=stopped"), "{log}");
}

#[test]
fn sigterm_stops_accepting_and_lets_sessions_finish() {
    graceful_stop(Signal::SIGTERM);
}

#[test]
fn sigint_stops_accepting_and_lets_sessions_finish() {
    graceful_stop(Signal::SIGINT);
}

#[test]
fn inetd_mode_takes_the_peer_address_from_a_socket_on_fd_0() {
    let mut p = Provider::new();
    p.extra_server = "allow = 127.0.0.2".into();
    let config = p.config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    for (source, code) in [("127.0.0.1", 554), ("127.0.0.2", 220)] {
        let client = connect_from(source, port);
        let (accepted, _) = listener.accept().unwrap();
        let child = spawn_inetd_on(odmrd_command(&config), accepted);
        client.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut reply = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&client), &mut reply).unwrap();
        assert!(reply.starts_with(&format!("{code} ")), "{source}: {reply}");
        drop(client);
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(log.contains(&format!("client={source}")), "{log}");
    }
}

#[test]
fn a_configuration_error_names_file_line_and_key_and_exits_78() {
    let p = Provider::new();
    let config = p.config();
    let text = std::fs::read_to_string(&config).unwrap().replace("[auth]\n", "[auth]\nmax_failurez = 3\n");
    std::fs::write(&config, text).unwrap();
    let out = check_config(&config);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = std::fs::read_to_string(&config)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("max_failurez"))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("{}:{line}:", config.display())), "{err}");
    assert!(err.contains("max_failurez"), "{err}");

    // Under inetd the client learns with a 421 before odmrd exits.
    let mut c = start_inetd(&config);
    c.expect(421);
    let (status, log) = c.finish();
    assert_eq!(status.code(), Some(78), "{log}");

    let ok = check_config(&p.config());
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
}

#[test]
fn the_cram_md5_subcommand_matches_doveadm() {
    use std::io::Write;
    for password in
        ["S3cret-odmr", "a much longer password that is certainly more than sixty-four bytes long!!"]
    {
        let mut child = Command::new(env!("CARGO_BIN_EXE_odmrd"))
            .arg("--cram-md5")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), support::doveadm_cram_md5(password));
    }
}
