//! Sans-IO SMTP/ODMR protocol: bytes in, values out, one module per direction.
//!
//! - [`command`]: the provider side. The customer's command lines and their limits, parsing the
//!   commands of the initial and authenticated states (EHLO, AUTH, ATRN, ...), the RFC 2645
//!   ATRN domain syntax, and formatting our replies.
//! - [`reply`]: the reversed side, where the customer is the server. Parsing its replies
//!   (including multi-line EHLO replies and the capabilities in them), and what we send it:
//!   MAIL/RCPT commands and the body encoding of the DATA phase (line-end normalisation and
//!   dot-stuffing).
//!
//! This module itself holds what both directions share: the bounded [`LineSplitter`] (command
//! lines and reply lines alike) and the log-safe text filter.
//!
//! Does not: read or write sockets, keep session state, know about time-outs, authentication
//! secrets, queues or locks. Every type here is fed bytes or strings and returns values; the
//! streaming types (`LineSplitter`, `ReplyParser`, `DotStuffer`) give the same result however
//! their input is split into chunks, which the tests check with the splits of `chunks`.

pub mod command;
pub mod reply;

pub use command::*;
pub use reply::*;

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

/// Replace characters that must not appear inside a reply or log line.
pub(crate) fn printable(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::chunks::splits;
    use super::*;

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
    fn too_long_command_line_never_reaches_the_parser() {
        let input = format!("ATRN {}\r\nQUIT\r\n", "a.".repeat(300));
        let lines = split_lines(MAX_COMMAND_LINE, input.as_bytes(), &[input.len()]);
        assert_eq!(lines, vec![Line::TooLong, c("QUIT")]);
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
}

/// How the streaming tests of both directions split their input.
#[cfg(test)]
mod chunks {
    /// Chunk sizes for "random-ish" splits: a small LCG, deterministic per seed.
    pub fn chunk_sizes(seed: u64, len: usize) -> Vec<usize> {
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
    pub fn splits(len: usize) -> Vec<Vec<usize>> {
        let mut all = vec![vec![len], vec![1; len]];
        for seed in 0..8 {
            all.push(chunk_sizes(seed, len));
        }
        all
    }
}
