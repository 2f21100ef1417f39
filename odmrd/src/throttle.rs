//! Authentication throttling across connections, per client address.
//!
//! This module owns the memory of failed AUTH attempts by client address and
//! the decisions drawn from it (after Dovecot's auth penalty and Postfix's
//! `smtpd_client_auth_rate_limit`):
//!
//! - **Penalty**: after a failure from an address, its next AUTH waits
//!   `address_penalty` (2 s), doubling with each further consecutive failure
//!   up to `address_max_penalty` (15 s). Attempts from one address are
//!   serialised: each reserves its turn as if it were going to fail, so ten
//!   parallel sessions from one address guess no faster than one (a success
//!   gives the turn back at once); an attempt whose turn is further away than
//!   `address_max_penalty` is refused (421) instead of queued.
//! - **Cap**: `address_max_failures` (20) failures within
//!   `address_failure_window` (1 h) from one address, and it gets 421, at
//!   connect and at AUTH, until the window that began with its first failure
//!   ends.
//!
//! A success from the address ends the penalty (not the cap's count). An
//! address without failures keeps no record once its attempt succeeded, and
//! waits only for an attempt of its own still in progress.
//!
//! **Addresses**: IPv4 (and IPv4-mapped IPv6) addresses count one by one;
//! IPv6 addresses count per /64. A /64 is the smallest network an IPv6 site
//! is given (SLAAC needs it), and one host can pick any of its 2^64 interface
//! addresses at will, so counting single IPv6 addresses would count nothing.
//! A /48 would be harder to evade but is often a whole organisation or many
//! of an ISP's customers, who would then share one guesser's penalty and cap;
//! an attacker holding a whole /48 is the residual risk, bounded per /64.
//!
//! **Where the record lives** ([`Store`]): a standalone daemon keeps the table
//! in memory, shared by its session threads ([`Throttle::in_memory`]); under
//! inetd, where each connection is its own process, it lives in a small state
//! file under `lock_directory` ([`Throttle::in_file`]), read and rewritten
//! under an exclusive `flock`. Both hold at most [`MAX_ENTRIES`] addresses and
//! drop an address's record once it has no effect any more (no failure within
//! a window, no turn reserved).
//!
//! It does not sleep, speak SMTP or hold session slots: it answers how long
//! to wait and whether to refuse; the session waits through its [`Gate`],
//! which lets the server free the waiting session's place meanwhile, and the
//! session and server send the replies and log the decisions. The policy's
//! arithmetic is in pure functions over a [`Record`] and a time in
//! milliseconds, tested by tables without sleeping.

use crate::config::AuthConfig;
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Most addresses remembered; when full, records without effect go first,
/// then the least recently active. Bounds the memory of the standalone daemon
/// and the state file (about 100 bytes an address) against address floods.
pub const MAX_ENTRIES: usize = 2048;

/// The state file's name under `lock_directory` (domain lock files all end in
/// `.lock`, so it cannot collide with one).
pub const STATE_FILE: &str = "auth-throttle.state";

/// Milliseconds since the Unix epoch: the clock of every record, shared by
/// processes (so not `Instant`).
pub type Millis = u64;

/// The throttling policy: the four `[auth] address_*` keys, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub penalty: Millis,
    pub max_penalty: Millis,
    pub max_failures: u32,
    pub window: Millis,
}

/// What is known of one address (one IPv4 address or IPv6 /64).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Record {
    /// When the current counting window began (its first failure).
    pub window_start: Millis,
    /// Failures within the current window.
    pub failures: u32,
    /// Attempts since the last success (each counts from its start, as the
    /// failure it may be): the penalty's exponent.
    pub streak: u32,
    /// The latest attempt or failure.
    pub last_attempt: Millis,
    /// The earliest time the next attempt may proceed (turns are reserved).
    pub next_turn: Millis,
}

/// Why an address is refused (421).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `address_max_failures` reached; refused for `retry_after` more (the
    /// rest of the window).
    Capped { failures: u32, retry_after: Millis },
    /// Its next turn is further away than `address_max_penalty`: other
    /// sessions from the address already queue for their attempts.
    Busy { turn_in: Millis },
}

/// What an AUTH attempt from an address must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Proceed after waiting this long (0: at once).
    Proceed {
        wait: Millis,
    },
    Refuse(Refusal),
}

impl fmt::Display for Refusal {
    /// The log fields of a refusal: `decision=refuse reason=...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Capped { failures, retry_after } => write!(
                f,
                "decision=refuse reason=too-many-failures failures={failures} retry_after_s={}",
                retry_after.div_ceil(1000)
            ),
            Refusal::Busy { turn_in } => {
                write!(f, "decision=refuse reason=attempts-queued turn_in_ms={turn_in}")
            }
        }
    }
}

impl Refusal {
    /// The text of the 421 reply.
    pub fn reply_text(&self) -> &'static str {
        match self {
            Refusal::Capped { .. } => "Too many authentication failures from your address, try again later",
            Refusal::Busy { .. } => {
                "Too many authentication attempts from your address at once, try again later"
            }
        }
    }
}

impl Policy {
    pub fn from_config(auth: &AuthConfig) -> Policy {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Policy {
            penalty: ms(auth.address_penalty),
            max_penalty: ms(auth.address_max_penalty),
            max_failures: auth.address_max_failures,
            window: ms(auth.address_failure_window),
        }
    }

    /// The wait before the attempt that follows `streak` consecutive failures:
    /// 0, then `penalty` doubling up to `max_penalty`.
    pub fn penalty_after(&self, streak: u32) -> Millis {
        match streak {
            0 => 0,
            n => self.penalty.saturating_mul(1u64 << (n - 1).min(32)).min(self.max_penalty),
        }
    }

    /// Forget what lies a whole window in the past: the count when its window
    /// has ended, the penalty when the last attempt is a window old.
    fn age(&self, record: &mut Record, now: Millis) {
        if now >= record.window_start.saturating_add(self.window) {
            record.failures = 0;
        }
        if now >= record.last_attempt.saturating_add(self.window) {
            record.streak = 0;
        }
    }

    fn capped(&self, record: &Record, now: Millis) -> Option<Refusal> {
        (record.failures >= self.max_failures).then(|| Refusal::Capped {
            failures: record.failures,
            retry_after: record.window_start.saturating_add(self.window).saturating_sub(now),
        })
    }

    /// At connect: is the address refused outright? Changes nothing.
    pub fn on_connect(&self, record: &Record, now: Millis) -> Option<Refusal> {
        let mut record = *record;
        self.age(&mut record, now);
        self.capped(&record, now).or_else(|| {
            let turn_in = record.next_turn.saturating_sub(now);
            (turn_in > self.max_penalty).then_some(Refusal::Busy { turn_in })
        })
    }

    /// An AUTH attempt begins: refuse it, or reserve its turn and say how long
    /// to wait for it.
    pub fn attempt(&self, record: &mut Record, now: Millis) -> Decision {
        self.age(record, now);
        if let Some(refusal) = self.capped(record, now) {
            return Decision::Refuse(refusal);
        }
        if record.failures == 0 {
            // An address without failures never waits: several customers behind one NAT, or
            // one customer's parallel polls, log in at once. Turns start with the first failure.
            record.last_attempt = now;
            return Decision::Proceed { wait: 0 };
        }
        let turn = record.next_turn.max(now);
        let wait = turn - now;
        if wait > self.max_penalty {
            return Decision::Refuse(Refusal::Busy { turn_in: wait });
        }
        // Until it is decided, the attempt counts as the failure it may be: a
        // parallel attempt from the address takes the turn after its penalty.
        record.streak = record.streak.saturating_add(1);
        record.last_attempt = now;
        record.next_turn = turn.saturating_add(self.penalty_after(record.streak));
        Decision::Proceed { wait }
    }

    /// An attempt has waited for its turn: refused if the address reached its
    /// cap meanwhile (through the attempts whose turns came first).
    pub fn after_wait(&self, record: &Record, now: Millis) -> Option<Refusal> {
        let mut record = *record;
        self.age(&mut record, now);
        self.capped(&record, now)
    }

    /// The attempt (begun with [`Policy::attempt`]) failed: count it; Some
    /// when the address is now capped.
    pub fn failed(&self, record: &mut Record, now: Millis) -> Option<Refusal> {
        self.age(record, now);
        if record.failures == 0 {
            record.window_start = now;
        }
        record.failures = record.failures.saturating_add(1);
        record.streak = record.streak.max(1);
        record.last_attempt = now;
        record.next_turn = record.next_turn.max(now.saturating_add(self.penalty_after(record.streak)));
        self.capped(record, now)
    }

    /// The attempt succeeded: the penalty ends; the window's count stays.
    pub fn succeeded(&self, record: &mut Record, now: Millis) {
        self.age(record, now);
        record.streak = 0;
        record.next_turn = now;
    }

    /// Has the record no effect any more (it may be dropped)?
    pub fn is_spent(&self, record: &Record, now: Millis) -> bool {
        let mut aged = *record;
        self.age(&mut aged, now);
        aged.failures == 0 && aged.streak == 0 && aged.next_turn <= now
    }
}

/// The key an address is counted under: the IPv4 address (also when mapped
/// into IPv6), or the IPv6 /64 network.
pub fn address_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => format!("{}/64", Ipv6Addr::from(u128::from(v6) & (!0u128 << 64))),
        },
    }
}

/// Is `text` something [`address_key`] returns?
fn is_address_key(text: &str) -> bool {
    match text.strip_suffix("/64") {
        Some(network) => network.parse::<Ipv6Addr>().is_ok_and(|ip| address_key(IpAddr::V6(ip)) == text),
        None => text.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

/// The records of all addresses, by [`address_key`].
pub type Table = HashMap<String, Record>;

/// Where the table lives. `with_table` runs `change` on the whole table with
/// every other user of the store (thread or process) excluded meanwhile.
pub trait Store: Send + Sync {
    fn with_table(&self, change: &mut dyn FnMut(&mut Table)) -> io::Result<()>;
}

/// The standalone daemon's store: one table shared by its threads.
#[derive(Default)]
pub struct MemoryStore(Mutex<Table>);

impl Store for MemoryStore {
    fn with_table(&self, change: &mut dyn FnMut(&mut Table)) -> io::Result<()> {
        change(&mut self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
        Ok(())
    }
}

/// The inetd store: a text file, one address a line
/// (`KEY WINDOW_START FAILURES STREAK LAST_ATTEMPT NEXT_TURN`, times in ms
/// since the epoch), read and rewritten in place under an exclusive `flock`
/// (not replaced by rename, which would split the lock from the file). A line
/// that does not parse (a crash mid-write, garbage) is dropped with the next
/// rewrite: at worst records are forgotten, never is the store unusable.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: PathBuf) -> FileStore {
        FileStore { path }
    }

    fn open(&self) -> io::Result<File> {
        if let Some(directory) = self.path.parent().filter(|d| !d.is_dir()) {
            std::fs::DirBuilder::new().recursive(true).mode(0o750).create(directory)?;
        }
        crate::locks::open_lock_file(&self.path)
    }
}

const FILE_HEADER: &str =
    "# odmrd auth throttle: KEY WINDOW_START FAILURES STREAK LAST_ATTEMPT NEXT_TURN (ms)\n";

/// Public only for the fuzz targets and property tests (`fuzz/`).
#[doc(hidden)]
pub fn parse_table(text: &str) -> Table {
    let parse_line = |line: &str| -> Option<(String, Record)> {
        let mut words = line.split(' ');
        let key = words.next().filter(|&key| is_address_key(key))?.to_string();
        let mut number = || words.next()?.parse::<u64>().ok();
        let record = Record {
            window_start: number()?,
            failures: u32::try_from(number()?).ok()?,
            streak: u32::try_from(number()?).ok()?,
            last_attempt: number()?,
            next_turn: number()?,
        };
        Some((key, record))
    };
    text.lines().filter_map(parse_line).take(MAX_ENTRIES).collect()
}

#[doc(hidden)]
pub fn format_table(table: &Table) -> String {
    let mut text = String::from(FILE_HEADER);
    for (key, r) in table {
        text.push_str(&format!(
            "{key} {} {} {} {} {}\n",
            r.window_start, r.failures, r.streak, r.last_attempt, r.next_turn
        ));
    }
    text
}

impl Store for FileStore {
    /// Errors name the file.
    fn with_table(&self, change: &mut dyn FnMut(&mut Table)) -> io::Result<()> {
        self.rewrite(change).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }
}

impl FileStore {
    fn rewrite(&self, change: &mut dyn FnMut(&mut Table)) -> io::Result<()> {
        let file = self.open()?;
        let mut file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, errno)| io::Error::from(errno))?;
        let mut bytes = Vec::new();
        // Bounded read: a file grown beyond any table we write is not ours to trust whole.
        (&*file).take((MAX_ENTRIES as u64 + 1) * 128).read_to_end(&mut bytes)?;
        let mut table = parse_table(&String::from_utf8_lossy(&bytes));
        let before = table.clone();
        change(&mut table);
        if table != before {
            file.set_len(0)?;
            file.rewind()?;
            file.write_all(format_table(&table).as_bytes())?;
        }
        Ok(())
    }
}

/// The policy over a store, with a clock.
pub struct Throttle {
    policy: Policy,
    store: Box<dyn Store>,
    clock: fn() -> Millis,
}

/// Now, in [`Millis`].
pub fn system_clock() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

impl Throttle {
    pub fn new(policy: Policy, store: Box<dyn Store>, clock: fn() -> Millis) -> Throttle {
        Throttle { policy, store, clock }
    }

    /// The standalone daemon's throttle.
    pub fn in_memory(auth: &AuthConfig) -> Throttle {
        Throttle::new(Policy::from_config(auth), Box::<MemoryStore>::default(), system_clock)
    }

    /// inetd's throttle: the state file under `lock_directory`.
    pub fn in_file(auth: &AuthConfig, lock_directory: &Path) -> Throttle {
        let store = FileStore::new(lock_directory.join(STATE_FILE));
        Throttle::new(Policy::from_config(auth), Box::new(store), system_clock)
    }

    /// Apply `step` to `ip`'s record, drop every spent record, keep the bound.
    /// When the store fails, log it and answer `fallback` (throttling fails
    /// open; the per-session `max_failures` still holds).
    fn update<R>(&self, ip: IpAddr, fallback: R, step: impl FnOnce(&Policy, &mut Record, Millis) -> R) -> R {
        let key = address_key(ip);
        let now = (self.clock)();
        let policy = &self.policy;
        let mut step = Some(step);
        let mut result = None;
        let outcome = self.store.with_table(&mut |table| {
            let Some(step) = step.take() else { return };
            table.retain(|_, record| !policy.is_spent(record, now));
            if !table.contains_key(&key) {
                make_room(table);
            }
            let mut record = table.get(&key).copied().unwrap_or_default();
            result = Some(step(policy, &mut record, now));
            if policy.is_spent(&record, now) {
                table.remove(&key);
            } else {
                table.insert(key.clone(), record);
            }
        });
        if let Err(e) = outcome {
            crate::log::Event::new("throttle")
                .field("client", ip)
                .field("result", "unavailable")
                .field("error", e)
                .error();
        }
        result.unwrap_or(fallback)
    }

    /// At connect: Some(refusal) when the address is to get 421 at once.
    pub fn on_connect(&self, ip: IpAddr) -> Option<Refusal> {
        self.update(ip, None, |policy, record, now| policy.on_connect(record, now))
    }

    /// An AUTH attempt from `ip` begins.
    pub fn attempt(&self, ip: IpAddr) -> Decision {
        self.update(ip, Decision::Proceed { wait: 0 }, |policy, record, now| policy.attempt(record, now))
    }

    /// An AUTH attempt from `ip` has waited for its turn: Some when the
    /// address was capped meanwhile.
    pub fn after_wait(&self, ip: IpAddr) -> Option<Refusal> {
        self.update(ip, None, |policy, record, now| policy.after_wait(record, now))
    }

    /// An AUTH attempt from `ip` failed; Some when the address is now capped.
    pub fn failed(&self, ip: IpAddr) -> Option<Refusal> {
        self.update(ip, None, |policy, record, now| policy.failed(record, now))
    }

    /// An AUTH attempt from `ip` succeeded.
    pub fn succeeded(&self, ip: IpAddr) {
        self.update(ip, (), |policy, record, now| policy.succeeded(record, now))
    }
}

/// While the table is full, drop the record least recently active.
fn make_room(table: &mut Table) {
    while table.len() >= MAX_ENTRIES {
        let Some(oldest) = table.iter().min_by_key(|(_, r)| r.last_attempt).map(|(k, _)| k.clone()) else {
            break;
        };
        table.remove(&oldest);
    }
}

/// The throttle as one session sees it: its client's address, and how to
/// wait (the server passes a wait that frees the session's place in
/// `max_sessions` meanwhile).
pub struct Gate<'a> {
    throttle: Option<(&'a Throttle, IpAddr)>,
    wait: &'a (dyn Fn(Duration) + Sync),
}

impl Gate<'static> {
    /// No throttling (peer unknown, tests, benchmarks); waits just sleep.
    pub fn open() -> Gate<'static> {
        Gate { throttle: None, wait: &std::thread::sleep }
    }
}

impl<'a> Gate<'a> {
    /// Throttle `peer` (when known) with `throttle`, waiting through `wait`.
    pub fn new(
        throttle: &'a Throttle,
        peer: Option<IpAddr>,
        wait: &'a (dyn Fn(Duration) + Sync),
    ) -> Gate<'a> {
        Gate { throttle: peer.map(|ip| (throttle, ip)), wait }
    }

    /// Wait `duration` without holding a place another address needs.
    pub fn wait(&self, duration: Duration) {
        if !duration.is_zero() {
            (self.wait)(duration)
        }
    }

    /// An AUTH attempt begins: the decision (Proceed{0} when not throttled).
    /// The caller logs; on Proceed it waits (through [`Gate::wait`]) and
    /// then asks [`Gate::after_wait`].
    pub fn attempt(&self) -> Decision {
        self.throttle.map_or(Decision::Proceed { wait: 0 }, |(throttle, ip)| throttle.attempt(ip))
    }

    pub fn after_wait(&self) -> Option<Refusal> {
        self.throttle.and_then(|(throttle, ip)| throttle.after_wait(ip))
    }

    pub fn failed(&self) -> Option<Refusal> {
        self.throttle.and_then(|(throttle, ip)| throttle.failed(ip))
    }

    pub fn succeeded(&self) {
        if let Some((throttle, ip)) = self.throttle {
            throttle.succeeded(ip)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// Dovecot's 2 s doubling to 15 s; 3 failures per minute.
    const POLICY: Policy = Policy { penalty: 2000, max_penalty: 15_000, max_failures: 3, window: 60_000 };

    #[test]
    fn the_penalty_doubles_from_its_start_to_its_maximum() {
        let off = Policy { penalty: 0, max_penalty: 0, ..POLICY };
        let cases = [(0, 0, 0), (1, 2000, 0), (2, 4000, 0), (3, 8000, 0), (4, 15_000, 0), (5, 15_000, 0)];
        for (streak, dovecot, none) in cases.into_iter().chain([(40, 15_000, 0), (u32::MAX, 15_000, 0)]) {
            assert_eq!(POLICY.penalty_after(streak), dovecot, "streak {streak}");
            assert_eq!(off.penalty_after(streak), none, "streak {streak}, penalty 0");
        }
    }

    /// One step of an address's history and what the policy must answer.
    #[derive(Debug)]
    enum Step {
        Connect(u64, Option<Refusal>),
        Attempt(u64, Decision),
        AfterWait(u64, Option<Refusal>),
        Fail(u64, Option<Refusal>),
        Succeed(u64),
    }
    use Step::*;

    fn proceed(wait: Millis) -> Decision {
        Decision::Proceed { wait }
    }

    fn capped(failures: u32, retry_after: Millis) -> Option<Refusal> {
        Some(Refusal::Capped { failures, retry_after })
    }

    fn play(policy: Policy, steps: &[Step]) {
        let mut record = Record::default();
        for (n, step) in steps.iter().enumerate() {
            let context = format!("step {n}: {step:?}, record {record:?}");
            match *step {
                Connect(now, expected) => assert_eq!(policy.on_connect(&record, now), expected, "{context}"),
                Attempt(now, expected) => assert_eq!(policy.attempt(&mut record, now), expected, "{context}"),
                AfterWait(now, expected) => {
                    assert_eq!(policy.after_wait(&record, now), expected, "{context}")
                }
                Fail(now, expected) => assert_eq!(policy.failed(&mut record, now), expected, "{context}"),
                Succeed(now) => policy.succeeded(&mut record, now),
            }
        }
    }

    #[test]
    fn histories_table() {
        let lenient = Policy { max_failures: 100, window: 3_600_000, ..POLICY };
        let busy = |turn_in| Decision::Refuse(Refusal::Busy { turn_in });
        #[rustfmt::skip]
        let cases: Vec<(&str, Policy, Vec<Step>)> = vec![
            ("an address without failures never waits, not even for parallel attempts", POLICY, vec![
                Connect(0, None), Attempt(0, proceed(0)), Succeed(5), Attempt(6, proceed(0)), Succeed(7),
                Attempt(8, proceed(0)), Attempt(9, proceed(0)), Attempt(9, proceed(0)), Attempt(9, proceed(0)),
                Attempt(9, proceed(0)), Attempt(9, proceed(0)), Succeed(10), Attempt(11, proceed(0)),
            ]),
            ("one guesser waits 2, 4, 8, 15, 15 s", lenient, vec![
                Attempt(0, proceed(0)), Fail(0, None),
                Attempt(10, proceed(1990)), Fail(2000, None),
                Attempt(2000, proceed(4000)), Fail(6000, None),
                Attempt(6000, proceed(8000)), Fail(14_000, None),
                Attempt(14_000, proceed(15_000)), Fail(29_000, None),
                Attempt(29_000, proceed(15_000)),
            ]),
            ("after a failure, parallel attempts take turns; one beyond the maximum penalty is refused", lenient, vec![
                Attempt(0, proceed(0)), Fail(0, None),
                Attempt(0, proceed(2000)), Attempt(0, proceed(6000)),
                Attempt(0, proceed(14_000)), Attempt(0, busy(29_000)),
                Connect(0, Some(Refusal::Busy { turn_in: 29_000 })),
                Fail(2000, None), Fail(6000, None), Fail(14_000, None),
                Attempt(14_000, proceed(15_000)),
                // A refusal reserves nothing: once the next free turn (44 s) is near, one waits for it.
                Attempt(16_000, busy(28_000)), Connect(29_000, None), Attempt(29_000, proceed(15_000)),
            ]),
            ("the cap refuses at the third failure until the window ends", POLICY, vec![
                Attempt(1000, proceed(0)), Fail(1000, None),
                Attempt(3000, proceed(0)), Fail(3000, None), Connect(3000, None),
                // Two attempts take their turns; the first reaches the cap, so the second,
                // done waiting, is refused without its guess.
                Attempt(3000, proceed(4000)), Attempt(3000, proceed(12_000)),
                AfterWait(7000, None), Fail(7000, capped(3, 54_000)),
                AfterWait(15_000, capped(3, 46_000)),
                Connect(7000, capped(3, 54_000)),
                Attempt(60_000, Decision::Refuse(Refusal::Capped { failures: 3, retry_after: 1000 })),
                // The window began at the first failure (t=1 s): at 61 s it is over,
                Connect(61_000, None),
                // but the penalty of the streak stays until a window after the last attempt.
                Attempt(61_000, proceed(0)), Fail(61_000, None), Attempt(61_000, proceed(15_000)),
            ]),
            ("a success ends the penalty but not the count", POLICY, vec![
                Attempt(0, proceed(0)), Fail(0, None), Attempt(0, proceed(2000)), Fail(2000, None),
                Attempt(2000, proceed(4000)), Succeed(6000),
                Attempt(6000, proceed(0)), Fail(6000, capped(3, 54_000)),
            ]),
            ("a streak is forgotten a window after its last attempt", POLICY, vec![
                Attempt(0, proceed(0)), Fail(0, None), Attempt(0, proceed(2000)), Fail(2000, None),
                Attempt(62_000, proceed(0)), Fail(62_000, None), Attempt(62_000, proceed(2000)),
            ]),
            ("no penalty configured: only the cap", Policy { penalty: 0, max_penalty: 0, ..POLICY }, vec![
                Attempt(0, proceed(0)), Fail(0, None), Attempt(0, proceed(0)), Attempt(0, proceed(0)),
                Fail(0, None), Fail(0, capped(3, 60_000)),
                Attempt(1, Decision::Refuse(Refusal::Capped { failures: 3, retry_after: 59_999 })),
            ]),
        ];
        for (name, policy, steps) in cases {
            eprintln!("history: {name}");
            play(policy, &steps);
        }
    }

    #[test]
    fn a_record_is_spent_once_a_window_passed_since_its_last_attempt_and_its_turn() {
        let fresh = Record::default();
        assert!(POLICY.is_spent(&fresh, 0));
        let mut record = Record::default();
        POLICY.failed(&mut record, 1000);
        assert!(!POLICY.is_spent(&record, 1000));
        assert!(!POLICY.is_spent(&record, 60_999));
        assert!(POLICY.is_spent(&record, 61_000));
        record.next_turn = 70_000;
        assert!(!POLICY.is_spent(&record, 61_000));
    }

    #[test]
    fn addresses_count_one_by_one_for_ipv4_and_per_64_for_ipv6() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
            ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
            ("::1", "::/64"),
        ];
        for (address, key) in cases {
            assert_eq!(address_key(address.parse().unwrap()), key, "{address}");
        }
    }

    thread_local! {
        /// The injected clock of the store tests (each test runs on its own thread).
        static NOW: Cell<Millis> = const { Cell::new(1_000_000) };
    }

    fn test_clock() -> Millis {
        NOW.with(Cell::get)
    }

    fn advance(ms: Millis) {
        NOW.with(|now| now.set(now.get() + ms));
    }

    fn file_throttle(path: &Path) -> Throttle {
        Throttle::new(POLICY, Box::new(FileStore::new(path.to_path_buf())), test_clock)
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn processes_share_the_count_through_the_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/odmrd").join(STATE_FILE);
        let (guesser, other) = (ip("192.0.2.1"), ip("192.0.2.2"));
        // One Throttle per "process", each opening the file afresh.
        assert_eq!(file_throttle(&path).failed(guesser), None);
        assert_eq!(file_throttle(&path).attempt(guesser), proceed(2000));
        assert_eq!(file_throttle(&path).failed(guesser), None);
        assert!(matches!(file_throttle(&path).failed(guesser), Some(Refusal::Capped { failures: 3, .. })));
        assert!(file_throttle(&path).on_connect(guesser).is_some());
        assert_eq!(file_throttle(&path).on_connect(other), None);
        assert_eq!(file_throttle(&path).attempt(other), proceed(0));
        assert_eq!(
            file_throttle(&path).attempt(other),
            proceed(0),
            "an address without failures never waits"
        );
        file_throttle(&path).succeeded(other);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# odmrd auth throttle"), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("192.0.2.1 ")).count(), 1, "{text}");
        assert!(!text.contains("192.0.2.2"), "an address without failures leaves no record: {text}");
    }

    #[test]
    fn the_state_file_drops_spent_records_and_unreadable_lines_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let throttle = file_throttle(&path);
        for n in 0..5 {
            throttle.failed(ip(&format!("192.0.2.{n}")));
        }
        let mut damaged = std::fs::read(&path).unwrap();
        damaged.extend_from_slice(b"garbage line\n2001:db8::/64 1 x\n");
        // Lines whose records would still have effect, but whose keys are no address keys.
        let now = test_clock();
        for key in ["\u{fffd}", "2001:db8::1/64", "192.0.2.300", "::ffff:192.0.2.1"] {
            damaged.extend_from_slice(format!("{key} {now} 1 1 {now} {now}\n").as_bytes());
        }
        damaged.extend_from_slice(b"\xff\xfe");
        damaged.extend_from_slice(format!(" {now} 1 1 {now} {now}\n").as_bytes());
        std::fs::write(&path, damaged).unwrap();
        assert_eq!(throttle.failed(ip("192.0.2.0")), None);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1 + 5, "the records survive, the garbage goes: {text}");

        advance(POLICY.window + 20_000);
        throttle.failed(ip("198.51.100.1"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().skip(1).collect::<Vec<_>>().len(), 1, "{text}");
        assert!(text.lines().nth(1).unwrap().starts_with("198.51.100.1 "), "{text}");

        // A full file (as an address flood leaves it), then 50 more addresses.
        let now = test_clock();
        let flood: Table = (0..MAX_ENTRIES as u32)
            .map(|n| {
                let record = Record {
                    window_start: now,
                    failures: 1,
                    streak: 1,
                    last_attempt: now + u64::from(n),
                    next_turn: now,
                };
                (std::net::Ipv4Addr::from(0x0a00_0000 + n).to_string(), record)
            })
            .collect();
        std::fs::write(&path, format_table(&flood)).unwrap();
        advance(MAX_ENTRIES as u64);
        for n in 0..50 {
            throttle.failed(ip(&format!("203.0.113.{n}")));
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1 + MAX_ENTRIES, "bounded");
        assert!(text.len() < MAX_ENTRIES * 100, "{} bytes", text.len());
        for (n, gone) in [(0, true), (49, true), (50, false), (MAX_ENTRIES as u32 - 1, false)] {
            let key = format!("{} ", std::net::Ipv4Addr::from(0x0a00_0000 + n));
            assert_eq!(!text.contains(&key), gone, "{key}: the oldest failures are dropped first");
        }
        assert!(text.contains("203.0.113.49 "));
    }

    #[test]
    fn threads_share_the_memory_table() {
        let throttle = Throttle::new(
            Policy { max_failures: 1000, ..POLICY },
            Box::<MemoryStore>::default(),
            system_clock,
        );
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for _ in 0..25 {
                        let _ = throttle.failed(ip("2001:db8::1"));
                    }
                });
            }
        });
        assert_eq!(throttle.failed(ip("2001:db8::2")), None);
        let mut failures = 0;
        throttle.store.with_table(&mut |table| failures = table["2001:db8::/64"].failures).unwrap();
        assert_eq!(failures, 8 * 25 + 1);
    }

    #[test]
    fn an_unusable_state_file_fails_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::create_dir(&path).unwrap();
        let throttle = file_throttle(&path);
        for _ in 0..5 {
            assert_eq!(throttle.failed(ip("192.0.2.1")), None);
        }
        assert_eq!(throttle.attempt(ip("192.0.2.1")), proceed(0));
    }
}
