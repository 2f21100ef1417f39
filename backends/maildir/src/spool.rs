//! The file-system side of a maildir spool: listing messages, the
//! serialmail-compatible `seriallock`, opening message files without
//! following symlinks, the two durable changes (unlink, atomic rewrite) and
//! cleaning `tmp/` of what interrupted writers left there.
//!
//! Owns: every system call that looks at or changes a maildir, and the
//! fsyncs that make a change durable. Does not: parse messages, decide which
//! recipients are done, or log (it returns errors; the caller logs through
//! the host).

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The lock file inside each maildir; serialmail's `setlock` uses the same.
pub const LOCK_FILE: &str = "seriallock";

/// One candidate message file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full path of the file.
    pub path: PathBuf,
    /// `new/NAME` or `cur/NAME`, for logs.
    pub id: String,
    /// Modification time (seconds, nanoseconds), the primary sort key;
    /// `None` when listed [`Order::Unsorted`].
    pub mtime: Option<(i64, i64)>,
}

/// A file in `new/` or `cur/` that is not offered, and why (for the log).
#[derive(Debug)]
pub struct Ignored {
    /// `new/NAME` or `cur/NAME`.
    pub id: String,
    /// Why it was passed over.
    pub why: String,
}

/// A maildir's identity, to notice two domains that lead to the same directory.
pub fn identity(maildir: &Path) -> io::Result<(u64, u64)> {
    let meta = fs::metadata(maildir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    Ok((meta.dev(), meta.ino()))
}

/// In which order [`scan`] lists a maildir's messages, and so what it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Oldest first (mtime, then name): one `lstat` per file, for the mtime.
    Oldest,
    /// As the directory lists them, with no `stat` at all where the
    /// directory says each entry's type (`d_type`): enough to learn whether
    /// there is any mail. [`Entry::mtime`] is then `None`.
    Unsorted,
}

/// List the messages of `maildir`: regular files in `new/` and `cur/` whose
/// names do not start with `.`, in `order`. Symlinks and other non-regular
/// entries are reported in the second list, never followed (the type comes
/// from the directory entry, else from `lstat`; [`open_message`] checks it
/// again on the open file).
pub fn scan(maildir: &Path, order: Order) -> io::Result<(Vec<Entry>, Vec<Ignored>)> {
    let mut entries = Vec::new();
    let mut ignored = Vec::new();
    for sub in ["new", "cur"] {
        let dir = maildir.join(sub);
        for item in fs::read_dir(&dir)? {
            let item = item?;
            let name = item.file_name();
            if name.as_encoded_bytes().starts_with(b".") {
                continue;
            }
            let id = format!("{sub}/{}", name.to_string_lossy());
            // Both never follow a link: `file_type` is the entry's d_type (or an
            // lstat), `metadata` an fstatat without AT_SYMLINK_FOLLOW.
            let kind = match order {
                Order::Unsorted => item.file_type().map(|t| (t, None)),
                Order::Oldest => item.metadata().map(|m| (m.file_type(), Some((m.mtime(), m.mtime_nsec())))),
            };
            let (kind, mtime) = match kind {
                Ok(found) => found,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    ignored.push(Ignored { id, why: format!("cannot stat: {e}") });
                    continue;
                }
            };
            if kind.is_symlink() {
                ignored.push(Ignored { id, why: "is a symlink (not followed)".into() });
            } else if !kind.is_file() {
                ignored.push(Ignored { id, why: "is not a regular file".into() });
            } else {
                entries.push(Entry { path: item.path(), id, mtime });
            }
        }
    }
    if order == Order::Oldest {
        entries.sort_by(oldest_first);
    }
    Ok((entries, ignored))
}

/// The queue order: modification time, then file name, then path (compared
/// in place: a sort makes thousands of comparisons).
pub fn oldest_first(a: &Entry, b: &Entry) -> std::cmp::Ordering {
    a.mtime
        .cmp(&b.mtime)
        .then_with(|| a.path.file_name().cmp(&b.path.file_name()))
        .then_with(|| a.path.cmp(&b.path))
}

/// Open a message for reading without following a symlink, and check that it
/// is a regular file; the metadata is that one `fstat`'s.
pub fn open_message(path: &Path) -> io::Result<(File, fs::Metadata)> {
    let file = OpenOptions::new().read(true).custom_flags(OFlag::O_NOFOLLOW.bits()).open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    Ok((file, meta))
}

/// Read the whole of `file`, `size` bytes long by its `fstat`, into the
/// start of `buf` (grown as needed, never shrunk: its bytes stay initialised
/// and it is reused for message after message); the length read. A read
/// asks for one byte more than `size`, so one call reads a whole file that
/// did not change, and a file that grew meanwhile is noticed: `None`, the
/// file was not read whole and is back at its start, to be streamed instead.
/// A read shorter than asked ends the file only once `size` bytes came.
pub fn read_whole(file: &File, size: usize, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    use std::io::{Read, Seek};
    let want = size + 1;
    if buf.len() < want {
        buf.resize(want, 0);
    }
    let mut got = 0;
    loop {
        let n = match (&*file).read(&mut buf[got..want]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        got += n;
        if got == want {
            (&*file).rewind()?;
            return Ok(None);
        }
        if n == 0 || got >= size {
            return Ok(Some(got));
        }
    }
}

/// Result of trying the maildir's lock.
pub enum Lock {
    /// Held until dropped.
    Held(Flock<File>),
    /// Someone else (serialmail, another odmrd) holds it.
    Busy,
}

/// `flock(LOCK_EX|LOCK_NB)` on `<maildir>/seriallock`, creating it if missing
/// (mode 0600, as setlock does). The lock file itself is never followed
/// through a symlink.
pub fn lock(maildir: &Path) -> io::Result<Lock> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(maildir.join(LOCK_FILE))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(Lock::Held(held)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(Lock::Busy),
        Err((_, errno)) => Err(io::Error::from(errno)),
    }
}

/// Make a directory's entries durable.
/// fsync a directory, making the links created or removed in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| io::Error::other("message path has no directory"))
}

/// Remove a message whose recipients are all done: unlink it and return its
/// directory, which the caller must [`sync_dir`] to make the removal durable
/// (batched with others: until then a crash can bring the file back, i.e.
/// deliver it again, never lose it).
pub fn remove(path: &Path) -> io::Result<PathBuf> {
    fs::remove_file(path)?;
    Ok(parent(path)?.to_path_buf())
}

/// The "host" part of the names [`rewrite`] gives its files in `tmp/`. A
/// maildir writer puts its host name there; nobody names a host this, so a
/// file with this name and [`unique_name`]'s shape is ours.
const REWRITE_HOST: &str = "odmrd-rewrite";

/// A maildir unique name, `time.M<usec>P<pid>Q<n>.odmrd-rewrite`.
fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}.M{}P{}Q{}.{REWRITE_HOST}", now.as_secs(), now.subsec_micros(), std::process::id(), n)
}

/// Whether `name` is one of [`unique_name`]'s, i.e. a file [`rewrite`] wrote.
fn is_rewrite_name(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_suffix(REWRITE_HOST).and_then(|r| r.strip_suffix('.')) else {
        return false;
    };
    let Some((secs, rest)) = rest.split_once(".M") else { return false };
    let Some((usec, rest)) = rest.split_once('P') else { return false };
    let Some((pid, n)) = rest.split_once('Q') else { return false };
    [secs, usec, pid, n].into_iter().all(digits)
}

/// How long another writer's file may lie untouched in `tmp/` before it is
/// taken for the leftover of a delivery that died: the maildir convention's
/// 36 hours (formats.md, maildir).
pub const TMP_LIFETIME: Duration = Duration::from_secs(36 * 60 * 60);

/// A file [`clean_tmp`] removed.
#[derive(Debug, PartialEq, Eq)]
pub struct Removed {
    /// `tmp/NAME`, for logs.
    pub id: String,
    /// True: written by [`rewrite`] (a rewrite killed before its rename);
    /// false: another writer's, untouched for [`TMP_LIFETIME`].
    pub ours: bool,
}

/// Remove the leftovers in `<maildir>/tmp/`: every regular file [`rewrite`]
/// wrote (its name says so), at once, and any other regular file that was
/// neither modified nor accessed during the [`TMP_LIFETIME`] before `now`.
/// Another writer's fresh file, symlinks and directories are never touched.
///
/// The caller must hold the maildir's [`lock`]: a rewrite runs only under it,
/// so no file of ours in `tmp/` can then belong to a rewrite in progress.
/// Returns what was removed and what could not be (with the error); a
/// missing `tmp/` is nothing to clean.
pub fn clean_tmp(maildir: &Path, now: SystemTime) -> (Vec<Removed>, Vec<(String, io::Error)>) {
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    let dir = maildir.join("tmp");
    let items = match fs::read_dir(&dir) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (removed, failed),
        Err(e) => return (removed, vec![("tmp".into(), e)]),
    };
    for item in items {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                failed.push(("tmp".into(), e));
                break;
            }
        };
        let name = item.file_name();
        let id = format!("tmp/{}", name.to_string_lossy());
        let meta = match fs::symlink_metadata(item.path()) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                failed.push((id, e));
                continue;
            }
        };
        let ours = name.to_str().is_some_and(is_rewrite_name);
        // Untouched: neither written nor read (the convention says "accessed";
        // with noatime the modification time is the better witness).
        let touched = [meta.modified(), meta.accessed()].into_iter().flatten().max();
        let stale = touched.is_some_and(|t| now.duration_since(t).is_ok_and(|age| age >= TMP_LIFETIME));
        if !ours && !stale {
            continue;
        }
        match fs::remove_file(item.path()) {
            Ok(()) => removed.push(Removed { id, ours }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => failed.push((id, e)),
        }
    }
    (removed, failed)
}

/// Atomically replace the message at `path` (open as `original`) with `head`
/// followed by the original's bytes from `keep_from` to its end: the new file
/// is written in `<maildir>/tmp/`, fsynced, and renamed over `path`; then the
/// directories are fsynced. Permissions and times of the original are kept
/// (so the queue order and any lifetime by mtime do not change). Refuses when
/// `path` no longer names `original`.
pub fn rewrite(
    maildir: &Path,
    path: &Path,
    original: &File,
    head: &[&[u8]],
    keep_from: u64,
) -> io::Result<()> {
    let meta = original.metadata()?;
    let tmp_dir = maildir.join("tmp");
    let (tmp_path, mut tmp) = create_unique(&tmp_dir, meta.permissions().mode() & 0o777)?;
    let result = (|| {
        for part in head {
            tmp.write_all(part)?;
        }
        copy_range(original, keep_from, meta.len(), &mut tmp)?;
        tmp.set_times(FileTimes::new().set_accessed(meta.accessed()?).set_modified(meta.modified()?))?;
        tmp.sync_all()?;
        let now = fs::symlink_metadata(path)?;
        if (now.dev(), now.ino()) != (meta.dev(), meta.ino()) {
            return Err(io::Error::other("the message file was replaced while it was being read"));
        }
        fs::rename(&tmp_path, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp_path);
    }
    result?;
    sync_dir(parent(path)?)?;
    sync_dir(&tmp_dir)
}

/// The directory inside each maildir where a message file that cannot be
/// sent as it is (two BSMTP messages run together) is moved aside for the
/// operator. Outside `new/` and `cur/`, so never listed as queued; not a `.`
/// directory, which Maildir++ readers would take for a folder.
pub const QUARANTINE_DIR: &str = "odmrd-quarantine";

/// Move the message at `path` into `<maildir>/odmrd-quarantine/` as `name`,
/// or `name.1`, `name.2`, ... when that is taken (never over another file),
/// its bytes unchanged; returns the name it got there. The directory is
/// created when missing, with the mode of the maildir's `new/` (else 0700).
///
/// The move is a hard link and then an unlink, each made durable by an fsync
/// of its directory (and the maildir's, for a new quarantine directory): a
/// crash in between leaves the file in both places (moved again, under a
/// suffix, the next time it is met), never in neither; and a link, unlike
/// `rename(2)`, never replaces a file already there, also on NFS (which has
/// no `RENAME_NOREPLACE`). The caller holds the maildir's [`lock`] or the
/// message's claim.
pub fn quarantine(maildir: &Path, path: &Path, name: &str) -> io::Result<String> {
    let dir = maildir.join(QUARANTINE_DIR);
    let mode = fs::metadata(maildir.join("new")).map_or(0o700, |m| m.permissions().mode() & 0o777);
    match fs::DirBuilder::new().mode(mode).create(&dir) {
        // A new directory is durable once its parent is synced.
        Ok(()) => sync_dir(maildir)?,
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) => {}
    }
    if !fs::symlink_metadata(&dir)?.is_dir() {
        return Err(io::Error::other(format!("{} is not a directory", dir.display())));
    }
    let mut target = name.to_owned();
    for suffix in 1.. {
        match fs::hard_link(path, dir.join(&target)) {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && suffix < 1000 => {
                target = format!("{name}.{suffix}");
            }
            Err(e) => return Err(e),
        }
    }
    // Until the unlink, the message is still queued: on any failure the copy goes, as it
    // would only confuse the operator (and be split into duplicates).
    if let Err(e) = sync_dir(&dir).and_then(|()| fs::remove_file(path)) {
        let _ = fs::remove_file(dir.join(&target));
        return Err(e);
    }
    // Moved, whatever follows: a failed fsync now only means a crash could bring the file
    // back into the queue (to be moved again, under a suffix), so the move is not reported
    // as failed.
    let _ = parent(path).and_then(sync_dir);
    Ok(target)
}

fn create_unique(dir: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut last = None;
    for _ in 0..16 {
        let path = dir.join(unique_name());
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(&path) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no unique name")))
}

/// Copy `src[from..to]` into `dst` with positional reads (the reader's own
/// offset is left alone) through a fixed buffer.
fn copy_range(src: &File, mut from: u64, to: u64, dst: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    while from < to {
        let want = buf.len().min(usize::try_from(to - from).unwrap_or(usize::MAX));
        let n = src.read_at(&mut buf[..want], from)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message file shrank while being copied",
            ));
        }
        dst.write_all(&buf[..n])?;
        from += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_differ_and_look_like_maildir_names() {
        let (a, b) = (unique_name(), unique_name());
        assert_ne!(a, b);
        assert!(a.ends_with(".odmrd-rewrite") && a.contains(".M") && !a.starts_with('.'), "{a}");
        assert!(!a.contains(['/', ':']), "{a}");
        assert!(is_rewrite_name(&a), "{a}");
    }

    #[test]
    fn only_our_own_name_shape_counts_as_a_rewrite_leftover() {
        for theirs in [
            "1795354421.M53429P17987.host",
            "1795354421.M53429P17987Q3.odmrd",
            "1795354421.M53429P17987Q3.mail.odmrd-rewrite",
            "x1795354421.M53429P17987Q3.odmrd-rewrite",
            "1795354421.M53429P17987Q.odmrd-rewrite",
            "1795354421.M53429Q3P17987.odmrd-rewrite",
            ".odmrd-rewrite",
        ] {
            assert!(!is_rewrite_name(theirs), "{theirs}");
        }
        assert!(is_rewrite_name("1795354421.M53429P17987Q3.odmrd-rewrite"));
    }

    /// A maildir with a file in `tmp/` per (name, age in hours of its
    /// modification time, age of its access time), relative to `now`.
    fn tmp_with(files: &[(&str, u64, u64)], now: SystemTime) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("tmp")).unwrap();
        let hours = |h: u64| now - Duration::from_secs(h * 3600);
        for &(name, modified, accessed) in files {
            let file = File::create(dir.path().join("tmp").join(name)).unwrap();
            file.set_times(FileTimes::new().set_modified(hours(modified)).set_accessed(hours(accessed)))
                .unwrap();
        }
        dir
    }

    fn left_in_tmp(maildir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(maildir.join("tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn clean_tmp_removes_our_leftovers_at_once_and_others_after_36_hours() {
        let now = SystemTime::now();
        let ours = "1795354421.M53429P17987Q3.odmrd-rewrite";
        let dir = tmp_with(
            &[
                (ours, 0, 0),
                ("1795.M1P2.fresh-delivery", 0, 0),
                ("1795.M1P2.written-35h-ago", 35, 35),
                ("1795.M1P2.written-37h-ago-read-now", 37, 0),
                ("1795.M1P2.read-37h-ago-written-now", 0, 37),
                ("1795.M1P2.stale", 37, 37),
            ],
            now,
        );
        fs::create_dir(dir.path().join("tmp/old-directory")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("tmp/link")).unwrap();
        let (mut removed, failed) = clean_tmp(dir.path(), now);
        assert!(failed.is_empty(), "{failed:?}");
        removed.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(
            removed,
            [
                Removed { id: "tmp/1795.M1P2.stale".into(), ours: false },
                Removed { id: format!("tmp/{ours}"), ours: true },
            ]
        );
        assert_eq!(
            left_in_tmp(dir.path()),
            [
                "1795.M1P2.fresh-delivery",
                "1795.M1P2.read-37h-ago-written-now",
                "1795.M1P2.written-35h-ago",
                "1795.M1P2.written-37h-ago-read-now",
                "link",
                "old-directory"
            ]
        );
        // The symlink's target and the directory were left alone too.
        assert!(Path::new("/etc/passwd").exists());
    }

    #[test]
    fn clean_tmp_without_tmp_is_nothing_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (removed, failed) = clean_tmp(dir.path(), SystemTime::now());
        assert!(removed.is_empty() && failed.is_empty());
    }

    #[test]
    fn scan_orders_by_mtime_then_name_and_skips_dot_files() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let put = |rel: &str, secs: u64| {
            let p = dir.path().join(rel);
            fs::write(&p, "x").unwrap();
            let t = UNIX_EPOCH + std::time::Duration::from_secs(secs);
            File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
        };
        put("new/b", 200);
        put("cur/a:2,S", 300);
        put("new/a", 200);
        put("cur/z", 100);
        put("new/.hidden", 50);
        put("tmp/t", 10);
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("new/link")).unwrap();
        fs::create_dir(dir.path().join("new/subdir")).unwrap();
        let (entries, ignored) = scan(dir.path(), Order::Oldest).unwrap();
        let ids: Vec<_> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["cur/z", "new/a", "new/b", "cur/a:2,S"]);
        let mut skipped: Vec<_> =
            ignored.iter().map(|i| (i.id.as_str(), i.why.contains("symlink"))).collect();
        skipped.sort();
        assert_eq!(skipped, [("new/link", true), ("new/subdir", false)]);

        // Unsorted: the same files and the same passed over, without their times.
        let (entries, ignored) = scan(dir.path(), Order::Unsorted).unwrap();
        let mut ids: Vec<_> = entries.iter().map(|e| (e.id.as_str(), e.mtime)).collect();
        ids.sort();
        assert_eq!(ids, [("cur/a:2,S", None), ("cur/z", None), ("new/a", None), ("new/b", None)]);
        let mut skipped: Vec<_> =
            ignored.iter().map(|i| (i.id.as_str(), i.why.contains("symlink"))).collect();
        skipped.sort();
        assert_eq!(skipped, [("new/link", true), ("new/subdir", false)]);
    }

    #[test]
    fn read_whole_reads_a_file_at_once_into_a_reused_buffer_and_notices_growth() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m");
        fs::write(&path, b"0123456789").unwrap();
        let mut buf = b"an older, longer message".to_vec();
        let (file, meta) = open_message(&path).unwrap();
        assert_eq!(read_whole(&file, meta.len() as usize, &mut buf).unwrap(), Some(10));
        assert_eq!(&buf[..10], b"0123456789");
        assert_eq!(buf.len(), 24, "a large enough buffer is not reallocated");
        // Longer than its fstat said (it grew): not read whole, and back at its start.
        let (file, _) = open_message(&path).unwrap();
        assert_eq!(read_whole(&file, 4, &mut buf).unwrap(), None);
        let mut again = String::new();
        std::io::Read::read_to_string(&mut &file, &mut again).unwrap();
        assert_eq!(again, "0123456789");
        // Empty.
        fs::write(&path, b"").unwrap();
        let (file, _) = open_message(&path).unwrap();
        assert_eq!(read_whole(&file, 0, &mut buf).unwrap(), Some(0));
    }

    #[test]
    fn rewrite_replaces_atomically_and_refuses_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let path = dir.path().join("new/m");
        fs::write(&path, b"HEAD1\nHEAD2\nDATA\nbody\n.\n").unwrap();
        let (original, _) = open_message(&path).unwrap();
        rewrite(dir.path(), &path, &original, &[b"NEW\n", b"DATA\n"], 17).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"NEW\nDATA\nbody\n.\n");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

        // The path now names another inode than the one we read: refuse.
        let err = rewrite(dir.path(), &path, &original, &[b"X\n"], 0).unwrap_err();
        assert!(err.to_string().contains("replaced"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"NEW\nDATA\nbody\n.\n");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0, "tmp file left behind");

        // No tmp/: nothing changes.
        fs::remove_dir(dir.path().join("tmp")).unwrap();
        let (current, _) = open_message(&path).unwrap();
        assert!(rewrite(dir.path(), &path, &current, &[b"Y\n"], 4).is_err());
        assert_eq!(fs::read(&path).unwrap(), b"NEW\nDATA\nbody\n.\n");
    }

    #[test]
    fn quarantine_moves_a_file_aside_unchanged_and_never_over_another() {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        fs::set_permissions(dir.path().join("new"), fs::Permissions::from_mode(0o750)).unwrap();
        let quarantined = dir.path().join(QUARANTINE_DIR);
        for (n, want) in [(1, "1.M1P1.h"), (2, "1.M1P1.h.1"), (3, "1.M1P1.h.2")] {
            let path = dir.path().join("new/1.M1P1.h");
            fs::write(&path, format!("copy {n}")).unwrap();
            assert_eq!(quarantine(dir.path(), &path, "1.M1P1.h").unwrap(), want);
            assert!(!path.exists());
            assert_eq!(fs::read_to_string(quarantined.join(want)).unwrap(), format!("copy {n}"));
        }
        assert_eq!(fs::read_to_string(quarantined.join("1.M1P1.h")).unwrap(), "copy 1", "not overwritten");
        let mode = fs::metadata(&quarantined).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "no more open than new/: {mode:o}");

        // A file that is gone: an error, nothing left behind.
        let gone = dir.path().join("cur/gone");
        assert!(quarantine(dir.path(), &gone, "gone").is_err());
        assert!(!quarantined.join("gone").exists());
    }

    #[test]
    fn open_message_refuses_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("real"), "x").unwrap();
        std::os::unix::fs::symlink(dir.path().join("real"), dir.path().join("link")).unwrap();
        assert!(open_message(&dir.path().join("real")).is_ok());
        assert!(open_message(&dir.path().join("link")).is_err());
    }
}
