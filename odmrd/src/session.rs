//! One ODMR session: greeting → EHLO → AUTH CRAM-MD5 → ATRN → reversed state.
//!
//! This module owns the provider side of RFC 2645 over any [`Wire`]: the reply
//! codes of the design's table, authentication with failure limits, the
//! authorisation and locking of the requested domains, and the hand-over to
//! [`crate::relay`] once the line is turned around. It does not know whether
//! it runs under inetd or a listener, and it does not parse bytes itself
//! ([`crate::proto`] does).

use crate::backend::Backends;
use crate::config::Config;
use crate::conn::{Conn, Received, Wire};
use crate::locks::{HeldLocks, LockError, Locker};
use crate::log::{self, Level};
use crate::proto::{self, Command, CommandError, Line, LineSplitter, MAX_AUTH_LINE, MAX_COMMAND_LINE};
use crate::refusal::Refusal;
use crate::relay;
use crate::sasl;
use crate::throttle::{self, Decision, Gate};
use crate::tls::{Identity, Link};
use odmr_api::host::QueueCursor;
use odmr_api::{Envelope, Secret, Status};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

/// A session id unique within this host: pid and a per-process counter.
pub fn new_session_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    format!("{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Is `peer` allowed by the `allow` list (empty = everyone)?
pub fn is_allowed(config: &Config, peer: Option<IpAddr>) -> bool {
    let allow = &config.server.allow;
    if allow.is_empty() {
        return true;
    }
    let Some(ip) = peer else { return false };
    let ip = unmapped(ip);
    allow.iter().any(|net| net.contains(&ip))
}

/// An IPv4 client on a dual-stack socket appears as ::ffff:a.b.c.d: as a.b.c.d.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Is `peer` in one of a user's `allowed_networks` (`address` or `address/prefix`, as the
/// backend wrote them; one that does not parse matches nothing)?
fn in_networks(networks: &[String], peer: Option<IpAddr>) -> bool {
    let Some(ip) = peer.map(unmapped) else { return false };
    networks.iter().any(|net| match net.parse::<ipnet::IpNet>() {
        Ok(net) => net.contains(&ip),
        Err(_) => net.parse::<IpAddr>().is_ok_and(|one| unmapped(one) == ip),
    })
}

/// How a session ended, for the server's log and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// QUIT, or the relay finished.
    Normal,
    /// The client went away.
    Disconnected,
    /// Idle timeout (421 sent).
    TimedOut,
    /// Refused at connect (554) or after too many AUTH failures (421).
    Refused,
}

impl std::fmt::Display for End {
    /// The log's word: `normal`, `disconnected`, `timed-out`, `refused`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::Normal => "normal",
            End::Disconnected => "disconnected",
            End::TimedOut => "timed-out",
            End::Refused => "refused",
        })
    }
}

struct Session<'a, W: Wire> {
    config: &'a Config,
    backends: &'a Backends,
    /// The server identity when `[tls]` is configured.
    tls: Option<&'a Identity>,
    id: String,
    conn: Conn<Link<W>>,
    splitter: LineSplitter,
    user: Option<String>,
    failures: u32,
    /// After STARTTLS everything learnt in clear text is forgotten: a new EHLO comes first.
    needs_ehlo: bool,
    /// The client's address as logged (`client=`).
    client: String,
    /// Authentication throttling across connections.
    gate: &'a Gate<'a>,
    /// The client's address, when known.
    peer: Option<IpAddr>,
}

/// How the connection starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Clear text; STARTTLS is offered when `[tls]` is configured.
    Clear,
    /// Implicit TLS (fetchmail's `ssl`): the handshake comes before the greeting.
    ImplicitTls,
}

/// Serve one session on `wire` from the peer `peer` (None when unknown), its AUTH attempts
/// throttled through `gate` ([`Gate::open`]: not at all). `tls` is the identity to present on
/// STARTTLS or, with [`Start::ImplicitTls`], at once.
pub fn serve<W: Wire>(
    config: &Config,
    backends: &Backends,
    tls: Option<&Identity>,
    start: Start,
    wire: W,
    peer: Option<IpAddr>,
    gate: &Gate<'_>,
) -> End {
    let id = new_session_id();
    // Every line of this thread until the session ends, plugins' included, carries its id.
    let _scope = log::SessionScope::enter(&id);
    let client = peer.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into());
    let mut session = Session {
        config,
        backends,
        tls,
        conn: Conn::new(Link::Plain(wire), config.server.idle_timeout),
        splitter: LineSplitter::new(MAX_COMMAND_LINE),
        id,
        user: None,
        failures: 0,
        needs_ehlo: false,
        client: client.clone(),
        gate,
        peer,
    };
    session.conn.set_limit(Some(std::time::Instant::now() + config.server.session_timeout));
    let hostname = &config.server.hostname;
    if !is_allowed(config, peer) {
        let refusal = Refusal::NotAllowed;
        let event = log::Event::new("refused").field("client", &client);
        event.field("result", refusal.code()).field("reason", refusal.reason()).warn();
        if start == Start::Clear {
            let _ = session.answer(&refusal);
            let _ = session.conn.flush();
        }
        return End::Refused;
    }
    log::Event::new("connect").field("client", &client).info();
    if start == Start::ImplicitTls && !session.start_tls(&client) {
        return End::Disconnected;
    }
    let end = match session.reply(220, &format!("{hostname} ESMTP odmrd ODMR service ready")) {
        Ok(()) => session.run(),
        Err(_) => End::Disconnected,
    };
    let _ = session.conn.flush();
    log::Event::new("close").field("end", end).info();
    end
}

impl<W: Wire> Session<'_, W> {
    fn reply(&mut self, code: u16, text: &str) -> std::io::Result<()> {
        self.conn.send(proto::reply(code, text).as_bytes())
    }

    fn log(&self, fields: &str) {
        log::info(&format!("session={} {fields}", self.id));
    }

    /// Answer `refusal` and log it at `level` as `event` with `result=CODE reason=WORD`: the code
    /// and the reason come from the one list of refusals.
    fn refuse(&mut self, refusal: Refusal, event: log::Event, level: Level) -> std::io::Result<()> {
        event.field("result", refusal.code()).field("reason", refusal.reason()).at(level);
        self.answer(&refusal)
    }

    /// Answer `refusal` without a log line (the session's ordinary back and forth).
    fn answer(&mut self, refusal: &Refusal) -> std::io::Result<()> {
        self.reply(refusal.code(), &refusal.text(&self.config.server.hostname))
    }

    /// Read the next command line, answering overlong lines and timeouts.
    fn next_line(&mut self) -> Result<Vec<u8>, End> {
        loop {
            if let Some(line) = self.read_line()? {
                return Ok(line);
            }
        }
    }

    /// Read one line; None when it was too long (consumed to its end and
    /// answered with 500 once). A line not complete within `idle_timeout`
    /// of its first byte, or the end of `session_timeout`, is answered with
    /// 421 and ends the session.
    fn read_line(&mut self) -> Result<Option<Vec<u8>>, End> {
        match self.conn.read_line(&mut self.splitter) {
            Ok(Received::Item(Line::Complete(line))) => Ok(Some(line)),
            Ok(Received::Item(Line::TooLong)) => {
                self.answer(&Refusal::LineTooLong).map_err(|_| End::Disconnected)?;
                Ok(None)
            }
            Ok(Received::TimedOut) => {
                let refusal =
                    if self.conn.limit_reached() { Refusal::SessionTimeout } else { Refusal::IdleTimeout };
                // The limit is spent; the 421 still gets the usual time to go out.
                self.conn.set_limit(None);
                let _ = self.refuse(refusal, log::Event::new("timeout"), Level::Info);
                Err(End::TimedOut)
            }
            Ok(Received::Closed) | Err(_) => Err(End::Disconnected),
        }
    }

    /// Read the client's response to a 334 challenge, up to [`MAX_AUTH_LINE`]
    /// octets (RFC 4954). None when it was too long: it was answered with 500
    /// and the exchange is over, so the next line is a command again.
    fn auth_response_line(&mut self) -> Result<Option<Vec<u8>>, End> {
        self.splitter.set_max(MAX_AUTH_LINE);
        let line = self.read_line();
        self.splitter.set_max(MAX_COMMAND_LINE);
        line
    }

    fn run(&mut self) -> End {
        loop {
            let line = match self.next_line() {
                Ok(line) => line,
                Err(end) => return end,
            };
            let step = match proto::parse_command(&line) {
                Ok(command) => {
                    if matches!(command, Command::Atrn(_)) && proto::atrn_list_has_spaces(&line) {
                        self.log("event=atrn-list-with-spaces note=\"accepted; RFC 2645 has no spaces in the list\"");
                    }
                    self.command(command)
                }
                Err(CommandError::Unknown) => self.answer(&Refusal::Unrecognized).map(|()| None),
                Err(CommandError::Syntax(why)) => self.answer(&Refusal::Syntax(why)).map(|()| None),
            };
            match step {
                Ok(None) => {}
                Ok(Some(end)) => return end,
                Err(_) => return End::Disconnected,
            }
        }
    }

    /// Handle one command; Some(end) closes the session.
    fn command(&mut self, command: Command) -> std::io::Result<Option<End>> {
        let hostname = self.config.server.hostname.clone();
        match command {
            Command::Ehlo(_) => {
                self.needs_ehlo = false;
                let auth = format!("AUTH {}", self.offered_mechanisms().join(" "));
                let mut lines = vec![hostname.as_str()];
                if self.starttls_offered() {
                    lines.push("STARTTLS");
                }
                lines.extend([auth.as_str(), "ATRN"]);
                self.conn.send(proto::reply_multiline(250, &lines).as_bytes())?;
            }
            Command::Helo(_) => {
                self.needs_ehlo = false;
                self.reply(250, &hostname)?
            }
            Command::Auth { .. } | Command::Atrn(_) if self.needs_ehlo => {
                self.reply(503, "5.5.1 Send EHLO again after STARTTLS")?
            }
            Command::Auth { mechanism, initial_response } => return self.auth(&mechanism, initial_response),
            Command::Atrn(domains) => return self.atrn(domains),
            Command::Quit => {
                self.reply(221, &format!("{hostname} closing connection"))?;
                return Ok(Some(End::Normal));
            }
            Command::Rset | Command::Noop => self.reply(250, "OK")?,
            Command::Help => self.reply(214, "Commands: EHLO HELO AUTH ATRN RSET NOOP HELP QUIT")?,
            Command::StartTls if self.conn.wire_mut().is_tls() => {
                self.reply(503, "5.5.1 TLS already active")?
            }
            Command::StartTls if self.tls.is_none() => self.reply(502, "5.5.1 STARTTLS not available")?,
            Command::StartTls => {
                self.reply(220, "2.0.0 Ready to start TLS")?;
                let client = "starttls";
                if !self.start_tls(client) {
                    return Ok(Some(End::Disconnected));
                }
                // RFC 3207 §4.2: discard what was learnt before TLS.
                self.user = None;
                self.needs_ehlo = true;
            }
            Command::NotImplemented(verb) => self.answer(&Refusal::NotImplemented(verb))?,
        }
        Ok(None)
    }

    fn starttls_offered(&mut self) -> bool {
        self.tls.is_some() && !self.conn.wire_mut().is_tls()
    }

    /// Run the TLS handshake (after `220` to STARTTLS, or at once on an implicit-TLS port) and
    /// log it; false when it failed and the session must end.
    fn start_tls(&mut self, _client: &str) -> bool {
        let Some(identity) = self.tls else { return false };
        if let Err(e) = self.conn.flush() {
            self.log(&format!("event=tls result=failed error=\"{e}\""));
            return false;
        }
        // Bytes the client sent behind STARTTLS in clear text are not commands (CVE-2011-0411).
        let injected = self.conn.discard_buffered_input();
        self.splitter = LineSplitter::new(MAX_COMMAND_LINE);
        if injected > 0 {
            log::warn(&format!("session={} event=tls note=\"discarded {injected} octets sent in clear text behind STARTTLS\"", self.id));
        }
        let deadline = std::time::Instant::now() + self.config.server.idle_timeout;
        let framing = self.config.tls.framing;
        match self.conn.wire_mut().start_tls(std::sync::Arc::clone(&identity.config), framing, deadline) {
            Ok(()) => {
                let described = self.conn.wire_mut().describe().unwrap_or_default();
                self.log(&format!("event=tls result=ok {described}"));
                true
            }
            Err(e) => {
                log::warn(&format!("session={} event=tls result=failed error=\"{e}\"", self.id));
                false
            }
        }
    }

    /// Mechanisms offered: CRAM-MD5 always (RFC 2645 mandates it); PLAIN and LOGIN, where
    /// `[auth] mechanisms` lists them, only under TLS, since they carry the password itself.
    fn offered_mechanisms(&mut self) -> Vec<&'static str> {
        let under_tls = self.conn.wire_mut().is_tls();
        let mut offered = vec!["CRAM-MD5"];
        for mechanism in ["PLAIN", "LOGIN"] {
            if under_tls && self.config.auth.mechanisms.iter().any(|m| m == mechanism) {
                offered.push(mechanism);
            }
        }
        offered
    }

    fn auth(&mut self, mechanism: &str, initial_response: Option<String>) -> std::io::Result<Option<End>> {
        if self.user.is_some() {
            self.answer(&Refusal::AlreadyAuthenticated)?;
            return Ok(None);
        }
        let under_tls = self.conn.wire_mut().is_tls();
        if self.config.tls.require && !under_tls {
            self.log(&format!("event=auth result=refused reason=tls-required mechanism={mechanism}"));
            self.reply(530, "5.7.0 Must issue a STARTTLS command first")?;
            return Ok(None);
        }
        if !self.offered_mechanisms().contains(&mechanism) {
            if !under_tls && self.config.auth.mechanisms.iter().any(|m| m == mechanism) {
                self.reply(538, "5.7.11 Encryption required for requested authentication mechanism")?;
            } else {
                self.answer(&Refusal::UnknownMechanism)?;
            }
            return Ok(None);
        }
        match self.gate.attempt() {
            Decision::Proceed { wait: 0 } => {}
            Decision::Proceed { wait } => {
                self.log(&format!("event=throttle client={} decision=wait wait_ms={wait}", self.client));
                self.gate.wait(std::time::Duration::from_millis(wait));
                if let Some(refusal) = self.gate.after_wait() {
                    return self.refuse_throttled(refusal);
                }
            }
            Decision::Refuse(refusal) => return self.refuse_throttled(refusal),
        }
        let exchange = match mechanism {
            "PLAIN" => self.plain_exchange(initial_response)?,
            "LOGIN" => self.login_exchange(initial_response)?,
            _ => self.cram_md5_exchange(initial_response)?,
        };
        let (user, verdict) = match exchange {
            Exchange::Ended(end) => return Ok(Some(end)),
            Exchange::Refused => return Ok(None),
            Exchange::Checked { user, verdict } => (user, verdict),
        };
        // Dovecot's allow_nets: a login from elsewhere is refused like a wrong password.
        let verdict = verdict.and_then(|()| self.check_allowed_networks(&user));
        match verdict {
            Ok(()) => {
                let event = log::Event::new("auth").field("user", &user).field("result", "ok");
                event.field("mechanism", mechanism).field("client", &self.client).info();
                self.gate.succeeded();
                self.reply(235, "Authentication successful")?;
                self.user = Some(user);
                Ok(None)
            }
            Err(Verdict::Unavailable(status)) => {
                let event = log::Event::new("auth").field("user", &user).field("result", "tempfail");
                event.field("status", status).field("client", &self.client).error();
                self.answer(&Refusal::CredentialsUnavailable)?;
                Ok(None)
            }
            Err(Verdict::Wrong(reason)) => {
                self.failures += 1;
                // At warning level, the client last (after the quoted user): what fail2ban's
                // filter (etc/fail2ban/filter.d/odmrd.conf) matches.
                log::Event::new("auth")
                    .field("user", &user)
                    .field("result", "failed")
                    .field("reason", reason)
                    .field("failures", self.failures)
                    .field("client", &self.client)
                    .warn();
                let capped = self.gate.failed();
                self.gate.wait(self.config.auth.failure_delay);
                if let Some(refusal) = capped {
                    return self.refuse_throttled(refusal);
                }
                if self.failures >= self.config.auth.max_failures {
                    self.answer(&Refusal::TooManyFailures)?;
                    return Ok(Some(End::Refused));
                }
                self.answer(&Refusal::AuthFailed)?;
                Ok(None)
            }
        }
    }

    /// After the right password: the user's `allowed_networks`, if the store sets any, must
    /// hold the client's address.
    fn check_allowed_networks(&self, user: &str) -> Result<(), Verdict> {
        match self.backends.credentials.allowed_networks(user) {
            Ok(None) => Ok(()),
            Ok(Some(networks)) if in_networks(&networks, self.peer) => Ok(()),
            Ok(Some(networks)) => {
                log::Event::new("auth-refused")
                    .field("user", user)
                    .field_opt("client", self.peer)
                    .field("allow_nets", networks.join(","))
                    .field("note", "the client is outside the user's allowed networks")
                    .info();
                Err(Verdict::Wrong("client-not-in-allow-nets"))
            }
            Err(status) => Err(Verdict::Unavailable(status)),
        }
    }

    /// The throttle refuses this client's AUTH: log, 421, end.
    fn refuse_throttled(&mut self, refusal: throttle::Refusal) -> std::io::Result<Option<End>> {
        self.log(&format!("event=throttle client={} {refusal}", self.client));
        self.reply(421, refusal.reply_text())?;
        Ok(Some(End::Refused))
    }

    /// Send a `334` with `prompt` (base64-encoded) and read the answer; `*` cancels (501).
    fn sasl_answer(&mut self, prompt: &[u8]) -> std::io::Result<Result<String, Exchange>> {
        use base64::Engine as _;
        self.reply(334, &base64::engine::general_purpose::STANDARD.encode(prompt))?;
        let line = match self.auth_response_line() {
            Ok(Some(line)) => line,
            Ok(None) => {
                self.log("event=auth result=too-long");
                return Ok(Err(Exchange::Refused));
            }
            Err(end) => return Ok(Err(Exchange::Ended(end))),
        };
        if line == b"*" {
            self.log("event=auth result=cancelled");
            self.answer(&Refusal::AuthCancelled)?;
            return Ok(Err(Exchange::Refused));
        }
        match String::from_utf8(line) {
            Ok(text) => Ok(Ok(text)),
            Err(_) => self.malformed("response").map(Err),
        }
    }

    /// Answer a response that cannot be decoded.
    fn malformed(&mut self, what: &'static str) -> std::io::Result<Exchange> {
        self.log("event=auth result=malformed");
        self.answer(&Refusal::AuthMalformed(what))?;
        Ok(Exchange::Refused)
    }

    fn cram_md5_exchange(&mut self, initial_response: Option<String>) -> std::io::Result<Exchange> {
        if initial_response.is_some() {
            self.answer(&Refusal::AuthInitialResponse)?;
            return Ok(Exchange::Refused);
        }
        let challenge = sasl::new_challenge(&self.config.server.hostname);
        let answer = match self.sasl_answer(challenge.as_bytes())? {
            Ok(answer) => answer,
            Err(exchange) => return Ok(exchange),
        };
        let Ok((user, digest)) = sasl::decode_cram_response(&answer) else {
            return self.malformed("CRAM-MD5 response");
        };
        let verdict = self.verify(&user, &challenge, &digest);
        Ok(Exchange::Checked { user, verdict })
    }

    /// AUTH PLAIN (RFC 4616), with or without an initial response (`=` is an empty one).
    fn plain_exchange(&mut self, initial_response: Option<String>) -> std::io::Result<Exchange> {
        let answer = match initial_response {
            Some(response) if response != "=" => response,
            _ => match self.sasl_answer(b"")? {
                Ok(answer) => answer,
                Err(exchange) => return Ok(exchange),
            },
        };
        let Ok((user, password)) = sasl::decode_plain_response(&answer) else {
            return self.malformed("PLAIN response");
        };
        let verdict = self.verify_password(&user, &password);
        Ok(Exchange::Checked { user, verdict })
    }

    /// AUTH LOGIN: the user name (possibly as initial response), then the password.
    fn login_exchange(&mut self, initial_response: Option<String>) -> std::io::Result<Exchange> {
        let user = match initial_response {
            Some(response) => response,
            None => match self.sasl_answer(b"Username:")? {
                Ok(answer) => answer,
                Err(exchange) => return Ok(exchange),
            },
        };
        let Some(user) = sasl::decode_login_field(&user).ok().and_then(|raw| sasl::valid_user(&raw).ok())
        else {
            return self.malformed("LOGIN user name");
        };
        let password = match self.sasl_answer(b"Password:")? {
            Ok(answer) => answer,
            Err(exchange) => return Ok(exchange),
        };
        let Ok(password) = sasl::decode_login_field(&password) else {
            return self.malformed("LOGIN password");
        };
        let verdict = self.verify_password(&user, &password);
        Ok(Exchange::Checked { user, verdict })
    }

    /// Check a clear-text password (PLAIN, LOGIN) against the store.
    fn verify_password(&self, user: &str, password: &[u8]) -> Result<(), Verdict> {
        self.check_credentials(
            user,
            |secret| sasl::verify_password(secret, password),
            || self.backends.credentials.verify_password(user, password),
            "no-secret-usable-for-plain",
        )
    }

    /// Check a CRAM-MD5 response against the store.
    fn verify(&self, user: &str, challenge: &str, digest: &str) -> Result<(), Verdict> {
        self.check_credentials(
            user,
            |secret| sasl::verify(secret, challenge, digest),
            || self.backends.credentials.verify_cram_md5(user, challenge, digest),
            "no-secret-usable-for-cram-md5",
        )
    }

    /// The one shape of every credential check: a secret the store reveals is checked here
    /// (`with_secret`); a store that reveals none checks itself (`in_store`: hash-only stores,
    /// ABI 1.1); an unknown user costs the same work as a known one, so timing does not reveal
    /// which users exist.
    fn check_credentials(
        &self,
        user: &str,
        with_secret: impl Fn(&Secret) -> bool,
        in_store: impl FnOnce() -> Result<bool, Status>,
        no_usable_secret: &'static str,
    ) -> Result<(), Verdict> {
        let matches = match self.backends.credentials.lookup_secret(user) {
            Ok(secret) => with_secret(&secret),
            Err(Status::Unsupported) => match in_store() {
                Ok(matches) => matches,
                Err(Status::Unsupported) => return Err(Verdict::Wrong(no_usable_secret)),
                Err(Status::Denied) => return Err(Verdict::Wrong("account-disabled")),
                Err(Status::NotFound) => return Err(Verdict::Wrong("unknown-user")),
                Err(status) => return Err(Verdict::Unavailable(status)),
            },
            Err(Status::NotFound) => {
                with_secret(&Secret::Plain(b"\0unknown user\0".to_vec()));
                return Err(Verdict::Wrong("unknown-user"));
            }
            Err(Status::Denied) => return Err(Verdict::Wrong("account-disabled")),
            Err(status) => return Err(Verdict::Unavailable(status)),
        };
        if matches {
            Ok(())
        } else {
            Err(Verdict::Wrong("wrong-password"))
        }
    }

    /// ATRN: authorise every requested domain, lock them, find the first
    /// message, answer, and on 250 run the reversed session and end.
    fn atrn(&mut self, requested: Vec<String>) -> std::io::Result<Option<End>> {
        let Some(user) = self.user.clone() else {
            self.answer(&Refusal::AuthRequired)?;
            return Ok(None);
        };
        let Some(domains) = self.authorise(&user, requested)? else { return Ok(None) };
        let list = domains.join(",");
        let Some(locks) = self.lock(&user, &domains, &list)? else { return Ok(None) };
        let Some((cursor, first)) = self.first_message(&user, &domains, &list)? else { return Ok(None) };

        self.atrn_event(&user, &list).field("result", 250).info();
        // From here RFC 5321's limits per reply apply instead of session_timeout.
        self.conn.set_limit(None);
        self.reply(250, "OK now reversing the connection")?;
        let context = relay::Context {
            hostname: &self.config.server.hostname,
            sendmail: &self.config.bounce.sendmail,
            timeouts: relay::Timeouts::default(),
            queue: &self.backends.queue,
            domains: &domains,
        };
        // The cursor (and the queue's own locks) are closed inside, before the domain locks go.
        let summary = relay::deliver(&mut self.conn, cursor, first, &context);
        log::Event::new("reversed-done")
            .field("messages", summary.messages)
            .field("sent", summary.sent)
            .field("deferred", summary.deferred)
            .field("bounced", summary.bounced)
            .field("end", summary.end)
            .info();
        drop(locks);
        Ok(Some(End::Normal))
    }

    /// The domains to collect, or None after a 450/451. All or nothing: one
    /// forbidden domain refuses the whole request.
    fn authorise(&mut self, user: &str, requested: Vec<String>) -> std::io::Result<Option<Vec<String>>> {
        let allowed = match self.backends.credentials.domains(user) {
            Ok(domains) => domains,
            // Disabled or removed since its AUTH: a refusal, not an unavailable store.
            Err(status @ (Status::Denied | Status::NotFound)) => {
                let event = self.atrn_event(user, "").field("status", status);
                self.refuse(Refusal::AccountDisabled, event, Level::Info)?;
                return Ok(None);
            }
            Err(status) => {
                let event = self.atrn_event(user, "").field("status", status);
                self.refuse(Refusal::CredentialsUnavailable, event, Level::Error)?;
                return Ok(None);
            }
        };
        let domains = if requested.is_empty() { dedup(allowed.clone()) } else { requested };
        if domains.is_empty() {
            self.refuse(Refusal::NoDomains, self.atrn_event(user, ""), Level::Info)?;
            return Ok(None);
        }
        if let Some(forbidden) = domains.iter().find(|d| !allowed.contains(d)).cloned() {
            let event = self.atrn_event(user, &domains.join(",")).field("domain", &forbidden);
            self.refuse(Refusal::NotPermitted(forbidden), event, Level::Info)?;
            return Ok(None);
        }
        Ok(Some(domains))
    }

    /// Take the per-domain collection locks, or None after a 450/451.
    fn lock(&mut self, user: &str, domains: &[String], list: &str) -> std::io::Result<Option<HeldLocks>> {
        match Locker::new(self.config).map_err(LockError::Database).and_then(|l| l.acquire(domains)) {
            Ok(locks) => Ok(Some(locks)),
            Err(LockError::Busy(domain)) => {
                let event = self.atrn_event(user, list).field("domain", &domain);
                self.refuse(Refusal::Busy(domain), event, Level::Info)?;
                Ok(None)
            }
            Err(e) => {
                let event = self.atrn_event(user, list).field("error", &e);
                self.refuse(Refusal::LocalError, event, Level::Error)?;
                Ok(None)
            }
        }
    }

    /// Open the queue and fetch its first message, or None after a 453/451.
    /// `has_pending` is the cheap answer; the first message is the proof, so
    /// a 250 is never followed by an empty session.
    fn first_message(
        &mut self,
        user: &str,
        domains: &[String],
        list: &str,
    ) -> std::io::Result<Option<(QueueCursor, Envelope)>> {
        let queue = &self.backends.queue;
        let found = queue.has_pending(domains).and_then(|pending| {
            if !pending {
                return Ok(None);
            }
            let mut cursor = queue.open(domains)?;
            Ok(cursor.next_message()?.map(|first| (cursor, first)))
        });
        match found {
            Ok(Some(found)) => Ok(Some(found)),
            Ok(None) => {
                self.refuse(Refusal::NoMail, self.atrn_event(user, list), Level::Info)?;
                Ok(None)
            }
            Err(status) => {
                let event = self.atrn_event(user, list).field("status", status);
                self.refuse(Refusal::QueueUnavailable, event, Level::Error)?;
                Ok(None)
            }
        }
    }
}

impl<W: Wire> Session<'_, W> {
    /// `event=atrn user=USER [domains=LIST]`.
    fn atrn_event(&self, user: &str, domains: &str) -> log::Event {
        let event = log::Event::new("atrn").field("user", user);
        if domains.is_empty() {
            event
        } else {
            event.field("domains", domains)
        }
    }
}

enum Verdict {
    Wrong(&'static str),
    Unavailable(Status),
}

/// How a SASL exchange ended.
enum Exchange {
    /// The connection ended or timed out.
    Ended(End),
    /// Cancelled or malformed: already answered with 501.
    Refused,
    /// The user's credentials were checked.
    Checked { user: String, verdict: Result<(), Verdict> },
}

fn dedup(mut domains: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    domains.retain(|d| seen.insert(d.clone()));
    domains
}
