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
//!   to show the body streams in constant memory.

mod support;

use odmrd::backend::Backends;
use odmrd::config::Config;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use support::{customer, peak_rss_kib, queue, write_config, Delivered};

fn run(name: &str, count: usize, body_size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let ini = write_config(dir.path());
    queue(dir.path(), count, body_size);
    // In process, quiet: the figures are the session's, not the log's.
    let text = std::fs::read_to_string(&ini)
        .unwrap()
        .replace("stderr = yes\nlevel = info", "stderr = no\nlevel = error");
    let config = Config::parse(&text, &ini).expect("bench configuration");
    odmrd::log::init(&config.log).unwrap();
    let backends = Backends::load(&config.credentials, &config.queue).unwrap();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let rss_before = peak_rss_kib("self");
    let start = Instant::now();
    let customer = std::thread::spawn(move || customer(ours.try_clone().unwrap(), ours));
    odmrd::session::serve(&config, &backends, theirs, None);
    let Delivered { messages, bytes } = customer.join().unwrap();
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
        peak_rss_kib("self")
    );
}

fn main() {
    run("500 x 4.3 KB (Exim 4.99: 6.7 s)", 500, 4300);
    run("1 x 100 MB", 1, 100 * 1024 * 1024);
}
