//! TLS on the ODMR port: the server identity from `[tls]`, and a [`Wire`] that carries a session
//! over rustls.
//!
//! This module owns loading and checking the certificate chain and key (PEM, read with
//! rustls-pki-types), the handshake under a deadline, the framing of what odmrd writes into TLS
//! records, and the one-line description of a TLS session for the log. It does not decide when
//! TLS starts: [`crate::session`] answers STARTTLS and the server runs implicit-TLS listeners.
//!
//! Framing matters because of fetchmail. After the turnaround fetchmail relays the session to
//! its MTA in a `select()` loop that reads, under TLS, only up to the first newline of a record
//! and never asks OpenSSL for the rest: a record carrying two lines leaves the second in
//! OpenSSL's buffer, invisible to `select()`, and the session stalls. With
//! [`Framing::Line`] (the default) every line odmrd writes is a record of its own; a customer
//! known to run a real MTA may use [`Framing::Packed`], one record per write.

use crate::conn::Wire;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How odmrd's output is cut into TLS records (`[tls] framing`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// One record per line: safe for fetchmail's relay.
    #[default]
    Line,
    /// One record per write (up to the record size): fewer bytes, for real MTAs only.
    Packed,
}

impl std::str::FromStr for Framing {
    type Err = String;
    fn from_str(value: &str) -> Result<Framing, String> {
        match value.to_ascii_lowercase().as_str() {
            "line" => Ok(Framing::Line),
            "packed" => Ok(Framing::Packed),
            _ => Err(format!("'{value}' is not a framing (line or packed)")),
        }
    }
}

/// Why the certificate or key cannot be used. Names the file involved.
#[derive(Debug)]
pub struct TlsError {
    pub path: PathBuf,
    pub problem: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.problem)
    }
}

impl std::error::Error for TlsError {}

/// A loaded server identity: the rustls configuration and what `--check-config` reports.
#[derive(Clone)]
pub struct Identity {
    pub config: Arc<ServerConfig>,
    /// The end-entity certificate's expiry.
    pub not_after: SystemTime,
    /// The end-entity certificate's subject, for messages.
    pub subject: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("subject", &self.subject).finish_non_exhaustive()
    }
}

/// Within this many days of the certificate's expiry, start-up and `--check-config` warn.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

impl Identity {
    /// Read the PEM chain at `certificate` (end entity first) and the PEM key at `key`, and check
    /// that they belong together and that the certificate is valid now.
    pub fn load(certificate: &Path, key: &Path) -> Result<Identity, TlsError> {
        let cert_error = |problem: String| TlsError { path: certificate.to_path_buf(), problem };
        let key_error = |problem: String| TlsError { path: key.to_path_buf(), problem };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
            .map_err(|e| cert_error(pem_problem(e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| cert_error(pem_problem(e)))?;
        let Some(leaf) = chain.first() else {
            return Err(cert_error("no PEM certificate in the file".into()));
        };
        let (not_before, not_after, subject) = validity(leaf).map_err(cert_error)?;
        let now = SystemTime::now();
        if now < not_before {
            return Err(cert_error(format!("the certificate for {subject} is not valid yet")));
        }
        if now > not_after {
            return Err(cert_error(format!("the certificate for {subject} has expired")));
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| key_error(pem_problem(e)))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| cert_error(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| {
                key_error(format!("does not fit the certificate in {}: {e}", certificate.display()))
            })?;
        Ok(Identity { config: Arc::new(config), not_after, subject })
    }

    /// Days until the certificate expires (negative after it did).
    pub fn days_left(&self, now: SystemTime) -> i64 {
        match self.not_after.duration_since(now) {
            Ok(left) => (left.as_secs() / 86_400) as i64,
            Err(past) => -((past.duration().as_secs() / 86_400) as i64) - 1,
        }
    }
}

fn pem_problem(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(e) => format!("cannot read: {e}"),
        Error::NoItemsFound => "no PEM item of the expected kind in the file".into(),
        other => format!("not valid PEM: {other:?}"),
    }
}

/// (not before, not after, subject) of a DER certificate.
fn validity(der: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime, String), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| format!("the first certificate cannot be parsed: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64)
        } else {
            SystemTime::UNIX_EPOCH
        }
    };
    let validity = cert.validity();
    Ok((time(validity.not_before), time(validity.not_after), cert.subject().to_string()))
}

/// A session's byte stream inside TLS. Reads and writes block until done or until the deadline
/// set with [`Wire::set_deadline`]; a missed deadline is an `ErrorKind::TimedOut` error.
pub struct TlsWire<W: Wire> {
    inner: W,
    tls: ServerConnection,
    framing: Framing,
    deadline: Option<Instant>,
}

impl<W: Wire> TlsWire<W> {
    /// Run the server side of a handshake on `inner` within `deadline`. On failure `inner` comes
    /// back with the error (its descriptors stay valid until the session drops it).
    pub fn accept(
        inner: W,
        config: Arc<ServerConfig>,
        framing: Framing,
        deadline: Instant,
    ) -> Result<Self, (io::Error, W)> {
        let tls = match ServerConnection::new(config) {
            Ok(tls) => tls,
            Err(e) => return Err((io::Error::other(e), inner)),
        };
        let mut wire = TlsWire { inner, tls, framing, deadline: Some(deadline) };
        // Records wait in rustls only until the end of the write that made them (see `write`),
        // so memory stays bounded by one write; a limit would split a line across records.
        wire.tls.set_buffer_limit(None);
        match wire.handshake() {
            Ok(()) => Ok(wire),
            Err(e) => Err((e, wire.inner)),
        }
    }

    fn handshake(&mut self) -> io::Result<()> {
        while self.tls.is_handshaking() {
            if self.tls.wants_write() {
                self.write_records()?;
            } else if !self.receive_records()? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed during the TLS handshake"));
            }
        }
        // TLS 1.3 session tickets, if any, go out now rather than with the first reply.
        self.write_records()
    }

    /// `version=TLSv1_3 cipher=TLS13_AES_256_GCM_SHA384 sni=yes`, for the log.
    pub fn describe(&self) -> String {
        let version = self.tls.protocol_version().map(|v| format!("{v:?}")).unwrap_or_else(|| "none".into());
        let cipher = self
            .tls
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
            .unwrap_or_else(|| "none".into());
        let sni = if self.tls.server_name().is_some() { "yes" } else { "no" };
        format!("version={version} cipher={cipher} sni={sni}")
    }

    /// Wait for `events` on the inner stream's descriptor until the deadline.
    fn wait(&self, events: PollFlags) -> io::Result<()> {
        let fd =
            if events.contains(PollFlags::POLLIN) { self.inner.read_fd() } else { self.inner.write_fd() };
        loop {
            let timeout = match self.deadline {
                None => PollTimeout::NONE,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS deadline passed"));
                    }
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32)
                        .unwrap_or(PollTimeout::MAX)
                }
            };
            let mut fds = [PollFd::new(fd, events)];
            match poll(&mut fds, timeout) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::TimedOut, "TLS deadline passed")),
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Send every pending TLS byte.
    fn write_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.wait(PollFlags::POLLOUT)?;
            match self.tls.write_tls(&mut self.inner) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.inner.flush()
    }

    /// Read and process one batch of TLS bytes; false at the end of the stream. A TLS error is
    /// answered with its alert before it is returned.
    fn receive_records(&mut self) -> io::Result<bool> {
        self.wait(PollFlags::POLLIN)?;
        let n = loop {
            match self.tls.read_tls(&mut self.inner) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        if let Err(e) = self.tls.process_new_packets() {
            let _ = self.write_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(n > 0)
    }

    /// Encrypt `plaintext` as records of its own: rustls makes one record (more past 16 KiB)
    /// per write call, and with no buffer limit it never takes part of a call.
    fn encrypt(&mut self, plaintext: &[u8]) -> io::Result<()> {
        self.tls.writer().write_all(plaintext)
    }
}

impl<W: Wire> Read for TlsWire<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The peer closed TCP without close_notify: for SMTP that is just a close.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if !self.receive_records()? {
                return Ok(0);
            }
            // Key updates and the like may need an answer.
            if self.tls.wants_write() {
                self.write_records()?;
            }
        }
    }
}

impl<W: Wire> Write for TlsWire<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.framing {
            Framing::Packed => self.encrypt(buf)?,
            Framing::Line => {
                for line in buf.split_inclusive(|&b| b == b'\n') {
                    self.encrypt(line)?;
                }
            }
        }
        // All the records of this write go out together (one vectored write where the socket
        // takes them), and nothing is left buffered behind the caller's back.
        self.write_records()?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_records()
    }
}

impl<W: Wire> Wire for TlsWire<W> {
    fn read_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.read_fd()
    }
    fn write_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.inner.write_fd()
    }
    fn has_buffered_input(&mut self) -> bool {
        // Records already read from the socket hold plaintext that poll(2) cannot see. An error
        // counts as input: the next read reports it.
        self.tls.process_new_packets().map(|state| state.plaintext_bytes_to_read() > 0).unwrap_or(true)
    }
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
    fn ack_promptly(&self) {
        self.inner.ack_promptly();
    }
}

/// The stream a session runs on: clear text until STARTTLS, TLS after it (or from the start on
/// an implicit-TLS port).
pub enum Link<W: Wire> {
    Plain(W),
    Tls(Box<TlsWire<W>>),
    /// After a failed handshake: every read and write fails, and the session ends.
    Broken(W),
    /// Only inside [`Link::start_tls`], while the stream moves into TLS.
    Taken,
}

impl<W: Wire> Link<W> {
    /// Is the stream encrypted?
    pub fn is_tls(&self) -> bool {
        matches!(self, Link::Tls(_))
    }

    /// Run the handshake on the clear-text stream; on success the link is TLS.
    pub fn start_tls(
        &mut self,
        config: Arc<ServerConfig>,
        framing: Framing,
        deadline: Instant,
    ) -> io::Result<()> {
        match std::mem::replace(self, Link::Taken) {
            Link::Plain(inner) => match TlsWire::accept(inner, config, framing, deadline) {
                Ok(tls) => {
                    *self = Link::Tls(Box::new(tls));
                    Ok(())
                }
                Err((e, inner)) => {
                    *self = Link::Broken(inner);
                    Err(e)
                }
            },
            other => {
                *self = other;
                Err(io::Error::other("TLS is already active"))
            }
        }
    }

    /// The TLS session's description for the log (None in clear text).
    pub fn describe(&self) -> Option<String> {
        match self {
            Link::Tls(tls) => Some(tls.describe()),
            _ => None,
        }
    }

    fn broken() -> io::Error {
        io::Error::new(io::ErrorKind::NotConnected, "the TLS handshake failed")
    }
}

impl<W: Wire> Read for Link<W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(w) => w.read(buf),
            Link::Tls(w) => w.read(buf),
            Link::Broken(_) | Link::Taken => Err(Self::broken()),
        }
    }
}

impl<W: Wire> Write for Link<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(w) => w.write(buf),
            Link::Tls(w) => w.write(buf),
            Link::Broken(_) | Link::Taken => Err(Self::broken()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(w) => w.flush(),
            Link::Tls(w) => w.flush(),
            Link::Broken(_) | Link::Taken => Err(Self::broken()),
        }
    }
}

impl<W: Wire> Wire for Link<W> {
    fn read_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Link::Plain(w) => w.read_fd(),
            Link::Tls(w) => w.read_fd(),
            Link::Broken(w) => w.read_fd(),
            Link::Taken => unreachable!("a Link is never polled during its own handshake"),
        }
    }
    fn write_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Link::Plain(w) => w.write_fd(),
            Link::Tls(w) => w.write_fd(),
            Link::Broken(w) => w.write_fd(),
            Link::Taken => unreachable!("a Link is never polled during its own handshake"),
        }
    }
    fn has_buffered_input(&mut self) -> bool {
        match self {
            Link::Plain(w) => w.has_buffered_input(),
            Link::Tls(w) => w.has_buffered_input(),
            // Let the read report the failure at once.
            Link::Broken(_) | Link::Taken => true,
        }
    }
    fn set_deadline(&mut self, deadline: Option<Instant>) {
        match self {
            Link::Plain(w) => w.set_deadline(deadline),
            Link::Tls(w) => w.set_deadline(deadline),
            Link::Broken(_) | Link::Taken => {}
        }
    }
    fn ack_promptly(&self) {
        match self {
            Link::Plain(w) | Link::Broken(w) => w.ack_promptly(),
            Link::Tls(w) => w.ack_promptly(),
            Link::Taken => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A CA-less self-signed identity for `odmr.test.example`, written as PEM files.
    fn identity_files(dir: &Path) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["odmr.test.example".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path, cert.der().to_vec())
    }

    fn client_config(der: Vec<u8>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(der)).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// Counts the TLS records that pass through a reader.
    struct RecordCounter {
        inner: UnixStream,
        records: Arc<AtomicUsize>,
        header: Vec<u8>,
        body_left: usize,
    }

    impl Read for RecordCounter {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            for &byte in &buf[..n] {
                if self.body_left > 0 {
                    self.body_left -= 1;
                    continue;
                }
                self.header.push(byte);
                if self.header.len() == 5 {
                    self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    self.records.fetch_add(1, Ordering::SeqCst);
                    self.header.clear();
                }
            }
            Ok(n)
        }
    }

    impl Write for RecordCounter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    /// Serve a handshake with `framing`, write three lines in one write, and return how many
    /// records the client received for them.
    fn records_for_three_lines(framing: Framing) -> usize {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = identity_files(dir.path());
        let identity = Identity::load(&cert, &key).unwrap();
        let (server_end, client_end) = UnixStream::pair().unwrap();
        let records = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&records);
        let client = std::thread::spawn(move || {
            let name = rustls::pki_types::ServerName::try_from("odmr.test.example").unwrap();
            let conn = rustls::ClientConnection::new(client_config(der), name).unwrap();
            let sock =
                RecordCounter { inner: client_end, records: counted, header: Vec::new(), body_left: 0 };
            let mut tls = std::io::BufReader::new(rustls::StreamOwned::new(conn, sock));
            let mut line = String::new();
            std::io::BufRead::read_line(&mut tls, &mut line).unwrap();
            assert_eq!(line, "ready\r\n");
            let before = tls.get_ref().sock.records.load(Ordering::SeqCst);
            tls.get_mut().write_all(b"go\r\n").unwrap();
            let mut rest = String::new();
            for _ in 0..3 {
                std::io::BufRead::read_line(&mut tls, &mut rest).unwrap();
            }
            assert_eq!(rest, "a\r\nbb\r\nccc\r\n");
            tls.get_ref().sock.records.load(Ordering::SeqCst) - before
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut wire =
            TlsWire::accept(server_end, identity.config, framing, deadline).map_err(|(e, _)| e).unwrap();
        wire.write_all(b"ready\r\n").unwrap();
        wire.flush().unwrap();
        let mut go = [0u8; 4];
        wire.read_exact(&mut go).unwrap();
        assert_eq!(&go, b"go\r\n");
        wire.write_all(b"a\r\nbb\r\nccc\r\n").unwrap();
        wire.flush().unwrap();
        client.join().unwrap()
    }

    #[test]
    fn line_framing_puts_each_line_in_a_record_of_its_own() {
        assert_eq!(records_for_three_lines(Framing::Line), 3);
    }

    #[test]
    fn packed_framing_puts_a_write_in_one_record() {
        assert_eq!(records_for_three_lines(Framing::Packed), 1);
    }

    #[test]
    fn a_handshake_that_never_comes_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = identity_files(dir.path());
        let identity = Identity::load(&cert, &key).unwrap();
        let (server_end, _client_end) = UnixStream::pair().unwrap();
        let deadline = Instant::now() + Duration::from_millis(200);
        let (e, _) = TlsWire::accept(server_end, identity.config, Framing::Line, deadline).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn clear_text_where_a_handshake_belongs_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = identity_files(dir.path());
        let identity = Identity::load(&cert, &key).unwrap();
        let (server_end, mut client_end) = UnixStream::pair().unwrap();
        client_end.write_all(b"EHLO injected.example\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (e, _) = TlsWire::accept(server_end, identity.config, Framing::Line, deadline).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn load_names_the_file_that_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = identity_files(dir.path());
        let missing = dir.path().join("missing.pem");
        let e = Identity::load(&missing, &key).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.problem.starts_with("cannot read"), "{e}");

        // A key from another pair does not fit.
        let other = tempfile::tempdir().unwrap();
        let (_, other_key, _) = identity_files(other.path());
        let e = Identity::load(&cert, &other_key).unwrap_err();
        assert_eq!(e.path, other_key);
        assert!(e.problem.contains("does not fit"), "{e}");

        // The key where the certificate belongs.
        let e = Identity::load(&key, &key).unwrap_err();
        assert_eq!(e.path, key);
        assert!(e.problem.contains("no PEM"), "{e}");

        let identity = Identity::load(&cert, &key).unwrap();
        assert!(identity.subject.contains("rcgen") || !identity.subject.is_empty());
        assert!(identity.days_left(SystemTime::now()) > 300, "rcgen's default validity is years");
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["old.example".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let e = Identity::load(&cert_path, &key_path).unwrap_err();
        assert!(e.problem.contains("has expired"), "{e}");
    }
}
