//! Benchmarks where customers actually are, printing figures (not a test):
//!
//! ```sh
//! cargo build --release -p odmrd --bin odmrd --example bench_customers
//! target/release/examples/bench_customers --base /tmp/odmrd-base/target/release/odmrd
//! ```
//!
//! Each workload runs against two odmrd binaries in the same run, `--base` (a
//! build of an earlier commit; optional) and `--new` (default: the `odmrd`
//! next to this example), and prints one table with the ratio new/base:
//!
//! - `fetchmail`: the real fetchmail collects N messages over TCP and relays
//!   them to a fast local MTA (this program); a packet capture of both
//!   connections (tcpdump on loopback) counts the stalls, gaps of more than
//!   30 ms in which nothing moved, by the connection that ended them;
//! - `direct`: a direct customer on a socketpair, 500 messages, and the
//!   ratio to the durable floor (read, unlink, one directory fsync per file);
//! - `rtt`: this program as a customer behind a user-space relay that delays
//!   every chunk by half the round trip each way (this kernel has no netem):
//!   round trips per message;
//! - `bsmtp`: one 100 MB BSMTP message: MB/s, the time from ATRN to its 250,
//!   and odmrd's peak RSS;
//! - `inetd` / `standalone`: complete sessions that end in 453 (nothing
//!   queued) per second, one process per connection as inetd runs it, and
//!   against the daemon.
//!
//! Options: `--messages N` (default 200), `--rtt MS` (default 50), `--only NAME`.

mod support;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use support::{
    login_and_atrn, peak_rss_kib, queue, serve_smtp, write_config, Delivered, DOMAIN, PASSWORD, USER,
};

struct Options {
    binaries: Vec<(&'static str, PathBuf)>,
    messages: usize,
    rtt: Duration,
    only: Option<String>,
    /// The provider's address (odmrd listens there); the MTA is always on 127.0.0.1.
    host: String,
    /// Runs per workload and binary; the table shows medians.
    rounds: usize,
}

fn options() -> Options {
    let own = std::env::current_exe().unwrap();
    let mut new = own.parent().unwrap().parent().unwrap().join("odmrd");
    let mut base = None;
    let (mut messages, mut rtt, mut only) = (200, Duration::from_millis(50), None);
    let mut host = "127.0.0.1".to_string();
    let mut rounds = 3;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--base" => base = Some(PathBuf::from(value())),
            "--new" => new = PathBuf::from(value()),
            "--messages" => messages = value().parse().expect("--messages N"),
            "--rtt" => rtt = Duration::from_millis(value().parse().expect("--rtt MS")),
            "--only" => only = Some(value()),
            "--host" => host = value(),
            "--rounds" => rounds = value().parse().expect("--rounds N"),
            other => panic!("unknown option {other}"),
        }
    }
    let mut binaries = Vec::new();
    if let Some(base) = base {
        binaries.push(("base", base));
    }
    binaries.push(("new", new));
    Options { binaries, messages, rtt, only, host, rounds }
}

/// `odmrd -c ini --listen 127.0.0.1:PORT`, its stderr to `dir/odmrd.log`, once it accepts.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(binary: &Path, dir: &Path) -> Daemon {
        Daemon::start_on(binary, dir, "127.0.0.1")
    }

    fn start_on(binary: &Path, dir: &Path, host: &str) -> Daemon {
        let port = TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.join("odmrd.log")).unwrap();
        let child = Command::new(binary)
            .arg("-c")
            .arg(dir.join("odmrd.ini"))
            .args(["--listen", &format!("{host}:{port}")])
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect((host, port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "odmrd did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Daemon { child, port }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fast MTA on a free port, accepting connections until dropped; counts what it got.
struct Sink {
    port: u16,
    delivered: Arc<Mutex<Delivered>>,
}

impl Sink {
    fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let delivered = Arc::new(Mutex::new(Delivered::default()));
        let total = delivered.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let total = total.clone();
                std::thread::spawn(move || {
                    let out = stream.try_clone().unwrap();
                    let got = serve_smtp(&mut BufReader::new(stream), out, || {});
                    let mut total = total.lock().unwrap();
                    total.messages += got.messages;
                    total.bytes += got.bytes;
                });
            }
        });
        Sink { port, delivered }
    }
}

/// A packet capture of loopback traffic on some ports, stopped and read by [`Capture::stalls`].
struct Capture {
    child: Child,
    file: PathBuf,
}

/// Stalls found in a capture: gaps over 30 ms, by the port whose connection ended them.
#[derive(Debug, Default)]
struct Stalls {
    /// Ended by a packet of the connection on the first port (odmrd's).
    first: usize,
    /// Ended by a packet on the other port (the MTA's).
    other: usize,
}

const STALL: f64 = 0.030;

impl Capture {
    fn start(dir: &Path, ports: &[u16]) -> Option<Capture> {
        if !Path::new("/usr/bin/tcpdump").exists() && !Path::new("/usr/sbin/tcpdump").exists() {
            eprintln!("tcpdump is missing: no packet timeline (apt-get install tcpdump)");
            return None;
        }
        let file = dir.join("capture.pcap");
        let filter = ports.iter().map(|p| format!("tcp port {p}")).collect::<Vec<_>>().join(" or ");
        let mut child = Command::new("tcpdump")
            .args(["-i", "lo", "-n", "-U", "-s", "128", "-w"])
            .arg(&file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        // It says "listening on lo" once the capture runs.
        let mut line = String::new();
        BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).ok()?;
        Some(Capture { child, file })
    }

    fn stalls(mut self, first_port: u16) -> Stalls {
        std::thread::sleep(Duration::from_millis(200));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let _ = self.child.wait();
        let text = Command::new("tcpdump").args(["-r"]).arg(&self.file).args(["-n", "-tt"]).output().unwrap();
        let mut stalls = Stalls::default();
        let mut last: Option<f64> = None;
        for line in String::from_utf8_lossy(&text.stdout).lines() {
            // 1732631234.123456 IP 127.0.0.1.40000 > 127.0.0.1.2525: Flags [P.], ...
            let mut words = line.split_whitespace();
            let Some(time) = words.next().and_then(|t| t.parse::<f64>().ok()) else { continue };
            let ports: Vec<u16> = words
                .skip(1)
                .take(3)
                .filter_map(|a| a.trim_end_matches(':').rsplit('.').next()?.parse().ok())
                .collect();
            if let Some(last) = last.filter(|&last| time - last > STALL) {
                let _ = last;
                if ports.contains(&first_port) {
                    stalls.first += 1;
                } else {
                    stalls.other += 1;
                }
            }
            last = Some(time);
        }
        stalls
    }
}

/// The figures of one run: name, value, whether more is better.
type Figures = Vec<(&'static str, f64, bool)>;

/// Run `workload` `rounds` times on every binary (alternating, so a load change hits both),
/// and keep each figure's median per binary.
fn medians(options: &Options, mut workload: impl FnMut(&Path) -> Figures) -> Vec<Figures> {
    let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); options.binaries.len()];
    for _ in 0..options.rounds {
        for (i, (_, binary)) in options.binaries.iter().enumerate() {
            runs[i].push(workload(binary));
        }
    }
    runs.into_iter()
        .map(|rounds| {
            (0..rounds[0].len())
                .map(|f| {
                    let mut values: Vec<f64> = rounds.iter().map(|r| r[f].1).collect();
                    values.sort_by(f64::total_cmp);
                    (rounds[0][f].0, values[values.len() / 2], rounds[0][f].2)
                })
                .collect()
        })
        .collect()
}

/// One row of the table.
struct Row {
    workload: String,
    figure: &'static str,
    /// Per binary, in the order of Options::binaries.
    values: Vec<f64>,
    /// Whether more is better (for the ratio's direction).
    higher_is_better: bool,
}

/// A configuration and spool in a fresh directory, with `messages` queued messages of 4.3 KB
/// (the workloads' and the floors' common start).
fn queued(messages: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    queue(dir.path(), messages, 4300);
    dir
}

/// The maildir `new/` of DOMAIN in `dir`'s spool.
fn new_dir(dir: &Path) -> PathBuf {
    dir.join("spool").join(DOMAIN).join("new")
}

fn fetchmail_run(binary: &Path, host: &str, messages: usize) -> Figures {
    let dir = queued(messages);
    let daemon = Daemon::start_on(binary, dir.path(), host);
    let sink = Sink::start();
    let capture = Capture::start(dir.path(), &[daemon.port, sink.port]);
    let home = dir.path().join("fetchmail");
    std::fs::create_dir(&home).unwrap();
    let rc = home.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll {host} protocol odmr service {} timeout 60\n    user \"{USER}\" password \"{PASSWORD}\"\n    fetchdomains {DOMAIN}\n    smtphost 127.0.0.1/{}\n",
            daemon.port, sink.port
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = Instant::now();
    let status = Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .args(["--nodetach", "--pidfile"])
        .arg(home.join("pid"))
        .env("FETCHMAILHOME", &home)
        .env("HOME", &home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let got = *sink.delivered.lock().unwrap();
    assert_eq!(got.messages, messages, "fetchmail exit {status:?}; see {}", dir.path().display());
    let mut row = vec![
        ("messages/s", messages as f64 / elapsed, true),
        ("ms/message", elapsed * 1000.0 / messages as f64, false),
    ];
    if let Some(capture) = capture {
        let stalls = capture.stalls(daemon.port);
        row.push(("stalls/message odmrd<->fetchmail", stalls.first as f64 / messages as f64, false));
        row.push(("stalls/message fetchmail<->MTA", stalls.other as f64 / messages as f64, false));
    }
    row
}

/// Relay 127.0.0.1:listen <-> 127.0.0.1:target, delaying every chunk by `delay` each way.
fn delay_relay(target: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", target)).unwrap();
            for (from, to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)] {
                from.set_nodelay(true).unwrap();
                delayed_pipe(from, to, delay);
            }
        }
    });
    port
}

fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    type Chunks = (Mutex<(VecDeque<(Instant, Vec<u8>)>, bool)>, Condvar);
    let chunks: Arc<Chunks> = Arc::new((Mutex::new((VecDeque::new(), false)), Condvar::new()));
    let writer = chunks.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = from.read(&mut buf).unwrap_or(0);
            let (lock, ready) = &*chunks;
            let mut queue = lock.lock().unwrap();
            if n == 0 {
                queue.1 = true;
                ready.notify_one();
                return;
            }
            queue.0.push_back((Instant::now() + delay, buf[..n].to_vec()));
            ready.notify_one();
        }
    });
    std::thread::spawn(move || loop {
        let (lock, ready) = &*writer;
        let mut queue = lock.lock().unwrap();
        while queue.0.is_empty() && !queue.1 {
            queue = ready.wait(queue).unwrap();
        }
        let Some((due, chunk)) = queue.0.pop_front() else {
            let _ = to.shutdown(std::net::Shutdown::Write);
            return;
        };
        drop(queue);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if to.write_all(&chunk).is_err() {
            return;
        }
    });
}

fn rtt_run(binary: &Path, messages: usize, rtt: Duration) -> Figures {
    let dir = queued(messages);
    let daemon = Daemon::start(binary, dir.path());
    let port = delay_relay(daemon.port, rtt / 2);
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut input = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let atrn = login_and_atrn(&mut input, &mut out);
    assert!(atrn.starts_with("250"), "{atrn}");
    // From the 250 to ATRN to the customer's QUIT: the reversed session.
    let started = Instant::now();
    let mut ended = None;
    let got = serve_smtp(&mut input, out, || ended = Some(started.elapsed()));
    assert_eq!(got.messages, messages);
    let elapsed = ended.unwrap().as_secs_f64();
    vec![
        ("round trips/message", elapsed / rtt.as_secs_f64() / messages as f64, false),
        ("reversed session s", elapsed, false),
    ]
}

/// A direct customer on a socketpair to `binary --inetd`: the reversed session's time for
/// `messages` messages, against the durable floor measured on the same spool contents (read
/// each file, unlink it, one directory fsync).
fn direct_run(binary: &Path, messages: usize) -> Figures {
    let dir = queued(messages);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = inetd(binary, dir.path(), theirs);
    let mut input = BufReader::with_capacity(256 * 1024, ours.try_clone().unwrap());
    let mut out = ours;
    let atrn = login_and_atrn(&mut input, &mut out);
    assert!(atrn.starts_with("250"), "{atrn}");
    let started = Instant::now();
    let got = serve_smtp(&mut input, out, || {});
    wait(child);
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(got.messages, messages);
    let floor = durable_floor(messages);
    let relay = relay_floor(messages);
    vec![
        ("ms/message", elapsed * 1000.0 / messages as f64, false),
        ("x durable floor", elapsed / floor, false),
        ("x relay floor", elapsed / relay, false),
    ]
}

/// Seconds for the simplest relay that keeps odmrd's rule to move `messages` queued files to
/// the same customer (`serve_smtp` on a socketpair, in a thread): the durable floor plus the
/// exchange a direct session cannot avoid. Per file: read it, send MAIL/RCPT/DATA with the
/// previous body and its dot (one round trip per message, as odmrd pipelines), unlink the
/// previous file on its 250; one directory fsync at the end. No process start, checks, log,
/// envelope parsing or dot-stuffing (no line of these files begins with a dot).
fn relay_floor(messages: usize) -> f64 {
    let dir = queued(messages);
    let new = new_dir(dir.path());
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let customer = std::thread::spawn(move || {
        let mut input = BufReader::with_capacity(256 * 1024, theirs.try_clone().unwrap());
        serve_smtp(&mut input, theirs, || {})
    });
    let started = Instant::now();
    let mut replies = BufReader::new(ours.try_clone().unwrap());
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, ours);
    let mut reply = String::new();
    let mut expect = |replies: &mut BufReader<_>, code: &str| loop {
        reply.clear();
        replies.read_line(&mut reply).unwrap();
        if reply.starts_with(&format!("{code} ")) {
            return;
        }
        assert!(reply.starts_with(&format!("{code}-")), "{reply}");
    };
    expect(&mut replies, "220");
    out.write_all(b"EHLO floor.example\r\n").unwrap();
    out.flush().unwrap();
    expect(&mut replies, "250");
    let (mut file, mut previous) = (Vec::new(), None::<PathBuf>);
    for entry in std::fs::read_dir(&new).unwrap() {
        let path = entry.unwrap().path();
        file.clear();
        std::fs::File::open(&path).unwrap().read_to_end(&mut file).unwrap();
        write!(out, "MAIL FROM:<s@sender.example>\r\nRCPT TO:<r@{DOMAIN}>\r\nDATA\r\n").unwrap();
        out.flush().unwrap();
        if let Some(done) = previous.take() {
            expect(&mut replies, "250");
            std::fs::remove_file(done).unwrap();
        }
        for code in ["250", "250", "354"] {
            expect(&mut replies, code);
        }
        for line in file.split_inclusive(|&b| b == b'\n') {
            out.write_all(line.strip_suffix(b"\n").unwrap_or(line)).unwrap();
            out.write_all(b"\r\n").unwrap();
        }
        out.write_all(b".\r\n").unwrap();
        previous = Some(path);
    }
    out.write_all(b"QUIT\r\n").unwrap();
    out.flush().unwrap();
    if let Some(done) = previous.take() {
        expect(&mut replies, "250");
        std::fs::remove_file(done).unwrap();
    }
    expect(&mut replies, "221");
    std::fs::File::open(&new).unwrap().sync_all().unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    drop(out);
    drop(replies);
    assert_eq!(customer.join().unwrap().messages, messages);
    elapsed
}

/// Seconds to read, unlink and (once) fsync the directory of `messages` queued files.
fn durable_floor(messages: usize) -> f64 {
    let dir = queued(messages);
    let new = new_dir(dir.path());
    let started = Instant::now();
    let mut buf = Vec::new();
    for entry in std::fs::read_dir(&new).unwrap() {
        let path = entry.unwrap().path();
        buf.clear();
        std::fs::File::open(&path).unwrap().read_to_end(&mut buf).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
    std::fs::File::open(&new).unwrap().sync_all().unwrap();
    started.elapsed().as_secs_f64()
}

/// The BSMTP file of one message of about `size` bytes, every tenth line dot-stuffed.
fn bsmtp_file(path: &Path, size: usize) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    write!(file, "MAIL FROM:<big@sender.example>\nRCPT TO:<erin@{DOMAIN}>\nDATA\nSubject: big\n\n").unwrap();
    let (mut written, mut n) = (0, 0u64);
    while written < size {
        n += 1;
        let line = if n % 10 == 0 {
            format!("..{n} a line that began with a dot\n")
        } else {
            format!("{n:>12} the quick brown fox jumps over the lazy dog 0123456789\n")
        };
        file.write_all(line.as_bytes()).unwrap();
        written += line.len();
    }
    file.write_all(b".\n").unwrap();
}

fn bsmtp_run(binary: &Path, source: &Path, size: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    std::fs::copy(source, new_dir(dir.path()).join("1.big")).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let child = inetd(binary, dir.path(), theirs);
    let pid = child.id().to_string();
    let mut input = BufReader::with_capacity(256 * 1024, ours.try_clone().unwrap());
    let mut out = ours;
    let asked = Instant::now();
    let atrn = login_and_atrn(&mut input, &mut out);
    let to_atrn = asked.elapsed().as_secs_f64();
    assert!(atrn.starts_with("250"), "{atrn}");
    // What the process holds before the body moves (code, libraries, configuration, session).
    let at_atrn = peak_rss_kib(&pid);
    let started = Instant::now();
    let mut rss = 0;
    let got = serve_smtp(&mut input, out, || rss = peak_rss_kib(&pid));
    let elapsed = started.elapsed().as_secs_f64();
    wait(child);
    assert_eq!(got.messages, 1);
    vec![
        ("MB/s", size as f64 / 1e6 / elapsed, true),
        ("ms from AUTH+ATRN to 250", to_atrn * 1000.0, false),
        ("peak RSS MiB", rss as f64 / 1024.0, false),
        ("peak RSS growth after the 250 MiB", rss.saturating_sub(at_atrn) as f64 / 1024.0, false),
    ]
}

/// `binary --inetd` on `socket`, stderr discarded.
fn inetd(binary: &Path, dir: &Path, socket: impl Into<std::os::fd::OwnedFd>) -> Child {
    let socket: std::os::fd::OwnedFd = socket.into();
    Command::new(binary)
        .arg("-c")
        .arg(dir.join("odmrd.ini"))
        .arg("--inetd")
        .stdin(Stdio::from(socket.try_clone().unwrap()))
        .stdout(Stdio::from(socket))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait(mut child: Child) {
    let _ = child.wait();
}

/// One session that ends in 453, to QUIT's reply.
fn session_453(stream: TcpStream) {
    let mut input = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    let atrn = login_and_atrn(&mut input, &mut out);
    assert!(atrn.starts_with("453"), "{atrn}");
    out.write_all(b"QUIT\r\n").unwrap();
    let mut rest = Vec::new();
    let _ = input.read_to_end(&mut rest);
}

const SESSIONS_FOR: Duration = Duration::from_secs(3);

/// Sessions per second against `port`, one at a time, for SESSIONS_FOR.
fn sessions_per_second(port: u16) -> f64 {
    let started = Instant::now();
    let mut sessions = 0;
    while started.elapsed() < SESSIONS_FOR {
        session_453(TcpStream::connect(("127.0.0.1", port)).unwrap());
        sessions += 1;
    }
    sessions as f64 / started.elapsed().as_secs_f64()
}

/// A directory for the 453 sessions: on tmpfs when there is one, as lock_directory is in
/// production (/run/odmrd): under inetd the AUTH throttle's state file there is read three
/// times a session (rewritten only when an address has failures), which costs far more on a
/// disk file system. The spool is empty: nothing else is written.
fn sessions_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    write_config(dir.path());
    dir
}

/// Sessions per second of `binary` under an inetd (nowait) launcher: one process per accepted
/// connection, the socket as fds 0 and 1.
fn inetd_sessions_per_second(binary: &Path, dir: &Path) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let (binary_copy, dir_path, stopping) = (binary.to_path_buf(), dir.to_path_buf(), stop.clone());
    let launcher = std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if stopping.load(Ordering::Relaxed) {
                return;
            }
            let child = inetd(&binary_copy, &dir_path, stream);
            std::thread::spawn(move || wait(child));
        }
    });
    let rate = sessions_per_second(port);
    stop.store(true, Ordering::Relaxed);
    let _ = TcpStream::connect(("127.0.0.1", port));
    launcher.join().unwrap();
    rate
}

fn sessions_run(binary: &Path) -> Figures {
    let dir = sessions_dir();
    let inetd_rate = inetd_sessions_per_second(binary, dir.path());
    let daemon = Daemon::start(binary, dir.path());
    let standalone_rate = sessions_per_second(daemon.port);
    vec![("453 sessions/s inetd", inetd_rate, true), ("453 sessions/s standalone", standalone_rate, true)]
}

/// The inetd launcher's own ceiling: `floor_453` (an example next to this one) answers the same
/// dialogue with canned replies and checks nothing, so its rate is what process creation,
/// the dynamic loader, Rust's runtime start and the round trips allow any provider here.
fn inetd_floor(options: &Options) -> Option<f64> {
    let floor = std::env::current_exe().unwrap().with_file_name("floor_453");
    if !floor.is_file() {
        eprintln!(
            "{} not built (cargo build --release -p odmrd --example floor_453): no floor",
            floor.display()
        );
        return None;
    }
    let dir = sessions_dir();
    let mut rates: Vec<f64> =
        (0..options.rounds).map(|_| inetd_sessions_per_second(&floor, dir.path())).collect();
    rates.sort_by(f64::total_cmp);
    Some(rates[rates.len() / 2])
}

fn main() {
    let options = options();
    let wanted = |name: &str| options.only.as_deref().map_or(true, |only| only == name);
    let mut table: Vec<Row> = Vec::new();
    let mut add = |workload: String, per_binary: Vec<Figures>| {
        for (i, &(figure, _, higher_is_better)) in per_binary[0].iter().enumerate() {
            let values = per_binary.iter().map(|row| row[i].1).collect();
            table.push(Row { workload: workload.clone(), figure, values, higher_is_better });
        }
    };
    let n = options.messages;
    if wanted("fetchmail") {
        add(format!("fetchmail, {n} x 4.3 KB"), medians(&options, |b| fetchmail_run(b, &options.host, n)));
    }
    if wanted("direct") {
        add("direct customer, 500 x 4.3 KB".into(), medians(&options, |b| direct_run(b, 500)));
    }
    if wanted("rtt") {
        let label = format!("{} ms RTT, {} x 4.3 KB", options.rtt.as_millis(), n / 2);
        add(label, medians(&options, |b| rtt_run(b, n / 2, options.rtt)));
    }
    if wanted("bsmtp") {
        let source = tempfile::tempdir().unwrap();
        let size = 100 * 1024 * 1024;
        let file = source.path().join("big.bsmtp");
        bsmtp_file(&file, size);
        add("BSMTP, 1 x 100 MB".into(), medians(&options, |b| bsmtp_run(b, &file, size)));
    }
    let mut floor = None;
    if wanted("sessions") {
        add("sessions ending in 453".into(), medians(&options, sessions_run));
        floor = inetd_floor(&options);
    }

    let names: Vec<&str> = options.binaries.iter().map(|(name, _)| *name).collect();
    print!("| workload | figure |");
    for name in &names {
        print!(" {name} |");
    }
    println!("{}", if names.len() == 2 { " new vs base |" } else { "" });
    println!("|---|---|{}{}", "---:|".repeat(names.len()), if names.len() == 2 { "---:|" } else { "" });
    for row in &table {
        print!("| {} | {} |", row.workload, row.figure);
        for value in &row.values {
            print!(" {value:.3} |");
        }
        if let [base, new] = row.values[..] {
            let better = if row.higher_is_better { new / base } else { base / new };
            if better.is_finite() {
                print!(" {better:.2}x |");
            } else {
                print!(" - |");
            }
        }
        println!();
    }
    if let Some(rate) = floor {
        println!("\ninetd floor (floor_453: canned replies, no checks, same launcher): {rate:.0} sessions/s");
    }
}
