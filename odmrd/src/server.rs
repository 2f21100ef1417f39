//! How sessions reach odmrd: inetd mode (one session on fds 0 and 1) and the
//! standalone listener (one thread per connection).
//!
//! This module owns the listening socket, the session limits (`max_sessions`,
//! `max_sessions_per_ip`, answered with 421), signals, and dropping root
//! privileges after binding. It does not speak the protocol: [`crate::session`]
//! does.
//!
//! Signals in standalone mode: SIGTERM/SIGINT stop accepting, let running
//! sessions finish, and return; SIGHUP re-reads the configuration and reloads
//! the backends for new sessions (running sessions finish on the old ones; an
//! invalid new configuration is logged and the old one stays); SIGUSR1, SIGUSR2
//! and SIGALRM, which an operator may send by habit, are logged and otherwise
//! ignored. Under inetd a session ignores SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM
//! (a `killall -HUP odmrd` must not cut a delivery short). SIGPIPE is ignored
//! by the Rust runtime: a vanished peer is an I/O error of that session.

use crate::backend::Backends;
use crate::config::Config;
use crate::conn::Stdio;
use crate::log;
use crate::proto;
use crate::session;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getpeername, SockaddrStorage};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
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

/// inetd mode: serve exactly one session on standard input and output.
pub fn run_inetd(config: &Config, backends: &Backends) -> io::Result<session::End> {
    let wire = Stdio::take()?;
    Ok(session::serve(config, backends, wire, stdin_peer()))
}

/// The signals an operator may send by habit that must not kill odmrd silently.
const HABITUAL: [i32; 4] = [
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGUSR1,
    signal_hook::consts::SIGUSR2,
    signal_hook::consts::SIGALRM,
];

/// Under inetd: SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM do nothing (each session
/// reads the configuration afresh anyway).
pub fn ignore_habitual_signals() {
    let ignored = Arc::new(AtomicBool::new(false));
    for signal in HABITUAL {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&ignored)) {
            log::warn(&format!("event=signal-setup signal={signal} error=\"{e}\""));
        }
    }
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

/// A fresh configuration and its backends, for SIGHUP; the error is logged.
pub type Reload<'a> = dyn Fn() -> Result<(Arc<Config>, Backends), String> + 'a;

/// Which signals arrived since the last look; set by the handlers, read by the loop.
struct Arrived {
    stop: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    /// SIGUSR1, SIGUSR2, SIGALRM: logged, otherwise ignored.
    other: Vec<(&'static str, Arc<AtomicBool>)>,
}

impl Arrived {
    /// Register the handlers: each sets its flag and wakes the loop through `wake`.
    fn register(wake: &UnixStream) -> io::Result<Arrived> {
        use signal_hook::consts::{SIGALRM, SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
        let flag = |signal: i32| -> io::Result<Arc<AtomicBool>> {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(signal, Arc::clone(&flag))?;
            signal_hook::low_level::pipe::register(signal, wake.try_clone()?)?;
            Ok(flag)
        };
        let stop = flag(SIGTERM)?;
        signal_hook::flag::register(SIGINT, Arc::clone(&stop))?;
        signal_hook::low_level::pipe::register(SIGINT, wake.try_clone()?)?;
        Ok(Arrived {
            stop,
            reload: flag(SIGHUP)?,
            other: vec![("USR1", flag(SIGUSR1)?), ("USR2", flag(SIGUSR2)?), ("ALRM", flag(SIGALRM)?)],
        })
    }
}

/// Standalone mode: accept until SIGTERM or SIGINT, a thread per session,
/// then wait for the running sessions to finish. SIGHUP calls `reload`.
pub fn run_standalone(
    config: Arc<Config>,
    backends: Backends,
    listener: TcpListener,
    reload: &Reload,
) -> io::Result<()> {
    let (mut config, mut backends) = (config, backends);
    let (mut signals, signal_writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    let arrived = Arrived::register(&signal_writer)?;
    listener.set_nonblocking(true)?;
    let limits = Arc::new(Limits {
        max_total: config.server.max_sessions,
        max_per_ip: config.server.max_sessions_per_ip,
        counts: Mutex::new(Counts::default()),
        idle: Condvar::new(),
    });
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
            while signals.read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {}
            if arrived.stop.load(Ordering::Relaxed) {
                break 'serving;
            }
            if arrived.reload.swap(false, Ordering::Relaxed) {
                match reload() {
                    Ok((fresh, fresh_backends)) => {
                        if fresh.server.max_sessions != config.server.max_sessions
                            || fresh.server.max_sessions_per_ip != config.server.max_sessions_per_ip
                        {
                            log::warn("event=reload note=\"max_sessions changes take effect at a restart\"");
                        }
                        (config, backends) = (fresh, fresh_backends);
                        log::info(&format!("event=reloaded {}", backends.describe()));
                    }
                    Err(why) => log::error(&format!(
                        "event=reload-failed note=\"the previous configuration stays in force\" error=\"{why}\""
                    )),
                }
            }
            for (name, flag) in &arrived.other {
                if flag.swap(false, Ordering::Relaxed) {
                    log::info(&format!(
                        "event=signal signal={name} note=\"ignored; HUP reloads, TERM stops\""
                    ));
                }
            }
        }
        loop {
            match listener.accept() {
                Ok((stream, peer)) => start_session(&config, &backends, &limits, stream, peer.ip()),
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
    stream: TcpStream,
    ip: IpAddr,
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
    let (config, backends) = (Arc::clone(config), backends.clone());
    let spawned = std::thread::Builder::new().name(format!("session-{ip}")).spawn(move || {
        let _slot = slot;
        session::serve(&config, &backends, stream, Some(ip));
    });
    if let Err(e) = spawned {
        log::error(&format!("event=spawn-failed client={ip} error=\"{e}\""));
    }
}
