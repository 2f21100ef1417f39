//! Exim's spool on disk: where a message's files are, listing the queue,
//! the `-D` lock, appending to the journal and removing a finished message.
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
    /// Unreadable subdirectories, with the error.
    pub errors: Vec<(PathBuf, io::Error)>,
}

/// List `ROOT/input` and its one-character subdirectories as Exim's
/// `queue_get_spool_list()` does: names of 18 or 25 bytes ending in `-H`
/// with a valid message id. Err when `input` itself cannot be read.
pub fn list(root: &Path) -> io::Result<Listing> {
    let input = root.join("input");
    let mut messages = Vec::new();
    let mut errors = Vec::new();
    let mut subdirs = Vec::new();
    collect(root, "", &input, &mut messages, &mut subdirs)?;
    for sub in subdirs {
        if let Err(e) = collect(root, &sub, &input.join(&sub), &mut messages, &mut Vec::new()) {
            if e.kind() != io::ErrorKind::NotFound {
                errors.push((input.join(&sub), e));
            }
        }
    }
    // Ids start with the arrival time in base 62: sorting by the
    // characters of the time, then the rest, gives arrival order.
    messages.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)).then(a.subdir.cmp(&b.subdir)));
    messages.dedup_by(|a, b| a.id == b.id);
    Ok(Listing { messages, errors })
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
    messages: &mut Vec<Location>,
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
        if let Some(id) = name.strip_suffix("-H") {
            if crate::header::is_message_id(id) {
                messages.push(Location {
                    root: root.to_path_buf(),
                    subdir: subdir.to_string(),
                    id: id.into(),
                });
            }
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

/// Remove a finished message in Exim's order (msglog, `-D`, `-H`, `-J`),
/// while the caller holds the `-D` lock. Missing msglog and journal are
/// fine; a missing `-D` or `-H` is reported but the rest is still removed.
pub fn remove(location: &Location) -> io::Result<()> {
    let unlink = |path: PathBuf, required: bool| match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !required => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let results = [
        unlink(location.msglog(), false),
        unlink(location.file("-D"), true),
        unlink(location.file("-H"), true),
        unlink(location.file("-J"), false),
    ];
    if let Ok(dir) = File::open(location.input_dir()) {
        let _ = dir.sync_all();
    }
    results.into_iter().collect()
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

    #[test]
    fn removal_follows_exims_order_and_tolerates_missing_extras() {
        let dir = tempfile::tempdir().unwrap();
        let l = Location { root: dir.path().into(), subdir: String::new(), id: "1xV7gw-0004Qd-11".into() };
        fs::create_dir_all(dir.path().join("input")).unwrap();
        fs::create_dir_all(dir.path().join("msglog")).unwrap();
        for p in [l.file("-D"), l.file("-H"), l.msglog()] {
            fs::write(p, "").unwrap();
        }
        remove(&l).unwrap();
        assert_eq!(fs::read_dir(dir.path().join("input")).unwrap().count(), 0);
        assert_eq!(fs::read_dir(dir.path().join("msglog")).unwrap().count(), 0);
        assert!(remove(&l).is_err(), "a second removal reports the missing -D");
    }
}
