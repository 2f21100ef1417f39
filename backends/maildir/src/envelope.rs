//! Recovering the envelope of one queued file: a BSMTP transaction (as Exim's
//! `use_bsmtp` writes) or the header fields MTAs prepend: the sender from
//! `Return-Path:`, the recipient from `Delivered-To:` (qmail-local, Postfix),
//! else `X-Original-To:` (Postfix), else `Envelope-to:` (Exim's
//! `envelope_to_add`, a comma-separated list).
//!
//! Owns: the two parsers, the byte layout they report (which lines to keep
//! when rewriting a BSMTP file, which byte ranges a headers-mode body skips).
//! The recipient-domain match is `odmr_api::names::in_domains`. Works on any
//! `BufRead` and reads each line into a bounded buffer, so memory stays
//! constant whatever the file size.
//! Does not: open files, take locks, stream bodies (see `body`) or decide
//! what happens to a file.

use odmr_api::params::{esmtp_params, orcpt_decode, xtext_decode, Notify, Ret};
use odmr_api::RecipientDetails;
use std::io::{self, BufRead, Read, Seek, SeekFrom};
use std::ops::Range;

/// The longest envelope line (command or header field) kept for parsing.
/// SMTP command lines are at most 512 octets; this leaves ample room for
/// ESMTP parameters and long local parts.
pub const MAX_ENVELOPE_LINE: usize = 4096;

/// Why a file was not accepted. The file is logged and left alone.
#[derive(Debug)]
pub enum Rejected {
    /// The file does not follow either format; the text says why.
    Malformed(String),
    /// Reading failed.
    Io(io::Error),
}

impl From<io::Error> for Rejected {
    fn from(e: io::Error) -> Self {
        Rejected::Io(e)
    }
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Malformed(why) => write!(f, "malformed: {why}"),
            Rejected::Io(e) => write!(f, "unreadable: {e}"),
        }
    }
}

fn malformed<T>(why: impl Into<String>) -> Result<T, Rejected> {
    Err(Rejected::Malformed(why.into()))
}

/// One envelope recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as given to the customer's `RCPT TO:<…>`.
    pub address: String,
    /// BSMTP only: the raw `RCPT TO:` line, line end included, kept verbatim
    /// when the file is rewritten.
    pub line: Vec<u8>,
    /// BSMTP only: its `NOTIFY=` and `ORCPT=`.
    pub details: RecipientDetails,
}

/// What the sender asked with `MAIL FROM:` parameters (BSMTP only), and
/// what the data showed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailParams {
    /// `ENVID=`, xtext decoded.
    pub envid: Option<String>,
    /// `RET=`.
    pub ret: Option<Ret>,
    /// `SMTPUTF8`, or a sender or recipient that is not ASCII.
    pub smtputf8: bool,
    /// `BODY=8BITMIME` or an 8-bit octet in the data: Some(true); the whole
    /// data read without one: Some(false); headers mode: None.
    pub eight_bit: Option<bool>,
    /// Line feeds in the data (BSMTP; headers mode: None).
    pub lines: Option<u64>,
}

/// How the content is laid out in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// BSMTP: dot-stuffed data from `data_start` to a line `.` that ends the file.
    Bsmtp {
        /// The raw `MAIL FROM:` line, line end included.
        mail_line: Vec<u8>,
        /// The raw `DATA` line, line end included.
        data_line: Vec<u8>,
        /// Offset of the first data byte.
        data_start: u64,
    },
    /// Headers mode: the whole file except these (sorted, disjoint) ranges,
    /// which hold the consumed `Return-Path` and recipient fields.
    Headers {
        /// Byte ranges not transmitted.
        skip: Vec<Range<u64>>,
        /// Where the recipients came from: the field a partial commit rewrites.
        source: RecipientField,
    },
}

/// Which header field gave a headers-mode file its recipients, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientField {
    /// `Delivered-To`, `X-Original-To` or `Envelope-to`.
    pub name: &'static str,
    /// The field's bytes, continuation lines included.
    pub range: Range<u64>,
    /// The field's line end (`\n` or `\r\n`), for a rewritten field.
    pub eol: &'static str,
}

/// The envelope of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Envelope sender; empty for the null sender (and for qmail's `#@[]`).
    pub sender: String,
    /// All envelope recipients, in file order.
    pub recipients: Vec<Recipient>,
    /// What the `MAIL FROM:` parameters and the data say.
    pub params: MailParams,
    /// Where the content is.
    pub layout: Layout,
}

/// Parse a file's envelope. For BSMTP the data is not read: only the file's
/// end is checked to be the terminating `.` line, so that a truncated file is
/// refused before anything is offered; the body reader checks the rest while
/// streaming (a terminator before the end aborts the message before its dot).
/// `strip_prefix` applies to headers mode only.
pub fn parse<R: BufRead + Seek>(r: &mut R, strip_prefix: Option<&str>) -> Result<Parsed, Rejected> {
    let mut first = Line::default();
    let n = first.read(r)?;
    if n == 0 {
        return malformed("empty file");
    }
    if starts_with_ci(&first.kept, b"MAIL FROM:") {
        parse_bsmtp(r, first)
    } else {
        parse_headers(r, first, strip_prefix)
    }
}

/// One line read with a bounded buffer.
#[derive(Default)]
struct Line {
    /// The first `MAX_ENVELOPE_LINE` bytes, line end included if it fit.
    kept: Vec<u8>,
    /// Total length of the line, line end included.
    len: u64,
}

impl Line {
    /// Read the next line; returns its full length (0 at end of file).
    fn read(&mut self, r: &mut impl BufRead) -> io::Result<u64> {
        self.kept.clear();
        self.len = 0;
        loop {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                return Ok(self.len);
            }
            let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (&buf[..=i], true),
                None => (buf, false),
            };
            let room = MAX_ENVELOPE_LINE.saturating_sub(self.kept.len());
            self.kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            let used = chunk.len();
            self.len += used as u64;
            r.consume(used);
            if done {
                return Ok(self.len);
            }
        }
    }

    fn truncated(&self) -> bool {
        self.len > self.kept.len() as u64
    }

    /// The line without its `\n` or `\r\n`.
    fn text(&self) -> &[u8] {
        let t = self.kept.strip_suffix(b"\n").unwrap_or(&self.kept);
        t.strip_suffix(b"\r").unwrap_or(t)
    }

    fn is_blank(&self) -> bool {
        !self.truncated() && self.text().is_empty()
    }
}

fn starts_with_ci(s: &[u8], prefix: &[u8]) -> bool {
    s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn parse_bsmtp<R: BufRead + Seek>(r: &mut R, mail: Line) -> Result<Parsed, Rejected> {
    if mail.truncated() {
        return malformed("MAIL FROM line too long");
    }
    let (sender, mail_params) = path_argument(&mail.text()[b"MAIL FROM:".len()..], "MAIL FROM")?;
    let mut params = MailParams::default();
    for (key, value) in esmtp_params(&mail_params) {
        // Liberal: a parameter we cannot read is as if absent.
        match key.as_str() {
            "ENVID" => params.envid = xtext_decode(&value),
            "RET" => params.ret = Ret::parse(&value),
            "SMTPUTF8" => params.smtputf8 = true,
            "BODY" if value.eq_ignore_ascii_case("8BITMIME") => params.eight_bit = Some(true),
            _ => {}
        }
    }
    let mut offset = mail.len;
    let mut recipients = Vec::new();
    let mut line = Line::default();
    let data_line = loop {
        let n = line.read(r)?;
        if n == 0 {
            return malformed("end of file before DATA");
        }
        offset += n;
        if line.truncated() {
            return malformed("envelope line too long");
        }
        let text = line.text();
        if starts_with_ci(text, b"RCPT TO:") {
            let (address, rcpt_params) = path_argument(&text[b"RCPT TO:".len()..], "RCPT TO")?;
            if address.is_empty() {
                return malformed("empty RCPT TO address");
            }
            let mut details = RecipientDetails::default();
            for (key, value) in esmtp_params(&rcpt_params) {
                match key.as_str() {
                    "NOTIFY" => details.notify = Notify::parse(&value).unwrap_or_default(),
                    "ORCPT" => details.orcpt = orcpt_decode(&value),
                    _ => {}
                }
            }
            recipients.push(Recipient { address, line: line.kept.clone(), details });
        } else if text.eq_ignore_ascii_case(b"DATA") {
            break line.kept.clone();
        } else {
            return malformed(format!("unexpected envelope line {:?}", String::from_utf8_lossy(text)));
        }
    };
    if recipients.is_empty() {
        return malformed("no RCPT TO before DATA");
    }
    let data_start = offset;
    // The data is not read here: the body reader un-stuffs and checks it in the same pass that
    // sends it, so a large message is read once, and not at all before the 250 to ATRN. Only
    // the end of the file is looked at, so a truncated file is passed over at once.
    if !ends_with_terminator(r, data_start)? {
        return malformed("data not terminated by a line '.'");
    }
    params.smtputf8 |= !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
    let layout = Layout::Bsmtp { mail_line: mail.kept, data_line, data_start };
    Ok(Parsed { sender, recipients, params, layout })
}

/// Does the data that starts at `data_start` end with its terminating `.`
/// line at the end of the file (`.`, `.\n` or `.\r\n` alone on the last line)?
/// Reads the last 4 bytes only, and leaves the read position where it was.
fn ends_with_terminator<R: BufRead + Seek>(r: &mut R, data_start: u64) -> io::Result<bool> {
    let here = r.stream_position()?;
    let file_len = r.seek(SeekFrom::End(0))?;
    let from = file_len.saturating_sub(4).max(data_start);
    r.seek(SeekFrom::Start(from))?;
    let mut tail = Vec::with_capacity(4);
    r.take(4).read_to_end(&mut tail)?;
    r.seek(SeekFrom::Start(here))?;
    let text = tail.strip_suffix(b"\n").unwrap_or(&tail);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let Some(before) = text.strip_suffix(b".") else { return Ok(false) };
    // The dot starts a line: a line end precedes it, or the data is the terminator alone.
    Ok(before.ends_with(b"\n") || (from == data_start && before.is_empty()))
}

/// `<address>` and the ESMTP parameters after it (as text). A quoted
/// local part may contain `>`. qmail's double-bounce sender `#@[]` becomes
/// the null sender.
fn path_argument(arg: &[u8], what: &str) -> Result<(String, String), Rejected> {
    let arg = trim(arg);
    if arg.first() != Some(&b'<') {
        return malformed(format!("{what} argument does not start with '<'"));
    }
    let mut quoted = false;
    let mut escaped = false;
    let mut end = None;
    for (i, &b) in arg.iter().enumerate().skip(1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'>' if !quoted => {
                end = Some(i);
                break;
            }
            _ => {}
        }
    }
    let Some(end) = end else { return malformed(format!("{what} argument has no closing '>'")) };
    let rest = &arg[end + 1..];
    if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
        return malformed(format!("{what}: text right after '>'"));
    }
    let address = address(&arg[1..end], what).map(|a| if a == "#@[]" { String::new() } else { a })?;
    Ok((address, String::from_utf8_lossy(rest).into_owned()))
}

/// An address as UTF-8 without control characters or white space.
fn address(bytes: &[u8], what: &str) -> Result<String, Rejected> {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return malformed(format!("{what} address is not UTF-8"));
    };
    if text.chars().any(|c| c.is_control() || c == ' ' || c == '\t') {
        return malformed(format!("{what} address contains white space or control characters"));
    }
    Ok(text.to_owned())
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

/// A header field being collected (first line plus continuation lines).
struct Field {
    which: Which,
    range: Range<u64>,
    value: Vec<u8>,
    too_long: bool,
    crlf: bool,
}

/// The envelope fields a header block may carry, in order of preference for
/// the recipient (after `ReturnPath`, which gives the sender).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    ReturnPath,
    DeliveredTo,
    XOriginalTo,
    EnvelopeTo,
}

impl Which {
    const ALL: [Which; 4] = [Which::ReturnPath, Which::DeliveredTo, Which::XOriginalTo, Which::EnvelopeTo];

    fn name(self) -> &'static str {
        match self {
            Which::ReturnPath => "Return-Path",
            Which::DeliveredTo => "Delivered-To",
            Which::XOriginalTo => "X-Original-To",
            Which::EnvelopeTo => "Envelope-to",
        }
    }

    /// The field `line` starts, if it is one of ours (names are case-insensitive).
    fn of(line: &[u8]) -> Option<Which> {
        Which::ALL.into_iter().find(|w| {
            let name = w.name().as_bytes();
            starts_with_ci(line, name) && line.get(name.len()) == Some(&b':')
        })
    }
}

/// Scan the header block (up to the first blank line, or the first line that
/// is not a header field) for the first of each envelope field ([`Which`]).
/// Postfix puts `X-Original-To:` between `Return-Path:` and `Delivered-To:`
/// and Exim writes `Return-path:`, so neither position nor case is fixed.
/// The recipients come from the first of `Delivered-To` (a prefix stripped),
/// `X-Original-To` or `Envelope-to` (every address of its list) present; that
/// field and `Return-Path` are not transmitted.
fn parse_headers(r: &mut impl BufRead, first: Line, strip_prefix: Option<&str>) -> Result<Parsed, Rejected> {
    let mut found: [Option<Field>; 4] = [None, None, None, None];
    let mut open: Option<Field> = None;
    let mut line = first;
    let mut offset = 0u64;
    loop {
        let start = offset;
        offset += line.len;
        let continuation = matches!(line.kept.first(), Some(b' ' | b'\t'));
        if continuation {
            if start == 0 {
                break; // a header block cannot begin with a continuation line
            }
            if let Some(field) = open.as_mut() {
                field.range.end = offset;
                field.too_long |= line.truncated() || field.value.len() + line.kept.len() > MAX_ENVELOPE_LINE;
                if !field.too_long {
                    field.value.extend_from_slice(line.text());
                }
            }
        } else {
            close_field(&mut open, &mut found);
            if line.len == 0 || line.is_blank() || !is_field(&line.kept) {
                break;
            }
            let text = line.text();
            if let Some(which) = Which::of(text).filter(|w| found[*w as usize].is_none()) {
                let colon = which.name().len();
                open = Some(Field {
                    which,
                    range: start..offset,
                    value: text[colon + 1..].to_vec(),
                    too_long: line.truncated(),
                    crlf: line.kept.ends_with(b"\r\n"),
                });
            }
        }
        line.read(r)?;
    }
    let [return_path, delivered_to, original_to, envelope_to] = found;
    let Some(rp) = return_path else {
        return malformed("neither BSMTP nor a header block with Return-Path");
    };
    let Some(source) = delivered_to.or(original_to).or(envelope_to) else {
        return malformed("neither BSMTP nor a header block with Delivered-To, X-Original-To or Envelope-to");
    };
    for f in [&rp, &source] {
        if f.too_long {
            return malformed(format!("{} field too long", f.which.name()));
        }
    }
    let (sender, _) = path_argument(&rp.value, "Return-Path")?;
    let addresses = match source.which {
        Which::EnvelopeTo => address_list(&source.value)?,
        _ => vec![field_address(&source.value, source.which.name())?],
    };
    let mut recipients = Vec::with_capacity(addresses.len());
    for address in addresses {
        let address = match (source.which, strip_prefix) {
            (Which::DeliveredTo, Some(prefix)) => match address.strip_prefix(prefix) {
                Some(rest) if !rest.is_empty() => rest.to_owned(),
                _ => return malformed(format!("Delivered-To {address} does not start with prefix {prefix}")),
            },
            _ => address,
        };
        if address.is_empty() {
            return malformed(format!("empty {}", source.which.name()));
        }
        recipients.push(Recipient { address, line: Vec::new(), details: RecipientDetails::default() });
    }
    let mut skip = vec![rp.range, source.range.clone()];
    skip.sort_by_key(|r| r.start);
    // What the sender asked is lost in this form; only UTF-8 addresses show.
    let smtputf8 = !sender.is_ascii() || recipients.iter().any(|r| !r.address.is_ascii());
    let params = MailParams { smtputf8, ..MailParams::default() };
    let source = RecipientField {
        name: source.which.name(),
        range: source.range,
        eol: if source.crlf { "\r\n" } else { "\n" },
    };
    Ok(Parsed { sender, recipients, params, layout: Layout::Headers { skip, source } })
}

/// One address as `Delivered-To:` or `X-Original-To:` hold it, with or
/// without angle brackets.
fn field_address(value: &[u8], what: &str) -> Result<String, Rejected> {
    let value = trim(value);
    let value = match (value.first(), value.last()) {
        (Some(b'<'), Some(b'>')) if value.len() >= 2 => &value[1..value.len() - 1],
        _ => value,
    };
    address(value, what)
}

/// `Envelope-to:`'s comma-separated addresses (Exim writes `a@x, b@y`), each
/// with or without angle brackets. Empty items are skipped; none at all is
/// an error.
fn address_list(value: &[u8]) -> Result<Vec<String>, Rejected> {
    let mut addresses = Vec::new();
    for item in value.split(|&b| b == b',') {
        if trim(item).is_empty() {
            continue;
        }
        let address = field_address(item, "Envelope-to")?;
        if !address.is_empty() {
            addresses.push(address);
        }
    }
    if addresses.is_empty() {
        return malformed("empty Envelope-to");
    }
    Ok(addresses)
}

/// The `Envelope-to:` field that replaces `field` in a rewrite that keeps
/// only `addresses`.
pub fn envelope_to_field(field: &RecipientField, addresses: &[&str]) -> Vec<u8> {
    format!("{}: {}{}", field.name, addresses.join(",\n\t").replace('\n', field.eol), field.eol).into_bytes()
}

fn close_field(open: &mut Option<Field>, found: &mut [Option<Field>; 4]) {
    if let Some(field) = open.take() {
        let slot = &mut found[field.which as usize];
        if slot.is_none() {
            *slot = Some(field);
        }
    }
}

/// `name:` with a name of printable ASCII other than `:` (RFC 5322 ftext).
fn is_field(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b':') {
        Some(colon) if colon > 0 => line[..colon].iter().all(|&b| (33..=126).contains(&b)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bytes(input: &[u8], prefix: Option<&str>) -> Result<Parsed, String> {
        parse(&mut io::BufReader::with_capacity(7, io::Cursor::new(input)), prefix).map_err(|e| e.to_string())
    }

    /// The bytes a headers-mode body transmits: everything outside `skip`.
    fn transmitted(text: &[u8], p: &Parsed) -> Vec<u8> {
        let Layout::Headers { skip, .. } = &p.layout else { panic!("not headers mode") };
        (0..text.len()).filter(|&i| !skip.iter().any(|r| r.contains(&(i as u64)))).map(|i| text[i]).collect()
    }

    fn addresses(p: &Parsed) -> Vec<&str> {
        p.recipients.iter().map(|r| r.address.as_str()).collect()
    }

    #[test]
    fn bsmtp_envelope_with_lf_and_crlf() {
        for eol in ["\n", "\r\n"] {
            let text = format!(
                "mail from:<bob@sender.example> SIZE=10 BODY=8BITMIME{eol}RCPT TO:<u1@a.example>{eol}\
                 RCPT TO:<\"odd>name\"@b.example>{eol}DATA{eol}Subject: x{eol}{eol}..dot{eol}.{eol}"
            );
            let p = parse_bytes(text.as_bytes(), Some("ignored-")).unwrap();
            assert_eq!(p.sender, "bob@sender.example");
            assert_eq!(addresses(&p), ["u1@a.example", "\"odd>name\"@b.example"]);
            assert_eq!(p.recipients[0].line, format!("RCPT TO:<u1@a.example>{eol}").into_bytes());
            let Layout::Bsmtp { mail_line, data_line, data_start } = p.layout else { panic!("not bsmtp") };
            assert!(mail_line.starts_with(b"mail from:<bob@") && mail_line.ends_with(eol.as_bytes()));
            assert_eq!(data_line, format!("DATA{eol}").into_bytes());
            assert_eq!(
                &text.as_bytes()[data_start as usize..],
                format!("Subject: x{eol}{eol}..dot{eol}.{eol}").as_bytes()
            );
        }
    }

    #[test]
    fn bsmtp_null_and_double_bounce_senders() {
        for sender in ["<>", "<#@[]>"] {
            let text = format!("MAIL FROM:{sender}\nRCPT TO:<a@b.example>\nDATA\n.\n");
            assert_eq!(parse_bytes(text.as_bytes(), None).unwrap().sender, "");
        }
    }

    #[test]
    fn bsmtp_refuses_what_it_cannot_deliver_whole() {
        let cases = [
            ("MAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nbody\n", "not terminated"),
            // Two messages run together, the second truncated. Run together whole, they are
            // refused while streaming (body.rs), before the final dot.
            ("MAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nbody\n.\nMAIL FROM:<x@y>\n", "not terminated"),
            ("MAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nbody\n..\n", "not terminated"),
            ("MAIL FROM:<a@b>\nRCPT TO:<c@d>\nbody\n.\n", "unexpected envelope line"),
            ("MAIL FROM:<a@b>\nDATA\n.\n", "no RCPT TO"),
            ("MAIL FROM:a@b\nRCPT TO:<c@d>\nDATA\n.\n", "does not start with '<'"),
            ("MAIL FROM:<a@b\nRCPT TO:<c@d>\nDATA\n.\n", "no closing"),
            ("MAIL FROM:<a@b>\nRCPT TO:<c@d>\n", "before DATA"),
            ("MAIL FROM:<a@b>\nRCPT TO:<>\nDATA\n.\n", "empty RCPT"),
        ];
        for (input, why) in cases {
            let err = parse_bytes(input.as_bytes(), None).unwrap_err();
            assert!(err.contains(why), "{input:?}: {err}");
        }
    }

    #[test]
    fn a_dot_line_without_newline_still_terminates() {
        let p = parse_bytes(b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\nx\n.", None).unwrap();
        assert_eq!(addresses(&p), ["c@d"]);
    }

    #[test]
    fn qmail_headers_lines_one_and_two() {
        let text = b"Return-Path: <alice@sender.example>\nDelivered-To: autoturn-1.2.3.4-bob@virt.dom\nSubject: hi\n\nbody\n";
        let p = parse_bytes(text, Some("autoturn-1.2.3.4-")).unwrap();
        assert_eq!(p.sender, "alice@sender.example");
        assert_eq!(addresses(&p), ["bob@virt.dom"]);
        assert_eq!(transmitted(text, &p), b"Subject: hi\n\nbody\n");
    }

    #[test]
    fn postfix_and_exim_header_orders_with_crlf() {
        let text = b"X-Top: 1\r\nReturn-path: <>\r\nX-Original-To: bob@virt.dom\r\ndelivered-to: <bob@virt.dom>\r\n\r\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!((p.sender.as_str(), addresses(&p)), ("", vec!["bob@virt.dom"]));
        assert_eq!(transmitted(text, &p), b"X-Top: 1\r\nX-Original-To: bob@virt.dom\r\n\r\n");
    }

    #[test]
    fn postfix_x_original_to_alone_gives_the_recipient_and_is_consumed() {
        let text = b"Return-Path: <alice@sender.example>\nX-Original-To: bob@virt.dom\nSubject: s\n\nbody\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!((p.sender.as_str(), addresses(&p)), ("alice@sender.example", vec!["bob@virt.dom"]));
        assert_eq!(transmitted(text, &p), b"Subject: s\n\nbody\n");
    }

    #[test]
    fn exim_envelope_to_lists_every_address_and_is_consumed() {
        // What Exim 4.96's appendfile writes with return_path_add and envelope_to_add.
        let text = b"Return-path: <alice@sender.example>\r\nEnvelope-to: bob@virt.dom, <Carol@Virt.Dom>,\r\n\tdan@other.example\r\nDelivery-date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!(addresses(&p), ["bob@virt.dom", "Carol@Virt.Dom", "dan@other.example"]);
        assert_eq!(transmitted(text, &p), b"Delivery-date: Thu, 26 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n");
        let Layout::Headers { source, .. } = &p.layout else { panic!("not headers mode") };
        assert_eq!(source.name, "Envelope-to");
        assert_eq!(
            envelope_to_field(source, &["a@x.example", "b@x.example"]),
            b"Envelope-to: a@x.example,\r\n\tb@x.example\r\n"
        );
        let again = [
            b"Return-path: <>\r\n".as_slice(),
            &envelope_to_field(source, &["a@x.example", "b@x.example"]),
            b"\r\n",
        ]
        .concat();
        assert_eq!(addresses(&parse_bytes(&again, None).unwrap()), ["a@x.example", "b@x.example"]);
    }

    #[test]
    fn delivered_to_wins_over_x_original_to_and_envelope_to() {
        let text = b"Return-Path: <>\nEnvelope-to: a@virt.dom, b@virt.dom\nX-Original-To: alias@virt.dom\nDelivered-To: real@virt.dom\n\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!(addresses(&p), ["real@virt.dom"]);
        assert_eq!(
            transmitted(text, &p),
            b"Envelope-to: a@virt.dom, b@virt.dom\nX-Original-To: alias@virt.dom\n\n"
        );
        let text = b"Return-Path: <>\nEnvelope-to: a@virt.dom\nX-Original-To: alias@virt.dom\n\n";
        assert_eq!(addresses(&parse_bytes(text, None).unwrap()), ["alias@virt.dom"]);
    }

    #[test]
    fn envelope_to_without_addresses_or_with_bad_ones_is_refused() {
        for (text, why) in [
            (&b"Return-path: <>\nEnvelope-to: , ,\n\n"[..], "empty Envelope-to"),
            (b"Return-path: <>\nEnvelope-to: a b@c\n\n", "white space"),
            (b"Return-path: <>\nSubject: x\n\n", "Envelope-to"),
        ] {
            let err = parse_bytes(text, None).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
    }

    #[test]
    fn envelope_to_parses_the_same_fed_byte_by_byte() {
        let text = b"Return-path: <a@b.example>\nEnvelope-to: x@virt.dom,\n y@virt.dom\n\nbody\n";
        let whole = parse(&mut io::BufReader::new(io::Cursor::new(&text[..])), None).unwrap();
        let bytewise = parse(&mut io::BufReader::with_capacity(1, io::Cursor::new(&text[..])), None).unwrap();
        assert_eq!(whole, bytewise);
        assert_eq!(addresses(&whole), ["x@virt.dom", "y@virt.dom"]);
    }

    #[test]
    fn only_the_first_of_each_header_is_consumed() {
        let text =
            b"Return-Path: <#@[]>\nDelivered-To: new@virt.dom\nDelivered-To: old@elsewhere.example\n\nx";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!((p.sender.as_str(), addresses(&p)), ("", vec!["new@virt.dom"]));
        assert_eq!(transmitted(text, &p), b"Delivered-To: old@elsewhere.example\n\nx");
    }

    #[test]
    fn folded_fields_are_consumed_whole() {
        let text = b"Return-Path:\n <a@b.example>\nDelivered-To: c@d.example\nX: y\n\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!(p.sender, "a@b.example");
        assert_eq!(transmitted(text, &p), b"X: y\n\n");
    }

    #[test]
    fn folded_fields_in_between_do_not_end_the_header_block() {
        let text =
            b"Return-Path: <a@b.example>\nReceived: from x\n\tby y\nDelivered-To: c@d.example\n\nbody\n";
        let p = parse_bytes(text, None).unwrap();
        assert_eq!(addresses(&p), ["c@d.example"]);
        assert_eq!(transmitted(text, &p), b"Received: from x\n\tby y\n\nbody\n");
        assert!(parse_bytes(b" Return-Path: <a@b>\nDelivered-To: c@d\n\n", None).is_err());
    }

    #[test]
    fn headers_in_the_body_do_not_count() {
        let err = parse_bytes(b"Return-Path: <a@b>\nSubject: x\n\nDelivered-To: c@d\n", None).unwrap_err();
        assert!(err.contains("Delivered-To"), "{err}");
        let err = parse_bytes(b"From someone\nReturn-Path: <a@b>\nDelivered-To: c@d\n\n", None).unwrap_err();
        assert!(err.contains("Return-Path"), "{err}");
    }

    #[test]
    fn strip_prefix_is_case_sensitive_and_required() {
        let text = b"Return-Path: <a@b>\nDelivered-To: Example.com-joe@example.com\n\n";
        let err = parse_bytes(text, Some("example.com-")).unwrap_err();
        assert!(err.contains("does not start with prefix"), "{err}");
        let text = b"Return-Path: <a@b>\nDelivered-To: example.com-joe@example.com\n\n";
        assert_eq!(addresses(&parse_bytes(text, Some("example.com-")).unwrap()), ["joe@example.com"]);
        let err = parse_bytes(b"Return-Path: <a@b>\nDelivered-To: example.com-\n\n", Some("example.com-"))
            .unwrap_err();
        assert!(err.contains("prefix"), "{err}");
    }

    #[test]
    fn empty_and_binary_files_are_rejected() {
        assert!(parse_bytes(b"", None).unwrap_err().contains("empty"));
        assert!(parse_bytes(b"\x00\x01\x02", None).is_err());
        assert!(parse_bytes(b"Return-Path: <a\xff@b>\nDelivered-To: c@d\n\n", None)
            .unwrap_err()
            .contains("UTF-8"));
    }

    #[test]
    fn overlong_envelope_fields_are_rejected_not_truncated() {
        let long = "x".repeat(MAX_ENVELOPE_LINE);
        let text = format!("Return-Path: <a@b>\nDelivered-To: {long}@d\n\n");
        assert!(parse_bytes(text.as_bytes(), None).unwrap_err().contains("too long"));
        let text = format!("Return-Path: <a@b>\nX-Long: {long}\nDelivered-To: c@d\n\n");
        assert_eq!(addresses(&parse_bytes(text.as_bytes(), None).unwrap()), ["c@d"]);
    }
}
