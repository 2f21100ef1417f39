//! Sans-IO SMTP/ODMR protocol: bytes in, values out.
//!
//! Owns: splitting the customer's byte stream into bounded command lines, parsing the commands
//! of the initial and authenticated states (EHLO, AUTH, ATRN, ...), the RFC 2645 ATRN domain
//! syntax, formatting our replies, parsing the customer's replies in the reversed state (including
//! multi-line EHLO replies and the capabilities in them), and the body encoding of the DATA phase
//! (line-end normalisation and dot-stuffing).
//!
//! Does not: read or write sockets, keep session state, know about time-outs, authentication
//! secrets, queues or locks. Every type here is fed bytes or strings and returns values; the
//! streaming types (`LineSplitter`, `ReplyParser`, `DotStuffer`) give the same result however
//! their input is split into chunks.

use std::fmt;

/// Longest command line we accept, in octets including the CRLF (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Longest AUTH continuation line (a SASL response after `334`) we accept, in octets including
/// the CRLF (RFC 4954 section 4).
pub const MAX_AUTH_LINE: usize = 12288;

/// Longest reply line we accept from the customer in the reversed state, in octets including
/// the line end. RFC 5321 asks for 512; real servers send longer texts, so we are generous.
pub const MAX_REPLY_LINE: usize = 4096;

/// Most lines we accept in one (multi-line) reply; more is treated like an over-long line so a
/// peer cannot make us buffer without bound.
pub const MAX_REPLY_LINES: usize = 256;

// ---------------------------------------------------------------------------------------------
// Line splitting
// ---------------------------------------------------------------------------------------------

/// One line produced by [`LineSplitter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its CRLF (or bare LF).
    Complete(Vec<u8>),
    /// The line was longer than the limit; its bytes were discarded.
    TooLong,
}

/// Splits a byte stream into lines, bounded.
///
/// A line ends at LF; a CR immediately before that LF is removed as well (a bare LF is accepted
/// as a line end, as most MTAs do). A line longer than `max` octets (counting its line end) is
/// reported once as [`Line::TooLong`] when its LF arrives, and its bytes are discarded; the
/// session replies 500 and continues with the next line.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    /// Octets of the current line seen so far (stored or discarded), without the LF.
    seen: usize,
    overflow: bool,
}

impl LineSplitter {
    /// A splitter for lines of at most `max` octets including the line end.
    pub fn new(max: usize) -> Self {
        LineSplitter { max, buf: Vec::new(), seen: 0, overflow: false }
    }

    /// Change the limit for the lines that follow (e.g. [`MAX_AUTH_LINE`] for the one line after
    /// a `334`, then [`MAX_COMMAND_LINE`] again). Meant to be called between lines.
    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Consume bytes from `input` up to and including the first LF; returns (bytes consumed,
    /// `Some(line)` if a line completed). Never buffers more than `max` bytes.
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<Line>) {
        let lf = input.iter().position(|&b| b == b'\n');
        let chunk = match lf {
            Some(i) => &input[..i],
            None => input,
        };
        if !self.overflow {
            // `+ 1` for the LF that must still come.
            if self.seen + chunk.len() + 1 > self.max {
                self.overflow = true;
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(chunk);
            }
        }
        self.seen = self.seen.saturating_add(chunk.len());
        let Some(i) = lf else {
            return (input.len(), None);
        };
        let line = if self.overflow {
            Line::TooLong
        } else {
            let mut line = std::mem::take(&mut self.buf);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Complete(line)
        };
        self.seen = 0;
        self.overflow = false;
        (i + 1, Some(line))
    }

    /// True when part of a line has been received but not yet its LF (useful at end of input).
    pub fn has_partial_line(&self) -> bool {
        self.seen > 0
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A command of the initial or authenticated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO with its argument (the rest of the line, trimmed).
    Ehlo(String),
    /// HELO with its argument (the rest of the line, trimmed).
    Helo(String),
    /// AUTH mechanism \[initial-response\].
    Auth {
        /// The mechanism name, upper-cased.
        mechanism: String,
        /// The initial response exactly as sent (base64, or `=` for an empty one).
        initial_response: Option<String>,
    },
    /// ATRN with its domains: lower-cased, validated, de-duplicated, order kept; empty = bare ATRN.
    Atrn(Vec<String>),
    Quit,
    Rset,
    Noop,
    Help,
    StartTls,
    /// A command we recognise but refuse with 502; the upper-cased verb.
    NotImplemented(String),
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb (500).
    Unknown,
    /// Syntax error in the parameters (501) with this reply text.
    Syntax(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown => f.write_str("command unrecognized"),
            CommandError::Syntax(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for CommandError {}

/// Verbs that are part of SMTP but have no place in an ODMR session: refused with 502.
const NOT_IMPLEMENTED: &[&str] =
    &["MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "ETRN", "TURN", "SEND", "SOML", "SAML"];

/// Parse one command line (without its CRLF). Verbs are case-insensitive and separated from
/// their parameters by spaces or tabs; surplus whitespace around parameters is ignored.
///
/// A NUL, any other control character (except HT), or invalid UTF-8 is a syntax error (501).
/// EHLO and HELO need an argument. QUIT, RSET and STARTTLS take none (RFC 5321, RFC 3207);
/// NOOP and HELP ignore theirs.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::Syntax("NUL character in command"));
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("command is not valid UTF-8"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::Syntax("control character in command"));
    }
    let (verb, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_matches([' ', '\t'])),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" if args.is_empty() => Err(CommandError::Syntax("EHLO requires a domain")),
        "EHLO" => Ok(Command::Ehlo(args.to_string())),
        "HELO" if args.is_empty() => Err(CommandError::Syntax("HELO requires a domain")),
        "HELO" => Ok(Command::Helo(args.to_string())),
        "AUTH" => parse_auth(args),
        "ATRN" => parse_atrn_domains(args).map(Command::Atrn),
        "QUIT" => no_args(args, Command::Quit, "QUIT takes no parameters"),
        "RSET" => no_args(args, Command::Rset, "RSET takes no parameters"),
        "STARTTLS" => no_args(args, Command::StartTls, "STARTTLS takes no parameters"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        v if NOT_IMPLEMENTED.contains(&v) => Ok(Command::NotImplemented(verb)),
        _ => Err(CommandError::Unknown),
    }
}

fn no_args(args: &str, command: Command, error: &'static str) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax(error))
    }
}

fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(mechanism) = words.next() else {
        return Err(CommandError::Syntax("AUTH requires a mechanism name"));
    };
    let initial_response = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(CommandError::Syntax("AUTH takes a mechanism and an optional initial response"));
    }
    // RFC 4422 3.1: 1 to 20 characters of A-Z, 0-9, '-' and '_'.
    let mechanism = mechanism.to_ascii_uppercase();
    let valid = (1..=20).contains(&mechanism.len())
        && mechanism.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(CommandError::Syntax("invalid SASL mechanism name"));
    }
    Ok(Command::Auth { mechanism, initial_response })
}

/// Parse the parameter of ATRN (the text after the verb).
///
/// RFC 2645: `atrn = "ATRN" [SP domain *("," domain)]`, `domain = sub-domain 1*("." sub-domain)`,
/// labels of letters, digits and hyphens that begin and end with a letter or digit. Empty (or
/// only whitespace) means bare ATRN and gives an empty list.
///
/// The ABNF allows no whitespace inside the list. We nevertheless accept spaces and tabs around
/// each comma (`a.example, b.example`): they cannot make a domain ambiguous, fetchmail never
/// sends them, and a person typing the command gets what they meant instead of a 501. Everything
/// else is strict: an empty element (`a.example,,b.example`, a trailing comma), a trailing dot,
/// a single label, `_`, and anything non-ASCII are syntax errors. Domains are lower-cased and
/// de-duplicated, keeping the order of first appearance.
pub fn parse_atrn_domains(args: &str) -> Result<Vec<String>, CommandError> {
    let args = args.trim_matches([' ', '\t']);
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let mut domains: Vec<String> = Vec::new();
    for part in args.split(',') {
        let domain = part.trim_matches([' ', '\t']);
        if domain.is_empty() {
            return Err(CommandError::Syntax("empty domain in ATRN list"));
        }
        if !is_valid_domain(domain) {
            return Err(CommandError::Syntax("syntax error in ATRN domain list"));
        }
        let domain = domain.to_ascii_lowercase();
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

/// The RFC 2645 domain rule, shared with every backend: at least two labels separated by single
/// dots; each label 1 to 63 ASCII letters, digits or hyphens, not beginning or ending with a
/// hyphen; at most 255 octets in all; no trailing dot. Safe to use as a file-name component once
/// lower-cased (no `/`, no `..`).
pub use odmr_api::names::is_valid_domain;

// ---------------------------------------------------------------------------------------------
// Our replies
// ---------------------------------------------------------------------------------------------

/// Replace characters that must not appear inside a reply or log line.
fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

/// One reply line: `"250 text\r\n"` (`"250\r\n"` when `text` is empty). Control characters in
/// `text` are replaced so a reply can never span lines.
pub fn reply(code: u16, text: &str) -> String {
    if text.is_empty() {
        format!("{code}\r\n")
    } else {
        format!("{code} {}\r\n", printable(text))
    }
}

/// A multi-line reply: `"250-a\r\n250-b\r\n250 c\r\n"`. With no lines, like `reply(code, "")`.
pub fn reply_multiline(code: u16, lines: &[&str]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{}\r\n", printable(line)));
    }
    if out.is_empty() {
        out = reply(code, "");
    }
    out
}

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
            match rest.iter().position(|&b| b == b'\r' || b == b'\n') {
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
pub fn mail_from(sender: &str, size: Option<u64>, body_8bitmime: bool) -> String {
    let mut out = format!("MAIL FROM:<{}>", clean_address(sender));
    if let Some(n) = size {
        out.push_str(&format!(" SIZE={n}"));
    }
    if body_8bitmime {
        out.push_str(" BODY=8BITMIME");
    }
    out.push_str("\r\n");
    out
}

/// `"RCPT TO:<a>\r\n"`.
pub fn rcpt_to(address: &str) -> String {
    format!("RCPT TO:<{}>\r\n", clean_address(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk sizes for "random-ish" splits: a small LCG, deterministic per seed.
    fn chunk_sizes(seed: u64, len: usize) -> Vec<usize> {
        let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let mut sizes = Vec::new();
        let mut total = 0;
        while total < len {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = ((state >> 33) % 9 + 1) as usize;
            let n = n.min(len - total);
            sizes.push(n);
            total += n;
        }
        sizes
    }

    /// Every way we split inputs in the streaming tests: whole, byte by byte, and random-ish.
    fn splits(len: usize) -> Vec<Vec<usize>> {
        let mut all = vec![vec![len], vec![1; len]];
        for seed in 0..8 {
            all.push(chunk_sizes(seed, len));
        }
        all
    }

    /// Drive a LineSplitter over `input` split into `sizes`, collecting all lines.
    fn split_lines(max: usize, input: &[u8], sizes: &[usize]) -> Vec<Line> {
        split_lines_limited(&[max], input, sizes)
    }

    /// Like [`split_lines`], with the n-th line limited to `limits[n]` (the last limit for the
    /// rest), the way a session switches limits between lines.
    fn split_lines_limited(limits: &[usize], input: &[u8], sizes: &[usize]) -> Vec<Line> {
        let limit = |n: usize| limits[n.min(limits.len() - 1)];
        let mut splitter = LineSplitter::new(limit(0));
        let mut lines = Vec::new();
        let mut offset = 0;
        for &size in sizes {
            let mut chunk = &input[offset..offset + size];
            offset += size;
            while !chunk.is_empty() {
                let (n, line) = splitter.feed(chunk);
                assert!(n > 0 && n <= chunk.len());
                assert!(splitter.buf.len() <= limit(lines.len()), "buffered more than max");
                if let Some(line) = line {
                    assert_eq!(chunk[n - 1], b'\n', "a line completes exactly at its LF");
                    lines.push(line);
                    splitter.set_max(limit(lines.len()));
                }
                chunk = &chunk[n..];
            }
        }
        lines
    }

    fn c(s: &str) -> Line {
        Line::Complete(s.as_bytes().to_vec())
    }

    #[test]
    fn line_splitter_table() {
        let long_ok = format!("{}\r\n", "a".repeat(10)); // exactly 12 octets
        let long_bad = format!("{}\r\n", "a".repeat(11)); // 13 octets
        let lf_ok = format!("{}\n", "b".repeat(11)); // 12 octets with a bare LF
        let cases: Vec<(usize, String, Vec<Line>)> = vec![
            (12, "QUIT\r\n".into(), vec![c("QUIT")]),
            (12, "QUIT\n".into(), vec![c("QUIT")]),
            (12, "\r\n\n".into(), vec![c(""), c("")]),
            (12, "a\rb\r\n".into(), vec![c("a\rb")]),
            (12, "NOOP\r\nQUIT\r\n".into(), vec![c("NOOP"), c("QUIT")]),
            (12, "partial".into(), vec![]),
            (12, long_ok.clone(), vec![c(&"a".repeat(10))]),
            (12, lf_ok, vec![c(&"b".repeat(11))]),
            (12, long_bad.clone(), vec![Line::TooLong]),
            (
                12,
                format!("{long_bad}NOOP\r\n{}\r\nQUIT\r\n", "x".repeat(100)),
                vec![Line::TooLong, c("NOOP"), Line::TooLong, c("QUIT")],
            ),
            (
                MAX_COMMAND_LINE,
                format!("{}\r\n", "y".repeat(MAX_COMMAND_LINE - 2)),
                vec![c(&"y".repeat(MAX_COMMAND_LINE - 2))],
            ),
            (
                MAX_COMMAND_LINE,
                format!("{}\r\nRSET\r\n", "y".repeat(MAX_COMMAND_LINE - 1)),
                vec![Line::TooLong, c("RSET")],
            ),
        ];
        for (max, input, expected) in cases {
            for sizes in splits(input.len()) {
                assert_eq!(
                    split_lines(max, input.as_bytes(), &sizes),
                    expected,
                    "input {input:?} split {sizes:?}"
                );
            }
        }
    }

    #[test]
    fn auth_response_lines_get_their_own_limit_and_commands_follow() {
        // As the session reads them: one AUTH response line, then commands again.
        let limits = [MAX_AUTH_LINE, MAX_COMMAND_LINE];
        let longest = "r".repeat(MAX_AUTH_LINE - 2);
        let cases: Vec<(String, Vec<Line>)> = vec![
            (format!("{longest}\r\nNOOP\r\n"), vec![c(&longest), c("NOOP")]),
            (format!("{longest}r\r\nNOOP\r\n"), vec![Line::TooLong, c("NOOP")]),
            (format!("{}\r\nQUIT\r\n", "r".repeat(3 * MAX_AUTH_LINE)), vec![Line::TooLong, c("QUIT")]),
            // A 600-octet line is a fine AUTH response but too long for a command.
            (
                format!("{0}\r\n{0}\r\nQUIT\r\n", "r".repeat(600)),
                vec![c(&"r".repeat(600)), Line::TooLong, c("QUIT")],
            ),
        ];
        for (input, expected) in cases {
            for sizes in splits(input.len()) {
                let got = split_lines_limited(&limits, input.as_bytes(), &sizes);
                assert!(
                    got == expected,
                    "input of {} octets, split {:?}..",
                    input.len(),
                    &sizes[..3.min(sizes.len())]
                );
            }
        }
    }

    #[test]
    fn line_splitter_stops_at_first_lf_and_reports_partial() {
        let mut s = LineSplitter::new(MAX_COMMAND_LINE);
        assert_eq!(s.feed(b""), (0, None));
        assert!(!s.has_partial_line());
        assert_eq!(s.feed(b"EH"), (2, None));
        assert!(s.has_partial_line());
        assert_eq!(s.feed(b"LO x\r\nQUIT\r\n"), (6, Some(c("EHLO x"))));
        assert!(!s.has_partial_line());
    }

    fn ok(c: Command) -> Result<Command, CommandError> {
        Ok(c)
    }

    /// Stands for "any 501 text" in the table below.
    const ANY: &str = "";

    /// Compare results, treating any Syntax text as equal when the expectation's text is "".
    fn same(got: &Result<Command, CommandError>, want: &Result<Command, CommandError>) -> bool {
        match (got, want) {
            (Err(CommandError::Syntax(_)), Err(CommandError::Syntax(ANY))) => true,
            _ => got == want,
        }
    }

    fn atrn(d: &[&str]) -> Result<Command, CommandError> {
        Ok(Command::Atrn(d.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn parse_command_table() {
        use Command::*;
        use CommandError::*;
        let long = format!("ATRN {}.example", "a".repeat(64));
        let cases: Vec<(&[u8], Result<Command, CommandError>)> = vec![
            (b"EHLO client.example", ok(Ehlo("client.example".into()))),
            (b"ehlo client.example", ok(Ehlo("client.example".into()))),
            (b"EhLo  client.example  ", ok(Ehlo("client.example".into()))),
            (b"EHLO [192.0.2.1]", ok(Ehlo("[192.0.2.1]".into()))),
            (b"EHLO", Err(Syntax("EHLO requires a domain"))),
            (b"EHLO   ", Err(Syntax("EHLO requires a domain"))),
            (b"HELO client.example", ok(Helo("client.example".into()))),
            (b"helo", Err(Syntax("HELO requires a domain"))),
            (b"AUTH CRAM-MD5", ok(Auth { mechanism: "CRAM-MD5".into(), initial_response: None })),
            (
                b"auth plain AGZvbwBiYXI=",
                ok(Auth { mechanism: "PLAIN".into(), initial_response: Some("AGZvbwBiYXI=".into()) }),
            ),
            (b"AUTH login =", ok(Auth { mechanism: "LOGIN".into(), initial_response: Some("=".into()) })),
            (b"AUTH", Err(Syntax(ANY))),
            (b"AUTH PLAIN a b", Err(Syntax(ANY))),
            (b"AUTH CRAM/MD5", Err(Syntax(ANY))),
            (b"AUTH ABCDEFGHIJKLMNOPQRSTU", Err(Syntax(ANY))),
            (b"ATRN", atrn(&[])),
            (b"atrn   ", atrn(&[])),
            (b"ATRN example.org", atrn(&["example.org"])),
            (b"ATRN Example.ORG", atrn(&["example.org"])),
            (b"ATRN a.example,b.example,A.example", atrn(&["a.example", "b.example"])),
            (b"ATRN example.org.uk", atrn(&["example.org.uk"])),
            (b"ATRN ../x", Err(Syntax(ANY))),
            (b"ATRN example", Err(Syntax(ANY))),
            (long.as_bytes(), Err(Syntax(ANY))),
            (b"QUIT", ok(Quit)),
            (b"quit", ok(Quit)),
            (b"QUIT now", Err(Syntax("QUIT takes no parameters"))),
            (b"RSET", ok(Rset)),
            (b"Rset x", Err(Syntax("RSET takes no parameters"))),
            (b"NOOP", ok(Noop)),
            (b"noop anything at all", ok(Noop)),
            (b"HELP", ok(Help)),
            (b"help ATRN", ok(Help)),
            (b"STARTTLS", ok(StartTls)),
            (b"starttls x", Err(Syntax("STARTTLS takes no parameters"))),
            (b"MAIL FROM:<a@b.example>", ok(NotImplemented("MAIL".into()))),
            (b"rcpt TO:<a@b.example>", ok(NotImplemented("RCPT".into()))),
            (b"DATA", ok(NotImplemented("DATA".into()))),
            (b"BDAT 10 LAST", ok(NotImplemented("BDAT".into()))),
            (b"VRFY postmaster", ok(NotImplemented("VRFY".into()))),
            (b"EXPN list", ok(NotImplemented("EXPN".into()))),
            (b"ETRN example.org", ok(NotImplemented("ETRN".into()))),
            (b"turn", ok(NotImplemented("TURN".into()))),
            (b"SEND FROM:<>", ok(NotImplemented("SEND".into()))),
            (b"SOML FROM:<>", ok(NotImplemented("SOML".into()))),
            (b"saml FROM:<>", ok(NotImplemented("SAML".into()))),
            (b"", Err(Unknown)),
            (b"   ", Err(Unknown)),
            (b"FOO", Err(Unknown)),
            (b"QUITX", Err(Unknown)),
            (b"EHLOclient", Err(Unknown)),
            (b" QUIT", Err(Unknown)),
            (b"QU\0IT", Err(Syntax("NUL character in command"))),
            (b"EHLO a\0b", Err(Syntax("NUL character in command"))),
            (b"EHLO \xff\xfe", Err(Syntax("command is not valid UTF-8"))),
            (b"EHLO a\rb", Err(Syntax("control character in command"))),
            (b"EHLO a\x1bb", Err(Syntax("control character in command"))),
            (b"EHLO\tclient.example", ok(Ehlo("client.example".into()))),
        ];
        for (input, want) in cases {
            let got = parse_command(input);
            assert!(same(&got, &want), "{:?}: got {got:?}, want {want:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn too_long_command_line_never_reaches_the_parser() {
        let input = format!("ATRN {}\r\nQUIT\r\n", "a.".repeat(300));
        let lines = split_lines(MAX_COMMAND_LINE, input.as_bytes(), &[input.len()]);
        assert_eq!(lines, vec![Line::TooLong, c("QUIT")]);
    }

    #[test]
    fn atrn_domains_table() {
        let d63 = "a".repeat(63);
        let d64 = "a".repeat(64);
        let label63 = format!("{d63}.example");
        let long_ok = format!("{d63}.{d63}.{d63}.{}", "b".repeat(63));
        assert_eq!(long_ok.len(), 255);
        let long_bad = format!("c.{long_ok}"); // valid labels, 257 octets
        let cases: Vec<(String, Option<Vec<&str>>)> = vec![
            ("".into(), Some(vec![])),
            ("  ".into(), Some(vec![])),
            ("example.org".into(), Some(vec!["example.org"])),
            ("EXAMPLE.Org".into(), Some(vec!["example.org"])),
            ("example.org.uk".into(), Some(vec!["example.org.uk"])),
            ("a-b.example,x1.example".into(), Some(vec!["a-b.example", "x1.example"])),
            ("1.2".into(), Some(vec!["1.2"])),
            ("a.example,b.example,a.example".into(), Some(vec!["a.example", "b.example"])),
            ("b.example,A.EXAMPLE,a.example".into(), Some(vec!["b.example", "a.example"])),
            ("a.example, b.example".into(), Some(vec!["a.example", "b.example"])),
            ("a.example ,\tb.example".into(), Some(vec!["a.example", "b.example"])),
            (label63.clone(), Some(vec![&label63])),
            (long_ok.clone(), Some(vec![&long_ok])),
            (long_bad, None),
            (format!("{d64}.example"), None),
            ("../x".into(), None),
            ("..".into(), None),
            ("a..b".into(), None),
            ("example".into(), None),
            ("example.org.".into(), None),
            (".example.org".into(), None),
            ("ex_ample.org".into(), None),
            ("-a.example".into(), None),
            ("a-.example".into(), None),
            ("a.-example".into(), None),
            ("a.example,".into(), None),
            (",a.example".into(), None),
            ("a.example,,b.example".into(), None),
            ("a.example b.example".into(), None),
            ("a/b.example".into(), None),
            ("a.example/..".into(), None),
            ("exämple.org".into(), None),
            ("a.example;rm".into(), None),
            ("*.example".into(), None),
        ];
        for (input, want) in cases {
            let got = parse_atrn_domains(&input);
            match want {
                Some(domains) => {
                    assert_eq!(got, Ok(domains.iter().map(|s| s.to_string()).collect()), "{input:?}")
                }
                None => assert!(matches!(got, Err(CommandError::Syntax(_))), "{input:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn is_valid_domain_table() {
        let cases = [
            ("example.org", true),
            ("Example.ORG", true),
            ("a.b.c.d", true),
            ("0.example", true),
            ("xn--bcher-kva.example", true),
            ("example", false),
            ("", false),
            (".", false),
            ("../x", false),
            ("./example.org", false),
            ("example.org.", false),
            ("ex_ample.org", false),
            ("a..b", false),
            ("a b.example", false),
        ];
        for (d, want) in cases {
            assert_eq!(is_valid_domain(d), want, "{d:?}");
        }
    }

    #[test]
    fn reply_formatting() {
        let cases: Vec<(String, &str)> = vec![
            (reply(250, "OK now reversing the connection"), "250 OK now reversing the connection\r\n"),
            (reply(501, ""), "501\r\n"),
            (reply(500, "bad\r\n250 injected"), "500 bad??250 injected\r\n"),
            (reply_multiline(250, &["a", "b", "c"]), "250-a\r\n250-b\r\n250 c\r\n"),
            (reply_multiline(250, &["only"]), "250 only\r\n"),
            (reply_multiline(250, &[]), "250\r\n"),
            (reply_multiline(250, &["x\ny", "z"]), "250-x?y\r\n250 z\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }

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
        };
        let cases: Vec<(Reply, Capabilities)> = vec![
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
                caps(true, true, Some(10240000), true, true, true),
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
            (mail_from("a@b.example", None, false), "MAIL FROM:<a@b.example>\r\n"),
            (mail_from("", None, false), "MAIL FROM:<>\r\n"),
            (mail_from("a@b.example", Some(1234), false), "MAIL FROM:<a@b.example> SIZE=1234\r\n"),
            (mail_from("a@b.example", None, true), "MAIL FROM:<a@b.example> BODY=8BITMIME\r\n"),
            (mail_from("", Some(0), true), "MAIL FROM:<> SIZE=0 BODY=8BITMIME\r\n"),
            (mail_from("a@b\r\nRCPT TO:<x@y>", None, false), "MAIL FROM:<a@bRCPT TO:<x@y>>\r\n"),
            (rcpt_to("c@d.example"), "RCPT TO:<c@d.example>\r\n"),
            (rcpt_to("c@d\n.example"), "RCPT TO:<c@d.example>\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
