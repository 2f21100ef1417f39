//! The reversed side of the protocol, where the customer is the server: its replies in, our
//! mail commands and DATA encoding out.
//!
//! Owns: parsing the customer's replies (bounded, including multi-line EHLO replies and the
//! capabilities in them), formatting MAIL FROM and RCPT TO with their parameters, and the body
//! encoding of the DATA phase (line-end normalisation and dot-stuffing). Does not: parse the
//! customer's commands before the turnaround (that is [`super::command`]) or decide what a reply
//! means for a recipient (that is `crate::verdict`).

use super::{printable, Line, LineSplitter};
use std::fmt;

/// Longest reply line we accept from the customer in the reversed state, in octets including
/// the line end. RFC 5321 asks for 512; real servers send longer texts, so we are generous.
pub const MAX_REPLY_LINE: usize = 4096;

/// Most lines we accept in one (multi-line) reply; more is treated like an over-long line so a
/// peer cannot make us buffer without bound.
pub const MAX_REPLY_LINES: usize = 256;

// ---------------------------------------------------------------------------------------------
// The customer's replies (reversed state)
// ---------------------------------------------------------------------------------------------

/// A reply from the customer in the reversed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The text of each line, after the code and its separator (lossily decoded as UTF-8).
    pub lines: Vec<String>,
}

impl Reply {
    /// The class: the first digit of the code (2, 3, 4 or 5).
    pub fn class(&self) -> u8 {
        (self.code / 100) as u8
    }

    /// `"code line1 / line2 ..."` as one log-safe line (control characters replaced by `?`).
    pub fn text(&self) -> String {
        let joined = self.lines.join(" / ");
        let text = format!("{} {}", self.code, printable(&joined));
        text.trim_end().to_string()
    }
}

/// Why the customer's reply could not be understood. Either way the stream is out of step and
/// the session should give up on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line that is not a reply line, or a code that changes within a multi-line reply: a
    /// description with a log-safe excerpt of the line.
    Malformed(String),
    /// A line longer than [`MAX_REPLY_LINE`], or more than [`MAX_REPLY_LINES`] lines.
    TooLong,
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::Malformed(why) => write!(f, "malformed reply: {why}"),
            ReplyError::TooLong => f.write_str("reply too long"),
        }
    }
}

impl std::error::Error for ReplyError {}

/// Parses the customer's replies: `"250-..."` continuation lines and a final `"250 ..."` (or a
/// bare `"250"`), ended by CRLF or a bare LF, lines up to [`MAX_REPLY_LINE`] octets.
#[derive(Debug, Clone)]
pub struct ReplyParser {
    splitter: LineSplitter,
    code: Option<u16>,
    lines: Vec<String>,
}

impl Default for ReplyParser {
    fn default() -> Self {
        Self::new()
    }
}

/// A log-safe excerpt of a received line for error messages.
fn excerpt(line: &[u8]) -> String {
    const MAX: usize = 80;
    let text = printable(&String::from_utf8_lossy(&line[..line.len().min(MAX)]));
    if line.len() > MAX {
        format!("{text}...")
    } else {
        text
    }
}

impl ReplyParser {
    pub fn new() -> Self {
        ReplyParser { splitter: LineSplitter::new(MAX_REPLY_LINE), code: None, lines: Vec::new() }
    }

    /// Consume bytes up to the end of one complete reply; returns (consumed, `Some(result)`) when
    /// a reply completed (or failed). Bytes after that reply are left for the next call. After an
    /// error the parser starts afresh with the next line.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Result<Reply, ReplyError>>) {
        let mut consumed = 0;
        while consumed < input.len() {
            let (n, line) = self.splitter.feed(&input[consumed..]);
            consumed += n;
            let result = match line {
                None => None,
                Some(Line::TooLong) => Some(Err(ReplyError::TooLong)),
                Some(Line::Complete(line)) => self.line(&line),
            };
            if let Some(result) = result {
                if result.is_err() {
                    self.code = None;
                    self.lines.clear();
                }
                return (consumed, Some(result));
            }
        }
        (consumed, None)
    }

    /// True when part of a reply has been received (useful at end of input).
    pub fn has_partial_reply(&self) -> bool {
        self.code.is_some() || self.splitter.has_partial_line()
    }

    fn line(&mut self, line: &[u8]) -> Option<Result<Reply, ReplyError>> {
        let malformed = |why: &str| Some(Err(ReplyError::Malformed(format!("{why}: {}", excerpt(line)))));
        let digits_ok = line.len() >= 3
            && (b'2'..=b'5').contains(&line[0])
            && line[1].is_ascii_digit()
            && line[2].is_ascii_digit();
        if !digits_ok {
            return malformed("not a reply line");
        }
        let code =
            u16::from(line[0] - b'0') * 100 + u16::from(line[1] - b'0') * 10 + u16::from(line[2] - b'0');
        let (last, text) = match line.get(3) {
            None => (true, &line[3..]),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return malformed("not a reply line"),
        };
        if let Some(expected) = self.code {
            if expected != code {
                return malformed(&format!("code {code} inside a {expected} reply"));
            }
        }
        if self.lines.len() >= MAX_REPLY_LINES {
            return Some(Err(ReplyError::TooLong));
        }
        self.code = Some(code);
        self.lines.push(String::from_utf8_lossy(text).into_owned());
        if !last {
            return None;
        }
        self.code = None;
        Some(Ok(Reply { code, lines: std::mem::take(&mut self.lines) }))
    }
}

/// The SMTP service extensions the customer offers that we use (or must avoid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub pipelining: bool,
    pub eightbitmime: bool,
    /// `Some(n)`: SIZE with a limit of n octets; `Some(0)`: SIZE without a (usable) limit.
    pub size: Option<u64>,
    pub smtputf8: bool,
    pub starttls: bool,
    pub chunking: bool,
    /// DSN (RFC 3461): NOTIFY, ORCPT, RET and ENVID are passed on.
    pub dsn: bool,
    /// `LIMITS RCPTMAX=n` (RFC 9422): recipients per transaction.
    pub rcptmax: Option<usize>,
    /// `LIMITS MAILMAX=n` (RFC 9422): transactions per session.
    pub mailmax: Option<usize>,
}

impl Capabilities {
    /// The capabilities in an EHLO reply. Keywords are case-insensitive; the first line is the
    /// greeting name and is skipped. A reply that is not 2xx offers nothing.
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        if reply.class() != 2 {
            return caps;
        }
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eightbitmime = true,
                "SIZE" => {
                    let limit = words.next().and_then(|n| n.parse::<u64>().ok());
                    caps.size = Some(limit.unwrap_or(0));
                }
                "SMTPUTF8" => caps.smtputf8 = true,
                "STARTTLS" => caps.starttls = true,
                "CHUNKING" => caps.chunking = true,
                "DSN" => caps.dsn = true,
                "LIMITS" => {
                    for limit in words {
                        let Some((name, value)) = limit.split_once('=') else { continue };
                        // A limit of 0 or one we cannot read is ignored (RFC 9422 §3).
                        let value = value.parse::<usize>().ok().filter(|&n| n > 0);
                        match name.to_ascii_uppercase().as_str() {
                            "RCPTMAX" => caps.rcptmax = value,
                            "MAILMAX" => caps.mailmax = value,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        caps
    }
}

// ---------------------------------------------------------------------------------------------
// Sending mail
// ---------------------------------------------------------------------------------------------

/// Streaming body encoder for DATA: normalises bare LF and bare CR to CRLF and dot-stuffs lines
/// beginning with '.', across arbitrary chunk boundaries (a CR at the end of one chunk and an LF
/// at the start of the next are ONE line end). Reusable: `finish` resets it for the next message.
#[derive(Debug, Clone)]
pub struct DotStuffer {
    at_line_start: bool,
    pending_cr: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl DotStuffer {
    pub fn new() -> Self {
        DotStuffer { at_line_start: true, pending_cr: false }
    }

    /// Append the encoding of `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + 2);
        let mut i = 0;
        while i < input.len() {
            if self.pending_cr {
                self.pending_cr = false;
                out.extend_from_slice(b"\r\n");
                self.at_line_start = true;
                if input[i] == b'\n' {
                    i += 1;
                    continue;
                }
            }
            if self.at_line_start && input[i] == b'.' {
                out.push(b'.');
            }
            let rest = &input[i..];
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    self.at_line_start = false;
                    i = input.len();
                }
                Some(p) => {
                    out.extend_from_slice(&rest[..p]);
                    if rest[p] == b'\n' {
                        out.extend_from_slice(b"\r\n");
                        self.at_line_start = true;
                    } else {
                        if p > 0 {
                            self.at_line_start = false;
                        }
                        self.pending_cr = true;
                    }
                    i += p + 1;
                }
            }
        }
    }

    /// End the body: a CRLF if the last line was unterminated (or ended in a lone CR), then
    /// `".\r\n"`. Resets the encoder.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr || !self.at_line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        *self = DotStuffer::new();
    }
}

/// Remove control characters from an address so a queue entry can never inject a command line.
/// (A well-formed address has none; the relay should check addresses before it gets here.)
fn clean_address(address: &str) -> String {
    address.chars().filter(|c| !c.is_control()).collect()
}

/// `"MAIL FROM:<s> SIZE=n BODY=8BITMIME\r\n"`; an empty sender gives `"<>"`. SIZE only with
/// `Some(n)`, BODY=8BITMIME only when `body_8bitmime`.
pub fn mail_from(sender: &str, params: &[String]) -> String {
    let mut out = format!("MAIL FROM:<{}>", clean_address(sender));
    push_params(&mut out, params);
    out
}

/// `"RCPT TO:<a> PARAM...\r\n"`.
pub fn rcpt_to(address: &str, params: &[String]) -> String {
    let mut out = format!("RCPT TO:<{}>", clean_address(address));
    push_params(&mut out, params);
    out
}

/// ESMTP parameters (ours: keywords, numbers, xtext) and the line end; any
/// white space or control character in one is dropped, so a parameter can
/// never split the command.
fn push_params(out: &mut String, params: &[String]) {
    for param in params {
        out.push(' ');
        out.extend(param.chars().filter(|c| !c.is_whitespace() && !c.is_control()));
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::chunks::splits;
    use super::*;

    /// Drive a ReplyParser over `input` split into `sizes`, collecting every result.
    fn parse_replies(input: &[u8], sizes: &[usize]) -> Vec<Result<Reply, ReplyError>> {
        let mut parser = ReplyParser::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for &size in sizes {
            let mut chunk = &input[offset..offset + size];
            offset += size;
            while !chunk.is_empty() {
                let (n, result) = parser.feed(chunk);
                assert!(n <= chunk.len());
                if let Some(result) = result {
                    assert_eq!(chunk[n - 1], b'\n', "a reply completes exactly at its LF");
                    out.push(result);
                } else {
                    assert_eq!(n, chunk.len(), "without a result, all input is consumed");
                }
                chunk = &chunk[n..];
            }
        }
        out
    }

    fn r(code: u16, lines: &[&str]) -> Result<Reply, ReplyError> {
        Ok(Reply { code, lines: lines.iter().map(|s| s.to_string()).collect() })
    }

    fn malformed() -> Result<Reply, ReplyError> {
        Err(ReplyError::Malformed(String::new()))
    }

    /// Compare, treating any Malformed text as equal when the expectation's text is empty.
    fn same_reply(got: &[Result<Reply, ReplyError>], want: &[Result<Reply, ReplyError>]) -> bool {
        got.len() == want.len()
            && got.iter().zip(want).all(|(g, w)| match (g, w) {
                (Err(ReplyError::Malformed(_)), Err(ReplyError::Malformed(w))) if w.is_empty() => true,
                _ => g == w,
            })
    }

    #[test]
    fn reply_parser_table() {
        let too_long = format!("250 {}\r\n220 next\r\n", "x".repeat(MAX_REPLY_LINE));
        let many_lines = format!("{}250 end\r\n", "250-x\r\n".repeat(MAX_REPLY_LINES + 1));
        let cases: Vec<(String, Vec<Result<Reply, ReplyError>>)> = vec![
            ("220 customer.example ESMTP\r\n".into(), vec![r(220, &["customer.example ESMTP"])]),
            ("220 lf only\n".into(), vec![r(220, &["lf only"])]),
            ("250\r\n".into(), vec![r(250, &[""])]),
            ("354 \r\n".into(), vec![r(354, &[""])]),
            (
                "250-customer.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n".into(),
                vec![r(250, &["customer.example", "PIPELINING", "SIZE 1000"])],
            ),
            ("250-a\n250-b\r\n250 c\n".into(), vec![r(250, &["a", "b", "c"])]),
            (
                "250 ok\r\n550 5.1.1 no such user\r\n451-try\r\n451 later\r\n".into(),
                vec![r(250, &["ok"]), r(550, &["5.1.1 no such user"]), r(451, &["try", "later"])],
            ),
            ("250 café\r\n".into(), vec![r(250, &["café"])]),
            ("25 x\r\n".into(), vec![malformed()]),
            ("abc\r\n".into(), vec![malformed()]),
            ("\r\n".into(), vec![malformed()]),
            ("2500 x\r\n".into(), vec![malformed()]),
            ("250x\r\n".into(), vec![malformed()]),
            ("150 x\r\n".into(), vec![malformed()]),
            ("650 x\r\n".into(), vec![malformed()]),
            ("250-a\r\n251 b\r\n250 ok\r\n".into(), vec![malformed(), r(250, &["ok"])]),
            ("250-a\r\nxyz\r\n".into(), vec![malformed()]),
            (too_long, vec![Err(ReplyError::TooLong), r(220, &["next"])]),
            (many_lines, vec![Err(ReplyError::TooLong), r(250, &["end"])]),
            ("250-incomplete\r\n".into(), vec![]),
        ];
        for (input, want) in cases {
            for sizes in splits(input.len()) {
                let got = parse_replies(input.as_bytes(), &sizes);
                assert!(
                    same_reply(&got, &want),
                    "{:?} split {sizes:?}: got {got:?}, want {want:?}",
                    &input[..input.len().min(60)]
                );
            }
        }
    }

    #[test]
    fn reply_parser_stops_after_one_reply() {
        let mut p = ReplyParser::new();
        let input = b"250-a\r\n250 b\r\n220 next";
        let (n, result) = p.feed(input);
        assert_eq!(n, 14);
        assert_eq!(result, Some(r(250, &["a", "b"])));
        assert!(!p.has_partial_reply());
        assert_eq!(p.feed(&input[n..]), (8, None));
        assert!(p.has_partial_reply());
    }

    #[test]
    fn malformed_reply_text_is_log_safe() {
        let mut p = ReplyParser::new();
        let (_, result) = p.feed(b"xx\x1b[31m\r\n");
        match result {
            Some(Err(ReplyError::Malformed(text))) => {
                assert!(!text.chars().any(char::is_control), "{text:?}");
                assert!(text.contains("xx?[31m"), "{text:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reply_class_and_text() {
        let cases = [
            (r(250, &["ok"]), 2, "250 ok"),
            (r(354, &["go ahead"]), 3, "354 go ahead"),
            (r(451, &["a", "b"]), 4, "451 a / b"),
            (r(550, &["evil\r\nline", "x\u{7f}"]), 5, "550 evil??line / x?"),
            (r(250, &[""]), 2, "250"),
        ];
        for (reply, class, text) in cases {
            let reply = reply.unwrap();
            assert_eq!(reply.class(), class);
            assert_eq!(reply.text(), text);
        }
    }

    #[test]
    fn capabilities_table() {
        let caps = |pipelining, eightbitmime, size, smtputf8, starttls, chunking| Capabilities {
            pipelining,
            eightbitmime,
            size,
            smtputf8,
            starttls,
            chunking,
            ..Capabilities::default()
        };
        let limits =
            |dsn, rcptmax, mailmax| Capabilities { dsn, rcptmax, mailmax, ..Capabilities::default() };
        let cases: Vec<(Reply, Capabilities)> = vec![
            (r(250, &["x", "DSN", "LIMITS RCPTMAX=3 MAILMAX=2"]).unwrap(), limits(true, Some(3), Some(2))),
            (
                r(250, &["x", "limits mailmax=5 rcptdomainmax=1 rcptmax=0"]).unwrap(),
                limits(false, None, Some(5)),
            ),
            (r(250, &["x", "LIMITS RCPTMAX=many MAILMAX"]).unwrap(), limits(false, None, None)),
            (r(250, &["customer.example"]).unwrap(), Capabilities::default()),
            (r(250, &["PIPELINING greeting name is skipped"]).unwrap(), Capabilities::default()),
            (
                r(
                    250,
                    &[
                        "customer.example Hello",
                        "PIPELINING",
                        "8BITMIME",
                        "SIZE 10240000",
                        "SMTPUTF8",
                        "STARTTLS",
                        "CHUNKING",
                        "DSN",
                        "AUTH PLAIN",
                    ],
                )
                .unwrap(),
                Capabilities { dsn: true, ..caps(true, true, Some(10240000), true, true, true) },
            ),
            (
                r(250, &["x", "pipelining", "8bitmime", "size"]).unwrap(),
                caps(true, true, Some(0), false, false, false),
            ),
            (r(250, &["x", "Size 0", "Chunking"]).unwrap(), caps(false, false, Some(0), false, false, true)),
            (
                r(250, &["x", "SIZE lots", "", "  "]).unwrap(),
                caps(false, false, Some(0), false, false, false),
            ),
            (r(250, &["x", "PIPELININGX", "X8BITMIME"]).unwrap(), Capabilities::default()),
            (r(502, &["x", "PIPELINING"]).unwrap(), Capabilities::default()),
        ];
        for (reply, want) in cases {
            assert_eq!(Capabilities::from_ehlo(&reply), want, "{reply:?}");
        }
    }

    fn stuff(input: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut stuffer = DotStuffer::new();
        let mut out = Vec::new();
        let mut offset = 0;
        for &size in sizes {
            stuffer.encode(&input[offset..offset + size], &mut out);
            offset += size;
        }
        stuffer.finish(&mut out);
        out
    }

    #[test]
    fn dot_stuffing_table() {
        let cases: Vec<(&[u8], &[u8])> = vec![
            (b"", b".\r\n"),
            (b"a\r\n", b"a\r\n.\r\n"),
            (b"a", b"a\r\n.\r\n"),
            (b"a\n", b"a\r\n.\r\n"),
            (b"a\r", b"a\r\n.\r\n"),
            (b"\r", b"\r\n.\r\n"),
            (b"\n", b"\r\n.\r\n"),
            (b"a\nb\rc\r\nd", b"a\r\nb\r\nc\r\nd\r\n.\r\n"),
            (b"\r\r\n", b"\r\n\r\n.\r\n"),
            (b"\n\r", b"\r\n\r\n.\r\n"),
            (b".", b"..\r\n.\r\n"),
            (b".\r\n", b"..\r\n.\r\n"),
            (b"..x\r\n", b"...x\r\n.\r\n"),
            (b"a.b\r\n.c\n.\r.\r\n", b"a.b\r\n..c\r\n..\r\n..\r\n.\r\n"),
            (b"x\r\n.\r\nQUIT\r\n", b"x\r\n..\r\nQUIT\r\n.\r\n"),
            (b" .x\r\n", b" .x\r\n.\r\n"),
            (b"\r.", b"\r\n..\r\n.\r\n"),
            (b"\xff\x00\xfe\r\n", b"\xff\x00\xfe\r\n.\r\n"),
        ];
        for (input, want) in cases {
            for sizes in splits(input.len()) {
                assert_eq!(
                    stuff(input, &sizes),
                    want,
                    "{:?} split {sizes:?}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn dot_stuffer_resets_after_finish() {
        let mut s = DotStuffer::new();
        let mut out = Vec::new();
        s.encode(b"first\r", &mut out);
        s.finish(&mut out);
        s.encode(b".second", &mut out);
        s.finish(&mut out);
        assert_eq!(out, b"first\r\n.\r\n..second\r\n.\r\n");
    }

    #[test]
    fn envelope_commands() {
        let cases = [
            (mail_from("a@b.example", &[]), "MAIL FROM:<a@b.example>\r\n"),
            (mail_from("", &[]), "MAIL FROM:<>\r\n"),
            (mail_from("a@b.example", &["SIZE=1234".into()]), "MAIL FROM:<a@b.example> SIZE=1234\r\n"),
            (
                mail_from("", &["SIZE=0".into(), "BODY=8BITMIME".into()]),
                "MAIL FROM:<> SIZE=0 BODY=8BITMIME\r\n",
            ),
            (mail_from("a@b\r\nRCPT TO:<x@y>", &[]), "MAIL FROM:<a@bRCPT TO:<x@y>>\r\n"),
            (mail_from("a@b", &["ENVID=x\r\nRSET y".into()]), "MAIL FROM:<a@b> ENVID=xRSETy\r\n"),
            (rcpt_to("c@d.example", &[]), "RCPT TO:<c@d.example>\r\n"),
            (rcpt_to("c@d\n.example", &["NOTIFY=NEVER".into()]), "RCPT TO:<c@d.example> NOTIFY=NEVER\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
