//! The refusals of design.md's reply table, once: each one's SMTP code, the text the customer
//! reads, and the word the log line carries (`result=450 reason=busy`). The session answers
//! and logs from the same value, so a code is written in one place.
//!
//! Does not: send or log anything ([`crate::session`] and [`crate::server`] do), or cover the
//! replies that are not refusals (220, 235, 250, 334, 221).

use std::fmt;

/// Why a command (or a connection) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 554 at connect: the client's address is not in `[server] allow`.
    NotAllowed,
    /// 421 at connect: `max_sessions` reached.
    TooManySessions,
    /// 421 at connect: `max_sessions_per_ip` reached.
    TooManyFromAddress,
    /// 535: wrong password, unknown user, disabled account (the log says which).
    AuthFailed,
    /// 501: the client sent `*`.
    AuthCancelled,
    /// 501: not a response of the mechanism (`CRAM-MD5 response`, `PLAIN response`...).
    AuthMalformed(&'static str),
    /// 501: CRAM-MD5 takes no initial response.
    AuthInitialResponse,
    /// 504: a mechanism not offered.
    UnknownMechanism,
    /// 503: AUTH after a successful AUTH.
    AlreadyAuthenticated,
    /// 421 and close: `max_failures` reached.
    TooManyFailures,
    /// 530: ATRN before AUTH.
    AuthRequired,
    /// 450: the user may collect no domain at all.
    NoDomains,
    /// 450: one requested domain is not the user's (nothing is sent for any).
    NotPermitted(String),
    /// 450: another session is collecting this domain.
    Busy(String),
    /// 450: the account was disabled (or removed) after its AUTH.
    AccountDisabled,
    /// 451: the credential store failed.
    CredentialsUnavailable,
    /// 451: the queue failed.
    QueueUnavailable,
    /// 451: a local failure (the lock directory).
    LocalError,
    /// 453: nothing queued for the domains.
    NoMail,
    /// 502: a command that has no place on the ODMR port.
    NotImplemented(String),
    /// 500: a command line over the limit.
    LineTooLong,
    /// 500: not a command.
    Unrecognized,
    /// 421 and close: idle past `idle_timeout`.
    IdleTimeout,
    /// 421 and close: `session_timeout` reached.
    SessionTimeout,
    /// 501: a command's arguments do not parse (the parser's reason, e.g. an ATRN domain list).
    Syntax(&'static str),
}

impl Refusal {
    /// The SMTP reply code.
    pub fn code(&self) -> u16 {
        match self {
            Refusal::NotAllowed => 554,
            Refusal::TooManySessions | Refusal::TooManyFromAddress => 421,
            Refusal::TooManyFailures | Refusal::IdleTimeout | Refusal::SessionTimeout => 421,
            Refusal::AuthFailed => 535,
            Refusal::AuthCancelled | Refusal::AuthMalformed(_) | Refusal::AuthInitialResponse => 501,
            Refusal::Syntax(_) => 501,
            Refusal::UnknownMechanism => 504,
            Refusal::AlreadyAuthenticated => 503,
            Refusal::AuthRequired => 530,
            Refusal::NoDomains | Refusal::NotPermitted(_) | Refusal::Busy(_) | Refusal::AccountDisabled => {
                450
            }
            Refusal::CredentialsUnavailable | Refusal::QueueUnavailable | Refusal::LocalError => 451,
            Refusal::NoMail => 453,
            Refusal::NotImplemented(_) => 502,
            Refusal::LineTooLong | Refusal::Unrecognized => 500,
        }
    }

    /// The word for the log line's `reason=`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not-in-allow-list",
            Refusal::TooManySessions => "too-many-sessions",
            Refusal::TooManyFromAddress => "too-many-sessions-from-address",
            Refusal::AuthFailed => "auth-failed",
            Refusal::AuthCancelled => "cancelled",
            Refusal::AuthMalformed(_) => "malformed",
            Refusal::AuthInitialResponse => "initial-response",
            Refusal::UnknownMechanism => "unknown-mechanism",
            Refusal::AlreadyAuthenticated => "already-authenticated",
            Refusal::TooManyFailures => "too-many-failures",
            Refusal::AuthRequired => "auth-required",
            Refusal::NoDomains => "no-domains",
            Refusal::NotPermitted(_) => "not-permitted",
            Refusal::Busy(_) => "busy",
            Refusal::AccountDisabled => "account-disabled",
            Refusal::CredentialsUnavailable => "credentials",
            Refusal::QueueUnavailable => "queue",
            Refusal::LocalError => "lock",
            Refusal::NoMail => "no-mail",
            Refusal::NotImplemented(_) => "not-implemented",
            Refusal::LineTooLong => "line-too-long",
            Refusal::Unrecognized => "unrecognized",
            Refusal::IdleTimeout => "idle-timeout",
            Refusal::SessionTimeout => "session-timeout",
            Refusal::Syntax(_) => "syntax",
        }
    }

    /// The reply's text; `hostname` for the ones that name the server.
    pub fn text(&self, hostname: &str) -> String {
        match self {
            Refusal::NotAllowed => format!("{hostname} access denied"),
            Refusal::TooManySessions => format!("{hostname} too many sessions, try again later"),
            Refusal::TooManyFromAddress => {
                format!("{hostname} too many sessions from your address, try again later")
            }
            Refusal::AuthFailed => "Authentication credentials invalid".into(),
            Refusal::AuthCancelled => "Authentication cancelled".into(),
            Refusal::AuthMalformed(what) => format!("Malformed {what}"),
            Refusal::AuthInitialResponse => "CRAM-MD5 takes no initial response".into(),
            Refusal::UnknownMechanism => "Unrecognized authentication type".into(),
            Refusal::AlreadyAuthenticated => "Already authenticated".into(),
            Refusal::TooManyFailures => "Too many authentication failures, closing connection".into(),
            Refusal::AuthRequired => "Authentication required".into(),
            Refusal::NoDomains => "You may not collect mail for any domain".into(),
            Refusal::NotPermitted(domain) => format!("You are not permitted to collect mail for {domain}"),
            Refusal::Busy(domain) => format!("{domain} is being collected by another session"),
            Refusal::AccountDisabled => "Your account is disabled".into(),
            Refusal::CredentialsUnavailable => "Credential store unavailable, try again later".into(),
            Refusal::QueueUnavailable => "Queue unavailable, try again later".into(),
            Refusal::LocalError => "Local error, try again later".into(),
            Refusal::NoMail => "You have no mail".into(),
            Refusal::NotImplemented(verb) => format!("{verb} not implemented on the ODMR port"),
            Refusal::LineTooLong => "Line too long".into(),
            Refusal::Unrecognized => "Command unrecognized".into(),
            Refusal::IdleTimeout => format!("{hostname} idle timeout, closing connection"),
            Refusal::SessionTimeout => format!("{hostname} session time limit reached, closing connection"),
            Refusal::Syntax(why) => (*why).to_string(),
        }
    }
}

impl fmt::Display for Refusal {
    /// `CODE reason`, for messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// design.md's reply table, row by row.
    #[test]
    fn codes_follow_the_design_table() {
        let d = || "example.org".to_string();
        let cases = [
            (Refusal::NotAllowed, 554),
            (Refusal::AuthFailed, 535),
            (Refusal::AuthCancelled, 501),
            (Refusal::UnknownMechanism, 504),
            (Refusal::AlreadyAuthenticated, 503),
            (Refusal::TooManyFailures, 421),
            (Refusal::AuthRequired, 530),
            (Refusal::NotPermitted(d()), 450),
            (Refusal::Busy(d()), 450),
            (Refusal::CredentialsUnavailable, 451),
            (Refusal::QueueUnavailable, 451),
            (Refusal::NoMail, 453),
            (Refusal::NotImplemented("MAIL".into()), 502),
            (Refusal::LineTooLong, 500),
            (Refusal::Unrecognized, 500),
            (Refusal::IdleTimeout, 421),
            (Refusal::SessionTimeout, 421),
            (Refusal::Syntax("Syntax error in domain list"), 501),
        ];
        for (refusal, code) in cases {
            assert_eq!(refusal.code(), code, "{refusal:?}");
            let text = refusal.text("odmr.example.net");
            assert!(!text.is_empty() && !text.contains(['\r', '\n']), "{refusal:?}: {text:?}");
            assert!(refusal.reason().bytes().all(|b| b.is_ascii_lowercase() || b == b'-'), "{refusal:?}");
        }
        assert_eq!(Refusal::Busy(d()).text("h"), "example.org is being collected by another session");
        assert_eq!(Refusal::NotAllowed.text("h.example"), "h.example access denied");
    }
}
