//! `odmrd --queue [--json] [--by-account] [DOMAIN...]`: what is held, per
//! domain (or per account, against its `odmr_quota=`), as an
//! operator asks "is mail waiting for customer X, since when, and why was it
//! not delivered?".
//!
//! Owns: gathering the queue backend's read-only listing (ABI 1.1
//! `odmr_queue_ops.list`) into per-domain totals, and the two output forms:
//! a text report, and JSON Lines (one object per line, like `postqueue -j`)
//! whose schema is documented in the README and odmrd(8). Does not: lock,
//! change or read message bodies (the backend's listing promises all three),
//! or decide anything about expiry (`expire`).

use crate::bounce::rfc5322_date;
use odmr_api::host::MailQueue;
use odmr_api::{Listed, Status};
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// One held message as listed under one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The backend's queue id (`new/NAME` for maildir, the Exim message id).
    pub id: String,
    /// Envelope sender; empty for `<>`.
    pub sender: String,
    /// Bytes, 0 when unknown.
    pub size: u64,
    /// Arrival, Unix seconds; None when unknown.
    pub arrival: Option<u64>,
    /// Pending recipients of the domain, with the reply that last deferred
    /// each (empty when none is known).
    pub recipients: Vec<(String, String)>,
}

/// An entry the backend could not read as a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// File name or queue id ("" for the domain's spool as a whole).
    pub id: String,
    /// Why.
    pub reason: String,
}

/// What is held for one domain.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Domain {
    /// Messages, in the backend's order (oldest first for both builtins).
    pub messages: Vec<Held>,
    /// Entries that could not be read.
    pub unreadable: Vec<Unreadable>,
}

impl Domain {
    /// Pending recipients over all messages.
    pub fn recipients(&self) -> usize {
        self.messages.iter().map(|m| m.recipients.len()).sum()
    }

    /// Bytes over all messages.
    pub fn bytes(&self) -> u64 {
        self.messages.iter().map(|m| m.size).sum()
    }

    /// The oldest known arrival.
    pub fn oldest(&self) -> Option<u64> {
        self.messages.iter().filter_map(|m| m.arrival).min()
    }
}

/// The whole listing, by domain (sorted). Entries the backend could not
/// place in a domain are under "".
pub type Listing = BTreeMap<String, Domain>;

/// Ask the backend for the listing of `domains` (empty: every domain it can
/// enumerate).
pub fn gather(queue: &MailQueue, domains: &[String]) -> Result<Listing, Status> {
    let mut listing = Listing::new();
    for domain in domains {
        listing.entry(domain.to_ascii_lowercase()).or_default();
    }
    queue.list(domains, &mut |entry| match entry {
        Listed::Message { domain, envelope, last_replies } => {
            let recipients = envelope
                .recipients
                .iter()
                .enumerate()
                .map(|(i, r)| (r.clone(), last_replies.get(i).cloned().unwrap_or_default()))
                .collect();
            listing.entry(domain.to_string()).or_default().messages.push(Held {
                id: envelope.id.clone(),
                sender: envelope.sender.clone(),
                size: envelope.size,
                arrival: envelope
                    .arrival
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs()),
                recipients,
            });
        }
        Listed::Unreadable { domain, id, reason } => {
            let entry = Unreadable { id: id.to_string(), reason: reason.to_string() };
            listing.entry(domain.to_string()).or_default().unreadable.push(entry);
        }
    })?;
    Ok(listing)
}

/// `3d 4h`, `5h 2m`, `40s`: an age for people.
pub fn age_text(seconds: u64) -> String {
    let (d, h, m) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// The text report: per domain a summary line, then each message with its
/// recipients (and the reply that deferred them), then what is unreadable.
pub fn write_text(listing: &Listing, now: SystemTime, out: &mut dyn Write) -> io::Result<()> {
    if listing.values().all(|d| d.messages.is_empty() && d.unreadable.is_empty()) {
        writeln!(out, "Nothing is held.")?;
    }
    write_domains(listing, now, out)
}

/// [`write_text`]'s domains.
fn write_domains(listing: &Listing, now: SystemTime, out: &mut dyn Write) -> io::Result<()> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let since = |arrival: Option<u64>| match arrival {
        Some(t) => format!(
            "{} ({} ago)",
            rfc5322_date(UNIX_EPOCH + std::time::Duration::from_secs(t)),
            age_text(now.saturating_sub(t))
        ),
        None => "unknown".to_string(),
    };
    for (name, domain) in listing {
        let label = if name.is_empty() { "(no domain)" } else { name };
        write!(
            out,
            "{label}: {} message(s), {} recipient(s), {} bytes",
            domain.messages.len(),
            domain.recipients(),
            domain.bytes()
        )?;
        if let Some(oldest) = domain.oldest() {
            write!(out, ", oldest {}", since(Some(oldest)))?;
        }
        if !domain.unreadable.is_empty() {
            write!(out, ", {} unreadable", domain.unreadable.len())?;
        }
        writeln!(out)?;
        for m in &domain.messages {
            let sender = if m.sender.is_empty() { "<>".to_string() } else { format!("<{}>", m.sender) };
            writeln!(out, "  {}  {} bytes  {}  from {sender}", m.id, m.size, since(m.arrival))?;
            for (rcpt, reply) in &m.recipients {
                if reply.is_empty() {
                    writeln!(out, "      {rcpt}")?;
                } else {
                    writeln!(out, "      {rcpt}  (deferred: {reply})")?;
                }
            }
        }
        for u in &domain.unreadable {
            let id = if u.id.is_empty() { "(spool)" } else { &u.id };
            writeln!(out, "  unreadable {id}: {}", u.reason)?;
        }
    }
    Ok(())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_opt(n: Option<u64>) -> String {
    n.map_or_else(|| "null".to_string(), |n| n.to_string())
}

/// JSON Lines, one object per line (schema in the README, "Queue listing"):
/// per domain first a `"type":"domain"` summary, then its `"message"` and
/// `"unreadable"` objects.
pub fn write_json(listing: &Listing, now: SystemTime, out: &mut dyn Write) -> io::Result<()> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    for (name, domain) in listing {
        let oldest = domain.oldest();
        writeln!(
            out,
            "{{\"type\":\"domain\",\"domain\":{},\"messages\":{},\"recipients\":{},\"bytes\":{},\"oldest_arrival\":{},\"oldest_age\":{},\"unreadable\":{}}}",
            json_str(name),
            domain.messages.len(),
            domain.recipients(),
            domain.bytes(),
            json_opt(oldest),
            json_opt(oldest.map(|t| now.saturating_sub(t))),
            domain.unreadable.len()
        )?;
        for m in &domain.messages {
            let recipients: Vec<String> = m
                .recipients
                .iter()
                .map(|(address, reply)| {
                    let reply = if reply.is_empty() { "null".to_string() } else { json_str(reply) };
                    format!("{{\"address\":{},\"last_reply\":{reply}}}", json_str(address))
                })
                .collect();
            writeln!(
                out,
                "{{\"type\":\"message\",\"domain\":{},\"id\":{},\"sender\":{},\"size\":{},\"arrival\":{},\"age\":{},\"recipients\":[{}]}}",
                json_str(name),
                json_str(&m.id),
                json_str(&m.sender),
                m.size,
                json_opt(m.arrival),
                json_opt(m.arrival.map(|t| now.saturating_sub(t))),
                recipients.join(",")
            )?;
        }
        for u in &domain.unreadable {
            writeln!(
                out,
                "{{\"type\":\"unreadable\",\"domain\":{},\"id\":{},\"reason\":{}}}",
                json_str(name),
                json_str(&u.id),
                json_str(&u.reason)
            )?;
        }
    }
    Ok(())
}

/// One account of `--by-account`: its user ("" for domains no account may
/// collect), its quota, and the listing of its domains.
pub type AccountGroup = (String, Option<u64>, Listing);

/// `--by-account`: the listing regrouped under each account (a domain
/// granted to several is shown under each; held domains no account may
/// collect come last, under the account ""), each with its quota.
pub fn by_account(listing: &Listing, accounts: &[odmr_api::Account]) -> Vec<AccountGroup> {
    let mut groups = Vec::new();
    let mut claimed = std::collections::BTreeSet::new();
    for account in accounts {
        let mut own = Listing::new();
        for domain in &account.domains {
            own.insert(domain.clone(), listing.get(domain).cloned().unwrap_or_default());
            claimed.insert(domain.clone());
        }
        groups.push((account.user.clone(), account.quota, own));
    }
    let rest: Listing =
        listing.iter().filter(|(d, _)| !claimed.contains(*d)).map(|(d, v)| (d.clone(), v.clone())).collect();
    if !rest.is_empty() {
        groups.push((String::new(), None, rest));
    }
    groups
}

/// One account's totals: messages, recipients, bytes.
fn account_totals(own: &Listing) -> (usize, usize, u64) {
    own.values().fold((0, 0, 0), |(m, r, b), d| (m + d.messages.len(), r + d.recipients(), b + d.bytes()))
}

/// `--by-account` in text: per account a line with its totals against its
/// quota, then its domains as [`write_text`] shows them.
pub fn write_text_by_account(
    groups: &[AccountGroup],
    now: SystemTime,
    out: &mut dyn Write,
) -> io::Result<()> {
    for (user, quota, own) in groups {
        let (messages, recipients, bytes) = account_totals(own);
        let label = if user.is_empty() { "(no account)" } else { user };
        write!(out, "account {label}: {messages} message(s), {recipients} recipient(s), {bytes} bytes")?;
        if let Some(quota) = quota {
            let percent = bytes.saturating_mul(100) / (*quota).max(1);
            write!(out, " of {quota} ({percent}%{})", if bytes > *quota { ", over quota" } else { "" })?;
        }
        writeln!(out)?;
        write_domains(own, now, out)?;
    }
    Ok(())
}

/// `--by-account --json`: per account an `"account"` object, then its
/// domains' objects as [`write_json`] writes them.
pub fn write_json_by_account(
    groups: &[AccountGroup],
    now: SystemTime,
    out: &mut dyn Write,
) -> io::Result<()> {
    for (user, quota, own) in groups {
        let (messages, recipients, bytes) = account_totals(own);
        let domains: Vec<String> = own.keys().map(|d| json_str(d)).collect();
        writeln!(
            out,
            "{{\"type\":\"account\",\"account\":{},\"domains\":[{}],\"messages\":{messages},\"recipients\":{recipients},\"bytes\":{bytes},\"quota\":{},\"over_quota\":{}}}",
            json_str(user),
            domains.join(","),
            json_opt(*quota),
            quota.is_some_and(|q| bytes > q)
        )?;
        write_json(own, now, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Listing {
        let mut listing = Listing::new();
        listing.insert(
            "example.org".into(),
            Domain {
                messages: vec![Held {
                    id: "new/1".into(),
                    sender: "a\"b@s.example".into(),
                    size: 10,
                    arrival: Some(1000),
                    recipients: vec![
                        ("x@example.org".into(), String::new()),
                        ("y@example.org".into(), "450 busy\tnow".into()),
                    ],
                }],
                unreadable: vec![Unreadable {
                    id: "cur/junk".into(),
                    reason: "malformed: empty file".into(),
                }],
            },
        );
        listing.insert("example.net".into(), Domain::default());
        listing
    }

    #[test]
    fn json_lines_follow_the_documented_schema_and_escape_strings() {
        let mut out = Vec::new();
        write_json(&sample(), UNIX_EPOCH + Duration::from_secs(4600), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"type":"domain","domain":"example.net","messages":0,"recipients":0,"bytes":0,"oldest_arrival":null,"oldest_age":null,"unreadable":0}"#,
                r#"{"type":"domain","domain":"example.org","messages":1,"recipients":2,"bytes":10,"oldest_arrival":1000,"oldest_age":3600,"unreadable":1}"#,
                r#"{"type":"message","domain":"example.org","id":"new/1","sender":"a\"b@s.example","size":10,"arrival":1000,"age":3600,"recipients":[{"address":"x@example.org","last_reply":null},{"address":"y@example.org","last_reply":"450 busy\tnow"}]}"#,
                r#"{"type":"unreadable","domain":"example.org","id":"cur/junk","reason":"malformed: empty file"}"#,
            ]
        );
        assert_eq!(json_str("\u{1}\\"), r#""\u0001\\""#);
    }

    #[test]
    fn the_text_report_answers_since_when_and_why() {
        let mut out = Vec::new();
        write_text(&sample(), UNIX_EPOCH + Duration::from_secs(1000 + 3 * 86_400 + 7200), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("example.org: 1 message(s), 2 recipient(s), 10 bytes, oldest Thu, 01 Jan 1970 00:16:40 +0000 (3d 2h ago), 1 unreadable\n"), "{text}");
        assert!(text.contains("      y@example.org  (deferred: 450 busy\tnow)\n"), "{text}");
        assert!(text.contains("  unreadable cur/junk: malformed: empty file\n"), "{text}");
        assert!(text.contains("example.net: 0 message(s), 0 recipient(s), 0 bytes\n"), "{text}");
    }

    #[test]
    fn accounts_group_their_domains_and_are_measured_against_their_quota() {
        let accounts = [
            odmr_api::Account {
                user: "cust".into(),
                domains: vec!["example.org".into(), "new.example".into()],
                quota: Some(8),
                contact: None,
            },
            odmr_api::Account {
                user: "other".into(),
                domains: vec!["example.org".into()],
                quota: None,
                contact: None,
            },
        ];
        let groups = by_account(&sample(), &accounts);
        let names: Vec<(&str, Vec<&str>)> =
            groups.iter().map(|(u, _, l)| (u.as_str(), l.keys().map(String::as_str).collect())).collect();
        assert_eq!(
            names,
            [
                ("cust", vec!["example.org", "new.example"]),
                ("other", vec!["example.org"]),
                ("", vec!["example.net"])
            ]
        );
        let mut out = Vec::new();
        write_text_by_account(&groups, UNIX_EPOCH + Duration::from_secs(4600), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with(
                "account cust: 1 message(s), 2 recipient(s), 10 bytes of 8 (125%, over quota)\n"
            ),
            "{text}"
        );
        assert!(text.contains("account other: 1 message(s), 2 recipient(s), 10 bytes\n"), "{text}");
        assert!(text.contains("account (no account): 0 message(s)"), "{text}");
        let mut out = Vec::new();
        write_json_by_account(&groups, UNIX_EPOCH, &mut out).unwrap();
        let json = String::from_utf8(out).unwrap();
        assert!(json.starts_with(r#"{"type":"account","account":"cust","domains":["example.org","new.example"],"messages":1,"recipients":2,"bytes":10,"quota":8,"over_quota":true}"#), "{json}");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age_text(40), "40s");
        assert_eq!(age_text(125), "2m");
        assert_eq!(age_text(3 * 3600 + 60), "3h 1m");
        assert_eq!(age_text(15 * 86_400 + 3600), "15d 1h");
    }
}
