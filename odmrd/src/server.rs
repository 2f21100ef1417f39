//! How sessions reach odmrd: inetd mode (one session on fds 0 and 1) and the
//! standalone listener (one thread per connection).
//!
//! This module owns the listening socket (with a backlog that lets a burst of
//! customers queue), the session limits (`max_sessions`,
//! `max_sessions_per_ip`, answered with 421), where the AUTH throttle of
//! [`crate::throttle`] lives (in memory standalone, a state file under inetd)
//! and its refusals at connect, running out of file descriptors
//! (a reserve descriptor so that excess clients still get 421; accept backs
//! off and the condition is logged once per interval), signals, and dropping
//! root privileges after binding. It does not speak the protocol:
//! [`crate::session`] does.
//!
//! Signals in standalone mode: SIGTERM/SIGINT stop accepting, let running
//! sessions finish within `shutdown_grace`, then close the connections left,
//! whose current messages stay queued; SIGHUP re-reads the configuration and
//! reloads the backends and the TLS identity for new sessions (running
//! sessions finish on the old ones; an invalid new configuration is logged and
//! the old one stays); SIGUSR1, SIGUSR2 and SIGALRM, which an operator may send
//! by habit, are logged and otherwise ignored. Under inetd a session ignores
//! SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM (a `killall -HUP odmrd` must not cut a
//! delivery short). SIGPIPE is ignored by the Rust runtime: a vanished peer is
//! an I/O error of that session.

use crate::backend::Backends;
use crate::config::Config;
use crate::conn::Stdio;
use crate::log;
use crate::proto;
use crate::session::{self, Start};
use crate::throttle::{Gate, Refusal, Throttle};
use crate::tls::Identity;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getpeername, SockaddrStorage};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
    start: Start,
) -> io::Result<session::End> {
    let mut wire = Stdio::take()?;
    let peer = stdin_peer();
    let throttle = Throttle::in_file(&config.auth, &config.server.lock_directory);
    if let Some(refusal) = peer.and_then(|ip| throttle.on_connect(ip)) {
        refuse_throttled(&mut wire, &config.server.hostname, peer, refusal);
        return Ok(session::End::Refused);
    }
    let gate = Gate::new(&throttle, peer, &std::thread::sleep);
    Ok(session::serve(config, backends, tls, start, wire, peer, &gate))
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
            log::Event::new("signal-setup").field("signal", signal).field("error", e).warn();
        }
    }
}

/// What new sessions are served with: the configuration, its backends and the TLS identity.
pub type Serving = (Arc<Config>, Backends, Option<Arc<Identity>>);

/// A fresh [`Serving`] for SIGHUP, or why not (logged; the old one stays).
pub type Reload<'a> = dyn Fn() -> Result<Serving, String> + 'a;

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

    /// After a wake-up: true to stop; a reload or another signal is handled here.
    fn handle(&self, serving: &mut Serving, reload: &Reload) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return true;
        }
        if self.reload.swap(false, Ordering::Relaxed) {
            match reload() {
                Ok(fresh) => {
                    let (old, new) = (&serving.0.server, &fresh.0.server);
                    if (old.max_sessions, old.max_sessions_per_ip)
                        != (new.max_sessions, new.max_sessions_per_ip)
                    {
                        log::warn("event=reload note=\"max_sessions changes take effect at a restart\"");
                    }
                    *serving = fresh;
                    log::info(&format!("event=reloaded {}", serving.1.describe()));
                }
                Err(why) => log::Event::new("reload-failed")
                    .field("note", "the previous configuration stays in force")
                    .field("error", why)
                    .error(),
            }
        }
        for (name, flag) in &self.other {
            if flag.swap(false, Ordering::Relaxed) {
                log::info(&format!("event=signal signal={name} note=\"ignored; HUP reloads, TERM stops\""));
            }
        }
        false
    }
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

/// Bind the standalone listener with room for `backlog` connections waiting
/// to be accepted (None: the system's maximum). The standard library's fixed
/// 128 is too few when a thousand customers' cron jobs connect at the top of
/// the hour: the kernel drops the excess, and those clients wait for a
/// greeting that never comes.
pub fn bind(addr: SocketAddr, backlog: Option<u32>) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std does: a restarted daemon can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(listen_backlog(backlog).min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// The backlog asked for: `configured`, or else the kernel's cap on listen
/// backlogs (`net.core.somaxconn`; a larger request would be cut to it anyway).
fn listen_backlog(configured: Option<u32>) -> u32 {
    configured.unwrap_or_else(|| {
        let system = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok();
        // 4096: Linux's default since 5.4.
        system.and_then(|text| text.trim().parse().ok()).unwrap_or(4096)
    })
}

/// Raise the soft limit on open files to the hard limit: each session holds
/// a socket, and the soft limit (often 1024) is only a default for programs
/// that do not ask.
fn raise_descriptor_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            log::warn(&format!("event=descriptor-limit soft={soft} hard={hard} note=\"could not raise\""));
        }
    }
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

    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, crate::refusal::Refusal> {
        use crate::refusal::Refusal;
        let mut counts = self.counts();
        if counts.total - counts.waiting >= self.max_total {
            return Err(Refusal::TooManySessions);
        }
        let mine = counts.per_ip.entry(ip).or_insert(0);
        if *mine >= self.max_per_ip {
            return Err(Refusal::TooManyFromAddress);
        }
        *mine += 1;
        counts.total += 1;
        Ok(Slot { limits: Arc::clone(self), ip })
    }

    /// Wait until no session runs, or `deadline`; true when none runs.
    fn wait_idle_until(&self, deadline: Instant) -> bool {
        let mut counts = self.counts();
        while counts.total > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            counts = self.idle.wait_timeout(counts, left).unwrap_or_else(|poisoned| poisoned.into_inner()).0;
        }
        true
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

/// After the shutdown grace, how long the sessions whose connections were
/// closed get to unwind (log, release locks) before the process ends anyway.
const UNWIND_AFTER_CLOSE: Duration = Duration::from_secs(5);

/// How often a recurring accept failure (out of descriptors) is logged.
const ACCEPT_FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Longest pause of `accept` after a failure that the reserve could not help.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Standalone mode: accept until SIGTERM or SIGINT, a thread per session,
/// then wait up to `shutdown_grace` for the running sessions to finish and
/// close the connections of those left.
///
/// `implicit_tls` is the `[server] listen_tls` port, whose sessions begin with a TLS handshake;
/// `tls` is the identity they and STARTTLS present. SIGHUP calls `reload`.
pub fn run_standalone(
    config: Arc<Config>,
    backends: Backends,
    tls: Option<Arc<Identity>>,
    listener: TcpListener,
    implicit_tls: Option<TcpListener>,
    reload: &Reload,
) -> io::Result<()> {
    let mut serving: Serving = (config, backends, tls);
    let (mut signals, signal_writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    let arrived = Arrived::register(&signal_writer)?;
    raise_descriptor_limit();
    listener.set_nonblocking(true)?;
    if let Some(tls_listener) = &implicit_tls {
        tls_listener.set_nonblocking(true)?;
        log::info(&format!("event=listening address={} tls=implicit", tls_listener.local_addr()?));
    }
    let server = &serving.0.server;
    let limits = Arc::new(Limits {
        max_total: server.max_sessions,
        max_per_ip: server.max_sessions_per_ip,
        counts: Mutex::new(Counts::default()),
        idle: Condvar::new(),
    });
    let throttle = Arc::new(Throttle::in_memory(&serving.0.auth));
    let open = Arc::new(OpenConnections::default());
    let mut acceptor = Acceptor::new(&server.hostname);
    log::info(&format!(
        "event=listening address={} backlog={}",
        listener.local_addr()?,
        listen_backlog(server.listen_backlog)
    ));
    'serving: loop {
        // While backing off, only a signal ends the wait.
        let backoff = acceptor.backoff.take();
        let listening = if backoff.is_some() { PollFlags::empty() } else { PollFlags::POLLIN };
        let mut fds =
            vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN), PollFd::new(listener.as_fd(), listening)];
        if let Some(tls_listener) = &implicit_tls {
            fds.push(PollFd::new(tls_listener.as_fd(), listening));
        }
        let timeout = backoff.map_or(PollTimeout::NONE, |pause| {
            PollTimeout::try_from(pause.as_millis().min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let signalled = fds[0].revents().is_some_and(|r| !r.is_empty());
        let ready: Vec<bool> =
            fds[1..].iter().map(|fd| fd.revents().is_some_and(|r| !r.is_empty())).collect();
        drop(fds);
        if signalled {
            while signals.read(&mut [0u8; 64]).is_ok_and(|n| n > 0) {}
            if arrived.handle(&mut serving, reload) {
                break 'serving;
            }
        }
        let (config, backends, tls) = &serving;
        let ports = [(Some(&listener), Start::Clear), (implicit_tls.as_ref(), Start::ImplicitTls)];
        for ((port, start), ready) in ports.into_iter().zip(ready) {
            let Some(port) = port.filter(|_| ready) else { continue };
            loop {
                match port.accept() {
                    Ok((stream, peer)) => {
                        acceptor.recovered();
                        let new = NewSession { stream, ip: peer.ip(), start, tls: tls.clone() };
                        start_session(config, backends, &limits, &throttle, &open, new);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // The client gave up while queued: nothing to answer.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => {}
                    Err(e) => {
                        if !acceptor.failed(port, &e) {
                            break;
                        }
                    }
                }
            }
        }
    }
    drop(listener);
    drop(implicit_tls);
    let grace = serving.0.server.shutdown_grace;
    log::info(&format!(
        "event=shutdown grace={}s note=\"stopped accepting; waiting for running sessions\"",
        grace.as_secs_f64()
    ));
    if !limits.wait_idle_until(Instant::now() + grace) {
        let closed = open.close_all();
        log::warn(&format!(
            "event=shutdown-grace-over closed={closed} note=\"closed the connections left; their current messages stay queued\""
        ));
        limits.wait_idle_until(Instant::now() + UNWIND_AFTER_CLOSE);
    }
    log::info("event=stopped");
    Ok(())
}

/// What the accept loop does when `accept` fails: with a reserve descriptor
/// it can still answer the waiting client `421` when the process is out of
/// descriptors; otherwise it pauses accepting (doubling up to
/// [`MAX_ACCEPT_BACKOFF`]). Either way the failure is logged once per
/// [`ACCEPT_FAILURE_LOG_INTERVAL`], with the count since the last line, not
/// once per attempt.
struct Acceptor {
    refusal: Vec<u8>,
    /// An open `/dev/null`, closed for a moment to make room for one more
    /// connection when none is left.
    reserve: Option<std::fs::File>,
    /// The pause the loop takes before polling the listener again.
    backoff: Option<Duration>,
    next_backoff: Duration,
    logged_at: Option<Instant>,
    failures_unlogged: u64,
    refused_unlogged: u64,
}

impl Acceptor {
    fn new(hostname: &str) -> Acceptor {
        Acceptor {
            refusal: proto::reply(421, &format!("{hostname} out of resources, try again later")).into_bytes(),
            reserve: Self::open_reserve(),
            backoff: None,
            next_backoff: Duration::from_millis(50),
            logged_at: None,
            failures_unlogged: 0,
            refused_unlogged: 0,
        }
    }

    fn open_reserve() -> Option<std::fs::File> {
        std::fs::File::open("/dev/null").ok()
    }

    /// `accept` failed with `error`; true when the loop may accept again at
    /// once (a waiting client was refused with the reserve's help).
    fn failed(&mut self, listener: &TcpListener, error: &io::Error) -> bool {
        self.failures_unlogged += 1;
        let out_of_descriptors = matches!(error.raw_os_error(), Some(nix::libc::EMFILE | nix::libc::ENFILE));
        let refused = out_of_descriptors && self.refuse_one(listener);
        if refused {
            self.refused_unlogged += 1;
        } else {
            self.backoff = Some(self.next_backoff);
            self.next_backoff = (self.next_backoff * 2).min(MAX_ACCEPT_BACKOFF);
        }
        if self.logged_at.map_or(true, |at| at.elapsed() >= ACCEPT_FAILURE_LOG_INTERVAL) {
            let event = if out_of_descriptors { "out-of-descriptors" } else { "accept-failed" };
            log::Event::new(event)
                .field("error", error)
                .field("failures", self.failures_unlogged)
                .field("refused", self.refused_unlogged)
                .field("note", format!("logged at most every {}s", ACCEPT_FAILURE_LOG_INTERVAL.as_secs()))
                .error();
            self.logged_at = Some(Instant::now());
            self.failures_unlogged = 0;
            self.refused_unlogged = 0;
        }
        refused
    }

    /// Close the reserve, accept one waiting client into its place, answer
    /// it 421, close it and take the reserve again. False when there was no
    /// reserve or no client.
    fn refuse_one(&mut self, listener: &TcpListener) -> bool {
        if self.reserve.take().is_none() {
            self.reserve = Self::open_reserve();
            return false;
        }
        let refused = match listener.accept() {
            Ok((mut stream, peer)) => {
                // Never block the accept loop: a fresh socket takes a short
                // reply at once, and a client that cannot get it loses nothing.
                let _ = stream.set_nonblocking(true);
                let _ = stream.write(&self.refusal);
                log::debug(&format!("event=refused client={} reason=out-of-descriptors", peer.ip()));
                true
            }
            Err(_) => false,
        };
        self.reserve = Self::open_reserve();
        refused
    }

    /// `accept` works again.
    fn recovered(&mut self) {
        self.next_backoff = Duration::from_millis(50);
    }
}

/// The sockets of running sessions, so that the ones left at the end of the
/// shutdown grace can be closed. Each is registered while its session owns
/// it ([`Tracked`]) and removed before it is closed, so a descriptor here
/// always belongs to a running session and never to a reused number.
#[derive(Default)]
struct OpenConnections {
    sockets: Mutex<HashMap<u64, RawFd>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl OpenConnections {
    fn sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u64, RawFd>> {
        self.sockets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn track(self: &Arc<Self>, stream: TcpStream) -> Tracked {
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.sockets().insert(id, stream.as_raw_fd());
        Tracked { stream, open: Arc::clone(self), id }
    }

    /// Shut down every registered socket (both directions): the sessions'
    /// reads see the end and their writes fail, so each ends the way a
    /// dropped connection ends it, with the current message uncommitted.
    /// Returns how many.
    fn close_all(&self) -> usize {
        let sockets = self.sockets();
        for &fd in sockets.values() {
            // Holding the lock keeps every fd registered, hence open.
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
        sockets.len()
    }
}

/// A session's TCP connection, registered in [`OpenConnections`] while open.
struct Tracked {
    stream: TcpStream,
    open: Arc<OpenConnections>,
    id: u64,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // Runs before `stream` is closed: see OpenConnections.
        self.open.sockets().remove(&self.id);
    }
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }
}

impl Write for Tracked {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

impl crate::conn::Wire for Tracked {
    fn read_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
    fn write_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
    fn ack_promptly(&self) {
        self.stream.ack_promptly();
    }
}

/// A connection just accepted, and how its session starts.
struct NewSession {
    stream: TcpStream,
    ip: IpAddr,
    start: Start,
    tls: Option<Arc<Identity>>,
}

fn start_session(
    config: &Arc<Config>,
    backends: &Backends,
    limits: &Arc<Limits>,
    throttle: &Arc<Throttle>,
    open: &Arc<OpenConnections>,
    new: NewSession,
) {
    let NewSession { stream, ip, start, tls } = new;
    // Before taking a place or a thread: a capped guesser costs one reply.
    if let Some(refusal) = throttle.on_connect(ip) {
        let mut stream = stream;
        let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
        refuse_throttled(&mut stream, &config.server.hostname, Some(ip), refusal);
        return;
    }
    let slot = match limits.admit(ip) {
        Ok(slot) => slot,
        Err(refusal) => {
            log::Event::new("refused")
                .field("client", ip)
                .field("result", refusal.code())
                .field("reason", refusal.reason())
                .warn();
            let mut stream = stream;
            let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
            let text = refusal.text(&config.server.hostname);
            let _ = stream.write_all(proto::reply(refusal.code(), &text).as_bytes());
            return;
        }
    };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let stream = open.track(stream);
    let (config, backends, throttle) = (Arc::clone(config), backends.clone(), Arc::clone(throttle));
    let spawned = std::thread::Builder::new().name(format!("session-{ip}")).spawn(move || {
        let wait = |duration| slot.wait(duration);
        let gate = Gate::new(&throttle, Some(ip), &wait);
        session::serve(&config, &backends, tls.as_deref(), start, stream, Some(ip), &gate);
    });
    if let Err(e) = spawned {
        log::Event::new("spawn-failed").field("client", ip).field("error", e).error();
    }
}
