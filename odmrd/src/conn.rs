//! The byte pipe under a session: buffered reads and writes with timeouts.
//!
//! This module owns moving bytes between a socket (or inetd's stdin/stdout)
//! and the sans-IO parsers of [`crate::proto`]: it reads into one fixed buffer,
//! feeds the parsers, batches writes until the protocol waits for a reply, and
//! enforces a deadline on every read and write. It does not interpret
//! commands or replies.
//!
//! Timeouts are implemented with `poll(2)` on the file descriptors, so they
//! work the same for TCP sockets, Unix socket pairs and pipes.

use crate::proto::{Line, LineSplitter, Reply, ReplyError, ReplyParser};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

const READ_BUFFER: usize = 16 * 1024;
/// Writes are flushed when this much is pending, so a message body streams in
/// large writes (not one system call per line) with bounded memory.
const WRITE_BUFFER: usize = 64 * 1024;

/// A full-duplex byte stream with file descriptors to poll.
pub trait Wire: Read + Write {
    /// The descriptor read from.
    fn read_fd(&self) -> BorrowedFd<'_>;
    /// The descriptor written to.
    fn write_fd(&self) -> BorrowedFd<'_>;
}

impl Wire for std::net::TcpStream {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

impl Wire for std::os::unix::net::UnixStream {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
}

/// inetd's connection: standard input and standard output (fds 0 and 1).
pub struct Stdio {
    input: std::fs::File,
    output: std::fs::File,
}

impl Stdio {
    /// Take over fds 0 and 1 (duplicated, so std's own handles stay valid).
    pub fn take() -> io::Result<Stdio> {
        let input = io::stdin().as_fd().try_clone_to_owned()?;
        let output = io::stdout().as_fd().try_clone_to_owned()?;
        Ok(Stdio { input: input.into(), output: output.into() })
    }
}

impl Read for Stdio {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Stdio {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.output.flush()
    }
}

impl Wire for Stdio {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.input.as_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.output.as_fd()
    }
}

/// Is `fd` a socket? (Under inetd, fds 0-2 may all be the customer's.)
pub fn fd_is_socket(fd: std::os::fd::RawFd) -> bool {
    nix::sys::stat::fstat(fd).map(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFSOCK).unwrap_or(false)
}

/// What a read of one line produced.
#[derive(Debug)]
pub enum Received<T> {
    /// A complete item.
    Item(T),
    /// The peer closed the connection.
    Closed,
    /// Nothing arrived before the deadline.
    TimedOut,
}

/// A buffered connection with a current timeout.
pub struct Conn<W: Wire> {
    wire: W,
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    timeout: Duration,
}

impl<W: Wire> Conn<W> {
    /// Wrap `wire`, with `timeout` for every read and write until changed.
    pub fn new(wire: W, timeout: Duration) -> Conn<W> {
        Conn {
            wire,
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
            timeout,
        }
    }

    /// Change the deadline applied to each following read and write.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Queue bytes for sending; they go out at [`Conn::flush`] or when the
    /// buffer is full.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.wbuf.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            return self.write_all_timed(bytes);
        }
        self.wbuf.extend_from_slice(bytes);
        Ok(())
    }

    /// Send everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        let pending = std::mem::take(&mut self.wbuf);
        let result = self.write_all_timed(&pending);
        self.wbuf = pending;
        self.wbuf.clear();
        result
    }

    fn write_all_timed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if !wait(self.wire.write_fd(), PollFlags::POLLOUT, self.timeout)? {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
            }
            match self.wire.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wire.flush()
    }

    /// Make sure unread input is buffered; false on EOF, error on timeout.
    fn fill(&mut self) -> io::Result<Received<()>> {
        if self.rpos < self.rlen {
            return Ok(Received::Item(()));
        }
        if !wait(self.wire.read_fd(), PollFlags::POLLIN, self.timeout)? {
            return Ok(Received::TimedOut);
        }
        loop {
            match self.wire.read(&mut self.rbuf) {
                Ok(0) => return Ok(Received::Closed),
                Ok(n) => {
                    self.rpos = 0;
                    self.rlen = n;
                    return Ok(Received::Item(()));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Received::Closed),
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one command line (flushes pending output first: the peer is
    /// waiting for it before it sends more).
    pub fn read_line(&mut self, splitter: &mut LineSplitter) -> io::Result<Received<Line>> {
        self.flush()?;
        loop {
            match self.fill()? {
                Received::Item(()) => {}
                Received::Closed => return Ok(Received::Closed),
                Received::TimedOut => return Ok(Received::TimedOut),
            }
            let (used, line) = splitter.feed(&self.rbuf[self.rpos..self.rlen]);
            self.rpos += used;
            if let Some(line) = line {
                return Ok(Received::Item(line));
            }
        }
    }

    /// True when input has been received and not yet consumed. Between a reply and the next
    /// command this is input that answers nothing we sent.
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rlen
    }

    /// Read one (possibly multi-line) SMTP reply.
    pub fn read_reply(&mut self) -> io::Result<Received<Result<Reply, ReplyError>>> {
        self.flush()?;
        let mut parser = ReplyParser::new();
        loop {
            match self.fill()? {
                Received::Item(()) => {}
                Received::Closed => return Ok(Received::Closed),
                Received::TimedOut => return Ok(Received::TimedOut),
            }
            let (used, reply) = parser.feed(&self.rbuf[self.rpos..self.rlen]);
            self.rpos += used;
            if let Some(reply) = reply {
                return Ok(Received::Item(reply));
            }
        }
    }
}

/// Wait until `fd` is ready for `events`; false when `timeout` passed first.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, timeout: Duration) -> io::Result<bool> {
    let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, events)];
    loop {
        match poll(&mut fds, PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)) {
            Ok(0) => return Ok(false),
            // Readiness includes HUP and ERR: the read or write reports them.
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}
