//! Streaming the content of the current message to the host in caller-sized
//! pieces, from the bytes already read ([`Memory`], small messages) or from
//! the file through a fixed-size buffer (large ones: constant memory).
//!
//! Owns: BSMTP un-stuffing (one leading dot removed from each line that starts
//! with `.`, stopping before the terminating `.` line), the headers-mode
//! reader that leaves out the consumed envelope fields, and the [`Source`]s
//! both read from. Line ends pass through unchanged; the host normalises them
//! and dot-stuffs again.
//! Does not: parse envelopes, open files or decide about commits.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek};
use std::ops::Range;

/// Where a body's bytes come from: a buffered reader that can also skip
/// forward (the headers mode leaves out the envelope fields).
pub trait Source: BufRead {
    /// Pass over the next `n` bytes.
    fn skip(&mut self, n: u64) -> io::Result<()>;
}

impl<R: Read + Seek> Source for BufReader<R> {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        self.seek_relative(i64::try_from(n).map_err(io::Error::other)?)
    }
}

/// A whole message already in memory, `buf[start..end]`: its bytes are handed out from the
/// buffer they were read into, with no further system call (std's cursor, limited to the
/// message: the buffer is reused, so it may be longer). [`into_buffer`] gives the buffer
/// back for the next message.
pub type Memory = io::Take<io::Cursor<Vec<u8>>>;

/// The content `buf[start..end]` of a reused buffer.
pub fn memory(buf: Vec<u8>, start: usize, end: usize) -> Memory {
    let end = end.min(buf.len());
    let start = start.min(end);
    let mut cursor = io::Cursor::new(buf);
    cursor.set_position(start as u64);
    cursor.take((end - start) as u64)
}

/// The buffer of a [`Memory`], whole, for the next message.
pub fn into_buffer(memory: Memory) -> Vec<u8> {
    memory.into_inner().into_inner()
}

impl Source for Memory {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        // All the rest is in the one buffer: a single consume passes over it.
        let available = self.fill_buf()?.len();
        self.consume(usize::try_from(n).unwrap_or(usize::MAX).min(available));
        Ok(())
    }
}

/// A message file's content: in memory when it was small enough to be read
/// whole, else streamed from the file.
pub enum Content {
    /// Read whole already.
    Memory(Memory),
    /// Streamed through a fixed-size buffer.
    File(BufReader<File>),
}

impl Read for Content {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Content::Memory(m) => m.read(out),
            Content::File(f) => f.read(out),
        }
    }
}

impl BufRead for Content {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        match self {
            Content::Memory(m) => m.fill_buf(),
            Content::File(f) => f.fill_buf(),
        }
    }

    fn consume(&mut self, n: usize) {
        match self {
            Content::Memory(m) => m.consume(n),
            Content::File(f) => f.consume(n),
        }
    }
}

impl Source for Content {
    fn skip(&mut self, n: u64) -> io::Result<()> {
        match self {
            Content::Memory(m) => m.skip(n),
            Content::File(f) => f.skip(n),
        }
    }
}

/// Where the un-stuffer is within the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// At the start of a line.
    #[default]
    LineStart,
    /// Inside a line.
    Inside,
    /// A line started with `.`, which was dropped.
    Dot,
    /// A line started with `.\r`; `\r` is held back until we know it is not `.\r\n`.
    DotCr,
    /// The terminating `.` line was seen.
    Done,
}

/// BSMTP un-stuffer; keeps its state between calls so that any split of the
/// input (buffer boundaries) gives the same output. Inside a line it copies up
/// to the next line end in one go (memchr); only line starts are looked at
/// byte by byte.
#[derive(Debug, Default)]
pub struct Unstuffer {
    state: State,
}

impl Unstuffer {
    /// Decode from `input` into `out`; returns (bytes consumed, bytes produced).
    /// Stops when `out` is full or the terminating line has been consumed.
    pub fn decode(&mut self, input: &[u8], out: &mut [u8]) -> (usize, usize) {
        let (mut i, mut o) = (0, 0);
        while i < input.len() && o < out.len() {
            let b = input[i];
            match self.state {
                State::Done => break,
                State::LineStart if b == b'.' => self.state = State::Dot,
                State::LineStart | State::Inside => {
                    // The rest of the line, or as much as fits.
                    let room = (input.len() - i).min(out.len() - o);
                    let run = &input[i..i + room];
                    let (len, ended) = match memchr::memchr(b'\n', run) {
                        Some(end) => (end + 1, true),
                        None => (room, false),
                    };
                    out[o..o + len].copy_from_slice(&run[..len]);
                    (i, o) = (i + len, o + len);
                    self.state = if ended { State::LineStart } else { State::Inside };
                    continue;
                }
                State::Dot => match b {
                    b'\n' => self.state = State::Done,
                    b'\r' => self.state = State::DotCr,
                    _ => {
                        out[o] = b;
                        o += 1;
                        self.state = State::Inside;
                    }
                },
                State::DotCr => {
                    if b == b'\n' {
                        self.state = State::Done;
                    } else {
                        // ".\rX": the line was ".\r" + more; emit the held `\r`
                        // and look at X again as an ordinary byte.
                        out[o] = b'\r';
                        o += 1;
                        self.state = State::Inside;
                        continue;
                    }
                }
            }
            i += 1;
        }
        (i, o)
    }

    /// True once the terminating `.` line has been consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// At end of file: a final `.` (or `.\r`) without its newline also ends
    /// the data. Returns whether the data was properly terminated.
    pub fn finish_at_eof(&mut self) -> bool {
        if matches!(self.state, State::Dot | State::DotCr | State::Done) {
            self.state = State::Done;
        }
        self.state == State::Done
    }
}

/// The error [`Body::read`] gives for BSMTP data with bytes after its
/// terminating `.` line (two messages run together): a fault of the file's
/// content, unlike any I/O error, so [`is_run_together`] tells it apart.
#[derive(Debug)]
pub struct RunTogether;

impl std::fmt::Display for RunTogether {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bytes after the terminating '.' line")
    }
}

impl std::error::Error for RunTogether {}

/// Whether `e` is [`RunTogether`]'s error.
pub fn is_run_together(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<RunTogether>())
}

/// The content of one message, read from a [`Source`] positioned where the
/// content starts.
pub enum Body<R> {
    /// BSMTP data, un-stuffed.
    Bsmtp {
        /// The file, positioned inside the data.
        reader: R,
        /// Un-stuffing state.
        unstuffer: Unstuffer,
    },
    /// Headers mode: everything except the `skip` ranges.
    Headers {
        /// The file.
        reader: R,
        /// Current offset in the file.
        pos: u64,
        /// Sorted, disjoint ranges to leave out.
        skip: Vec<Range<u64>>,
    },
}

impl<R: Source> Body<R> {
    /// The source, e.g. to take back a [`Memory`]'s buffer.
    pub fn into_source(self) -> R {
        match self {
            Body::Bsmtp { reader, .. } | Body::Headers { reader, .. } => reader,
        }
    }

    /// Fill `buf` with the next content bytes; 0 at the end of the message.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self {
            Body::Bsmtp { reader, unstuffer } => {
                if unstuffer.is_done() {
                    // Checked here, while streaming (the data is read once): the caller stops
                    // before its final dot, so a file with more after its terminating line
                    // (two messages run together) is never committed.
                    if !reader.fill_buf()?.is_empty() {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, RunTogether));
                    }
                    return Ok(0);
                }
                let mut produced = 0;
                // Loop because a chunk may be consumed without output (a
                // dropped dot); return as soon as something was produced.
                while produced == 0 && !unstuffer.is_done() {
                    let input = reader.fill_buf()?;
                    if input.is_empty() {
                        if unstuffer.finish_at_eof() {
                            break;
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "data not terminated by a line '.'",
                        ));
                    }
                    let (used, n) = unstuffer.decode(input, buf);
                    reader.consume(used);
                    produced = n;
                }
                Ok(produced)
            }
            Body::Headers { reader, pos, skip } => loop {
                if let Some(first) = skip.first() {
                    if *pos >= first.start {
                        let skip_by = first.end.saturating_sub(*pos);
                        reader.skip(skip_by)?;
                        *pos += skip_by;
                        skip.remove(0);
                        continue;
                    }
                }
                let limit = skip.first().map_or(u64::MAX, |r| r.start - *pos);
                let want = buf.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
                let input = reader.fill_buf()?;
                let n = input.len().min(want);
                buf[..n].copy_from_slice(&input[..n]);
                reader.consume(n);
                *pos += n as u64;
                return Ok(n);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    /// Un-stuff `input` feeding it in pieces of `piece` bytes with an output
    /// buffer of `out` bytes.
    fn unstuff(input: &[u8], piece: usize, out: usize) -> (Vec<u8>, bool, usize) {
        let mut u = Unstuffer::default();
        let mut result = Vec::new();
        let mut buf = vec![0u8; out];
        let mut consumed = 0;
        for chunk in input.chunks(piece) {
            let mut chunk = chunk;
            while !chunk.is_empty() && !u.is_done() {
                let (used, n) = u.decode(chunk, &mut buf);
                result.extend_from_slice(&buf[..n]);
                consumed += used;
                chunk = &chunk[used..];
            }
        }
        let ok = u.finish_at_eof();
        (result, ok, consumed)
    }

    #[test]
    fn unstuffing_is_exact_for_any_split() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\n..b\n...\n.\n", b"a\n.b\n..\n"),
            (b"a\r\n..b\r\n.\r\n", b"a\r\n.b\r\n"),
            (b".\n", b""),
            (b".x\n.\n", b"x\n"),
            (b".\rx\n.\n", b"\rx\n"),
            (b"mid.dle\n.\n", b"mid.dle\n"),
            (b"..\n.\n", b".\n"),
            (b"no newline at end\n.", b"no newline at end\n"),
        ];
        for (input, want) in cases {
            for piece in 1..=input.len() {
                for out in [1, 2, 3, 64] {
                    let (got, ok, _) = unstuff(input, piece, out);
                    assert!(ok, "{input:?} not terminated");
                    assert_eq!(got, *want, "{input:?} piece={piece} out={out}");
                }
            }
        }
    }

    #[test]
    fn unstuffing_stops_at_the_terminator() {
        let (got, ok, consumed) = unstuff(b"x\n.\nafter\n", 64, 64);
        assert!(ok);
        assert_eq!((got.as_slice(), consumed), (&b"x\n"[..], 4));
        let (_, ok, _) = unstuff(b"x\ny\n", 64, 64);
        assert!(!ok, "missing terminator accepted");
    }

    #[test]
    fn bsmtp_body_reads_in_small_pieces() {
        let data = b"Subject: x\r\n\r\n..dot\r\nend\r\n.\r\n";
        let body = Body::Bsmtp {
            reader: BufReader::with_capacity(3, Cursor::new(&data[..])),
            unstuffer: Unstuffer::default(),
        };
        assert_eq!(read_to_end(body, 5).unwrap(), b"Subject: x\r\n\r\n.dot\r\nend\r\n");
    }

    /// Everything `body` yields, read `bufsize` bytes at a time.
    fn read_to_end<R: Source>(mut body: Body<R>, bufsize: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; bufsize];
        loop {
            match body.read(&mut buf)? {
                0 => return Ok(out),
                n => out.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn read_all(data: &[u8]) -> io::Result<Vec<u8>> {
        let body = Body::Bsmtp {
            reader: BufReader::with_capacity(7, Cursor::new(data)),
            unstuffer: Unstuffer::default(),
        };
        read_to_end(body, 5)
    }

    #[test]
    fn a_bsmtp_body_without_its_terminator_or_with_more_after_it_fails_at_its_end() {
        assert_eq!(read_all(b"a\n..b\n.\n").unwrap(), b"a\n.b\n");
        let missing = read_all(b"a\nb\n").unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::UnexpectedEof);
        assert!(!is_run_together(&missing), "a missing terminator is not two messages run together");
        let after = read_all(b"a\n.\nMAIL FROM:<x@y>\n").unwrap_err();
        assert_eq!(after.kind(), io::ErrorKind::InvalidData);
        assert!(is_run_together(&after), "{after}");
        assert_eq!(after.to_string(), "bytes after the terminating '.' line");
        assert!(!is_run_together(&io::Error::new(io::ErrorKind::InvalidData, "other")));
    }

    #[test]
    fn a_body_in_memory_reads_as_the_same_body_streamed() {
        // A reused buffer: longer than the message, with an older message's bytes after it.
        let file = b"MAIL FROM:<a@b>\nRCPT TO:<c@d>\nDATA\n..x\ny\n.\n";
        let mut reused = file.to_vec();
        reused.extend_from_slice(b"stale bytes of a longer earlier message\n.\n");
        let data_start = 35;
        for bufsize in [1, 3, 100] {
            let streamed = Body::Bsmtp {
                reader: BufReader::with_capacity(4, Cursor::new(&file[data_start..])),
                unstuffer: Unstuffer::default(),
            };
            let memory = Body::Bsmtp {
                reader: memory(reused.clone(), data_start, file.len()),
                unstuffer: Unstuffer::default(),
            };
            let want = read_to_end(streamed, bufsize).unwrap();
            assert_eq!(want, b".x\ny\n");
            assert_eq!(read_to_end(memory, bufsize).unwrap(), want, "bufsize={bufsize}");
        }
        let headers = b"AAAA\nBBBB\nCCCC\n\nbody\n";
        let mut reused = headers.to_vec();
        reused.extend_from_slice(b"tail of an earlier message");
        let body =
            Body::Headers { reader: memory(reused, 0, headers.len()), pos: 0, skip: vec![0..5, 10..15] };
        assert_eq!(read_to_end(body, 2).unwrap(), b"BBBB\n\nbody\n");
        // The buffer comes back whole, for the next message.
        let body = Body::Headers { reader: memory(vec![7; 64], 0, 10), pos: 0, skip: vec![] };
        let Body::Headers { reader, .. } = body else { unreachable!() };
        assert_eq!(into_buffer(reader).len(), 64);
    }

    #[test]
    fn headers_body_leaves_out_the_skipped_ranges() {
        let data = b"AAAA\nBBBB\nCCCC\nDDDD\n\nbody\n";
        for cap in [1, 2, 7, 64] {
            for bufsize in [1, 3, 100] {
                let body = Body::Headers {
                    reader: BufReader::with_capacity(cap, Cursor::new(&data[..])),
                    pos: 0,
                    skip: vec![0..5, 10..15],
                };
                let out = read_to_end(body, bufsize).unwrap();
                assert_eq!(out, b"BBBB\nDDDD\n\nbody\n", "cap={cap} buf={bufsize}");
            }
        }
    }
}
