//! The queue backend proper: the `Maildir` instance, its `has_pending`, and
//! the cursor that walks, offers and commits messages.
//!
//! Owns: the selection rule (a file that parses and has at least one
//! recipient in the requested domains; shared by `has_pending` and the cursor
//! so that a "yes" is never followed by an empty session), per-domain locking
//! for the life of a cursor, outcome bookkeeping and what a commit changes.
//! Does not: parse file formats (`envelope`), stream bodies (`body`) or make
//! system calls itself (`spool`).

use crate::body::{self, Body, Content, Unstuffer};
use crate::claim::{self, Claim};
use crate::config::Config;
use crate::deferred;
use crate::envelope::{self, Layout, Parsed, Rejected};
use crate::spool::{self, Entry, Lock, Order};
use nix::fcntl::Flock;
use odmr_api::names::{domain_of, in_domains, requested_domains};
use odmr_api::outcomes::Outcomes;
use odmr_api::params::{scan_files, wire_size_bound, ContentScan, SCAN_LIMIT};
use odmr_api::{Cursor, Envelope, Host, Instance, Listed, LogLevel, Outcome, Queue, Status};
use std::collections::{HashSet, VecDeque};
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Size of the read buffer for a message streamed from its file: memory per
/// cursor stays at this whatever the message size.
const READ_BUFFER: usize = 64 * 1024;

/// Messages smaller than this are read whole with one `read` into a buffer
/// the cursor reuses, and their envelope, content scan and body all come
/// from those bytes; larger ones (a big BSMTP file above all) are streamed
/// through [`READ_BUFFER`].
pub const WHOLE_MESSAGE: usize = 256 * 1024;

/// Removals made durable together (group commit): the directory fsync that
/// makes an unlink durable is the largest cost of a commit (it costs as much
/// as reading and removing hundreds of small files), so it is done once the
/// oldest removal not yet durable is [`GROUP_COMMIT_AGE`] old or this many
/// removals wait, and always when the cursor closes. A crash in between can
/// bring back removed files: delivered again, never lost.
const GROUP_COMMIT: usize = 4096;

/// The longest a removal waits for its directory fsync while the session
/// goes on: bounds the re-delivery window of a long session in time.
const GROUP_COMMIT_AGE: Duration = Duration::from_secs(1);

/// A `builtin:maildir` instance.
pub struct Maildir {
    host: Host,
    config: Config,
}

impl Instance for Maildir {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        Ok(Maildir { host, config: Config::from_pairs(config)? })
    }

    /// `--check-config`: the directory above the domains' maildirs exists and
    /// can be listed, and every domain's `new/` and `cur/` found there can be
    /// changed (messages leave by rename and unlink). No maildir at all is a
    /// warning: the MTA creates a domain's at its first message.
    fn check(&self, report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        use nix::unistd::{access, AccessFlags};
        let root = self.config.spool_root();
        let template = self.config.template();
        if let Err(e) = access(&root, AccessFlags::R_OK | AccessFlags::X_OK) {
            let why = if root.is_dir() { e.to_string() } else { "no such directory".into() };
            report(
                LogLevel::Error,
                &format!("key 'directory': {template}: {} cannot be listed: {why}", root.display()),
            );
            return Ok(());
        }
        let mut found = 0;
        let entries = std::fs::read_dir(&root).map_err(|_| Status::TempFail)?;
        for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
            let Ok(maildir) = self.config.maildir(&name) else { continue };
            if !maildir.join("new").is_dir() {
                continue;
            }
            found += 1;
            for sub in ["new", "cur"] {
                let dir = maildir.join(sub);
                if let Err(e) = access(&dir, AccessFlags::W_OK | AccessFlags::X_OK) {
                    report(
                        LogLevel::Error,
                        &format!(
                            "key 'directory': {} cannot be changed: {e} (messages could not leave it)",
                            dir.display()
                        ),
                    );
                }
            }
        }
        if found == 0 {
            report(
                LogLevel::Warn,
                &format!(
                    "key 'directory': no domain's maildir under {} yet ({template}); the MTA creates one at a \
                     domain's first message",
                    root.display()
                ),
            );
        } else {
            report(
                LogLevel::Info,
                &format!("{found} domain maildir(s) under {} can be changed", root.display()),
            );
        }
        Ok(())
    }
}

/// One requested domain's maildir, as found on disk.
struct Spool {
    domain: String,
    path: PathBuf,
    /// The [`deferred`] records present, when known (listed under the lock,
    /// where only this cursor writes them); `None`: look for each message's.
    notes: Option<HashSet<String>>,
}

impl Maildir {
    fn log(&self, level: LogLevel, msg: &str) {
        self.host.log(level, &format!("maildir: {msg}"));
    }

    /// The requested domains, lower case, without repeats; an invalid one
    /// is refused as a whole (the host should never send one).
    fn domains(&self, domains: &[String]) -> Result<Vec<String>, Status> {
        requested_domains(domains).map_err(|why| {
            self.log(LogLevel::Error, &why);
            Status::InvalidArgument
        })
    }

    /// The maildirs of `domains` that exist, each directory once. A missing
    /// maildir under an existing spool root means nothing delivered yet;
    /// a missing root or any other problem is logged at error level (with
    /// the path and the user we run as) and counted in the second value,
    /// so that the caller never answers "no mail" for a spool it could not see.
    fn spools(&self, domains: &[String]) -> Result<(Vec<Spool>, usize), Status> {
        let mut seen = Vec::new();
        let mut spools = Vec::new();
        let mut errors = 0;
        for domain in domains {
            let path = self.config.maildir(domain).map_err(|why| {
                self.log(LogLevel::Error, &why);
                Status::InvalidArgument
            })?;
            match spool::identity(&path) {
                Ok(id) if seen.contains(&id) => continue,
                Ok(id) => seen.push(id),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let root = self.config.spool_root();
                    if root.is_dir() {
                        self.log(
                            LogLevel::Debug,
                            &format!(
                                "domain={domain} maildir={} absent: nothing delivered yet",
                                path.display()
                            ),
                        );
                    } else {
                        self.log(
                            LogLevel::Error,
                            &format!(
                                "domain={domain} spool root {} is missing (check 'directory' and mounts){}",
                                root.display(),
                                running_as()
                            ),
                        );
                        errors += 1;
                    }
                    continue;
                }
                Err(e) => {
                    self.log(
                        LogLevel::Error,
                        &format!("domain={domain} maildir={} unusable: {e}{}", path.display(), running_as()),
                    );
                    errors += 1;
                    continue;
                }
            }
            spools.push(Spool { domain: domain.clone(), path, notes: None });
        }
        Ok((spools, errors))
    }

    /// Every domain with a maildir under the spool root, sorted.
    fn enumerate(&self) -> Result<Vec<String>, Status> {
        let root = self.config.spool_root();
        let items = std::fs::read_dir(&root).map_err(|e| {
            self.log(
                LogLevel::Error,
                &format!("cannot list the spool root {}: {e}{}", root.display(), running_as()),
            );
            Status::TempFail
        })?;
        let mut domains: Vec<String> = items
            .filter_map(|item| item.ok()?.file_name().to_str().and_then(|n| self.config.domain_of_entry(n)))
            .filter(|d| self.config.maildir(d).is_ok_and(|p| p.is_dir()))
            .collect();
        domains.sort();
        Ok(domains)
    }

    /// With `claim = yes`: return the claims of dead front ends in `spool`.
    fn return_stale_claims(&self, spool: &Spool) {
        let Some(claims) = &self.config.claims else { return };
        match claim::return_stale(&spool.path, claims.stale_after) {
            Ok(returned) => {
                for id in returned {
                    let msg = format!("domain={} file={id} stale claim returned to the queue", spool.domain);
                    self.log(LogLevel::Warn, &msg);
                }
            }
            Err(e) => self.log(
                LogLevel::Error,
                &format!("domain={} maildir={} cannot check claims: {e}", spool.domain, spool.path.display()),
            ),
        }
    }

    /// List one maildir's messages in `order`, logging what is passed over.
    fn scan(&self, spool: &Spool, order: Order) -> io::Result<Vec<Entry>> {
        let (entries, ignored) = spool::scan(&spool.path, order).inspect_err(|e| {
            self.log(
                LogLevel::Error,
                &format!(
                    "domain={} maildir={} cannot list: {e}{}",
                    spool.domain,
                    spool.path.display(),
                    running_as()
                ),
            );
        })?;
        for i in ignored {
            self.log(
                LogLevel::Warn,
                &format!("domain={} skipped file={} reason={}", spool.domain, i.id, i.why),
            );
        }
        Ok(entries)
    }
}

impl Maildir {
    /// Remove the leftovers in `spool`'s `tmp/` ([`spool::clean_tmp`]; the
    /// caller holds its lock) and log each.
    fn clean_tmp(&self, spool: &Spool) {
        let (removed, failed) = spool::clean_tmp(&spool.path, std::time::SystemTime::now());
        for r in removed {
            let why = if r.ours {
                "left by an interrupted rewrite of odmrd's (the message itself was kept)"
            } else {
                "untouched for 36 hours (maildir convention)"
            };
            self.log(LogLevel::Warn, &format!("domain={} removed file={}: {why}", spool.domain, r.id));
        }
        for (id, e) in failed {
            let msg =
                format!("domain={} cannot clean file={} in {}: {e}", spool.domain, id, spool.path.display());
            self.log(LogLevel::Warn, &msg);
        }
    }
}

/// ` user=NAME uid=N`: who we run as, for errors about permissions.
fn running_as() -> String {
    let uid = nix::unistd::geteuid();
    let name = nix::unistd::User::from_uid(uid).ok().flatten().map_or_else(|| "?".to_string(), |u| u.name);
    format!(" user={name} uid={uid}")
}

/// A message file, opened and its envelope parsed.
struct Loaded {
    file: File,
    /// Size and modification time, from the file's one `fstat` at its opening.
    size: u64,
    modified: Option<SystemTime>,
    /// `Some(len)`: the whole file is in the caller's buffer, `[..len]`;
    /// `None`: it is too large for that, and is streamed.
    whole: Option<usize>,
    parsed: Parsed,
}

/// A loaded message and the indices of its recipients in `domains`.
struct Selected {
    loaded: Loaded,
    offered: Vec<usize>,
}

/// What [`select`] made of one file.
#[allow(
    clippy::large_enum_variant,
    reason = "returned and matched at once, never stored: no box per message"
)]
enum Selection {
    /// Recipients to offer.
    Offer(Selected),
    /// Nothing for these domains, or the file vanished.
    Nothing,
    /// A file that cannot be read or parsed (logged by `select`, kept).
    Unusable,
}

/// Open a message without following links, read it whole into `buf` when it
/// is smaller than [`WHOLE_MESSAGE`] (else stream it), and parse its
/// envelope. An `Envelope-to:` list keeps only the addresses whose maildir
/// is this one (Exim lists every recipient of the delivery; the others are
/// held, or delivered, elsewhere).
fn load(config: &Config, spool: &Spool, entry: &Entry, buf: &mut Vec<u8>) -> Result<Loaded, Rejected> {
    let (file, meta) = spool::open_message(&entry.path)?;
    let prefix = config.prefix_for(&spool.domain);
    let small = usize::try_from(meta.len()).ok().filter(|&size| size < WHOLE_MESSAGE);
    let whole = match small {
        Some(size) => spool::read_whole(&file, size, buf)?,
        None => None,
    };
    let mut parsed = match whole {
        Some(len) => envelope::parse(&mut io::Cursor::new(&buf[..len]), prefix.as_deref())?,
        None => envelope::parse(&mut BufReader::with_capacity(READ_BUFFER, &file), prefix.as_deref())?,
    };
    if matches!(&parsed.layout, Layout::Headers { source, .. } if source.name == "Envelope-to") {
        let ours = |address: &str| {
            let domain = domain_of(address).unwrap_or("");
            config.maildir(domain).is_ok_and(|path| path == spool.path)
        };
        parsed.recipients.retain(|r| ours(&r.address));
        if parsed.recipients.is_empty() {
            return Err(Rejected::Malformed(format!("Envelope-to names no address of {}", spool.domain)));
        }
    }
    Ok(Loaded { file, size: meta.len(), modified: meta.modified().ok(), whole, parsed })
}

/// The indices of `parsed`'s recipients in `domains`.
fn offered_in(parsed: &Parsed, domains: &[String]) -> Vec<usize> {
    (0..parsed.recipients.len()).filter(|&i| in_domains(&parsed.recipients[i].address, domains)).collect()
}

/// The selection rule shared by `has_pending` and the cursor: [`load`] (into
/// `buf`), then keep the recipients of the requested domains.
fn select(
    host: &Host,
    config: &Config,
    spool: &Spool,
    entry: &Entry,
    domains: &[String],
    buf: &mut Vec<u8>,
) -> Selection {
    match load(config, spool, entry, buf) {
        Ok(loaded) => {
            let offered = offered_in(&loaded.parsed, domains);
            if offered.is_empty() {
                Selection::Nothing
            } else {
                Selection::Offer(Selected { loaded, offered })
            }
        }
        Err(Rejected::Io(e)) if e.kind() == io::ErrorKind::NotFound => Selection::Nothing,
        Err(e) => {
            let msg = format!("maildir: domain={} skipped file={} reason={e}", spool.domain, entry.id);
            host.log(LogLevel::Warn, &msg);
            Selection::Unusable
        }
    }
}

impl Queue for Maildir {
    type Cursor = MaildirCursor;

    const NEXT_BEFORE_COMMIT: bool = true;

    fn has_pending(&self, domains: &[String]) -> Result<bool, Status> {
        let domains = self.domains(domains)?;
        let (spools, mut errors) = self.spools(&domains)?;
        for spool in &spools {
            self.return_stale_claims(spool);
            // Any order will do to learn whether there is mail: no stat per file.
            let Ok(entries) = self.scan(spool, Order::Unsorted) else {
                errors += 1;
                continue;
            };
            let mut unusable = 0;
            let mut buf = Vec::new();
            for entry in &entries {
                match select(&self.host, &self.config, spool, entry, &domains, &mut buf) {
                    Selection::Offer(_) => return Ok(true),
                    Selection::Nothing => {}
                    Selection::Unusable => unusable += 1,
                }
            }
            if unusable > 0 {
                self.log(
                    LogLevel::Warn,
                    &format!(
                        "domain={} maildir={} holds only files odmrd cannot parse ({unusable}); see `odmrd --queue`",
                        spool.domain,
                        spool.path.display()
                    ),
                );
                errors += 1;
            }
        }
        // "Nothing queued" would be a lie when a spool could not be read.
        if errors > 0 {
            Err(Status::TempFail)
        } else {
            Ok(false)
        }
    }

    fn open(&self, domains: &[String]) -> Result<MaildirCursor, Status> {
        let domains = self.domains(domains)?;
        let (candidates, mut withheld) = self.spools(&domains)?;
        let mut spools = Vec::new();
        let mut locks = Vec::new();
        let mut queue = Vec::new();
        for spool in candidates {
            // With claims, each message is claimed by a rename instead: the
            // seriallock cannot be relied on between hosts (NFS).
            if self.config.claims.is_some() {
                self.return_stale_claims(&spool);
                if let Ok(entries) = self.scan(&spool, Order::Oldest) {
                    queue.extend(entries.into_iter().map(|e| (spools.len(), e)));
                }
                spools.push(spool);
                continue;
            }
            match spool::lock(&spool.path) {
                Ok(Lock::Held(lock)) => locks.push(lock),
                Ok(Lock::Busy) => {
                    let msg = format!(
                        "domain={} maildir={} is locked by another reader (seriallock busy); nothing sent for it now",
                        spool.domain,
                        spool.path.display()
                    );
                    self.log(LogLevel::Warn, &msg);
                    withheld += 1;
                    continue;
                }
                Err(e) => {
                    let msg = format!(
                        "domain={} cannot lock {}/{}: {e}{}",
                        spool.domain,
                        spool.path.display(),
                        spool::LOCK_FILE,
                        running_as()
                    );
                    self.log(LogLevel::Error, &msg);
                    withheld += 1;
                    continue;
                }
            }
            // Under the lock no rewrite of ours is in progress: what is left
            // in tmp/ by a killed one can go now.
            self.clean_tmp(&spool);
            // Only a holder of the lock writes deferral records: listed once
            // now, they need not be looked for message by message.
            let mut spool = spool;
            spool.notes = deferred::recorded(&spool.path).ok();
            // Listed under the lock, so that the list is what this cursor owns.
            match self.scan(&spool, Order::Oldest) {
                Ok(entries) => queue.extend(entries.into_iter().map(|e| (spools.len(), e))),
                Err(_) => withheld += 1,
            }
            spools.push(spool);
        }
        queue.sort_by(|(_, a), (_, b)| spool::oldest_first(a, b));
        Ok(MaildirCursor {
            host: self.host,
            config: self.config.clone(),
            domains,
            spools,
            queue: queue.into(),
            buffer: Vec::new(),
            open: VecDeque::new(),
            unsynced: Unsynced::default(),
            withheld,
            unusable: 0,
            offered_any: false,
            _locks: locks,
        })
    }

    /// Read-only: no seriallock (a collection in progress is not delayed),
    /// no `tmp/` cleaning, no file opened for writing. Without domains, every
    /// valid domain name under the spool root is listed.
    fn list(&self, domains: &[String], report: &mut dyn FnMut(Listed<'_>)) -> Result<(), Status> {
        let domains = if domains.is_empty() { self.enumerate()? } else { self.domains(domains)? };
        for domain in &domains {
            let path = self.config.maildir(domain).map_err(|_| Status::InvalidArgument)?;
            let spool = Spool { domain: domain.clone(), path, notes: None };
            let unreadable = |report: &mut dyn FnMut(Listed<'_>), id: &str, reason: String| {
                report(Listed::Unreadable { domain, id, reason: &reason })
            };
            if !spool.path.exists() {
                let root = self.config.spool_root();
                if !root.is_dir() {
                    unreadable(report, "", format!("spool root {} is missing", root.display()));
                }
                continue;
            }
            let (entries, ignored) = match spool::scan(&spool.path, Order::Oldest) {
                Ok(found) => found,
                Err(e) => {
                    unreadable(
                        report,
                        "",
                        format!("cannot list {}: {e}{}", spool.path.display(), running_as()),
                    );
                    continue;
                }
            };
            for ignored in ignored {
                unreadable(report, &ignored.id, ignored.why);
            }
            // Unknown (unreadable): look for each message's record.
            let notes = deferred::recorded(&spool.path).ok();
            let mut buf = Vec::new();
            for entry in &entries {
                match load(&self.config, &spool, entry, &mut buf) {
                    Ok(loaded) => {
                        let offered = offered_in(&loaded.parsed, std::slice::from_ref(domain));
                        if offered.is_empty() {
                            continue;
                        }
                        let envelope = envelope_of(entry, &Selected { loaded, offered }, &buf);
                        let known = notes.as_ref().map(|n| n.contains(deferred::record_name(&entry.id)));
                        let recorded = match known {
                            Some(false) => Default::default(),
                            _ => deferred::read(&spool.path, &entry.id),
                        };
                        let last_replies: Vec<String> = envelope
                            .recipients
                            .iter()
                            .map(|r| recorded.get(r).cloned().unwrap_or_default())
                            .collect();
                        report(Listed::Message { domain, envelope: &envelope, last_replies: &last_replies });
                    }
                    Err(Rejected::Io(e)) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => unreadable(report, &entry.id, e.to_string()),
                }
            }
        }
        Ok(())
    }
}

/// A collection in progress: holds the seriallock of every maildir it reads
/// until dropped.
pub struct MaildirCursor {
    host: Host,
    config: Config,
    domains: Vec<String>,
    spools: Vec<Spool>,
    queue: VecDeque<(usize, Entry)>,
    /// The buffer messages are read into whole, reused message after
    /// message; lent to the newest open message's body while it is read.
    buffer: Vec<u8>,
    /// The messages handed out and not yet retired: at most two, the older
    /// first. The host may take the next before committing the current
    /// (`NEXT_BEFORE_COMMIT`): bodies are read from the newer, outcomes and
    /// commits go to the older.
    open: VecDeque<Current>,
    unsynced: Unsynced,
    /// Requested maildirs this cursor could not lock or list (logged).
    withheld: usize,
    /// Files passed over as unparseable or unreadable (logged).
    unusable: usize,
    /// Whether a message was offered: an empty cursor with mail withheld
    /// or unusable must not read as "no mail" (453).
    offered_any: bool,
    // Dropped last (fields drop in declaration order): the locks outlive
    // everything else the cursor holds.
    _locks: Vec<Flock<File>>,
}

/// Directories with removals not yet made durable, how many removals, and
/// when the first of them was made.
#[derive(Default)]
struct Unsynced {
    dirs: Vec<PathBuf>,
    removals: usize,
    since: Option<Instant>,
}

impl Drop for MaildirCursor {
    /// The group commit's last sync, before the locks go (fields drop after this).
    fn drop(&mut self) {
        self.sync_removals();
    }
}

/// The message being delivered.
struct Current {
    spool: usize,
    entry: Entry,
    parsed: Parsed,
    /// The offered indices into `parsed.recipients` and their outcomes.
    outcomes: Outcomes,
    /// `None` once the cursor took back the buffer the body was read from
    /// (when the next message is handed out: this one's data has been sent).
    body: Option<Body<Content>>,
    /// The open file, for positional copies in a rewrite.
    file: File,
    committed: bool,
    /// The customer's replies to deferred recipients, by address.
    deferred: std::collections::BTreeMap<String, String>,
    /// With `claim = yes`: the claim, returned when this message is left
    /// without being removed.
    claim: Option<Claim>,
}

impl MaildirCursor {
    fn log(&self, level: LogLevel, msg: &str) {
        self.host.log(level, &format!("maildir: {msg}"));
    }

    /// Update the current message's [`deferred`] record: the replies given
    /// now replace older ones, recipients now done leave it. Information
    /// only: a failure is logged and changes nothing else.
    fn record_deferrals(&mut self) {
        let Some(current) = self.open.front_mut().filter(|c| !c.committed) else { return };
        let done: Vec<&str> =
            current.outcomes.finished().map(|i| current.parsed.recipients[i].address.as_str()).collect();
        let spool = &mut self.spools[current.spool];
        let name = deferred::record_name(&current.entry.id);
        let old = match spool.notes.as_ref().map(|n| n.contains(name)) {
            Some(false) => Default::default(),
            _ => deferred::read(&spool.path, &current.entry.id),
        };
        if current.deferred.is_empty() && done.iter().all(|a| !old.contains_key(*a)) {
            return;
        }
        let mut replies = old;
        replies.extend(std::mem::take(&mut current.deferred));
        replies.retain(|address, _| !done.contains(&address.as_str()));
        match deferred::write(&spool.path, &current.entry.id, &replies) {
            Ok(()) => {
                if let Some(notes) = spool.notes.as_mut() {
                    if replies.is_empty() {
                        notes.remove(name);
                    } else {
                        notes.insert(name.to_owned());
                    }
                }
            }
            Err(e) => {
                // Whether a record is there now is unknown: look each time.
                spool.notes = None;
                let msg = format!("file={} cannot record the deferral replies: {e}", current.entry.id);
                self.host.log(LogLevel::Warn, &format!("maildir: {msg}"));
            }
        }
    }

    /// The message outcomes and commits apply to.
    fn older(&mut self) -> Result<&mut Current, Status> {
        self.open.front_mut().ok_or(Status::InvalidArgument)
    }

    /// Count a removal in `dir`; sync when the group is full.
    fn removed_in(&mut self, dir: PathBuf) {
        if !self.unsynced.dirs.contains(&dir) {
            self.unsynced.dirs.push(dir);
        }
        self.unsynced.removals += 1;
        let since = *self.unsynced.since.get_or_insert_with(Instant::now);
        if self.unsynced.removals >= GROUP_COMMIT || since.elapsed() >= GROUP_COMMIT_AGE {
            self.sync_removals();
        }
    }

    /// Make every removal so far durable. A failure is logged: the files may
    /// come back after a crash and be delivered again.
    fn sync_removals(&mut self) {
        for dir in std::mem::take(&mut self.unsynced.dirs) {
            if let Err(e) = spool::sync_dir(&dir) {
                let msg = format!(
                    "cannot fsync {}: {e}; messages removed from it may be delivered again after a crash",
                    dir.display()
                );
                self.log(LogLevel::Error, &msg);
            }
        }
        self.unsynced.removals = 0;
        self.unsynced.since = None;
    }
}

/// When a file reached the maildir: the Unix time that starts a maildir
/// file name (`1795354394.M1P2.host`), which survives our rewrites; else
/// the file's modification time.
fn arrival(entry: &Entry, modified: Option<SystemTime>) -> Option<SystemTime> {
    let name = entry.id.rsplit('/').next().unwrap_or(&entry.id);
    let stamp =
        name.split('.').next().filter(|t| (9..=11).contains(&t.len())).and_then(|t| t.parse::<u64>().ok());
    match stamp {
        Some(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        None => modified,
    }
}

/// Where the content starts in a file of `layout`.
fn content_start(layout: &Layout) -> u64 {
    match layout {
        Layout::Bsmtp { data_start, .. } => *data_start,
        Layout::Headers { .. } => 0,
    }
}

/// The envelope the host sees of a selected file: its offered recipients.
/// `buf` holds the file when it was read whole.
fn envelope_of(entry: &Entry, selected: &Selected, buf: &[u8]) -> Envelope {
    let Selected { loaded, offered } = selected;
    let size = loaded.size;
    let params = &loaded.parsed.params;
    // A bounded look at the content (in memory when the file was read whole;
    // a large BSMTP file's data is not read before it streams). The headers
    // form's envelope headers, not sent, only make the bound safer.
    // BODY=8BITMIME in BSMTP says 8-bit itself.
    let start = content_start(&loaded.parsed.layout);
    let scanned = match (params.eight_bit, params.lines, loaded.whole) {
        (Some(_), Some(_), _) => None,
        (_, _, Some(len)) => {
            let content = usize::try_from(start).ok().and_then(|start| buf[..len].get(start..));
            content.filter(|c| c.len() as u64 <= SCAN_LIMIT).map(|c| {
                let mut scan = ContentScan::default();
                scan.add(c);
                scan
            })
        }
        (_, _, None) => scan_files(&[(&loaded.file, start)]),
    };
    let eight_bit = params.eight_bit.or(scanned.map(|s| s.eight_bit));
    let lines = params.lines.or(scanned.map(|s| s.lines));
    let offered_at = |i: &usize| &loaded.parsed.recipients[*i];
    Envelope {
        id: entry.id.clone(),
        sender: loaded.parsed.sender.clone(),
        size,
        recipients: offered.iter().map(|i| offered_at(i).address.clone()).collect(),
        arrival: arrival(entry, loaded.modified),
        envid: params.envid.clone(),
        ret: params.ret,
        smtputf8: params.smtputf8,
        eight_bit,
        wire_size: lines.map(|lines| wire_size_bound(size, lines)),
        details: offered.iter().map(|i| offered_at(i).details.clone()).collect(),
    }
}

/// A partial commit of an `Envelope-to:` file: the same file with that field
/// listing only `kept` (the rest byte for byte), through [`spool::rewrite`].
fn rewrite_recipient_field(
    maildir: &std::path::Path,
    path: &std::path::Path,
    file: &File,
    field: &envelope::RecipientField,
    kept: &[&str],
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut before = vec![0u8; usize::try_from(field.range.start).map_err(io::Error::other)?];
    file.read_exact_at(&mut before, 0)?;
    let replaced = envelope::envelope_to_field(field, kept);
    spool::rewrite(maildir, path, file, &[&before, &replaced], field.range.end)
}

/// The body of a loaded message: from `buffer` (taken: it goes back to the
/// cursor with the body) when the file was read whole, else streamed from a
/// second handle on the file.
fn body_of(loaded: &Loaded, buffer: &mut Vec<u8>) -> io::Result<Body<Content>> {
    let start = content_start(&loaded.parsed.layout);
    let reader = match loaded.whole {
        Some(len) => {
            let start = usize::try_from(start).map_err(io::Error::other)?;
            Content::Memory(body::memory(std::mem::take(buffer), start, len))
        }
        None => {
            let mut handle = loaded.file.try_clone()?;
            handle.seek(SeekFrom::Start(start))?;
            Content::File(BufReader::with_capacity(READ_BUFFER, handle))
        }
    };
    Ok(match &loaded.parsed.layout {
        Layout::Bsmtp { .. } => Body::Bsmtp { reader, unstuffer: Unstuffer::default() },
        Layout::Headers { skip, .. } => Body::Headers { reader, pos: 0, skip: skip.clone() },
    })
}

impl Cursor for MaildirCursor {
    fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
        // The messages open so far have been sent: the buffer their bodies
        // were read from is taken back for the next.
        for older in &mut self.open {
            if let Some(Content::Memory(memory)) = older.body.take().map(Body::into_source) {
                self.buffer = body::into_buffer(memory);
            }
        }
        // A committed message is done with; one awaiting its commit stays
        // open, the older of two at most. Leaving a message without commit
        // leaves its file exactly as it was.
        self.open.retain(|m| !m.committed);
        while self.open.len() > 1 {
            self.open.pop_front();
        }
        while let Some((spool_index, mut entry)) = self.queue.pop_front() {
            let spool = &self.spools[spool_index];
            let claim = match &self.config.claims {
                None => None,
                Some(claims) => match Claim::take(&entry.path, &claims.host) {
                    Ok(Some(claim)) => {
                        entry.path = claim.path().to_owned();
                        Some(claim)
                    }
                    // Another front end has it.
                    Ok(None) => continue,
                    Err(e) => {
                        let msg = format!("domain={} file={} cannot claim: {e}", spool.domain, entry.id);
                        self.log(LogLevel::Error, &msg);
                        continue;
                    }
                },
            };
            let selected =
                match select(&self.host, &self.config, spool, &entry, &self.domains, &mut self.buffer) {
                    Selection::Offer(selected) => selected,
                    Selection::Nothing => continue,
                    Selection::Unusable => {
                        self.unusable += 1;
                        continue;
                    }
                };
            let envelope = envelope_of(&entry, &selected, &self.buffer);
            let body = match body_of(&selected.loaded, &mut self.buffer) {
                Ok(body) => body,
                Err(e) => {
                    self.log(
                        LogLevel::Warn,
                        &format!("domain={} skipped file={} reason={e}", spool.domain, entry.id),
                    );
                    continue;
                }
            };
            self.open.push_back(Current {
                spool: spool_index,
                entry,
                outcomes: Outcomes::new(selected.offered),
                parsed: selected.loaded.parsed,
                body: Some(body),
                file: selected.loaded.file,
                committed: false,
                deferred: Default::default(),
                claim,
            });
            self.offered_any = true;
            return Ok(Some(envelope));
        }
        if !self.offered_any && self.withheld + self.unusable > 0 {
            let msg = format!(
                "domains={} nothing offered: {} maildir(s) locked or unreadable, {} file(s) unparseable",
                self.domains.join(","),
                self.withheld,
                self.unusable
            );
            self.log(LogLevel::Warn, &msg);
            return Err(Status::TempFail);
        }
        Ok(None)
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Status> {
        let current = self.open.back_mut().ok_or(Status::InvalidArgument)?;
        let body = current.body.as_mut().ok_or(Status::InvalidArgument)?;
        body.read(buf).map_err(|e| {
            self.read_failed(&e);
            Status::TempFail
        })
    }

    fn set_outcome(&mut self, index: usize, outcome: Outcome) -> Result<(), Status> {
        let current = self.older()?;
        if current.committed {
            return Err(Status::InvalidArgument);
        }
        current.outcomes.set(index, outcome)
    }

    fn set_outcome_reply(&mut self, index: usize, outcome: Outcome, reply: &str) -> Result<(), Status> {
        self.set_outcome(index, outcome)?;
        let current = self.older()?;
        if outcome == Outcome::TempFail && !reply.is_empty() {
            let offered = current.outcomes.offered().get(index).copied().ok_or(Status::InvalidArgument)?;
            let address = current.parsed.recipients[offered].address.clone();
            current.deferred.insert(address, reply.to_string());
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Status> {
        self.record_deferrals();
        let result = self.commit_older();
        // With a newer message open, the older is retired whether its commit
        // succeeded or not: what follows goes to the newer.
        if self.open.len() > 1 {
            self.open.pop_front();
        }
        result
    }
}

impl MaildirCursor {
    /// Log a failed read of the newest message's body. A BSMTP file with
    /// bytes after its terminating `.` line (two messages run together)
    /// would end every later session of the domain at the same place and
    /// hold back the messages behind it, so it is moved aside, whole, into
    /// [`spool::QUARANTINE_DIR`] for the operator (under the lock or claim
    /// this cursor holds). The host still ends the session before its final
    /// dot: nothing is committed. Any other error (I/O above all) leaves
    /// the file where it is, to be tried again.
    fn read_failed(&mut self, e: &io::Error) {
        let Some(current) = self.open.back_mut() else { return };
        let id = current.entry.id.clone();
        if !body::is_run_together(e) {
            self.log(LogLevel::Error, &format!("file={id} read failed: {e}"));
            return;
        }
        let spool = &self.spools[current.spool];
        let domain = spool.domain.clone();
        let name = id.rsplit('/').next().unwrap_or(&id);
        let dir = spool::QUARANTINE_DIR;
        match spool::quarantine(&spool.path, &current.entry.path, name) {
            Ok(moved) => {
                if let Some(claim) = current.claim.as_mut() {
                    // Moved from the claimed name: nothing to return.
                    claim.settle();
                }
                // Read no further from a file that is no longer queued.
                if let Some(Content::Memory(memory)) = current.body.take().map(Body::into_source) {
                    self.buffer = body::into_buffer(memory);
                }
                let msg = format!(
                    "domain={domain} file={id} moved to {dir}/{moved}: {e} (two messages run together?); \
                     the session ends before its final dot; split the file and move the parts back into new/"
                );
                self.log(LogLevel::Error, &msg);
            }
            Err(q) => {
                let msg = format!(
                    "domain={domain} file={id} read failed: {e}; cannot move it to {dir}/: {q}; it holds back \
                     the messages after it until it is split or moved away"
                );
                self.log(LogLevel::Error, &msg);
            }
        }
    }

    fn commit_older(&mut self) -> Result<(), Status> {
        let current = self.open.front_mut().ok_or(Status::InvalidArgument)?;
        if current.committed {
            return Ok(());
        }
        let mut done = vec![false; current.parsed.recipients.len()];
        for i in current.outcomes.finished() {
            done[i] = true;
        }
        if !done.contains(&true) {
            return Ok(());
        }
        let spool = &self.spools[current.spool];
        let path = &current.entry.path;
        let mut removed_from = None;
        let result = if !done.contains(&false) {
            spool::remove(path).map(|dir| {
                removed_from = Some(dir);
                "removed"
            })
        } else {
            match &current.parsed.layout {
                Layout::Bsmtp { mail_line, data_line, data_start } => {
                    let mut head: Vec<&[u8]> = vec![mail_line];
                    let kept = current.parsed.recipients.iter().zip(&done).filter(|(_, &d)| !d);
                    head.extend(kept.map(|(r, _)| r.line.as_slice()));
                    head.push(data_line);
                    spool::rewrite(&spool.path, path, &current.file, &head, *data_start).map(|()| "rewritten")
                }
                Layout::Headers { source, .. } => {
                    let kept: Vec<&str> = (current.parsed.recipients.iter().zip(&done))
                        .filter(|(_, &d)| !d)
                        .map(|(r, _)| r.address.as_str())
                        .collect();
                    rewrite_recipient_field(&spool.path, path, &current.file, source, &kept)
                        .map(|()| "rewritten")
                }
            }
        };
        let id = current.entry.id.clone();
        let domain = spool.domain.clone();
        match result {
            Ok(what) => {
                current.committed = true;
                if let (Some(claim), "removed") = (current.claim.as_mut(), what) {
                    claim.settle();
                }
                let left = done.iter().filter(|d| !**d).count();
                self.log(
                    LogLevel::Debug,
                    &format!("domain={domain} file={id} {what} remaining_recipients={left}"),
                );
                if let Some(dir) = removed_from {
                    self.removed_in(dir);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound && !done.contains(&false) => {
                current.committed = true;
                self.log(LogLevel::Warn, &format!("domain={domain} file={id} was already gone at commit"));
                Ok(())
            }
            Err(e) => {
                self.log(
                    LogLevel::Error,
                    &format!("domain={domain} file={id} commit failed, message kept: {e}"),
                );
                Err(Status::TempFail)
            }
        }
    }
}
