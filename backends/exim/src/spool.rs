//! Exim's spool on disk: where a message's files are, listing the queue,
//! the `-D` lock, appending to the journal, removing a finished message and
//! reclaiming what an interrupted removal of ours left.
//!
//! Owns: every system call on the spool. Paths follow `spool_q_fname()`:
//! `ROOT/input/SUBDIR/ID-H` where ROOT is `spool_directory` or
//! `spool_directory/QUEUE`, and SUBDIR is empty (unsplit) or the sixth
//! character of the id (`split_spool_directory`); both layouts are always
//! searched, as Exim does. The lock is a non-blocking Linux OFD write lock on
//! the whole `-D` file, which conflicts with the POSIX lock Exim takes on its
//! first line (formats.md 3.6) and, unlike a POSIX lock, belongs to the open
//! file rather than the process (safe with threads, not dropped by closing
//! another descriptor). Does not: parse file contents (`header`).

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Exim's `SPOOL_MODE`.
const SPOOL_MODE: u32 = 0o640;

/// Where one message lives: the queue root and its subdirectory ("" or one
/// character).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `spool_directory` or `spool_directory/QUEUE`.
    pub root: PathBuf,
    /// "" (unsplit) or the split subdirectory.
    pub subdir: String,
    /// The message id.
    pub id: String,
}

impl Location {
    /// `input/SUBDIR`.
    pub fn input_dir(&self) -> PathBuf {
        self.root.join("input").join(&self.subdir)
    }

    /// `input/SUBDIR/ID<suffix>`, suffix `-D`, `-H` or `-J`.
    pub fn file(&self, suffix: &str) -> PathBuf {
        self.input_dir().join(format!("{}{suffix}", self.id))
    }

    /// `msglog/SUBDIR/ID`.
    pub fn msglog(&self) -> PathBuf {
        self.root.join("msglog").join(&self.subdir).join(&self.id)
    }

    /// The same message in the other layout (split ↔ unsplit).
    pub fn other_layout(&self) -> Location {
        let subdir = if self.subdir.is_empty() { self.id[5..6].to_string() } else { String::new() };
        Location { root: self.root.clone(), subdir, id: self.id.clone() }
    }

    /// Length of the first line of `-D` (`ID-D\n`), where the body starts.
    pub fn data_offset(&self) -> u64 {
        self.id.len() as u64 + 3
    }
}

/// The result of listing a queue: messages (by their `-H`) and the
/// subdirectories that could not be read.
pub struct Listing {
    /// One per `-H` with a valid id, in id order (oldest first).
    pub messages: Vec<Location>,
    /// Journals without a `-H` in either layout: what a [`remove`] that was
    /// interrupted left (see there), to [`reclaim`].
    pub leftovers: Vec<Location>,
    /// Unreadable subdirectories, with the error.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// List `ROOT/input` and its one-character subdirectories as Exim's
/// `queue_get_spool_list()` does: names of 18 or 25 bytes ending in `-H`
/// with a valid message id. Err when `input` itself cannot be read.
pub fn list(root: &Path) -> io::Result<Listing> {
    let input = root.join("input");
    let mut found = Found::default();
    let mut errors = Vec::new();
    let mut subdirs = Vec::new();
    collect(root, "", &input, &mut found, &mut subdirs)?;
    for sub in subdirs {
        if let Err(e) = collect(root, &sub, &input.join(&sub), &mut found, &mut Vec::new()) {
            if e.kind() != io::ErrorKind::NotFound {
                errors.push((input.join(&sub), e));
            }
        }
    }
    let Found { mut messages, journals } = found;
    let listed: std::collections::HashSet<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let leftovers = journals.into_iter().filter(|j| !listed.contains(j.id.as_str())).collect();
    // Ids start with the arrival time in base 62: sorting by the
    // characters of the time, then the rest, gives arrival order.
    messages.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)).then(a.subdir.cmp(&b.subdir)));
    messages.dedup_by(|a, b| a.id == b.id);
    Ok(Listing { messages, leftovers, errors })
}

/// What [`collect`] gathers: messages by their `-H`, and every `-J`.
#[derive(Default)]
struct Found {
    messages: Vec<Location>,
    journals: Vec<Location>,
}

fn id_order(id: &str) -> Vec<u8> {
    id.bytes().map(base62_rank).collect()
}

fn base62_rank(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'A'..=b'Z' => b - b'A' + 10,
        b'a'..=b'z' => b - b'a' + 36,
        _ => 255,
    }
}

fn collect(
    root: &Path,
    subdir: &str,
    dir: &Path,
    found: &mut Found,
    subdirs: &mut Vec<String>,
) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 1 && name.as_bytes()[0].is_ascii_alphanumeric() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                subdirs.push(name.to_string());
            }
            continue;
        }
        let (list, id) = match (name.strip_suffix("-H"), name.strip_suffix("-J")) {
            (Some(id), _) => (&mut found.messages, id),
            (_, Some(id)) => (&mut found.journals, id),
            _ => continue,
        };
        if crate::header::is_message_id(id) {
            list.push(Location { root: root.to_path_buf(), subdir: subdir.to_string(), id: id.into() });
        }
    }
    Ok(())
}

/// Open a spool file for reading, never through a symbolic link.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Open `-D` as Exim does for locking: read-write, append, no symlinks.
pub fn open_data(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).append(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The outcome of trying to lock `-D`.
pub enum Lock {
    /// We hold the write lock while this file (or a clone of it) is open.
    Held(File),
    /// Another process (Exim) holds a lock on it.
    Busy,
}

/// Take a non-blocking OFD write lock on the whole of `file`.
pub fn try_lock(file: File) -> io::Result<Lock> {
    let lock = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match fcntl(file.as_raw_fd(), FcntlArg::F_OFD_SETLK(&lock)) {
        Ok(_) => Ok(Lock::Held(file)),
        Err(Errno::EAGAIN | Errno::EACCES) => Ok(Lock::Busy),
        Err(e) => Err(io::Error::from(e)),
    }
}

/// Read a whole small file (`-J`); empty when it does not exist.
pub fn read_optional(path: &Path) -> io::Result<Vec<u8>> {
    match open_read(path) {
        Ok(mut f) => {
            let mut out = Vec::new();
            f.read_to_end(&mut out)?;
            Ok(out)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Append `lines` to the journal `path` and fsync it, creating it with
/// Exim's mode and, when we run as root, Exim's owner (taken from `-D`) so
/// that Exim can open it read-write to merge it. `needs_newline`: the
/// existing journal does not end in a newline (a torn write), so start on a
/// new line.
pub fn append_journal(path: &Path, data: &File, lines: &[&str], needs_newline: bool) -> io::Result<()> {
    let journal = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(SPOOL_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let owner = data.metadata()?;
    let ours = journal.metadata()?;
    if (ours.uid(), ours.gid()) != (owner.uid(), owner.gid()) && nix::unistd::geteuid().is_root() {
        std::os::unix::fs::fchown(&journal, Some(owner.uid()), Some(owner.gid()))?;
    }
    let mut text = String::new();
    if needs_newline {
        text.push('\n');
    }
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    // One write: a crash leaves at most one torn last line.
    (&journal).write_all(text.as_bytes())?;
    journal.sync_all()
}

/// Remove a finished message (every recipient journaled) while the caller
/// holds the `-D` lock: `-H`, msglog, `-D`, then `-J`, stopping at the first
/// failure. Missing msglog and journal are fine; a missing `-D` or `-H` is an
/// error.
///
/// Why this order and not Exim's own (msglog, `-D`, `-H`, `-J`, formats.md
/// 3.7 d): an interruption (a kill, a crash, a failed unlink) can strike
/// between any two unlinks. Exim's order then leaves a `-H` without `-D`
/// that `exim -bp` lists for ever and queue runs trip over, until
/// `exim -Mrm`. With `-H` first the message is invisible to Exim at once
/// (its queue scanner and `exim -bp` only see `-H` names, and Exim itself
/// removes `-H` first when moving a message for the same reason), and what
/// can be left, `-D` and `-J` (and the msglog) without `-H`, is a state that
/// only this function produces: reception creates `-D` before `-H` but never
/// a `-J`, and Exim rewrites `-H` by rename, never removing it while a `-J`
/// exists. [`list`] reports such journals as leftovers and [`reclaim`]
/// finishes the removal. Nothing is lost either way: the journal already
/// records every recipient as done.
pub fn remove(location: &Location) -> io::Result<()> {
    let unlink = |path: PathBuf, required: bool| match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let result = unlink(location.file("-H"), true)
        .and_then(|()| unlink(location.msglog(), false))
        .and_then(|()| unlink(location.file("-D"), true))
        .and_then(|()| unlink(location.file("-J"), false));
    if let Ok(dir) = File::open(location.input_dir()) {
        let _ = dir.sync_all();
    }
    result
}

/// What [`reclaim`] did with a leftover.
#[derive(Debug, PartialEq, Eq)]
pub enum Reclaimed {
    /// Its remaining files are gone.
    Removed,
    /// Its `-D` is locked by another process (Exim moving it, say): later.
    Busy,
    /// A `-H` appeared meanwhile: a message, not a leftover; left alone.
    Message,
}

/// Finish an interrupted [`remove`] of a message listed as a leftover (a
/// `-J` without `-H`): under the `-D` lock when there is still a `-D`, check
/// again that neither layout has a `-H`, then unlink the msglog, `-D` and
/// `-J`, in that order (a journal alone is still recognisably a leftover).
pub fn reclaim(location: &Location) -> io::Result<Reclaimed> {
    let lock = match open_data(&location.file("-D")) {
        Ok(file) => match try_lock(file)? {
            Lock::Held(file) => Some(file),
            Lock::Busy => return Ok(Reclaimed::Busy),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", location.file("-D").display()))),
    };
    for place in [location.clone(), location.other_layout()] {
        if fs::symlink_metadata(place.file("-H")).is_ok() {
            return Ok(Reclaimed::Message);
        }
    }
    for path in [location.msglog(), location.file("-D"), location.file("-J")] {
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
            }
            _ => {}
        }
    }
    if let Ok(dir) = File::open(location.input_dir()) {
        let _ = dir.sync_all();
    }
    drop(lock);
    Ok(Reclaimed::Removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_finds_split_and_unsplit_messages_of_both_formats() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("input");
        fs::create_dir_all(input.join("R")).unwrap();
        fs::create_dir_all(input.join("x")).unwrap();
        for name in [
            "1xV7gw-0004Qd-11-H",
            "1xV7gw-0004Qd-11-D",
            "hdr.1xV7gw-0004Qd-12",
            "1xV7gw-0004Qd-1-H",
            "bogus-H",
            "R/1vMkbR-00000000Ab3-0Fq2-H",
            "x/1xV7gx-0004Qd-11-H",
            "x/1xV7gx-0004Qd-11-J",
            "1xV7gv-0004Qd-11-H",
        ] {
            fs::write(input.join(name), "").unwrap();
        }
        let listing = list(dir.path()).unwrap();
        let found: Vec<(&str, &str)> =
            listing.messages.iter().map(|l| (l.subdir.as_str(), l.id.as_str())).collect();
        assert_eq!(
            found,
            [
                ("R", "1vMkbR-00000000Ab3-0Fq2"),
                ("", "1xV7gv-0004Qd-11"),
                ("", "1xV7gw-0004Qd-11"),
                ("x", "1xV7gx-0004Qd-11")
            ]
        );
        assert!(listing.errors.is_empty());
        let l = &listing.messages[2];
        assert_eq!(l.file("-D"), input.join("1xV7gw-0004Qd-11-D"));
        assert_eq!(l.other_layout().file("-D"), input.join("w/1xV7gw-0004Qd-11-D"));
        assert_eq!(l.other_layout().msglog(), dir.path().join("msglog/w/1xV7gw-0004Qd-11"));
        assert_eq!(l.data_offset(), 19);
        assert_eq!(listing.messages[0].data_offset(), 26);
        assert!(list(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn lock_conflicts_and_is_released_on_close() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1xV7gw-0004Qd-11-D");
        fs::write(&path, "1xV7gw-0004Qd-11-D\nbody\n").unwrap();
        let Lock::Held(held) = try_lock(open_data(&path).unwrap()).unwrap() else { panic!("not locked") };
        assert!(matches!(try_lock(open_data(&path).unwrap()).unwrap(), Lock::Busy));
        // Closing another descriptor of the same file keeps an OFD lock.
        drop(open_data(&path).unwrap());
        assert!(matches!(try_lock(open_data(&path).unwrap()).unwrap(), Lock::Busy));
        drop(held);
        assert!(matches!(try_lock(open_data(&path).unwrap()).unwrap(), Lock::Held(_)));
    }

    #[test]
    fn journal_appends_lines_and_repairs_a_torn_end() {
        let dir = tempfile::tempdir().unwrap();
        let data_path = dir.path().join("d");
        fs::write(&data_path, "x").unwrap();
        let data = File::open(&data_path).unwrap();
        let journal = dir.path().join("j");
        append_journal(&journal, &data, &["a@example.org"], false).unwrap();
        fs::write(&journal, "a@example.org\nb@exa").unwrap();
        append_journal(&journal, &data, &["C@Example.org", "d@example.org"], true).unwrap();
        assert_eq!(
            fs::read_to_string(&journal).unwrap(),
            "a@example.org\nb@exa\nC@Example.org\nd@example.org\n"
        );
        let mode = fs::metadata(&journal).unwrap().mode();
        assert_eq!(mode & 0o007, 0, "journal readable by others: {mode:o}");
    }

    /// A message's files in an unsplit spool at `dir`: each of `suffixes`
    /// (`-D`, `-H`, `-J`, or `msglog`) created.
    fn message(dir: &Path, suffixes: &[&str]) -> Location {
        let l = Location { root: dir.into(), subdir: String::new(), id: "1xV7gw-0004Qd-11".into() };
        fs::create_dir_all(dir.join("input")).unwrap();
        fs::create_dir_all(dir.join("msglog")).unwrap();
        for suffix in suffixes {
            let path = if *suffix == "msglog" { l.msglog() } else { l.file(suffix) };
            fs::write(path, format!("{}-D\n", l.id)).unwrap();
        }
        l
    }

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn removal_takes_everything_and_tolerates_missing_extras() {
        let dir = tempfile::tempdir().unwrap();
        let l = message(dir.path(), &["-D", "-H", "msglog"]);
        remove(&l).unwrap();
        assert_eq!(count(&dir.path().join("input")), 0);
        assert_eq!(count(&dir.path().join("msglog")), 0);
        assert!(remove(&l).is_err(), "a second removal reports the missing -H");
    }

    #[test]
    fn an_interrupted_removal_hides_the_message_at_once_and_leaves_a_reclaimable_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let l = message(dir.path(), &["-H", "-J", "msglog"]);
        // A -D that cannot be unlinked: the removal stops right there.
        fs::create_dir_all(l.file("-D").join("x")).unwrap();
        assert!(remove(&l).is_err());
        assert!(!l.file("-H").exists(), "-H goes first, so Exim no longer lists the message");
        assert!(l.file("-J").exists(), "the journal stays until -D is gone");
        let listing = list(dir.path()).unwrap();
        assert!(listing.messages.is_empty());
        assert_eq!(listing.leftovers, std::slice::from_ref(&l));

        // A killed removal (a plain -D left): reclaimed under the lock.
        fs::remove_dir_all(l.file("-D")).unwrap();
        fs::write(l.file("-D"), format!("{}-D\nbody\n", l.id)).unwrap();
        let held = try_lock(open_data(&l.file("-D")).unwrap()).unwrap();
        assert_eq!(reclaim(&l).unwrap(), Reclaimed::Busy);
        assert!(l.file("-D").exists() && l.file("-J").exists());
        drop(held);
        assert_eq!(reclaim(&l).unwrap(), Reclaimed::Removed);
        assert_eq!(count(&dir.path().join("input")), 0);
        assert_eq!(count(&dir.path().join("msglog")), 0);

        // Killed after -D: the journal alone is a leftover too.
        fs::write(l.file("-J"), "a@example.org\n").unwrap();
        assert_eq!(list(dir.path()).unwrap().leftovers, std::slice::from_ref(&l));
        assert_eq!(reclaim(&l).unwrap(), Reclaimed::Removed);
        assert_eq!(count(&dir.path().join("input")), 0);
    }

    #[test]
    fn what_exim_itself_leaves_is_no_leftover_of_ours() {
        // Reception in progress (-D before -H, no journal), a message with
        // its journal, and a journal whose -H is in the other layout.
        let dir = tempfile::tempdir().unwrap();
        let receiving = message(dir.path(), &["-D"]);
        assert!(list(dir.path()).unwrap().leftovers.is_empty());
        fs::write(receiving.file("-H"), "").unwrap();
        fs::write(receiving.file("-J"), "").unwrap();
        let listing = list(dir.path()).unwrap();
        assert_eq!((listing.messages.len(), listing.leftovers.len()), (1, 0));
        let split = receiving.other_layout();
        fs::create_dir_all(split.input_dir()).unwrap();
        fs::rename(receiving.file("-J"), split.file("-J")).unwrap();
        assert!(list(dir.path()).unwrap().leftovers.is_empty());
        // A -H that appears before the reclaim wins.
        assert_eq!(reclaim(&split).unwrap(), Reclaimed::Message);
        assert!(split.file("-J").exists() && receiving.file("-D").exists());
    }
}
