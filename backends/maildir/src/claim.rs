//! Claims: how several odmrd front ends on several hosts share one maildir
//! spool (on NFS) without sending a message twice (`claim = yes`).
//!
//! `flock` on NFS is either local to one client or depends on the lock
//! manager, so the `seriallock` cannot be relied on between hosts. What NFS
//! does guarantee is that `rename(2)` within a directory is atomic on the
//! server: of two front ends renaming the same file, exactly one succeeds
//! and the other gets `ENOENT`. So before a message is read it is renamed,
//! in its own directory, to a claim name
//! `.odmrd-claim.<unix time>.<host>.<pid>.<original name>`: the dot hides it
//! from every maildir reader (and from other front ends' scans), the time
//! lets any front end recognise a stale claim, and host and pid say who holds
//! it. The message is then sent from the claim name and:
//! - removed under it after the customer's verdict (a full commit), or
//! - renamed back to its original name when the session leaves it without
//!   a full verdict (the [`Claim`] guard does it when dropped), so it is
//!   queued exactly as before;
//! - a claim left by a front end that died (kill -9, a host crash) is renamed
//!   back by any front end that opens the spool once it is older than
//!   `stale_claim_after` seconds ([`return_stale`]): at most a duplicate
//!   (the customer may already have it), never a loss. The age comes from
//!   the name, written with the claiming host's clock: keep the front ends'
//!   clocks in sync (NTP) and the age far above any skew and above the
//!   longest session.
//!
//! Owns: claim names, claiming, returning. Does not: decide what a commit
//! removes (`queue`) or fsync message contents (`spool`).

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

const PREFIX: &str = ".odmrd-claim.";

/// A message renamed to this front end's claim name; dropped without
/// [`Claim::settle`], it is renamed back.
#[derive(Debug)]
pub struct Claim {
    original: PathBuf,
    claimed: PathBuf,
    settled: bool,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Who claims: the host name (any byte but letters, digits and `-` made
/// `_`, so the name splits unambiguously) and the pid.
fn holder(host: &str) -> String {
    let host: String =
        host.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{host}.{}", std::process::id())
}

impl Claim {
    /// Claim the message at `path` for `host`: `Ok(None)` when another front
    /// end claimed (or removed) it first.
    pub fn take(path: &Path, host: &str) -> io::Result<Option<Claim>> {
        let name = path.file_name().ok_or_else(|| io::Error::other("message path has no name"))?;
        let claimed =
            path.with_file_name(format!("{PREFIX}{}.{}.{}", now(), holder(host), name.to_string_lossy()));
        match fs::rename(path, &claimed) {
            Ok(()) => Ok(Some(Claim { original: path.to_owned(), claimed, settled: false })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Where the message is while claimed.
    pub fn path(&self) -> &Path {
        &self.claimed
    }

    /// The message's verdict removed it: nothing to return.
    pub fn settle(&mut self) {
        self.settled = true;
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.settled {
            // NotFound: a stale-claim sweep of another front end returned it
            // already. Any other error leaves it claimed; the sweep returns it.
            let _ = fs::rename(&self.claimed, &self.original);
        }
    }
}

/// The original name and the claim time of a claim name.
fn parse(name: &OsStr) -> Option<(u64, String)> {
    let rest = name.to_str()?.strip_prefix(PREFIX)?;
    let (time, rest) = rest.split_once('.')?;
    // host (no dots: `holder` replaced them) . pid . original name
    let mut parts = rest.splitn(3, '.');
    let (_host, pid, original) = (parts.next()?, parts.next()?, parts.next()?);
    pid.parse::<u32>().ok()?;
    Some((time.parse().ok()?, original.to_owned()))
}

/// Rename back every claim in `new/` and `cur/` of `maildir` older than
/// `max_age` seconds; the names returned, for the log.
pub fn return_stale(maildir: &Path, max_age: u64) -> io::Result<Vec<String>> {
    let mut returned = Vec::new();
    let now = now();
    for sub in ["new", "cur"] {
        let dir = maildir.join(sub);
        for item in fs::read_dir(&dir)? {
            let name = item?.file_name();
            let Some((time, original)) = parse(&name) else { continue };
            if now.saturating_sub(time) <= max_age {
                continue;
            }
            match fs::rename(dir.join(&name), dir.join(&original)) {
                Ok(()) => returned.push(format!("{sub}/{original}")),
                // Another front end returned or removed it meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(returned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maildir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        dir
    }

    #[test]
    fn one_claimer_wins_and_an_unsettled_claim_is_returned() {
        let dir = maildir();
        let path = dir.path().join("new/1.2.host");
        fs::write(&path, "x").unwrap();
        let mut first = Claim::take(&path, "front.one").unwrap().unwrap();
        assert!(first.path().file_name().unwrap().to_str().unwrap().starts_with(".odmrd-claim."));
        assert!(!path.exists());
        assert!(Claim::take(&path, "front.two").unwrap().is_none(), "a second claim of the same file");
        drop(first);
        assert_eq!(fs::read_to_string(&path).unwrap(), "x", "returned under its own name");
        first = Claim::take(&path, "front.one").unwrap().unwrap();
        fs::remove_file(first.path()).unwrap();
        first.settle();
        drop(first);
        assert!(!path.exists());
    }

    #[test]
    fn stale_claims_are_returned_fresh_ones_are_not() {
        let dir = maildir();
        fs::write(dir.path().join("cur/.odmrd-claim.1000.dead_host.42.5.6.host:2,S"), "old").unwrap();
        fs::write(dir.path().join(format!("new/.odmrd-claim.{}.live.7.8.9.host", now())), "new").unwrap();
        fs::write(dir.path().join("new/.odmrd-claim.garbage"), "?").unwrap();
        assert_eq!(return_stale(dir.path(), 3600).unwrap(), ["cur/5.6.host:2,S"]);
        assert_eq!(fs::read_to_string(dir.path().join("cur/5.6.host:2,S")).unwrap(), "old");
        assert!(dir.path().join(format!("new/.odmrd-claim.{}.live.7.8.9.host", now())).exists());
    }
}
