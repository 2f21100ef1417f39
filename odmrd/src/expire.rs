//! `odmrd --expire [--dry-run]`: mail nobody collects does not stay for ever,
//! and its sender hears of it.
//!
//! Owns: the expiry pass over every domain the queue lists: recipients held
//! longer than `[queue] max_hold` are bounced (RFC 3464, `Action: failed`,
//! `Status: 4.4.7`, honouring NOTIFY, none for `<>`) and removed through the
//! queue cursor; messages older than `delay_warning` get one delay DSN
//! (`Action: delayed`) for the recipients that want one; the state file that
//! makes that "one"; and the standalone daemon's periodic run. Does not:
//! compose DSNs (`bounce`), read queue formats (the backend) or decide a
//! collection's outcome (`relay`).
//!
//! Safety against loss and repeats:
//! - a domain is expired only under the same per-domain lock a collection
//!   takes (`locks::Locker`: flock or the shared database), and through the backend's cursor (which takes the
//!   backend's own locks): a session never sees a message half expired;
//! - a recipient is removed only after its DSN was accepted by the sendmail
//!   command (or when none is due): a kill between the two leaves it queued,
//!   so the next run bounces it again. That is the documented window: at most
//!   one duplicate DSN per kill, never a loss;
//! - a delay warning is recorded in the state file (written atomically)
//!   before it is sent: a kill between the two loses that warning, it never
//!   sends two.

use crate::backend::Backends;
use crate::bounce::{self, Action, Failure, Report};
use crate::config::Config;
use crate::config::PluginSource;
use crate::listing;
use crate::locks::{LockError, Locker};
use crate::log;
use crate::relay::BodyCopy;
use odmr_api::host::{MailQueue, QueueCursor};
use odmr_api::params::{Notify, Ret};
use odmr_api::{Envelope, Outcome, Status};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state file under `[queue] state_directory`: one line per message that
/// was sent its delay warning, `domain TAB id`.
pub const DELAY_STATE: &str = "delay-warned";

/// How often a standalone odmrd runs the expiry pass.
pub const PERIOD: Duration = Duration::from_secs(3600);
/// How long after its start a standalone odmrd runs its first pass: not in
/// the rush of the first collections, yet soon enough for a daemon that is
/// restarted more often than [`PERIOD`].
pub const FIRST_PASS: Duration = Duration::from_secs(300);

/// What one pass did (or, with `--dry-run`, would do).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Recipients bounced and removed.
    pub expired: usize,
    /// DSNs submitted for them (fewer than `expired` with NOTIFY=NEVER,
    /// a NOTIFY without FAILURE, or the null sender).
    pub failure_dsns: usize,
    /// Delay DSNs submitted.
    pub delay_dsns: usize,
    /// Domains skipped because a collection held them.
    pub busy: Vec<String>,
    /// Problems that left mail queued (logged).
    pub errors: usize,
    /// "Mail is waiting" notices run (`notify`).
    pub notices: usize,
}

impl std::fmt::Display for Summary {
    /// `expired=N failure_dsns=N delay_dsns=N notices=N busy_domains=N errors=N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "expired={} failure_dsns={} delay_dsns={} notices={} busy_domains={} errors={}",
            self.expired,
            self.failure_dsns,
            self.delay_dsns,
            self.notices,
            self.busy.len(),
            self.errors
        )
    }
}

/// Why no pass ran.
#[derive(Debug)]
pub enum Refusal {
    /// `builtin:exim`: Exim's retry rules expire its queue.
    EximsJob,
    /// The backend cannot list its queue, or failed to.
    Listing(Status),
    /// The state directory cannot be used.
    State(PathBuf, io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::EximsJob => f.write_str(
                "builtin:exim: expiry is Exim's job (its retry rules and timeout_frozen_after); nothing changed",
            ),
            Refusal::Listing(status) => write!(f, "the queue backend cannot list its domains: {status:?}"),
            Refusal::State(path, e) => write!(f, "state file {}: {e}", path.display()),
        }
    }
}

/// One expiry pass at `now` over every domain the queue lists. Each action
/// is written as one line to `out` (and logged); `dry_run` changes nothing
/// and sends nothing.
pub fn run(
    config: &Config,
    backends: &Backends,
    now: SystemTime,
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<Summary, Refusal> {
    let queue = &backends.queue;
    if config.queue.source == PluginSource::Builtin("exim".into()) {
        return Err(Refusal::EximsJob);
    }
    let hold = &config.hold;
    let mut summary = Summary::default();
    if hold.max_hold.is_none() && hold.delay_warning.is_none() && hold.notify_after.is_none() {
        return Ok(summary);
    }
    let listed = listing::gather(queue, &[]).map_err(Refusal::Listing)?;
    let state_path = hold.state_directory.join(DELAY_STATE);
    let mut warned = read_pairs(&state_path).map_err(|e| Refusal::State(state_path.clone(), e))?;
    // Forget what is no longer queued, so the file stays small.
    let queued: BTreeSet<(String, String)> = listed
        .iter()
        .flat_map(|(d, dom)| dom.messages.iter().map(move |m| (d.clone(), m.id.clone())))
        .collect();
    warned.retain(|k| queued.contains(k));
    let last_replies: HashMap<(String, String, String), String> = listed
        .iter()
        .flat_map(|(d, dom)| {
            dom.messages.iter().flat_map(move |m| {
                m.recipients
                    .iter()
                    .map(move |(r, reply)| ((d.clone(), m.id.clone(), r.clone()), reply.clone()))
            })
        })
        .collect();
    let mut pass = Pass {
        config,
        now,
        dry_run,
        out,
        summary: &mut summary,
        warned: &mut warned,
        state_path: &state_path,
        last_replies: &last_replies,
    };
    for (domain, held) in &listed {
        if domain.is_empty() || !held.messages.iter().any(|m| pass.due(m.arrival).is_some()) {
            continue;
        }
        pass.domain(queue, domain);
    }
    if !dry_run {
        write_pairs(&state_path, &warned).map_err(|e| Refusal::State(state_path.clone(), e))?;
    }
    // The notices look at what is left after expiry (a fresh listing).
    if hold.notify_after.is_some() {
        let listed = listing::gather(queue, &[]).map_err(Refusal::Listing)?;
        let prefix = if dry_run { "dry-run " } else { "" };
        let mut say = |line: &str| {
            let _ = writeln!(out, "{prefix}{line}");
        };
        // Who collects each domain, for the command (none when the store cannot say).
        let accounts = backends.credentials.accounts().unwrap_or_default();
        summary.notices =
            crate::notify::run(&listed, &accounts, hold, now, dry_run, &mut say).map_err(|why| {
                Refusal::State(hold.state_directory.join(crate::notify::STATE), io::Error::other(why))
            })?;
    }
    Ok(summary)
}

/// What is due for a message of a given age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    Expire,
    Warn,
}

struct Pass<'a> {
    config: &'a Config,
    now: SystemTime,
    dry_run: bool,
    out: &'a mut dyn Write,
    summary: &'a mut Summary,
    warned: &'a mut BTreeSet<(String, String)>,
    state_path: &'a Path,
    last_replies: &'a HashMap<(String, String, String), String>,
}

impl Pass<'_> {
    /// What is due for a message that arrived at `arrival` (Unix seconds).
    fn due(&self, arrival: Option<u64>) -> Option<Due> {
        let arrival = UNIX_EPOCH + Duration::from_secs(arrival?);
        let age = self.now.duration_since(arrival).unwrap_or_default();
        let hold = &self.config.hold;
        if hold.max_hold.is_some_and(|max| age >= max) {
            Some(Due::Expire)
        } else if hold.delay_warning.is_some_and(|after| age >= after) {
            Some(Due::Warn)
        } else {
            None
        }
    }

    /// One action line, on `out` and in the log.
    fn say(&mut self, line: &str) {
        let prefix = if self.dry_run { "dry-run " } else { "" };
        let _ = writeln!(self.out, "{prefix}{line}");
        if !self.dry_run {
            log::info(&format!("event=expire {line}"));
        }
    }

    fn problem(&mut self, line: &str) {
        self.summary.errors += 1;
        let _ = writeln!(self.out, "error {line}");
        log::error(&format!("event=expire {line}"));
    }

    /// Expire and warn within one domain, under its collection lock.
    fn domain(&mut self, queue: &MailQueue, domain: &str) {
        let domains = [domain.to_string()];
        // The locker the sessions use: flock, or the shared database's locks.
        let locker = match Locker::new(self.config) {
            Ok(locker) => locker,
            Err(e) => return self.problem(&format!("domain={domain} [server] lock: {e}")),
        };
        let _locks = match locker.acquire(&domains) {
            Ok(locks) => locks,
            Err(LockError::Busy(_)) => {
                self.say(&format!("domain={domain} skipped: being collected"));
                self.summary.busy.push(domain.to_string());
                return;
            }
            Err(e) => return self.problem(&format!("domain={domain} {e}")),
        };
        let mut cursor = match queue.open(&domains) {
            Ok(cursor) => cursor,
            Err(status) => {
                return self.problem(&format!("domain={domain} cannot open the queue: {status:?}"))
            }
        };
        loop {
            let envelope = match cursor.next_message() {
                Ok(Some(envelope)) => envelope,
                Ok(None) => break,
                Err(status) => {
                    // The backend logged why (e.g. a busy seriallock).
                    self.say(&format!("domain={domain} stopped: the queue answered {status:?}"));
                    break;
                }
            };
            let arrival =
                envelope.arrival.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs());
            match self.due(arrival) {
                Some(Due::Expire) => self.expire(&mut cursor, domain, &envelope),
                Some(Due::Warn) => self.warn(&mut cursor, domain, &envelope),
                None => {}
            }
        }
    }

    /// Submit a DSN about `failures` of the cursor's current message, with
    /// the whole message for RET=FULL (as the relay does), else its headers.
    fn submit(
        &self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        failures: &[Failure],
    ) -> Result<(), String> {
        let report = Report {
            reporting_host: &self.config.server.hostname,
            queue_id: &envelope.id,
            sender: &envelope.sender,
            envid: envelope.envid.as_deref(),
            arrival: envelope.arrival,
            failures,
        };
        let full = envelope.ret == Some(Ret::Full) && failures.iter().any(|f| f.action == Action::Expired);
        bounce::submit(&self.config.bounce.sendmail, &report, BodyCopy::unstreamed().original(cursor, full))
    }

    /// What the DSN says of recipient `i`.
    fn failure(&self, domain: &str, envelope: &Envelope, i: usize, action: Action) -> Failure {
        let recipient = envelope.recipients[i].clone();
        Failure {
            reply: self.last_reply(domain, &envelope.id, &recipient),
            recipient,
            action,
            orcpt: envelope.recipient_details(i).orcpt,
        }
    }

    /// The last reply that deferred `rcpt`, if the queue knows it.
    fn last_reply(&self, domain: &str, id: &str, rcpt: &str) -> String {
        self.last_replies
            .get(&(domain.to_string(), id.to_string(), rcpt.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// Bounce every offered recipient of an expired message, then remove them.
    fn expire(&mut self, cursor: &mut QueueCursor, domain: &str, envelope: &Envelope) {
        let id = &envelope.id;
        let wants = |i: usize| envelope.recipient_details(i).notify.on_failure();
        let failures: Vec<Failure> = (0..envelope.recipients.len())
            .filter(|&i| wants(i))
            .map(|i| self.failure(domain, envelope, i, Action::Expired))
            .collect();
        if !envelope.sender.is_empty() && !failures.is_empty() {
            if !self.dry_run {
                if let Err(why) = self.submit(cursor, envelope, &failures) {
                    return self
                        .problem(&format!("domain={domain} id={id} expired but kept: DSN failed: {why}"));
                }
            }
            self.summary.failure_dsns += 1;
        }
        for (i, rcpt) in envelope.recipients.iter().enumerate() {
            let dsn = match envelope.recipient_details(i).notify {
                _ if envelope.sender.is_empty() => "none (null sender)".to_string(),
                notify if notify == Notify::NEVER => "none (NOTIFY=NEVER)".to_string(),
                _ if !wants(i) => "none (NOTIFY without FAILURE)".to_string(),
                _ => format!("to <{}>", envelope.sender),
            };
            self.say(&format!("domain={domain} id={id} to={rcpt} status=expired dsn={dsn}"));
        }
        if self.dry_run {
            self.summary.expired += envelope.recipients.len();
            return;
        }
        let recorded =
            (0..envelope.recipients.len()).try_for_each(|i| cursor.set_outcome(i, Outcome::PermFail));
        match recorded.and_then(|()| cursor.commit()) {
            Ok(()) => self.summary.expired += envelope.recipients.len(),
            Err(status) => {
                self.problem(&format!("domain={domain} id={id} expired but kept: commit {status:?}"))
            }
        }
    }

    /// One delay DSN per message, recorded before it is sent.
    fn warn(&mut self, cursor: &mut QueueCursor, domain: &str, envelope: &Envelope) {
        let key = (domain.to_string(), envelope.id.clone());
        if self.warned.contains(&key) || envelope.sender.is_empty() {
            return;
        }
        let delayed: Vec<Failure> = (0..envelope.recipients.len())
            .filter(|&i| envelope.recipient_details(i).notify.on_delay())
            .map(|i| self.failure(domain, envelope, i, Action::Delayed))
            .collect();
        if delayed.is_empty() {
            return;
        }
        let id = &envelope.id;
        self.say(&format!(
            "domain={domain} id={id} status=delayed recipients={} dsn=to <{}>",
            delayed.len(),
            envelope.sender
        ));
        if self.dry_run {
            self.summary.delay_dsns += 1;
            return;
        }
        self.warned.insert(key);
        if let Err(e) = write_pairs(self.state_path, self.warned) {
            return self.problem(&format!(
                "domain={domain} id={id} no delay DSN: state file {}: {e}",
                self.state_path.display()
            ));
        }
        match self.submit(cursor, envelope, &delayed) {
            Ok(()) => self.summary.delay_dsns += 1,
            Err(why) => {
                self.problem(&format!("domain={domain} id={id} delay DSN failed (not retried): {why}"))
            }
        }
    }
}

/// A state file's `first TAB second` lines (the delay-warned set, the
/// notices' times); a missing file is an empty set.
pub(crate) fn read_pairs(path: &Path) -> io::Result<BTreeSet<(String, String)>> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(d, id)| (d.to_string(), id.to_string()))
        .collect())
}

/// Replace the state file atomically: a new file beside it, fsynced, renamed
/// over it, the directory fsynced. A crash leaves the old or the new file.
pub(crate) fn write_pairs(path: &Path, pairs: &BTreeSet<(String, String)>) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("state file has no directory"))?;
    fs::DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.{}", std::process::id()));
    let mut file = fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o640).open(&tmp)?;
    for (first, second) in pairs {
        writeln!(file, "{first}\t{second}")?;
    }
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Is there anything for a periodic pass to do under `config`? Not with Exim (its own
/// retry rules bounce) nor with every age off.
fn has_periodic_work(config: &Config) -> bool {
    let hold = &config.hold;
    config.queue.source != PluginSource::Builtin("exim".into())
        && (hold.max_hold.is_some() || hold.delay_warning.is_some() || hold.notify_after.is_some())
}

/// One periodic pass with the configuration and backends `current` serves now, logged;
/// false when that configuration leaves it nothing to do.
fn periodic_pass(current: &dyn Fn() -> (Arc<Config>, Backends), now: SystemTime) -> bool {
    let (config, backends) = current();
    if !has_periodic_work(&config) {
        return false;
    }
    match run(&config, &backends, now, false, &mut io::sink()) {
        Ok(summary) if summary.expired + summary.delay_dsns + summary.notices > 0 => {
            log::info(&format!("event=expire_pass {summary}"))
        }
        Ok(_) => {}
        Err(refusal) => log::error(&format!("event=expire_pass {refusal}")),
    }
    true
}

/// A standalone odmrd's periodic pass: after [`FIRST_PASS`], then every [`PERIOD`], in its
/// own thread, logging instead of printing. `current` gives the configuration and backends
/// being served at each pass, so a SIGHUP that changes `[queue] max_hold` (or turns the ages
/// on or off, or replaces a backend) applies from the next pass.
pub fn spawn_periodic(current: impl Fn() -> (Arc<Config>, Backends) + Send + 'static) {
    let spawned = std::thread::Builder::new().name("expire".into()).spawn(move || {
        std::thread::sleep(FIRST_PASS);
        loop {
            periodic_pass(&current, SystemTime::now());
            std::thread::sleep(PERIOD);
        }
    });
    if let Err(e) = spawned {
        log::error(&format!("event=expire_pass cannot start its thread: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A configuration over an empty maildir spool in `dir`, with `hold` as its `[queue]` ages.
    fn serving(dir: &Path, hold: &str) -> (Arc<Config>, Backends) {
        fs::write(dir.join("passwd"), "alice:{PLAIN}secret::::::odmr_domains=a.example\n").unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join("spool/a.example").join(sub)).unwrap();
        }
        let d = dir.display();
        let text = format!(
            "[server]\nhostname = mx.example\nlock_directory = {d}/locks\n\
             [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
             [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
             state_directory = {d}/state\n{hold}[log]\nsyslog = off\n"
        );
        let config = Config::parse(&text, &dir.join("odmrd.ini")).unwrap();
        let backends = Backends::load(&config).unwrap();
        (Arc::new(config), backends)
    }

    #[test]
    fn each_periodic_pass_works_with_what_is_served_then() {
        let dir = tempfile::tempdir().unwrap();
        let off = serving(dir.path(), "max_hold = 0\n");
        let on = serving(dir.path(), "max_hold = 7d\n");
        let served = std::sync::Mutex::new(off);
        let current = || served.lock().unwrap().clone();
        assert!(!periodic_pass(&current, SystemTime::now()), "every age off: nothing to do");
        // A SIGHUP turned max_hold on: the next pass runs, with the new configuration.
        *served.lock().unwrap() = on;
        assert!(periodic_pass(&current, SystemTime::now()));
    }

    #[test]
    fn the_state_file_is_replaced_whole_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(DELAY_STATE);
        assert!(read_pairs(&path).unwrap().is_empty());
        let set: BTreeSet<(String, String)> =
            [("a.example".to_string(), "new/1".to_string()), ("b.example".into(), "1abcDE-000001-AB".into())]
                .into();
        write_pairs(&path, &set).unwrap();
        assert_eq!(read_pairs(&path).unwrap(), set);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");
    }
}
