//! End-to-end tests of `builtin:vpopmail`: a real vpopmail tree in a
//! temporary directory (users/assign and users/cdb, vpasswd and vpasswd.cdb
//! written with Debian's tinycdb `cdb`, an alias domain, a hashed domain
//! directory, qmail's own wildcard assignments beside vpopmail's), qmail-style
//! maildirs as the queue (`Delivered-To: odmr-<domain>-…`, `strip_prefix`),
//! and odmrd itself: `--inetd` on a socketpair for the reply cases, and a
//! standalone odmrd collected from by the real fetchmail into a real Exim.
//!
//! The fetchmail case uses `t/support` (CustomerMta, Fetchmail).

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;
use support::odmrd::{shared_object, start_inetd, Client, Daemon};
use support::RecordingSendmail;

const PASSWORD: &str = "S3cret-odmr";
const HASH: &str = "$1$Qx7vKp2L$uZMpE2SG/pgYgOdeVC73u1";

#[path = "../backends/vpopmail/tests/cdb_tool/mod.rs"]
mod cdb_tool;
use cdb_tool::tinycdb;

/// A qmail + vpopmail provider in a temporary directory.
struct Provider {
    dir: tempfile::TempDir,
    grants: Option<String>,
    /// `[credentials] plugin`: `builtin:vpopmail` or the path of a shared object.
    credentials_plugin: String,
    sendmail: RecordingSendmail,
}

impl Provider {
    fn new() -> Provider {
        let p = Provider {
            dir: tempfile::tempdir().unwrap(),
            grants: None,
            credentials_plugin: "builtin:vpopmail".into(),
            sendmail: RecordingSendmail::new(),
        };
        // "spool": the maildir spool root, which qmail-local does not create (a missing root is 451).
        for sub in ["qmail/users", "vpopmail/etc", "locks", "spool"] {
            std::fs::create_dir_all(p.path().join(sub)).unwrap();
        }
        p.assign();
        p.vpasswd(
            "example.com",
            &[("customer1", 0, Some(PASSWORD)), ("noclear", 0, None), ("nosmtp", 2048, Some("pw-nosmtp"))],
        );
        p.vpasswd("0/big.example", &[("boss", 0, Some("boss-pw"))]);
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn domain_dir(&self, dir: &str) -> PathBuf {
        self.path().join("vpopmail/domains").join(dir)
    }

    /// users/assign as vpopmail and an ODMR set-up write it (see
    /// docs/qmail-vpopmail.md), and users/cdb compiled from it as qmail-newu does.
    fn assign(&self) {
        let d = |dir: &str| self.domain_dir(dir).display().to_string();
        let spool = |domain: &str| self.path().join("spool").join(domain).display().to_string();
        let text = format!(
            "+example.com-:example.com:89:89:{ex}:-::\n\
             +alias.example-:example.com:89:89:{ex}:-::\n\
             +big.example-:big.example:89:89:{big}:-::\n\
             +odmr-example.com-:vpopmail:89:89:{s1}:-::\n\
             +odmr-alias.example-:vpopmail:89:89:{s2}:-::\n\
             +odmr-example.org-:vpopmail:89:89:{s3}:-::\n\
             .\n",
            ex = d("example.com"),
            big = d("0/big.example"),
            s1 = spool("example.com"),
            s2 = spool("alias.example"),
            s3 = spool("example.org"),
        );
        std::fs::write(self.path().join("qmail/users/assign"), &text).unwrap();
        let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for line in text.lines().filter(|l| l.starts_with('+')) {
            let (loc, rest) = line[1..].split_once(':').unwrap();
            let value: Vec<&str> = rest.splitn(7, ':').take(6).collect();
            records.push((format!("!{loc}").into_bytes(), value.join("\0").into_bytes()));
        }
        records.push((Vec::new(), b"-".to_vec()));
        tinycdb(&self.path().join("qmail/users/cdb"), &records);
    }

    /// A domain's vpasswd and vpasswd.cdb: `(user, gid flags, clear-text password)`.
    fn vpasswd(&self, dir: &str, users: &[(&str, u32, Option<&str>)]) {
        let dir = self.domain_dir(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::new();
        let mut records = Vec::new();
        for (user, gid, clear) in users {
            let rest = format!(
                "{HASH}:1:{gid}:{user}:{}:NOQUOTA{}",
                dir.join(user).display(),
                clear.map(|c| format!(":{c}")).unwrap_or_default()
            );
            text.push_str(&format!("{user}:{rest}\n"));
            records.push((user.as_bytes().to_vec(), rest.into_bytes()));
        }
        std::fs::write(dir.join("vpasswd.tmp"), text).unwrap();
        std::fs::rename(dir.join("vpasswd.tmp"), dir.join("vpasswd")).unwrap();
        tinycdb(&dir.join("vpasswd.cdb"), &records);
    }

    fn maildir(&self, domain: &str) -> PathBuf {
        let m = self.path().join("spool").join(domain).join("Maildir");
        for sub in ["new", "cur", "tmp"] {
            std::fs::create_dir_all(m.join(sub)).unwrap();
        }
        m
    }

    /// A message as qmail-local writes it through `.qmail-default` = `./Maildir/`.
    fn queue(&self, domain: &str, name: &str, from: &str, local: &str, body: &str) -> PathBuf {
        let path = self.maildir(domain).join("new").join(name);
        std::fs::write(
            &path,
            format!("Return-Path: <{from}>\nDelivered-To: odmr-{domain}-{local}@{domain}\n{body}"),
        )
        .unwrap();
        path
    }

    fn queued(&self, domain: &str) -> usize {
        ["new", "cur"]
            .iter()
            .map(|sub| std::fs::read_dir(self.maildir(domain).join(sub)).unwrap().count())
            .sum()
    }

    fn config(&self) -> PathBuf {
        let d = self.path().display();
        let grants = self.grants.as_ref().map(|g| format!("grants = {g}\n")).unwrap_or_default();
        let ini = format!(
            "[server]\nhostname = odmr.test.example\nlock_directory = {d}/locks\n\
             [auth]\nmax_failures = 3\nfailure_delay = 0.01\n\
             [credentials]\nplugin = {plugin}\nqmail_users = {d}/qmail/users\n\
             vpopmail_home = {d}/vpopmail\n{grants}\
             [queue]\nplugin = builtin:maildir\ndirectory = {d}/spool/{{domain}}/Maildir\n\
             strip_prefix = odmr-{{domain}}-\n\
             [bounce]\nsendmail = {sendmail}\n\
             [log]\nsyslog = off\nstderr = yes\nlevel = debug\n",
            plugin = self.credentials_plugin,
            sendmail = self.sendmail.path().display()
        );
        let path = self.path().join("odmrd.ini");
        std::fs::write(&path, ini).unwrap();
        path
    }

    fn with_grants(mut self, text: &str) -> Provider {
        let path = self.path().join("grants");
        std::fs::write(&path, text).unwrap();
        self.grants = Some(path.display().to_string());
        self
    }

    fn start(&self) -> Client {
        start_inetd(&self.config())
    }
}

// ---------------------------------------------------------------------------
// Sessions over a socketpair.

#[test]
fn cram_md5_with_the_vpopmail_password_then_bare_atrn_collects_the_domain_and_its_alias() {
    let p = Provider::new();
    let own = p.queue("example.com", "1.a", "alice@sender.example", "bob", "Subject: one\n\nfor bob\n");
    let alias = p.queue("alias.example", "2.a", "carol@sender.example", "dave", "Subject: two\n\nfor dave\n");
    let mut c = p.start();
    c.hello();
    c.auth("customer1@example.com", PASSWORD, 235);
    c.command("ATRN", 250);
    c.turn_around("odmr.test.example", &[]);
    let mut got = [c.receive_one(), c.receive_one()];
    got.sort();
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert_eq!(got[0].0, "MAIL FROM:<alice@sender.example>");
    assert_eq!(got[0].1, ["RCPT TO:<bob@example.com>"]);
    assert_eq!(got[0].2, "Subject: one\r\n\r\nfor bob\r\n");
    assert_eq!(got[1].0, "MAIL FROM:<carol@sender.example>");
    assert_eq!(got[1].1, ["RCPT TO:<dave@alias.example>"]);
    assert!(!own.exists() && !alias.exists(), "{log}");
    assert!(log.contains("event=auth user=customer1@example.com result=ok"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("$1$"), "no secret is ever logged:\n{log}");
}

/// `builtin:vpopmail` is also available as a shared object (issue 4): CRAM-MD5 and ATRN
/// through `plugin = .../libodmr_backend_vpopmail.so` in `[credentials]`.
#[test]
fn the_vpopmail_backend_loaded_as_a_shared_object_serves_a_session() {
    let mut p = Provider::new();
    let so = shared_object("libodmr_backend_vpopmail.so");
    p.credentials_plugin = so.display().to_string();
    let own = p.queue("example.com", "1.a", "alice@sender.example", "bob", "Subject: one\n\nfor bob\n");
    let mut c = p.start();
    c.hello();
    c.auth("customer1@example.com", "wrong", 535);
    c.auth("customer1@example.com", PASSWORD, 235);
    c.command("ATRN example.org", 450);
    c.command("ATRN example.com", 250);
    c.turn_around("odmr.test.example", &[]);
    let (mail, rcpts, data) = c.receive_one();
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert_eq!(mail, "MAIL FROM:<alice@sender.example>");
    assert_eq!(rcpts, ["RCPT TO:<bob@example.com>"]);
    assert_eq!(data, "Subject: one\r\n\r\nfor bob\r\n");
    assert!(!own.exists(), "{log}");
    assert!(log.contains(&format!("section=credentials loaded={}", so.display())), "{log}");
    assert!(log.contains("event=auth user=customer1@example.com result=ok"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("$1$"), "no secret is ever logged:\n{log}");
}

#[test]
fn customers_log_in_with_user_percent_domain_and_alias_domains() {
    let p = Provider::new();
    for login in ["customer1%example.com", "Customer1@Alias.Example", "customer1/example.com"] {
        let mut c = p.start();
        c.hello();
        c.auth(login, PASSWORD, 235);
        c.command("ATRN example.com,alias.example", 453);
        c.command("QUIT", 221);
    }
}

#[test]
fn wrong_passwords_unknown_users_and_unknown_domains_get_535() {
    let p = Provider::new();
    let mut c = p.start();
    c.hello();
    c.auth("customer1@example.com", "wrong", 535);
    c.auth("nobody@example.com", PASSWORD, 535);
    c.auth("customer1@unknown.example", PASSWORD, 421);
    let (_, log) = c.finish();
    assert!(log.contains("user=customer1@example.com result=failed reason=wrong-password"), "{log}");
    assert!(log.contains("no account nobody in domain example.com"), "{log}");
    assert!(log.contains("user=nobody@example.com result=failed reason=unknown-user"), "{log}");
    assert!(log.contains("unknown domain unknown.example"), "{log}");
    assert!(log.contains("user=customer1@unknown.example result=failed reason=unknown-user"), "{log}");
    // qmail's wildcard assignment for the ODMR maildir is no vpopmail domain.
    let mut c = p.start();
    c.hello();
    c.auth("customer1@odmr-example.com", PASSWORD, 535);
}

#[test]
fn an_account_without_the_clear_text_field_gets_535_and_the_log_says_why() {
    let p = Provider::new();
    let mut c = p.start();
    c.hello();
    c.auth("noclear@example.com", "anything", 535);
    c.command("QUIT", 221);
    let (_, log) = c.finish();
    assert!(
        log.contains(
            "account noclear@example.com has no clear-text password \
             (vpopmail built without --enable-clear-passwd?)"
        ),
        "{log}"
    );
    assert!(
        log.contains("user=noclear@example.com result=failed reason=no-secret-usable-for-cram-md5"),
        "{log}"
    );
}

#[test]
fn a_disabled_account_gets_535_even_with_the_right_password() {
    let p = Provider::new();
    let mut c = p.start();
    c.hello();
    c.auth("nosmtp@example.com", "pw-nosmtp", 535);
    c.command("ATRN", 530);
    c.command("QUIT", 221);
    let (_, log) = c.finish();
    assert!(
        log.contains("account nosmtp@example.com is disabled: its vpasswd gid field sets NO_SMTP (0x800)"),
        "{log}"
    );
    assert!(log.contains("user=nosmtp@example.com result=failed reason=account-disabled"), "{log}");
    assert!(!log.contains("pw-nosmtp"), "{log}");
}

#[test]
fn an_account_disabled_between_auth_and_atrn_gets_450_not_451() {
    let p = Provider::new();
    let mut c = p.start();
    c.login("customer1@example.com", PASSWORD);
    // vmoduser -s customer1@example.com: NO_SMTP, now.
    p.vpasswd("example.com", &[("customer1", 2048, Some(PASSWORD))]);
    let text = c.command("ATRN example.com", 450);
    assert!(text.contains("disabled"), "{text}");
    c.command("QUIT", 221);
    let (_, log) = c.finish();
    assert!(log.contains("result=450 reason=account-disabled"), "{log}");
}

#[test]
fn a_password_changed_on_disk_applies_to_the_running_odmrd() {
    let p = Provider::new();
    let mut c = p.start();
    c.hello();
    c.auth("customer1@example.com", "brand-new", 535);
    // vpopmail's vpasswd rewrites vpasswd and vpasswd.cdb, both by rename.
    p.vpasswd("example.com", &[("customer1", 0, Some("brand-new")), ("newbie", 0, Some("hello"))]);
    c.auth("customer1@example.com", PASSWORD, 535);
    c.auth("customer1@example.com", "brand-new", 235);
    c.command("QUIT", 221);
    let mut c = p.start();
    c.hello();
    c.auth("newbie@alias.example", "hello", 235);
}

#[test]
fn grants_widen_what_bare_and_explicit_atrn_collect() {
    let p = Provider::new()
        .with_grants("# account: domain, domain\nboss@big.example: example.org, alias.example\n");
    let org = p.queue("example.org", "1.o", "a@sender.example", "x", "Subject: org\n\nbody\n");
    let com = p.queue("example.com", "2.c", "a@sender.example", "y", "Subject: com\n\nbody\n");

    let mut c = p.start();
    c.hello();
    c.auth("boss@big.example", "boss-pw", 235);
    // Not granted: example.com, and nothing is sent for any domain.
    c.command("ATRN example.org,example.com", 450);
    c.command("ATRN example.com", 450);
    c.command("ATRN big.example", 453);
    // Bare ATRN: big.example, example.org and alias.example.
    c.command("ATRN", 250);
    c.turn_around("odmr.test.example", &[]);
    let (mail, rcpts, _) = c.receive_one();
    assert_eq!(mail, "MAIL FROM:<a@sender.example>");
    assert_eq!(rcpts, ["RCPT TO:<x@example.org>"]);
    c.expect_quit();
    let (_, log) = c.finish();
    assert!(!org.exists(), "{log}");
    assert!(com.exists(), "example.com was never granted to boss");

    // The account that owns example.com: its own domain and alias, not example.org.
    p.queue("example.org", "3.o", "a@sender.example", "z", "Subject: org2\n\nbody\n");
    let mut c = p.start();
    c.hello();
    c.auth("customer1@example.com", PASSWORD, 235);
    c.command("ATRN example.org", 450);
    c.command("ATRN EXAMPLE.com", 250);
    c.turn_around("odmr.test.example", &[]);
    let (_, rcpts, _) = c.receive_one();
    assert_eq!(rcpts, ["RCPT TO:<y@example.com>"]);
    c.expect_quit();
    c.finish();
    assert_eq!(p.queued("example.org"), 1);
}

// ---------------------------------------------------------------------------
// The real customer: fetchmail, through a standalone odmrd, into Exim.

#[test]
fn fetchmail_collects_with_the_vpopmail_password_through_a_standalone_odmrd() {
    let p = Provider::new();
    let m1 = p.queue("example.com", "1.m", "alice@sender.example", "bob", "Subject: first\n\nHello Bob.\n");
    let m2 =
        p.queue("alias.example", "2.m", "carol@sender.example", "dave", "Subject: second\n\nHello Dave.\n");
    let daemon = Daemon::start(&p.config());
    let mta = support::CustomerMta::start();

    let run = support::Fetchmail::new(daemon.port())
        .user("customer1@example.com", PASSWORD)
        .domains(&["example.com", "alias.example"])
        .smtp_port(mta.port())
        .run();
    assert_eq!(run.code, Some(0), "{}\n--- odmrd\n{}", run.report(), daemon.log());
    let messages = mta.wait_for(2, Duration::from_secs(20));
    let mut got: Vec<(String, Vec<String>, Vec<u8>)> = messages
        .iter()
        .map(|m| {
            let (from, to) = support::envelope_of(m);
            (from, to, support::body_of(m).to_vec())
        })
        .collect();
    got.sort();
    assert_eq!(
        got[0],
        ("alice@sender.example".into(), vec!["bob@example.com".into()], b"Hello Bob.\n".to_vec())
    );
    assert_eq!(
        got[1],
        ("carol@sender.example".into(), vec!["dave@alias.example".into()], b"Hello Dave.\n".to_vec())
    );
    assert!(!m1.exists() && !m2.exists(), "collected messages leave the spool");

    // The password is changed on disk while this odmrd runs: the old one
    // stops working at once and the new one collects the next message.
    p.vpasswd("example.com", &[("customer1", 0, Some("changed-pw"))]);
    let m3 = p.queue("example.com", "3.m", "erin@sender.example", "bob", "Subject: third\n\nAgain.\n");
    let old = support::Fetchmail::new(daemon.port())
        .user("customer1@example.com", PASSWORD)
        .domains(&["example.com"])
        .smtp_port(mta.port())
        .run();
    assert_eq!(old.code, Some(128), "AUTH 535 is fetchmail's exit 128\n{}", old.report());
    assert!(m3.exists());
    let new = support::Fetchmail::new(daemon.port())
        .user("customer1@example.com", "changed-pw")
        .domains(&["example.com"])
        .smtp_port(mta.port())
        .run();
    assert_eq!(new.code, Some(0), "{}\n--- odmrd\n{}", new.report(), daemon.log());
    mta.wait_for(3, Duration::from_secs(20));
    assert!(!m3.exists());

    let log = daemon.log();
    assert!(log.contains("user=customer1@example.com result=failed reason=wrong-password"), "{log}");
    assert!(!log.contains(PASSWORD) && !log.contains("changed-pw"), "no secret is ever logged:\n{log}");
}
