//! A domain's accounts: `vpasswd.cdb` when present (what vchkpw authenticates
//! against), otherwise the text `vpasswd`.
//!
//! Owns: the line format `name:crypted:uid:gid:gecos:dir:quota[:clear]` in
//! both its 7-field and 8-field forms (the 8th field, present only when
//! vpopmail was built with `--enable-clear-passwd`, is the rest of the line
//! and may contain colons), and the cdb form (key = name, data = the rest of
//! the line).
//!
//! Does not: cache (vpopmail replaces both files by rename; every lookup
//! opens the current one, so changes need no restart), decide what the flags
//! mean, or log (the caller does). Parsed entries are not `Debug`: they hold
//! secrets.

use crate::assign::read_file;
use crate::cdb::Cdb;
use std::io;
use std::path::{Path, PathBuf};

/// The fields of one account that odmrd uses.
pub struct Entry {
    /// Field 2, `pw_passwd`: the crypt(3) hash vchkpw checks clear passwords against, when
    /// present and text.
    pub crypted: Option<String>,
    /// Field 4, `pw_gid`: vpopmail's per-user flag bits (`NO_SMTP`, …).
    pub gid: Result<u32, ()>,
    /// Field 8, the clear-text password, when present and non-empty.
    pub clear: Option<Vec<u8>>,
}

/// What a lookup found.
pub enum Lookup {
    Found(Entry),
    /// The domain has a store, but no such account.
    NoSuchUser,
    /// Neither `vpasswd.cdb` nor `vpasswd` exists in the directory.
    NoStore,
}

pub fn cdb_path(dir: &Path) -> PathBuf {
    dir.join("vpasswd.cdb")
}

pub fn text_path(dir: &Path) -> PathBuf {
    dir.join("vpasswd")
}

/// Looks `user` (lower case) up in the domain directory `dir`.
pub fn lookup(dir: &Path, user: &str) -> io::Result<Lookup> {
    if let Some(mut cdb) = Cdb::open(&cdb_path(dir))? {
        return Ok(match cdb.get(user.as_bytes())? {
            Some(rest) => match parse_fields(&rest, 6) {
                Some(entry) => Lookup::Found(entry),
                None => return Err(malformed(user)),
            },
            None => Lookup::NoSuchUser,
        });
    }
    let content = match read_file(&text_path(dir)) {
        Ok(content) => content,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Lookup::NoStore),
        Err(err) => return Err(err),
    };
    for line in content.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        if !line[..colon].eq_ignore_ascii_case(user.as_bytes()) {
            continue;
        }
        return match parse_fields(&line[colon + 1..], 6) {
            Some(entry) => Ok(Lookup::Found(entry)),
            None => Err(malformed(user)),
        };
    }
    Ok(Lookup::NoSuchUser)
}

fn malformed(user: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the line of user '{user}' has fewer than 7 ':'-separated fields"),
    )
}

/// Parses the fields after the name (`crypted:uid:gid:gecos:dir:quota[:clear]`);
/// `min` is the number of fields required (6, as vpopmail's `vgetent()`
/// requires at least 6 colons in the whole line). Public only for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn parse_fields(rest: &[u8], min: usize) -> Option<Entry> {
    let fields: Vec<&[u8]> = rest.splitn(7, |&b| b == b':').collect();
    if fields.len() < min {
        return None;
    }
    // An empty gid is 0, as vpopmail's atoi() reads it.
    let gid = match std::str::from_utf8(fields[2]).map(str::trim) {
        Ok("") => Ok(0),
        Ok(g) => g.parse::<u32>().map_err(drop),
        Err(_) => Err(()),
    };
    let clear = fields.get(6).filter(|clear| !clear.is_empty()).map(|clear| clear.to_vec());
    let crypted = std::str::from_utf8(fields[0]).ok().filter(|hash| !hash.is_empty()).map(str::to_owned);
    Some(Entry { crypted, gid, clear })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Expected = Option<(Result<u32, ()>, Option<&'static [u8]>)>;

    #[test]
    fn seven_and_eight_field_lines() {
        let cases: [(&[u8], Expected); 9] = [
            (
                b"$6$x$y:1:0:Customer One:/d/customer1:NOQUOTA:S3cret-odmr",
                Some((Ok(0), Some(b"S3cret-odmr"))),
            ),
            (b"$1$x$y:1:2048:Blocked:/d/nosmtp:NOQUOTA", Some((Ok(2048), None))),
            (b"$1$x$y:1:0:Empty clear:/d/e:NOQUOTA:", Some((Ok(0), None))),
            (b"$1$x$y:1:0:Colons:/d/c:NOQUOTA:a:b::c:", Some((Ok(0), Some(b"a:b::c:")))),
            (b"$1$x$y:1:0:No dir::NOQUOTA", Some((Ok(0), None))),
            (b"$1$x$y:1:x20:Bad gid:/d/b:NOQUOTA:pw", Some((Err(()), Some(b"pw")))),
            (b"$1$x$y:1::Empty gid:/d/b:NOQUOTA:pw", Some((Ok(0), Some(b"pw")))),
            (b"$1$x$y:1:0:Short:/d/s", None),
            (b"", None),
        ];
        for (rest, expected) in cases {
            let got = parse_fields(rest, 6).map(|e| (e.gid, e.clear));
            let expected = expected.map(|(g, c)| (g, c.map(<[u8]>::to_vec)));
            assert_eq!(got, expected, "{}", String::from_utf8_lossy(rest));
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            /// The fields after the name, in the 7-field and the 8-field form (the clear
            /// password being the rest of the line, colons included).
            #[test]
            fn written_fields_parse_back(
                gid in any::<u32>(),
                other in proptest::collection::vec("[^:\\n]{0,12}", 5),
                clear in proptest::option::of("[^\\n]{0,30}"),
            ) {
                let mut rest = format!("{}:{}:{gid}:{}:{}:{}", other[0], other[1], other[2], other[3], other[4]);
                if let Some(clear) = &clear {
                    rest.push(':');
                    rest.push_str(clear);
                }
                let entry = parse_fields(rest.as_bytes(), 6).expect("six fields or more");
                prop_assert_eq!(entry.gid, Ok(gid));
                let expected = clear.filter(|c| !c.is_empty()).map(String::into_bytes);
                prop_assert_eq!(entry.clear, expected);
            }
        }
    }
}
