//! The reversed state: odmrd as the SMTP client of the customer.
//!
//! This module owns the client dialogue after `250` to ATRN: waiting for the
//! customer's greeting, EHLO (HELO on a 5xx), MAIL/RCPT/DATA with PIPELINING,
//! the envelope's parameters as far as the customer offers them (SIZE as the
//! wire size, BODY=8BITMIME for 8-bit bodies, SMTPUTF8, and DSN's NOTIFY,
//! ORCPT, RET and ENVID), its limits (RFC 9422 RCPTMAX and MAILMAX, and
//! "too many recipients" replies: the rest go in further transactions on
//! the same connection), streaming each body with CRLF normalisation and
//! dot-stuffing in constant memory, per-recipient outcomes, DSNs as each
//! recipient's NOTIFY asks, and the commit of each message to the queue. It
//! does not parse queue formats (the backend does) or bytes (proto does).
//!
//! The rule that shapes it: a recipient leaves the queue only after the
//! customer's 2xx to the final dot (or, for a 5xx, after its DSN was
//! submitted). Any failure of the connection, the customer or the queue ends
//! the dialogue with the current message uncommitted, i.e. still queued.

use crate::bounce::{self, Action, Failure, Original, Report};
use crate::conn::{Conn, Received, Wire};
use crate::log;
use crate::proto::{self, Capabilities, DotStuffer, Reply};
use crate::verdict::{self, Decision, Step};
use odmr_api::host::{MailQueue, QueueCursor};
use odmr_api::params::{orcpt_param, xtext_encode, Ret};
use odmr_api::{Envelope, Outcome};
use std::collections::HashMap;
use std::io::{Read, Seek, Write};
use std::time::Duration;

/// Client timeouts of RFC 5321 §4.5.3.2, each a deadline for a whole reply (all its lines) or
/// for one flush of the body, however slowly the bytes trickle ([`crate::conn`]).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Waiting for the 220 greeting, and for EHLO/HELO/RSET/QUIT replies.
    pub greeting: Duration,
    /// MAIL FROM reply.
    pub mail: Duration,
    /// RCPT TO reply.
    pub rcpt: Duration,
    /// DATA's 354.
    pub data: Duration,
    /// Each flush of the body (about 64 KiB).
    pub data_block: Duration,
    /// The reply to the final dot.
    pub data_end: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(60 * m);
        Timeouts {
            greeting: minutes(5),
            mail: minutes(5),
            rcpt: minutes(5),
            data: minutes(2),
            data_block: minutes(3),
            data_end: minutes(10),
        }
    }
}

/// What the relay needs from the session.
pub struct Context<'a> {
    /// Our EHLO name and Reporting-MTA.
    pub hostname: &'a str,
    /// `[bounce] sendmail`.
    pub sendmail: &'a [String],
    /// Client timeouts.
    pub timeouts: Timeouts,
    /// The queue and the collected domains, to open a new cursor for the
    /// recipients a customer's limits left for another transaction.
    pub queue: &'a MailQueue,
    /// The domains of this collection.
    pub domains: &'a [String],
}

/// Counts for the session's closing log line.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Messages attempted.
    pub messages: usize,
    /// Recipients delivered.
    pub sent: usize,
    /// Recipients left queued.
    pub deferred: usize,
    /// Recipients bounced.
    pub bounced: usize,
    /// Why the dialogue ended.
    pub end: &'static str,
}

/// Why the dialogue cannot go on. The current message stays uncommitted.
#[derive(Debug)]
struct Stop(&'static str);

/// Bytes of the original header block kept for a DSN.
const DSN_HEADER_LIMIT: usize = 32 * 1024;
/// Bytes read from the queue per call while streaming a body.
const BODY_CHUNK: usize = 64 * 1024;

/// A longest line (without its line end) RFC 5321 §4.5.3.1.6 allows.
const MAX_LINE: usize = 998;

struct Relay<'c, 'a, W: Wire> {
    conn: &'c mut Conn<W>,
    ctx: &'c Context<'a>,
    caps: Capabilities,
    summary: Summary,
    /// MAIL commands sent, for the customer's MAILMAX.
    transactions: usize,
    /// The body buffers, allocated once for the session.
    chunk: Vec<u8>,
    encoded: Vec<u8>,
}

/// A message whose replies all came and were in step, kept uncommitted until the replies that
/// came behind its final one (the next message's, pipelined with its dot) are in step too.
struct Decided {
    envelope: Envelope,
    settled: Vec<(usize, Outcome, Reply)>,
    body: BodyCopy,
}

/// What follows a message that did not stop the dialogue.
enum Then {
    /// The next message is still to be fetched.
    Fetch,
    /// The next message was fetched (its commands not sent).
    Next(Envelope),
    /// The message is decided but not committed, and the next message's commands went out
    /// with its dot (RFC 2920).
    Pipelined(Box<(Decided, Envelope)>),
}

/// Recipients (by address) of messages (by queue id) that a customer's limit
/// left for another transaction.
type Leftovers = HashMap<String, Vec<String>>;

/// Run the reversed session: deliver `first` and every further message of
/// `cursor` (and what the customer's limits left, through new cursors), then
/// QUIT. The cursor is closed before this returns.
pub fn deliver<W: Wire>(
    conn: &mut Conn<W>,
    cursor: QueueCursor,
    first: Envelope,
    ctx: &Context<'_>,
) -> Summary {
    let mut relay = Relay {
        conn,
        ctx,
        caps: Capabilities::default(),
        summary: Summary::default(),
        transactions: 0,
        chunk: vec![0u8; BODY_CHUNK],
        encoded: Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8),
    };
    let end = match relay.run(cursor, first) {
        Ok(()) => "done",
        Err(Stop(why)) => why,
    };
    relay.summary.end = end;
    relay.summary
}

impl<W: Wire> Relay<'_, '_, W> {
    fn read_reply(&mut self, timeout: Duration, waiting_for: &'static str) -> Result<Reply, Stop> {
        self.conn.set_timeout(timeout);
        match self.conn.read_reply() {
            Ok(Received::Item(Ok(reply))) => Ok(reply),
            Ok(Received::Item(Err(e))) => {
                log::Event::new("protocol-error")
                    .field("waiting-for", waiting_for)
                    .field("error", format!("{e:?}"))
                    .info();
                Err(Stop("customer sent a malformed reply"))
            }
            Ok(Received::TimedOut) => {
                log::Event::new("timeout").field("waiting-for", waiting_for).info();
                Err(Stop("customer timed out"))
            }
            Ok(Received::Closed) | Err(_) => {
                log::Event::new("disconnect").field("waiting-for", waiting_for).info();
                Err(Stop("customer disconnected"))
            }
        }
    }

    fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), Stop> {
        self.conn.set_timeout(timeout);
        self.conn.send(bytes).map_err(|_| Stop("write to customer failed"))
    }

    fn run(&mut self, mut cursor: QueueCursor, first: Envelope) -> Result<(), Stop> {
        let t = self.ctx.timeouts;
        let greeting = self.read_reply(t.greeting, "greeting")?;
        if greeting.class() != 2 {
            log::Event::new("greeting-refused").field("reply", greeting.text()).info();
            self.quit();
            return Err(Stop("customer refused the session"));
        }
        self.hello()?;
        // First every message with all its recipients; then, while the
        // customer's limits left some and the last round got anywhere, those
        // recipients again through a new cursor.
        let mut wanted: Option<Leftovers> = None;
        let mut next = Some(first);
        // The commands of `next` went out with the previous message's dot, which is `earlier`.
        let (mut sent, mut earlier) = (false, None);
        loop {
            let mut left = Leftovers::new();
            while let Some(envelope) = next.take() {
                let chosen: Vec<usize> = match &wanted {
                    None => (0..envelope.recipients.len()).collect(),
                    Some(wanted) => {
                        let addresses = wanted.get(&envelope.id).map(Vec::as_slice).unwrap_or_default();
                        (0..envelope.recipients.len())
                            .filter(|&i| addresses.contains(&envelope.recipients[i]))
                            .collect()
                    }
                };
                if chosen.is_empty() {
                    next = self.next_message(&mut cursor);
                    continue;
                }
                {
                    if !sent && self.caps.mailmax.is_some_and(|max| self.transactions >= max) {
                        log::Event::new("mailmax-reached")
                            .field("transactions", self.transactions)
                            .field("note", "the rest stays queued for the next session")
                            .info();
                        break;
                    }
                    if wanted.is_none() {
                        self.summary.messages += 1;
                    }
                    let first_round = wanted.is_none();
                    let (again, then) = match self.message(
                        &mut cursor,
                        &envelope,
                        &chosen,
                        sent,
                        first_round,
                        &mut earlier,
                    ) {
                        Ok(ended) => ended,
                        Err(stop) => {
                            self.log_kept(earlier.take());
                            return Err(stop);
                        }
                    };
                    if !again.is_empty() {
                        left.insert(
                            envelope.id.clone(),
                            again.iter().map(|&i| envelope.recipients[i].clone()).collect(),
                        );
                    }
                    sent = false;
                    next = match then {
                        Then::Fetch => self.next_message(&mut cursor),
                        Then::Next(envelope) => Some(envelope),
                        Then::Pipelined(ahead) => {
                            let (decided, envelope) = *ahead;
                            (sent, earlier) = (true, Some(decided));
                            Some(envelope)
                        }
                    };
                }
            }
            let count = |l: &Leftovers| l.values().map(Vec::len).sum::<usize>();
            let stuck = wanted.as_ref().is_some_and(|w| count(w) == count(&left));
            let mailmax = self.caps.mailmax.is_some_and(|max| self.transactions >= max);
            if left.is_empty() || stuck || mailmax {
                for (id, addresses) in &left {
                    for address in addresses {
                        self.summary.deferred += 1;
                        log::Event::new("recipient")
                            .field("queue_id", id)
                            .field("to", format!("<{address}>"))
                            .field("status", "deferred")
                            .field("reason", "customer-limit")
                            .info();
                    }
                }
                break;
            }
            log::Event::new("more-transactions").field("recipients", count(&left)).info();
            // The old cursor (and its locks) go first.
            drop(cursor);
            cursor = match self.ctx.queue.open(self.ctx.domains) {
                Ok(cursor) => cursor,
                Err(status) => {
                    log::Event::new("queue-error").field("status", status).error();
                    self.summary.deferred += count(&left);
                    self.quit();
                    return Ok(());
                }
            };
            wanted = Some(left);
            next = self.next_message(&mut cursor);
        }
        drop(cursor);
        self.quit();
        Ok(())
    }

    fn next_message(&mut self, cursor: &mut QueueCursor) -> Option<Envelope> {
        cursor.next_message().unwrap_or_else(|status| {
            log::Event::new("queue-error").field("status", status).error();
            None
        })
    }

    /// A message decided by the customer's 2xx but left queued: the replies behind that one
    /// were not in step, or did not come.
    fn log_kept(&self, kept: Option<Decided>) {
        if let Some(kept) = kept {
            log::Event::new("kept")
                .field("queue_id", &kept.envelope.id)
                .field("reason", "later-replies-not-in-step")
                .field(
                    "note",
                    "the customer's reply accepted it, but the replies behind that one were not in step: \
                     the message stays queued and may be delivered again",
                )
                .info();
        }
    }

    /// RFC 2920 across messages: after the final dot, fetch the next message and send its
    /// MAIL/RCPT/DATA before the dot's reply, when the customer pipelines and the queue lets the
    /// next message be taken before the current one is committed. Only in the first round, and
    /// only for a message that goes out whole now (no SMTPUTF8 deferral, no MAILMAX reached).
    /// Returns the fetched message and whether its commands were sent.
    fn send_ahead(
        &mut self,
        cursor: &mut QueueCursor,
        first_round: bool,
    ) -> Result<Option<(Envelope, bool)>, Stop> {
        if !(first_round && self.caps.pipelining && cursor.next_before_commit()) {
            return Ok(None);
        }
        // The dot leaves first: fetching the next message may wait (a queue retrying a message
        // another process holds), and the customer must not wait for the dot meanwhile. The
        // batch follows in a second write at once (TCP_NODELAY, see conn).
        self.conn.flush().map_err(|_| Stop("write to customer failed"))?;
        let Some(next) = self.next_message(cursor) else { return Ok(None) };
        let deferred = next.smtputf8 && !self.caps.smtputf8;
        if deferred || self.caps.mailmax.is_some_and(|max| self.transactions >= max) {
            return Ok(Some((next, false)));
        }
        let all: Vec<usize> = (0..next.recipients.len()).collect();
        let (sent, _) = self.split(&all);
        let (mail, rcpts) = self.commands(&next, &sent);
        self.transactions += 1;
        self.command(&batch(&mail, &rcpts), self.ctx.timeouts.mail, &next.id)?;
        Ok(Some((next, true)))
    }

    /// The recipients of one transaction, and those beyond the customer's RCPTMAX.
    fn split(&self, chosen: &[usize]) -> (Vec<usize>, Vec<usize>) {
        match self.caps.rcptmax {
            Some(max) if chosen.len() > max => (chosen[..max].to_vec(), chosen[max..].to_vec()),
            _ => (chosen.to_vec(), Vec::new()),
        }
    }

    /// The MAIL command of `envelope` and the RCPT commands of recipients `sent`.
    fn commands(&self, envelope: &Envelope, sent: &[usize]) -> (String, Vec<String>) {
        let mail = proto::mail_from(&envelope.sender, &self.mail_params(envelope));
        let rcpts = sent
            .iter()
            .map(|&i| proto::rcpt_to(&envelope.recipients[i], &self.rcpt_params(envelope, i)))
            .collect();
        (mail, rcpts)
    }

    /// Commit the message decided before this one, now that the replies which came behind its
    /// final reply (this message's, up to DATA) are in step and nothing unasked followed them.
    fn settle_earlier(
        &mut self,
        cursor: &mut QueueCursor,
        earlier: &mut Option<Decided>,
        codes: (u16, &[Option<u16>], Option<u16>),
        id: &str,
    ) -> Result<(), Stop> {
        let Some(decided) = earlier.take() else { return Ok(()) };
        let (mail, rcpts, data) = codes;
        if !verdict::in_step_before_body(mail, rcpts, data) || self.conn.has_buffered_input() {
            log::Event::new("out-of-step")
                .field("queue_id", id)
                .field("step", "before-body")
                .field("note", "the message stays queued")
                .info();
            *earlier = Some(decided);
            return Err(Stop("customer's replies are out of step with our commands"));
        }
        self.settle(cursor, &decided.envelope, &decided.settled, decided.body);
        Ok(())
    }

    fn hello(&mut self) -> Result<(), Stop> {
        let t = self.ctx.timeouts.greeting;
        self.send(format!("EHLO {}\r\n", self.ctx.hostname).as_bytes(), t)?;
        let reply = self.read_reply(t, "EHLO")?;
        if reply.class() == 2 {
            self.caps = Capabilities::from_ehlo(&reply);
            return Ok(());
        }
        if reply.class() == 5 {
            self.send(format!("HELO {}\r\n", self.ctx.hostname).as_bytes(), t)?;
            let reply = self.read_reply(t, "HELO")?;
            if reply.class() == 2 {
                return Ok(());
            }
        }
        log::Event::new("hello-refused").field("reply", reply.text()).info();
        self.quit();
        Err(Stop("customer refused EHLO and HELO"))
    }

    fn quit(&mut self) {
        let t = self.ctx.timeouts.greeting.min(Duration::from_secs(30));
        if self.send(b"QUIT\r\n", t).is_ok() {
            let _ = self.read_reply(t, "QUIT");
        }
    }

    fn rset(&mut self, queue_id: &str) -> Result<(), Stop> {
        let t = self.ctx.timeouts.greeting;
        self.command(b"RSET\r\n", t, queue_id)?;
        self.read_reply(t, "RSET").map(drop)
    }

    /// Send a command, after making sure the customer has not sent anything that answers no
    /// command of ours: with every earlier reply read, buffered input is an unsolicited reply,
    /// and matching the next replies to our commands by count would go wrong.
    fn command(&mut self, bytes: &[u8], timeout: Duration, queue_id: &str) -> Result<(), Stop> {
        self.refuse_unsolicited(queue_id)?;
        self.send(bytes, timeout)
    }

    fn refuse_unsolicited(&mut self, queue_id: &str) -> Result<(), Stop> {
        if !self.conn.has_buffered_input() {
            return Ok(());
        }
        log::Event::new("out-of-step")
            .field("reason", "unsolicited-reply")
            .field("note", "the message stays queued")
            .field("queue_id", queue_id)
            .warn();
        Err(Stop("customer's replies are out of step with our commands"))
    }

    /// The MAIL parameters for `envelope`, as far as the customer offers them.
    fn mail_params(&self, envelope: &Envelope) -> Vec<String> {
        let mut params = Vec::new();
        if let Some(limit) = self.caps.size {
            // SIZE must not be below what goes out (RFC 1870): the backend's
            // bound, else one that holds whatever the content (every byte a
            // bare LF) unless that alone would exceed the customer's limit.
            let guess = envelope.size.saturating_mul(2).saturating_add(3);
            match envelope.wire_size {
                Some(bound) => params.push(format!("SIZE={bound}")),
                None if envelope.size > 0 && (limit == 0 || guess <= limit) => {
                    params.push(format!("SIZE={guess}"))
                }
                None => {}
            }
        }
        // 7-bit bodies go without BODY=; an unknown one is declared 8-bit
        // (harmless for 7-bit content, and right if it is not).
        if self.caps.eightbitmime && envelope.eight_bit != Some(false) {
            params.push("BODY=8BITMIME".into());
        }
        if self.caps.smtputf8 && envelope.smtputf8 {
            params.push("SMTPUTF8".into());
        }
        if self.caps.dsn {
            if let Some(ret) = envelope.ret {
                params.push(format!("RET={}", ret.param()));
            }
            if let Some(envid) = &envelope.envid {
                params.push(format!("ENVID={}", xtext_encode(envid)));
            }
        }
        params
    }

    /// The RCPT parameters for recipient `i` of `envelope` (DSN only).
    fn rcpt_params(&self, envelope: &Envelope, i: usize) -> Vec<String> {
        let mut params = Vec::new();
        if self.caps.dsn {
            let details = envelope.recipient_details(i);
            if let Some(notify) = details.notify.param() {
                params.push(format!("NOTIFY={notify}"));
            }
            if let Some(orcpt) = &details.orcpt {
                params.push(format!("ORCPT={}", orcpt_param(orcpt)));
            }
        }
        params
    }

    /// One transaction for recipients `chosen` (indices into the envelope's
    /// recipients) of `envelope`; returns those left for another transaction
    /// (beyond RCPTMAX, or answered "too many recipients"). Outcomes are
    /// committed only when every reply was one the dialogue allows at its
    /// step ([`verdict::decide`]); a Stop leaves the message as it was. `sent`: its
    /// commands went out with the previous message's dot, which is `earlier`, decided and
    /// committed here once this message's replies before the body are in step.
    fn message(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        chosen: &[usize],
        sent_ahead: bool,
        first_round: bool,
        earlier: &mut Option<Decided>,
    ) -> Result<(Vec<usize>, Then), Stop> {
        let t = self.ctx.timeouts;
        let id = envelope.id.as_str();
        if envelope.smtputf8 && !self.caps.smtputf8 {
            // RFC 6531 §3.4: no downgrade here; the message waits for a
            // session with a customer that takes SMTPUTF8.
            for &i in chosen {
                self.summary.deferred += 1;
                recipient_event(envelope, i)
                    .field("status", "deferred")
                    .field("reason", "smtputf8-not-offered")
                    .info();
            }
            return Ok((Vec::new(), Then::Fetch));
        }
        let (sent, mut again) = self.split(chosen);
        let (mail, rcpts) = self.commands(envelope, &sent);
        let n = sent.len();
        let mut rcpt_replies: Vec<Option<Reply>> = vec![None; n];
        if !sent_ahead {
            self.transactions += 1;
        }

        let (mail_reply, data_reply) = if self.caps.pipelining {
            // RFC 2920: replies come back in the order of the commands, one each.
            if !sent_ahead {
                self.command(&batch(&mail, &rcpts), t.mail, id)?;
            }
            let mail_reply = self.read_reply(t.mail, "MAIL")?;
            for slot in rcpt_replies.iter_mut() {
                *slot = Some(self.read_reply(t.rcpt, "RCPT")?);
            }
            let data_reply = self.read_reply(t.data, "DATA")?;
            let rcpt_codes: Vec<Option<u16>> =
                rcpt_replies.iter().map(|r| r.as_ref().map(|r| r.code)).collect();
            self.settle_earlier(cursor, earlier, (mail_reply.code, &rcpt_codes, Some(data_reply.code)), id)?;
            (mail_reply, Some(data_reply))
        } else {
            self.command(mail.as_bytes(), t.mail, id)?;
            let mail_reply = self.read_reply(t.mail, "MAIL")?;
            if mail_reply.class() == 2 {
                for (rcpt, slot) in rcpts.iter().zip(rcpt_replies.iter_mut()) {
                    self.command(rcpt.as_bytes(), t.rcpt, id)?;
                    *slot = Some(self.read_reply(t.rcpt, "RCPT")?);
                }
            }
            let any_accepted = rcpt_replies.iter().flatten().any(|r| r.class() == 2);
            let data_reply = if mail_reply.class() == 2 && any_accepted {
                self.command(b"DATA\r\n", t.data, id)?;
                Some(self.read_reply(t.data, "DATA")?)
            } else {
                None
            };
            (mail_reply, data_reply)
        };

        let accepted = mail_reply.class() == 2 && rcpt_replies.iter().flatten().any(|r| r.class() == 2);
        let mut body = BodyCopy::for_dsn(envelope, &sent);
        let mut end_reply = None;
        let mut ahead = None;
        let body_sent = data_reply.as_ref().is_some_and(|data| data.code == 354);
        if body_sent {
            self.refuse_unsolicited(id)?;
            if accepted {
                self.stream_body(cursor, envelope, &mut body)?;
                ahead = self.send_ahead(cursor, first_round)?;
                end_reply = Some(self.read_reply(t.data_end, "end of data")?);
                // A reply already waiting behind the final one means the final one may not be
                // the answer to our dot, unless the next message's commands went with the dot
                // (their replies are then checked before this message is committed).
                if !matches!(ahead, Some((_, true))) {
                    self.refuse_unsolicited(id)?;
                }
            } else {
                // PIPELINING sent DATA although nothing was accepted: end the empty data at
                // once (RFC 2920 §3.1) and discard it.
                self.send(b".\r\n", t.data_block)?;
                self.read_reply(t.data_end, "end of data")?;
            }
        }

        let code = |reply: &Option<Reply>| reply.as_ref().map(|r| r.code);
        let mut settled = Vec::with_capacity(n);
        for (slot, rcpt_reply) in rcpt_replies.iter().enumerate() {
            let decision =
                verdict::decide(mail_reply.code, code(rcpt_reply), code(&data_reply), code(&end_reply));
            let (Decision::Settled(_, step) | Decision::OutOfStep(step) | Decision::Again(step)) = decision;
            let reply = match step {
                Step::Mail => Some(&mail_reply),
                Step::Rcpt => rcpt_reply.as_ref(),
                Step::Data => data_reply.as_ref(),
                Step::End => end_reply.as_ref(),
            };
            match (decision, reply) {
                (Decision::Settled(outcome, _), Some(reply)) => {
                    settled.push((sent[slot], outcome, reply.clone()))
                }
                (Decision::Again(_), Some(_)) => again.push(sent[slot]),
                _ => {
                    let reply = reply.map(Reply::text).unwrap_or_else(|| "none".into());
                    log::Event::new("out-of-step")
                        .field("step", format!("{step:?}"))
                        .field("reply", reply)
                        .field("note", "the message stays queued")
                        .field("queue_id", id)
                        .warn();
                    return Err(Stop("customer's replies are out of step with our commands"));
                }
            }
        }
        if !(body_sent && accepted) {
            self.rset(id)?;
        }

        again.sort_unstable();
        let closing = settled.iter().any(|(_, _, r)| r.code == 421);
        if let (Some((next, true)), false) = (&ahead, closing) {
            let decided = Decided { envelope: envelope.clone(), settled, body };
            return Ok((again, Then::Pipelined(Box::new((decided, next.clone())))));
        }
        self.settle(cursor, envelope, &settled, body);
        if closing {
            return Err(Stop("customer is closing the connection (421)"));
        }
        Ok((again, ahead.map_or(Then::Fetch, |(next, _)| Then::Next(next))))
    }

    /// Stream the current message, keeping what a DSN may need in `body`,
    /// and log what the customer may not take as sent (8-bit octets without
    /// 8BITMIME, lines beyond RFC 5321's 998 octets): both go out unchanged.
    fn stream_body(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        body: &mut BodyCopy,
    ) -> Result<(), Stop> {
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut encoded = std::mem::take(&mut self.encoded);
        let result = self.stream_body_with(cursor, envelope, body, &mut chunk, &mut encoded);
        (self.chunk, self.encoded) = (chunk, encoded);
        result
    }

    fn stream_body_with(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        body: &mut BodyCopy,
        chunk: &mut [u8],
        encoded: &mut Vec<u8>,
    ) -> Result<(), Stop> {
        let t = self.ctx.timeouts.data_block;
        let mut stuffer = DotStuffer::new();
        let mut watch = LineWatch::default();
        loop {
            let n = match cursor.read_body(chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(status) => {
                    // Never send the final dot of a truncated message: closing
                    // the connection makes the customer discard it.
                    log::Event::new("queue-error")
                        .field("while", "reading-body")
                        .field("status", status)
                        .error();
                    return Err(Stop("queue failed while reading a body"));
                }
            };
            watch.add(&chunk[..n]);
            body.keep(&chunk[..n]);
            encoded.clear();
            stuffer.encode(&chunk[..n], encoded);
            self.send(encoded, t)?;
        }
        encoded.clear();
        stuffer.finish(encoded);
        self.send(encoded, t)?;
        let id = &envelope.id;
        if watch.eight_bit && !self.caps.eightbitmime {
            log::Event::new("8bit-to-7bit-customer")
                .field("note", "sent as is: the customer does not offer 8BITMIME")
                .field("queue_id", id)
                .info();
        }
        if watch.longest > MAX_LINE {
            log::Event::new("long-lines")
                .field("longest", watch.longest)
                .field("note", "sent as is: RFC 5321 allows 998 octets per line")
                .field("queue_id", id)
                .info();
        }
        Ok(())
    }

    /// Send the DSNs the recipients' NOTIFY asks for, commit the outcomes, and log each
    /// recipient with the reply that decided it. `settled` holds (recipient index, outcome,
    /// deciding reply).
    fn settle(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        settled: &[(usize, Outcome, Reply)],
        mut body: BodyCopy,
    ) {
        let mut outcomes: Vec<Outcome> = settled.iter().map(|(_, o, _)| *o).collect();
        // What became of each recipient's DSN, for its log line (`dsn=`).
        let mut notes: Vec<Option<&str>> = vec![None; settled.len()];
        // Who gets a line in a DSN: failures unless NOTIFY says otherwise (NEVER, or a list
        // without FAILURE), and deliveries the customer cannot report on although
        // NOTIFY=SUCCESS asked (RFC 3461 §4.2: "relayed").
        let mut reported: Vec<(usize, Failure)> = Vec::new();
        for (k, (i, outcome, reply)) in settled.iter().enumerate() {
            let details = envelope.recipient_details(*i);
            let action = match outcome {
                Outcome::PermFail if details.notify.on_failure() => Action::Failed,
                Outcome::PermFail => {
                    notes[k] = Some("none-notify");
                    continue;
                }
                Outcome::Delivered if !self.caps.dsn && details.notify.on_success() => Action::Relayed,
                _ => continue,
            };
            let recipient = envelope.recipients[*i].clone();
            reported.push((k, Failure { recipient, reply: reply.text(), action, orcpt: details.orcpt }));
        }
        if !reported.is_empty() {
            let note = if envelope.sender.is_empty() {
                "none-null-sender"
            } else {
                let failures: Vec<Failure> = reported.iter().map(|(_, f)| f.clone()).collect();
                let report = Report {
                    reporting_host: self.ctx.hostname,
                    queue_id: &envelope.id,
                    sender: &envelope.sender,
                    envid: envelope.envid.as_deref(),
                    arrival: envelope.arrival,
                    failures: &failures,
                };
                let full =
                    envelope.ret == Some(Ret::Full) && failures.iter().any(|f| f.action == Action::Failed);
                match bounce::submit(self.ctx.sendmail, &report, body.original(cursor, full)) {
                    Ok(()) => "sent",
                    Err(e) => {
                        log::Event::new("dsn-failed")
                            .field("queue_id", &envelope.id)
                            .field("error", e)
                            .error();
                        "failed"
                    }
                }
            };
            for (k, failure) in &reported {
                notes[*k] = Some(note);
                // Without its DSN the sender of a failed recipient would never learn: keep it.
                if note == "failed" && failure.action == Action::Failed {
                    outcomes[*k] = Outcome::TempFail;
                }
            }
        }

        let recorded = settled
            .iter()
            .zip(&outcomes)
            .all(|((i, _, reply), &o)| cursor.set_outcome_with_reply(*i, o, &reply.text()).is_ok());
        // Committed even when an outcome could not be recorded (what was recorded is true), so
        // that a queue with two messages open retires this one and the next gets its own.
        let committed = cursor.commit().is_ok() && recorded;
        for (k, ((i, _, reply), outcome)) in settled.iter().zip(&outcomes).enumerate() {
            let status = match (outcome, committed) {
                (Outcome::Delivered, true) => "sent",
                (Outcome::PermFail, true) => "bounced",
                (Outcome::Delivered, false) => "sent-but-still-queued",
                (Outcome::PermFail, false) => "bounced-but-still-queued",
                (Outcome::TempFail, _) => "deferred",
            };
            match outcome {
                Outcome::Delivered => self.summary.sent += 1,
                Outcome::PermFail => self.summary.bounced += 1,
                Outcome::TempFail => self.summary.deferred += 1,
            }
            recipient_event(envelope, *i)
                .field("status", status)
                .field_opt("dsn", notes[k])
                .field("reply", reply.text())
                .info();
        }
        if !committed {
            log::Event::new("commit-failed")
                .field("queue_id", &envelope.id)
                .field("note", "the message stays queued and may be delivered again")
                .error();
        }
    }
}

/// MAIL, the RCPTs and DATA as one pipelined batch.
fn batch(mail: &str, rcpts: &[String]) -> Vec<u8> {
    let mut batch = mail.as_bytes().to_vec();
    for rcpt in rcpts {
        batch.extend_from_slice(rcpt.as_bytes());
    }
    batch.extend_from_slice(b"DATA\r\n");
    batch
}

/// `event=recipient queue_id=ID from=<SENDER> to=<RECIPIENT>`: the start of a recipient's
/// one line; its status and the reply that decided it follow.
fn recipient_event(envelope: &Envelope, i: usize) -> log::Event {
    log::Event::new("recipient")
        .field("queue_id", &envelope.id)
        .field("from", format!("<{}>", envelope.sender))
        .field("to", format!("<{}>", envelope.recipients[i]))
}

/// What of a message a DSN may return, kept while the message is streamed:
/// its header block, and for RET=FULL with a failure DSN possible the whole
/// message in an unnamed temporary file (constant memory whatever its size).
pub(crate) struct BodyCopy {
    headers: Vec<u8>,
    headers_done: bool,
    full: Option<std::fs::File>,
    streamed: bool,
}

impl BodyCopy {
    /// For a message whose content was not streamed (`odmrd --expire`):
    /// [`BodyCopy::original`] reads it from the cursor.
    pub(crate) fn unstreamed() -> BodyCopy {
        BodyCopy { headers: Vec::new(), headers_done: false, full: None, streamed: false }
    }

    fn for_dsn(envelope: &Envelope, sent: &[usize]) -> BodyCopy {
        let may_fail = !envelope.sender.is_empty()
            && envelope.ret == Some(Ret::Full)
            && sent.iter().any(|&i| envelope.recipient_details(i).notify.on_failure());
        // Without a temporary file a DSN returns the headers only.
        let full = if may_fail { tempfile::tempfile().ok() } else { None };
        BodyCopy { headers: Vec::new(), headers_done: false, full, streamed: false }
    }

    fn keep(&mut self, chunk: &[u8]) {
        self.streamed = true;
        if !self.headers_done {
            self.headers_done = collect_headers(&mut self.headers, chunk);
        }
        if let Some(file) = self.full.as_mut() {
            if file.write_all(chunk).is_err() {
                self.full = None;
            }
        }
    }

    /// What the DSN returns: the whole message when `full` (from the copy, or
    /// from the cursor when it was not streamed), else the header block.
    pub(crate) fn original<'a>(&'a mut self, cursor: &'a mut QueueCursor, full: bool) -> Original<'a> {
        if !self.streamed {
            if full {
                return Original::Full(Box::new(CursorRead(cursor)));
            }
            let mut chunk = vec![0u8; BODY_CHUNK];
            while !self.headers_done {
                match cursor.read_body(&mut chunk) {
                    Ok(n) if n > 0 => self.headers_done = collect_headers(&mut self.headers, &chunk[..n]),
                    _ => break,
                }
            }
            return Original::Headers(&self.headers);
        }
        match self.full.as_mut() {
            Some(file) if full => match file.rewind() {
                Ok(()) => Original::Full(Box::new(file)),
                Err(_) => Original::Headers(&self.headers),
            },
            _ => Original::Headers(&self.headers),
        }
    }
}

/// The current message's content from the cursor, as a reader.
struct CursorRead<'a>(&'a mut QueueCursor);

impl Read for CursorRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read_body(buf).map_err(std::io::Error::other)
    }
}

/// The longest line and any 8-bit octet of a streamed body, across chunks.
#[derive(Default)]
struct LineWatch {
    current: usize,
    longest: usize,
    eight_bit: bool,
}

impl LineWatch {
    /// One pass per chunk at memory speed: is_ascii works a word at a time, memchr finds the
    /// line ends (a 100 MB body goes through here).
    fn add(&mut self, chunk: &[u8]) {
        self.eight_bit |= !chunk.is_ascii();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', chunk) {
            let text = &chunk[start..end];
            let text = text.strip_suffix(b"\r").unwrap_or(text);
            self.longest = self.longest.max(self.current + text.len());
            self.current = 0;
            start = end + 1;
        }
        self.current += chunk.len() - start;
        self.longest = self.longest.max(self.current);
    }
}

/// Append to `headers` up to the end of the header block (its last line end kept, the blank
/// line not); true once complete or at [`DSN_HEADER_LIMIT`]. Only the header block is copied,
/// not the body that follows it in `chunk`.
fn collect_headers(headers: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let room = DSN_HEADER_LIMIT.saturating_sub(headers.len());
    let chunk = &chunk[..chunk.len().min(room)];
    // A blank line across the seam: the last 3 bytes kept and the first 3 new. A blank line
    // wholly in what was kept ended the block at an earlier call.
    let kept = headers.len();
    let seam = kept.saturating_sub(3);
    headers.extend_from_slice(&chunk[..chunk.len().min(3)]);
    if let Some(end) = header_block_end(&headers[seam..]) {
        headers.truncate(seam + end);
        return true;
    }
    headers.truncate(kept);
    match header_block_end(chunk) {
        Some(end) => {
            headers.extend_from_slice(&chunk[..end]);
            true
        }
        None => {
            headers.extend_from_slice(chunk);
            headers.len() >= DSN_HEADER_LIMIT
        }
    }
}

/// Where the first blank line in `bytes` begins (`\r\n\r\n` or `\n\n`): the end of the
/// header block with its last line end.
fn header_block_end(bytes: &[u8]) -> Option<usize> {
    let crlf = memchr::memmem::find(bytes, b"\r\n\r\n").map(|p| p + 2);
    let lf = memchr::memmem::find(bytes, b"\n\n").map(|p| p + 1);
    crlf.into_iter().chain(lf).min()
}

#[cfg(test)]
mod tests {
    use super::{collect_headers, LineWatch};

    #[test]
    fn the_longest_line_and_8_bit_are_found_across_chunks() {
        let body = "short\r\na line of twenty-two\ncaf\u{e9}\r\nlast without end".as_bytes();
        for split in 1..body.len() {
            let mut watch = LineWatch::default();
            for chunk in body.chunks(split) {
                watch.add(chunk);
            }
            assert_eq!((watch.longest, watch.eight_bit), (20, true), "split {split}");
        }
        let mut watch = LineWatch::default();
        watch.add(b"ascii only\n");
        assert_eq!((watch.longest, watch.eight_bit), (10, false));
    }

    #[test]
    fn header_block_is_found_across_chunks() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"Subject: a\r\nFrom: b\r\n\r\nbody\r\n\r\nmore\r\n", b"Subject: a\r\nFrom: b\r\n"),
            (b"A: 1\nB: 2\n\nbody\n\n", b"A: 1\nB: 2\n"),
            // LF headers, CRLF blank line: the LF pair comes first.
            (b"A: 1\n\r\n\nB\n\n", b"A: 1\n\r\n"),
            (b"\r\n\r\nbody", b"\r\n"),
        ];
        for (message, want) in cases {
            for split in 1..message.len() {
                let mut headers = Vec::new();
                let mut done = false;
                for chunk in message.chunks(split) {
                    if !done {
                        done = collect_headers(&mut headers, chunk);
                    }
                }
                assert!(done, "split {split}");
                assert_eq!(headers, want, "split {split} of {:?}", String::from_utf8_lossy(message));
            }
        }
    }
}
