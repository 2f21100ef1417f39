//! How sessions reach odmrd: inetd mode (one session on fds 0 and 1) and the
//! standalone listener (one thread per connection).
//!
//! This module owns the listening socket, the session limits (`max_sessions`,
//! `max_sessions_per_ip`, answered with 421), where the AUTH throttle of
//! [`crate::throttle`] lives (in memory standalone, a state file under inetd)
//! and its refusals at connect, SIGTERM/SIGINT (stop accepting,
//! let running sessions finish, return), and dropping root privileges after
//! binding. It does not speak the protocol: [`crate::session`] does.

use crate::backend::Backends;
use crate::config::Config;
use crate::conn::Stdio;
use crate::log;
use crate::proto;
use crate::session;
use crate::throttle::{Gate, Refusal, Throttle};
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

/// inetd mode: serve exactly one session on standard input and output, the
/// AUTH throttle shared with the other inetd processes through its state file.
pub fn run_inetd(config: &Config, backends: &Backends) -> io::Result<session::End> {
    let mut wire = Stdio::take()?;
    let peer = stdin_peer();
    let throttle = Throttle::in_file(&config.auth, &config.server.lock_directory);
    if let Some(refusal) = peer.and_then(|ip| throttle.on_connect(ip)) {
        refuse_throttled(&mut wire, &config.server.hostname, peer, refusal);
        return Ok(session::End::Refused);
    }
    Ok(session::serve_gated(config, backends, wire, peer, &Gate::new(&throttle, peer, &std::thread::sleep)))
}

/// Log a refusal at connect by the throttle and answer 421.
fn refuse_throttled(out: &mut impl Write, hostname: &str, peer: Option<IpAddr>, refusal: Refusal) {
    let client = peer.map_or_else(|| "unknown".to_string(), |ip| ip.to_string());
    log::warn(&format!("event=throttle client={client} stage=connect {refusal}"));
    let _ = out.write_all(proto::reply(421, &format!("{hostname} {}", refusal.reply_text())).as_bytes());
    let _ = out.flush();
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
    /// Of `total`, those waiting out an AUTH delay: they keep their place in
    /// `per_ip` but not in `max_sessions`, so guessers waiting out their
    /// penalties cannot crowd out other addresses.
    waiting: usize,
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
        if counts.total - counts.waiting >= self.max_total {
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

impl Slot {
    /// Sleep `duration` outside of the `max_sessions` count (still counted per
    /// address, and by the shutdown's wait for running sessions).
    fn wait(&self, duration: Duration) {
        self.limits.counts().waiting += 1;
        std::thread::sleep(duration);
        self.limits.counts().waiting -= 1;
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

/// Standalone mode: accept until SIGTERM or SIGINT, a thread per session,
/// then wait for the running sessions to finish.
pub fn run_standalone(config: Arc<Config>, backends: Backends, listener: TcpListener) -> io::Result<()> {
    let (mut signals, signal_writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(signal, signal_writer.try_clone()?)?;
    }
    listener.set_nonblocking(true)?;
    let limits = Arc::new(Limits {
        max_total: config.server.max_sessions,
        max_per_ip: config.server.max_sessions_per_ip,
        counts: Mutex::new(Counts::default()),
        idle: Condvar::new(),
    });
    let throttle = Arc::new(Throttle::in_memory(&config.auth));
    log::info(&format!("event=listening address={}", listener.local_addr()?));
    'serving: loop {
        let mut fds = [
            PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            let _ = signals.read(&mut [0u8; 16]);
            break 'serving;
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    start_session(&config, &backends, &limits, &throttle, stream, peer.ip())
                }
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
    drop(listener);
    log::info("event=shutdown note=\"stopped accepting; waiting for running sessions\"");
    limits.wait_idle();
    log::info("event=stopped");
    Ok(())
}

fn start_session(
    config: &Arc<Config>,
    backends: &Backends,
    limits: &Arc<Limits>,
    throttle: &Arc<Throttle>,
    stream: TcpStream,
    ip: IpAddr,
) {
    // Before taking a place or a thread: a capped guesser costs one reply.
    if let Some(refusal) = throttle.on_connect(ip) {
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        refuse_throttled(&mut stream, &config.server.hostname, Some(ip), refusal);
        return;
    }
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
    let (config, backends, throttle) = (Arc::clone(config), backends.clone(), Arc::clone(throttle));
    let spawned = std::thread::Builder::new().name(format!("session-{ip}")).spawn(move || {
        let wait = |duration| slot.wait(duration);
        let gate = Gate::new(&throttle, Some(ip), &wait);
        session::serve_gated(&config, &backends, stream, Some(ip), &gate);
    });
    if let Err(e) = spawned {
        log::error(&format!("event=spawn-failed client={ip} error=\"{e}\""));
    }
}
