//! What the benchmarks share: the customer's side of an ODMR session and a
//! fast MTA that accepts everything.
//!
//! Not a test helper: `t/support` drives real peers for correctness; this
//! plays the peers as fast as possible so the figures measure odmrd.

#![allow(dead_code)] // each example uses its own part

use base64::Engine as _;
use hmac::{Hmac, Mac};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::Path;

/// The user every benchmark logs in as, and its password.
pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-secret";
/// The domain the benchmark queues for.
pub const DOMAIN: &str = "example.org";

/// The passwd file and an odmrd.ini in `dir` (maildir spool under `dir/spool`); the path of
/// the ini. Logging goes to stderr at info, as an operator would run it.
pub fn write_config(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    std::fs::write(dir.join("passwd"), format!("{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains={DOMAIN}\n"))
        .unwrap();
    let text = format!(
        "[server]\nhostname = bench.example\nlock_directory = {d}/locks\nmax_sessions_per_ip = 1000\n\
         [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
         [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
         [bounce]\nsendmail = /bin/true\n[log]\nsyslog = off\nstderr = yes\nlevel = info\n"
    );
    let path = dir.join("odmrd.ini");
    std::fs::write(&path, text).unwrap();
    std::fs::create_dir_all(dir.join("locks")).unwrap();
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(dir.join("spool").join(DOMAIN).join(sub)).unwrap();
    }
    path
}

/// Queue `count` messages of about `body_size` bytes in `dir`'s spool (qmail form).
pub fn queue(dir: &Path, count: usize, body_size: usize) {
    let maildir = dir.join("spool").join(DOMAIN);
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    let new = maildir.join("new");
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\n";
    for i in 0..count {
        let file = std::fs::File::create(new.join(format!("{i:06}.bench"))).unwrap();
        let mut file = BufWriter::new(file);
        write!(
            file,
            "Return-Path: <sender{i}@sender.example>\nDelivered-To: rcpt{i}@{DOMAIN}\nSubject: bench {i}\n\n"
        )
        .unwrap();
        let mut written = 0;
        while written < body_size {
            let n = line.len().min(body_size - written);
            file.write_all(&line[..n]).unwrap();
            written += n;
        }
        file.write_all(b"\n").unwrap();
    }
}

/// What one session delivered.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivered {
    pub messages: usize,
    pub bytes: u64,
}

/// The CRAM-MD5 response of USER with PASSWORD to the `334 <challenge>` line.
pub fn cram_md5_response(challenge_line: &str) -> String {
    let challenge = base64::engine::general_purpose::STANDARD.decode(challenge_line[4..].trim()).unwrap();
    let mut mac = Hmac::<md5::Md5>::new_from_slice(PASSWORD.as_bytes()).unwrap();
    mac.update(&challenge);
    let digest: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    base64::engine::general_purpose::STANDARD.encode(format!("{USER} {digest}"))
}

/// Log in with CRAM-MD5 on a fresh connection (greeting not yet read) and send `ATRN DOMAIN`;
/// returns the first line of the reply to ATRN.
pub fn login_and_atrn<R: BufRead, W: Write>(input: &mut R, out: &mut W) -> String {
    let mut line = String::new();
    let mut read_line = |input: &mut R| {
        line.clear();
        input.read_line(&mut line).unwrap();
        line.clone()
    };
    read_line(input);
    out.write_all(b"EHLO customer.example\r\n").unwrap();
    while read_line(input).starts_with("250-") {}
    out.write_all(b"AUTH CRAM-MD5\r\n").unwrap();
    let response = cram_md5_response(&read_line(input));
    // One command at a time, as fetchmail does (RFC 4954 does not let AUTH be pipelined).
    out.write_all(format!("{response}\r\n").as_bytes()).unwrap();
    assert!(read_line(input).starts_with("235"), "AUTH refused");
    out.write_all(format!("ATRN {DOMAIN}\r\n").as_bytes()).unwrap();
    read_line(input)
}

/// Be a fast MTA on a connection whose greeting is still to be sent: accept every command and
/// message, with PIPELINING (replies are flushed only when no further command is waiting, as
/// Exim and Postfix do). `on_quit` runs when QUIT arrives, before the 221.
pub fn serve_smtp<S: Read, W: Write>(
    input: &mut BufReader<S>,
    out: W,
    mut on_quit: impl FnMut(),
) -> Delivered {
    let mut out = BufWriter::new(out);
    let mut got = Delivered::default();
    out.write_all(b"220 customer.example ESMTP\r\n").unwrap();
    out.flush().unwrap();
    let mut command = Vec::new();
    let mut data = Vec::new();
    loop {
        command.clear();
        if input.read_until(b'\n', &mut command).unwrap_or(0) == 0 {
            return got;
        }
        let reply: &[u8] = match command.get(..4).map(|c| c.to_ascii_uppercase()).as_deref() {
            Some(b"EHLO") => b"250-customer.example\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n",
            Some(b"DATA") => {
                out.write_all(b"354 go\r\n").unwrap();
                out.flush().unwrap();
                loop {
                    data.clear();
                    if input.read_until(b'\n', &mut data).unwrap_or(0) == 0 || data == b".\r\n" {
                        break;
                    }
                    got.bytes += data.len() as u64;
                }
                got.messages += 1;
                b"250 ok\r\n"
            }
            Some(b"QUIT") => {
                on_quit();
                let _ = out.write_all(b"221 bye\r\n");
                let _ = out.flush();
                let _ = input.read_to_end(&mut Vec::new());
                return got;
            }
            _ => b"250 ok\r\n",
        };
        out.write_all(reply).unwrap();
        if input.buffer().is_empty() {
            out.flush().unwrap();
        }
    }
}

/// A whole customer session on `stream`: log in, ATRN, then accept every message.
pub fn customer<S: Read + Write>(stream: S, reader: impl Read) -> Delivered {
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let mut out = stream;
    let atrn = login_and_atrn(&mut input, &mut out);
    assert!(atrn.starts_with("250"), "ATRN refused: {atrn}");
    serve_smtp(&mut input, out, || {})
}

/// Peak resident memory of process `pid` so far, in KiB (Linux).
pub fn peak_rss_kib(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
