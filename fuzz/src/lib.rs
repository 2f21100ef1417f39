//! One harness per parser of odmrd and its backends: feed it arbitrary bytes, and it runs the
//! parser the way the daemon does and asserts what must hold for any input (no panic, bounded
//! output, the same result however the input is split, parsed values that are well-formed).
//!
//! Owns: the checks. Three drivers share them, so a finding is reproduced the same way
//! everywhere: the cargo-fuzz targets in `fuzz_targets/` (nightly, libFuzzer), the replay of
//! `fuzz/regressions/<target>/*` in the normal test suite (`odmrd/tests/fuzz_regressions.rs`
//! includes this file as a module), and the "never panics" property tests.
//! Does not: depend on libFuzzer, so stable builds can include it.

use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use odmr_api::names::is_valid_domain;
use odmr_api::Secret;
use odmr_backend_exim::header as exim_header_format;
use odmr_backend_maildir::body::{Body, Unstuffer};
use odmr_backend_maildir::envelope::{self, Layout};
use odmrd::proto::{self, Command, Line, LineSplitter, ReplyParser, MAX_AUTH_LINE, MAX_COMMAND_LINE};

/// A harness: runs one parser on the input and panics when a check fails.
pub type Harness = fn(&[u8]);

/// Every harness by the name of its fuzz target (and of its `fuzz/regressions/` directory).
pub const TARGETS: &[(&str, Harness)] = &[
    ("proto_command", proto_command),
    ("proto_reply", proto_reply),
    ("proto_dotstuff", proto_dotstuff),
    ("sasl_cram", sasl_cram),
    ("maildir_envelope", maildir_envelope),
    ("exim_header", exim_header),
    ("passwd_file", passwd_file),
    ("vpasswd_line", vpasswd_line),
    ("config", config),
    ("throttle_state", throttle_state),
    ("esmtp_params", esmtp_params),
];

/// Split `data` into chunks whose sizes cycle through the first byte's bits (1..=8 octets), so
/// the fuzzer explores chunk boundaries as well as contents. The first byte is input too.
fn chunks(data: &[u8]) -> Vec<&[u8]> {
    let seed = data.first().copied().unwrap_or(0);
    let mut out = Vec::new();
    let mut rest = data;
    let mut i = 0;
    while !rest.is_empty() {
        let size = usize::from((seed >> (i % 8)) & 7) + 1;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
        i += 1;
    }
    out
}

/// The limit for the line after `line`, much as the session sets it: [`MAX_AUTH_LINE`] after
/// an `AUTH` without an initial response (the session does so only when it sends `334`), else
/// [`MAX_COMMAND_LINE`].
fn next_line_limit(line: &Line) -> usize {
    match line {
        Line::Complete(line) => match proto::parse_command(line) {
            Ok(Command::Auth { initial_response: None, .. }) => MAX_AUTH_LINE,
            _ => MAX_COMMAND_LINE,
        },
        Line::TooLong => MAX_COMMAND_LINE,
    }
}

/// The lines a [`LineSplitter`] makes of `pieces` with the session's limits, asserting progress
/// and the limits.
fn split_lines(pieces: &[&[u8]]) -> Vec<Line> {
    let mut max = MAX_COMMAND_LINE;
    let mut splitter = LineSplitter::new(max);
    let mut lines = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            let (used, line) = splitter.feed(piece);
            assert!(used > 0 && used <= piece.len(), "splitter consumed {used} of {}", piece.len());
            assert_eq!(line.is_some(), piece[used - 1] == b'\n', "a line ends exactly at its LF");
            piece = &piece[used..];
            let Some(line) = line else { continue };
            if let Line::Complete(line) = &line {
                assert!(line.len() < max, "a {}-octet line passed a limit of {max}", line.len());
                assert!(!line.contains(&b'\n'));
            }
            max = next_line_limit(&line);
            splitter.set_max(max);
            lines.push(line);
        }
    }
    lines
}

/// The command line splitter (with the longer limit for AUTH responses) and the command parser
/// (provider side, before ATRN).
pub fn proto_command(data: &[u8]) {
    let whole = split_lines(&[data]);
    assert_eq!(whole, split_lines(&chunks(data)), "lines depend on the chunking");
    let candidates = whole.iter().filter_map(|l| match l {
        Line::Complete(line) => Some(line.as_slice()),
        Line::TooLong => None,
    });
    for line in candidates.chain([data]) {
        match proto::parse_command(line) {
            Ok(Command::Atrn(domains)) => {
                for (i, domain) in domains.iter().enumerate() {
                    assert!(is_valid_domain(domain), "ATRN accepted {domain:?}");
                    assert_eq!(*domain, domain.to_ascii_lowercase());
                    assert!(!domains[..i].contains(domain), "ATRN list not de-duplicated");
                }
            }
            Ok(Command::Auth { mechanism, .. }) => {
                assert!((1..=20).contains(&mechanism.len()), "mechanism {mechanism:?}");
            }
            Ok(_) => {}
            Err(error) => assert!(!error.to_string().contains(['\r', '\n'])),
        }
    }
}

/// All results a [`ReplyParser`] gives for `pieces`, asserting progress.
fn parse_replies(pieces: &[&[u8]]) -> Vec<Result<proto::Reply, proto::ReplyError>> {
    let mut parser = ReplyParser::new();
    let mut results = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            let (used, result) = parser.feed(piece);
            assert!(used <= piece.len());
            assert!(used > 0 || result.is_some(), "reply parser made no progress");
            results.extend(result);
            piece = &piece[used..];
        }
    }
    results
}

/// The customer's replies in the reversed state, and the EHLO capabilities in them.
pub fn proto_reply(data: &[u8]) {
    let whole = parse_replies(&[data]);
    assert_eq!(whole, parse_replies(&chunks(data)), "replies depend on the chunking");
    for reply in whole.iter().flatten() {
        assert!((200..=599).contains(&reply.code), "code {}", reply.code);
        assert!(!reply.lines.is_empty() && reply.lines.len() <= proto::MAX_REPLY_LINES);
        assert!(!reply.text().contains(['\r', '\n']), "reply text spans lines");
        proto::Capabilities::from_ehlo(reply);
    }
}

/// `data` with every line end (CRLF, bare LF, bare CR) as CRLF and a final CRLF if missing.
pub fn crlf_normalised(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 2);
    let mut i = 0;
    while i < data.len() {
        match data[i] {
            b'\r' if data.get(i + 1) == Some(&b'\n') => {
                out.extend_from_slice(b"\r\n");
                i += 1;
            }
            b'\r' | b'\n' => out.extend_from_slice(b"\r\n"),
            b => out.push(b),
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Un-stuff a complete BSMTP/DATA stream with the maildir backend's [`Unstuffer`], through an
/// output buffer of `out` octets; returns the data and whether the terminator ended it exactly.
pub fn unstuffed(stuffed: &[u8], out: usize) -> (Vec<u8>, bool) {
    let mut unstuffer = Unstuffer::default();
    let mut buf = vec![0; out];
    let mut result = Vec::new();
    let mut rest = stuffed;
    while !rest.is_empty() && !unstuffer.is_done() {
        let (used, n) = unstuffer.decode(rest, &mut buf);
        result.extend_from_slice(&buf[..n]);
        rest = &rest[used..];
    }
    let terminated = unstuffer.finish_at_eof() && rest.is_empty();
    (result, terminated)
}

/// The DATA encoder (line ends to CRLF, dot-stuffing) against the BSMTP un-stuffer: whatever
/// the body and its chunking, un-stuffing the encoding gives the CRLF-normalised body back.
pub fn proto_dotstuff(data: &[u8]) {
    let mut stuffer = proto::DotStuffer::new();
    let mut stuffed = Vec::new();
    for chunk in chunks(data) {
        stuffer.encode(chunk, &mut stuffed);
    }
    stuffer.finish(&mut stuffed);
    assert!(stuffed.ends_with(b".\r\n"));
    let body = &stuffed[..stuffed.len() - 3];
    for line in body.split_inclusive(|&b| b == b'\n') {
        assert!(line.ends_with(b"\r\n"), "line without CRLF: {line:?}");
        assert!(!line[..line.len() - 2].contains(&b'\r'), "bare CR in {line:?}");
        assert_ne!(line, b".\r\n", "an early end-of-data line");
    }
    let out = usize::from(data.first().copied().unwrap_or(0) % 16) + 1;
    let (back, terminated) = unstuffed(&stuffed, out);
    assert!(terminated, "the terminator did not end the stream");
    assert_eq!(back, crlf_normalised(data));
}

/// The CRAM-MD5 response decoder and the digest check.
pub fn sasl_cram(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    let secret = Secret::Plain(b"tanstaaftanstaaf".to_vec());
    let challenge = "<1896.697170952@postoffice.example.net>";
    if let Ok((user, digest)) = odmrd::sasl::decode_cram_response(&line) {
        assert!(!user.is_empty() && !user.chars().any(char::is_control), "user {user:?}");
        assert!(digest.len() == 32 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        odmrd::sasl::verify(&secret, challenge, &digest);
        odmrd::sasl::verify(&Secret::CramMd5Context([7; 32]), challenge, &digest);
    }
    odmrd::sasl::verify(&secret, challenge, &line);
}

/// Read a body to its end through a small buffer; the total size read.
fn drain(mut read: impl FnMut(&mut [u8]) -> std::io::Result<usize>) -> std::io::Result<u64> {
    let mut buf = [0u8; 7];
    let mut total = 0;
    loop {
        match read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// A queued maildir file: the BSMTP and the header-form envelope parsers (the first byte chooses
/// whether a `Delivered-To` prefix is stripped), then the body reader over what they found.
pub fn maildir_envelope(data: &[u8]) {
    let (prefix, file) = match data.split_first() {
        Some((b, rest)) if b & 1 == 1 => (Some("alias-"), rest),
        Some((_, rest)) => (None, rest),
        None => (None, data),
    };
    let mut reader = BufReader::with_capacity(16, std::io::Cursor::new(file));
    let Ok(parsed) = envelope::parse(&mut reader, prefix) else { return };
    assert!(!parsed.recipients.is_empty());
    for r in &parsed.recipients {
        assert!(!r.address.is_empty() && !r.address.contains(|c: char| c.is_control() || c == ' '));
    }
    let len = file.len() as u64;
    let mut cursor = Cursor::new(file);
    let body = match parsed.layout {
        Layout::Bsmtp { mail_line, data_line, data_start } => {
            // A rewrite keeps these lines verbatim: together they must be the whole envelope.
            let mut envelope = mail_line;
            parsed.recipients.iter().for_each(|r| envelope.extend_from_slice(&r.line));
            envelope.extend_from_slice(&data_line);
            assert_eq!(envelope.len() as u64, data_start);
            assert!(file.starts_with(&envelope), "the kept lines are not the file's envelope");
            cursor.seek(SeekFrom::Start(data_start)).expect("seek in memory");
            Body::Bsmtp { reader: BufReader::with_capacity(5, cursor), unstuffer: Unstuffer::default() }
        }
        Layout::Headers { skip, .. } => {
            for (i, range) in skip.iter().enumerate() {
                assert!(range.start < range.end && range.end <= len, "skip {range:?} of {len}");
                assert!(i == 0 || skip[i - 1].end <= range.start, "skip ranges overlap");
                let field = &file[range.start as usize..];
                let name = |n: &[u8]| field.len() >= n.len() && field[..n.len()].eq_ignore_ascii_case(n);
                assert!(name(b"Return-Path:") || name(b"Delivered-To:"), "skipping another field");
            }
            Body::Headers { reader: BufReader::with_capacity(5, cursor), pos: 0, skip }
        }
    };
    let mut body = body;
    let read = drain(|buf| body.read(buf)).expect("the body of an accepted file is readable");
    assert!(read <= len);
}

/// The message id the `exim_header` target's inputs must name on their first line.
pub const EXIM_ID: &str = "1tGb3c-000Abc-7x";

/// Exim's `-H` file: the envelope, then the header records and the body streamed from them.
pub fn exim_header(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let recipient = exim_header_format::recipient_line(line);
        assert!(line.starts_with(recipient.address));
        recipient.details();
    }
    let mut reader = BufReader::with_capacity(16, data);
    let Ok(header) = exim_header_format::parse(&mut reader, EXIM_ID) else { return };
    assert!(header.headers_offset <= data.len() as u64);
    let records = &data[header.headers_offset as usize..];
    let Ok(size) = exim_header_format::transmitted_size(&mut BufReader::new(records)) else { return };
    let mut body = exim_header_format::Body::new(BufReader::with_capacity(3, records), &b"body\n"[..]);
    let read = drain(|buf| body.read(buf)).expect("records that were checked stream");
    assert_eq!(read, size + 1 + 5, "streamed size differs from the checked size");
}

/// The Dovecot-style passwd-file parser.
pub fn passwd_file(data: &[u8]) {
    let (_, warnings) = odmr_backend_passwd::parse_for_fuzzing(data);
    for warning in warnings {
        assert!(warning.starts_with("line "), "warning without its line: {warning}");
    }
}

/// vpopmail's `vpasswd` lines (the text file's lines and the cdb records' data).
pub fn vpasswd_line(data: &[u8]) {
    use odmr_backend_vpopmail::vpasswd::parse_fields;
    for line in data.split(|&b| b == b'\n') {
        // As `vpasswd::lookup`: the name up to the first `:`, the fields after it.
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let rest = &line[colon + 1..];
        if let Some(entry) = parse_fields(rest, 6) {
            if let Some(clear) = entry.clear {
                assert!(!clear.is_empty() && rest.ends_with(&clear));
            }
        }
    }
}

/// The configuration file parser.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Err(error) = odmrd::config::Config::parse(&text, Path::new("/etc/odmrd-fuzz.ini")) {
        assert!(error.to_string().contains("/etc/odmrd-fuzz.ini"), "error without its file: {error}");
    }
}

/// The inetd throttle's state file: whatever it holds, what is read back is bounded, holds only
/// address keys, and survives being written and read again unchanged.
pub fn throttle_state(data: &[u8]) {
    use odmrd::throttle::{format_table, parse_table, MAX_ENTRIES};
    let table = parse_table(&String::from_utf8_lossy(data));
    assert!(table.len() <= MAX_ENTRIES);
    assert_eq!(parse_table(&format_table(&table)), table, "format then parse changed the table");
}

/// The ESMTP parameters of queued envelopes (RFC 3461 NOTIFY, RET, and the xtext of ENVID and
/// ORCPT): what decodes re-encodes to the same value, and whatever a backend hands over as an
/// ORCPT (Exim's fallback keeps a value it cannot decode as written) is sent on as one valid
/// parameter value.
pub fn esmtp_params(data: &[u8]) {
    use odmr_api::params::{self, Notify, Ret};
    let text = String::from_utf8_lossy(data);
    for (_, value) in params::esmtp_params(&text) {
        if let Some(param) = Notify::parse(&value).and_then(Notify::param) {
            assert_eq!(Notify::parse(&param).and_then(Notify::param), Some(param));
        }
        if let Some(ret) = Ret::parse(&value) {
            assert_eq!(Ret::parse(ret.param()), Some(ret));
        }
        if let Some(decoded) = params::xtext_decode(&value) {
            assert_eq!(params::xtext_decode(&params::xtext_encode(&decoded)), Some(decoded));
        }
        if let Some(decoded) = params::orcpt_decode(&value) {
            assert_eq!(params::orcpt_decode(&params::orcpt_param(&decoded)), Some(decoded));
        }
    }
    let orcpt = params::orcpt_param(&text);
    assert!(params::orcpt_decode(&orcpt).is_some(), "ORCPT={orcpt:?} does not decode");
    assert!(orcpt.bytes().all(|b| (b'!'..=b'~').contains(&b) && b != b'='), "ORCPT={orcpt:?}");
    assert_eq!(params::xtext_decode(&params::xtext_encode(&text)).as_deref(), Some(&*text));
}

/// Replay every file under `dir/<target>/` through its harness (the regression cases the fuzzers
/// found); returns how many files ran. A missing directory holds no cases.
pub fn replay_regressions(dir: &Path) -> usize {
    let mut ran = 0;
    for (target, harness) in TARGETS {
        let Ok(entries) = std::fs::read_dir(dir.join(target)) else { continue };
        let mut paths: Vec<_> = entries.map(|e| e.expect("readable directory").path()).collect();
        paths.sort();
        for path in paths {
            let mut data = Vec::new();
            std::fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut data)).expect("readable case");
            let result = std::panic::catch_unwind(|| harness(&data));
            assert!(result.is_ok(), "regression case {} fails again", path.display());
            ran += 1;
        }
    }
    ran
}
