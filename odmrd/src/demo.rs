//! `odmrd --demo`: a complete provider in a fresh directory, for trying odmrd
//! from a clone with no other setup.
//!
//! This module owns writing that directory: a configuration on the built-in
//! backends, a passwd file with a demo account, maildirs with sample
//! messages, a bounce script that keeps DSNs in a folder, and a fetchmail rc
//! file, then printing how to collect. It also runs a toy receiving MTA (the
//! customer's side, which a newcomer does not have) that files each message
//! it receives into `received/`. It does not run odmrd: `main` loads the
//! configuration written here like any other.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The demo account.
pub const USER: &str = "demo";
/// Its password.
pub const PASSWORD: &str = "demo-secret";
/// The domains it may collect.
pub const DOMAINS: [&str; 2] = ["example.org", "example.net"];
/// Where the demo listens unless `--listen` says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3660";

fn write(path: &Path, text: &str, mode: u32) -> io::Result<()> {
    fs::write(path, text).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn sample_messages() -> Vec<(&'static str, &'static str, String)> {
    vec![
        (
            "example.org",
            "1700000001.demo1.odmrd",
            "Return-Path: <alice@sender.example>\nDelivered-To: bob@example.org\n\
             From: Alice <alice@sender.example>\nTo: bob@example.org\nSubject: Welcome to ODMR\n\n\
             Hello Bob,\nthis message waited at your provider until you collected it.\n\
             .a line that starts with a dot arrives intact\n"
                .to_string(),
        ),
        (
            "example.org",
            "1700000002.demo2.odmrd",
            "MAIL FROM:<carol@sender.example>\nRCPT TO:<dave@example.org>\nRCPT TO:<erin@example.net>\nDATA\n\
             From: Carol <carol@sender.example>\nTo: dave@example.org, erin@example.net\n\
             Subject: One message, two domains (BSMTP)\n\n\
             Collect example.org alone and erin@example.net stays queued.\n..\n.\n"
                .to_string(),
        ),
        (
            "example.net",
            "1700000003.demo3.odmrd",
            "Return-Path: <>\nDelivered-To: postmaster@example.net\n\
             From: MAILER-DAEMON@sender.example\nTo: postmaster@example.net\nSubject: A bounce (null sender)\n\n\
             Messages from the null sender are delivered like any other.\n"
                .to_string(),
        ),
    ]
}

/// Write a demo provider into a new directory under the system's temporary
/// directory and return the path of its configuration file. Prints what was
/// made and how to collect the mail.
pub fn prepare(listen: Option<SocketAddr>) -> io::Result<PathBuf> {
    let listen = listen.unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"));
    let dir = std::env::temp_dir().join(format!("odmrd-demo.{}", std::process::id()));
    for sub in ["locks", "bounces", "fetchmail", "received"] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let entry = crate::sasl::cram_md5_entry(PASSWORD.as_bytes());
    let domains = DOMAINS.join(",");
    write(&dir.join("passwd"), &format!("{USER}:{entry}::::::odmr_domains={domains}\n"), 0o600)?;
    for (domain, name, content) in sample_messages() {
        let maildir = dir.join("spool").join(domain);
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(maildir.join(sub))?;
        }
        write(&maildir.join("new").join(name), &content, 0o600)?;
    }
    let bounce = dir.join("bounce.sh");
    write(&bounce, &format!("#!/bin/sh\ncat > \"{}/bounces/dsn.$$\"\n", dir.display()), 0o700)?;

    let mut ini = String::new();
    let d = dir.display();
    let _ = write!(
        ini,
        "; odmrd demo configuration, written by `odmrd --demo`\n\
         [server]\nhostname = odmr.demo.example\nlisten = {listen}\nlock_directory = {d}/locks\nidle_timeout = 300\n\n\
         [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\n\
         [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\n\
         ; the samples' names date them 2023: keep them however old they look\nmax_hold = 0\n\n\
         [bounce]\nsendmail = {}\n\n\
         [log]\nsyslog = off\nstderr = yes\nlevel = info\n",
        bounce.display()
    );
    let config = dir.join("odmrd.ini");
    write(&config, &ini, 0o644)?;

    let sink = TcpListener::bind((listen.ip(), 0))?;
    let sink_addr = sink.local_addr()?;
    let received = dir.join("received");
    std::thread::spawn(move || run_sink(sink, &received));

    let rc = dir.join("fetchmail/fetchmailrc");
    let rc_text = format!(
        "set no syslog\npoll {} protocol odmr service {} timeout 30\n    user \"{USER}\" password \"{PASSWORD}\"\n    \
         fetchdomains {domains}\n    smtphost {}/{}\n",
        listen.ip(),
        listen.port(),
        sink_addr.ip(),
        sink_addr.port()
    );
    write(&rc, &rc_text, 0o600)?;

    println!(
        "odmrd demo provider in {d}\n\
         \x20 account {USER} / {PASSWORD}, may collect {domains}\n\
         \x20 {} sample messages in {d}/spool/<domain>/new, DSNs land in {d}/bounces\n\n\
         Collect the mail with fetchmail (apt-get install fetchmail) in another terminal:\n\
         \x20 FETCHMAILHOME={d}/fetchmail fetchmail -f {} --nodetach -v\n\
         It relays to a toy MTA on {sink_addr} standing in for yours, which files each\n\
         message it receives in {d}/received.\n\n\
         Starting odmrd -c {} on {listen}; stop it with Ctrl-C.\n",
        sample_messages().len(),
        rc.display(),
        config.display()
    );
    Ok(config)
}

/// The toy customer MTA: accepts everything, files each message it receives.
fn run_sink(listener: TcpListener, dir: &Path) {
    for (n, stream) in listener.incoming().enumerate() {
        if let Ok(stream) = stream {
            let dir = dir.to_path_buf();
            std::thread::spawn(move || {
                let _ = sink_session(stream, &dir, n);
            });
        }
    }
}

fn sink_session(stream: TcpStream, dir: &Path, connection: usize) -> io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 toy-mta.demo.example ESMTP\r\n")?;
    let mut messages = 0;
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-toy-mta.demo.example\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
            "DATA" => {
                out.write_all(b"354 go ahead\r\n")?;
                let mut message = Vec::new();
                loop {
                    let mut data = Vec::new();
                    if input.read_until(b'\n', &mut data)? == 0 {
                        return Ok(());
                    }
                    if data == b".\r\n" {
                        break;
                    }
                    let unstuffed = if data.starts_with(b"..") { &data[1..] } else { &data[..] };
                    message.extend_from_slice(unstuffed);
                }
                messages += 1;
                fs::write(dir.join(format!("{connection}.{messages}.eml")), &message)?;
                b"250 filed\r\n"
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => b"250 ok\r\n",
        };
        out.write_all(reply)?;
    }
}
