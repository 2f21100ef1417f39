//! The reversed state: odmrd as the SMTP client of the customer.
//!
//! This module owns the client dialogue after `250` to ATRN: waiting for the
//! customer's greeting, EHLO (HELO on a 5xx), MAIL/RCPT/DATA with PIPELINING,
//! SIZE and 8BITMIME when offered, streaming each body with CRLF
//! normalisation and dot-stuffing in constant memory, per-recipient outcomes,
//! DSNs for 5xx, and the commit of each message to the queue. It does not
//! parse queue formats (the backend does) or bytes (proto does).
//!
//! The rule that shapes it: a recipient leaves the queue only after the
//! customer's 2xx to the final dot (or, for a 5xx, after its DSN was
//! submitted). Any failure of the connection, the customer or the queue ends
//! the dialogue with the current message uncommitted, i.e. still queued.

use crate::bounce::{self, Failure, Report};
use crate::conn::{Conn, Received, Wire};
use crate::log;
use crate::proto::{self, Capabilities, DotStuffer, Reply};
use crate::verdict::{self, Decision, Step};
use odmr_api::host::QueueCursor;
use odmr_api::{Envelope, Outcome};
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

struct Relay<'c, 'a, W: Wire> {
    conn: &'c mut Conn<W>,
    ctx: &'c Context<'a>,
    caps: Capabilities,
    summary: Summary,
}

/// Run the reversed session: deliver `first` and every further message of
/// `cursor`, then QUIT.
pub fn deliver<W: Wire>(
    conn: &mut Conn<W>,
    cursor: &mut QueueCursor,
    first: Envelope,
    ctx: &Context<'_>,
) -> Summary {
    let mut relay = Relay { conn, ctx, caps: Capabilities::default(), summary: Summary::default() };
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

    fn run(&mut self, cursor: &mut QueueCursor, first: Envelope) -> Result<(), Stop> {
        let t = self.ctx.timeouts;
        let greeting = self.read_reply(t.greeting, "greeting")?;
        if greeting.class() != 2 {
            self.log(&format!("event=greeting-refused reply=\"{}\"", greeting.text()));
            self.quit();
            return Err(Stop("customer refused the session"));
        }
        self.hello()?;
        let mut next = Some(first);
        while let Some(envelope) = next {
            self.summary.messages += 1;
            self.message(cursor, &envelope)?;
            next = match cursor.next_message() {
                Ok(next) => next,
                Err(status) => {
                    self.log(&format!("event=queue-error status={status}"));
                    None
                }
            };
        }
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

    /// One transaction. Outcomes are committed only when every reply was one the dialogue
    /// allows at its step ([`verdict::decide`]); a Stop leaves the message as it was.
    fn message(&mut self, cursor: &mut QueueCursor, envelope: &Envelope) -> Result<(), Stop> {
        let t = self.ctx.timeouts;
        let id = envelope.id.as_str();
        let size = self.caps.size.map(|_| envelope.size).filter(|&s| s > 0);
        let mail = proto::mail_from(&envelope.sender, size, self.caps.eightbitmime);
        let n = envelope.recipients.len();
        let mut rcpt_replies: Vec<Option<Reply>> = vec![None; n];

        let (mail_reply, data_reply) = if self.caps.pipelining {
            // RFC 2920: replies come back in the order of the commands, one each.
            let mut batch = mail.into_bytes();
            for rcpt in &envelope.recipients {
                batch.extend_from_slice(proto::rcpt_to(rcpt).as_bytes());
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
                for (rcpt, slot) in envelope.recipients.iter().zip(rcpt_replies.iter_mut()) {
                    self.command(proto::rcpt_to(rcpt).as_bytes(), t.rcpt, id)?;
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
        let mut headers = Vec::new();
        let mut end_reply = None;
        let body_sent = data_reply.as_ref().is_some_and(|data| data.code == 354);
        if body_sent {
            self.refuse_unsolicited(id)?;
            if accepted {
                headers = self.stream_body(cursor)?;
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
        let mut outcomes = Vec::with_capacity(n);
        let mut deciding = Vec::with_capacity(n);
        for rcpt_reply in &rcpt_replies {
            let decision =
                verdict::decide(mail_reply.code, code(rcpt_reply), code(&data_reply), code(&end_reply));
            let (Decision::Settled(_, step) | Decision::OutOfStep(step)) = decision;
            let reply = match step {
                Step::Mail => Some(&mail_reply),
                Step::Rcpt => rcpt_reply.as_ref(),
                Step::Data => data_reply.as_ref(),
                Step::End => end_reply.as_ref(),
            };
            match (decision, reply) {
                (Decision::Settled(outcome, _), Some(reply)) => {
                    outcomes.push(outcome);
                    deciding.push(reply.clone());
                }
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

        self.settle(cursor, envelope, &outcomes, &deciding, &headers);
        if deciding.iter().any(|r| r.code == 421) {
            return Err(Stop("customer is closing the connection (421)"));
        }
        Ok(())
    }

    /// Stream the current message; returns its header block (for DSNs).
    fn stream_body(&mut self, cursor: &mut QueueCursor) -> Result<Vec<u8>, Stop> {
        let t = self.ctx.timeouts.data_block;
        let mut stuffer = DotStuffer::new();
        let mut chunk = vec![0u8; BODY_CHUNK];
        let mut encoded = Vec::with_capacity(BODY_CHUNK + BODY_CHUNK / 8);
        let mut headers = Vec::new();
        let mut headers_done = false;
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
            if !headers_done {
                headers_done = collect_headers(&mut headers, &chunk[..n]);
            }
            encoded.clear();
            stuffer.encode(&chunk[..n], &mut encoded);
            self.send(&encoded, t)?;
        }
        encoded.clear();
        stuffer.finish(&mut encoded);
        self.send(&encoded, t)?;
        Ok(headers)
    }

    /// Send DSNs for the failed recipients, commit the outcomes, and log each recipient with
    /// the reply that decided it.
    fn settle(
        &mut self,
        cursor: &mut QueueCursor,
        envelope: &Envelope,
        outcomes: &[Outcome],
        verdicts: &[Reply],
        headers: &[u8],
    ) {
        let mut outcomes = outcomes.to_vec();

        let failures: Vec<Failure> = (0..outcomes.len())
            .filter(|&i| outcomes[i] == Outcome::PermFail)
            .map(|i| Failure { recipient: envelope.recipients[i].clone(), reply: verdicts[i].text() })
            .collect();
        let mut dsn_note = "";
        if !failures.is_empty() {
            if envelope.sender.is_empty() {
                dsn_note = " dsn=none-null-sender";
            } else {
                let report = Report {
                    reporting_host: self.ctx.hostname,
                    queue_id: &envelope.id,
                    sender: &envelope.sender,
                    failures: &failures,
                    original_headers: headers,
                };
                match bounce::submit(self.ctx.sendmail, &report) {
                    Ok(()) => dsn_note = " dsn=sent",
                    Err(e) => {
                        // Without a DSN the sender would never learn: keep them queued.
                        log::error(&format!(
                            "session={} queue_id={} event=dsn-failed error=\"{e}\"",
                            self.ctx.session_id, envelope.id
                        ));
                        dsn_note = " dsn=failed";
                        for o in outcomes.iter_mut().filter(|o| **o == Outcome::PermFail) {
                            *o = Outcome::TempFail;
                        }
                    }
                }
            }
        }

        // With the reply, so that a queue may keep why a recipient was deferred (`--queue`).
        let recorded = outcomes
            .iter()
            .enumerate()
            .all(|(i, &o)| cursor.set_outcome_with_reply(i, o, &verdicts[i].text()).is_ok());
        let committed = recorded && cursor.commit().is_ok();
        for (i, (rcpt, outcome)) in envelope.recipients.iter().zip(&outcomes).enumerate() {
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
            let dsn = if *outcome == Outcome::PermFail { dsn_note } else { "" };
            self.log(&format!(
                "queue_id={} from=<{}> to=<{}> status={status}{dsn} reply=\"{}\"",
                envelope.id,
                envelope.sender,
                rcpt,
                verdicts[i].text().replace('"', "'")
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
