//! End-to-end tests of `builtin:sql` and `[server] lock = database` (issue 15)
//! against a real SQLite file, a real PostgreSQL and a real MariaDB, each
//! private to the test (`t/support/databases.rs`), with the ready-made
//! examples of `etc/sql/` (the plain schema, Postfix Admin's, vpopmail's):
//! CRAM-MD5 and ATRN through odmrd, a login full of SQL metacharacters, the
//! database stopped mid-run (451, then recovery without restarting odmrd, one
//! log line per outage), `--check-config` with a broken query, and two odmrd
//! front ends with separate lock directories sharing one maildir spool and
//! the database's locks.
//!
//! `builtin:sql` is the shared object shipped with odmrd, found beside the
//! binary in a cargo build: [`provider`] builds it first (a lone `cargo test
//! -p odmrd --test sql` does not build cdylibs). Without it, the configuration
//! error names the paths tried.
//!
//! A database whose server is not installed is skipped with a loud message;
//! `t/setup-deps` installs both for CI.

#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::databases::{Mariadb, Postgres};
use support::odmrd::{check_config, odmrd_alone, shared_object, Client, Daemon, Provider, EHLO_NAME};
use support::{bsmtp, doveadm_cram_md5};

const PASSWORD: &str = "S3cret-odmr";
/// A login that would break out of any query that interpolated it.
const NASTY: &str = "o'brien\"; DROP TABLE odmr_users; --%_\\@example.org";

/// The `[credentials]` lines of `etc/sql/NAME.ini` with `driver` and `connect` replaced.
fn example(name: &str, driver: &str, connect: &str) -> String {
    let ini =
        std::fs::read_to_string(support::odmrd::workspace().join(format!("etc/sql/{name}.ini"))).unwrap();
    let mut lines = String::new();
    for line in ini.lines().filter(|l| !l.starts_with(';') && !l.starts_with('[') && !l.trim().is_empty()) {
        let line = match line.split_once(" = ").map(|(k, _)| k) {
            Some("driver") => format!("driver = {driver}"),
            Some("connect") => format!("connect = {connect}"),
            _ => line.to_string(),
        };
        lines.push_str(&line);
        lines.push('\n');
    }
    lines + "connect_timeout = 2\nquery_timeout = 5\n"
}

fn schema(name: &str) -> String {
    std::fs::read_to_string(support::odmrd::workspace().join(format!("etc/sql/{name}.sql"))).unwrap()
}

/// Rows for the plain schema: `customer@example.net` (clear), `cram@example.net`
/// ({CRAM-MD5}), the nasty login, a hashed and a nologin account.
fn plain_rows() -> String {
    let q = |s: &str| s.replace('\'', "''");
    format!(
        "INSERT INTO odmr_users VALUES ('customer@example.net', '{{PLAIN}}{PASSWORD}', 0);
         INSERT INTO odmr_users VALUES ('cram@example.net', '{cram}', 0);
         INSERT INTO odmr_users VALUES ('{nasty}', '{{PLAIN}}{PASSWORD}', 0);
         INSERT INTO odmr_users VALUES ('hashed@example.net', '{{SHA512-CRYPT}}$6$x$y', 0);
         INSERT INTO odmr_users VALUES ('off@example.net', '{{PLAIN}}{PASSWORD}', 1);
         INSERT INTO odmr_domains VALUES ('customer@example.net', 'example.org');
         INSERT INTO odmr_domains VALUES ('customer@example.net', 'example.net');
         INSERT INTO odmr_domains VALUES ('cram@example.net', 'example.com');
         INSERT INTO odmr_domains VALUES ('{nasty}', 'example.com');",
        cram = doveadm_cram_md5(PASSWORD),
        nasty = q(NASTY),
    )
}

fn postfixadmin_rows() -> String {
    format!(
        "INSERT INTO domain (domain, active) VALUES ('example.org', 1), ('off.example', 0);
         INSERT INTO mailbox (username, password, local_part, domain) VALUES
             ('postmaster@example.org', '{cram}', 'postmaster', 'example.org'),
             ('boss@off.example', '{{PLAIN}}{PASSWORD}', 'boss', 'off.example');
         INSERT INTO alias_domain (alias_domain, target_domain, active) VALUES
             ('example.com', 'example.org', 1), ('old.example', 'example.org', 0);",
        cram = doveadm_cram_md5(PASSWORD)
    )
}

fn vpopmail_rows() -> &'static str {
    "INSERT INTO vpopmail VALUES ('customer', 'example.org', '$1$Qx7vKp2L$uZMpE2SG/pgYgOdeVC73u1', 89, 0, '', '', '', 'S3cret-odmr');
     INSERT INTO vpopmail VALUES ('hashonly', 'example.org', '$1$Qx7vKp2L$uZMpE2SG/pgYgOdeVC73u1', 89, 0, '', '', '', '');
     INSERT INTO vpopmail VALUES ('nosmtp', 'example.org', 'x', 89, 2048, '', '', '', 'S3cret-odmr');"
}

/// The file odmrd resolves `builtin:sql` to.
const SQL_OBJECT: &str = "libodmr_backend_sql.so";

/// Build `libodmr_backend_sql.so` (package `odmr-backend-sql-so`) unless it is
/// already there, and check that it lands beside odmrd, where odmrd looks.
fn build_sql_object() {
    let built = shared_object(SQL_OBJECT);
    let beside = Path::new(env!("CARGO_BIN_EXE_odmrd")).with_file_name(SQL_OBJECT);
    assert_eq!(
        built, beside,
        "cargo build -p odmr-backend-sql-so put {SQL_OBJECT} elsewhere than beside odmrd"
    );
}

/// A provider whose `[credentials]` are `credentials`, with one message
/// queued for each of `domains` (and the SQL object built).
fn provider(credentials: String, domains: &[&str]) -> Provider {
    build_sql_object();
    let mut p = Provider::new();
    p.credentials = credentials;
    for domain in domains {
        let message = bsmtp("sender@example.net", &[&format!("rcpt@{domain}")], b"Subject: hi\n\nhello\n");
        p.queue(domain, &format!("1.{domain}"), std::str::from_utf8(&message).unwrap());
    }
    p
}

/// Log in and collect `domains` in one inetd session; the recipients received.
fn collect(p: &Provider, user: &str, domains: &str) -> Vec<String> {
    let mut c = p.start();
    c.login(user, PASSWORD);
    c.command(&format!("ATRN {domains}"), 250);
    let received = play_mta(&mut c);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    received
}

/// Play the customer's MTA to the end of the reversed session, accepting
/// everything; the RCPT addresses received.
fn play_mta(c: &mut Client) -> Vec<String> {
    c.turn_around(EHLO_NAME, &[]);
    let mut received = Vec::new();
    loop {
        let line = c.line();
        if line == "QUIT\r\n" || line.is_empty() {
            c.send("221 bye");
            return received;
        }
        assert!(line.starts_with("MAIL FROM:"), "{line:?}");
        c.send("250 ok");
        loop {
            let line = c.line();
            if line == "DATA\r\n" {
                break;
            }
            let rcpt = line.trim_end().strip_prefix("RCPT TO:<").and_then(|r| r.strip_suffix('>'));
            received.push(rcpt.unwrap_or_else(|| panic!("{line:?}")).to_string());
            c.send("250 ok");
        }
        c.send("354 go");
        c.data();
        c.send("250 accepted");
    }
}

/// AUTH in one inetd session, expecting `code`; odmrd's log.
fn auth(p: &Provider, user: &str, code: u16) -> String {
    let mut c = p.start();
    c.hello();
    c.auth(user, PASSWORD, code);
    c.command("QUIT", 221);
    c.finish().1
}

/// ATRN after a good AUTH, expecting `code`.
fn atrn(p: &Provider, user: &str, domains: &str, code: u16) -> String {
    let mut c = p.start();
    c.login(user, PASSWORD);
    c.command(&format!("ATRN {domains}"), code);
    c.command("QUIT", 221);
    c.finish().1
}

/// The plain schema's cases, whatever the database.
fn plain_schema_cases(credentials: String) {
    let p = provider(credentials, &["example.org", "example.net", "example.com"]);
    let mut got = collect(&p, "customer@example.net", "");
    got.sort();
    assert_eq!(got, ["rcpt@example.net", "rcpt@example.org"]);
    assert_eq!(collect(&p, NASTY, "example.com"), ["rcpt@example.com"]);
    // Delivered and committed: nothing left.
    assert!(p.queued("example.com").is_empty());
    // Someone else's domain, a wrong login, a hash, nologin.
    atrn(&p, "cram@example.net", "example.org", 450);
    auth(&p, "nobody@example.net", 535);
    auth(&p, "x' OR '1'='1", 535);
    let log = auth(&p, "hashed@example.net", 535);
    assert!(log.contains("cannot serve CRAM-MD5"), "{log}");
    auth(&p, "off@example.net", 535);
    auth(&p, "cram@example.net", 235);
}

fn check_config_refuses_broken_query(credentials: String) {
    let p = provider(credentials.replace("FROM odmr_users", "FROM no_such_table"), &[]);
    let out = check_config(&p.config());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("password_query"), "{err}");
    let p = provider(credentials.replace("SELECT domain FROM", "SELECT domain, login FROM"), &[]);
    let out = check_config(&p.config());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("domains_query") && err.contains("2 columns"), "{err}");
}

#[test]
fn sqlite_plain_schema() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("odmr.sqlite");
    let script = dir.path().join("fill.sql");
    std::fs::write(&script, format!("{}\n{}", schema("plain"), plain_rows())).unwrap();
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!(".read {}", script.display()))
        .output()
        .expect("sqlite3 (Debian package sqlite3)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let credentials = example("plain", "sqlite", &db.display().to_string());
    plain_schema_cases(credentials.clone());
    // The same code as a shared object loaded by path.
    let so = shared_object(SQL_OBJECT).display().to_string();
    plain_schema_cases(credentials.replace("builtin:sql", &so));
    check_config_refuses_broken_query(credentials.clone());
    // SQLite has no locks shared between hosts.
    let mut p = provider(credentials, &[]);
    p.extra_server = "lock = database\n".into();
    let out = check_config(&p.config());
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("lock"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop the database under a running standalone odmrd: AUTH and ATRN answer
/// 451 with one error line for the outage, and work again once it is back.
fn outage(credentials: String, halt: &mut dyn FnMut(), resume: &mut dyn FnMut()) {
    let p = provider(credentials, &["example.org"]);
    let daemon = p.start_daemon();
    let session = |code: u16| {
        let mut c = daemon.connect();
        c.hello();
        c.auth("customer@example.net", PASSWORD, code);
        c.command("QUIT", 221);
    };
    // Authenticated before the outage, ATRN during it.
    let mut before = daemon.connect();
    before.login("customer@example.net", PASSWORD);
    halt();
    before.command("ATRN example.org", 451);
    before.command("QUIT", 221);
    session(451);
    session(451);
    assert_eq!(daemon.log().matches("database unavailable").count(), 1, "{}", daemon.log());
    resume();
    let mut after = daemon.connect();
    after.login("customer@example.net", PASSWORD);
    after.command("ATRN example.org", 250);
    assert_eq!(play_mta(&mut after), ["rcpt@example.org"]);
    daemon.wait_for_log("database reachable again", Duration::from_secs(5));
    let (_, log) = daemon.stop();
    assert!(!log.contains("result=535"), "{log}");
}

#[test]
fn postgresql_schemas_outage_and_check_config() {
    let Some(pg) = Postgres::start() else { return };
    pg.sql(&schema("plain"));
    pg.sql(&plain_rows());
    pg.sql(&schema("postfixadmin"));
    pg.sql(&postfixadmin_rows());
    let credentials = example("plain", "postgresql", &pg.connect());
    plain_schema_cases(credentials.clone());
    check_config_refuses_broken_query(credentials.clone());
    postfixadmin_cases(example("postfixadmin", "postgresql", &pg.connect()));
    let pg = Mutex::new(pg);
    outage(credentials, &mut || pg.lock().unwrap().halt(), &mut || pg.lock().unwrap().resume());
}

fn postfixadmin_cases(credentials: String) {
    let p = provider(credentials, &["example.org", "example.com", "old.example"]);
    // The mailbox's domain and its active alias domain, not the inactive one.
    let mut got = collect(&p, "postmaster@example.org", "");
    got.sort();
    assert_eq!(got, ["rcpt@example.com", "rcpt@example.org"]);
    atrn(&p, "postmaster@example.org", "old.example", 450);
    // A mailbox of an inactive domain.
    auth(&p, "boss@off.example", 535);
}

#[test]
fn mariadb_schemas_outage_and_check_config() {
    let Some(db) = Mariadb::start() else { return };
    db.sql(&schema("plain"));
    db.sql(&plain_rows().replace('\\', "\\\\"));
    db.sql(&schema("postfixadmin"));
    db.sql(&postfixadmin_rows());
    db.sql(&schema("vpopmail"));
    db.sql(vpopmail_rows());
    let credentials = example("plain", "mysql", &db.connect());
    plain_schema_cases(credentials.clone());
    check_config_refuses_broken_query(credentials.clone());
    postfixadmin_cases(example("postfixadmin", "mysql", &db.connect()));

    let p = provider(example("vpopmail", "mysql", &db.connect()), &["example.org"]);
    assert_eq!(collect(&p, "customer@example.org", "example.org"), ["rcpt@example.org"]);
    let log = auth(&p, "hashonly@example.org", 535);
    assert!(log.contains("{CRYPT}") && log.contains("cannot serve CRAM-MD5"), "{log}");
    auth(&p, "nosmtp@example.org", 535);
    atrn(&p, "customer@example.org", "example.net", 450);

    let db = Mutex::new(db);
    outage(credentials, &mut || db.lock().unwrap().halt(), &mut || db.lock().unwrap().resume());
}

/// A copy of odmrd alone in a directory, with no SQL object in its plugin
/// directory nor beside it: `builtin:sql` (and `lock = database`, which needs
/// the object too) is a configuration error at the key's line that names
/// every path tried.
#[test]
fn a_missing_sql_object_is_a_located_error_naming_the_paths_tried() {
    let Some((alone, installed)) = odmrd_alone(SQL_OBJECT) else { return };
    let odmrd = alone.path().join("odmrd");
    let tried = format!("(tried {}, {})", alone.path().join(SQL_OBJECT).display(), installed.display());
    let check = |p: &Provider, key: &str| {
        let config = p.config();
        let out =
            std::process::Command::new(&odmrd).arg("-c").arg(&config).arg("--check-config").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{err}");
        let ini = std::fs::read_to_string(&config).unwrap();
        let line = 1 + ini.lines().position(|l| l.starts_with(&format!("{key} = "))).unwrap();
        assert!(err.contains(&format!("{}:{line}:", config.display())), "{err}");
        assert!(err.contains(&format!("{SQL_OBJECT}, shipped with odmrd, was not found {tried}")), "{err}");
    };
    let mut p = Provider::new();
    p.credentials = example("plain", "sqlite", "/nonexistent/odmr.sqlite");
    check(&p, "plugin");
    p.credentials = example("plain", "postgresql", "host=/nonexistent dbname=mail");
    p.extra_server = "lock = database\n".into();
    check(&p, "lock");
}

/// Two front ends (standalone odmrd processes with their own lock
/// directories, standing for two hosts) over one maildir spool with claims
/// and one database, with `lock` (`database`, or `flock`: then the claims
/// alone keep them apart): many concurrent collections of the same domains
/// deliver every recipient exactly once. Returns the provider and front ends.
fn two_front_ends(credentials: String, lock: &str) -> (Provider, [Daemon; 2]) {
    const DOMAINS: [&str; 3] = ["example.org", "example.net", "example.com"];
    const PER_DOMAIN: usize = 15;
    let fronts: Vec<Provider> = (0..2)
        .map(|_| {
            let mut p = provider(credentials.clone(), &[]);
            p.extra_server = format!("lock = {lock}\n");
            p
        })
        .collect();
    // One spool: both queues point into the first provider's.
    let spool = format!("{}claim = yes\n", fronts[0].queue);
    let [mut first, mut second]: [Provider; 2] = fronts.try_into().ok().unwrap();
    first.queue = format!("{spool}claim_host = front-one\n");
    second.queue = format!("{spool}claim_host = front-two\n");
    for domain in DOMAINS {
        for n in 0..PER_DOMAIN {
            let message =
                bsmtp("sender@example.net", &[&format!("r{n}@{domain}")], b"Subject: hi\n\nhello\n");
            first.queue(domain, &format!("{n}.{domain}"), std::str::from_utf8(&message).unwrap());
        }
    }
    let daemons = [first.start_daemon(), second.start_daemon()];
    let received: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let users = [("customer@example.net", "example.org,example.net"), ("cram@example.net", "example.com")];
    // Each concurrent customer from an address of its own (AUTH attempts from
    // one address are serialised by the throttle).
    let collect_on = |front: &Daemon, source: &str, user: &str, domains: &str| {
        let mut c = front.connect_from(source);
        c.login(user, PASSWORD);
        c.send(&format!("ATRN {domains}"));
        let reply = c.reply().join("");
        if reply.starts_with("250") {
            for rcpt in play_mta(&mut c) {
                *received.lock().unwrap().entry(rcpt).or_default() += 1;
            }
        } else {
            assert!(reply.starts_with("450") || reply.starts_with("453"), "{reply}");
            c.command("QUIT", 221);
        }
    };
    std::thread::scope(|scope| {
        for round in 0..12 {
            let (user, domains) = users[(round / 2) % 2];
            let front = &daemons[round % 2];
            let collect_on = &collect_on;
            scope.spawn(move || collect_on(front, &format!("127.0.0.{}", round + 2), user, domains));
        }
    });
    // Whatever the races left, one last collection per user takes the rest.
    for (user, domains) in users {
        collect_on(&daemons[0], "127.0.0.1", user, domains);
    }
    let received = received.lock().unwrap();
    assert_eq!(received.len(), DOMAINS.len() * PER_DOMAIN, "{received:?}");
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    for domain in DOMAINS {
        assert!(first.queued(domain).is_empty(), "{domain} still queued");
    }
    let busy: usize = daemons.iter().map(|f| f.log().matches("reason=busy").count()).sum();
    eprintln!(
        "two front ends (lock = {lock}): {} recipients once each, {busy} ATRN refused as busy",
        received.len()
    );
    (first, daemons)
}

/// A front end killed (-9) in the middle of a message: its database lock
/// is free at once, its claim comes back once stale, and the message is
/// then delivered by the other front end: nothing lost.
fn kill_mid_session(first: Provider, daemons: [Daemon; 2]) {
    let message = bsmtp("sender@example.net", &["last@example.com"], b"Subject: hi\n\nhello\n");
    first.queue("example.com", "last.example.com", std::str::from_utf8(&message).unwrap());
    let [victim, survivor] = daemons;
    let mut c = victim.connect();
    c.login("cram@example.net", PASSWORD);
    c.command("ATRN example.com", 250);
    c.turn_around(EHLO_NAME, &[]);
    let (_, rcpts, _) = c.receive_data(&[]);
    assert_eq!(rcpts, ["RCPT TO:<last@example.com>"]);
    victim.signal(nix::sys::signal::Signal::SIGKILL);
    drop(c);
    // The lock dies with the front end's connection, as soon as the database
    // notices: then 453, not 450 (the claim is still fresh, the message hidden).
    let freed = support::wait_until(Duration::from_secs(10), || {
        atrn_reply(&survivor, "example.com").starts_with("453")
    });
    assert!(freed, "the lock of the killed front end was never released");
    // A third front end, on the same spool, that considers claims older than
    // one second stale.
    let mut third = provider(first.credentials.clone(), &[]);
    third.extra_server = first.extra_server.clone();
    third.queue =
        first.queue.replace("claim_host = front-one", "claim_host = front-three\nstale_claim_after = 1");
    std::thread::sleep(Duration::from_millis(2100));
    let third = third.start_daemon();
    let mut c = third.connect();
    c.login("cram@example.net", PASSWORD);
    c.command("ATRN example.com", 250);
    assert_eq!(play_mta(&mut c), ["last@example.com"]);
    assert!(third.log().contains("stale claim returned"), "{}", third.log());
    assert!(first.queued("example.com").is_empty());
}

/// The reply to ATRN on `front` (as cram@example.net), which must not be 250.
fn atrn_reply(front: &Daemon, domains: &str) -> String {
    let mut c = front.connect();
    c.login("cram@example.net", PASSWORD);
    c.send(&format!("ATRN {domains}"));
    let reply = c.reply().join("");
    assert!(!reply.starts_with("250"), "{reply}");
    c.command("QUIT", 221);
    reply
}

#[test]
fn two_front_ends_share_a_spool_and_postgresql_locks() {
    let Some(pg) = Postgres::start() else { return };
    pg.sql(&schema("plain"));
    pg.sql(&plain_rows());
    let (first, daemons) = two_front_ends(example("plain", "postgresql", &pg.connect()), "database");
    kill_mid_session(first, daemons);
}

/// With MariaDB's locks, and then with per-host flock locks only, where
/// the claims alone keep the two front ends apart.
#[test]
fn two_front_ends_share_a_spool_and_mariadb_locks() {
    let Some(db) = Mariadb::start() else { return };
    db.sql(&schema("plain"));
    db.sql(&plain_rows().replace('\\', "\\\\"));
    two_front_ends(example("plain", "mysql", &db.connect()), "database");
    two_front_ends(example("plain", "mysql", &db.connect()), "flock");
}
