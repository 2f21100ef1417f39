//! Delivery status notifications (RFC 3464): "failed" for recipients the
//! customer refused permanently, "relayed" for those delivered to a customer
//! without DSN support whose sender asked NOTIFY=SUCCESS (RFC 3461 §4.2),
//! "failed" (4.4.7) for mail held past `[queue] max_hold` and "delayed" for
//! mail held past `delay_warning` (`odmrd --expire`), and their submission
//! through the sendmail command.
//!
//! This module owns composing the `multipart/report` message (streamed, so
//! a RET=FULL message of any size is returned in constant memory) and
//! running `[bounce] sendmail`. It does not decide which recipients get a
//! DSN (the relay does, from the replies and each recipient's NOTIFY) and
//! never sends one to the null sender (the caller checks, this module
//! refuses too).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// What happened to a recipient, as the DSN's `Action:` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The customer refused it permanently.
    Failed,
    /// Delivered to a customer that does not offer DSN (RFC 3461 §4.2).
    Relayed,
    /// Never collected within `[queue] max_hold`: `Action: failed`,
    /// `Status: 4.4.7`; the reply is the last that deferred it, if any.
    Expired,
    /// Still waiting after `[queue] delay_warning`: `Action: delayed`,
    /// `Status: 4.4.7`.
    Delayed,
}

/// One recipient the DSN reports.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The recipient address, as queued.
    pub recipient: String,
    /// The customer's reply, e.g. `550 5.1.1 no such user`.
    pub reply: String,
    /// Failed or relayed.
    pub action: Action,
    /// The sender's ORCPT for it (`rfc822;bob@example.org`), if any.
    pub orcpt: Option<String>,
}

/// What of the original message the DSN returns.
pub enum Original<'a> {
    /// Its header block (may be empty: then nothing is returned).
    Headers(&'a [u8]),
    /// The whole message (RET=FULL), read as it goes out.
    Full(Box<dyn Read + 'a>),
}

/// What a DSN reports.
pub struct Report<'a> {
    /// Our host name (Reporting-MTA, and the From: domain).
    pub reporting_host: &'a str,
    /// The queue id of the message, for the text and the Message-ID.
    pub queue_id: &'a str,
    /// The envelope sender, who receives the DSN. Never empty.
    pub sender: &'a str,
    /// The sender's ENVID (decoded), if any.
    pub envid: Option<&'a str>,
    /// When the message reached the queue, if known.
    pub arrival: Option<SystemTime>,
    /// The recipients reported.
    pub failures: &'a [Failure],
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

/// The `Status:` of a recipient: the reply's enhanced code when it has a
/// valid one of the right class, else `5.0.0` (failed) or `2.0.0` (relayed).
fn recipient_status(failure: &Failure) -> String {
    match failure.action {
        Action::Failed => status_code(&failure.reply),
        Action::Expired | Action::Delayed => "4.4.7".to_string(),
        Action::Relayed => {
            let candidate = failure.reply.get(4..).unwrap_or("").split_whitespace().next().unwrap_or("");
            let parts: Vec<&str> = candidate.split('.').collect();
            let valid = parts.len() == 3
                && parts[0] == "2"
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
            if valid {
                candidate.to_string()
            } else {
                "2.0.0".to_string()
            }
        }
    }
}

/// Write the complete DSN to `out`, with CRLF line ends; `original` is
/// copied as it is read.
pub fn write(
    report: &Report<'_>,
    original: Original<'_>,
    now: SystemTime,
    out: &mut dyn Write,
) -> io::Result<()> {
    let stamp = now.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let id = header_safe(report.queue_id).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let boundary = format!("odmrd-{stamp:x}-{id}");
    let host = header_safe(report.reporting_host);
    let has = |action: Action| report.failures.iter().any(|f| f.action == action);
    let subject = if has(Action::Failed) || has(Action::Expired) {
        "Undelivered Mail Returned to Sender"
    } else if has(Action::Delayed) {
        "Delayed Mail (still being retried)"
    } else {
        "Relayed mail: delivery status"
    };
    let mut lines: Vec<String> = vec![
        format!("From: Mail Delivery System <MAILER-DAEMON@{host}>"),
        format!("To: <{}>", header_safe(report.sender)),
        format!("Subject: {subject}"),
        format!("Date: {}", rfc5322_date(now)),
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
    let texts = [
        (Action::Failed, "Your message could not be delivered to the following recipients when"),
        (Action::Relayed, "Your message was relayed to the following recipients, whose mail server"),
        (Action::Expired, "Your message could not be delivered to the following recipients: their"),
        (Action::Delayed, "Your message is still waiting for the following recipients' mail server"),
    ];
    for (action, text) in texts {
        if !report.failures.iter().any(|f| f.action == action) {
            continue;
        }
        lines.push(text.into());
        lines.push(match action {
            Action::Failed => "their mail server collected it by On-Demand Mail Relay:".into(),
            Action::Relayed => "collected it by On-Demand Mail Relay and sends no delivery notices:".into(),
            Action::Expired => "mail server did not collect it by On-Demand Mail Relay in time:".into(),
            Action::Delayed => "to collect it by On-Demand Mail Relay; nothing to do for you yet:".into(),
        });
        lines.push(String::new());
        for failure in report.failures.iter().filter(|f| f.action == action) {
            let reply = if failure.reply.is_empty() { "not collected yet" } else { &failure.reply };
            lines.push(format!("  <{}>: {}", header_safe(&failure.recipient), header_safe(reply)));
        }
        lines.push(String::new());
    }
    lines.extend([format!("--{boundary}"), "Content-Type: message/delivery-status".into(), String::new()]);
    if let Some(envid) = report.envid {
        lines.push(format!("Original-Envelope-Id: {}", header_safe(&odmr_api::params::xtext_encode(envid))));
    }
    lines.extend([
        format!("Reporting-MTA: dns; {host}"),
        format!("X-Odmrd-Queue-ID: {}", header_safe(report.queue_id)),
    ]);
    if let Some(arrival) = report.arrival {
        lines.push(format!("Arrival-Date: {}", rfc5322_date(arrival)));
    }
    for failure in report.failures {
        lines.push(String::new());
        if let Some(orcpt) = &failure.orcpt {
            lines.push(format!("Original-Recipient: {}", header_safe(&odmr_api::params::orcpt_param(orcpt))));
        }
        lines.extend([
            format!("Final-Recipient: rfc822; {}", header_safe(&failure.recipient)),
            format!(
                "Action: {}",
                match failure.action {
                    Action::Failed | Action::Expired => "failed",
                    Action::Relayed => "relayed",
                    Action::Delayed => "delayed",
                }
            ),
            format!("Status: {}", recipient_status(failure)),
        ]);
        // An expired or delayed recipient may never have been offered.
        if !failure.reply.is_empty() {
            lines.push(format!("Diagnostic-Code: smtp; {}", header_safe(&failure.reply)));
        }
    }
    lines.push(String::new());
    let mut head = lines.join("\r\n").into_bytes();
    head.extend_from_slice(b"\r\n");
    out.write_all(&head)?;
    match original {
        Original::Headers(headers) if !headers.is_empty() => {
            out.write_all(format!("--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n").as_bytes())?;
            for line in headers.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.is_empty() {
                    out.write_all(line)?;
                    out.write_all(b"\r\n")?;
                }
            }
            out.write_all(b"\r\n")?;
        }
        Original::Headers(_) => {}
        Original::Full(mut message) => {
            out.write_all(format!("--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n").as_bytes())?;
            copy_crlf(&mut *message, out)?;
            out.write_all(b"\r\n")?;
        }
    }
    out.write_all(format!("--{boundary}--\r\n").as_bytes())
}

/// Copy `message` line by line with CRLF line ends, in constant memory (a
/// line longer than the buffer is copied in pieces).
fn copy_crlf(message: &mut dyn Read, out: &mut dyn Write) -> io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, message);
    let mut at_line_end = true;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (piece, used) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], i + 1),
            None => (buf, buf.len()),
        };
        let ends = used > piece.len();
        let piece = if ends { piece.strip_suffix(b"\r").unwrap_or(piece) } else { piece };
        out.write_all(piece)?;
        if ends {
            out.write_all(b"\r\n")?;
        }
        at_line_end = ends;
        reader.consume(used);
    }
    if !at_line_end {
        out.write_all(b"\r\n")?;
    }
    Ok(())
}

/// The complete DSN message in memory, for the tests (odmrd itself streams it with [`write`]).
#[cfg(test)]
pub fn compose(report: &Report<'_>, original: Original<'_>, now: SystemTime) -> Vec<u8> {
    let mut out = Vec::new();
    write(report, original, now, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// Compose the DSN and stream it to `sendmail` (`command -i -f <> -- sender`).
/// The command's output never reaches our stdout (under inetd that is the
/// customer's socket). Err carries a reason for the log.
pub fn submit(sendmail: &[String], report: &Report<'_>, original: Original<'_>) -> Result<(), String> {
    if report.sender.is_empty() {
        return Err("no DSN for the null sender".into());
    }
    let Some((program, args)) = sendmail.split_first() else {
        return Err("[bounce] sendmail is empty".into());
    };
    let mut child = Command::new(program)
        .args(args)
        .args(["-i", "-f", "<>", "--", report.sender])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    // stderr is read after stdin is closed; a command that fills its stderr
    // pipe before reading all of stdin would stall, which sendmail does not.
    let written = child.stdin.take().map(|stdin| {
        let mut stdin = io::BufWriter::new(stdin);
        write(report, original, SystemTime::now(), &mut stdin).and_then(|()| stdin.flush())
    });
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

    fn failure(recipient: &str, reply: &str, action: Action, orcpt: Option<&str>) -> Failure {
        Failure { recipient: recipient.into(), reply: reply.into(), action, orcpt: orcpt.map(Into::into) }
    }

    fn report<'a>(failures: &'a [Failure]) -> Report<'a> {
        Report {
            reporting_host: "odmr.example.net",
            queue_id: "1234.abc",
            sender: "alice@sender.example",
            envid: None,
            arrival: None,
            failures,
        }
    }

    #[test]
    fn the_report_has_the_rfc3464_structure() {
        let failures = [failure("x@example.org", "550 5.1.1 unknown\r\nuser", Action::Failed, None)];
        let headers = b"Subject: hi\nFrom: alice@sender.example\n";
        let text =
            String::from_utf8(compose(&report(&failures), Original::Headers(headers), UNIX_EPOCH)).unwrap();
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
        assert!(!parts[2].contains("Arrival-Date"), "unknown arrival: no field rather than a wrong one");
        assert!(parts[3].contains(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: hi\r\nFrom: alice@sender.example\r\n"
        ));
        assert_eq!(parts[4], "--\r\n");
        assert!(text.contains("\r\nTo: <alice@sender.example>\r\n"));
        assert!(text.contains("report-type=delivery-status"));
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF line ends");
    }

    #[test]
    fn envid_orcpt_arrival_relayed_and_the_full_message() {
        let failures = [
            failure("x@example.org", "550 5.1.1 unknown", Action::Failed, Some("rfc822;X+y@example.org")),
            failure("y@example.org", "250 2.0.0 ok", Action::Relayed, None),
        ];
        let mut r = report(&failures);
        r.envid = Some("env id+1");
        r.arrival = Some(UNIX_EPOCH + std::time::Duration::from_secs(1_795_354_394));
        let mut message: &[u8] = b"Subject: full\n\n.line one\nno end";
        let text =
            String::from_utf8(compose(&r, Original::Full(Box::new(&mut message)), UNIX_EPOCH)).unwrap();
        assert!(text.contains("\r\nOriginal-Envelope-Id: env+20id+2B1\r\n"), "{text}");
        assert!(text.contains("\r\nArrival-Date: Sun, 22 Nov 2026 13:33:14 +0000\r\n"), "{text}");
        assert!(text.contains(
            "\r\nOriginal-Recipient: rfc822;X+2By@example.org\r\nFinal-Recipient: rfc822; x@example.org\r\nAction: failed\r\n"
        ));
        assert!(
            text.contains("Final-Recipient: rfc822; y@example.org\r\nAction: relayed\r\nStatus: 2.0.0\r\n")
        );
        assert!(text.contains(
            "Content-Type: message/rfc822\r\n\r\nSubject: full\r\n\r\n.line one\r\nno end\r\n\r\n--"
        ));
        assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF line ends");
    }

    #[test]
    fn submission_reports_a_failing_command_and_refuses_the_null_sender() {
        let failures = [failure("x@example.org", "550 no", Action::Failed, None)];
        let mut r = report(&failures);
        let err = submit(&["/bin/false".into()], &r, Original::Headers(b"")).unwrap_err();
        assert!(err.contains("/bin/false exited"), "{err}");
        let err = submit(&["/nonexistent/sendmail".into()], &r, Original::Headers(b"")).unwrap_err();
        assert!(err.contains("cannot run"));
        r.sender = "";
        assert!(submit(&["/bin/true".into()], &r, Original::Headers(b"")).is_err());
    }
}
