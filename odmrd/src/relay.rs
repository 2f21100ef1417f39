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
    /// For log lines.
    pub session_id: &'a str,
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
    let mut relay =
        Relay { conn, ctx, caps: Capabilities::default(), summary: Summary::default(), transactions: 0 };
    let end = match relay.run(cursor, first) {
        Ok(()) => "done",
        Err(Stop(why)) => why,
    };
    relay.summary.end = end;
    relay.summary
}

impl<W: Wire> Relay<'_, '_, W> {
    fn log(&self, fields: &str) {
        log::info(&format!("session={} {fields}", self.ctx.session_id));
    }

    fn read_reply(&mut self, timeout: Duration, waiting_for: &'static str) -> Result<Reply, Stop> {
        self.conn.set_timeout(timeout);
        match self.conn.read_reply() {
            Ok(Received::Item(Ok(reply))) => Ok(reply),
            Ok(Received::Item(Err(e))) => {
                self.log(&format!("event=protocol-error waiting-for={waiting_for} error=\"{e:?}\""));
                Err(Stop("customer sent a malformed reply"))
            }
            Ok(Received::TimedOut) => {
                self.log(&format!("event=timeout waiting-for={waiting_for}"));
                Err(Stop("customer timed out"))
            }
            Ok(Received::Closed) | Err(_) => {
                self.log(&format!("event=disconnect waiting-for={waiting_for}"));
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
            self.log(&format!("event=greeting-refused reply=\"{}\"", greeting.text()));
            self.quit();
            return Err(Stop("customer refused the session"));
        }
        self.hello()?;
        // First every message with all its recipients; then, while the
        // customer's limits left some and the last round got anywhere, those
        // recipients again through a new cursor.
        let mut wanted: Option<Leftovers> = None;
        let mut next = Some(first);
        loop {
            let mut left = Leftovers::new();
            while let Some(envelope) = next {
                let chosen: Vec<usize> = match &wanted {
                    None => (0..envelope.recipients.len()).collect(),
                    Some(wanted) => {
                        let addresses = wanted.get(&envelope.id).map(Vec::as_slice).unwrap_or_default();
                        (0..envelope.recipients.len())
                            .filter(|&i| addresses.contains(&envelope.recipients[i]))
                            .collect()
                    }
                };
                if !chosen.is_empty() {
                    if self.caps.mailmax.is_some_and(|max| self.transactions >= max) {
                        self.log(&format!(
                            "event=mailmax-reached transactions={} note=\"the rest stays queued for the next session\"",
                            self.transactions
                        ));
                        break;
                    }
                    if wanted.is_none() {
                        self.summary.messages += 1;
                    }
                    let again = self.message(&mut cursor, &envelope, &chosen)?;
                    if !again.is_empty() {
                        left.insert(
                            envelope.id.clone(),
                            again.iter().map(|&i| envelope.recipients[i].clone()).collect(),
                        );
                    }
                }
                next = match cursor.next_message() {
                    Ok(next) => next,
                    Err(status) => {
                        self.log(&format!("event=queue-error status={status}"));
                        None
                    }
                };
            }
            let count = |l: &Leftovers| l.values().map(Vec::len).sum::<usize>();
            let stuck = wanted.as_ref().is_some_and(|w| count(w) == count(&left));
            let mailmax = self.caps.mailmax.is_some_and(|max| self.transactions >= max);
            if left.is_empty() || stuck || mailmax {
                for (id, addresses) in &left {
                    for address in addresses {
                        self.summary.deferred += 1;
                        self.log(&format!(
                            "queue_id={id} to=<{address}> status=deferred reason=customer-limit"
                        ));
                    }
                }
                break;
            }
            self.log(&format!("event=more-transactions recipients={}", count(&left)));
            // The old cursor (and its locks) go first.
            drop(cursor);
            cursor = match self.ctx.queue.open(self.ctx.domains) {
                Ok(cursor) => cursor,
                Err(status) => {
                    self.log(&format!("event=queue-error status={status}"));
                    self.summary.deferred += count(&left);
                    self.quit();
                    return Ok(());
                }
            };
            wanted = Some(left);
            next = match cursor.next_message() {
                Ok(next) => next,
                Err(status) => {
                    self.log(&format!("event=queue-error status={status}"));
                    None
                }
            };
        }
        drop(cursor);
        self.quit();
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
        self.log(&format!("event=hello-refused reply=\"{}\"", reply.text()));
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
        self.log(&format!(
            "queue_id={queue_id} event=out-of-step reason=unsolicited-reply note=\"the message stays queued\""
        ));
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
    /// step ([`verdict::decide`]); a Stop leaves the message as it was.
    fn message(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        chosen: &[usize],
    ) -> Result<Vec<usize>, Stop> {
        let t = self.ctx.timeouts;
        let id = envelope.id.as_str();
        if envelope.smtputf8 && !self.caps.smtputf8 {
            // RFC 6531 §3.4: no downgrade here; the message waits for a
            // session with a customer that takes SMTPUTF8.
            for &i in chosen {
                self.summary.deferred += 1;
                self.log(&format!(
                    "queue_id={id} from=<{}> to=<{}> status=deferred reason=smtputf8-not-offered",
                    envelope.sender, envelope.recipients[i]
                ));
            }
            return Ok(Vec::new());
        }
        let (sent, mut again): (Vec<usize>, Vec<usize>) = match self.caps.rcptmax {
            Some(max) if chosen.len() > max => (chosen[..max].to_vec(), chosen[max..].to_vec()),
            _ => (chosen.to_vec(), Vec::new()),
        };
        let mail = proto::mail_from(&envelope.sender, &self.mail_params(envelope));
        let rcpts: Vec<String> = sent
            .iter()
            .map(|&i| proto::rcpt_to(&envelope.recipients[i], &self.rcpt_params(envelope, i)))
            .collect();
        let n = sent.len();
        let mut rcpt_replies: Vec<Option<Reply>> = vec![None; n];
        self.transactions += 1;

        let (mail_reply, data_reply) = if self.caps.pipelining {
            // RFC 2920: replies come back in the order of the commands, one each.
            let mut batch = mail.into_bytes();
            for rcpt in &rcpts {
                batch.extend_from_slice(rcpt.as_bytes());
            }
            batch.extend_from_slice(b"DATA\r\n");
            self.command(&batch, t.mail, id)?;
            let mail_reply = self.read_reply(t.mail, "MAIL")?;
            for slot in rcpt_replies.iter_mut() {
                *slot = Some(self.read_reply(t.rcpt, "RCPT")?);
            }
            (mail_reply, Some(self.read_reply(t.data, "DATA")?))
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
        let body_sent = data_reply.as_ref().is_some_and(|data| data.code == 354);
        if body_sent {
            self.refuse_unsolicited(id)?;
            if accepted {
                self.stream_body(cursor, envelope, &mut body)?;
                end_reply = Some(self.read_reply(t.data_end, "end of data")?);
                // A reply already waiting behind the final one means the final one may not be
                // the answer to our dot.
                self.refuse_unsolicited(id)?;
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
                    self.log(&format!(
                        "queue_id={id} event=out-of-step step={step:?} reply=\"{}\" note=\"the message stays queued\"",
                        reply.replace('"', "'")
                    ));
                    return Err(Stop("customer's replies are out of step with our commands"));
                }
            }
        }
        if !(body_sent && accepted) {
            self.rset(id)?;
        }

        self.settle(cursor, envelope, &settled, body);
        if settled.iter().any(|(_, _, r)| r.code == 421) {
            return Err(Stop("customer is closing the connection (421)"));
        }
        again.sort_unstable();
        Ok(again)
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
        let t = self.ctx.timeouts.data_block;
        let mut stuffer = DotStuffer::new();
        let mut chunk = vec![0u8; BODY_CHUNK];
        let mut encoded = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8);
        let mut watch = LineWatch::default();
        loop {
            let n = match cursor.read_body(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(status) => {
                    // Never send the final dot of a truncated message: closing
                    // the connection makes the customer discard it.
                    self.log(&format!("event=queue-error while=reading-body status={status}"));
                    return Err(Stop("queue failed while reading a body"));
                }
            };
            watch.add(&chunk[..n]);
            body.keep(&chunk[..n]);
            encoded.clear();
            stuffer.encode(&chunk[..n], &mut encoded);
            self.send(&encoded, t)?;
        }
        encoded.clear();
        stuffer.finish(&mut encoded);
        self.send(&encoded, t)?;
        let id = &envelope.id;
        if watch.eight_bit && !self.caps.eightbitmime {
            self.log(&format!(
                "queue_id={id} event=8bit-to-7bit-customer note=\"sent as is: the customer does not offer 8BITMIME\""
            ));
        }
        if watch.longest > MAX_LINE {
            self.log(&format!(
                "queue_id={id} event=long-lines longest={} note=\"sent as is: RFC 5321 allows 998 octets per line\"",
                watch.longest
            ));
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
        let mut notes: Vec<&str> = vec![""; settled.len()];
        // Who gets a line in a DSN: failures unless NOTIFY says otherwise (NEVER, or a list
        // without FAILURE), and deliveries the customer cannot report on although
        // NOTIFY=SUCCESS asked (RFC 3461 §4.2: "relayed").
        let mut reported: Vec<(usize, Failure)> = Vec::new();
        for (k, (i, outcome, reply)) in settled.iter().enumerate() {
            let details = envelope.recipient_details(*i);
            let action = match outcome {
                Outcome::PermFail if details.notify.on_failure() => Action::Failed,
                Outcome::PermFail => {
                    notes[k] = " dsn=none-notify";
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
                " dsn=none-null-sender"
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
                    Ok(()) => " dsn=sent",
                    Err(e) => {
                        log::error(&format!(
                            "session={} queue_id={} event=dsn-failed error=\"{e}\"",
                            self.ctx.session_id, envelope.id
                        ));
                        " dsn=failed"
                    }
                }
            };
            for (k, failure) in &reported {
                notes[*k] = note;
                // Without its DSN the sender of a failed recipient would never learn: keep it.
                if note == " dsn=failed" && failure.action == Action::Failed {
                    outcomes[*k] = Outcome::TempFail;
                }
            }
        }

        let recorded = settled
            .iter()
            .zip(&outcomes)
            .all(|((i, _, reply), &o)| cursor.set_outcome_with_reply(*i, o, &reply.text()).is_ok());
        let committed = recorded && cursor.commit().is_ok();
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
            self.log(&format!(
                "queue_id={} from=<{}> to=<{}> status={status}{} reply=\"{}\"",
                envelope.id,
                envelope.sender,
                envelope.recipients[*i],
                notes[k],
                reply.text().replace('"', "'")
            ));
        }
        if !committed {
            log::error(&format!(
                "session={} queue_id={} event=commit-failed note=\"the message stays queued and may be delivered again\"",
                self.ctx.session_id, envelope.id
            ));
        }
    }
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
    fn add(&mut self, chunk: &[u8]) {
        self.eight_bit |= chunk.iter().any(|&b| b > 127);
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            let ends = piece.last() == Some(&b'\n');
            let text = piece.strip_suffix(b"\n").unwrap_or(piece);
            let text = if ends { text.strip_suffix(b"\r").unwrap_or(text) } else { text };
            self.current += text.len();
            self.longest = self.longest.max(self.current);
            if ends {
                self.current = 0;
            }
        }
    }
}

/// Append to `headers` up to the end of the header block; true once complete.
fn collect_headers(headers: &mut Vec<u8>, chunk: &[u8]) -> bool {
    let start = headers.len().saturating_sub(3);
    let room = DSN_HEADER_LIMIT.saturating_sub(headers.len());
    headers.extend_from_slice(&chunk[..chunk.len().min(room)]);
    let tail = &headers[start..];
    let end = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| tail.windows(sep.len()).position(|w| w == *sep).map(|p| start + p + sep.len() / 2))
        .min();
    if let Some(end) = end {
        headers.truncate(end);
        return true;
    }
    headers.len() >= DSN_HEADER_LIMIT
}

#[cfg(test)]
mod tests {
    use super::collect_headers;

    #[test]
    fn header_block_is_found_across_chunks() {
        let message = b"Subject: a\r\nFrom: b\r\n\r\nbody\r\n";
        for split in 1..message.len() {
            let mut headers = Vec::new();
            let mut done = false;
            for chunk in message.chunks(split) {
                if !done {
                    done = collect_headers(&mut headers, chunk);
                }
            }
            assert!(done, "split {split}");
            assert_eq!(headers, b"Subject: a\r\nFrom: b\r\n", "split {split}");
        }
        let mut headers = Vec::new();
        assert!(collect_headers(&mut headers, b"A: 1\nB: 2\n\nbody"));
        assert_eq!(headers, b"A: 1\nB: 2\n");
    }
}
