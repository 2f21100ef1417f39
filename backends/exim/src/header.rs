//! Exim's spool file formats, read defensively: message ids, the envelope
//! part of `-H`, the journal `-J`, and the header records of `-H`.
//!
//! Owns: parsing (as Exim 4.96–4.99's `spool_read_header()` does), the
//! "pending" rule on spooled addresses (the domain rule is
//! `odmr_api::names::in_domains`), and streaming the
//! transmitted headers (flag not `*`) in constant memory. Does not: open,
//! lock or change files (`spool`), or decide what a cursor offers (`queue`).

use odmr_api::params::{orcpt_decode, xtext_decode, Notify, Ret};
use odmr_api::RecipientDetails;
use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufRead, Read};

/// Exim's limit on the recipient count of one message.
const MAX_RECIPIENTS: usize = 16384;
/// Longest envelope line we accept (Exim grows its buffer to 4 × 16 KiB).
const MAX_LINE: usize = 64 * 1024;
/// Longest ACL variable payload we skip.
const MAX_ACL_VALUE: u64 = 16 * 1024 * 1024;

/// Is `id` a message id, old (16 characters, Exim ≤ 4.96) or new (23, ≥ 4.97)?
pub fn is_message_id(id: &str) -> bool {
    let b = id.as_bytes();
    let alnum = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_alphanumeric);
    match b.len() {
        16 => alnum(0..6) && b[6] == b'-' && alnum(7..13) && b[13] == b'-' && alnum(14..16),
        23 => alnum(0..6) && b[6] == b'-' && alnum(7..18) && b[18] == b'-' && alnum(19..23),
        _ => false,
    }
}

/// Why a spool file was not usable.
#[derive(Debug)]
pub enum Bad {
    /// Reading failed.
    Io(io::Error),
    /// The content is not what Exim writes.
    Format(String),
}

impl fmt::Display for Bad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bad::Io(e) => write!(f, "{e}"),
            Bad::Format(why) => write!(f, "format error: {why}"),
        }
    }
}

impl From<io::Error> for Bad {
    fn from(e: io::Error) -> Self {
        Bad::Io(e)
    }
}

fn format_error<T>(why: impl Into<String>) -> Result<T, Bad> {
    Err(Bad::Format(why.into()))
}

/// The envelope part of a `-H` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Envelope sender without the angle brackets; empty for bounces.
    pub sender: String,
    /// `-frozen`: Exim will not deliver it, nor do we.
    pub frozen: bool,
    /// `-spool_file_wireformat`: the `-D` body has CRLF line ends.
    pub wireformat: bool,
    /// The non-recipients tree, as a set: addresses already delivered.
    pub done: HashSet<Vec<u8>>,
    /// Every recipient's address, exactly as spooled, in order.
    pub recipients: Vec<String>,
    /// NOTIFY and ORCPT of `recipients[i]` at index `i` (defaults for
    /// recipient lines without DSN data).
    pub details: Vec<RecipientDetails>,
    /// Line 4: when Exim received the message (Unix seconds).
    pub received: u64,
    /// `-dsn_envid`, xtext decoded (kept as written when it is not xtext).
    pub envid: Option<String>,
    /// `-dsn_ret`: 1 FULL, 2 HDRS.
    pub ret: Option<Ret>,
    /// `-smtputf8`: received with SMTPUTF8.
    pub smtputf8: bool,
    /// `-body_linecount`: lines of the `-D` body (absent in wire format).
    pub body_lines: Option<u64>,
    /// Bytes consumed up to and including the blank line before the headers.
    pub headers_offset: u64,
}

/// Reads lines and counts the bytes consumed.
struct Lines<R> {
    reader: R,
    consumed: u64,
}

impl<R: BufRead> Lines<R> {
    /// The next line with its `\n`; format error at EOF or when too long.
    fn line(&mut self, what: &str) -> Result<Vec<u8>, Bad> {
        let mut line = Vec::new();
        let n = (&mut self.reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut line)?;
        self.consumed += n as u64;
        if line.last() != Some(&b'\n') {
            return format_error(format!("{what}: unexpected end of file or line too long"));
        }
        Ok(line)
    }

    fn skip(&mut self, n: u64) -> Result<(), Bad> {
        let copied = io::copy(&mut (&mut self.reader).take(n), &mut io::sink())?;
        self.consumed += copied;
        if copied != n {
            return format_error("unexpected end of file in an ACL variable");
        }
        Ok(())
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Bad> {
    String::from_utf8(bytes.to_vec()).or_else(|_| format_error(format!("{what} is not UTF-8")))
}

/// Parse the envelope of `<id>-H` from `reader`, which is left at the first
/// header record.
pub fn parse<R: BufRead>(reader: R, id: &str) -> Result<Header, Bad> {
    let mut r = Lines { reader, consumed: 0 };
    let first = r.line("line 1")?;
    if first != format!("{id}-H\n").as_bytes() {
        return format_error("line 1 does not name the message");
    }
    // Line 2: `login uid gid`, numbers read from the end (negatives allowed).
    let who = r.line("line 2")?;
    let mut parts = who[..who.len() - 1].rsplitn(3, |&b| b == b' ');
    let number = |f: Option<&[u8]>| {
        f.and_then(|f| f.strip_prefix(b"-").or(Some(f)))
            .is_some_and(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
    };
    if !number(parts.next()) || !number(parts.next()) || parts.next().is_none() {
        return format_error("line 2 is not 'login uid gid'");
    }
    let from = r.line("line 3")?;
    if from.len() < 3 || from[0] != b'<' || from[from.len() - 2] != b'>' {
        return format_error("line 3 is not '<sender>'");
    }
    let sender = utf8(&from[1..from.len() - 2], "the sender")?;
    let time = r.line("line 4")?;
    let mut fields = time.split(|&b| b == b' ' || b == b'\n').filter(|f| !f.is_empty());
    let numeric = |f: Option<&[u8]>| f.is_some_and(|f| f.iter().all(u8::is_ascii_digit));
    let received = fields.next();
    if !numeric(received) || !numeric(fields.next()) {
        return format_error("line 4 is not 'time warnings'");
    }
    let received =
        std::str::from_utf8(received.unwrap_or_default()).ok().and_then(|t| t.parse().ok()).unwrap_or(0);

    let mut frozen = false;
    let mut wireformat = false;
    let (mut envid, mut ret, mut smtputf8, mut body_lines) = (None, None, false, None);
    let mut line = r.line("options")?;
    while line[0] == b'-' {
        let text = &line[..line.len() - 1];
        let var = if text.get(1) == Some(&b'-') { &text[2..] } else { &text[1..] };
        if var.starts_with(b"frozen") {
            frozen = true;
        } else if let Some(value) = var.strip_prefix(b"dsn_envid ") {
            // Exim keeps the ENVID as the client sent it, in xtext.
            let value = String::from_utf8_lossy(value);
            envid = Some(xtext_decode(&value).unwrap_or_else(|| value.into_owned()));
        } else if let Some(value) = var.strip_prefix(b"dsn_ret ") {
            ret = match value {
                b"1" => Some(Ret::Full),
                b"2" => Some(Ret::Headers),
                _ => None,
            };
        } else if var == b"smtputf8" {
            smtputf8 = true;
        } else if let Some(value) = var.strip_prefix(b"body_linecount ") {
            body_lines = std::str::from_utf8(value).ok().and_then(|n| n.parse().ok());
        } else if var.starts_with(b"spool_file_wireformat") {
            wireformat = true;
        } else if var.starts_with(b"aclc ") || var.starts_with(b"aclm ") || var.starts_with(b"acl ") {
            // `-aclc NAME LEN` / `-acl N LEN`: LEN bytes and a newline follow.
            let len = std::str::from_utf8(var.rsplit(|&b| b == b' ').next().unwrap_or_default())
                .ok()
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|&n| n <= MAX_ACL_VALUE);
            let Some(len) = len else { return format_error("bad ACL variable line") };
            r.skip(len + 1)?;
        }
        line = r.line("options")?;
    }

    let mut done = HashSet::new();
    if line != b"XX\n" {
        read_tree(&mut r, line, &mut done, 0)?;
    }
    let count = r.line("recipient count")?;
    let count: usize = std::str::from_utf8(&count[..count.len() - 1])
        .ok()
        .and_then(|c| c.trim().parse().ok())
        .filter(|&c| c <= MAX_RECIPIENTS)
        .map_or_else(|| format_error("bad recipient count"), Ok)?;
    let mut recipients = Vec::with_capacity(count);
    let mut details = Vec::with_capacity(count);
    for _ in 0..count {
        let line = r.line("recipients")?;
        if line.len() < 2 {
            return format_error("empty recipient line");
        }
        let parsed = recipient_line(&line[..line.len() - 1]);
        recipients.push(utf8(parsed.address, "a recipient")?);
        details.push(parsed.details());
    }
    if r.line("blank line before the headers")? != b"\n" {
        return format_error("no blank line after the recipients");
    }
    Ok(Header {
        sender,
        frozen,
        wireformat,
        done,
        recipients,
        details,
        received,
        envid,
        ret,
        smtputf8,
        body_lines,
        headers_offset: r.consumed,
    })
}

/// One node of the non-recipients tree (`YN address`) and its subtrees.
fn read_tree<R: BufRead>(
    r: &mut Lines<R>,
    line: Vec<u8>,
    done: &mut HashSet<Vec<u8>>,
    depth: usize,
) -> Result<(), Bad> {
    // Exim writes a balanced tree; anything deeper than this is not one.
    if depth > 64 || line.len() < 5 || line[2] != b' ' {
        return format_error("bad non-recipients tree");
    }
    let (left, right) = (line[0], line[1]);
    if !matches!(left, b'Y' | b'N') || !matches!(right, b'Y' | b'N') {
        return format_error("bad non-recipients tree");
    }
    done.insert(line[3..line.len() - 1].to_vec());
    if left == b'Y' {
        let next = r.line("non-recipients tree")?;
        read_tree(r, next, done, depth + 1)?;
    }
    if right == b'Y' {
        let next = r.line("non-recipients tree")?;
        read_tree(r, next, done, depth + 1)?;
    }
    Ok(())
}

/// A recipient line of `-H`: the address and, in the current format, the
/// DSN data Exim keeps for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecipientLine<'a> {
    /// The address, exactly as spooled.
    pub address: &'a [u8],
    /// Exim's DSN flags (`0x02` NEVER, `0x04` SUCCESS, `0x08` FAILURE,
    /// `0x10` DELAY) and the ORCPT as the client sent it (xtext).
    pub dsn: Option<(u32, &'a [u8])>,
}

impl RecipientLine<'_> {
    /// NOTIFY and ORCPT as the ABI passes them (ORCPT decoded; kept as
    /// written when it is not `type;xtext`).
    pub fn details(&self) -> RecipientDetails {
        let Some((flags, orcpt)) = self.dsn else { return RecipientDetails::default() };
        let orcpt = String::from_utf8_lossy(orcpt);
        RecipientDetails {
            notify: Notify::from_raw((flags >> 1) & 0x0f),
            orcpt: (!orcpt.is_empty()).then(|| orcpt_decode(&orcpt).unwrap_or_else(|| orcpt.into_owned())),
        }
    }
}

/// The address of a recipient line (without its newline); see [`recipient_line`].
pub fn recipient_address(line: &[u8]) -> &[u8] {
    recipient_line(line).address
}

/// A recipient line (without its newline), read from the right as
/// `spool_read_header()` does: plain `address`, Exim 3 `address d,pno,d`,
/// early Exim 4 `address pno`, and current
/// `address orcpt len,dsn errors_to len,pno#flags`.
pub fn recipient_line(line: &[u8]) -> RecipientLine<'_> {
    let whole = RecipientLine { address: line, dsn: None };
    let digit_or = |b: u8, extra: &[u8]| b.is_ascii_digit() || extra.contains(&b);
    let Some(mut p) = line.len().checked_sub(1) else { return whole };
    while p > 0 && line[p].is_ascii_digit() {
        p -= 1;
    }
    match line[p] {
        b',' => {
            while p > 0 && digit_or(line[p - 1], b",") {
                p -= 1;
            }
            match p.checked_sub(1) {
                Some(space) if line[space] == b' ' => RecipientLine { address: &line[..space], dsn: None },
                _ => whole,
            }
        }
        b' ' => RecipientLine { address: &line[..p], dsn: None },
        b'#' => {
            // Exim walks back over "LEN,NUM" fields and LEN bytes of text,
            // writing a NUL before each; the address ends at the last one.
            // Mirrored step by step, bounds-checked (a line that does not fit
            // is taken whole, as Exim would take it unchanged).
            let flags: u32 =
                std::str::from_utf8(&line[p + 1..]).ok().and_then(|f| f.parse().ok()).unwrap_or(0);
            let number = |t: Option<&[u8]>| -> Option<usize> { std::str::from_utf8(t?).ok()?.parse().ok() };
            // From the end of a "LEN,NUM" field: the start of the LEN bytes
            // of text before it, and the field's two numbers.
            let back_over_field = |end: usize| -> Option<(usize, usize, usize)> {
                let mut p = end;
                loop {
                    p = p.checked_sub(1)?;
                    if !digit_or(line[p], b",-") {
                        break;
                    }
                }
                let mut numbers = line[p + 1..end].split(|&b| b == b',');
                let len = number(numbers.next())?;
                let second = number(numbers.next()).unwrap_or(0);
                Some((p.checked_sub(len)?, len, second))
            };
            let parsed = (|| {
                let mut p = p;
                let mut dsn = None;
                if flags & 0x01 != 0 {
                    p = back_over_field(p)?.0;
                }
                p = p.checked_sub(1)?;
                if flags & 0x02 != 0 {
                    let (start, len, dsn_flags) = back_over_field(p)?;
                    dsn = Some((dsn_flags as u32, &line[start..start + len]));
                    p = start;
                }
                Some(RecipientLine { address: &line[..p.checked_sub(1)?], dsn })
            })();
            parsed.unwrap_or(whole)
        }
        _ => whole,
    }
}

/// The lines of a journal: addresses Exim (or we) delivered since `-H` was
/// last written.
pub fn journal_lines(journal: &[u8]) -> impl Iterator<Item = &[u8]> {
    journal.split(|&b| b == b'\n').filter(|l| !l.is_empty())
}

/// Exim's "unique" form of a top-level address: the domain lower-cased, the
/// local part unchanged.
pub fn unique(address: &str) -> String {
    match address.rfind('@') {
        Some(at) => format!("{}{}", &address[..at], address[at..].to_ascii_lowercase()),
        None => address.to_string(),
    }
}

/// Is `address` still to be delivered, given what `-H` and `-J` say is done?
pub fn is_pending(address: &str, done: &HashSet<Vec<u8>>) -> bool {
    !done.contains(address.as_bytes()) && !done.contains(unique(address).as_bytes())
}

/// The start of one header record: `NNN` length, a flag byte and a space.
/// None at the end of the file.
fn record_prefix<R: BufRead>(reader: &mut R) -> Result<Option<(u64, u8)>, Bad> {
    let mut len: u64 = 0;
    let mut digits = 0;
    loop {
        let mut byte = [0u8];
        if reader.read(&mut byte)? == 0 {
            if digits == 0 {
                return Ok(None);
            }
            return format_error("header record cut short");
        }
        match byte[0] {
            b'0'..=b'9' if digits < 9 => {
                len = len * 10 + u64::from(byte[0] - b'0');
                digits += 1;
            }
            flag if digits >= 3 => {
                let mut space = [0u8];
                reader.read_exact(&mut space).map_err(|_| Bad::Format("header record cut short".into()))?;
                if space[0] != b' ' {
                    return format_error("header record without a space after its flag");
                }
                return Ok(Some((len, flag)));
            }
            _ => return format_error("header record without a length"),
        }
    }
}

/// Walk the header records from the reader's position, checking them, and
/// return the size of the transmitted ones (flag not `*`).
pub fn transmitted_size<R: BufRead>(reader: &mut R) -> Result<u64, Bad> {
    let mut total = 0;
    while let Some((len, flag)) = record_prefix(reader)? {
        let mut left = len;
        while left > 0 {
            let chunk = reader.fill_buf()?;
            if chunk.is_empty() {
                return format_error("header record cut short");
            }
            let n = chunk.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            if chunk[..n].contains(&0) {
                return format_error("NUL byte in a header");
            }
            reader.consume(n);
            left -= n as u64;
        }
        if flag != b'*' {
            total += len;
        }
    }
    Ok(total)
}

/// The message as the customer gets it: the headers of `-H` whose flag is not
/// `*`, a blank line, then the body (the rest of `-D`), streamed.
pub struct Body<H, D> {
    headers: H,
    data: D,
    stage: Stage,
    /// Bytes left in the current header record.
    left: u64,
    /// The current record is a deleted header: skip it.
    skip: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Headers,
    Blank,
    Data,
    Done,
}

impl<H: BufRead, D: Read> Body<H, D> {
    /// `headers` positioned at the first header record, `data` at the first
    /// body byte of `-D`.
    pub fn new(headers: H, data: D) -> Self {
        Body { headers, data, stage: Stage::Headers, left: 0, skip: false }
    }

    /// Fill `buf` with the next bytes; 0 at the end.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.stage {
                Stage::Headers if self.left == 0 => {
                    match record_prefix(&mut self.headers).map_err(into_io)? {
                        Some((len, flag)) => {
                            self.left = len;
                            self.skip = flag == b'*';
                        }
                        None => self.stage = Stage::Blank,
                    }
                }
                Stage::Headers => {
                    let chunk = self.headers.fill_buf()?;
                    if chunk.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "header record cut short"));
                    }
                    let n = chunk.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                    if self.skip {
                        self.headers.consume(n);
                        self.left -= n as u64;
                        continue;
                    }
                    let n = n.min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    self.headers.consume(n);
                    self.left -= n as u64;
                    return Ok(n);
                }
                Stage::Blank => {
                    buf[0] = b'\n';
                    self.stage = Stage::Data;
                    return Ok(1);
                }
                Stage::Data => {
                    let n = self.data.read(buf)?;
                    if n == 0 {
                        self.stage = Stage::Done;
                    }
                    return Ok(n);
                }
                Stage::Done => return Ok(0),
            }
        }
    }
}

fn into_io(bad: Bad) -> io::Error {
    match bad {
        Bad::Io(e) => e,
        Bad::Format(why) => io::Error::new(io::ErrorKind::InvalidData, why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exim 4.96's own -H (formats.md 3.4), one recipient already delivered.
    const OBSERVED: &str = "1xV7gw-0004Qd-11-H\nroot 0 0\n<alice@sender.example>\n1795354394 0\n\
-received_time_usec .316004\n-received_time_complete 1795354394.316540\n-ident root\n\
-received_protocol local\n-body_linecount 3\n-max_received_linelength 26\n\
-allow_unqualified_recipient\n-allow_unqualified_sender\n-deliver_firsttime\n-tls_resumption A\n\
NN a@odmr.example\n2\na@odmr.example\nB@ODMR.example\n\n\
158P Received: from root by provider.example with local (Exim 4.96)\n\
\t(envelope-from <alice@sender.example>)\n\tid 1xV7gw-0004Qd-11;\n\tSun, 22 Nov 2026 13:33:14 +0000\n\
018  Subject: test one\n027F From: alice@sender.example\n\
049I Message-Id: <E1xV7gw-0004Qd-11@provider.example>\n038  Date: Sun, 22 Nov 2026 13:33:14 +0000\n";

    /// The synthetic new-format example of formats.md 3.4, with an ACL
    /// variable whose value contains a newline and a deleted header.
    const NEW_FORMAT: &str = "1vMkbR-00000000Ab3-0Fq2-H\nDebian-exim 101 103\n<alice@sender.example>\n\
1763806345 0\n-received_time_usec .123456\n--helo_name mx.sender.example\n\
--host_address [192.0.2.10]:50022\n-aclm 0 12\nhello\nYN Bob\n-body_linecount 12\n-dsn_ret 2\n\
YN Bob@odmr.example\nNN Bob@ODMR.example\n3\nBob@ODMR.example\n\
carol@odmr.example rfc822;carol@odmr.example 25,12  0,-1#3\ndave@elsewhere.example\n\n\
027  Subject: synthetic example\n019* X-Old: deleted one\n\
035F From: Alice <alice@sender.example>\n";

    #[test]
    fn message_ids_of_both_formats() {
        for id in ["1xV7gw-0004Qd-11", "1vMkbR-00000000Ab3-0Fq2"] {
            assert!(is_message_id(id), "{id}");
        }
        for id in [
            "1xV7gw-0004Qd-1",
            "1xV7gw_0004Qd-11",
            "1xV7gw-0004Qd-11-H",
            "1vMkbR-00000000Ab3-0Fq",
            "../../etc/pw",
        ] {
            assert!(!is_message_id(id), "{id}");
        }
    }

    #[test]
    fn observed_exim_496_header() {
        let h = parse(OBSERVED.as_bytes(), "1xV7gw-0004Qd-11").unwrap();
        assert_eq!(h.sender, "alice@sender.example");
        assert!(!h.frozen && !h.wireformat);
        assert_eq!(h.recipients, ["a@odmr.example", "B@ODMR.example"]);
        assert!(!is_pending("a@odmr.example", &h.done));
        assert!(is_pending("B@ODMR.example", &h.done));
        let headers = &OBSERVED.as_bytes()[h.headers_offset as usize..];
        assert!(headers.starts_with(b"158P Received"));
        assert_eq!(transmitted_size(&mut &headers[..]).unwrap(), 158 + 18 + 27 + 49 + 38);
        assert!(parse(OBSERVED.as_bytes(), "1xV7gw-0004Qd-12").is_err(), "wrong id");
    }

    #[test]
    fn new_format_header_with_acl_payload_and_dsn_recipient() {
        let h = parse(NEW_FORMAT.as_bytes(), "1vMkbR-00000000Ab3-0Fq2").unwrap();
        assert_eq!(h.recipients, ["Bob@ODMR.example", "carol@odmr.example", "dave@elsewhere.example"]);
        assert!(!is_pending("Bob@ODMR.example", &h.done));
        assert!(is_pending("carol@odmr.example", &h.done));
        assert!(!h.done.contains(&b"Bob"[..]), "ACL payload is not a tree line");
        let headers = &NEW_FORMAT.as_bytes()[h.headers_offset as usize..];
        let mut body = Body::new(headers, &b"body line\n.dot\n"[..]);
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = body.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Subject: synthetic example\nFrom: Alice <alice@sender.example>\n\nbody line\n.dot\n"
        );
    }

    #[test]
    fn frozen_and_wireformat_flags() {
        let text = OBSERVED.replace("-deliver_firsttime\n", "-frozen 1795354400\n-spool_file_wireformat\n");
        let h = parse(text.as_bytes(), "1xV7gw-0004Qd-11").unwrap();
        assert!(h.frozen && h.wireformat);
    }

    #[test]
    fn malformed_headers_are_refused() {
        let cut = &OBSERVED[..OBSERVED.find("2\na@odmr").unwrap()];
        let cases = [
            OBSERVED.replace("<alice@sender.example>\n", "alice@sender.example\n"),
            OBSERVED.replace("\n2\na@", "\nmany\na@"),
            OBSERVED.replace("NN a@odmr", "QQ a@odmr"),
            OBSERVED.replace("B@ODMR.example\n\n", "B@ODMR.example\nX\n"),
            cut.to_string(),
        ];
        for text in cases {
            assert!(parse(text.as_bytes(), "1xV7gw-0004Qd-11").is_err(), "{text}");
        }
        for bad in [
            "15 Subject: x\n",
            "018  Subject: cut\n",
            "018 XSubject: test one\n",
            "018 \0Subject: test one\n",
        ] {
            assert!(transmitted_size(&mut bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn recipient_lines_of_every_generation() {
        let cases = [
            ("a@odmr.example", "a@odmr.example"),
            ("p@odmr.example rfc822;p@odmr.example 21,12  0,-1#3", "p@odmr.example"),
            ("p@odmr.example  0,0 bounces@x.example 17,2#3", "p@odmr.example"),
            ("r@odmr.example 5", "r@odmr.example"),
            ("s@odmr.example 0,2,0", "s@odmr.example"),
            ("\"t u\"@odmr.example", "\"t u\"@odmr.example"),
            ("user@host1", "user@host1"),
        ];
        for (line, address) in cases {
            assert_eq!(std::str::from_utf8(recipient_address(line.as_bytes())).unwrap(), address, "{line}");
        }
    }

    /// Recipient lines and options as Exim 4.96 wrote them for
    /// `MAIL FROM:<...> RET=FULL ENVID=env+2Bid` and three recipients:
    /// `NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;A+2Bx@example.org`,
    /// `NOTIFY=NEVER`, and none (observed, /usr/sbin/exim4 -bs).
    #[test]
    fn dsn_data_of_an_observed_exim_496_spool() {
        let text = OBSERVED
            .replace(
                "-tls_resumption A
",
                "-tls_resumption A
-dsn_envid env+2Bid
-dsn_ret 1
-smtputf8
",
            )
            .replace(
                "2
a@odmr.example
B@ODMR.example
",
                "3
a@odmr.example rfc822;A+2Bx@example.org 24,12  0,-1#3
B@ODMR.example  0,2  0,-1#3
c@odmr.example
",
            );
        let h = parse(text.as_bytes(), "1xV7gw-0004Qd-11").unwrap();
        assert_eq!(h.recipients, ["a@odmr.example", "B@ODMR.example", "c@odmr.example"]);
        assert_eq!(
            (h.envid.as_deref(), h.ret, h.smtputf8, h.received),
            (Some("env+id"), Some(Ret::Full), true, 1795354394)
        );
        let success_failure = Notify::parse("SUCCESS,FAILURE").unwrap();
        assert_eq!(
            h.details,
            [
                RecipientDetails { notify: success_failure, orcpt: Some("rfc822;A+x@example.org".into()) },
                RecipientDetails { notify: Notify::NEVER, orcpt: None },
                RecipientDetails::default(),
            ]
        );
        let h = parse(OBSERVED.as_bytes(), "1xV7gw-0004Qd-11").unwrap();
        assert_eq!((h.envid, h.ret, h.smtputf8), (None, None, false));
        // DELAY alone, with an errors_to address.
        let line = recipient_line(b"d@odmr.example rfc822;d@odmr.example 21,16 e@x.example 11,-1#3");
        assert_eq!(line.address, b"d@odmr.example");
        assert_eq!(line.details().notify, Notify::parse("DELAY").unwrap());
    }

    #[test]
    fn unique_form_lowers_only_the_domain() {
        assert_eq!(unique("Bob@ODMR.Example"), "Bob@odmr.example");
        let done: HashSet<Vec<u8>> = [b"y@odmr.example".to_vec(), b"X@ODMR.example".to_vec()].into();
        assert!(is_pending("Y@ODMR.example", &done), "local parts are case-sensitive");
        assert!(!is_pending("X@ODMR.example", &done));
        assert!(!is_pending("y@ODMR.EXAMPLE", &done));
        let lines: Vec<&[u8]> = journal_lines(b"a@x\n\nb@y\n").collect();
        assert_eq!(lines, [&b"a@x"[..], &b"b@y"[..]]);
    }
}
