//! The held mail as an operator sees it (issue 13): `odmrd --queue` over
//! files as the MTAs write them (one written by a real Exim 4.96 appendfile
//! with `envelope_to_add`), a customer never told 453 while mail waits, and
//! `odmrd --expire` with an injected clock: DSNs checked field by field,
//! NOTIFY honoured, one delay warning per message, a locked domain left
//! alone, and a kill -9 that loses nothing.

#[path = "exim_common.rs"]
mod exim_common;
#[path = "support/mod.rs"]
mod support;

use nix::fcntl::{Flock, FlockArg};
use odmr_api::testing::{tree_snapshot, EntryState};
use odmrd::backend::Backends;
use odmrd::config::Config;
use odmrd::expire::{self, Summary};
use odmrd::locks::DomainLocks;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::odmrd::{odmrd_command, Client, Provider, PASSWORD, USER};
use support::{CustomerMta, MtaOptions, SmtpClient};

/// Arrival of the test's oldest messages (maildir names start with it).
const T0: u64 = 1_790_000_000;
const DAY: u64 = 86_400;

/// A message as a real Exim 4.96 stores it with appendfile, `maildir_format`,
/// `return_path_add` and `envelope_to_add` (the customer-MTA fixture's
/// transport), for two recipients in one file; with `transport_extra`
/// (`use_bsmtp`) in that transport too.
fn exim_file(transport_extra: &str) -> Vec<u8> {
    let options = MtaOptions { transport_extra: transport_extra.into(), ..MtaOptions::default() };
    let mta = CustomerMta::start_with(options);
    let (mut smtp, greeting) = SmtpClient::connect(&mta.addr());
    assert_eq!(greeting.code, 220);
    for (line, code) in [
        ("EHLO sender.example", 250),
        ("MAIL FROM:<alice@sender.example>", 250),
        ("RCPT TO:<u1@example.org>", 250),
        ("RCPT TO:<u2@example.org>", 250),
        ("DATA", 354),
    ] {
        assert_eq!(smtp.cmd(line).code, code, "{line}: {}", mta.diagnostics());
    }
    assert_eq!(smtp.send_data(b"Subject: held by exim\n\nbody\n").code, 250);
    smtp.cmd("QUIT");
    let messages = mta.wait_for(1, Duration::from_secs(20));
    messages.into_iter().next().unwrap()
}

fn exim_envelope_to_file() -> Vec<u8> {
    let file = exim_file("");
    assert!(file.starts_with(b"Return-path: <alice@sender.example>\n"), "{}", String::from_utf8_lossy(&file));
    assert!(
        String::from_utf8_lossy(&file).contains("Envelope-to: u1@example.org,\n u2@example.org\n"),
        "{}",
        String::from_utf8_lossy(&file)
    );
    file
}

fn queue_listing(provider: &Provider, args: &[&str]) -> String {
    let output =
        odmrd_command(&provider.config()).arg("--queue").args(args).stdin(Stdio::null()).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_listing_shows_exactly_what_is_held_and_changes_no_byte() {
    let provider = Provider::new();
    provider.queue(
        "example.org",
        &format!("{T0}.M1P1.provider"),
        &String::from_utf8(exim_envelope_to_file()).unwrap(),
    );
    provider.queue(
        "example.org",
        &format!("{}.M2P2.provider", T0 + 60),
        "Return-Path: <bob@sender.example>\nX-Original-To: u3@example.org\nDelivered-To: u3@example.org\n\nhi\n",
    );
    provider.queue(
        "example.net",
        &format!("{}.M3P3.provider", T0 + 120),
        "MAIL FROM:<> RET=HDRS\nRCPT TO:<n1@example.net> NOTIFY=NEVER\nDATA\nSubject: b\n\n.\n",
    );
    provider.queue("example.org", "junk", "not mail at all\n");
    let bsmtp = exim_file("  use_bsmtp");
    assert!(bsmtp.starts_with(b"MAIL FROM:<alice@sender.example>"), "{}", String::from_utf8_lossy(&bsmtp));
    provider.queue("example.org", &format!("{}.M4P4.provider", T0 + 180), &String::from_utf8(bsmtp).unwrap());
    let spool = provider.path().join("spool");
    let before = tree_snapshot(&spool);

    let text = queue_listing(&provider, &[]);
    assert!(text.contains("example.net: 1 message(s), 1 recipient(s), "), "{text}");
    assert!(text.contains("example.org: 3 message(s), 5 recipient(s), "), "{text}");
    assert!(text.contains(", 1 unreadable\n"), "{text}");
    assert!(text.contains(&format!("  new/{T0}.M1P1.provider  ")), "{text}");
    assert!(
        text.contains("from <alice@sender.example>\n      u1@example.org\n      u2@example.org\n"),
        "{text}"
    );
    assert!(text.contains("  unreadable new/junk: malformed: "), "{text}");

    let json = queue_listing(&provider, &["--json", "example.org"]);
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 5, "{json}");
    let domain = r#"{"type":"domain","domain":"example.org","messages":3,"recipients":5,"#;
    assert!(lines[0].starts_with(domain), "{json}");
    assert!(lines[0].contains(&format!(r#""oldest_arrival":{T0},"#)), "{json}");
    let both = r#""recipients":[{"address":"u1@example.org","last_reply":null},{"address":"u2@example.org","last_reply":null}]}"#;
    let message = |id: &str| format!(r#"{{"type":"message","domain":"example.org","id":"{id}","sender":"#);
    // Exim's envelope_to_add file, the Postfix file, Exim's use_bsmtp file, the junk.
    assert!(lines[1].starts_with(&message(&format!("new/{T0}.M1P1.provider"))), "{json}");
    assert!(lines[1].contains(r#""sender":"alice@sender.example""#) && lines[1].ends_with(both), "{json}");
    assert!(
        lines[2].contains(r#""sender":"bob@sender.example""#) && lines[2].contains("u3@example.org"),
        "{json}"
    );
    assert!(lines[3].starts_with(&message(&format!("new/{}.M4P4.provider", T0 + 180))), "{json}");
    assert!(lines[3].contains(r#""sender":"alice@sender.example""#) && lines[3].ends_with(both), "{json}");
    let junk = r#"{"type":"unreadable","domain":"example.org","id":"new/junk","reason":"malformed: "#;
    assert!(lines[4].starts_with(junk), "{json}");
    assert_eq!(tree_snapshot(&spool), before, "the listing changed the spool");
}

#[test]
fn the_listing_reads_exims_spool_as_exim_bp_does_and_changes_nothing() {
    let exim = exim_common::Provider::new(false);
    let both = exim.queue("alice@sender.example", &["u1@example.org", "u2@example.net"], "both", "x\n");
    let one = exim.queue("<>", &["u3@example.org"], "bounce", "y\n");
    let before = tree_snapshot(&exim.spool());
    let output =
        exim.odmrd_command(exim_common::RunAs::EximUser).args(["--queue", "--json"]).output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let json = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = json.lines().collect();
    assert_eq!(lines.len(), 5, "{json}");
    assert!(
        lines[0].starts_with(r#"{"type":"domain","domain":"example.net","messages":1,"recipients":1,"#),
        "{json}"
    );
    assert!(
        lines[1].starts_with(&format!(
            r#"{{"type":"message","domain":"example.net","id":"{both}","sender":"alice@sender.example","#
        )),
        "{json}"
    );
    assert!(
        lines[1].ends_with(r#""recipients":[{"address":"u2@example.net","last_reply":null}]}"#),
        "{json}"
    );
    assert!(
        lines[2].starts_with(r#"{"type":"domain","domain":"example.org","messages":2,"recipients":2,"#),
        "{json}"
    );
    assert!(lines[3].contains(&format!(r#""id":"{both}""#)) && lines[3].contains("u1@example.org"), "{json}");
    assert!(lines[4].contains(&format!(r#""id":"{one}","sender":"""#)), "{json}");
    assert_eq!(tree_snapshot(&exim.spool()), before, "the listing changed Exim's spool");
    // What Exim itself says is held agrees.
    let bp = exim.pending(&[]);
    assert_eq!(bp[&both], exim_common::set(&["u1@example.org", "u2@example.net"]));
}

/// ATRN for example.org, as the test's customer; the reply line.
fn atrn(provider: &Provider) -> String {
    let mut client: Client = provider.start();
    client.login(USER, PASSWORD);
    client.send("ATRN example.org");
    client.reply().join("\n")
}

#[test]
fn a_customer_is_told_453_only_when_nothing_is_held() {
    let provider = Provider::new();
    // The root exists, example.org has never received mail: truly nothing.
    assert!(atrn(&provider).starts_with("453 "), "granted domain without a maildir yet");

    // No spool root at all: `directory` has a typo, or the spool is not mounted.
    fs::remove_dir(provider.path().join("spool")).unwrap();
    assert!(atrn(&provider).starts_with("451 "), "missing spool root");
    fs::create_dir(provider.path().join("spool")).unwrap();

    // Only files odmrd cannot parse.
    let junk = provider.queue("example.org", "junk", "garbage\n");
    assert!(atrn(&provider).starts_with("451 "), "only unparseable files");
    fs::remove_file(&junk).unwrap();

    // A maildir that cannot be read (here: new/ is not a directory).
    let maildir = provider.path().join("spool/example.org");
    fs::remove_dir(maildir.join("new")).unwrap();
    fs::write(maildir.join("new"), "").unwrap();
    assert!(atrn(&provider).starts_with("451 "), "unreadable maildir");
    fs::remove_file(maildir.join("new")).unwrap();

    // serialmail is collecting: busy, never "no mail".
    provider.queue("example.org", "m", "MAIL FROM:<>\nRCPT TO:<u@example.org>\nDATA\n.\n");
    let lock = fs::File::create(maildir.join("seriallock")).unwrap();
    let held = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| e).unwrap();
    let reply = atrn(&provider);
    assert!(reply.starts_with("451 ") || reply.starts_with("450 "), "busy seriallock: {reply}");
    drop(held);
}

/// The test's provider with `[queue]` ages, loaded as `odmrd --expire` loads it.
fn expiring(provider: &mut Provider, keys: &str) -> (Config, Backends) {
    let d = provider.path().display().to_string();
    provider.queue = format!(
        "plugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}\nstate_directory = {d}/state\n{keys}\n"
    );
    let config = Config::load(&provider.config()).unwrap();
    let backends = Backends::load(&config).unwrap();
    (config, backends)
}

fn pass(config: &Config, backends: &Backends, now: u64, dry_run: bool) -> (Summary, String) {
    let mut out = Vec::new();
    let summary = expire::run(config, backends, UNIX_EPOCH + Duration::from_secs(now), dry_run, &mut out)
        .unwrap_or_else(|e| panic!("{e}"));
    (summary, String::from_utf8(out).unwrap())
}

/// The `message/delivery-status` part's per-recipient groups of a DSN.
fn dsn_fields(message: &[u8]) -> (String, Vec<BTreeMap<String, String>>) {
    let text = String::from_utf8_lossy(message).into_owned();
    assert!(!text.replace("\r\n", "").contains('\n'), "only CRLF: {text}");
    let part =
        text.split("Content-Type: message/delivery-status\r\n\r\n").nth(1).expect("delivery-status part");
    let part = part.split("\r\n--").next().unwrap();
    let groups: Vec<BTreeMap<String, String>> = part
        .split("\r\n\r\n")
        .map(|group| {
            group
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
    (text, groups)
}

#[test]
fn expiry_bounces_exactly_the_expired_recipients_and_warns_once() {
    let mut provider = Provider::new();
    let (config, backends) = expiring(&mut provider, "max_hold = 14d\ndelay_warning = 1d");
    let old = provider.queue(
        "example.org",
        &format!("{T0}.M1P1.provider"),
        "MAIL FROM:<alice@sender.example> ENVID=e1\nRCPT TO:<a1@example.org>\n\
         RCPT TO:<a2@example.org> NOTIFY=NEVER\nRCPT TO:<a3@example.org> NOTIFY=SUCCESS,FAILURE\n\
         DATA\nSubject: old\nMessage-ID: <old@sender.example>\n\nbody\n.\n",
    );
    let null_sender = provider.queue(
        "example.org",
        &format!("{}.M2P2.provider", T0 + 1),
        "Return-Path: <>\nDelivered-To: b@example.org\n\nx\n",
    );
    let young = provider.queue(
        "example.org",
        &format!("{}.M3P3.provider", T0 + 12 * DAY),
        "MAIL FROM:<carol@sender.example>\nRCPT TO:<c1@example.org>\nRCPT TO:<c2@example.org> NOTIFY=FAILURE\nDATA\nSubject: young\n\n.\n",
    );
    let silent = provider.queue(
        "example.org",
        &format!("{}.M4P4.provider", T0 + 12 * DAY),
        "MAIL FROM:<dan@sender.example>\nRCPT TO:<d1@example.org> NOTIFY=NEVER\nDATA\n\n.\n",
    );
    let locked = provider.queue(
        "example.net",
        &format!("{T0}.M5P5.provider"),
        "MAIL FROM:<eve@sender.example>\nRCPT TO:<e@example.net>\nDATA\n\n.\n",
    );
    let now = T0 + 14 * DAY + 10;

    // --dry-run: says it all, changes no message and sends nothing. (It
    // takes the locks a collection takes, so it may create their files.)
    let spool = provider.path().join("spool");
    let messages = |all: BTreeMap<String, EntryState>| {
        all.into_iter().filter(|(k, _)| k.contains("/new/") || k.contains("/cur/")).collect::<Vec<_>>()
    };
    let before = messages(tree_snapshot(&spool));
    let (summary, out) = pass(&config, &backends, now, true);
    assert_eq!((summary.expired, summary.failure_dsns, summary.delay_dsns), (5, 2, 1), "{out}");
    assert!(out.contains(&format!("dry-run domain=example.org id=new/{T0}.M1P1.provider to=a2@example.org status=expired dsn=none (NOTIFY=NEVER)\n")), "{out}");
    assert!(out.contains(&format!("dry-run domain=example.org id=new/{T0}.M1P1.provider to=a3@example.org status=expired dsn=to <alice@sender.example>\n")), "{out}");
    assert_eq!(messages(tree_snapshot(&spool)), before);
    assert!(provider.sendmail.calls().is_empty());

    // A collection holds example.net: its message is not touched.
    let lock = DomainLocks::acquire(&config.server.lock_directory, &["example.net".to_string()]).unwrap();
    let (summary, out) = pass(&config, &backends, now, false);
    drop(lock);
    assert_eq!(summary.busy, ["example.net"], "{out}");
    assert!(locked.exists());
    assert_eq!(
        (summary.expired, summary.failure_dsns, summary.delay_dsns, summary.errors),
        (4, 1, 1, 0),
        "{out}"
    );
    assert!(!old.exists() && !null_sender.exists(), "expired messages stay: {out}");
    assert!(young.exists() && silent.exists());

    let calls = provider.sendmail.calls();
    assert_eq!(calls.len(), 2, "one failure DSN (alice) and one delay DSN (carol): {calls:?}");
    let failed =
        calls.iter().find(|c| c.args.last().map(String::as_str) == Some("alice@sender.example")).unwrap();
    assert_eq!(failed.args, ["-i", "-f", "<>", "--", "alice@sender.example"]);
    let (text, groups) = dsn_fields(&failed.stdin);
    assert!(text.contains("\r\nTo: <alice@sender.example>\r\n"), "{text}");
    assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"), "{text}");
    assert!(
        text.contains(
            "Content-Type: text/rfc822-headers\r\n\r\nSubject: old\r\nMessage-ID: <old@sender.example>\r\n"
        ),
        "{text}"
    );
    assert_eq!(groups[0].get("Reporting-MTA").map(String::as_str), Some("dns; odmr.test.example"));
    assert_eq!(groups[0].get("Original-Envelope-Id").map(String::as_str), Some("e1"), "{text}");
    assert_eq!(groups[0].get("Arrival-Date").map(String::as_str), Some("Mon, 21 Sep 2026 14:13:20 +0000"));
    let recipients: Vec<&str> = groups[1..].iter().map(|g| g["Final-Recipient"].as_str()).collect();
    assert_eq!(recipients, ["rfc822; a1@example.org", "rfc822; a3@example.org"], "NOTIFY=NEVER honoured");
    for group in &groups[1..] {
        assert_eq!(group["Action"], "failed");
        assert_eq!(group["Status"], "4.4.7");
    }
    let warned =
        calls.iter().find(|c| c.args.last().map(String::as_str) == Some("carol@sender.example")).unwrap();
    let (text, groups) = dsn_fields(&warned.stdin);
    assert!(text.contains("Subject: Delayed Mail"), "{text}");
    let recipients: Vec<&str> = groups[1..].iter().map(|g| g["Final-Recipient"].as_str()).collect();
    assert_eq!(recipients, ["rfc822; c1@example.org"], "NOTIFY=FAILURE alone wants no delay DSN");
    assert_eq!((groups[1]["Action"].as_str(), groups[1]["Status"].as_str()), ("delayed", "4.4.7"));

    // A day later: no second delay warning; example.net is free now.
    let (summary, out) = pass(&config, &backends, now + DAY, false);
    assert_eq!((summary.expired, summary.delay_dsns, summary.failure_dsns), (1, 0, 1), "{out}");
    assert!(!locked.exists());
    assert_eq!(provider.sendmail.calls().len(), 3);
    // Past its own max_hold the young message expires, silently for NOTIFY=NEVER.
    let (summary, out) = pass(&config, &backends, T0 + 26 * DAY + 1, false);
    assert_eq!((summary.expired, summary.failure_dsns), (3, 1), "{out}");
    assert!(!young.exists() && !silent.exists());
}

#[test]
fn max_hold_0_never_expires_and_exim_keeps_its_own_expiry() {
    let mut provider = Provider::new();
    let (config, backends) = expiring(&mut provider, "max_hold = 0");
    let kept = provider.queue(
        "example.org",
        "1000000000.M1P1.h",
        "MAIL FROM:<a@s.example>\nRCPT TO:<u@example.org>\nDATA\n\n.\n",
    );
    let (summary, _) = pass(&config, &backends, T0 * 2, false);
    assert_eq!(summary, Summary::default());
    assert!(kept.exists());

    let spool = provider.path().join("exim-spool");
    fs::create_dir_all(spool.join("input")).unwrap();
    provider.queue = format!("plugin = builtin:exim\nspool_directory = {}\n", spool.display());
    let output = odmrd_command(&provider.config()).arg("--expire").stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout.contains("expiry is Exim's job") && stdout.contains("nothing changed"), "{stdout}");
}

#[test]
fn a_kill_during_expire_loses_nothing() {
    // A sendmail that records its call and then hangs: odmrd is killed
    // while it waits for the DSN to be accepted.
    let mut provider = Provider::new();
    let hang = provider.path().join("hanging-sendmail");
    let started = provider.path().join("sendmail-started");
    fs::write(&hang, format!("#!/bin/sh\ncat > /dev/null\n: > '{}'\nexec sleep 60\n", started.display()))
        .unwrap();
    fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let queued = provider.queue(
        "example.org",
        "1700000000.M1P1.h",
        "MAIL FROM:<a@s.example>\nRCPT TO:<u@example.org>\nDATA\nSubject: s\n\n.\n",
    );
    let original = fs::read(&queued).unwrap();
    let (config, _) = expiring(&mut provider, "");
    let ini = fs::read_to_string(&config.path)
        .unwrap()
        .replace(&provider.sendmail.path().display().to_string(), &hang.display().to_string());
    fs::write(&config.path, ini).unwrap();
    let mut child = odmrd_command(&config.path)
        .arg("--expire")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    assert!(support::wait_until(Duration::from_secs(30), || started.exists()), "sendmail never ran");
    // SIGKILL the whole group: odmrd and its hanging sendmail.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    child.wait().unwrap();
    assert_eq!(fs::read(&queued).unwrap(), original, "the message was changed or lost by a killed --expire");

    // The next run bounces it (the documented window: this DSN may be the
    // second for it) and removes it.
    let (config, backends) = expiring(&mut provider, "");
    let (summary, out) =
        pass(&config, &backends, SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs(), false);
    assert_eq!((summary.expired, summary.failure_dsns), (1, 1), "{out}");
    assert!(!queued.exists());
    assert_eq!(provider.sendmail.calls().len(), 1);
}

#[test]
fn the_mail_is_waiting_command_runs_once_per_interval() {
    let mut provider = Provider::new();
    let told = provider.path().join("told");
    let command = provider.path().join("tell");
    fs::write(
        &command,
        format!(
            "#!/bin/sh\necho \"$ODMR_DOMAIN $ODMR_MESSAGES $ODMR_RECIPIENTS $ODMR_OLDEST_AGE $ODMR_ACCOUNT $ODMR_CONTACT\" >> '{}'\n",
            told.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&command, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let keys = format!(
        "max_hold = 0\nnotify_after = 24h\nnotify_interval = 2d\nnotify_command = {}",
        command.display()
    );
    fs::write(
        provider.path().join("passwd"),
        format!(
            "{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org odmr_notify=admin@customer.example\n"
        ),
    )
    .unwrap();
    let (config, backends) = expiring(&mut provider, &keys);
    provider.queue(
        "example.org",
        &format!("{T0}.M1P1.h"),
        "MAIL FROM:<a@s.example>\nRCPT TO:<u@example.org>\nRCPT TO:<v@example.org>\nDATA\n\n.\n",
    );
    let told_lines = || fs::read_to_string(&told).unwrap_or_default();
    assert_eq!(pass(&config, &backends, T0 + DAY - 1, false).0.notices, 0, "not a day old yet");
    assert_eq!(pass(&config, &backends, T0 + DAY, false).0.notices, 1);
    assert_eq!(told_lines(), format!("example.org 1 2 {DAY} {USER} admin@customer.example\n"));
    assert_eq!(pass(&config, &backends, T0 + 2 * DAY, false).0.notices, 0, "within notify_interval");
    assert_eq!(pass(&config, &backends, T0 + 3 * DAY, true).0.notices, 0, "a dry run runs nothing");
    assert_eq!(pass(&config, &backends, T0 + 3 * DAY, false).0.notices, 1, "after notify_interval");
    assert_eq!(told_lines().lines().count(), 2);
    let state = fs::read_to_string(provider.path().join("state/notified")).unwrap();
    assert_eq!(state, format!("example.org\t{}\n", T0 + 3 * DAY));
}

#[test]
fn by_account_shows_each_customers_held_bytes_against_its_quota() {
    let provider = Provider::new();
    fs::write(
        provider.path().join("passwd"),
        format!(
            "{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org,example.net odmr_quota=100\n\
             other:{{PLAIN}}x::::::odmr_domains=example.com\n"
        ),
    )
    .unwrap();
    let message =
        "MAIL FROM:<a@s.example>\nRCPT TO:<u@example.org>\nDATA\nSubject: a body of some size\n\n.\n";
    provider.queue("example.org", "1", message);
    provider.queue("example.org", "2", message);
    provider.queue("stray.example", "3", "MAIL FROM:<>\nRCPT TO:<x@stray.example>\nDATA\n\n.\n");
    let bytes = 2 * message.len();
    let text = queue_listing(&provider, &["--by-account"]);
    let percent = bytes * 100 / 100;
    assert!(
        text.starts_with(&format!(
            "account {USER}: 2 message(s), 2 recipient(s), {bytes} bytes of 100 ({percent}%, over quota)\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("account other: 0 message(s), 0 recipient(s), 0 bytes\nexample.com: 0 message(s)"),
        "{text}"
    );
    assert!(text.contains("account (no account): 1 message(s)"), "{text}");
    let json = queue_listing(&provider, &["--by-account", "--json", "example.org"]);
    let first = json.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            r#"{{"type":"account","account":"{USER}","domains":["example.net","example.org"],"messages":2,"recipients":2,"bytes":{bytes},"quota":100,"over_quota":true}}"#
        )
    );
    assert!(!json.contains(r#""account":"other""#), "only the accounts of the domains asked for: {json}");
}

#[test]
fn check_config_warns_about_granted_domains_without_a_maildir_yet() {
    let p = Provider::new();
    p.queue("example.org", "1.m", "Return-Path: <a@s.example>\nDelivered-To: x@example.org\n\nbody\n");
    let out = support::odmrd::check_config(&p.config());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning is no error: {stderr}");
    for domain in ["example.net", "example.com"] {
        assert!(stderr.contains(&format!("[queue] directory: {domain}, granted to")), "{domain}: {stderr}");
    }
    assert!(!stderr.contains("directory: example.org,"), "example.org has its maildir: {stderr}");
}

#[test]
fn check_config_warns_about_files_in_a_maildirs_quarantine() {
    let p = Provider::new();
    p.queue("example.org", "1.m", "Return-Path: <a@s.example>\nDelivered-To: x@example.org\n\nbody\n");
    let config = p.config();
    let clean = support::odmrd::check_config(&config);
    assert!(!String::from_utf8_lossy(&clean.stderr).contains("odmrd-quarantine"));
    let quarantine = p.path().join("spool/example.org/odmrd-quarantine");
    std::fs::create_dir(&quarantine).unwrap();
    std::fs::write(quarantine.join("2.m"), "MAIL FROM:<a@s.example>\n").unwrap();
    let out = support::odmrd::check_config(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "a warning is no error: {stderr}");
    let want = format!("example.org: 1 file(s) in {} are not collected", quarantine.display());
    assert!(stderr.contains(&want), "{stderr}");
}
