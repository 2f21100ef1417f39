//! The queue backend proper: the `Maildir` instance, its `has_pending`, and
//! the cursor that walks, offers and commits messages.
//!
//! Owns: the selection rule (a file that parses and has at least one
//! recipient in the requested domains; shared by `has_pending` and the cursor
//! so that a "yes" is never followed by an empty session), per-domain locking
//! for the life of a cursor, outcome bookkeeping and what a commit changes.
//! Does not: parse file formats (`envelope`), stream bodies (`body`) or make
//! system calls itself (`spool`).

use crate::body::{Body, Unstuffer};
use crate::claim::{self, Claim};
use crate::config::Config;
use crate::envelope::{self, Layout, Parsed, Rejected};
use crate::spool::{self, Entry, Lock};
use nix::fcntl::Flock;
use odmr_api::names::{in_domains, requested_domains};
use odmr_api::outcomes::Outcomes;
use odmr_api::params::{scan_files, wire_size_bound};
use odmr_api::{Cursor, Envelope, Host, Instance, LogLevel, Outcome, Queue, Status};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Size of the read buffer for each message: memory per cursor stays at this
/// whatever the message size.
const READ_BUFFER: usize = 64 * 1024;

/// Removals made durable together (group commit): the directory fsync that
/// makes an unlink durable is the largest cost of a commit, so it is done once
/// per this many removals, and always when the cursor closes. A crash in
/// between can bring back removed files: delivered again, never lost.
const GROUP_COMMIT: usize = 256;

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
    /// maildir means nothing queued; any other problem is logged and counted
    /// in the second value.
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
                    self.log(LogLevel::Debug, &format!("domain={domain} maildir={} absent", path.display()));
                    continue;
                }
                Err(e) => {
                    self.log(
                        LogLevel::Error,
                        &format!("domain={domain} maildir={} unusable: {e}", path.display()),
                    );
                    errors += 1;
                    continue;
                }
            }
            spools.push(Spool { domain: domain.clone(), path });
        }
        Ok((spools, errors))
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

    /// List one maildir's messages, logging what is passed over.
    fn scan(&self, spool: &Spool) -> io::Result<Vec<Entry>> {
        let (entries, ignored) = spool::scan(&spool.path).inspect_err(|e| {
            self.log(
                LogLevel::Error,
                &format!("domain={} maildir={} cannot list: {e}", spool.domain, spool.path.display()),
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

/// A parsed message file and the indices of its recipients in `domains`.
struct Selected {
    file: File,
    parsed: Parsed,
    offered: Vec<usize>,
}

/// The selection rule shared by `has_pending` and the cursor: open without
/// following links, parse, keep the recipients of the requested domains.
/// None: nothing for these domains, vanished, or unusable (logged, kept).
fn select(
    host: &Host,
    config: &Config,
    spool: &Spool,
    entry: &Entry,
    domains: &[String],
) -> Option<Selected> {
    let load = || -> Result<(File, Parsed), Rejected> {
        let file = spool::open_message(&entry.path)?;
        let prefix = config.prefix_for(&spool.domain);
        let parsed = envelope::parse(&mut BufReader::with_capacity(READ_BUFFER, &file), prefix.as_deref())?;
        Ok((file, parsed))
    };
    match load() {
        Ok((file, parsed)) => {
            let offered: Vec<usize> = (0..parsed.recipients.len())
                .filter(|&i| in_domains(&parsed.recipients[i].address, domains))
                .collect();
            if offered.is_empty() {
                None
            } else {
                Some(Selected { file, parsed, offered })
            }
        }
        Err(Rejected::Io(e)) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            let msg = format!("maildir: domain={} skipped file={} reason={e}", spool.domain, entry.id);
            host.log(LogLevel::Warn, &msg);
            None
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
            let Ok(entries) = self.scan(spool) else {
                errors += 1;
                continue;
            };
            if entries.iter().any(|e| select(&self.host, &self.config, spool, e, &domains).is_some()) {
                return Ok(true);
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
        let (candidates, _) = self.spools(&domains)?;
        let mut spools = Vec::new();
        let mut locks = Vec::new();
        let mut queue = Vec::new();
        for spool in candidates {
            // With claims, each message is claimed by a rename instead: the
            // seriallock cannot be relied on between hosts (NFS).
            if self.config.claims.is_some() {
                self.return_stale_claims(&spool);
                if let Ok(entries) = self.scan(&spool) {
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
                    continue;
                }
                Err(e) => {
                    let msg = format!(
                        "domain={} cannot lock {}/{}: {e}",
                        spool.domain,
                        spool.path.display(),
                        spool::LOCK_FILE
                    );
                    self.log(LogLevel::Error, &msg);
                    continue;
                }
            }
            // Under the lock no rewrite of ours is in progress: what is left
            // in tmp/ by a killed one can go now.
            self.clean_tmp(&spool);
            // Listed under the lock, so that the list is what this cursor owns.
            if let Ok(entries) = self.scan(&spool) {
                queue.extend(entries.into_iter().map(|e| (spools.len(), e)));
            }
            spools.push(spool);
        }
        queue.sort_by(|(_, a), (_, b)| {
            let name = |e: &Entry| e.path.file_name().map(|n| n.to_owned());
            a.mtime.cmp(&b.mtime).then_with(|| name(a).cmp(&name(b)))
        });
        Ok(MaildirCursor {
            host: self.host,
            config: self.config.clone(),
            domains,
            spools,
            queue: queue.into(),
            open: VecDeque::new(),
            unsynced: Unsynced::default(),
            _locks: locks,
        })
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
    /// The messages handed out and not yet retired: at most two, the older
    /// first. The host may take the next before committing the current
    /// (`NEXT_BEFORE_COMMIT`): bodies are read from the newer, outcomes and
    /// commits go to the older.
    open: VecDeque<Current>,
    unsynced: Unsynced,
    // Dropped last (fields drop in declaration order): the locks outlive
    // everything else the cursor holds.
    _locks: Vec<Flock<File>>,
}

/// Directories with removals not yet made durable, and how many removals.
#[derive(Default)]
struct Unsynced {
    dirs: Vec<PathBuf>,
    removals: usize,
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
    body: Body<File>,
    /// A second handle on the same open file, for positional copies in a rewrite.
    file: File,
    committed: bool,
    /// With `claim = yes`: the claim, returned when this message is left
    /// without being removed.
    claim: Option<Claim>,
}

impl MaildirCursor {
    fn log(&self, level: LogLevel, msg: &str) {
        self.host.log(level, &format!("maildir: {msg}"));
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
        if self.unsynced.removals >= GROUP_COMMIT {
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
    }
}

/// When a file reached the maildir: the Unix time that starts a maildir
/// file name (`1795354394.M1P2.host`), which survives our rewrites; else
/// the file's modification time.
fn arrival(entry: &Entry, meta: Option<&std::fs::Metadata>) -> Option<SystemTime> {
    let name = entry.id.rsplit('/').next().unwrap_or(&entry.id);
    let stamp =
        name.split('.').next().filter(|t| (9..=11).contains(&t.len())).and_then(|t| t.parse::<u64>().ok());
    match stamp {
        Some(secs) => Some(UNIX_EPOCH + Duration::from_secs(secs)),
        None => meta.and_then(|m| m.modified().ok()),
    }
}

fn body_of(file: &File, layout: &Layout) -> io::Result<Body<File>> {
    let mut handle = file.try_clone()?;
    Ok(match layout {
        Layout::Bsmtp { data_start, .. } => {
            handle.seek(SeekFrom::Start(*data_start))?;
            Body::Bsmtp {
                reader: BufReader::with_capacity(READ_BUFFER, handle),
                unstuffer: Unstuffer::default(),
            }
        }
        Layout::Headers { skip } => {
            handle.seek(SeekFrom::Start(0))?;
            Body::Headers {
                reader: BufReader::with_capacity(READ_BUFFER, handle),
                pos: 0,
                skip: skip.clone(),
            }
        }
    })
}

impl Cursor for MaildirCursor {
    fn next_message(&mut self) -> Result<Option<Envelope>, Status> {
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
            let Some(selected) = select(&self.host, &self.config, spool, &entry, &self.domains) else {
                continue;
            };
            let body = match body_of(&selected.file, &selected.parsed.layout) {
                Ok(body) => body,
                Err(e) => {
                    self.log(
                        LogLevel::Warn,
                        &format!("domain={} skipped file={} reason={e}", spool.domain, entry.id),
                    );
                    continue;
                }
            };
            let meta = selected.file.metadata().ok();
            let size = meta.as_ref().map_or(0, |m| m.len());
            let params = &selected.parsed.params;
            // A bounded look at the content (BSMTP data is not read before it
            // streams; the headers form's envelope headers, not sent, only
            // make the bound safer). BODY=8BITMIME in BSMTP says 8-bit itself.
            let content_start = match selected.parsed.layout {
                Layout::Bsmtp { data_start, .. } => data_start,
                Layout::Headers { .. } => 0,
            };
            let scanned = match (params.eight_bit, params.lines) {
                (Some(_), Some(_)) => None,
                _ => scan_files(&[(&selected.file, content_start)]),
            };
            let eight_bit = params.eight_bit.or(scanned.map(|s| s.eight_bit));
            let lines = params.lines.or(scanned.map(|s| s.lines));
            let envelope = Envelope {
                id: entry.id.clone(),
                sender: selected.parsed.sender.clone(),
                size,
                recipients: selected
                    .offered
                    .iter()
                    .map(|&i| selected.parsed.recipients[i].address.clone())
                    .collect(),
                arrival: arrival(&entry, meta.as_ref()),
                envid: params.envid.clone(),
                ret: params.ret,
                smtputf8: params.smtputf8,
                eight_bit,
                wire_size: lines.map(|lines| wire_size_bound(size, lines)),
                details: selected
                    .offered
                    .iter()
                    .map(|&i| selected.parsed.recipients[i].details.clone())
                    .collect(),
            };
            self.open.push_back(Current {
                spool: spool_index,
                entry,
                outcomes: Outcomes::new(selected.offered),
                parsed: selected.parsed,
                body,
                file: selected.file,
                committed: false,
                claim,
            });
            return Ok(Some(envelope));
        }
        Ok(None)
    }

    fn read_body(&mut self, buf: &mut [u8]) -> Result<usize, Status> {
        let current = self.open.back_mut().ok_or(Status::InvalidArgument)?;
        let id = current.entry.id.clone();
        current.body.read(buf).map_err(|e| {
            self.log(LogLevel::Error, &format!("file={id} read failed: {e}"));
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

    fn commit(&mut self) -> Result<(), Status> {
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
                // One recipient per file: it is either done or not.
                Layout::Headers { .. } => Err(io::Error::other("partial commit of a single-recipient file")),
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
