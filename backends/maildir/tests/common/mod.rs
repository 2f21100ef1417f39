//! Shared fixtures for the integration tests: a temporary spool with one
//! maildir per domain, files with chosen mtimes, and a cursor drain helper.
#![allow(dead_code)]

use odmr_api::{Cursor, Envelope};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

pub struct Spool {
    pub root: tempfile::TempDir,
}

impl Spool {
    pub fn new() -> Spool {
        Spool { root: tempfile::tempdir().unwrap() }
    }

    /// `directory = <root>/{domain}`
    pub fn template(&self) -> String {
        format!("{}/{{domain}}", self.root.path().display())
    }

    pub fn config(&self, extra: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut c = vec![("directory".to_string(), self.template())];
        c.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        c
    }

    /// Create `<root>/<domain>/{new,cur,tmp}`.
    pub fn maildir(&self, domain: &str) -> PathBuf {
        let dir = self.root.path().join(domain);
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        dir
    }

    /// Write `<root>/<domain>/<rel>` with mtime `secs` after the epoch.
    pub fn put(&self, domain: &str, rel: &str, content: &[u8], secs: u64) -> PathBuf {
        let path = self.maildir(domain).join(rel);
        fs::write(&path, content).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
        path
    }
}

pub fn domains(list: &[&str]) -> Vec<String> {
    list.iter().map(|d| d.to_string()).collect()
}

/// Read the current message's body through a buffer of `bufsize` bytes.
pub fn body(cursor: &mut impl Cursor, bufsize: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; bufsize];
    loop {
        let n = cursor.read_body(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        assert!(n <= bufsize);
        out.extend_from_slice(&buf[..n]);
    }
}

/// Every envelope the cursor offers, with its body.
pub fn drain(cursor: &mut impl Cursor) -> Vec<(Envelope, Vec<u8>)> {
    let mut all = Vec::new();
    while let Some(env) = cursor.next_message().unwrap() {
        let b = body(cursor, 13);
        all.push((env, b));
    }
    all
}

pub fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()
}
