//! Delivery status notifications (RFC 3464) for recipients the customer
//! refused permanently, and their submission through the sendmail command.
//!
//! This module owns composing the `multipart/report` message and running
//! `[bounce] sendmail`. It does not decide which recipients failed (the relay
//! does) and never sends a DSN to the null sender (the caller checks, this
//! module refuses too).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// One recipient the customer refused with a 5xx.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The recipient address, as queued.
    pub recipient: String,
    /// The customer's reply, e.g. `550 5.1.1 no such user`.
    pub reply: String,
}

/// What a DSN reports.
#[derive(Debug)]
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, and the From: domain).
    pub reporting_host: &'a str,
    /// The queue id of the message, for the text and the Message-ID.
    pub queue_id: &'a str,
    /// The envelope sender, who receives the DSN. Never empty.
    pub sender: &'a str,
    /// The failed recipients.
    pub failures: &'a [Failure],
    /// The header block of the original message, if it was read (may be empty).
    pub original_headers: &'a [u8],
}

/// The enhanced status code of a reply (`5.1.1`), or `5.0.0` when it has none.
fn status_code(reply: &str) -> String {
    let candidate = reply.get(4..).unwrap_or("").split_whitespace().next().unwrap_or("");
    let parts: Vec<&str> = candidate.split('.').collect();
    let valid = parts.len() == 3
        && parts[0] == "5"
        && parts[1..].iter().all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        candidate.to_string()
    } else {
        "5.0.0".to_string()
    }
}

/// An RFC 5322 date in UTC, e.g. `Sun, 22 Nov 2026 14:03:36 +0000`.
pub fn rfc5322_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for all u64 days here.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Replace anything that could break a header line.
fn header_safe(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// What a DSN tells the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The customer's MTA refused the recipients (5xx): `Action: failed`,
    /// the status from the reply.
    Refused,
    /// Held longer than `max_hold` without being collected: `Action:
    /// failed`, `Status: 4.4.7`, the last reply as the diagnostic if known.
    Expired,
    /// Held longer than `delay_warning`: `Action: delayed`, `Status: 4.4.7`,
    /// with `Will-Retry-Until` when an expiry is set.
    Delayed {
        /// When the recipients will expire, if ever.
        until: Option<SystemTime>,
    },
}

/// The complete DSN message, with CRLF line ends.
pub fn compose(report: &Report<'_>, now: SystemTime) -> Vec<u8> {
    compose_notice(report, Notice::Refused, now)
}

/// The complete DSN message for `notice`, with CRLF line ends.
pub fn compose_notice(report: &Report<'_>, notice: Notice, now: SystemTime) -> Vec<u8> {
    let stamp = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let id = header_safe(report.queue_id).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let boundary = format!("odmrd-{stamp:x}-{id}");
    let host = header_safe(report.reporting_host);
    let date = rfc5322_date(now);
    let mut lines: Vec<String> = vec![
        format!("From: Mail Delivery System <MAILER-DAEMON@{host}>"),
        format!("To: <{}>", header_safe(report.sender)),
        match notice {
            Notice::Delayed { .. } => "Subject: Delayed Mail (still being retried)".into(),
            _ => "Subject: Undelivered Mail Returned to Sender".into(),
        },
        format!("Date: {date}"),
        format!("Message-ID: <{stamp:x}.{id}@{host}>"),
        "Auto-Submitted: auto-replied".into(),
        "MIME-Version: 1.0".into(),
        format!("Content-Type: multipart/report; report-type=delivery-status; boundary=\"{boundary}\""),
        String::new(),
        "This is a MIME-encapsulated message.".into(),
        String::new(),
        format!("--{boundary}"),
        "Content-Type: text/plain; charset=utf-8".into(),
        String::new(),
        format!("This is the mail system at {host}."),
        String::new(),
    ];
    lines.extend(
        match notice {
            Notice::Refused => [
                "Your message could not be delivered to the following recipients when",
                "their mail server collected it by On-Demand Mail Relay:",
            ],
            Notice::Expired => [
                "Your message could not be delivered to the following recipients: their",
                "mail server did not collect it (On-Demand Mail Relay) in time:",
            ],
            Notice::Delayed { .. } => [
                "Your message is still waiting for the following recipients' mail server",
                "to collect it (On-Demand Mail Relay); no action is needed from you yet:",
            ],
        }
        .map(String::from),
    );
    lines.push(String::new());
    for failure in report.failures {
        let reply = if failure.reply.is_empty() { "not collected" } else { &failure.reply };
        lines.push(format!("  <{}>: {}", header_safe(&failure.recipient), header_safe(reply)));
    }
    lines.extend([
        String::new(),
        format!("--{boundary}"),
        "Content-Type: message/delivery-status".into(),
        String::new(),
        format!("Reporting-MTA: dns; {host}"),
        format!("X-Odmrd-Queue-ID: {}", header_safe(report.queue_id)),
        format!("Arrival-Date: {date}"),
    ]);
    for failure in report.failures {
        let (action, status) = match notice {
            Notice::Refused => ("failed", status_code(&failure.reply)),
            Notice::Expired => ("failed", "4.4.7".to_string()),
            Notice::Delayed { .. } => ("delayed", "4.4.7".to_string()),
        };
        lines.extend([
            String::new(),
            format!("Final-Recipient: rfc822; {}", header_safe(&failure.recipient)),
            format!("Action: {action}"),
            format!("Status: {status}"),
        ]);
        if !failure.reply.is_empty() {
            lines.push(format!("Diagnostic-Code: smtp; {}", header_safe(&failure.reply)));
        }
        if let Notice::Delayed { until: Some(until) } = notice {
            lines.push(format!("Will-Retry-Until: {}", rfc5322_date(until)));
        }
    }
    lines.push(String::new());
    let mut out = lines.join("\r\n").into_bytes();
    out.extend_from_slice(b"\r\n");
    if !report.original_headers.is_empty() {
        out.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes(),
        );
        for line in report.original_headers.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\r\n");
            }
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// Compose the DSN and hand it to `sendmail` (`command -i -f <> -- sender`).
/// The command's output never reaches our stdout (under inetd that is the
/// customer's socket). Err carries a reason for the log.
pub fn submit(sendmail: &[String], report: &Report<'_>) -> Result<(), String> {
    submit_notice(sendmail, report, Notice::Refused, SystemTime::now())
}

/// As [`submit`], for `notice`, composed at `now`.
pub fn submit_notice(
    sendmail: &[String],
    report: &Report<'_>,
    notice: Notice,
    now: SystemTime,
) -> Result<(), String> {
    if report.sender.is_empty() {
        return Err("no DSN for the null sender".into());
    }
    let Some((program, args)) = sendmail.split_first() else {
        return Err("[bounce] sendmail is empty".into());
    };
    let message = compose_notice(report, notice, now);
    let mut child = Command::new(program)
        .args(args)
        .args(["-i", "-f", "<>", "--", report.sender])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let written = child.stdin.take().map(|mut stdin| stdin.write_all(&message));
    let output = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    // The exit status says more than the broken pipe of a command that quit early.
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{program} exited with {}: {}", output.status, stderr.trim()));
    }
    if let Some(Err(e)) = written {
        return Err(format!("{program}: writing the DSN failed: {e}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_follow_rfc5322() {
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 +0000"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
            (1_795_354_394, "Sun, 22 Nov 2026 13:33:14 +0000"),
        ];
        for (secs, want) in cases {
            assert_eq!(rfc5322_date(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn status_codes_come_from_the_reply_when_present() {
        assert_eq!(status_code("550 5.1.1 no such user"), "5.1.1");
        assert_eq!(status_code("554 transaction failed"), "5.0.0");
        assert_eq!(status_code("550 4.1.1 inconsistent"), "5.0.0");
        assert_eq!(status_code("5"), "5.0.0");
    }

    #[test]
    fn the_report_has_the_rfc3464_structure() {
        let failures =
            [Failure { recipient: "x@example.org".into(), reply: "550 5.1.1 unknown\r\nuser".into() }];
        let report = Report {
            reporting_host: "odmr.example.net",
            queue_id: "1234.abc",
            sender: "alice@sender.example",
            failures: &failures,
            original_headers: b"Subject: hi\nFrom: alice@sender.example\n",
        };
        let text = String::from_utf8(compose(&report, UNIX_EPOCH)).unwrap();
        let boundary = text.split("boundary=\"").nth(1).unwrap().split('"').next().unwrap();
        let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
        assert_eq!(parts.len(), 5, "preamble, 3 parts, epilogue: {text}");
        assert!(parts[1].contains("Content-Type: text/plain"));
        assert!(parts[2].starts_with(
            "\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; odmr.example.net"
        ));
        assert!(parts[2]
            .contains("\r\nFinal-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"));
        assert!(
            parts[2].contains("Diagnostic-Code: smtp; 550 5.1.1 unknown  user\r\n"),
            "no header injection"
        );
        assert!(parts[3].contains(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: alice@sender.example\r\n"
        ));
        assert_eq!(parts[4], "--\r\n");
        assert!(text.contains("\r\nTo: <alice@sender.example>\r\n"));
        assert!(text.contains("report-type=delivery-status"));
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF line ends");
    }

    #[test]
    fn submission_reports_a_failing_command_and_refuses_the_null_sender() {
        let failures = [Failure { recipient: "x@example.org".into(), reply: "550 no".into() }];
        let mut report = Report {
            reporting_host: "h",
            queue_id: "1",
            sender: "a@b.example",
            failures: &failures,
            original_headers: b"",
        };
        let err = submit(&["/bin/false".into()], &report).unwrap_err();
        assert!(err.contains("/bin/false exited"), "{err}");
        assert!(submit(&["/nonexistent/sendmail".into()], &report).unwrap_err().contains("cannot run"));
        report.sender = "";
        assert!(submit(&["/bin/true".into()], &report).is_err());
    }
}
