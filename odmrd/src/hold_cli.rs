//! The command-line side of `--queue` and `--expire`: their flags, and
//! running them with what they print and the exit status. Kept apart from
//! `main.rs` so that the run-mode rework there stays a one-line hook.
//!
//! Owns: parsing `--queue [--json] [--by-account] [DOMAIN...]` and
//! `--expire [--dry-run]`, and mapping their results to sysexits statuses.
//! Does not: list (`listing`) or expire (`expire`).

use crate::backend::Backends;
use crate::config::Config;
use crate::{expire, listing, log};
use std::io::Write;
use std::time::SystemTime;

/// sysexits.h: the queue backend failed.
const EX_UNAVAILABLE: u8 = 69;
/// sysexits.h: the state directory or output failed.
const EX_IOERR: u8 = 74;
/// sysexits.h: a flag combination.
const EX_USAGE: u8 = 64;

/// One of the two held-mail commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `--queue`.
    Queue {
        /// `--json`: JSON Lines instead of text.
        json: bool,
        /// `--by-account`: grouped by account, against its quota.
        by_account: bool,
        /// Domains to list; empty: all.
        domains: Vec<String>,
    },
    /// `--expire`.
    Expire {
        /// `--dry-run`: say what would happen, change and send nothing.
        dry_run: bool,
    },
    /// Options seen before their command (`--json --queue`).
    Pending(Vec<String>),
}

impl Command {
    /// Take one of the held-mail flags into `slot`.
    pub fn parse_flag(slot: &mut Option<Command>, flag: &str) -> Result<(), String> {
        let current = slot.take().unwrap_or(Command::Pending(Vec::new()));
        *slot = Some(match (current, flag) {
            (Command::Pending(earlier), "--queue") => {
                let mut command = Command::Queue { json: false, by_account: false, domains: Vec::new() };
                for flag in earlier {
                    command = command.with(&flag)?;
                }
                command
            }
            (Command::Pending(earlier), "--expire") => {
                let mut command = Command::Expire { dry_run: false };
                for flag in earlier {
                    command = command.with(&flag)?;
                }
                command
            }
            (Command::Pending(mut earlier), other) => {
                earlier.push(other.to_string());
                Command::Pending(earlier)
            }
            (command, other) => command.with(other)?,
        });
        Ok(())
    }

    /// A domain argument of `--queue`.
    pub fn parse_domain(slot: &mut Option<Command>, domain: &str) -> Result<(), String> {
        match slot {
            Some(Command::Queue { domains, .. }) => {
                domains.push(domain.to_ascii_lowercase());
                Ok(())
            }
            _ => Err(format!("unknown argument: {domain} (domains go after --queue)")),
        }
    }

    fn with(self, flag: &str) -> Result<Command, String> {
        Ok(match (self, flag) {
            (Command::Queue { by_account, domains, .. }, "--json") => {
                Command::Queue { json: true, by_account, domains }
            }
            (Command::Queue { json, domains, .. }, "--by-account") => {
                Command::Queue { json, by_account: true, domains }
            }
            (Command::Expire { .. }, "--dry-run") => Command::Expire { dry_run: true },
            (_, "--queue" | "--expire") => return Err("--queue and --expire exclude each other".into()),
            (_, flag) => return Err(format!("{flag} belongs to the other of --queue and --expire")),
        })
    }

    /// The command line was complete.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Command::Pending(flags) => Err(format!("{} needs --queue or --expire", flags.join(" "))),
            _ => Ok(()),
        }
    }

    /// Run it; the exit status.
    pub fn run(&self, config: &Config, backends: &Backends) -> u8 {
        let now = SystemTime::now();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match self {
            Command::Pending(_) => EX_USAGE,
            Command::Queue { json, by_account, domains } => {
                let accounts = if *by_account {
                    match backends.credentials.accounts() {
                        Ok(accounts) => Some(accounts),
                        Err(status) => {
                            eprintln!("odmrd: --by-account: the credential backend cannot list its accounts: {status:?}");
                            return EX_UNAVAILABLE;
                        }
                    }
                } else {
                    None
                };
                let listed = match listing::gather(&backends.queue, domains) {
                    Ok(listed) => listed,
                    Err(status) => {
                        let msg = format!("--queue: the queue backend could not list: {status:?}");
                        log::error(&msg);
                        eprintln!("odmrd: {msg}");
                        return EX_UNAVAILABLE;
                    }
                };
                let written = match (&accounts, *json) {
                    (Some(accounts), json) => {
                        let mut groups = listing::by_account(&listed, accounts);
                        if !domains.is_empty() {
                            // Only the accounts of the domains asked for.
                            groups.retain(|(_, _, own)| own.keys().any(|d| domains.contains(d)));
                        }
                        if json {
                            listing::write_json_by_account(&groups, now, &mut out)
                        } else {
                            listing::write_text_by_account(&groups, now, &mut out)
                        }
                    }
                    (None, true) => listing::write_json(&listed, now, &mut out),
                    (None, false) => listing::write_text(&listed, now, &mut out),
                };
                match written.and_then(|()| out.flush()) {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("odmrd: --queue: {e}");
                        EX_IOERR
                    }
                }
            }
            Command::Expire { dry_run } => match expire::run(config, backends, now, *dry_run, &mut out) {
                Ok(summary) => {
                    let prefix = if *dry_run { "dry-run " } else { "" };
                    let _ = writeln!(out, "{prefix}{summary}");
                    if summary.errors > 0 {
                        EX_UNAVAILABLE
                    } else {
                        0
                    }
                }
                Err(expire::Refusal::EximsJob) => {
                    let _ = writeln!(out, "odmrd: {}", expire::Refusal::EximsJob);
                    0
                }
                Err(refusal) => {
                    log::error(&format!("event=expire {refusal}"));
                    eprintln!("odmrd: --expire: {refusal}");
                    match refusal {
                        expire::Refusal::State(..) => EX_IOERR,
                        _ => EX_UNAVAILABLE,
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        let mut slot = None;
        for arg in args {
            if arg.starts_with('-') {
                Command::parse_flag(&mut slot, arg)?;
            } else {
                Command::parse_domain(&mut slot, arg)?;
            }
        }
        let command = slot.ok_or("none")?;
        command.check()?;
        Ok(command)
    }

    #[test]
    fn flags_in_any_order_and_mistakes_named() {
        let queue = |json, domains: &[&str]| Command::Queue {
            json,
            by_account: false,
            domains: domains.iter().map(|d| d.to_string()).collect(),
        };
        assert_eq!(parse(&["--queue"]), Ok(queue(false, &[])));
        assert_eq!(
            parse(&["--json", "--queue", "Example.ORG", "b.example"]),
            Ok(queue(true, &["example.org", "b.example"]))
        );
        assert_eq!(parse(&["--expire", "--dry-run"]), Ok(Command::Expire { dry_run: true }));
        assert!(parse(&["--queue", "--expire"]).unwrap_err().contains("exclude"));
        assert!(parse(&["--expire", "--json"]).unwrap_err().contains("other"));
        assert!(parse(&["--dry-run"]).unwrap_err().contains("needs --queue or --expire"));
        assert!(parse(&["--expire", "example.org"]).unwrap_err().contains("after --queue"));
    }
}
