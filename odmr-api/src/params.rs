//! What a sender's MAIL and RCPT parameters ask of the envelope, as values:
//! RFC 3461's NOTIFY, RET and the xtext of ENVID and ORCPT, and whether a
//! body needs RFC 6152's BODY=8BITMIME. Shared by the backends, which read
//! these from their queue files, and by odmrd, which passes them on to the
//! customer and honours them in its own DSNs. Parsing, formatting and one
//! bounded scan; safe code.

use crate::ffi::*;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

/// A recipient's NOTIFY (RFC 3461 §4.1): when the sender wants a DSN.
/// [`Notify::UNSPECIFIED`] (no NOTIFY given) reports failures, as RFC 3461
/// lets an MTA do and as Exim and Postfix do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Notify(u32);

const NOTIFY_WORDS: [(u32, &str); 3] =
    [(ODMR_NOTIFY_SUCCESS, "SUCCESS"), (ODMR_NOTIFY_FAILURE, "FAILURE"), (ODMR_NOTIFY_DELAY, "DELAY")];

impl Notify {
    /// No NOTIFY was given.
    pub const UNSPECIFIED: Notify = Notify(0);
    /// NOTIFY=NEVER.
    pub const NEVER: Notify = Notify(ODMR_NOTIFY_NEVER);

    /// From ODMR_NOTIFY_* bits; unknown bits are dropped, and NEVER wins
    /// over anything it was wrongly combined with.
    pub fn from_raw(bits: u32) -> Notify {
        if bits & ODMR_NOTIFY_NEVER != 0 {
            return Notify::NEVER;
        }
        Notify(bits & (ODMR_NOTIFY_SUCCESS | ODMR_NOTIFY_FAILURE | ODMR_NOTIFY_DELAY))
    }

    /// The ODMR_NOTIFY_* bits.
    pub fn to_raw(self) -> u32 {
        self.0
    }

    /// The value of a `NOTIFY=` parameter (`NEVER`, or a comma list of
    /// `SUCCESS`, `FAILURE`, `DELAY`), ignoring ASCII case. None when
    /// malformed (NEVER combined, an unknown word, empty).
    pub fn parse(value: &str) -> Option<Notify> {
        if value.eq_ignore_ascii_case("NEVER") {
            return Some(Notify::NEVER);
        }
        let mut bits = 0;
        for word in value.split(',') {
            let (bit, _) = NOTIFY_WORDS.iter().find(|(_, w)| w.eq_ignore_ascii_case(word.trim()))?;
            bits |= bit;
        }
        Some(Notify(bits))
    }

    /// The `NOTIFY=` value to send on, or None when none was given.
    pub fn param(self) -> Option<String> {
        if self == Notify::NEVER {
            return Some("NEVER".into());
        }
        let words: Vec<&str> =
            NOTIFY_WORDS.iter().filter(|(b, _)| self.0 & b != 0).map(|(_, w)| *w).collect();
        (!words.is_empty()).then(|| words.join(","))
    }

    /// Was NOTIFY given at all?
    pub fn is_specified(self) -> bool {
        self.0 != 0
    }

    /// Does the sender want a DSN when delivery fails?
    pub fn on_failure(self) -> bool {
        self.0 == 0 || self.0 & ODMR_NOTIFY_FAILURE != 0
    }

    /// Does the sender want a DSN when delivery succeeds (or is relayed)?
    pub fn on_success(self) -> bool {
        self.0 & ODMR_NOTIFY_SUCCESS != 0
    }

    /// Does the sender want a DSN when delivery is delayed?
    pub fn on_delay(self) -> bool {
        self.0 == 0 || self.0 & ODMR_NOTIFY_DELAY != 0
    }
}

/// RET (RFC 3461 §4.3): what a DSN returns of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ret {
    /// RET=FULL: the whole message.
    Full,
    /// RET=HDRS: its header block only.
    Headers,
}

impl Ret {
    /// The value of a `RET=` parameter, ignoring ASCII case.
    pub fn parse(value: &str) -> Option<Ret> {
        if value.eq_ignore_ascii_case("FULL") {
            Some(Ret::Full)
        } else if value.eq_ignore_ascii_case("HDRS") {
            Some(Ret::Headers)
        } else {
            None
        }
    }

    /// The `RET=` value.
    pub fn param(self) -> &'static str {
        match self {
            Ret::Full => "FULL",
            Ret::Headers => "HDRS",
        }
    }

    /// From an ODMR_RET_* value; None for unspecified and unknown values.
    pub fn from_raw(raw: u32) -> Option<Ret> {
        match raw {
            ODMR_RET_FULL => Some(Ret::Full),
            ODMR_RET_HDRS => Some(Ret::Headers),
            _ => None,
        }
    }

    /// The ODMR_RET_* value of an optional RET.
    pub fn to_raw(ret: Option<Ret>) -> u32 {
        match ret {
            None => ODMR_RET_UNSPECIFIED,
            Some(Ret::Full) => ODMR_RET_FULL,
            Some(Ret::Headers) => ODMR_RET_HDRS,
        }
    }
}

/// Decode RFC 3461 xtext (`+XX` hex escapes); None when malformed.
pub fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                let hex = text.get(i + 1..i + 3)?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b @ b'!'..=b'~' if b != b'=' => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Encode `text` as RFC 3461 xtext: `+`, `=`, controls, space and non-ASCII
/// octets as `+XX`.
pub fn xtext_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

/// Decode an `ORCPT=` value (`addr-type;xtext`) into `addr-type;address`;
/// None when malformed.
pub fn orcpt_decode(value: &str) -> Option<String> {
    let (kind, address) = value.split_once(';')?;
    if !is_addr_type(kind) {
        return None;
    }
    Some(format!("{kind};{}", xtext_decode(address)?))
}

/// RFC 3461's addr-type: an atom; we take letters, digits and `-` (as registered types are).
fn is_addr_type(kind: &str) -> bool {
    !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// The `ORCPT=` value for a decoded `addr-type;address`. Anything else (a backend may pass on a
/// value it could not decode) is sent as an rfc822 address, encoded whole, so the value is
/// always one parameter: spooled text can never add parameters to the customer's RCPT.
pub fn orcpt_param(decoded: &str) -> String {
    match decoded.split_once(';') {
        Some((kind, address)) if is_addr_type(kind) => format!("{kind};{}", xtext_encode(address)),
        _ => format!("rfc822;{}", xtext_encode(decoded)),
    }
}

/// How many bytes of a message [`scan_files`] reads at most: enough for
/// nearly all mail, and a bound on the extra reading for the rest (whose
/// 8-bit-ness and line count are then unknown).
pub const SCAN_LIMIT: u64 = 1 << 20;

/// What a look at a message's content found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ContentScan {
    /// An octet above 127 was seen.
    pub eight_bit: bool,
    /// Line feeds seen.
    pub lines: u64,
}

impl ContentScan {
    /// Account for `bytes`, the next part of the content.
    pub fn add(&mut self, bytes: &[u8]) {
        self.eight_bit |= !bytes.is_ascii();
        // Counted with a byte-wide counter per block of 255, which the
        // compiler turns into wide vector compares (a `usize` count is 8x slower).
        for block in bytes.chunks(255) {
            let n = block.iter().fold(0u8, |n, &b| n + u8::from(b == b'\n'));
            self.lines += u64::from(n);
        }
    }
}

/// Scan `content` to its end, reading at most `limit` bytes: None when the
/// limit came first.
pub fn scan_within(content: impl Read, limit: u64) -> io::Result<Option<ContentScan>> {
    let mut content = content.take(limit + 1);
    let mut buf = [0u8; 8192];
    let (mut scan, mut seen) = (ContentScan::default(), 0u64);
    loop {
        let n = match content.read(&mut buf) {
            Ok(0) => return Ok(Some(scan)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        seen += n as u64;
        if seen > limit {
            return Ok(None);
        }
        scan.add(&buf[..n]);
    }
}

/// Reads a file from a position with `pread`, leaving the file offset
/// (which its clones share, e.g. a body reader's) alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// [`scan_within`] over `parts` (each a file from an offset to its end, one
/// after the other) with [`SCAN_LIMIT`], never moving the files' offsets.
/// None also when reading fails: the answer is then unknown.
pub fn scan_files(parts: &[(&File, u64)]) -> Option<ContentScan> {
    let mut content: Box<dyn Read + '_> = Box::new(io::empty());
    for &(file, pos) in parts {
        content = Box::new(content.chain(ReadAt { file, pos }));
    }
    scan_within(content, SCAN_LIMIT).unwrap_or(None)
}

/// An upper bound of the octets `size` bytes of content with `lines` line
/// feeds take on the wire: a CR before each LF (content that has CRLF
/// already is over-counted, which is safe), a stuffed dot at the start of
/// each line, and the CRLF added when the content does not end with one.
/// RFC 1870's SIZE counts no stuffed dots; counting them keeps the bound
/// safe for servers that do.
pub fn wire_size_bound(size: u64, lines: u64) -> u64 {
    size + lines + (lines + 1) + 2
}

/// The ESMTP parameters after a path (`<a@b> NOTIFY=NEVER ORCPT=...`), as
/// `(KEYWORD, value)` with the keyword upper-cased; a bare keyword has an
/// empty value.
pub fn esmtp_params(text: &str) -> Vec<(String, String)> {
    text.split_ascii_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), v.to_string()),
            None => (p.to_ascii_uppercase(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_parses_and_prints_as_rfc3461_writes_it() {
        assert_eq!(Notify::parse("never"), Some(Notify::NEVER));
        let n = Notify::parse("Failure,SUCCESS").unwrap();
        assert_eq!(n.param().as_deref(), Some("SUCCESS,FAILURE"));
        assert!(n.on_failure() && n.on_success() && !n.on_delay());
        assert_eq!(Notify::parse("NEVER,FAILURE"), None);
        assert_eq!(Notify::parse(""), None);
        assert_eq!(Notify::parse("SOMETIMES"), None);
        assert!(Notify::UNSPECIFIED.on_failure() && !Notify::UNSPECIFIED.on_success());
        assert!(!Notify::NEVER.on_failure() && !Notify::NEVER.on_delay());
        assert_eq!(Notify::UNSPECIFIED.param(), None);
        assert_eq!(Notify::from_raw(ODMR_NOTIFY_NEVER | ODMR_NOTIFY_SUCCESS), Notify::NEVER);
        assert_eq!(Notify::from_raw(0x100 | ODMR_NOTIFY_DELAY).to_raw(), ODMR_NOTIFY_DELAY);
    }

    #[test]
    fn scans_stop_at_the_limit_and_bound_the_wire_size() {
        let scan = |b: &[u8], limit| scan_within(b, limit).unwrap();
        assert_eq!(scan(b"a\nb\n", 10), Some(ContentScan { eight_bit: false, lines: 2 }));
        assert_eq!(scan("h\u{e9}".as_bytes(), 10), Some(ContentScan { eight_bit: true, lines: 0 }));
        assert_eq!(scan(&[b'a'; 20], 10), None);
        assert_eq!(scan(&[b'a'; 10], 10), Some(ContentScan::default()));
        // Across the counter's 255-byte blocks.
        let many = b"x\n".repeat(1000);
        assert_eq!(scan(&many, 4000), Some(ContentScan { eight_bit: false, lines: 1000 }));
        // ".\n.\n" (4 octets, 2 lines) is "..\r\n..\r\n" (8) on the wire.
        assert!(wire_size_bound(4, 2) >= 8);
        assert!(wire_size_bound(6, 2) >= 8, "\".\r\n.\r\n\"");
        // No final line end: "x" is "x\r\n".
        assert!(wire_size_bound(1, 0) >= 3);
        assert_eq!(
            esmtp_params(" notify=SUCCESS  SMTPUTF8 ORCPT=rfc822;a@b"),
            [
                ("NOTIFY".into(), "SUCCESS".into()),
                ("SMTPUTF8".into(), String::new()),
                ("ORCPT".into(), "rfc822;a@b".into())
            ]
        );
    }

    #[test]
    fn ret_round_trips() {
        assert_eq!(Ret::parse("hdrs"), Some(Ret::Headers));
        assert_eq!(Ret::parse("FULL"), Some(Ret::Full));
        assert_eq!(Ret::parse("ALL"), None);
        for ret in [None, Some(Ret::Full), Some(Ret::Headers)] {
            assert_eq!(Ret::from_raw(Ret::to_raw(ret)), ret);
        }
    }

    #[test]
    fn xtext_round_trips_and_refuses_what_rfc3461_forbids() {
        assert_eq!(xtext_decode("a+2Bb+3Dc").as_deref(), Some("a+b=c"));
        assert_eq!(xtext_encode("a+b=c d"), "a+2Bb+3Dc+20d");
        for bad in ["a+2", "a+ZZ", "a=b", "a b"] {
            assert_eq!(xtext_decode(bad), None, "{bad}");
        }
        let odd = "ü+x=\u{1}";
        assert_eq!(xtext_decode(&xtext_encode(odd)).as_deref(), Some(odd));
        assert_eq!(orcpt_decode("rfc822;bob+2Bx@example.org").as_deref(), Some("rfc822;bob+x@example.org"));
        assert_eq!(orcpt_decode("bob@example.org"), None);
        assert_eq!(orcpt_param("rfc822;bob+x@example.org"), "rfc822;bob+2Bx@example.org");
        // Found by fuzzing (fuzz/regressions/esmtp_params/): an undecodable value kept as
        // written must not carry spaces or `=` into the RCPT command as more parameters.
        assert_eq!(orcpt_param("x NOTIFY=NEVER;a@b"), "rfc822;x+20NOTIFY+3DNEVER;a@b");
        assert_eq!(orcpt_param(";a@b"), "rfc822;;a@b");
        assert_eq!(orcpt_param("bad type;b@x"), "rfc822;bad+20type;b@x");
    }
}
