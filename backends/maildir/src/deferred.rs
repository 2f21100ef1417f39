//! The last reply that deferred each recipient of a message, kept beside
//! the maildir so that `odmrd --queue` can say why mail is still waiting
//! (and `--expire`'s DSN can quote it).
//!
//! Owns: the files `<maildir>/odmrd-deferred/<unique name>` (the message
//! file's name without its `:2,` info, so a move to `cur/` keeps it), one
//! `address TAB reply` line per deferred recipient, replaced atomically.
//! They are written only under the maildir's lock (by a cursor's commit)
//! and are only information: losing or failing to write one never changes
//! what is delivered. Not a `.` directory, which Maildir++ readers would take
//! for a folder. Does not: decide outcomes or parse messages.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The directory inside each maildir.
pub const DIRECTORY: &str = "odmrd-deferred";

/// The name of message `id`'s record (`new/NAME` or `cur/NAME:2,FLAGS`: `NAME`).
pub fn record_name(id: &str) -> &str {
    let name = id.rsplit('/').next().unwrap_or(id);
    name.split(':').next().unwrap_or(name)
}

/// The record of message `id`.
fn record_path(maildir: &Path, id: &str) -> PathBuf {
    maildir.join(DIRECTORY).join(record_name(id))
}

/// The names of the records kept in `maildir` (none when the directory is
/// missing): listed once, so that messages without a record (nearly all)
/// cost no failed open each.
pub fn recorded(maildir: &Path) -> io::Result<HashSet<String>> {
    let items = match fs::read_dir(maildir.join(DIRECTORY)) {
        Ok(items) => items,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    let mut names = HashSet::new();
    for item in items {
        names.insert(item?.file_name().to_string_lossy().into_owned());
    }
    Ok(names)
}

/// The replies recorded for message `id`, by address (empty when none).
pub fn read(maildir: &Path, id: &str) -> BTreeMap<String, String> {
    let text = fs::read_to_string(record_path(maildir, id)).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(address, reply)| (address.to_string(), reply.to_string()))
        .collect()
}

/// Replace the record of message `id` with `replies` (none: remove it).
/// Written beside it and renamed over it, so a reader sees the old or the
/// new record, never a part.
pub fn write(maildir: &Path, id: &str, replies: &BTreeMap<String, String>) -> io::Result<()> {
    let path = record_path(maildir, id);
    if replies.is_empty() {
        return match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    fs::create_dir_all(maildir.join(DIRECTORY))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = fs::File::create(&tmp)?;
    for (address, reply) in replies {
        // One line each: a reply's own line ends and tabs cannot split it.
        let reply: String = reply.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
        writeln!(file, "{address}\t{reply}")?;
    }
    drop(file);
    fs::rename(&tmp, &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_the_move_to_cur_and_goes_when_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let replies: BTreeMap<String, String> =
            [("a@example.org".to_string(), "450 4.2.0 busy\r\n\tnow".to_string())].into();
        assert!(recorded(dir.path()).unwrap().is_empty());
        write(dir.path(), "new/1790.M1P2.h", &replies).unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), ["1790.M1P2.h".to_string()].into());
        assert_eq!(record_name("cur/1790.M1P2.h:2,S"), "1790.M1P2.h");
        let back = read(dir.path(), "cur/1790.M1P2.h:2,S");
        assert_eq!(back["a@example.org"], "450 4.2.0 busy   now");
        write(dir.path(), "cur/1790.M1P2.h:2,S", &BTreeMap::new()).unwrap();
        assert!(read(dir.path(), "new/1790.M1P2.h").is_empty());
        assert_eq!(fs::read_dir(dir.path().join(DIRECTORY)).unwrap().count(), 0);
    }
}
