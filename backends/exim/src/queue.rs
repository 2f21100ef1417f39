//! The queue backend proper: the `Exim` instance, `has_pending`, and the
//! cursor that claims, offers and acknowledges messages (formats.md 3.7).
//!
//! Owns: the selection rule (a message that is not frozen and has a pending
//! recipient in a requested domain; shared by `has_pending` and the cursor so
//! that a "yes" is never followed by an empty session), the claim (lock `-D`,
//! then re-read `-H` and `-J`), retrying messages Exim holds, what a commit
//! writes, and the optional `exim -Mc`. Does not: parse formats (`header`) or
//! make file-system calls itself (`spool`).
//!
//! The rule above all: never lose mail, never deliver a recipient twice
//! through our own doing, never touch recipients of domains not requested.
//! Nothing changes on disk before `commit()`, which journals exactly the
//! recipients the host reported delivered or bounced, under the lock.

use crate::config::Config;
use crate::header::{self, Bad, Body, Header};
use crate::spool::{self, Location, Lock};
use odmr_api::names::{domain_of, in_domains, requested_domains};
use odmr_api::outcomes::Outcomes;
use odmr_api::params::{scan_files, wire_size_bound};
use odmr_api::{Cursor, Envelope, Host, Instance, Listed, LogLevel, Outcome, Queue, Status};
use std::collections::{HashSet, VecDeque};
use std::fs::{self, File};
use std::io::{self, BufReader, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Read buffer per open spool file: memory per cursor stays at this,
/// whatever the message size.
const READ_BUFFER: usize = 64 * 1024;
/// First and longest pause between rounds of retrying locked messages.
const RETRY_PAUSE: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(1));

/// What odmrd needs, for every "permission denied" log line.
const ACCESS_HINT: &str = "odmrd must run as the Exim user (the owner of the spool, e.g. Debian-exim) \
or as root: it opens -D read-write to lock it, writes -J and removes finished messages";

/// A `builtin:exim` instance.
pub struct Exim {
    host: Host,
    config: Config,
}

impl Instance for Exim {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        Ok(Exim { host, config: Config::from_pairs(config)? })
    }

    /// `--check-config`: the queue's `input/` exists and this user may list
    /// it and change it (delivered messages are removed, the rest rewritten).
    fn check(&self, report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        use nix::unistd::{access, AccessFlags};
        let input = self.config.queue_root().join("input");
        let key = if self.config.queue.is_some() { "queue" } else { "spool_directory" };
        match access(&input, AccessFlags::R_OK | AccessFlags::W_OK | AccessFlags::X_OK) {
            Ok(()) => {
                report(LogLevel::Info, &format!("Exim's queue {} can be read and changed", input.display()))
            }
            Err(e) => {
                let why = if input.is_dir() { e.to_string() } else { "no such directory".into() };
                report(
                    LogLevel::Error,
                    &format!(
                        "key '{key}': {}: {why} (this user must be able to read and change Exim's queue: \
                         run odmrd as Exim's user, e.g. Debian-exim)",
                        input.display()
                    ),
                );
            }
        }
        Ok(())
    }
}

fn log(host: &Host, level: LogLevel, msg: &str) {
    host.log(level, &format!("exim: {msg}"));
}

/// Log an error opening a spool file; "permission denied" gets the hint.
fn log_open_error(host: &Host, what: &str, path: &std::path::Path, e: &io::Error) {
    if e.kind() == io::ErrorKind::PermissionDenied {
        log(host, LogLevel::Error, &format!("cannot {what} {}: {e}; {ACCESS_HINT}", path.display()));
    } else {
        log(host, LogLevel::Warn, &format!("cannot {what} {}: {e}", path.display()));
    }
}

/// The selection rule: indices of the recipients to offer. None when the
/// message is frozen; empty when nothing is pending for `domains`.
fn selection(header: &Header, done: &HashSet<Vec<u8>>, domains: &[String]) -> Option<Vec<usize>> {
    if header.frozen {
        return None;
    }
    let wanted = |r: &String| in_domains(r, domains) && header::is_pending(r, done);
    Some((0..header.recipients.len()).filter(|&i| wanted(&header.recipients[i])).collect())
}

/// The tree of `-H` plus the lines of `-J`.
fn done_set(header: &Header, journal: &[u8]) -> HashSet<Vec<u8>> {
    let mut done = header.done.clone();
    done.extend(header::journal_lines(journal).map(<[u8]>::to_vec));
    done
}

/// What the unlocked look at one message found.
enum Peek {
    /// It has something to offer, and its `-D` can be opened read-write.
    Offer,
    /// Nothing for these domains, frozen, malformed or gone.
    Nothing,
    /// An error that makes "nothing queued" unsure (logged).
    Error,
}

/// What claiming one message found.
enum Claim {
    Ready(Box<Current>),
    /// Locked by another process: try again later.
    Busy,
    /// Nothing to offer, gone, or unusable (logged).
    Skip,
    /// We lack the access Exim's spool needs (logged).
    Denied,
}

impl Exim {
    fn log(&self, level: LogLevel, msg: &str) {
        log(&self.host, level, msg);
    }

    /// The requested domains, lower case, without repeats.
    fn domains(&self, domains: &[String]) -> Result<Vec<String>, Status> {
        requested_domains(domains).map_err(|why| {
            self.log(LogLevel::Error, &why);
            Status::InvalidArgument
        })
    }

    /// The queue (messages oldest first), its unreadable subdirectories
    /// logged; Err(TempFail) when `input/` cannot be listed.
    fn list(&self) -> Result<spool::Listing, Status> {
        let root = self.config.queue_root();
        let listing = spool::list(&root).map_err(|e| {
            log_open_error(&self.host, "list", &root.join("input"), &e);
            Status::TempFail
        })?;
        for (dir, e) in &listing.errors {
            log_open_error(&self.host, "list", dir, e);
        }
        Ok(listing)
    }

    /// Finish the removals of ours that were interrupted (a kill between the
    /// unlinks of [`spool::remove`]), and log each.
    fn reclaim(&self, leftovers: &[Location]) {
        for leftover in leftovers {
            let id = &leftover.id;
            match spool::reclaim(leftover) {
                Ok(spool::Reclaimed::Removed) => self.log(
                    LogLevel::Warn,
                    &format!(
                        "id={id} removed what an interrupted removal left in {} (-D/-J without -H; every recipient was journaled)",
                        leftover.input_dir().display()
                    ),
                ),
                Ok(spool::Reclaimed::Busy) => {
                    self.log(LogLevel::Info, &format!("id={id} leftover of a removal is locked; left for later"))
                }
                Ok(spool::Reclaimed::Message) => {}
                Err(e) => self.log(LogLevel::Warn, &format!("id={id} cannot remove the leftover of a removal: {e}")),
            }
        }
    }

    /// The unlocked look (a hint; the cursor re-reads under the lock).
    fn peek(&self, location: &Location, domains: &[String]) -> Peek {
        let h_path = location.file("-H");
        let header = match spool::open_read(&h_path)
            .map_err(Bad::Io)
            .and_then(|f| header::parse(BufReader::with_capacity(READ_BUFFER, f), &location.id))
        {
            Ok(header) => header,
            Err(Bad::Io(e)) if e.kind() == io::ErrorKind::NotFound => return Peek::Nothing,
            Err(Bad::Io(e)) => {
                log_open_error(&self.host, "read", &h_path, &e);
                return Peek::Error;
            }
            Err(bad) => {
                self.log(LogLevel::Warn, &format!("id={} skipped: {}: {bad}", location.id, h_path.display()));
                return Peek::Nothing;
            }
        };
        let journal = match spool::read_optional(&location.file("-J")) {
            Ok(journal) => journal,
            Err(e) => {
                log_open_error(&self.host, "read", &location.file("-J"), &e);
                return Peek::Error;
            }
        };
        match selection(&header, &done_set(&header, &journal), domains) {
            Some(offer) if !offer.is_empty() => {}
            _ => return Peek::Nothing,
        }
        // Only worth a 250 if we may claim it: check read-write access to
        // -D now rather than after the customer was told mail is waiting.
        for place in [location.clone(), location.other_layout()] {
            match spool::open_data(&place.file("-D")) {
                Ok(_) => return Peek::Offer,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    log_open_error(&self.host, "open read-write", &place.file("-D"), &e);
                    return Peek::Error;
                }
            }
        }
        Peek::Nothing
    }
}

impl Queue for Exim {
    type Cursor = EximCursor;

    const NEXT_BEFORE_COMMIT: bool = true;

    fn has_pending(&self, domains: &[String]) -> Result<bool, Status> {
        let domains = self.domains(domains)?;
        let listing = self.list()?;
        let mut errors = listing.errors.len();
        for location in &listing.messages {
            match self.peek(location, &domains) {
                Peek::Offer => return Ok(true),
                Peek::Nothing => {}
                Peek::Error => errors += 1,
            }
        }
        // "Nothing queued" would be a lie when part of the spool was unreadable.
        if errors > 0 {
            Err(Status::TempFail)
        } else {
            Ok(false)
        }
    }

    fn open(&self, domains: &[String]) -> Result<EximCursor, Status> {
        let domains = self.domains(domains)?;
        let listing = self.list()?;
        self.reclaim(&listing.leftovers);
        let messages = listing.messages;
        Ok(EximCursor {
            host: self.host,
            config: self.config.clone(),
            domains,
            queue: messages.into(),
            busy: Vec::new(),
            deadline: None,
            pause: RETRY_PAUSE.0,
            yielded: false,
            denied: 0,
            open: VecDeque::new(),
        })
    }

    /// Read-only: `-H` and `-J` are read without the `-D` lock (a message
    /// Exim or a session is delivering is listed as it was a moment ago),
    /// nothing is reclaimed or written. Without domains, the domain of every
    /// pending recipient is listed (Exim's whole queue, not only ODMR's).
    /// A frozen message is listed as unreadable with that reason, since no
    /// collection will offer it.
    fn list(&self, domains: &[String], report: &mut dyn FnMut(Listed<'_>)) -> Result<(), Status> {
        let wanted = self.domains(domains)?;
        let listing = self.list()?;
        for (dir, e) in &listing.errors {
            let reason = format!("cannot list {}: {e}", dir.display());
            report(Listed::Unreadable { domain: "", id: "", reason: &reason });
        }
        for location in &listing.messages {
            let h_path = location.file("-H");
            let read = spool::open_read(&h_path)
                .map_err(Bad::Io)
                .and_then(|f| header::parse(BufReader::with_capacity(READ_BUFFER, f), &location.id))
                .and_then(|h| Ok((spool::read_optional(&location.file("-J")).map_err(Bad::Io)?, h)));
            let (journal, header) = match read {
                Ok(found) => found,
                Err(Bad::Io(e)) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(bad) => {
                    let reason = format!("{}: {bad}", h_path.display());
                    report(Listed::Unreadable { domain: "", id: &location.id, reason: &reason });
                    continue;
                }
            };
            let done = done_set(&header, &journal);
            let pending: Vec<usize> = (0..header.recipients.len())
                .filter(|&i| header::is_pending(&header.recipients[i], &done))
                .collect();
            let mut listed_domains: Vec<String> = pending
                .iter()
                .filter_map(|&i| domain_of(&header.recipients[i]).map(str::to_ascii_lowercase))
                .filter(|d| wanted.is_empty() || wanted.contains(d))
                .collect();
            listed_domains.sort();
            listed_domains.dedup();
            let size = [location.clone(), location.other_layout()]
                .iter()
                .find_map(|place| fs::metadata(place.file("-D")).ok())
                .map_or(0, |m| m.len());
            for domain in &listed_domains {
                if header.frozen {
                    let reason = "frozen by Exim: no collection offers it (`exim -Mt ID` thaws it)";
                    report(Listed::Unreadable { domain, id: &location.id, reason });
                    continue;
                }
                let mine: Vec<usize> = pending
                    .iter()
                    .copied()
                    .filter(|&i| in_domains(&header.recipients[i], std::slice::from_ref(domain)))
                    .collect();
                let envelope = Envelope {
                    id: location.id.clone(),
                    sender: header.sender.clone(),
                    size,
                    recipients: mine.iter().map(|&i| header.recipients[i].clone()).collect(),
                    arrival: Some(UNIX_EPOCH + Duration::from_secs(header.received)),
                    envid: header.envid.clone(),
                    ret: header.ret,
                    smtputf8: header.smtputf8,
                    eight_bit: None,
                    wire_size: None,
                    details: mine.iter().map(|&i| header.details[i].clone()).collect(),
                };
                report(Listed::Message { domain, envelope: &envelope, last_replies: &[] });
            }
        }
        Ok(())
    }
}

/// A collection in progress. Holds the `-D` lock of each message handed out,
/// from `next_message` until its commit or until it is left without one: at
/// most two, as the host may take the next message before committing the
/// current (`NEXT_BEFORE_COMMIT`).
pub struct EximCursor {
    host: Host,
    config: Config,
    domains: Vec<String>,
    /// Messages not yet tried, oldest first.
    queue: VecDeque<Location>,
    /// Messages found locked by another process, to try again.
    busy: Vec<Location>,
    /// End of the retrying of busy messages, once it started.
    deadline: Option<Instant>,
    pause: Duration,
    /// A message was offered by this cursor.
    yielded: bool,
    /// Messages passed over for lack of access.
    denied: usize,
    /// The claimed messages not yet retired, the older first: bodies are read
    /// from the newer, outcomes and commits go to the older.
    open: VecDeque<Box<Current>>,
}

/// The claimed message being delivered.
struct Current {
    /// Where its `-D` (and so `-H`, `-J`, msglog) is.
    location: Location,
    header: Header,
    /// Addresses done according to `-H` and `-J`, read under the lock.
    done: HashSet<Vec<u8>>,
    /// The journal exists and does not end in a newline.
    torn_journal: bool,
    /// The offered indices into `header.recipients` and their outcomes.
    outcomes: Outcomes,
    /// Size of the message as sent, before line-end conversion.
    size: u64,
    /// Whether headers and body hold 8-bit octets (None: too large to scan).
    eight_bit: Option<bool>,
    /// An upper bound of its size on the wire, if known.
    wire_size: Option<u64>,
    body: Body<BufReader<File>, BufReader<File>>,
    /// The locked `-D`; the lock lasts until this and `body` are dropped.
    data: File,
}

impl EximCursor {
    fn log(&self, level: LogLevel, msg: &str) {
        log(&self.host, level, msg);
    }

    /// Open `-D` where `-H` was listed, else in the other layout.
    fn open_data(&self, listed: &Location) -> Result<(Location, File), Claim> {
        for place in [listed.clone(), listed.other_layout()] {
            match spool::open_data(&place.file("-D")) {
                Ok(file) => return Ok((place, file)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    log_open_error(&self.host, "open read-write", &place.file("-D"), &e);
                    let denied = e.kind() == io::ErrorKind::PermissionDenied;
                    return Err(if denied { Claim::Denied } else { Claim::Skip });
                }
            }
        }
        if fs::symlink_metadata(listed.file("-H")).is_ok() {
            // Exim's own removal (msglog, -D, -H, -J) leaves this when it is
            // interrupted; ours never does (spool::remove). Not ours to delete
            // without the -D lock that no longer exists: tell the operator.
            self.log(
                LogLevel::Warn,
                &format!(
                    "id={id} has {} but no -D (an interrupted removal, or one in progress); skipped. `exim -Mrm {id}` removes it",
                    listed.file("-H").display(),
                    id = listed.id
                ),
            );
        } else {
            self.log(LogLevel::Debug, &format!("id={} gone before it was claimed", listed.id));
        }
        Err(Claim::Skip)
    }

    /// Lock the message, re-read it under the lock, and prepare its body.
    fn claim(&self, listed: &Location) -> Claim {
        let (location, file) = match self.open_data(listed) {
            Ok(found) => found,
            Err(claim) => return claim,
        };
        let id = &location.id;
        let data = match spool::try_lock(file) {
            Ok(Lock::Held(data)) => data,
            Ok(Lock::Busy) => {
                self.log(
                    LogLevel::Info,
                    &format!("id={id} is locked by another process (Exim); retrying later"),
                );
                return Claim::Busy;
            }
            Err(e) => {
                self.log(
                    LogLevel::Warn,
                    &format!("id={id} cannot lock {}: {e}", location.file("-D").display()),
                );
                return Claim::Skip;
            }
        };
        match self.read_locked(&location, data) {
            Ok(Some(current)) => Claim::Ready(Box::new(current)),
            Ok(None) => Claim::Skip,
            Err((path, e)) => {
                log_open_error(&self.host, "read", &path, &e);
                if e.kind() == io::ErrorKind::PermissionDenied {
                    Claim::Denied
                } else {
                    Claim::Skip
                }
            }
        }
    }

    /// Under the lock: check `-D`, read `-H` and `-J`, select, set up the body.
    #[allow(clippy::type_complexity)]
    fn read_locked(
        &self,
        location: &Location,
        data: File,
    ) -> Result<Option<Current>, (std::path::PathBuf, io::Error)> {
        let id = &location.id;
        let d_path = location.file("-D");
        let h_path = location.file("-H");
        let with = |path: &std::path::Path| {
            let path = path.to_path_buf();
            move |e: io::Error| (path, e)
        };
        let offset = location.data_offset();
        let mut first = vec![0u8; offset as usize];
        if data.read_exact_at(&mut first, 0).is_err() || first != format!("{id}-D\n").as_bytes() {
            self.log(
                LogLevel::Warn,
                &format!("id={id} skipped: {} does not start with its id", d_path.display()),
            );
            return Ok(None);
        }
        let h_file = match spool::open_read(&h_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.log(LogLevel::Warn, &format!("id={id} skipped: -D without -H in {}", h_path.display()));
                return Ok(None);
            }
            Err(e) => return Err((h_path, e)),
        };
        let mut reader = BufReader::with_capacity(READ_BUFFER, h_file);
        let parsed = header::parse(&mut reader, id).and_then(|header| {
            let headers_size = header::transmitted_size(&mut reader)?;
            Ok((header, headers_size))
        });
        let (header, headers_size) = match parsed {
            Ok(parsed) => parsed,
            Err(Bad::Io(e)) => return Err((h_path, e)),
            Err(bad) => {
                self.log(LogLevel::Warn, &format!("id={id} skipped: {}: {bad}", h_path.display()));
                return Ok(None);
            }
        };
        let journal = spool::read_optional(&location.file("-J")).map_err(with(&location.file("-J")))?;
        let done = done_set(&header, &journal);
        let offered = match selection(&header, &done, &self.domains) {
            None => {
                self.log(LogLevel::Debug, &format!("id={id} is frozen; skipped"));
                return Ok(None);
            }
            Some(offered) if offered.is_empty() => {
                if !journal.is_empty() && !header.recipients.iter().any(|r| header::is_pending(r, &done)) {
                    // Every recipient journaled, but the removal that should
                    // have followed never ran (a session killed in between):
                    // finish it now, under the lock, as that commit would have.
                    match spool::remove(location) {
                        Ok(()) => self.log(
                            LogLevel::Warn,
                            &format!("id={id} every recipient was journaled but the message was still queued (an interrupted session); removed"),
                        ),
                        Err(e) => self.log(
                            LogLevel::Warn,
                            &format!("id={id} every recipient was journaled, but removal failed ({e}); Exim will finish it"),
                        ),
                    }
                    return Ok(None);
                }
                self.log(LogLevel::Debug, &format!("id={id} has nothing pending for these domains now"));
                return Ok(None);
            }
            Some(offered) => offered,
        };
        // Exim keeps no 8BITMIME mark in the spool: look (the page cache
        // then serves the delivery), without moving the readers' offsets.
        let scan = scan_files(&[(reader.get_ref(), header.headers_offset), (&data, offset)]);
        reader.seek(SeekFrom::Start(header.headers_offset)).map_err(with(&h_path))?;
        let mut body_file = data.try_clone().map_err(with(&d_path))?;
        body_file.seek(SeekFrom::Start(offset)).map_err(with(&d_path))?;
        let body = Body::new(reader, BufReader::with_capacity(READ_BUFFER, body_file));
        // Exim's message_size: transmitted headers, the blank line, the body.
        let body_size = data.metadata().map(|m| m.len().saturating_sub(offset)).unwrap_or(0);
        let size = headers_size + 1 + body_size;
        // Lines: counted by the scan, else Exim's body count plus (safely
        // over-counted) one per header byte and the blank line.
        let lines = scan.map(|s| s.lines).or(header.body_lines.map(|b| b + headers_size + 1));
        Ok(Some(Current {
            location: location.clone(),
            torn_journal: journal.last().is_some_and(|&b| b != b'\n'),
            outcomes: Outcomes::new(offered),
            done,
            header,
            size,
            eight_bit: scan.map(|s| s.eight_bit),
            wire_size: lines.map(|lines| wire_size_bound(size, lines)),
            body,
            data,
        }))
    }
}

impl Cursor for EximCursor {
    fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
        // One message may await its commit while the next is handed out; any
        // other left without commit releases its lock and changes nothing.
        while self.open.len() > 1 {
            self.open.pop_front();
        }
        loop {
            let Some(listed) = self.queue.pop_front() else {
                if self.busy.is_empty() {
                    break;
                }
                let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + self.config.busy_wait);
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                std::thread::sleep(self.pause.min(deadline - now));
                self.pause = (self.pause * 2).min(RETRY_PAUSE.1);
                self.queue.extend(self.busy.drain(..));
                continue;
            };
            match self.claim(&listed) {
                Claim::Ready(current) => {
                    let envelope = Envelope {
                        id: current.location.id.clone(),
                        sender: current.header.sender.clone(),
                        size: current.size,
                        recipients: current
                            .outcomes
                            .offered()
                            .iter()
                            .map(|&i| current.header.recipients[i].clone())
                            .collect(),
                        arrival: Some(UNIX_EPOCH + Duration::from_secs(current.header.received)),
                        envid: current.header.envid.clone(),
                        ret: current.header.ret,
                        smtputf8: current.header.smtputf8,
                        eight_bit: current.eight_bit,
                        wire_size: current.wire_size,
                        details: current
                            .outcomes
                            .offered()
                            .iter()
                            .map(|&i| current.header.details[i].clone())
                            .collect(),
                    };
                    self.yielded = true;
                    self.open.push_back(current);
                    return Ok(Some(envelope));
                }
                Claim::Busy => self.busy.push(listed),
                Claim::Skip => {}
                Claim::Denied => self.denied += 1,
            }
        }
        for listed in &self.busy {
            self.log(
                LogLevel::Warn,
                &format!(
                    "id={} still locked by another process after {:?}; left queued for a later session",
                    listed.id, self.config.busy_wait
                ),
            );
        }
        let unsure = self.denied > 0 || !self.busy.is_empty();
        self.busy.clear();
        self.denied = 0;
        if unsure && !self.yielded {
            // Mail is waiting that we cannot hand out now: "try again later",
            // not "no mail" and not an empty session.
            return Err(Status::TempFail);
        }
        Ok(None)
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Status> {
        let current = self.open.back_mut().ok_or(Status::InvalidArgument)?;
        current.body.read(buf).map_err(|e| {
            let msg = format!("id={} read failed: {e}", current.location.id);
            log(&self.host, LogLevel::Error, &msg);
            Status::TempFail
        })
    }

    fn set_outcome(&mut self, index: usize, outcome: Outcome) -> Result<(), Status> {
        let current = self.open.front_mut().ok_or(Status::InvalidArgument)?;
        current.outcomes.set(index, outcome)
    }

    /// Commits the older open message and retires it, whatever the result.
    fn commit(&mut self) -> Result<(), Status> {
        let current = self.open.front_mut().ok_or(Status::InvalidArgument)?;
        let id = current.location.id.clone();
        let finished: Vec<&str> =
            current.outcomes.finished().map(|i| current.header.recipients[i].as_str()).collect();
        if finished.is_empty() {
            self.log(LogLevel::Debug, &format!("id={id} nothing delivered; left as it was"));
            self.open.pop_front();
            return Ok(());
        }
        let journal = current.location.file("-J");
        if let Err(e) = spool::append_journal(&journal, &current.data, &finished, current.torn_journal) {
            let msg = format!("id={id} cannot write {}: {e}; the message stays queued", journal.display());
            log(&self.host, LogLevel::Error, &msg);
            if e.kind() == io::ErrorKind::PermissionDenied {
                log(&self.host, LogLevel::Error, ACCESS_HINT);
            }
            self.open.pop_front();
            return Err(Status::TempFail);
        }
        current.torn_journal = false;
        let journaled = finished.len();
        for address in finished {
            current.done.insert(address.as_bytes().to_vec());
        }
        let remaining =
            current.header.recipients.iter().filter(|r| header::is_pending(r, &current.done)).count();
        let location = current.location.clone();
        if remaining == 0 {
            // Everything is journaled, so a failed removal loses nothing and
            // sends nothing twice: Exim completes the message at its next run.
            match spool::remove(&location) {
                Ok(()) => self.log(LogLevel::Debug, &format!("id={id} journaled={journaled} removed")),
                Err(e) => self.log(
                    LogLevel::Warn,
                    &format!("id={id} journaled={journaled} complete, but removal failed ({e}); Exim will finish it"),
                ),
            }
            self.open.pop_front();
            return Ok(());
        }
        self.log(LogLevel::Debug, &format!("id={id} journaled={journaled} remaining_recipients={remaining}"));
        // Release the lock before asking Exim to merge the journal.
        self.open.pop_front();
        if let Some(command) = &self.config.exim {
            merge_now(self.host, command, self.config.queue.as_deref(), &id);
        }
        Ok(())
    }
}

/// Run `COMMAND [-qGQUEUE] -Mc ID` in the background: Exim locks the message,
/// merges our journal into `-H` and removes `-J`, and respects retry times
/// and `hold_domains` (so it does not force the held ODMR domains out).
/// Never on our standard descriptors: under inetd they are the customer's
/// socket.
fn merge_now(host: Host, command: &[String], queue: Option<&str>, id: &str) {
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    if let Some(queue) = queue {
        cmd.arg(format!("-qG{queue}"));
    }
    cmd.arg("-Mc").arg(id).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
    let shown = format!("{} -Mc {id}", command.join(" "));
    match cmd.spawn() {
        Ok(mut child) => {
            let name = shown.clone();
            let reap = move || match child.wait() {
                Ok(status) if status.success() => log(&host, LogLevel::Debug, &format!("'{shown}' done")),
                Ok(status) => log(&host, LogLevel::Warn, &format!("'{shown}' failed: {status}")),
                Err(e) => log(&host, LogLevel::Warn, &format!("'{shown}': {e}")),
            };
            if std::thread::Builder::new().name("exim -Mc".into()).spawn(reap).is_err() {
                log(&host, LogLevel::Warn, &format!("'{name}' started but cannot be waited for"));
            }
        }
        Err(e) => log(
            &host,
            LogLevel::Warn,
            &format!("cannot run '{shown}': {e}; Exim merges the journal at its next queue run"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// A hand-built spool, in the format of formats.md 3.4.
    struct Spool {
        dir: tempfile::TempDir,
    }

    struct Msg<'a> {
        id: &'a str,
        split: bool,
        sender: &'a str,
        recipients: &'a [&'a str],
        delivered: &'a [&'a str],
        journal: Option<&'a str>,
        frozen: bool,
        body: &'a str,
    }

    impl Default for Msg<'_> {
        fn default() -> Self {
            Msg {
                id: "1xV7gw-0004Qd-11",
                split: false,
                sender: "alice@sender.example",
                recipients: &[],
                delivered: &[],
                journal: None,
                frozen: false,
                body: "body line\n.dot line\n",
            }
        }
    }

    impl Spool {
        fn new() -> Spool {
            let dir = tempfile::tempdir().unwrap();
            for d in ["input", "msglog"] {
                fs::create_dir_all(dir.path().join(d)).unwrap();
            }
            Spool { dir }
        }

        fn location(&self, id: &str, split: bool) -> Location {
            let subdir = if split { id[5..6].to_string() } else { String::new() };
            Location { root: self.dir.path().into(), subdir, id: id.into() }
        }

        fn add(&self, m: Msg) -> Location {
            let l = self.location(m.id, m.split);
            fs::create_dir_all(l.input_dir()).unwrap();
            fs::create_dir_all(l.msglog().parent().unwrap()).unwrap();
            let mut h = format!("{}-H\nroot 0 0\n<{}>\n1795354394 0\n-ident root\n", m.id, m.sender);
            if m.frozen {
                h.push_str("-frozen 1795354400\n");
            }
            // A degenerate but valid tree: each node has only a right child.
            if m.delivered.is_empty() {
                h.push_str("XX\n");
            }
            for (i, d) in m.delivered.iter().enumerate() {
                let right = if i + 1 < m.delivered.len() { 'Y' } else { 'N' };
                h.push_str(&format!("N{right} {d}\n"));
            }
            h.push_str(&format!("{}\n", m.recipients.len()));
            for r in m.recipients {
                h.push_str(&format!("{r}\n"));
            }
            h.push('\n');
            for header in ["Subject: test\n", "X-Gone: old\n", "From: alice@sender.example\n"] {
                let flag = if header.starts_with("X-Gone") { '*' } else { ' ' };
                h.push_str(&format!("{:03}{flag} {header}", header.len()));
            }
            fs::write(l.file("-H"), h).unwrap();
            fs::write(l.file("-D"), format!("{}-D\n{}", m.id, m.body)).unwrap();
            fs::write(l.msglog(), "log\n").unwrap();
            if let Some(j) = m.journal {
                fs::write(l.file("-J"), j).unwrap();
            }
            l
        }

        fn exim(&self, extra: &[(&str, &str)]) -> Exim {
            let mut pairs = vec![("spool_directory".to_string(), self.dir.path().display().to_string())];
            pairs.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Exim::new(Host::detached(), &pairs).unwrap()
        }

        /// Every file under the spool with its contents.
        fn snapshot(&self) -> Vec<(PathBuf, Vec<u8>)> {
            fn walk(p: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
                for e in fs::read_dir(p).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        walk(&p, out);
                    } else {
                        out.push((p.clone(), fs::read(&p).unwrap()));
                    }
                }
            }
            let mut out = Vec::new();
            walk(self.dir.path(), &mut out);
            out.sort();
            out
        }
    }

    fn domains(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| d.to_string()).collect()
    }

    fn body_of(cursor: &mut EximCursor) -> String {
        let mut out = Vec::new();
        let mut buf = [0u8; 5];
        loop {
            let n = cursor.read_body(&mut buf).unwrap();
            if n == 0 {
                return String::from_utf8(out).unwrap();
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn the_envelope_carries_arrival_dsn_data_and_the_8bit_finding() {
        let s = Spool::new();
        s.add(Msg {
            recipients: &[
                "a@example.org rfc822;A+2Bx@example.org 24,12  0,-1#3",
                "b@example.net",
                "c@example.org",
            ],
            body: "h\u{e9}llo\n",
            ..Msg::default()
        });
        let mut c = s.exim(&[]).open(&["example.org".into()]).unwrap();
        let e = c.next_message().unwrap().unwrap();
        assert_eq!(e.recipients, ["a@example.org", "c@example.org"]);
        assert_eq!(e.arrival, Some(UNIX_EPOCH + Duration::from_secs(1795354394)));
        assert_eq!(e.eight_bit, Some(true));
        // Subject, From, the blank line and one body line: four CRs to add.
        assert!(e.wire_size.is_some_and(|w| w >= e.size + 4), "{:?} for {}", e.wire_size, e.size);
        assert_eq!(e.recipient_details(0).orcpt.as_deref(), Some("rfc822;A+x@example.org"));
        assert!(e.recipient_details(0).notify.on_success());
        assert_eq!(e.recipient_details(1), Default::default());
        let s = Spool::new();
        s.add(Msg { recipients: &["a@example.org"], ..Msg::default() });
        let e = s.exim(&[]).open(&["example.org".into()]).unwrap().next_message().unwrap().unwrap();
        assert_eq!((e.eight_bit, e.envid, e.ret, e.smtputf8), (Some(false), None, None, false));
    }

    #[test]
    fn check_config_finds_the_queue_or_names_the_key() {
        let spool = Spool::new();
        let findings = |exim: &Exim| {
            let mut found = Vec::new();
            exim.check(&mut |level, text| found.push((level, text.to_string()))).unwrap();
            found
        };
        let ok = findings(&spool.exim(&[]));
        assert!(
            matches!(ok.as_slice(), [(LogLevel::Info, text)] if text.contains("can be read and changed")),
            "{ok:?}"
        );
        let named = findings(&spool.exim(&[("queue", "nosuch")]));
        assert!(
            matches!(named.as_slice(), [(LogLevel::Error, text)] if text.starts_with("key 'queue': ") && text.contains("no such directory")),
            "{named:?}"
        );
    }

    #[test]
    fn offers_only_pending_recipients_of_the_requested_domains() {
        let s = Spool::new();
        let l = s.add(Msg {
            recipients: &[
                "a@example.org",
                "B@Example.ORG",
                "v@example.org.uk",
                "done@example.org",
                "journaled@EXAMPLE.org",
                "z@other.example",
            ],
            delivered: &["done@example.org"],
            journal: Some("journaled@example.org\n"),
            ..Msg::default()
        });
        let exim = s.exim(&[]);
        let wanted = domains(&["example.org"]);
        assert!(exim.has_pending(&wanted).unwrap());
        assert!(!exim.has_pending(&domains(&["example.com"])).unwrap());
        assert!(!exim.has_pending(&domains(&["org.uk"])).unwrap());
        let mut c = exim.open(&wanted).unwrap();
        let e = c.next_message().unwrap().unwrap();
        assert_eq!(e.id, "1xV7gw-0004Qd-11");
        assert_eq!(e.sender, "alice@sender.example");
        assert_eq!(e.recipients, ["a@example.org", "B@Example.ORG"]);
        let body = body_of(&mut c);
        assert_eq!(body, "Subject: test\nFrom: alice@sender.example\n\nbody line\n.dot line\n");
        assert_eq!(e.size, body.len() as u64);
        c.set_outcome(0, Outcome::Delivered).unwrap();
        c.set_outcome(1, Outcome::PermFail).unwrap();
        c.commit().unwrap();
        assert!(c.next_message().unwrap().is_none());
        // Exact spooled strings, appended to what was there.
        let journal = fs::read_to_string(l.file("-J")).unwrap();
        assert_eq!(journal, "journaled@example.org\na@example.org\nB@Example.ORG\n");
        assert!(l.file("-D").exists() && l.file("-H").exists() && l.msglog().exists());
        assert!(!exim.has_pending(&wanted).unwrap());
        assert!(exim.has_pending(&domains(&["example.org.uk"])).unwrap());
    }

    #[test]
    fn a_finished_message_is_removed_with_its_msglog_and_journal() {
        let s = Spool::new();
        let l = s.add(Msg {
            split: true,
            recipients: &["a@example.org", "b@example.net"],
            journal: Some("b@example.net\n"),
            ..Msg::default()
        });
        assert_eq!(l.subdir, "w");
        let exim = s.exim(&[]);
        let mut c = exim.open(&domains(&["example.org"])).unwrap();
        assert_eq!(c.next_message().unwrap().unwrap().recipients, ["a@example.org"]);
        c.set_outcome(0, Outcome::Delivered).unwrap();
        c.commit().unwrap();
        for p in [l.file("-D"), l.file("-H"), l.file("-J"), l.msglog()] {
            assert!(!p.exists(), "{} left behind", p.display());
        }
    }

    #[test]
    fn what_an_interrupted_session_left_is_finished_by_the_next_cursor() {
        let s = Spool::new();
        // Killed after journaling the last recipient, before removing.
        let journaled = s.add(Msg {
            recipients: &["a@example.org", "b@example.net"],
            journal: Some("a@example.org\nb@example.net\n"),
            ..Msg::default()
        });
        // Killed inside the removal, after -H (spool::remove's order).
        let removing = s.add(Msg {
            id: "1xV7gx-0004Qd-11",
            recipients: &["c@example.org"],
            journal: Some("c@example.org\n"),
            ..Msg::default()
        });
        fs::remove_file(removing.file("-H")).unwrap();
        // Nothing journaled: Exim's business, not ours, even with nothing for us.
        let other = s.add(Msg { id: "1xV7gy-0004Qd-11", recipients: &["d@example.com"], ..Msg::default() });
        let exim = s.exim(&[]);
        let mut c = exim.open(&domains(&["example.org"])).unwrap();
        assert!(c.next_message().unwrap().is_none());
        for l in [&journaled, &removing] {
            for p in [l.file("-D"), l.file("-H"), l.file("-J"), l.msglog()] {
                assert!(!p.exists(), "{} left behind", p.display());
            }
        }
        assert!(other.file("-H").exists() && other.file("-D").exists());
    }

    #[test]
    fn without_commit_or_with_4xx_nothing_changes() {
        let s = Spool::new();
        s.add(Msg { recipients: &["a@example.org", "b@example.org"], ..Msg::default() });
        s.add(Msg { id: "1xV7gx-0004Qd-11", recipients: &["c@example.org"], ..Msg::default() });
        let before = s.snapshot();
        let exim = s.exim(&[]);
        let wanted = domains(&["example.org"]);
        {
            let mut c = exim.open(&wanted).unwrap();
            c.next_message().unwrap().unwrap();
            c.set_outcome(0, Outcome::Delivered).unwrap();
            // Dropped without commit.
        }
        let mut c = exim.open(&wanted).unwrap();
        let first = c.next_message().unwrap().unwrap();
        c.set_outcome(0, Outcome::TempFail).unwrap();
        c.set_outcome(1, Outcome::TempFail).unwrap();
        c.commit().unwrap();
        let second = c.next_message().unwrap().unwrap();
        assert_eq!((first.id.as_str(), second.id.as_str()), ("1xV7gw-0004Qd-11", "1xV7gx-0004Qd-11"));
        // Moving on without commit.
        assert!(c.next_message().unwrap().is_none());
        drop(c);
        assert_eq!(s.snapshot(), before);
    }

    #[test]
    fn frozen_messages_are_never_offered() {
        let s = Spool::new();
        s.add(Msg { recipients: &["a@example.org"], frozen: true, ..Msg::default() });
        let exim = s.exim(&[]);
        let wanted = domains(&["example.org"]);
        assert!(!exim.has_pending(&wanted).unwrap());
        assert!(exim.open(&wanted).unwrap().next_message().unwrap().is_none());
    }

    /// NEXT_BEFORE_COMMIT: the next message is claimed while the first awaits its commit;
    /// outcomes and the commit go to the first, the body read is the second's.
    #[test]
    fn the_next_message_is_handed_out_before_the_current_is_committed() {
        let s = Spool::new();
        let first = s.add(Msg { recipients: &["a@example.org"], ..Msg::default() });
        let second = s.add(Msg { id: "1xV7gx-0004Qd-11", recipients: &["b@example.org"], ..Msg::default() });
        let exim = s.exim(&[]);
        let mut c = exim.open(&domains(&["example.org"])).unwrap();
        let one = c.next_message().unwrap().unwrap().id;
        let two = c.next_message().unwrap().unwrap().id;
        assert_ne!(one, two);
        let mut buf = [0u8; 4096];
        while c.read_body(&mut buf).unwrap() > 0 {}
        c.set_outcome(0, Outcome::Delivered).unwrap();
        c.commit().unwrap();
        let (done, kept) = if one == first.id { (&first, &second) } else { (&second, &first) };
        assert!(!done.file("-D").exists(), "the older was committed");
        assert!(kept.file("-D").exists(), "the newer awaits its own commit");
        drop(c);
        assert!(kept.file("-D").exists());
    }

    #[test]
    fn a_locked_message_is_retried_later_in_the_same_session() {
        let s = Spool::new();
        let locked = s.add(Msg { recipients: &["a@example.org"], ..Msg::default() });
        s.add(Msg { id: "1xV7gx-0004Qd-11", recipients: &["b@example.org"], ..Msg::default() });
        let Lock::Held(held) = spool::try_lock(spool::open_data(&locked.file("-D")).unwrap()).unwrap() else {
            panic!("test lock")
        };
        let exim = s.exim(&[("busy_wait", "10")]);
        let mut c = exim.open(&domains(&["example.org"])).unwrap();
        // The free message comes first, the locked one once it is released.
        assert_eq!(c.next_message().unwrap().unwrap().id, "1xV7gx-0004Qd-11");
        // Retired without an outcome (else it would stay open as the older of two).
        c.commit().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(held);
        });
        let started = Instant::now();
        let e = c.next_message().unwrap().unwrap();
        assert_eq!(e.id, "1xV7gw-0004Qd-11");
        assert!(started.elapsed() >= Duration::from_millis(250));
        release.join().unwrap();
        c.set_outcome(0, Outcome::Delivered).unwrap();
        c.commit().unwrap();
        assert!(!locked.file("-D").exists());
    }

    #[test]
    fn a_message_locked_throughout_is_left_intact_and_the_answer_is_try_later() {
        let s = Spool::new();
        let locked = s.add(Msg { recipients: &["a@example.org"], ..Msg::default() });
        let before = s.snapshot();
        let Lock::Held(_held) = spool::try_lock(spool::open_data(&locked.file("-D")).unwrap()).unwrap()
        else {
            panic!("test lock")
        };
        let exim = s.exim(&[("busy_wait", "0.3")]);
        let wanted = domains(&["example.org"]);
        assert!(exim.has_pending(&wanted).unwrap(), "the hint sees it");
        let mut c = exim.open(&wanted).unwrap();
        let started = Instant::now();
        assert_eq!(c.next_message().unwrap_err(), Status::TempFail, "never a 250 with an empty session");
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!(s.snapshot(), before);
    }

    #[test]
    fn malformed_and_mismatched_messages_are_skipped_not_removed() {
        let s = Spool::new();
        let bad = s.add(Msg { recipients: &["a@example.org"], ..Msg::default() });
        fs::write(bad.file("-D"), "1xV7gw-0004Qd-99-D\nbody\n").unwrap();
        let garbled = s.add(Msg { id: "1xV7gx-0004Qd-11", recipients: &["a@example.org"], ..Msg::default() });
        let h = fs::read_to_string(garbled.file("-H")).unwrap().replace("<alice", "alice");
        fs::write(garbled.file("-H"), h).unwrap();
        let before = s.snapshot();
        let exim = s.exim(&[]);
        let wanted = domains(&["example.org"]);
        let mut c = exim.open(&wanted).unwrap();
        assert!(c.next_message().unwrap().is_none());
        assert_eq!(s.snapshot(), before);
    }

    #[test]
    fn new_format_ids_in_a_named_queue() {
        let s = Spool::new();
        let root = s.dir.path().join("odmr");
        let l = Location { root: root.clone(), subdir: "R".into(), id: "1vMkbR-00000000Ab3-0Fq2".into() };
        fs::create_dir_all(l.input_dir()).unwrap();
        fs::create_dir_all(l.msglog().parent().unwrap()).unwrap();
        let h = "1vMkbR-00000000Ab3-0Fq2-H\nDebian-exim 101 103\n<alice@sender.example>\n1763806345 0\n\
-aclm 0 5\nhello\nXX\n2\ncarol@odmr.example rfc822;carol@odmr.example 25,12  0,-1#3\ndave@elsewhere.example\n\n\
027  Subject: synthetic example\n";
        fs::write(l.file("-H"), h).unwrap();
        fs::write(l.file("-D"), "1vMkbR-00000000Ab3-0Fq2-D\nhi\n").unwrap();
        let default_queue = s.exim(&[]);
        let wanted = domains(&["odmr.example"]);
        assert!(!default_queue.has_pending(&wanted).unwrap());
        let exim = s.exim(&[("queue", "odmr")]);
        let mut c = exim.open(&wanted).unwrap();
        let e = c.next_message().unwrap().unwrap();
        assert_eq!(e.recipients, ["carol@odmr.example"]);
        assert_eq!(body_of(&mut c), "Subject: synthetic example\n\nhi\n");
        c.set_outcome(0, Outcome::Delivered).unwrap();
        c.commit().unwrap();
        assert_eq!(fs::read_to_string(l.file("-J")).unwrap(), "carol@odmr.example\n");
    }
}
