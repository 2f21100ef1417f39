//! Per-domain collection locks: one collector per domain at a time.
//!
//! [`Locker`] is the interface the session uses, whatever holds the locks:
//! `[server] lock = flock` (the default, one host) or `lock = database`
//! (several front ends on several hosts sharing the `[credentials]` database
//! of `builtin:sql`: PostgreSQL advisory locks or MariaDB `GET_LOCK`, held on
//! a connection of the session's own, so they also vanish with a front end
//! that dies; the locks live in `libodmr_backend_sql.so` with the drivers,
//! reached through `sql_locks`).
//!
//! A flock lock is an exclusive `flock(2)` on `<lock_directory>/<domain>.lock`.
//! `flock` locks belong to the open file description, so they exclude other
//! inetd processes and other threads of a standalone daemon alike, and they
//! vanish with their holder (a crash never leaves a stale lock). This module
//! owns only the locks; deciding what a busy domain means (450) is the
//! session's. Domains must already be validated (they become file names).

use crate::config::{Config, LockKind, PluginSource};
use crate::proto::is_valid_domain;
use crate::sql_locks::{DatabaseLocks, Held, LockFailure};
use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Why the locks could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another session holds this domain.
    Busy(String),
    /// The lock file could not be created or locked.
    Io(String, io::Error),
    /// The lock directory is missing and this process could not create it.
    NoDirectory(String),
    /// The lock database could not be reached or failed the lock call.
    Database(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Busy(domain) => write!(f, "{domain} is being collected by another session"),
            LockError::Io(path, e) => write!(f, "lock {path}: {e}"),
            LockError::NoDirectory(why) => f.write_str(why),
            LockError::Database(e) => write!(f, "lock database: {e}"),
        }
    }
}

/// Where a configuration's collection locks live.
pub enum Locker {
    Flock(std::path::PathBuf),
    Database(DatabaseLocks),
}

/// Locks held for one session, whichever kind; dropping releases them.
#[derive(Debug)]
pub enum HeldLocks {
    Flock(DomainLocks),
    Database(Held),
}

impl Locker {
    /// The locker `config` asks for. `lock = database` needs `[credentials]
    /// plugin = builtin:sql` with a driver that has session locks; the error
    /// says why not (the caller names `[server] lock`).
    pub fn new(config: &Config) -> Result<Locker, String> {
        match config.server.lock {
            LockKind::Flock => Ok(Locker::Flock(config.server.lock_directory.clone())),
            LockKind::Database => {
                if config.credentials.source != PluginSource::Builtin("sql".into()) {
                    return Err(
                        "lock = database needs [credentials] plugin = builtin:sql (the locks live in \
                                that database)"
                            .into(),
                    );
                }
                let pairs: Vec<(String, String)> =
                    config.credentials.settings.iter().map(|s| (s.key.clone(), s.value.clone())).collect();
                DatabaseLocks::from_credentials(&pairs).map(Locker::Database)
            }
        }
    }

    /// Lock every domain of `domains` without waiting, or none of them.
    pub fn acquire(&self, domains: &[String]) -> Result<HeldLocks, LockError> {
        match self {
            Locker::Flock(directory) => DomainLocks::acquire(directory, domains).map(HeldLocks::Flock),
            Locker::Database(database) => match database.acquire(domains) {
                Ok(held) => Ok(HeldLocks::Database(held)),
                Err(LockFailure::Busy(domain)) => Err(LockError::Busy(domain)),
                Err(LockFailure::Unavailable(e)) => Err(LockError::Database(e)),
            },
        }
    }
}

/// Held flock locks; dropping releases them.
#[derive(Debug)]
pub struct DomainLocks {
    _held: Vec<Flock<File>>,
}

impl DomainLocks {
    /// Lock every domain of `domains` without waiting, or none of them.
    pub fn acquire(directory: &Path, domains: &[String]) -> Result<DomainLocks, LockError> {
        if !directory.is_dir() {
            prepare_directory(directory, None).map_err(LockError::NoDirectory)?;
        }
        let mut held = Vec::with_capacity(domains.len());
        for domain in domains {
            if !is_valid_domain(domain) {
                let e = io::Error::new(io::ErrorKind::InvalidInput, "not a valid domain name");
                return Err(LockError::Io(domain.clone(), e));
            }
            let path = directory.join(format!("{domain}.lock"));
            let io_error = |e: io::Error| LockError::Io(path.display().to_string(), e);
            let file = open_lock_file(&path).map_err(io_error)?;
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => held.push(lock),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => return Err(LockError::Busy(domain.clone())),
                Err((_, errno)) => return Err(io_error(errno.into())),
            }
        }
        Ok(DomainLocks { _held: held })
    }
}

/// Who this process is, for messages: `user odmrd (uid 105)`.
pub fn who_am_i() -> String {
    let uid = nix::unistd::geteuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => format!("user {} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

/// Make sure the lock directory exists: create it (and its parents) when missing, mode 0750,
/// owned by `owner` (uid, gid) when given (root creating it for the service user). The error
/// says that it does not exist and who could not create it, and why.
pub fn prepare_directory(directory: &Path, owner: Option<(u32, u32)>) -> Result<bool, String> {
    if directory.is_dir() {
        return Ok(false);
    }
    let fail = |e: io::Error| {
        format!(
            "lock_directory {} does not exist and {} could not create it: {e}",
            directory.display(),
            who_am_i()
        )
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o750).create(directory).map_err(fail)?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(directory, Some(uid), Some(gid)).map_err(fail)?;
    }
    Ok(true)
}

/// Open `path` read-write for `flock`, creating it (mode 0640) and never
/// following a symbolic link there.
pub(crate) fn open_lock_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o640)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domains(list: &[&str]) -> Vec<String> {
        list.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_second_collector_of_a_domain_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = DomainLocks::acquire(dir.path(), &domains(&["example.org", "example.com"])).unwrap();
        match DomainLocks::acquire(dir.path(), &domains(&["example.net", "example.com"])) {
            Err(LockError::Busy(d)) => assert_eq!(d, "example.com"),
            other => panic!("expected Busy, got {other:?}"),
        }
        // example.net was released with the failed attempt: all or nothing.
        let other = DomainLocks::acquire(dir.path(), &domains(&["example.net"])).unwrap();
        drop(first);
        DomainLocks::acquire(dir.path(), &domains(&["example.com"])).unwrap();
        drop(other);
    }

    #[test]
    fn locks_exclude_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DomainLocks::acquire(dir.path(), &domains(&["example.org"])).unwrap();
        let path = dir.path().to_owned();
        let busy = std::thread::spawn(move || {
            matches!(DomainLocks::acquire(&path, &domains(&["example.org"])), Err(LockError::Busy(_)))
        });
        assert!(busy.join().unwrap());
    }

    #[test]
    fn the_lock_directory_is_created_and_bad_names_never_reach_it() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("run/odmrd");
        DomainLocks::acquire(&nested, &domains(&["example.org"])).unwrap();
        assert!(nested.join("example.org.lock").exists());
        assert!(matches!(DomainLocks::acquire(&nested, &domains(&["../x"])), Err(LockError::Io(..))));
        assert!(!dir.path().join("run/x.lock").exists());
    }

    #[test]
    fn a_directory_that_cannot_be_created_is_named_with_who_tried() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let inside = file.join("odmrd");
        let e = DomainLocks::acquire(&inside, &domains(&["example.org"])).unwrap_err().to_string();
        assert!(e.starts_with(&format!("lock_directory {} does not exist and ", inside.display())), "{e}");
        assert!(e.contains(&format!("(uid {})", nix::unistd::geteuid())), "{e}");
        assert!(e.contains("could not create it: Not a directory"), "{e}");
    }

    #[test]
    fn a_prepared_directory_is_0750() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let locks = dir.path().join("run/odmrd");
        assert_eq!(prepare_directory(&locks, None), Ok(true));
        assert_eq!(std::fs::metadata(&locks).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(prepare_directory(&locks, None), Ok(false));
    }
}
