//! Domain → directory, the way vpopmail's `vget_assign()` finds it: qmail's
//! users database, `users/cdb` (key `!<domain>-`, value
//! `realdomain\0uid\0gid\0dir\0…`), or the text `users/assign` it is compiled
//! from (`+<domain>-:<realdomain>:<uid>:<gid>:<dir>:-::`) when there is no cdb.
//!
//! Owns: reading both forms, resolving alias domains to their real domain,
//! and listing the alias domains of a real domain. Never computes vpopmail's
//! hashed directory layout (`domains/0/big.example`): the directory is always
//! the one qmail's users database names.
//!
//! Does not: cache (both files are replaced by rename; each call opens the
//! current one), read vpasswd, or log (the caller does).

use crate::cdb::Cdb;
use odmr_api::names::is_valid_domain;
use std::io;
use std::path::{Path, PathBuf};

/// Where a domain's accounts live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The real domain (the looked-up one, or the one an alias points to), lower case.
    pub real: String,
    /// The real domain's directory (holding `vpasswd` and `vpasswd.cdb`).
    pub dir: PathBuf,
}

/// qmail's users directory.
pub struct Users {
    dir: PathBuf,
}

impl Users {
    pub fn new(dir: PathBuf) -> Users {
        Users { dir }
    }

    pub fn cdb_path(&self) -> PathBuf {
        self.dir.join("cdb")
    }

    pub fn assign_path(&self) -> PathBuf {
        self.dir.join("assign")
    }

    /// The assignment of `domain` (lower case), `None` when it has none.
    /// An error when neither file can be read.
    pub fn lookup(&self, domain: &str) -> io::Result<Option<Assignment>> {
        let key = format!("!{domain}-");
        if let Some(mut cdb) = Cdb::open(&self.cdb_path())? {
            return Ok(cdb.get(key.as_bytes())?.and_then(|value| from_cdb_value(&value)));
        }
        let wanted = &key[1..];
        let mut found = None;
        self.each_assign_line(|loc, real, dir| {
            if found.is_none() && loc == wanted {
                found = Some(Assignment { real: real.to_owned(), dir: PathBuf::from(dir) });
            }
        })?;
        Ok(found)
    }

    /// Every other domain (valid host names only) whose assignment names
    /// `real` as its real domain: vpopmail's alias domains of `real`.
    pub fn aliases(&self, real: &str) -> io::Result<Vec<String>> {
        let mut aliases = Vec::new();
        let mut consider = |domain: &str, target: &str| {
            if target.eq_ignore_ascii_case(real)
                && !domain.eq_ignore_ascii_case(real)
                && is_valid_domain(domain)
                && !aliases.iter().any(|a: &String| a == domain)
            {
                aliases.push(domain.to_ascii_lowercase());
            }
        };
        if let Some(mut cdb) = Cdb::open(&self.cdb_path())? {
            cdb.for_each(|key, value| {
                let Some(domain) = key.strip_prefix(b"!").and_then(|k| k.strip_suffix(b"-")) else { return };
                let (Ok(domain), Some(target)) = (std::str::from_utf8(domain), from_cdb_value(value)) else {
                    return;
                };
                consider(domain, &target.real);
            })?;
        } else {
            self.each_assign_line(|loc, target, _| {
                if let Some(domain) = loc.strip_suffix('-') {
                    consider(domain, target);
                }
            })?;
        }
        Ok(aliases)
    }

    /// Calls `each(loc, user, dir)` for the wildcard (`+`) lines of
    /// users/assign, up to the terminating `.` line; `loc` is lower-cased as
    /// qmail-newu does.
    fn each_assign_line(&self, mut each: impl FnMut(&str, &str, &str)) -> io::Result<()> {
        let content = read_file(&self.assign_path())?;
        for line in content.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line == b"." {
                break;
            }
            let Some(rest) = line.strip_prefix(b"+") else { continue };
            let Ok(rest) = std::str::from_utf8(rest) else { continue };
            let fields: Vec<&str> = rest.split(':').collect();
            if fields.len() < 5 {
                continue;
            }
            each(&fields[0].to_ascii_lowercase(), &fields[1].to_ascii_lowercase(), fields[4]);
        }
        Ok(())
    }
}

/// `realdomain\0uid\0gid\0dir\0dash\0pre\0` → the real domain and directory.
fn from_cdb_value(value: &[u8]) -> Option<Assignment> {
    let mut fields = value.split(|&b| b == 0);
    let real = std::str::from_utf8(fields.next()?).ok()?;
    let dir = fields.nth(2)?;
    let dir = std::str::from_utf8(dir).ok()?;
    if real.is_empty() || dir.is_empty() {
        return None;
    }
    Some(Assignment { real: real.to_ascii_lowercase(), dir: PathBuf::from(dir) })
}

/// A whole regular file.
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    std::fs::read(path)
}
