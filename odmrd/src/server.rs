//! How sessions reach odmrd: inetd mode (one session on fds 0 and 1) and the
//! standalone listener (one thread per connection).
//!
//! This module owns the listening socket, the session limits (`max_sessions`,
//! `max_sessions_per_ip`, answered with 421), SIGTERM/SIGINT (stop accepting,
//! let running sessions finish, return), and dropping root privileges after
//! binding. It does not speak the protocol: [`crate::session`] does.

use crate::backend::Backends;
use crate::config::Config;
use crate::conn::Stdio;
use crate::log;
use crate::proto;
use crate::session::{self, Start};
use crate::tls::Identity;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getpeername, SockaddrStorage};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// The peer address of the socket on fd 0, if fd 0 is an IP socket.
pub fn stdin_peer() -> Option<IpAddr> {
    let storage: SockaddrStorage = getpeername(0).ok()?;
    if let Some(v4) = storage.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    storage.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Is fd 0 a socket (as under inetd, xinetd, systemd Accept=yes)?
pub fn stdin_is_socket() -> bool {
    crate::conn::fd_is_socket(0)
}

/// inetd mode: serve exactly one session on standard input and output (`start` says whether
/// it begins with a TLS handshake: `odmrd --inetd --tls`).
pub fn run_inetd(
    config: &Config,
    backends: &Backends,
    tls: Option<&Identity>,
    start: session::Start,
) -> io::Result<session::End> {
    let wire = Stdio::take()?;
    Ok(session::serve(config, backends, tls, start, wire, stdin_peer()))
}

/// Tell an inetd client that the service cannot start (before exiting).
pub fn refuse_inetd_client(hostname: &str) {
    let mut out = io::stdout();
    let _ =
        out.write_all(proto::reply(421, &format!("{hostname} service not available, closing")).as_bytes());
    let _ = out.flush();
}

/// Bind the standalone listener.
pub fn bind(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
}

/// Switch to `user` (its uid, gid, and only that group) when running as root.
pub fn drop_privileges(user: &str) -> Result<(), String> {
    use nix::unistd::{getuid, setgid, setgroups, setuid, User};
    if !getuid().is_root() {
        return Ok(());
    }
    let entry = User::from_name(user)
        .map_err(|e| format!("looking up user {user}: {e}"))?
        .ok_or_else(|| format!("no such user: {user}"))?;
    setgroups(&[entry.gid]).map_err(|e| format!("setgroups for {user}: {e}"))?;
    setgid(entry.gid).map_err(|e| format!("setgid {} for {user}: {e}", entry.gid))?;
    setuid(entry.uid).map_err(|e| format!("setuid {} for {user}: {e}", entry.uid))?;
    Ok(())
}

/// Counts of running sessions, total and per client address.
#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

struct Limits {
    max_total: usize,
    max_per_ip: usize,
    counts: Mutex<Counts>,
    idle: Condvar,
}

/// A running session's place in the counts; released on drop, even when the
/// session thread panics.
struct Slot {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, &'static str> {
        let mut counts = self.counts();
        if counts.total >= self.max_total {
            return Err("too many sessions");
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err("too many sessions from your address");
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot { limits: Arc::clone(self), ip })
    }

    fn wait_idle(&self) {
        let mut counts = self.counts();
        while counts.total > 0 {
            counts = self.idle.wait(counts).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts();
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
        if counts.total == 0 {
            self.limits.idle.notify_all();
        }
    }
}

/// The standalone listeners: the ODMR port (clear text, STARTTLS when `[tls]` is set) and,
/// with `[server] listen_tls`, an implicit-TLS port.
pub struct Listeners {
    pub clear: TcpListener,
    pub implicit_tls: Option<TcpListener>,
}

/// Standalone mode: accept until SIGTERM or SIGINT, a thread per session,
/// then wait for the running sessions to finish.
pub fn run_standalone(
    config: Arc<Config>,
    backends: Backends,
    tls: Option<Arc<Identity>>,
    listeners: Listeners,
) -> io::Result<()> {
    let Listeners { clear: listener, implicit_tls } = listeners;
    let (mut signals, signal_writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, signal_writer.try_clone()?)?;
    }
    listener.set_nonblocking(true)?;
    if let Some(tls_listener) = &implicit_tls {
        tls_listener.set_nonblocking(true)?;
        log::info(&format!("event=listening address={} tls=implicit", tls_listener.local_addr()?));
    }
    let limits = Arc::new(Limits {
        max_total: config.server.max_sessions,
        max_per_ip: config.server.max_sessions_per_ip,
        counts: Mutex::new(Counts::default()),
        idle: Condvar::new(),
    });
    log::info(&format!("event=listening address={}", listener.local_addr()?));
    'serving: loop {
        let mut fds = vec![
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(tls_listener) = &implicit_tls {
            fds.push(PollFd::new(tls_listener.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[0].revents().is_some_and(|r| !r.is_empty()) {
            let _ = signals.read(&mut [0u8; 16]);
            break 'serving;
        }
        let ready: Vec<bool> =
            fds[1..].iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        let ports = [(Some(&listener), Start::Clear), (implicit_tls.as_ref(), Start::ImplicitTls)];
        for ((port, start), _) in ports.into_iter().zip(ready).filter(|(_, ready)| *ready) {
            let Some(port) = port else { continue };
            accept_ready(port, |stream, ip| {
                start_session(&config, &backends, &tls, &limits, stream, ip, start)
            });
        }
    }
    drop(listener);
    drop(implicit_tls);
    log::info("event=shutdown note=\"stopped accepting; waiting for running sessions\"");
    limits.wait_idle();
    log::info("event=stopped");
    Ok(())
}

/// Accept every connection waiting on `listener`.
fn accept_ready(listener: &TcpListener, mut start: impl FnMut(TcpStream, IpAddr)) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => start(stream, peer.ip()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of descriptors and the like: keep serving, slowly.
                log::error(&format!("event=accept-failed error=\"{e}\""));
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
        }
    }
}

fn start_session(
    config: &Arc<Config>,
    backends: &Backends,
    tls: &Option<Arc<Identity>>,
    limits: &Arc<Limits>,
    stream: TcpStream,
    ip: IpAddr,
    start: Start,
) {
    let slot = match limits.admit(ip) {
        Ok(slot) => slot,
        Err(why) => {
            log::warn(&format!("event=refused client={ip} reason=\"{why}\""));
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let text = format!("{} {why}, try again later", config.server.hostname);
            let _ = stream.write_all(proto::reply(421, &text).as_bytes());
            return;
        }
    };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let (config, backends, tls) = (Arc::clone(config), backends.clone(), tls.clone());
    let spawned = std::thread::Builder::new().name(format!("session-{ip}")).spawn(move || {
        let _slot = slot;
        session::serve(&config, &backends, tls.as_deref(), start, stream, Some(ip));
    });
    if let Err(e) = spawned {
        log::error(&format!("event=spawn-failed client={ip} error=\"{e}\""));
    }
}
