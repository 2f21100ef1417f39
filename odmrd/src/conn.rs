//! The byte pipe under a session: buffered reads and writes with deadlines.
//!
//! This module owns moving bytes between a socket (or inetd's stdin/stdout)
//! and the sans-IO parsers of [`crate::proto`]: it reads into one fixed buffer,
//! feeds the parsers, batches writes until the protocol waits for a reply, and
//! enforces deadlines on reads and writes. It does not interpret commands or
//! replies, and it does not choose the time limits (the session and the relay
//! do).
//!
//! Deadlines, not per-byte timeouts: a peer that trickles one byte at a time
//! must not hold a connection for ever (slowloris). So the current timeout is
//! a budget for a whole item, counted from a fixed instant:
//!
//! - a command line: the wait for its first byte, then the whole line from
//!   that first byte ([`Conn::read_line`]);
//! - a reply of the customer, all its lines ([`Conn::read_reply`]);
//! - a write: one flush of the write buffer, or one large send (about
//!   64 KiB, a "record" of a body).
//!
//! On top of that an optional limit ([`Conn::set_limit`]) bounds every wait
//! whatever the current timeout: the session's total time before ATRN.
//!
//! Waiting is done with `poll(2)` on the file descriptors, so it works the
//! same for TCP sockets, Unix socket pairs and pipes.

use crate::proto::{Line, LineSplitter, Reply, ReplyError, ReplyParser};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

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
    /// Input received but held inside the wire (TLS plaintext already decrypted), which polling
    /// the descriptor would not show.
    fn has_buffered_input(&mut self) -> bool {
        false
    }
    /// The deadline for the wire's own blocking (a TLS layer reading or writing whole records).
    fn set_deadline(&mut self, _deadline: Option<std::time::Instant>) {}
    /// Called before each read while a reply of the peer is awaited: acknowledge what
    /// arrives at once instead of delaying the ACK. We have nothing to send then, so a
    /// delayed ACK would wait its full 40 ms, while the peer's Nagle algorithm holds its next
    /// small reply until that ACK comes: one stall per pipelined batch. The default does
    /// nothing (pipes, Unix sockets, wrappers that cannot reach a TCP socket).
    fn ack_promptly(&self) {}
}

/// Leave delayed-ACK mode on `fd` if it is a TCP socket (Linux `TCP_QUICKACK`; the kernel
/// drops back to delayed ACKs by itself, hence the call before every read). Elsewhere, and
/// on anything but a TCP socket, it does nothing: a failure here costs speed, never mail.
pub fn quick_ack(fd: BorrowedFd<'_>) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ = socket2::SockRef::from(&fd).set_tcp_quickack(true);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = fd;
}

impl Wire for std::net::TcpStream {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.as_fd()
    }
    fn ack_promptly(&self) {
        quick_ack(self.as_fd());
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
    /// Known once, so a pipe or a Unix socket costs no failed system call per read.
    input_is_socket: bool,
}

impl Stdio {
    /// Take over fds 0 and 1 (duplicated, so std's own handles stay valid).
    pub fn take() -> io::Result<Stdio> {
        let input = io::stdin().as_fd().try_clone_to_owned()?;
        let output = io::stdout().as_fd().try_clone_to_owned()?;
        let input_is_socket = fd_is_tcp(input.as_fd());
        Ok(Stdio { input: input.into(), output: output.into(), input_is_socket })
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
    fn ack_promptly(&self) {
        if self.input_is_socket {
            quick_ack(self.input.as_fd());
        }
    }
}

/// Is `fd` a TCP socket (the only kind with delayed ACKs to avoid)?
fn fd_is_tcp(fd: BorrowedFd<'_>) -> bool {
    let socket = socket2::SockRef::from(&fd);
    socket.local_addr().is_ok_and(|addr| addr.is_ipv4() || addr.is_ipv6())
        && socket.r#type().is_ok_and(|t| t == socket2::Type::STREAM)
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
    /// The item was not complete by its deadline.
    TimedOut,
}

/// A buffered connection with a current timeout and an optional limit.
pub struct Conn<W: Wire> {
    wire: W,
    rbuf: Box<[u8]>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    timeout: Duration,
    limit: Option<Instant>,
}

impl<W: Wire> Conn<W> {
    /// Wrap `wire`, with `timeout` for every item until changed and no limit.
    pub fn new(wire: W, timeout: Duration) -> Conn<W> {
        // Reads and writes are tried first and polled only when they would block.
        set_nonblocking(wire.read_fd());
        set_nonblocking(wire.write_fd());
        // Writes are batched here (a flush only before a wait, or a full buffer), so Nagle's
        // algorithm can only delay a batch behind an unacknowledged one, e.g. the next
        // message's commands behind a final dot: send each at once.
        let _ = socket2::SockRef::from(&wire.write_fd()).set_tcp_nodelay(true);
        Conn {
            wire,
            rbuf: vec![0; READ_BUFFER].into_boxed_slice(),
            rpos: 0,
            rlen: 0,
            wbuf: Vec::with_capacity(WRITE_BUFFER),
            timeout,
            limit: None,
        }
    }

    /// Change the time allowed for each following line, reply or flush.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The wire under this connection (to start TLS on it).
    pub fn wire_mut(&mut self) -> &mut W {
        &mut self.wire
    }

    /// Forget input received but not yet consumed. After STARTTLS, whatever the client sent
    /// behind the command in clear text must never be read as if it came inside TLS
    /// (the CVE-2011-0411 class of command injection).
    pub fn discard_buffered_input(&mut self) -> usize {
        let discarded = self.rlen - self.rpos;
        self.rpos = 0;
        self.rlen = 0;
        discarded
    }

    /// Bound every following wait by `limit` (None: no bound beyond the
    /// timeout). Past the limit, reads report [`Received::TimedOut`] and
    /// writes fail, except what is already possible without waiting.
    pub fn set_limit(&mut self, limit: Option<Instant>) {
        self.limit = limit;
    }

    /// Has the limit of [`Conn::set_limit`] passed? (Tells a timed-out item
    /// from an expired limit.)
    pub fn limit_reached(&self) -> bool {
        self.limit.is_some_and(|limit| Instant::now() >= limit)
    }

    /// The deadline of an item that starts now.
    fn deadline(&self) -> Instant {
        let own = Instant::now() + self.timeout;
        self.limit.map_or(own, |limit| own.min(limit))
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
        if bytes.is_empty() {
            return Ok(());
        }
        let deadline = self.deadline();
        self.wire.set_deadline(Some(deadline));
        while !bytes.is_empty() {
            match self.wire.write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                // Only a write that would block costs a poll.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait(self.wire.write_fd(), PollFlags::POLLOUT, deadline)? {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wire.flush()
    }

    /// Make sure unread input is buffered, waiting until `deadline` at most. Before waiting,
    /// what we queued goes out: the peer may be waiting for it before it sends more, and
    /// while input is still buffered it is not (so replies to pipelined commands leave in
    /// one write, and Nagle's algorithm has no small segment to hold back).
    fn fill(&mut self, deadline: Instant) -> io::Result<Received<()>> {
        if self.rpos < self.rlen {
            return Ok(Received::Item(()));
        }
        self.flush()?;
        self.wire.set_deadline(Some(deadline));
        loop {
            match self.wire.read(&mut self.rbuf) {
                Ok(0) => return Ok(Received::Closed),
                Ok(n) => {
                    self.rpos = 0;
                    self.rlen = n;
                    return Ok(Received::Item(()));
                }
                // Only a read that would block costs a poll.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait(self.wire.read_fd(), PollFlags::POLLIN, deadline)? {
                        return Ok(Received::TimedOut);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(Received::Closed),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return Ok(Received::TimedOut),
                Err(e) => return Err(e),
            }
        }
    }

    /// Read one command line (pending output goes out before any wait: the
    /// peer may be waiting for it before it sends more). The timeout runs once for the
    /// wait for the line's first byte and once more from that byte to the
    /// line's end, however the bytes trickle in.
    pub fn read_line(&mut self, splitter: &mut LineSplitter) -> io::Result<Received<Line>> {
        let mut deadline = self.deadline();
        loop {
            match self.fill(deadline)? {
                Received::Item(()) => {}
                Received::Closed => return Ok(Received::Closed),
                Received::TimedOut => return Ok(Received::TimedOut),
            }
            let started = splitter.has_partial_line();
            let (used, line) = splitter.feed(&self.rbuf[self.rpos..self.rlen]);
            self.rpos += used;
            if let Some(line) = line {
                return Ok(Received::Item(line));
            }
            if !started {
                // The line's first byte: from now on the clock runs for the line.
                deadline = self.deadline();
            }
        }
    }

    /// True when input has been received and not yet consumed. Between a reply and the next
    /// command this is input that answers nothing we sent.
    pub fn has_buffered_input(&self) -> bool {
        self.rpos < self.rlen
    }

    /// Read one (possibly multi-line) SMTP reply, all of it within the timeout.
    pub fn read_reply(&mut self) -> io::Result<Received<Result<Reply, ReplyError>>> {
        let deadline = self.deadline();
        let mut parser = ReplyParser::new();
        loop {
            if !self.has_buffered_input() {
                // About to wait for the peer with nothing of ours to send: see Wire::ack_promptly.
                self.wire.ack_promptly();
            }
            match self.fill(deadline)? {
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

/// Make `fd` non-blocking, so a read or write returns WouldBlock instead of waiting past a
/// deadline. A descriptor that refuses stays blocking: reads and writes then still work, only
/// without the deadline's protection for that one call.
fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let raw = fd.as_raw_fd();
    if let Ok(flags) = fcntl(raw, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags);
        if !flags.contains(OFlag::O_NONBLOCK) {
            let _ = fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK));
        }
    }
}

/// Wait until `fd` is ready for `events`; false when `deadline` passed first.
/// Past the deadline it still looks once without waiting, so what already
/// arrived is taken.
fn wait(fd: BorrowedFd<'_>, events: PollFlags, deadline: Instant) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, events)];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        // Rounded up, so the wait never ends just before the deadline.
        let millis = left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32;
        match poll(&mut fds, PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)) {
            Ok(0) if millis == 0 => return Ok(false),
            // Woken early (it happens): wait for the rest.
            Ok(0) => continue,
            // Readiness includes HUP and ERR: the read or write reports them.
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::MAX_COMMAND_LINE;
    use std::os::unix::net::UnixStream;

    /// The peer writes `bytes` one at a time, `gap` apart, to a Conn with a
    /// 300 ms timeout: each gap well inside the timeout, the whole far beyond
    /// it. `read` must time out long before the peer could finish.
    fn assert_trickle_times_out<T: std::fmt::Debug>(
        bytes: Vec<u8>,
        gap: Duration,
        read: impl FnOnce(&mut Conn<UnixStream>) -> io::Result<Received<T>>,
    ) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours, Duration::from_millis(300));
        assert!(gap * bytes.len() as u32 >= Duration::from_secs(4));
        let peer = std::thread::spawn(move || {
            for byte in bytes {
                if theirs.write_all(&[byte]).is_err() {
                    return;
                }
                std::thread::sleep(gap);
            }
        });
        let started = Instant::now();
        let got = read(&mut conn).unwrap();
        assert!(matches!(got, Received::TimedOut), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
        drop(conn);
        peer.join().unwrap();
    }

    #[test]
    fn a_trickled_line_times_out_counted_from_its_first_byte() {
        let line = format!("NOOP {}\r\n", "x".repeat(93)).into_bytes();
        assert_trickle_times_out(line, Duration::from_millis(40), |conn| {
            conn.read_line(&mut LineSplitter::new(MAX_COMMAND_LINE))
        });
    }

    #[test]
    fn a_trickled_reply_times_out_as_a_whole() {
        let reply = "250-line\r\n".repeat(40).into_bytes();
        assert_trickle_times_out(reply, Duration::from_millis(10), Conn::read_reply);
    }

    #[test]
    fn the_limit_bounds_every_wait_whatever_the_timeout() {
        let (ours, _silent) = UnixStream::pair().unwrap();
        let mut conn = Conn::new(ours, Duration::from_secs(600));
        conn.set_limit(Some(Instant::now() + Duration::from_millis(200)));
        assert!(!conn.limit_reached());
        let got = conn.read_line(&mut LineSplitter::new(MAX_COMMAND_LINE)).unwrap();
        assert!(matches!(got, Received::TimedOut), "{got:?}");
        assert!(conn.limit_reached());
        conn.set_limit(None);
        assert!(!conn.limit_reached());
    }

    #[test]
    fn what_already_arrived_is_read_even_past_the_limit() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        theirs.write_all(b"NOOP\r\n").unwrap();
        let mut conn = Conn::new(ours, Duration::from_secs(1));
        conn.set_limit(Some(Instant::now()));
        let got = conn.read_line(&mut LineSplitter::new(MAX_COMMAND_LINE)).unwrap();
        assert!(matches!(got, Received::Item(Line::Complete(ref line)) if line == b"NOOP"), "{got:?}");
    }
}
