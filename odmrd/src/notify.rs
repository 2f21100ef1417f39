//! "Mail is waiting" notices: when a domain's oldest held message passes
//! `[queue] notify_after`, odmrd runs `notify_command` for it, at most once
//! per `notify_interval` (off by default). No ODMR product we know of tells
//! a customer that mail waits; a site's command can mail, text or page them.
//!
//! Owns: deciding which domains are due, running the command with the facts
//! in its environment, and the state file `<state_directory>/notified`
//! (`domain TAB unix-time`, replaced atomically). A notice is recorded before
//! its command runs: a kill between the two skips one notice, it never
//! repeats one within the interval. A domain with nothing held is forgotten,
//! so a new backlog is told at once. Does not: read queues (it is given the
//! listing or the accounts).

use crate::expire::{read_pairs, write_pairs};
use crate::listing::Listing;
use crate::log;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The state file under `[queue] state_directory`.
pub const STATE: &str = "notified";

/// One notice to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The domain mail waits for.
    pub domain: String,
    /// Messages and recipients held, and their bytes.
    pub messages: usize,
    pub recipients: usize,
    pub bytes: u64,
    /// Age of the oldest message, seconds.
    pub oldest_age: u64,
}

/// The domains of `listing` whose notice is due at `now`, given when each
/// was last told (`last`); `last` is updated for them and pruned of domains
/// with nothing held.
pub fn due(
    listing: &Listing,
    after: Duration,
    interval: Duration,
    now: SystemTime,
    last: &mut BTreeSet<(String, String)>,
) -> Vec<Notice> {
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    last.retain(|(domain, _)| listing.get(domain).is_some_and(|d| !d.messages.is_empty()));
    let mut notices = Vec::new();
    for (name, domain) in listing {
        let Some(oldest) = domain.oldest() else { continue };
        let age = now.saturating_sub(oldest);
        if name.is_empty() || age < after.as_secs() {
            continue;
        }
        let told = last.iter().find(|(d, _)| d == name).and_then(|(_, t)| t.parse::<u64>().ok());
        if told.is_some_and(|t| now.saturating_sub(t) < interval.as_secs()) {
            continue;
        }
        last.retain(|(d, _)| d != name);
        last.insert((name.clone(), now.to_string()));
        notices.push(Notice {
            domain: name.clone(),
            messages: domain.messages.len(),
            recipients: domain.recipients(),
            bytes: domain.bytes(),
            oldest_age: age,
        });
    }
    notices
}

/// Run the notices due at `now` through `command`, recording them in
/// `state_directory` first. Returns how many commands ran successfully.
pub fn run(
    listing: &Listing,
    accounts: &[odmr_api::Account],
    hold: &crate::config::HoldConfig,
    now: SystemTime,
    dry_run: bool,
    say: &mut dyn FnMut(&str),
) -> Result<usize, String> {
    let Some(after) = hold.notify_after else { return Ok(0) };
    let path = hold.state_directory.join(STATE);
    let mut last = read_pairs(&path).map_err(|e| format!("state file {}: {e}", path.display()))?;
    let notices = due(listing, after, hold.notify_interval, now, &mut last);
    if dry_run {
        for n in &notices {
            say(&format!(
                "domain={} notice=due messages={} oldest_age={}",
                n.domain, n.messages, n.oldest_age
            ));
        }
        return Ok(0);
    }
    write_pairs(&path, &last).map_err(|e| format!("state file {}: {e}", path.display()))?;
    let mut ran = 0;
    for notice in &notices {
        let collectors: Vec<&odmr_api::Account> =
            accounts.iter().filter(|a| a.domains.contains(&notice.domain)).collect();
        match notify(&hold.notify_command, notice, &collectors) {
            Ok(()) => {
                ran += 1;
                say(&format!(
                    "domain={} notice=sent messages={} oldest_age={}",
                    notice.domain, notice.messages, notice.oldest_age
                ));
            }
            Err(why) => log::error(&format!("event=notice domain={} error=\"{why}\"", notice.domain)),
        }
    }
    Ok(ran)
}

/// Run the command once for `notice`: `ODMR_DOMAIN`, `ODMR_MESSAGES`,
/// `ODMR_RECIPIENTS`, `ODMR_BYTES`, `ODMR_OLDEST_AGE` (seconds), and the
/// accounts that may collect the domain with their `odmr_notify=` contacts
/// (`ODMR_ACCOUNT`, `ODMR_CONTACT`, comma-separated, empty when unknown) in
/// its environment, no input, its output discarded; a non-zero exit is an
/// error.
fn notify(command: &[String], notice: &Notice, collectors: &[&odmr_api::Account]) -> Result<(), String> {
    let users: Vec<&str> = collectors.iter().map(|a| a.user.as_str()).collect();
    let contacts: Vec<&str> = collectors.iter().filter_map(|a| a.contact.as_deref()).collect();
    let Some((program, args)) = command.split_first() else { return Err("no notify_command".into()) };
    let status = Command::new(program)
        .args(args)
        .env("ODMR_DOMAIN", &notice.domain)
        .env("ODMR_ACCOUNT", users.join(","))
        .env("ODMR_CONTACT", contacts.join(","))
        .env("ODMR_MESSAGES", notice.messages.to_string())
        .env("ODMR_RECIPIENTS", notice.recipients.to_string())
        .env("ODMR_BYTES", notice.bytes.to_string())
        .env("ODMR_OLDEST_AGE", notice.oldest_age.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} exited with {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listing::{Domain, Held};

    fn listing(oldest: u64) -> Listing {
        let held = Held {
            id: "new/1".into(),
            sender: String::new(),
            size: 5,
            arrival: Some(oldest),
            recipients: vec![("u@example.org".into(), String::new())],
        };
        [
            ("example.org".to_string(), Domain { messages: vec![held], unreadable: Vec::new() }),
            ("empty.example".to_string(), Domain::default()),
        ]
        .into()
    }

    #[test]
    fn a_domain_is_told_once_per_interval_and_again_after_a_new_backlog() {
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let (after, interval) = (Duration::from_secs(100), Duration::from_secs(1000));
        let mut last = BTreeSet::new();
        assert!(due(&listing(1000), after, interval, at(1050), &mut last).is_empty(), "not old enough");
        let told = due(&listing(1000), after, interval, at(1100), &mut last);
        assert_eq!(
            told.iter().map(|n| (n.domain.as_str(), n.oldest_age)).collect::<Vec<_>>(),
            [("example.org", 100)]
        );
        assert!(due(&listing(1000), after, interval, at(2099), &mut last).is_empty(), "within the interval");
        assert_eq!(due(&listing(1000), after, interval, at(2100), &mut last).len(), 1, "after the interval");
        // Collected: forgotten, so the next backlog is told as soon as it is old enough.
        assert!(due(&Listing::new(), after, interval, at(2200), &mut last).is_empty());
        assert!(last.is_empty());
        assert_eq!(due(&listing(2200), after, interval, at(2300), &mut last).len(), 1);
    }
}
