//! Limits in time and in descriptors, against a standalone odmrd: a command
//! line trickled byte by byte, or a whole dialogue that never ends, gets 421
//! (deadlines, not per-byte timeouts); SIGTERM ends within `shutdown_grace`
//! and leaves the message being delivered queued; a burst of a thousand
//! customers is greeted; out of file descriptors, excess clients still get
//! 421 and the log gets one line, not one per attempt.

#[path = "support/mod.rs"]
mod support;

use nix::sys::signal::Signal;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use support::odmrd::{connect_from, odmrd_command, Daemon, Provider, EHLO_NAME, PASSWORD, USER};

/// A connection to odmrd whose writer runs on its own thread and may fail
/// once odmrd has closed (these tests expect odmrd to close while they are
/// still sending).
struct Sender {
    reader: BufReader<TcpStream>,
    writer: Option<JoinHandle<()>>,
}

impl Sender {
    /// Connect, expect the 220, then send `bytes` one chunk every `gap` until
    /// done or refused.
    fn start(daemon: &Daemon, chunks: Vec<Vec<u8>>, gap: Duration) -> Sender {
        let stream = connect_from("127.0.0.1", daemon.port());
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let greeting = line(&mut reader);
        assert!(greeting.starts_with("220 "), "{greeting:?}");
        let writer = std::thread::spawn(move || {
            for chunk in chunks {
                if writer.write_all(&chunk).is_err() {
                    return;
                }
                std::thread::sleep(gap);
            }
        });
        Sender { reader, writer: Some(writer) }
    }

    /// The next line from odmrd; "" at the end of the connection.
    fn line(&mut self) -> String {
        line(&mut self.reader)
    }

    /// Past the `250 OK` replies to NOOPs: a 421 with `text`, not before
    /// `limit` after `since` (nor long after), and the end of the connection.
    fn expect_421_after(&mut self, since: Instant, limit: Duration, text: &str) {
        let reply = loop {
            let reply = self.line();
            if reply != "250 OK\r\n" {
                break reply;
            }
        };
        let waited = since.elapsed();
        assert!(reply.starts_with("421 ") && reply.contains(text), "{reply:?}");
        assert!(waited >= limit && waited < limit + Duration::from_secs(13), "421 after {waited:?}");
        assert_eq!(self.line(), "");
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        let _ = self.reader.get_ref().shutdown(std::net::Shutdown::Both);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// One line; "" at the end of the connection (or on a reset after it).
fn line(reader: &mut impl BufRead) -> String {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(_) => line,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => String::new(),
        Err(e) => panic!("reading from odmrd: {e}"),
    }
}

#[test]
fn a_line_trickled_byte_by_byte_gets_421_within_idle_timeout_of_its_first_byte() {
    let mut p = Provider::new();
    p.extra_server = "idle_timeout = 2".into();
    let daemon = p.start_daemon();
    // One byte every half second: each pause well inside idle_timeout, the
    // whole line (a minute) far beyond it.
    let bytes = format!("NOOP {}", "x".repeat(115)).into_bytes();
    let first_byte = Instant::now();
    let mut c =
        Sender::start(&daemon, bytes.chunks(1).map(<[u8]>::to_vec).collect(), Duration::from_millis(500));
    c.expect_421_after(first_byte, Duration::from_secs(2), "idle timeout");
    daemon.wait_for_log("event=timeout result=421 reason=idle-timeout", Duration::from_secs(10));
}

#[test]
fn session_timeout_ends_even_a_busy_dialogue_with_421() {
    let mut p = Provider::new();
    p.extra_server = "idle_timeout = 60\nsession_timeout = 2".into();
    let daemon = p.start_daemon();
    let started = Instant::now();
    // Never idle: a NOOP every 200 ms for a minute.
    let mut c = Sender::start(&daemon, vec![b"NOOP\r\n".to_vec(); 300], Duration::from_millis(200));
    c.expect_421_after(started, Duration::from_secs(2), "session time limit");
    daemon.wait_for_log("event=timeout result=421 reason=session-timeout", Duration::from_secs(10));
}

#[test]
fn sigterm_closes_a_stalled_session_after_shutdown_grace() {
    let mut p = Provider::new();
    p.extra_server = "shutdown_grace = 1".into();
    let daemon = p.start_daemon();
    let mut stalled = daemon.connect();
    stalled.login(USER, PASSWORD);
    let signalled = Instant::now();
    daemon.signal(Signal::SIGTERM);
    daemon.wait_for_log("event=shutdown-grace-over closed=1", Duration::from_secs(20));
    stalled.expect_eof();
    let (status, log) = daemon.wait(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("event=stopped"), "{log}");
    assert!(signalled.elapsed() < Duration::from_secs(15), "stopping took {:?}", signalled.elapsed());
}

#[test]
fn sigterm_after_the_grace_leaves_the_message_being_delivered_queued() {
    let mut p = Provider::new();
    p.extra_server = "shutdown_grace = 1".into();
    let content = support::bsmtp("a@s.example", &["x@example.org"], b"Subject: held\n\nbody\n");
    p.queue("example.org", "1.m", std::str::from_utf8(&content).unwrap());
    let daemon = p.start_daemon();
    let mut c = daemon.connect();
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, &["PIPELINING"]);
    // The whole message, then the customer stalls before its verdict.
    let (_, _, data) = c.receive_data(&[]);
    assert!(data.contains("Subject: held"), "{data:?}");
    daemon.signal(Signal::SIGTERM);
    let (status, log) = daemon.wait(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{log}");
    assert!(log.contains("event=shutdown-grace-over closed=1"), "{log}");
    assert!(!log.contains("status=sent"), "{log}");
    let queued: Vec<Vec<u8>> = p.queued("example.org").into_iter().map(String::into_bytes).collect();
    assert_eq!(queued, [content]);
    c.expect_eof();
}

/// Let this test process hold `wanted` descriptors (the soft limit is often 1024).
fn allow_descriptors(wanted: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < wanted {
        assert!(hard >= wanted, "this test needs {wanted} open files; the hard limit is {hard}");
        setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).unwrap();
    }
}

#[test]
fn a_thousand_customers_at_once_all_get_their_greeting() {
    const CUSTOMERS: usize = 1000;
    allow_descriptors(CUSTOMERS as u64 + 200);
    let mut p = Provider::new();
    p.extra_server = format!("max_sessions = {CUSTOMERS}\nmax_sessions_per_ip = {CUSTOMERS}");
    let daemon = p.start_daemon();
    // Hold odmrd still while they connect, so that all of them wait in the
    // accept queue at once (fetchmail from cron at the top of the hour).
    daemon.signal(Signal::SIGSTOP);
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], daemon.port()));
    let customers: Vec<TcpStream> = (0..CUSTOMERS)
        .map(|i| {
            TcpStream::connect_timeout(&address, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("customer {i} could not connect: {e}"))
        })
        .collect();
    daemon.signal(Signal::SIGCONT);
    let started = Instant::now();
    for (i, customer) in customers.iter().enumerate() {
        customer.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let greeting = line(&mut BufReader::new(customer));
        assert!(greeting.starts_with("220 "), "customer {i} got {greeting:?}");
    }
    println!("{CUSTOMERS} greetings {:?} after resuming odmrd", started.elapsed());
}

#[test]
fn out_of_descriptors_excess_clients_get_421_and_the_log_gets_one_line() {
    const CLIENTS: usize = 40;
    let mut p = Provider::new();
    p.extra_server = format!("max_sessions = {CLIENTS}\nmax_sessions_per_ip = {CLIENTS}");
    let config = p.config();
    // Room for odmrd's own descriptors and about ten sessions.
    let daemon = Daemon::start_command(|| {
        let odmrd = odmrd_command(&config);
        let mut limited = Command::new("prlimit");
        limited.arg("--nofile=20:20").arg(odmrd.get_program()).args(odmrd.get_args());
        limited
    });
    let mut served = Vec::new();
    let mut refused = 0;
    for i in 0..CLIENTS {
        let client = connect_from("127.0.0.1", daemon.port());
        client.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let first = line(&mut BufReader::new(&client));
        if first.starts_with("220 ") {
            served.push(client);
        } else {
            assert!(first.starts_with("421 ") && first.contains("out of resources"), "client {i}: {first:?}");
            refused += 1;
        }
    }
    assert!(!served.is_empty() && refused > 0, "served {}, refused {refused}", served.len());
    let log = daemon.log();
    assert_eq!(log.matches("event=out-of-descriptors").count(), 1, "{log}");

    // With descriptors free again, clients are served again.
    drop(served);
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            let mut again = daemon.connect();
            again.reply()[0].starts_with("220 ")
        }),
        "{}",
        daemon.log()
    );
}
