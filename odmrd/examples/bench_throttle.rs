//! Benchmark of the AUTH throttle under a password-guessing attack, printing
//! figures (not a test):
//!
//! ```sh
//! cargo run --release -p odmrd --example bench_throttle
//! ```
//!
//! Runs a real standalone odmrd (its listener, session limits, throttle and
//! built-in passwd backend) in this process on 127.0.0.1, with the default
//! limits (`max_sessions = 100`, `max_sessions_per_ip = 10`, 3 failures per
//! session) and the default throttle, **with every duration divided by
//! [`SCALE`]** so that one hour of attack takes 36 s: penalties 2 s → 15 s
//! become 20 → 150 ms, the one-hour window 36 s, `failure_delay` 10 ms.
//! Figures are printed in simulated time (real time × SCALE).
//!
//! Three phases, each with a fresh daemon:
//! 1. one guessing address (127.0.0.2), one simulated hour;
//! 2. ten guessing addresses (127.0.0.2–11) and, meanwhile, a legitimate
//!    customer from 127.0.0.200 logging in (AUTH, then QUIT) every 20 ms,
//!    one simulated hour;
//! 3. a check of the scaling: one guessing address with the real (unscaled)
//!    durations for 30 s, whose guesses must come at the same simulated
//!    times as in phase 1.
//!
//! Each guessing address runs `max_sessions_per_ip` (10) connections in
//! parallel, each guessing as fast as the server answers (EHLO once, then
//! AUTH with a wrong password until refused); after a refusal it reconnects
//! after [`RECONNECT_PAUSE`] (real time) — a pause only to keep the 2-core
//! machine usable, the throttle does not rely on it.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use odmrd::backend::Backends;
use odmrd::config::Config;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every configured duration is divided by this; figures are multiplied back.
const SCALE: u32 = 100;
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);
const CUSTOMER_INTERVAL: Duration = Duration::from_millis(20);
const PASSWORD: &str = "bench-secret";

fn config(dir: &Path, scale: u32) -> Config {
    let d = dir.display();
    std::fs::write(dir.join("passwd"), format!("bench:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org\n"))
        .unwrap();
    let scaled = |seconds: f64| seconds / f64::from(scale);
    let text = format!(
        "[server]\nhostname = bench.example\nlock_directory = {d}/locks\n\
         [auth]\nfailure_delay = {}\naddress_penalty = {}\naddress_max_penalty = {}\n\
         address_failure_window = {}\n\
         [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
         [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
         [bounce]\nsendmail = /bin/true\n[log]\nsyslog = off\nstderr = no\nlevel = error\n",
        scaled(1.0),
        scaled(2.0),
        scaled(15.0),
        3600 / scale,
    );
    Config::parse(&text, &dir.join("bench.ini")).expect("bench configuration")
}

/// Start a standalone odmrd in this process; returns its port.
fn start_daemon(dir: &Path, scale: u32) -> u16 {
    let config = config(dir, scale);
    odmrd::log::init(&config.log);
    let backends = Backends::load(&config).unwrap();
    let listener = odmrd::server::bind("127.0.0.1:0".parse().unwrap(), config.server.listen_backlog).unwrap();
    let port = listener.local_addr().unwrap().port();
    let no_reload = || Err("the benchmark does not reload".to_string());
    std::thread::spawn(move || {
        odmrd::server::run_standalone(Arc::new(config), backends, None, listener, None, &no_reload)
    });
    port
}

/// A TCP connection to 127.0.0.1:port from the loopback address `source`.
fn connect_from(source: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(source, 0)))?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))?;
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// One side of a session, reading replies line by line.
struct Line {
    out: TcpStream,
    input: BufReader<TcpStream>,
}

impl Line {
    fn open(source: Ipv4Addr, port: u16) -> Option<Line> {
        let out = connect_from(source, port).ok()?;
        Some(Line { input: BufReader::new(out.try_clone().ok()?), out })
    }

    /// The reply to `command` (None: no command, just read), last line only.
    fn ask(&mut self, command: Option<&str>) -> String {
        if let Some(command) = command {
            if self.out.write_all(format!("{command}\r\n").as_bytes()).is_err() {
                return String::new();
            }
        }
        let mut line = String::new();
        loop {
            line.clear();
            if self.input.read_line(&mut line).unwrap_or(0) == 0 || line.as_bytes().get(3) != Some(&b'-') {
                return line;
            }
        }
    }
}

fn cram_md5_response(user: &str, password: &str, challenge_reply: &str) -> String {
    let challenge = base64::engine::general_purpose::STANDARD.decode(challenge_reply[4..].trim()).unwrap();
    let mut mac = Hmac::<md5::Md5>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(&challenge);
    let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    base64::engine::general_purpose::STANDARD.encode(format!("{user} {digest}"))
}

#[derive(Default)]
struct Tally {
    /// Wrong passwords the server checked (answered 535, or 421 at the cap).
    guesses: AtomicU64,
    /// When each guess was answered, from the phase's start.
    times: Mutex<Vec<Duration>>,
    /// Connections answered 421 at once.
    refused_at_connect: AtomicU64,
}

/// One of a guessing address's parallel connections, until `stop`; counts
/// the guesses answered within `length` from `start`.
fn guesser(
    source: Ipv4Addr,
    port: u16,
    (start, length): (Instant, Duration),
    tally: &Tally,
    stop: &AtomicBool,
) {
    while !stop.load(Ordering::Relaxed) {
        if let Some(mut line) = Line::open(source, port) {
            if !line.ask(None).starts_with("220") {
                tally.refused_at_connect.fetch_add(1, Ordering::Relaxed);
            } else {
                line.ask(Some("EHLO guesser.example"));
                while !stop.load(Ordering::Relaxed) {
                    let challenge = line.ask(Some("AUTH CRAM-MD5"));
                    if !challenge.starts_with("334") {
                        break;
                    }
                    let verdict = line.ask(Some(&cram_md5_response("bench", "guess", &challenge)));
                    // Guesses answered after the phase (a thread still in its last
                    // exchange) would belong to the next window: not counted.
                    let elapsed = start.elapsed();
                    if (verdict.starts_with("535") || verdict.starts_with("421")) && elapsed < length {
                        tally.guesses.fetch_add(1, Ordering::Relaxed);
                        tally.times.lock().unwrap().push(elapsed);
                    }
                    if !verdict.starts_with("535") {
                        break;
                    }
                }
            }
        }
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

/// The legitimate customer: log in every CUSTOMER_INTERVAL until `stop`;
/// returns (logins tried, logins that succeeded).
fn customer(port: u16, stop: &AtomicBool) -> (u64, u64) {
    let (mut tried, mut succeeded) = (0, 0);
    while !stop.load(Ordering::Relaxed) {
        tried += 1;
        if let Some(mut line) = Line::open(Ipv4Addr::new(127, 0, 0, 200), port) {
            if line.ask(None).starts_with("220") {
                line.ask(Some("EHLO customer.example"));
                let challenge = line.ask(Some("AUTH CRAM-MD5"));
                if challenge.starts_with("334")
                    && line.ask(Some(&cram_md5_response("bench", PASSWORD, &challenge))).starts_with("235")
                {
                    succeeded += 1;
                }
                line.ask(Some("QUIT"));
            }
        }
        std::thread::sleep(CUSTOMER_INTERVAL);
    }
    (tried, succeeded)
}

/// Attack with `addresses` guessing addresses (and the customer) for
/// `length` of real time, durations divided by `scale`; print the figures.
fn phase(name: &str, scale: u32, length: Duration, addresses: u8, with_customer: bool) {
    let dir = tempfile::tempdir().unwrap();
    let port = start_daemon(dir.path(), scale);
    let stop = AtomicBool::new(false);
    let tallies: Vec<Tally> = (0..addresses).map(|_| Tally::default()).collect();
    let start = Instant::now();
    let customer_result = std::thread::scope(|scope| {
        for (n, tally) in tallies.iter().enumerate() {
            let source = Ipv4Addr::new(127, 0, 0, 2 + n as u8);
            for _ in 0..10 {
                let stop = &stop;
                scope.spawn(move || guesser(source, port, (start, length), tally, stop));
            }
        }
        let customer = with_customer.then(|| scope.spawn(|| customer(port, &stop)));
        std::thread::sleep(length);
        stop.store(true, Ordering::Relaxed);
        customer.map(|c| c.join().unwrap())
    });
    // In simulated time.
    let minutes = length.as_secs_f64() * f64::from(scale) / 60.0;
    let simulated = |real: Duration| real.as_secs_f64() * f64::from(scale);
    let guesses: Vec<u64> = tallies.iter().map(|t| t.guesses.load(Ordering::Relaxed)).collect();
    let refused: Vec<u64> = tallies.iter().map(|t| t.refused_at_connect.load(Ordering::Relaxed)).collect();
    let first_minute: usize = tallies
        .iter()
        .map(|t| t.times.lock().unwrap().iter().filter(|&&at| simulated(at) < 60.0).count())
        .sum();
    let total: u64 = guesses.iter().sum();
    println!("{name} ({minutes:.1} simulated minutes, {:.1} s real):", start.elapsed().as_secs_f64());
    println!(
        "  guesses: {total} in all, {:.2}/min per address on average, {first_minute} in the first minute",
        total as f64 / minutes / f64::from(addresses),
    );
    println!("  guesses per address: {guesses:?}");
    let mut times = tallies[0].times.lock().unwrap().clone();
    times.sort();
    let times: Vec<String> = times.iter().take(8).map(|&at| format!("{:.1}", simulated(at))).collect();
    println!("  first guesses of 127.0.0.2 answered at (simulated s): {}", times.join(", "));
    println!("  connections refused at connect (421), per address: {refused:?}");
    if let Some((tried, succeeded)) = customer_result {
        println!(
            "  legitimate customer from 127.0.0.200: {succeeded} of {tried} logins succeeded ({:.2} %)",
            100.0 * succeeded as f64 / tried.max(1) as f64
        );
    }
}

fn main() {
    let hour = Duration::from_secs(3600 / u64::from(SCALE));
    println!(
        "Durations divided by {SCALE}: one simulated hour = {} s; figures in simulated time.",
        hour.as_secs()
    );
    phase("one guessing address", SCALE, hour, 1, false);
    phase("ten guessing addresses and a legitimate customer", SCALE, hour, 10, true);
    phase("check of the scaling: one guessing address, real durations", 1, Duration::from_secs(30), 1, false);
}
