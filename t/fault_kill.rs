//! Fault injection: a standalone odmrd is killed with SIGKILL at random instants while the
//! customer collects, and started again, over a maildir spool and over a real Exim 4.96 spool
//! (t/exim_common.rs) with Exim queue runs racing odmrd. At the end every recipient the customer could accept arrived at least
//! once (lost = 0), the queue holds exactly the rest (the recipients the customer defers and
//! those of domains not collected), and no leftover of an interrupted commit remains (maildir
//! `tmp/`, an Exim `-D`/`-J` without `-H`). Duplicates are allowed (a kill between the
//! customer's 250 and the commit) and are counted and printed.
//!
//! The messages and the kill delays come from a seeded generator: the seed is printed, and
//! `ODMRD_FAULT_SEED=N` replays them (where in the session a delay lands still depends on the
//! machine's speed). The customer is [`collect`], a fast MTA that survives the connection
//! breaking at any point (the `Client` of t/support panics there, as a test client should).

#[path = "exim_common.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::odmrd::{cram_md5_response, Daemon, PASSWORD, USER};

/// Kills that must land inside a session (between the connection and the customer's QUIT)
/// before a run ends; a run also ends after [`TIME_BUDGET`].
const KILLS: usize = 60;
/// Wall-clock budget for the kill rounds of one spool (the final checks come on top).
const TIME_BUDGET: Duration = Duration::from_secs(25);
/// Messages queued whenever the queue has nothing left to deliver.
const BATCH: usize = 12;

/// splitmix64: small, seedable, good enough to spread kill instants and sizes.
struct Rng(u64);

impl Rng {
    /// From `ODMRD_FAULT_SEED`, else from the clock; prints the seed either way.
    fn from_env(what: &str) -> Rng {
        let seed = std::env::var("ODMRD_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
        println!("{what}: ODMRD_FAULT_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One queued message: its marker (the `Subject:`) and recipients by fate.
struct Message {
    marker: String,
    sender: String,
    /// The customer accepts these.
    deliverable: Vec<String>,
    /// The customer answers 451 to these (local part `defer…`): they stay.
    deferred: Vec<String>,
    /// Not in the collected domains: they stay, untouched.
    other: Vec<String>,
    body: String,
}

impl Message {
    fn random(n: usize, rng: &mut Rng, domains: &[&str], other_domain: &str) -> Message {
        let domain = |rng: &mut Rng| domains[rng.below(domains.len() as u64) as usize];
        let deliverable = (0..1 + rng.below(3)).map(|k| format!("u{n}-{k}@{}", domain(rng))).collect();
        let deferred = if rng.below(6) == 0 { vec![format!("defer{n}@{}", domain(rng))] } else { vec![] };
        let other = if rng.below(3) == 0 { vec![format!("x{n}@{other_domain}")] } else { vec![] };
        // Mostly small, some large enough for a kill to land inside the body.
        let size = match rng.below(10) {
            0..=5 => 200,
            6..=8 => 20_000,
            _ => 400_000,
        };
        let line = "..a line of the body, starting with a dot to be stuffed\n";
        let body = line.repeat(size / line.len() + 1);
        Message {
            marker: format!("fault-{n}"),
            sender: format!("s{n}@sender.example"),
            deliverable,
            deferred,
            other,
            body,
        }
    }

    fn recipients(&self) -> Vec<&str> {
        self.deliverable.iter().chain(&self.deferred).chain(&self.other).map(String::as_str).collect()
    }

    /// The (marker, recipient) pairs that must stay queued.
    fn rest(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.deferred.iter().chain(&self.other).map(|r| (self.marker.clone(), r.clone()))
    }
}

/// What the customer acknowledged: (marker, recipient) for each recipient it had accepted,
/// recorded just before its 250 to the final dot, in order (repeats are duplicates).
type Acknowledged = Arc<Mutex<Vec<(String, String)>>>;

/// How a [`collect`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// odmrd ended the reversed session with QUIT.
    Quit,
    /// ATRN was answered 453: nothing queued.
    NothingQueued,
}

/// The customer's end of a connection that may break at any moment: every read and write
/// is fallible, and a line cut short counts as a broken connection.
struct Wire {
    input: BufReader<TcpStream>,
    out: TcpStream,
    line: String,
}

impl Wire {
    fn connect(port: u16) -> io::Result<Wire> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Wire { out: stream.try_clone()?, input: BufReader::new(stream), line: String::new() })
    }

    /// The next line, with its line end.
    fn line(&mut self) -> io::Result<&str> {
        self.line.clear();
        if self.input.read_line(&mut self.line)? == 0 || !self.line.ends_with('\n') {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(&self.line)
    }

    /// Send `text` and CRLF.
    fn send(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(format!("{text}\r\n").as_bytes())
    }

    /// One reply: its code and the text of its last line.
    fn reply(&mut self) -> io::Result<(u16, String)> {
        loop {
            let line = self.line()?;
            if line.as_bytes().get(3) != Some(&b'-') {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, line.get(4..).unwrap_or("").trim_end().to_string()));
            }
        }
    }

    /// Send `command` (none if empty) and expect `want`; returns the reply's text. Another
    /// reply is an `Other` error: odmrd misbehaved, which is not a kill.
    fn command(&mut self, command: &str, want: u16) -> io::Result<String> {
        if !command.is_empty() {
            self.send(command)?;
        }
        match self.reply()? {
            (code, text) if code == want => Ok(text),
            (code, text) => Err(io::Error::other(format!("{command:?} answered {code} {text}"))),
        }
    }
}

/// The customer: log in, `ATRN domains`, then play a fast MTA (PIPELINING, no body kept,
/// constant work per line) until QUIT. Any broken connection is an `Err`.
fn collect(port: u16, domains: &str, acknowledged: &Acknowledged) -> io::Result<Ended> {
    let mut wire = Wire::connect(port)?;
    wire.command("", 220)?;
    wire.command("EHLO customer.example", 250)?;
    let challenge = wire.command("AUTH CRAM-MD5", 334)?;
    wire.command(&cram_md5_response(USER, PASSWORD, &challenge), 235)?;
    wire.send(&format!("ATRN {domains}"))?;
    match wire.reply()? {
        (250, _) => {}
        (453, _) => return Ok(Ended::NothingQueued),
        (code, text) => return Err(io::Error::other(format!("ATRN answered {code} {text}"))),
    }

    wire.send("220 customer.example ESMTP")?;
    let mut marker = String::new();
    let mut accepted: Vec<String> = Vec::new();
    loop {
        let line = wire.line()?.trim_end().to_string();
        let command = line.to_ascii_uppercase();
        let answer: &str = if command.starts_with("EHLO") {
            "250-customer.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000"
        } else if command.starts_with("MAIL FROM:") {
            accepted.clear();
            "250 ok"
        } else if let Some(rest) = line.strip_prefix("RCPT TO:<") {
            let rcpt = rest.split('>').next().unwrap_or_default();
            if rcpt.starts_with("defer") {
                "451 deferred by the customer"
            } else {
                accepted.push(rcpt.to_string());
                "250 ok"
            }
        } else if command == "DATA" {
            if accepted.is_empty() {
                "554 no valid recipients"
            } else {
                wire.send("354 go ahead")?;
                marker.clear();
                loop {
                    let line = wire.line()?;
                    if line == ".\r\n" {
                        break;
                    }
                    if marker.is_empty() {
                        if let Some(subject) = line.strip_prefix("Subject: ") {
                            marker = subject.trim_end().to_string();
                        }
                    }
                }
                let mut acked = acknowledged.lock().unwrap();
                acked.extend(accepted.drain(..).map(|r| (marker.clone(), r)));
                "250 ok, delivered"
            }
        } else if command == "RSET" {
            "250 ok"
        } else if command == "QUIT" {
            wire.send("221 bye")?;
            return Ok(Ended::Quit);
        } else {
            return Err(io::Error::other(format!("unexpected line from odmrd: {line:?}")));
        };
        wire.send(answer)?;
    }
}

/// A spool under test: queue messages, start odmrd on it, read what is still queued.
trait Spool {
    /// The domains the customer collects, for ATRN.
    fn atrn(&self) -> &str;
    fn queue(&self, message: &Message);
    fn start(&self) -> Daemon;
    /// (marker, recipient) pairs still pending in the queue, and how many messages hold them.
    fn pending(&self) -> (BTreeSet<(String, String)>, usize);
    /// Files an interrupted commit left behind (should be none once a session has run).
    fn leftovers(&self) -> Vec<String>;
    /// Another process working on the queue at the same time, if the spool has one.
    fn race(&self) -> Option<std::process::Child> {
        None
    }
}

/// The numbers of one run.
#[derive(Default, Debug)]
struct Tally {
    rounds: usize,
    /// Kills that landed while a session was open.
    kills_in_session: usize,
    /// Kills after the session had ended (or before it began).
    kills_outside: usize,
    /// Leftovers seen right after a kill (each removed by a later session).
    leftovers_seen: usize,
    /// Rounds with a racing process (an Exim queue run).
    races: usize,
}

/// Kill odmrd at random instants during collections until [`KILLS`] kills landed inside
/// sessions (or the time budget is spent), refilling the queue whenever it holds only the
/// rest; then one collection without a kill, and the checks.
fn run(name: &str, spool: &impl Spool, other_domain: &str, domains: &[&str]) {
    let mut rng = Rng::from_env(name);
    let acknowledged: Acknowledged = Arc::default();
    let mut messages: Vec<Message> = Vec::new();
    let mut tally = Tally::default();
    // Kill within this long after the customer connects; adapted to how long sessions take.
    let mut window = Duration::from_millis(50);
    let mut racers = Vec::new();
    let started = Instant::now();
    let rest = |messages: &[Message]| -> BTreeSet<(String, String)> {
        messages.iter().flat_map(Message::rest).collect()
    };
    while tally.kills_in_session < KILLS && started.elapsed() < TIME_BUDGET {
        if spool.pending().0 == rest(&messages) {
            for _ in 0..BATCH {
                let message = Message::random(messages.len(), &mut rng, domains, other_domain);
                spool.queue(&message);
                messages.push(message);
            }
        }
        tally.rounds += 1;
        if rng.below(3) == 0 {
            racers.extend(spool.race());
        }
        let daemon = spool.start();
        let (port, atrn, acked) = (daemon.port(), spool.atrn().to_string(), Arc::clone(&acknowledged));
        let began = Instant::now();
        let customer = std::thread::spawn(move || {
            let result = collect(port, &atrn, &acked);
            (result, began.elapsed())
        });
        let delay = Duration::from_micros(rng.below(window.as_micros() as u64 + 1));
        std::thread::sleep(delay);
        daemon.signal(Signal::SIGKILL);
        let _ = daemon.wait(Duration::from_secs(10));
        let (result, took) = customer.join().unwrap();
        match result {
            Ok(_) => {
                tally.kills_outside += 1;
                // The session was shorter than the window: aim closer.
                window = (took * 3 / 2).max(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::Other => panic!("{name}: the customer saw {e}"),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => tally.kills_outside += 1,
            Err(_) => {
                tally.kills_in_session += 1;
                window = (window * 11 / 10).min(Duration::from_secs(2));
            }
        }
        tally.leftovers_seen += spool.leftovers().len();
    }

    tally.races = racers.len();
    for mut racer in racers {
        racer.wait().unwrap();
    }
    // One whole collection without a kill: it must end with QUIT and leave only the rest.
    let daemon = spool.start();
    let ended = collect(daemon.port(), spool.atrn(), &acknowledged);
    let (_, log) = daemon.stop();
    let expected_rest = rest(&messages);
    match ended {
        Ok(Ended::Quit) => {}
        Ok(Ended::NothingQueued) if expected_rest.is_empty() => {}
        other => panic!("{name}: the final collection ended with {other:?}\n{log}"),
    }

    let acknowledged = acknowledged.lock().unwrap();
    let delivered: BTreeSet<(String, String)> = acknowledged.iter().cloned().collect();
    let deliverable: BTreeSet<(String, String)> =
        messages.iter().flat_map(|m| m.deliverable.iter().map(|r| (m.marker.clone(), r.clone()))).collect();
    let lost: Vec<_> = deliverable.difference(&delivered).collect();
    let wrong: Vec<_> = delivered.difference(&deliverable).collect();
    let duplicates = acknowledged.len() - delivered.len();
    let (pending, holding) = spool.pending();
    println!(
        "{name}: {} messages, {} recipients delivered, {} rounds, {} kills inside a session, \
         {} outside, {} racing queue runs, lost={}, duplicates={duplicates}, \
         leftovers seen after kills={}, recipients left queued={} in {holding} messages",
        messages.len(),
        deliverable.len(),
        tally.rounds,
        tally.kills_in_session,
        tally.kills_outside,
        tally.races,
        lost.len(),
        tally.leftovers_seen,
        pending.len()
    );
    assert!(lost.is_empty(), "{name}: lost {lost:?}\n{log}");
    assert!(wrong.is_empty(), "{name}: delivered what should have stayed: {wrong:?}");
    assert_eq!(pending, expected_rest, "{name}: the queue does not hold exactly the rest\n{log}");
    let holders: BTreeSet<&str> = expected_rest.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(holding, holders.len(), "{name}: messages without a pending recipient remain");
    assert_eq!(spool.leftovers(), Vec::<String>::new(), "{name}: leftovers of interrupted commits remain");
    assert!(tally.kills_in_session >= KILLS / 3, "{name}: too few kills landed inside a session: {tally:?}");
}

/// The `Subject:` of a message file or a delivered message, our marker.
fn marker_of(text: &str) -> String {
    text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or_default().to_string()
}

/// Maildir: one maildir per domain (the support `Provider`); messages are BSMTP files with
/// recipients in several domains, so a partial commit rewrites the file through `tmp/`.
struct MaildirSpool(support::odmrd::Provider);

const MAILDIR_DOMAINS: [&str; 2] = ["example.org", "example.net"];

impl Spool for MaildirSpool {
    fn atrn(&self) -> &str {
        "example.org,example.net"
    }

    fn queue(&self, m: &Message) {
        let text = format!("Subject: {}\nFrom: {}\n\n{}", m.marker, m.sender, m.body);
        let file = support::bsmtp(&m.sender, &m.recipients(), text.as_bytes());
        // In the maildir of its first recipient's domain, as Exim's per-domain BSMTP does.
        let domain = m.deliverable[0].split('@').nth(1).unwrap();
        self.0.queue(domain, &format!("{}.M1P1.provider", m.marker), std::str::from_utf8(&file).unwrap());
    }

    fn start(&self) -> Daemon {
        self.0.start_daemon()
    }

    fn pending(&self) -> (BTreeSet<(String, String)>, usize) {
        let mut pending = BTreeSet::new();
        let mut files = 0;
        for domain in MAILDIR_DOMAINS {
            for text in self.0.queued(domain) {
                files += 1;
                let marker = marker_of(&text);
                let rcpts =
                    text.lines().take_while(|l| *l != "DATA").filter_map(|l| l.strip_prefix("RCPT TO:<"));
                pending.extend(rcpts.map(|r| (marker.clone(), r.trim_end_matches('>').to_string())));
            }
        }
        (pending, files)
    }

    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        for domain in MAILDIR_DOMAINS {
            let tmp = self.0.path().join("spool").join(domain).join("tmp");
            for entry in fs::read_dir(&tmp).into_iter().flatten() {
                found.push(entry.unwrap().path().display().to_string());
            }
        }
        found
    }
}

#[test]
fn kill_9_at_random_instants_over_maildir_loses_nothing() {
    let spool = MaildirSpool(support::odmrd::Provider::new());
    run("maildir", &spool, "example.com", &MAILDIR_DOMAINS);
}

/// Exim: the real Exim 4.96 queues the mail (`exim -odq`); odmrd runs as the Exim user.
struct EximSpool {
    provider: common::Provider,
    /// Exim's id → our marker.
    ids: Mutex<BTreeMap<String, String>>,
}

impl Spool for EximSpool {
    fn atrn(&self) -> &str {
        "example.org,example.net"
    }

    fn queue(&self, m: &Message) {
        let id = self.provider.queue(&m.sender, &m.recipients(), &m.marker, &m.body);
        self.ids.lock().unwrap().insert(id, m.marker.clone());
    }

    fn start(&self) -> Daemon {
        Daemon::start_command(|| self.provider.odmrd_command(common::RunAs::EximUser))
    }

    fn pending(&self) -> (BTreeSet<(String, String)>, usize) {
        let ids = self.ids.lock().unwrap();
        let queue = self.provider.pending(&[]);
        let mut pending = BTreeSet::new();
        for (id, rcpts) in &queue {
            let marker = ids.get(id).unwrap_or_else(|| panic!("exim -bp lists an unknown id {id}"));
            pending.extend(rcpts.iter().map(|r| (marker.clone(), r.clone())));
        }
        (pending, queue.len())
    }

    /// Spool files of a message without its `-H` (what an interrupted removal leaves), and
    /// `-H` files without their `-D`.
    fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let input = self.provider.spool().join("input");
        let mut dirs = vec![input.clone()];
        for entry in fs::read_dir(&input).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
        let exists = |dir: &Path, id: &str, suffix: &str| dir.join(format!("{id}{suffix}")).exists();
        for dir in dirs {
            for entry in fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().to_string_lossy().into_owned();
                let Some((id, suffix)) = name.rsplit_once('-') else { continue };
                let orphan = match suffix {
                    "D" | "J" => !exists(&dir, id, "-H"),
                    "H" => !exists(&dir, id, "-D"),
                    _ => false,
                };
                if orphan {
                    found.push(dir.join(&name).display().to_string());
                }
            }
        }
        found
    }

    /// `exim -qff`: takes Exim's locks on every message and merges journals (the provider's
    /// routers defer every domain, so it never delivers).
    fn race(&self) -> Option<std::process::Child> {
        Some(self.provider.spawn_queue_run())
    }
}

#[test]
fn kill_9_at_random_instants_over_an_exim_spool_loses_nothing() {
    let spool = EximSpool { provider: common::Provider::new(false), ids: Mutex::default() };
    run("exim", &spool, "elsewhere.example", &MAILDIR_DOMAINS);
}

/// A kill at each point of a removal, made exact: the spool is left as a kill between two
/// unlinks leaves it (odmrd's order: `-H`, msglog, `-D`, `-J`; and Exim's own: msglog, `-D`,
/// `-H`, `-J`), then the real Exim lists the queue and one session runs.
#[test]
fn a_kill_between_the_unlinks_of_an_exim_removal_leaves_nothing_exim_lists() {
    let p = common::Provider::new(false);
    let queue = |rcpt: &str| p.queue("s@sender.example", &[rcpt], "removal", "body\n");
    let file = |id: &str, suffix: &str| p.spool().join("input").join(format!("{id}{suffix}"));
    let msglog = |id: &str| p.spool().join("msglog").join(id);
    // Every recipient journaled, as odmrd does before removing.
    let journaled = |rcpt: &str| {
        let id = queue(rcpt);
        fs::write(file(&id, "-J"), format!("{rcpt}\n")).unwrap();
        common::chown_tree(&file(&id, "-J"), p.uid, p.gid);
        id
    };
    let before_any_unlink = journaled("a@example.org");
    let after_h = journaled("b@example.org");
    fs::remove_file(file(&after_h, "-H")).unwrap();
    let after_d = journaled("c@example.org");
    for path in [file(&after_d, "-H"), msglog(&after_d), file(&after_d, "-D")] {
        fs::remove_file(path).unwrap();
    }
    let exims_own_after_d = journaled("d@example.org");
    for path in [msglog(&exims_own_after_d), file(&exims_own_after_d, "-D")] {
        fs::remove_file(path).unwrap();
    }
    let pending = queue("e@example.org");

    // What odmrd's order leaves is invisible to Exim at once.
    let listed = p.ids(&[]);
    assert_eq!(listed, common::set(&[&before_any_unlink, &exims_own_after_d, &pending]));

    let mut c = support::odmrd::start_inetd_command(p.odmrd_command(common::RunAs::EximUser));
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(support::odmrd::EHLO_NAME, &["PIPELINING"]);
    let (_, rcpts, _) = c.receive_one();
    assert_eq!(rcpts, ["RCPT TO:<e@example.org>"]);
    c.expect_quit();
    let (_, log) = c.finish();

    for id in [&before_any_unlink, &after_h, &after_d, &pending] {
        for path in [file(id, "-H"), file(id, "-D"), file(id, "-J"), msglog(id)] {
            assert!(!path.exists(), "{} left behind\n{log}", path.display());
        }
    }
    assert!(log.contains(&format!("id={before_any_unlink} every recipient was journaled")), "{log}");
    for id in [&after_h, &after_d] {
        assert!(log.contains(&format!("id={id} removed what an interrupted removal left")), "{log}");
    }
    // Exim's own window: not ours to delete without a -D to lock; the operator is told.
    assert!(log.contains(&format!("exim -Mrm {exims_own_after_d}")), "{log}");
    assert_eq!(p.ids(&[]), common::set(&[&exims_own_after_d]));
}
