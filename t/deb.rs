//! The Debian package end to end, on this machine, as an operator gets it: `packaging/build-deb`
//! builds it, `dpkg -i` installs it (user, group, /run/odmrd and the spool exist, no unit is
//! enabled or started), `odmrd --check-config` passes on the installed configuration, the
//! installed binary started as the packaged odmrd.service starts it (user odmrd, the packaged
//! /etc/odmrd.ini, only the address changed to a free loopback port) serves a session to the
//! real fetchmail, `dpkg -r` keeps the configuration and the spool, `dpkg -P` removes the
//! configuration but never held mail. That session runs under strace, and what odmrd did must
//! fit the unit's sandbox (system call filter, address families, no W+X memory). Also: lintian finds no error, `systemd-analyze verify`
//! accepts the installed units and `systemd-analyze security` rates each unit "OK" or better.
//!
//! Needs root (dpkg), and debhelper, scdoc, lintian, strace (t/setup-deps). The package is purged again
//! at the end, whatever happens, and what the test added to the spool is removed; the system
//! user odmrd stays, as Debian's policy wants for system users.
//!
//! Without a syslog daemon (CI) nothing listens on /dev/log, and the packaged configuration
//! logs to syslog only: the test then stands in as the syslog daemon on /dev/log, which also
//! lets it read what odmrd logged.

#[path = "support/mod.rs"]
mod support;

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Group, Pid, User};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use support::odmrd::{PASSWORD, USER};
use support::{body_of, envelope_of, qmail_message, wait_until, CustomerMta, Fetchmail, Maildir};

const SPOOL: &str = "/var/spool/odmr";
const UNITS: [&str; 7] = [
    "/lib/systemd/system/odmrd.socket",
    "/lib/systemd/system/odmrd@.service",
    "/lib/systemd/system/odmrd.service",
    "/lib/systemd/system/odmrs.socket",
    "/lib/systemd/system/odmrs@.service",
    "/lib/systemd/system/odmrd-expire.service",
    "/lib/systemd/system/odmrd-expire.timer",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// `command`'s output; panics with its stdout and stderr unless it exits 0.
fn run_ok(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}: {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The package, built once per test run by `packaging/build-deb` (the README's command).
fn package() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        assert!(nix::unistd::geteuid().is_root(), "the package tests install with dpkg: run them as root");
        let output = run_ok(Command::new(workspace().join("packaging/build-deb")).current_dir(workspace()));
        let stdout = String::from_utf8(output.stdout).unwrap();
        let deb = workspace().join(stdout.lines().last().expect("build-deb prints the package's path"));
        assert!(deb.is_file(), "{} was not built", deb.display());
        eprintln!("built {} ({} bytes)", deb.display(), fs::metadata(&deb).unwrap().len());
        deb
    })
}

fn installed() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Abbrev}", "odmrd"])
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"ii"))
}

fn dpkg(args: &[&str]) -> Output {
    run_ok(Command::new("dpkg").args(args).env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Puts the machine back as it was: the package purged, the test's mail out of the spool.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "odmrd"]).output();
        let _ = fs::remove_dir_all(SPOOL);
    }
}

/// The syslog daemon for odmrd when the machine has none: a datagram socket on /dev/log
/// (removed again on drop) whose messages are collected.
struct Syslog {
    log: Arc<Mutex<String>>,
    own: bool,
}

impl Syslog {
    fn start() -> Syslog {
        let log = Arc::new(Mutex::new(String::new()));
        let path = Path::new("/dev/log");
        if path.exists() {
            return Syslog { log, own: false };
        }
        let socket = UnixDatagram::bind(path).expect("bind /dev/log");
        // odmrd runs as user odmrd: anyone may log, as with a real syslog daemon.
        fs::set_permissions(path, fs::Permissions::from_mode(0o666)).unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = socket.recv(&mut buf) {
                let mut log = sink.lock().unwrap();
                log.push_str(&String::from_utf8_lossy(&buf[..n]));
                log.push('\n');
            }
        });
        Syslog { log, own: true }
    }

    fn text(&self) -> String {
        if self.own {
            self.log.lock().unwrap().clone()
        } else {
            "(odmrd logged to the machine's own syslog daemon)".into()
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        if self.own {
            let _ = fs::remove_file("/dev/log");
        }
    }
}

fn assert_owner_and_mode(path: &str, user: &str, group: &str, mode: u32) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let owner = User::from_uid(meta.uid().into()).unwrap().map(|u| u.name).unwrap_or_default();
    let group_name = Group::from_gid(meta.gid().into()).unwrap().map(|g| g.name).unwrap_or_default();
    assert_eq!(
        (owner.as_str(), group_name.as_str(), meta.mode() & 0o7777),
        (user, group, mode),
        "{path}: owner, group, mode"
    );
}

/// A maildir for `domain` in the packaged spool, owned by odmrd as the MTA would deliver it.
fn spool_maildir(domain: &str, odmrd: &User) -> Maildir {
    let maildir = Maildir::create(Path::new(SPOOL).join(domain));
    for dir in [
        maildir.path().to_path_buf(),
        maildir.path().join("new"),
        maildir.path().join("cur"),
        maildir.path().join("tmp"),
    ] {
        std::os::unix::fs::chown(&dir, Some(odmrd.uid.as_raw()), Some(odmrd.gid.as_raw())).unwrap();
    }
    maildir
}

fn queue(maildir: &Maildir, odmrd: &User, message: &[u8]) -> PathBuf {
    let file = maildir.add(message);
    std::os::unix::fs::chown(&file, Some(odmrd.uid.as_raw()), Some(odmrd.gid.as_raw())).unwrap();
    file
}

#[test]
fn the_package_installs_serves_fetchmail_and_is_removed_then_purged() {
    let deb = package();
    let _cleanup = Cleanup;
    if installed() {
        dpkg(&["--purge", "odmrd"]);
    }
    let syslog = Syslog::start();

    // Installation: the user, the directories, the conffiles; nothing enabled or started.
    dpkg(&["-i", deb.to_str().unwrap()]);
    let odmrd = User::from_name("odmrd").unwrap().expect("the package creates the user odmrd");
    assert!(Group::from_name("odmrd").unwrap().is_some(), "the package creates the group odmrd");
    assert_eq!(odmrd.shell, PathBuf::from("/usr/sbin/nologin"));
    assert_owner_and_mode("/run/odmrd", "odmrd", "odmrd", 0o750);
    assert_owner_and_mode(SPOOL, "odmrd", "odmrd", 0o750);
    assert_owner_and_mode("/etc/odmrd/passwd", "root", "odmrd", 0o640);
    assert_owner_and_mode("/etc/odmrd", "root", "odmrd", 0o750);
    let conffiles = fs::read_to_string("/var/lib/dpkg/info/odmrd.conffiles").unwrap();
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), ["/etc/odmrd.ini", "/etc/odmrd/passwd"]);
    for path in [
        "/usr/sbin/odmrd",
        "/usr/include/odmr_api.h",
        "/usr/lib/odmrd/libodmr_backend_passwd.so",
        "/usr/lib/odmrd/libodmr_backend_maildir.so",
        "/usr/lib/odmrd/libodmr_backend_vpopmail.so",
        "/usr/lib/odmrd/libodmr_backend_exim.so",
        "/usr/lib/odmrd/libodmr_backend_sql.so",
        "/usr/share/doc/odmrd/examples/sql/vpopmail.ini",
        "/usr/share/doc/odmrd/plugin-guide.md.gz",
        "/usr/share/man/man8/odmrd.8.gz",
        "/usr/share/man/man5/odmrd.ini.5.gz",
        "/usr/lib/sysusers.d/odmrd.conf",
        "/usr/lib/tmpfiles.d/odmrd.conf",
    ]
    .iter()
    .chain(&UNITS)
    {
        assert!(Path::new(path).exists(), "{path} is not installed");
    }
    for wants in [
        "sockets.target.wants/odmrd.socket",
        "sockets.target.wants/odmrs.socket",
        "timers.target.wants/odmrd-expire.timer",
        "multi-user.target.wants/odmrd.service",
    ] {
        let link = Path::new("/etc/systemd/system").join(wants);
        assert!(!link.exists(), "the package enabled {}: only the operator may", link.display());
    }

    // The installed units pass systemd's own check (ExecStart, man: links, syntax).
    run_ok(Command::new("systemd-analyze").arg("verify").args(UNITS));

    // The installed configuration is valid, checked as the user the units run as.
    let check = run_ok(
        Command::new("/usr/sbin/odmrd").arg("--check-config").uid(odmrd.uid.as_raw()).gid(odmrd.gid.as_raw()),
    );
    // It says what it checked, then its verdict (a fresh spool has no domain's maildir yet: a warning).
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.lines().last().unwrap_or_default().starts_with("/etc/odmrd.ini: configuration OK"),
        "{said}"
    );

    // builtin:sql is the packaged shared object: the binary links no SQL driver (nor
    // libsqlite3, which the package still depends on, for the object).
    let ldd = run_ok(Command::new("ldd").arg("/usr/sbin/odmrd"));
    assert!(!String::from_utf8_lossy(&ldd.stdout).contains("libsqlite3"), "{ldd:?}");
    let depends = run_ok(Command::new("dpkg-query").args(["-W", "-f", "${Depends}", "odmrd"]));
    assert!(String::from_utf8_lossy(&depends.stdout).contains("libsqlite3-0"), "{depends:?}");
    let sql = tempfile::tempdir().unwrap();
    let ini = sql.path().join("sql.ini");
    fs::write(
        &ini,
        format!(
            "[credentials]\nplugin = builtin:sql\ndriver = sqlite\nconnect = {db}\n\
             password_query = SELECT password FROM u WHERE login = '%u'\n\
             domains_query = SELECT domain FROM d WHERE login = '%u'\n\
             [queue]\nplugin = builtin:maildir\ndirectory = {SPOOL}/{{domain}}\n",
            db = sql.path().join("absent.sqlite").display()
        ),
    )
    .unwrap();
    let checked = Command::new("/usr/sbin/odmrd").arg("-c").arg(&ini).arg("--check-config").output().unwrap();
    let said = String::from_utf8_lossy(&checked.stdout);
    assert!(said.contains("from builtin:sql (/usr/lib/odmrd/libodmr_backend_sql.so)"), "{checked:?}");

    // One edit of /etc/odmrd/passwd, mail in the spool, and a session with the real fetchmail.
    let mut entry = Command::new("/usr/sbin/odmrd")
        .arg("--cram-md5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    entry.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let entry = entry.wait_with_output().unwrap();
    let secret = String::from_utf8(entry.stdout).unwrap();
    let mut passwd = fs::OpenOptions::new().append(true).open("/etc/odmrd/passwd").unwrap();
    writeln!(passwd, "{USER}:{}::::::odmr_domains=example.org", secret.trim()).unwrap();
    drop(passwd);
    let org = spool_maildir("example.org", &odmrd);
    let body = b"Subject: from the package\n\nheld for example.org\n.one dot\n";
    let held = queue(&org, &odmrd, &qmail_message("alice@sender.example", "bob@example.org", body));
    let com = spool_maildir("example.com", &odmrd);
    let not_collected =
        queue(&com, &odmrd, &qmail_message("x@sender.example", "y@example.com", b"\nstays\n"));

    // As odmrd.service starts it: user odmrd, the packaged configuration, from /; under strace,
    // to compare what it does with what the unit's sandbox allows.
    let trace_dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(trace_dir.path(), Some(odmrd.uid.as_raw()), Some(odmrd.gid.as_raw())).unwrap();
    let trace = trace_dir.path().join("standalone.strace");
    let port = support::free_port();
    let mut strace = as_the_units_run(&odmrd, &trace, &["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("strace is missing: install it (t/setup-deps)");
    let listening = wait_until(Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            || strace.try_wait().ok().flatten().is_some()
    });
    assert!(listening && strace.try_wait().unwrap().is_none(), "odmrd did not start:\n{}", syslog.text());
    // strace's first line is odmrd's execve, with odmrd's process id.
    let daemon =
        fs::read_to_string(&trace).unwrap().split_whitespace().next().unwrap().parse::<i32>().unwrap();
    let mta = CustomerMta::start();
    let run = Fetchmail::new(port).user(USER, PASSWORD).domains(&["example.org"]).smtp_port(mta.port()).run();
    assert_eq!(run.code, Some(0), "{}\n--- odmrd\n{}", run.report(), syslog.text());
    let delivered = mta.wait_for(1, Duration::from_secs(60));
    assert_eq!(
        envelope_of(&delivered[0]),
        ("alice@sender.example".to_string(), vec!["bob@example.org".to_string()])
    );
    assert_eq!(body_of(&delivered[0]), b"held for example.org\n.one dot\n");
    assert!(!held.exists(), "the delivered message must leave the spool");
    assert!(not_collected.exists(), "example.com was not requested");

    // SIGTERM, as systemctl stop sends it: a clean exit (strace exits with odmrd's status).
    kill(Pid::from_raw(daemon), Signal::SIGTERM).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || strace.try_wait().ok().flatten().is_some()),
        "odmrd ignored SIGTERM"
    );
    assert_eq!(strace.wait().unwrap().code(), Some(0), "{}", syslog.text());
    assert_inside_sandbox(&fs::read_to_string(&trace).unwrap(), "odmrd.service");

    // As odmrd.socket and odmrd@.service run it: a process per accepted connection, which is
    // its stdin and stdout.
    let again = queue(&org, &odmrd, &qmail_message("carol@sender.example", "dave@example.org", b"\nagain\n"));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let trace = trace_dir.path().join("inetd.strace");
    let accepted = {
        let (odmrd, trace) = (odmrd.clone(), trace.clone());
        std::thread::spawn(move || {
            let (connection, _) = listener.accept().unwrap();
            as_the_units_run(&odmrd, &trace, &["--inetd"])
                .stdin(std::os::fd::OwnedFd::from(connection.try_clone().unwrap()))
                .stdout(std::os::fd::OwnedFd::from(connection))
                .spawn()
                .unwrap()
        })
    };
    let run = Fetchmail::new(port).user(USER, PASSWORD).domains(&["example.org"]).smtp_port(mta.port()).run();
    assert_eq!(run.code, Some(0), "{}\n--- odmrd\n{}", run.report(), syslog.text());
    let session = accepted.join().unwrap().wait_with_output().unwrap();
    assert_eq!(session.status.code(), Some(0), "{}", syslog.text());
    let delivered = mta.wait_for(2, Duration::from_secs(60));
    assert!(delivered.iter().any(|m| envelope_of(m).1 == ["dave@example.org"]), "{}", syslog.text());
    assert!(!again.exists(), "the delivered message must leave the spool");
    assert_inside_sandbox(&fs::read_to_string(&trace).unwrap(), "odmrd@.service");
    if syslog.own {
        let log = syslog.text();
        assert!(log.contains("status=sent"), "{log}");
        assert!(!log.contains(PASSWORD), "a password was logged");
    }

    // Installing again (as an upgrade does) keeps the operator's edit and the file's group.
    dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(fs::read_to_string("/etc/odmrd/passwd").unwrap().contains(&format!("{USER}:{{CRAM-MD5}}")));
    assert_owner_and_mode("/etc/odmrd/passwd", "root", "odmrd", 0o640);

    // remove: configuration (edited) and spool stay, the program goes.
    dpkg(&["--remove", "odmrd"]);
    assert!(!Path::new("/usr/sbin/odmrd").exists());
    assert!(Path::new("/etc/odmrd.ini").exists(), "remove must keep /etc/odmrd.ini");
    let passwd = fs::read_to_string("/etc/odmrd/passwd").expect("remove must keep /etc/odmrd/passwd");
    assert!(passwd.contains(&format!("{USER}:{{CRAM-MD5}}")), "the operator's edit survives remove");
    assert!(not_collected.exists(), "remove must keep the spool");

    // purge: configuration gone; held mail is never deleted by a package operation.
    dpkg(&["--purge", "odmrd"]);
    for path in ["/etc/odmrd.ini", "/etc/odmrd/passwd", "/etc/odmrd", "/run/odmrd"] {
        assert!(!Path::new(path).exists(), "purge must remove {path}");
    }
    assert!(not_collected.exists(), "purge must not delete held mail");
    assert!(!installed());
}

/// The installed odmrd with `mode_args` as the packaged units start it (user odmrd, the
/// packaged configuration, from /), under `strace -f -o trace`.
fn as_the_units_run(odmrd: &User, trace: &Path, mode_args: &[&str]) -> Command {
    let mut command = Command::new("strace");
    command
        .args(["-f", "-qq", "-o"])
        .arg(trace)
        .args(["--", "/usr/sbin/odmrd", "-c", "/etc/odmrd.ini"])
        .args(mode_args)
        .uid(odmrd.uid.as_raw())
        .gid(odmrd.gid.as_raw())
        .current_dir("/");
    command
}

/// The system calls of a systemd syscall group, nested groups expanded.
fn syscall_group(group: &str) -> BTreeSet<String> {
    let output = run_ok(Command::new("systemd-analyze").args(["syscall-filter", "--no-pager", group]));
    let mut calls = BTreeSet::new();
    for line in String::from_utf8_lossy(&output.stdout).lines().skip(1) {
        match line.trim() {
            "" => {}
            item if item.starts_with('#') => {}
            item if item.starts_with('@') => calls.extend(syscall_group(item)),
            item => {
                calls.insert(item.to_string());
            }
        }
    }
    calls
}

/// The values of every `KEY=` line of a unit file, in order.
fn unit_settings(unit: &str, key: &str) -> Vec<String> {
    unit.lines().filter_map(|line| line.strip_prefix(&format!("{key}="))).map(str::to_string).collect()
}

/// What an `strace -f` log shows odmrd doing must be allowed by `unit`'s sandbox: every system
/// call by its SystemCallFilter= lines (an allow list, then `~` deny lists), every socket()
/// family by RestrictAddressFamilies=, and no mapping both writable and executable
/// (MemoryDenyWriteExecute=).
fn assert_inside_sandbox(trace: &str, unit: &str) {
    let unit_text = fs::read_to_string(workspace().join("etc/systemd").join(unit)).unwrap();
    let mut allowed = BTreeSet::new();
    for filter in unit_settings(&unit_text, "SystemCallFilter") {
        let (deny, items) = match filter.strip_prefix('~') {
            Some(items) => (true, items.to_string()),
            None => (false, filter.clone()),
        };
        for item in items.split_whitespace() {
            let calls =
                if item.starts_with('@') { syscall_group(item) } else { BTreeSet::from([item.to_string()]) };
            if deny {
                allowed.retain(|call| !calls.contains(call));
            } else {
                allowed.extend(calls);
            }
        }
    }
    assert!(allowed.contains("read"), "{unit}: no SystemCallFilter= allow list");
    let families: Vec<String> = unit_settings(&unit_text, "RestrictAddressFamilies")
        .iter()
        .flat_map(|line| line.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();

    let mut refused = BTreeSet::new();
    for line in trace.lines() {
        // "PID name(args) = result", "PID name(args <unfinished ...>", "PID <... name resumed>".
        let Some((_pid, call)) = line.split_once(' ') else { continue };
        let call = call.trim_start();
        let Some((name, args)) = call.split_once('(') else { continue };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        if !allowed.contains(name) {
            refused.insert(format!("system call {name}"));
        }
        if name == "socket" {
            let family = args.split(',').next().unwrap_or_default();
            if !families.iter().any(|f| f == family) {
                refused.insert(format!("socket family {family}"));
            }
        }
        if (name == "mmap" || name == "mprotect") && args.contains("PROT_WRITE|PROT_EXEC") {
            refused.insert(format!("writable and executable memory: {line}"));
        }
    }
    assert!(
        refused.is_empty(),
        "{unit}'s sandbox would refuse what odmrd did:\n    {}",
        Vec::from_iter(refused).join("\n    ")
    );
}

#[test]
fn lintian_reports_no_errors() {
    let deb = package();
    let output = Command::new("lintian")
        .args(["--fail-on", "error", "--info"])
        .arg(deb)
        .output()
        .expect("lintian is missing: install it (t/setup-deps)");
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("lintian:\n{report}");
    assert!(
        output.status.success(),
        "lintian: {}\n{report}{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!report.lines().any(|l| l.starts_with("E: ")), "{report}");
}

/// The socket's connection limits are the packaged configuration's session limits, which odmrd
/// itself applies only in standalone mode.
#[test]
fn the_socket_limits_match_the_packaged_session_limits() {
    let config = odmrd::config::Config::load(&workspace().join("etc/odmrd.ini")).unwrap();
    let socket = fs::read_to_string(workspace().join("etc/systemd/odmrd.socket")).unwrap();
    let setting = |name: &str| -> usize {
        let line = socket
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}="));
        line[name.len() + 1..].trim().parse().unwrap()
    };
    assert_eq!(
        setting("MaxConnections"),
        config.server.max_sessions,
        "MaxConnections vs [server] max_sessions"
    );
    assert_eq!(
        setting("MaxConnectionsPerSource"),
        config.server.max_sessions_per_ip,
        "MaxConnectionsPerSource vs [server] max_sessions_per_ip"
    );
}

/// `systemd-analyze security` works on unit files without a running systemd (--offline).
#[test]
fn every_unit_is_rated_ok_or_better_by_systemd_analyze_security() {
    for unit in ["odmrd@.service", "odmrd.service", "odmrs@.service"] {
        let path = workspace().join("etc/systemd").join(unit);
        let output = run_ok(
            Command::new("systemd-analyze").args(["security", "--offline=yes", "--no-pager"]).arg(&path),
        );
        let text = String::from_utf8_lossy(&output.stdout);
        let overall =
            text.lines().find(|l| l.contains("Overall exposure level")).unwrap_or_else(|| panic!("{text}"));
        eprintln!("{unit}: {}", overall.trim());
        let good = overall.split_whitespace().any(|word| ["OK", "SAFE", "PERFECT"].contains(&word));
        assert!(good, "{unit}: {overall}: not OK or better\n{text}");
    }
}
