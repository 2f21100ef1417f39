//! Benchmark of a whole ODMR session, printing figures (not a test):
//!
//! ```sh
//! cargo run --release -p odmrd --example bench_reversed
//! ```
//!
//! Runs odmrd's real session code (built-in passwd and maildir backends) on
//! one end of a socketpair; this program is the customer on the other end:
//! AUTH CRAM-MD5, ATRN, then a fast MTA that accepts everything (with
//! PIPELINING). Two workloads:
//! - 500 queued messages of 4.3 KB (the figure peers.md gives for Exim 4.99's
//!   own provider: 6.7 s with a direct customer);
//! - one 100 MB message, with the process's peak memory before and after,
//!   to show the body streams in constant memory;
//! - both again under implicit TLS, with the fetchmail-safe framing (one record per line) and
//!   with packed records, to show what the framing costs.

use odmrd::backend::Backends;
use odmrd::config::Config;
use odmrd::session::Start;
use odmrd::tls::{Framing, Identity};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

mod support;

use support::{queue, PASSWORD};

fn config(dir: &Path) -> Config {
    let d = dir.display();
    std::fs::write(dir.join("passwd"), format!("bench:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org\n"))
        .unwrap();
    let text = format!(
        "[server]\nhostname = bench.example\nlock_directory = {d}/locks\n\
         [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
         [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
         [bounce]\nsendmail = /bin/true\n[log]\nsyslog = off\nstderr = no\nlevel = error\n"
    );
    Config::parse(&text, &dir.join("bench.ini")).expect("bench configuration")
}

/// The customer: log in, ATRN, then accept every message. Returns
/// (messages, body bytes received).
fn customer<S: Read + Write>(stream: S) -> (usize, u64) {
    let mut input = BufReader::with_capacity(256 * 1024, stream);
    let mut line = String::new();
    let mut read_line = |input: &mut BufReader<S>| {
        line.clear();
        input.read_line(&mut line).unwrap();
        line.clone()
    };
    let mut out = Writer;
    read_line(&mut input);
    out.write_all(&mut input, b"EHLO customer.example\r\n");
    while read_line(&mut input).starts_with("250-") {}
    out.write_all(&mut input, b"AUTH CRAM-MD5\r\n");
    let response = support::cram_md5_response(&read_line(&mut input));
    out.write_all(&mut input, format!("{response}\r\nATRN example.org\r\n").as_bytes());
    assert!(read_line(&mut input).starts_with("235"));
    assert!(read_line(&mut input).starts_with("250"), "ATRN refused");
    out.write_all(&mut input, b"220 customer.example ESMTP\r\n");
    let (mut messages, mut bytes) = (0usize, 0u64);
    loop {
        let command = read_line(&mut input);
        let reply: &[u8] = match command.get(..4) {
            Some("EHLO") => b"250-customer.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
            Some("DATA") => {
                out.write_all(&mut input, b"354 go\r\n");
                let mut data = Vec::new();
                loop {
                    data.clear();
                    input.read_until(b'\n', &mut data).unwrap();
                    if data == b".\r\n" || data.is_empty() {
                        break;
                    }
                    bytes += data.len() as u64;
                }
                messages += 1;
                b"250 ok\r\n"
            }
            Some("QUIT") | None => {
                let _ = input.get_mut().write_all(b"221 bye\r\n").and_then(|()| input.get_mut().flush());
                let _ = input.read_to_end(&mut Vec::new());
                return (messages, bytes);
            }
            _ => b"250 ok\r\n",
        };
        out.write_all(&mut input, reply);
    }
}

/// Writes through the customer's buffered reader to the stream under it.
struct Writer;

impl Writer {
    fn write_all<S: Read + Write>(&mut self, input: &mut BufReader<S>, bytes: &[u8]) {
        input.get_mut().write_all(bytes).unwrap();
        input.get_mut().flush().unwrap();
    }
}

/// Peak resident memory of this process so far, in KiB (Linux).
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// How the customer connects.
#[derive(Clone, Copy, PartialEq)]
enum Transport {
    Clear,
    Tls(Framing),
}

/// A self-signed identity for `bench.example` and a client configuration trusting it.
fn tls_pair(dir: &Path) -> (Identity, Arc<rustls::ClientConfig>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(vec!["bench.example".to_string()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    let identity = Identity::load(&dir.join("cert.pem"), &dir.join("key.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (identity, Arc::new(client))
}

fn run(name: &str, count: usize, body_size: usize, transport: Transport) {
    let dir = tempfile::tempdir().unwrap();
    queue(dir.path(), count, body_size);
    let mut config = config(dir.path());
    odmrd::log::init(&config.log);
    let backends = Backends::load(&config).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let (identity, client_config) = tls_pair(dir.path());
    let rss_before = peak_rss_kib();
    let start = Instant::now();
    let (identity, start_mode) = match transport {
        Transport::Clear => (None, Start::Clear),
        Transport::Tls(framing) => {
            config.tls.framing = framing;
            (Some(&identity), Start::ImplicitTls)
        }
    };
    let customer = std::thread::spawn(move || match transport {
        Transport::Clear => customer(ours),
        Transport::Tls(_) => {
            let name = rustls::pki_types::ServerName::try_from("bench.example").unwrap();
            let conn = rustls::ClientConnection::new(client_config, name).unwrap();
            customer(rustls::StreamOwned::new(conn, ours))
        }
    });
    let gate = odmrd::throttle::Gate::open();
    odmrd::session::serve(&config, &backends, identity, start_mode, theirs, None, &gate);
    let (messages, bytes) = customer.join().unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    let left = std::fs::read_dir(dir.path().join("spool/example.org/new")).unwrap().count();
    assert_eq!((messages, left), (count, 0), "every message delivered and removed");
    println!(
        "{name}: {messages} messages, {:.1} MB in {elapsed:.2} s: {:.0} messages/s, {:.1} MB/s; \
         peak memory {} -> {} KiB",
        bytes as f64 / 1e6,
        messages as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
        rss_before,
        peak_rss_kib()
    );
}

fn main() {
    let line = Transport::Tls(Framing::Line);
    let packed = Transport::Tls(Framing::Packed);
    run("500 x 4.3 KB (Exim 4.99: 6.7 s)", 500, 4300, Transport::Clear);
    run("500 x 4.3 KB, TLS, a record per line", 500, 4300, line);
    run("500 x 4.3 KB, TLS, packed records", 500, 4300, packed);
    run("1 x 100 MB", 1, 100 * 1024 * 1024, Transport::Clear);
    run("1 x 100 MB, TLS, a record per line", 1, 100 * 1024 * 1024, line);
    run("1 x 100 MB, TLS, packed records", 1, 100 * 1024 * 1024, packed);
}
