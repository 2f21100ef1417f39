//! Writing cdb files with Debian's tinycdb `cdb` tool, as a vpopmail or qmail
//! installation would have them. Shared by this crate's unit tests, its ABI
//! test and odmrd's end-to-end vpopmail tests (each includes it by path).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// Build `path` with `cdb -c` from `(key, data)` records in cdb's native
/// input format (`+klen,dlen:key->data`, any bytes), via `path.tmp` and a
/// rename, as `cdb -c` does by default.
pub fn tinycdb<K: AsRef<[u8]>, D: AsRef<[u8]>>(path: &Path, records: &[(K, D)]) {
    let mut input = Vec::new();
    for (key, data) in records {
        let (key, data) = (key.as_ref(), data.as_ref());
        input.extend_from_slice(format!("+{},{}:", key.len(), data.len()).as_bytes());
        input.extend_from_slice(key);
        input.extend_from_slice(b"->");
        input.extend_from_slice(data);
        input.push(b'\n');
    }
    input.push(b'\n');
    run_cdb(&["-c"], path, &input);
}

/// `cdb -c -m`: one `key value` line per record (what an operator types).
pub fn tinycdb_map(path: &Path, lines: &str) {
    run_cdb(&["-c", "-m"], path, lines.as_bytes());
}

fn run_cdb(args: &[&str], path: &Path, input: &[u8]) {
    let mut child = Command::new("cdb")
        .args(args)
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run tinycdb's `cdb` (Debian package tinycdb; t/setup-deps installs it)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    assert!(child.wait().unwrap().success(), "cdb {args:?} {}", path.display());
}
