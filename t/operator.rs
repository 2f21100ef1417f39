//! What an operator sees and does (issue 9): every error reaches a person at the terminal and
//! the log, whatever `[log]` says; a missing syslog never stops mail service; `--check-config`
//! checks what would break the running service; the lock directory is created at start;
//! SIGHUP reloads, and habitual signals do not kill.

#[path = "support/mod.rs"]
mod support;

use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::odmrd::{
    check_config, odmrd_command, spawn_inetd_on, start_inetd_command, Daemon, Provider, EHLO_NAME, PASSWORD,
    USER,
};

/// Replace `[log]` of the provider's configuration with `log` (the lines of the section).
fn with_log(p: &Provider, log: &str) -> PathBuf {
    let config = p.config();
    let text = std::fs::read_to_string(&config).unwrap();
    let at = text.find("[log]\n").unwrap();
    std::fs::write(&config, format!("{}[log]\n{log}\n", &text[..at])).unwrap();
    config
}

/// Change `from` to `to` in the configuration file (which must contain `from`).
fn edit(config: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(config).unwrap();
    assert!(text.contains(from), "{from:?} not in {text}");
    std::fs::write(config, text.replacen(from, to, 1)).unwrap();
}

/// The 1-based line of the first line of `config` starting with `prefix`.
fn line_of(config: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(config).unwrap().lines().position(|l| l.starts_with(prefix)).unwrap() + 1
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A user other than root that exists everywhere Debian runs.
const NOBODY: &str = "nobody";

// ---------------------------------------------------------------------------
// Errors reach a person

#[test]
fn check_config_prints_a_missing_passwd_file_with_its_line_whatever_log_says() {
    let p = Provider::new();
    let config = with_log(&p, "syslog = off\nstderr = no");
    std::fs::remove_file(p.path().join("passwd")).unwrap();
    let out = check_config(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let line = line_of(&config, "file = ");
    let want = format!(
        "{}:{line}: [credentials] file: cannot read '{}': No such file",
        config.display(),
        p.path().join("passwd").display()
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
    assert!(err.contains("(backend builtin:passwd)"), "{err}");
    assert!(!err.contains("instance_new"), "no ABI names: {err}");
    assert!(!text(&out.stdout).contains("configuration OK"));
}

#[test]
fn an_unknown_backend_key_is_named_with_its_line() {
    let mut p = Provider::new();
    p.credentials.push_str("strip_prefix = x-\n");
    let config = p.config();
    let out = check_config(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let want = format!(
        "{}:{}: [credentials] strip_prefix: unknown key (known: file",
        config.display(),
        line_of(&config, "strip_prefix")
    );
    assert!(err.contains(&want), "want {want:?} in:\n{err}");
}

/// `odmrd --inetd` with fds 0/1 on a socketpair and stderr piped; the test's end of the
/// socket as a client. Where the system has a syslog socket, it is hidden in a private mount
/// namespace (root only; None otherwise).
fn inetd_without_syslog(config: &Path) -> Option<support::odmrd::Client> {
    let mut command = odmrd_command(config);
    if Path::new("/dev/log").exists() {
        if !is_root() {
            eprintln!("skipped: /dev/log exists and hiding it needs root (unshare -m)");
            return None;
        }
        let odmrd = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        command = Command::new("unshare");
        command.args(["-m", "sh", "-c", "mount --bind /dev/null /dev/log && exec \"$@\"", "sh"]);
        command.arg(odmrd).args(args);
    }
    Some(start_inetd_command(command))
}

#[test]
fn a_start_without_a_syslog_socket_still_serves_and_logs_to_stderr() {
    let p = Provider::new();
    let config = with_log(&p, "syslog = mail\nstderr = no\nlevel = info");
    p.queue(
        "example.org",
        "1.m",
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: s\n\nb\n.\n",
    );
    let Some(mut c) = inetd_without_syslog(&config) else { return };
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, &[]);
    c.receive_one();
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    // stderr is a pipe here, not the customer's socket: the lines went there instead.
    assert!(log.contains("event=connect"), "{log}");
    assert!(p.queued("example.org").is_empty(), "delivered");
}

#[test]
fn a_start_up_failure_under_inetd_still_answers_421_and_is_logged() {
    let p = Provider::new();
    let config = with_log(&p, "syslog = off\nstderr = no");
    std::fs::remove_file(p.path().join("passwd")).unwrap();
    let mut c = start_inetd_command(odmrd_command(&config));
    let reply = c.expect(421);
    assert!(reply.starts_with(EHLO_NAME), "{reply}");
    let (status, log) = c.finish();
    assert_eq!(status.code(), Some(78));
    // Not a terminal and [log] says nowhere: nothing on stderr, as configured.
    assert!(log.is_empty(), "{log}");
}

// ---------------------------------------------------------------------------
// --check-config checks what breaks the running service

#[test]
fn check_config_says_what_it_checked() {
    let p = Provider::new();
    let out = check_config(&p.config());
    let said = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for fragment in [
        "checked: ",
        "lock_directory",
        "will be created at start",
        "backends load",
        "[credentials] ",
        "passwd: 2 users",
        "[bounce] sendmail",
    ] {
        assert!(said.contains(fragment), "{fragment:?} missing from:\n{said}");
    }
    // The maildir backend's own check: no domain has a maildir yet.
    let err = text(&out.stderr);
    assert!(err.contains("[queue] directory: no domain's maildir under"), "{err}");
    assert!(said.ends_with("configuration OK (1 warning)\n"), "{said}");

    // A typo in the spool's directory, and a credential file every user can read.
    let config = p.config();
    edit(&config, "/spool/{domain}", "/spoool/{domain}");
    std::fs::set_permissions(p.path().join("passwd"), std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .unwrap();
    let out = check_config(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let at = |prefix: &str| format!("{}:{}: ", config.display(), line_of(&config, prefix));
    let d = p.path().display();
    for want in [
        format!(
            "{}[queue] directory: {d}/spoool/{{domain}}: {d}/spoool cannot be listed: no such directory",
            at("directory")
        ),
        format!("{}[credentials] file: '{d}/passwd' is readable by every user", at("file = ")),
    ] {
        assert!(err.contains(&want), "want {want:?} in:\n{err}");
    }
}

#[test]
fn check_config_refuses_an_unknown_user_a_missing_sendmail_and_an_uncreatable_lock_directory() {
    let mut p = Provider::new();
    std::fs::write(p.path().join("file"), "").unwrap();
    p.extra_server = "user = no-such-user-odmrd".into();
    let config = p.config();
    edit(&config, "/locks\n", "/file/locks\n");
    edit(
        &config,
        &format!("sendmail = {}", p.sendmail.path().display()),
        "sendmail = /nonexistent/sendmail -t",
    );
    let out = check_config(&config);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    let at = |prefix: &str| format!("{}:{}: ", config.display(), line_of(&config, prefix));
    for want in [
        format!("{}[server] user: no such user \"no-such-user-odmrd\"", at("user = ")),
        format!(
            "{}[server] lock_directory: {}/file/locks does not exist and ",
            at("lock_directory"),
            p.path().display()
        ),
        format!("{}[bounce] sendmail: /nonexistent/sendmail: No such file", at("sendmail")),
    ] {
        assert!(err.contains(&want), "want {want:?} in:\n{err}");
    }
    assert!(err.ends_with(&format!("{}: 3 errors (1 warning)\n", config.display())), "{err}");
}

#[test]
fn as_root_check_config_reads_the_files_as_the_service_user() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut p = Provider::new();
    // The test's temporary directory is root's, 0700: open it so nobody can reach the files.
    std::fs::set_permissions(p.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.extra_server = format!("user = {NOBODY}");
    let config = p.config();
    let passwd = p.path().join("passwd");
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = check_config(&config);
    let (said, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(78), "{said}{err}");
    assert!(said.contains(&format!("the checks below run as {NOBODY}")), "{said}");
    let want = format!("[credentials] file: cannot read '{}': Permission denied", passwd.display());
    assert!(err.contains(&want), "want {want:?} in:\n{err}");

    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = check_config(&config);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
}

// ---------------------------------------------------------------------------
// The lock directory

#[test]
fn a_missing_lock_directory_is_created_at_start_0750() {
    let mut p = Provider::new();
    if is_root() {
        p.extra_server = format!("user = {NOBODY}");
    }
    let locks = p.path().join("locks");
    assert!(!locks.exists());
    let mut c = start_inetd_command(odmrd_command(&p.config()));
    c.expect(220);
    let meta = std::fs::metadata(&locks).expect("created before the greeting");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o750);
    if is_root() {
        let nobody = nix::unistd::User::from_name(NOBODY).unwrap().unwrap();
        assert_eq!(meta.uid(), nobody.uid.as_raw(), "owned by the service user");
    }
    c.command("QUIT", 221);
    c.finish();
}

#[test]
fn a_lock_directory_that_cannot_be_created_is_named_with_who_tried() {
    let p = Provider::new();
    std::fs::write(p.path().join("file"), "").unwrap();
    let config = p.config();
    edit(&config, "/locks\n", "/file/locks\n");
    let mut c = start_inetd_command(odmrd_command(&config));
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 451);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    let want = format!("lock_directory {}/file/locks does not exist and ", p.path().display());
    assert!(log.matches(&want).count() >= 2, "at start and at ATRN: {log}");
    assert!(log.contains("could not create it: Not a directory"), "{log}");
}

#[test]
fn the_shipped_tmpfiles_line_creates_the_default_lock_directory() {
    let text =
        std::fs::read_to_string(support::odmrd::workspace().join("etc/tmpfiles.d/odmrd.conf")).unwrap();
    let line = text.lines().find(|l| !l.starts_with('#') && !l.trim().is_empty()).unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[..3], ["d", "/run/odmrd", "0750"], "{line}");
}

// ---------------------------------------------------------------------------
// Signals

fn write_passwd(p: &Provider, name: &str, password: &str) {
    std::fs::write(
        p.path().join(name),
        format!("{USER}:{{PLAIN}}{password}::::::odmr_domains=example.org,example.net\n"),
    )
    .unwrap();
}

#[test]
fn sighup_reloads_for_new_sessions_while_a_running_session_completes() {
    let p = Provider::new();
    let config = p.config();
    let daemon = Daemon::start(&config);
    let mut running = daemon.connect();
    running.login(USER, PASSWORD);

    // A new passwd file, named by the configuration: only a reload can find it.
    write_passwd(&p, "passwd.new", "new-password");
    edit(
        &config,
        &format!("file = {}/passwd\n", p.path().display()),
        &format!("file = {}/passwd.new\n", p.path().display()),
    );
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("event=reloaded", Duration::from_secs(20));

    let mut fresh = daemon.connect();
    fresh.hello();
    fresh.auth(USER, PASSWORD, 535);
    fresh.auth(USER, "new-password", 235);
    fresh.command("QUIT", 221);

    // The session that started before the reload carries on, on the old backends, and
    // collects its mail.
    p.queue(
        "example.org",
        "1.m",
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: s\n\nb\n.\n",
    );
    running.command("ATRN example.org", 250);
    running.turn_around(EHLO_NAME, &[]);
    running.receive_one();
    running.expect_quit();
    assert!(p.queued("example.org").is_empty(), "delivered");
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn sighup_with_a_broken_configuration_keeps_serving_on_the_old_one() {
    let p = Provider::new();
    let config = p.config();
    let daemon = Daemon::start(&config);
    edit(&config, "[auth]\n", "[auth]\nmax_failurez = 3\n");
    daemon.signal(Signal::SIGHUP);
    daemon.wait_for_log("event=reload-failed", Duration::from_secs(20));
    let log = daemon.log();
    assert!(log.contains("the previous configuration stays in force"), "{log}");
    assert!(
        log.contains(&format!(
            "{}:{}: [auth] max_failurez",
            config.display(),
            line_of(&config, "max_failurez")
        )),
        "{log}"
    );

    let mut c = daemon.connect();
    c.login(USER, PASSWORD);
    c.command("QUIT", 221);
    let (status, _) = daemon.stop();
    assert!(status.success());
}

#[test]
fn habitual_signals_do_not_kill_the_daemon() {
    let p = Provider::new();
    let daemon = Daemon::start(&p.config());
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGPIPE, Signal::SIGALRM] {
        daemon.signal(signal);
    }
    daemon.wait_for_log("event=signal signal=ALRM", Duration::from_secs(20));
    let mut c = daemon.connect();
    c.expect(220);
    c.command("QUIT", 221);
    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("event=signal signal=USR1"), "{log}");
}

/// A customer gone before odmrd writes: the write fails (EPIPE) and the session ends, logged;
/// SIGPIPE never kills odmrd (it enters through C's `main`, which ignores it itself).
#[test]
fn a_customer_gone_before_the_greeting_ends_the_session_without_sigpipe() {
    use std::os::unix::process::ExitStatusExt;
    let p = Provider::new();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    drop(ours);
    let output = spawn_inetd_on(odmrd_command(&p.config()), theirs).wait_with_output().unwrap();
    let log = text(&output.stderr);
    assert_eq!(output.status.signal(), None, "killed by a signal: {log}");
    assert!(log.contains("event=connect"), "{log}");
    assert!(log.contains("event=close end=disconnected"), "{log}");
}

/// Started with standard error closed, odmrd must not let a file it opens take descriptor 2:
/// its log lines would be written into that file (the domain's lock file here).
#[test]
fn a_start_with_standard_error_closed_writes_no_log_line_into_a_file() {
    let p = Provider::new();
    p.queue(
        "example.org",
        "1.m",
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: s\n\nb\n.\n",
    );
    let mut command = Command::new("sh");
    command.args(["-c", "exec \"$0\" \"$@\" 2>&-", env!("CARGO_BIN_EXE_odmrd"), "-c"]).arg(p.config());
    let mut c = start_inetd_command(command);
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, &[]);
    c.receive_one();
    c.expect_quit();
    let (status, _) = c.finish();
    assert!(status.success());
    for entry in std::fs::read_dir(p.path().join("locks")).unwrap() {
        let path = entry.unwrap().path();
        assert_eq!(std::fs::read(&path).unwrap(), b"", "{} got log lines", path.display());
    }
    assert!(p.queued("example.org").is_empty(), "delivered");
}

#[test]
fn an_inetd_session_survives_sighup() {
    let p = Provider::new();
    let mut c = start_inetd_command(odmrd_command(&p.config()));
    c.expect(220);
    let pid = c.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGHUP).unwrap();
    c.send("EHLO customer.example");
    assert!(c.reply().last().unwrap().starts_with("250 "));
    c.auth(USER, PASSWORD, 235);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
}

// ---------------------------------------------------------------------------
// The passwd backend's Dovecot habits

#[test]
fn check_config_warns_about_a_space_after_a_comma_in_odmr_domains_with_the_line() {
    let p = Provider::new();
    std::fs::write(
        p.path().join("passwd"),
        format!("# customers\n{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org, example.net\n"),
    )
    .unwrap();
    let out = check_config(&p.config());
    let (said, err) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "a warning is not an error: {err}");
    assert!(
        err.contains(&format!(
            "{} line 2: user '{USER}': a space after a comma",
            p.path().join("passwd").display()
        )),
        "{err}"
    );
    // The space, and no domain's maildir yet.
    assert!(said.ends_with("configuration OK (2 warnings)\n"), "{said}");
}

#[test]
fn allow_nets_admits_its_networks_and_refuses_others_like_a_wrong_password() {
    let p = Provider::new();
    let daemon = Daemon::start(&p.config());
    for (nets, from, code) in [
        ("127.0.0.2/32", "127.0.0.1", 535),
        ("127.0.0.2/32", "127.0.0.2", 235),
        ("10.0.0.0/8,127.0.0.0/8", "127.0.0.3", 235),
        ("::1", "127.0.0.1", 535),
    ] {
        std::fs::write(
            p.path().join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org allow_nets={nets}\n"),
        )
        .unwrap();
        let mut c = daemon.connect_from(from);
        c.hello();
        c.auth(USER, PASSWORD, code);
        c.command("QUIT", 221);
    }
    let (_, log) = daemon.stop();
    let refused = format!("event=auth-refused user={USER} client=127.0.0.1 allow_nets=127.0.0.2/32");
    assert!(log.contains(&refused), "{log}");
    assert!(log.contains("reason=client-not-in-allow-nets"), "{log}");
}

// ---------------------------------------------------------------------------
// A person at a terminal

/// A pseudo-terminal: (the test's end, the end odmrd gets as a terminal).
fn terminal() -> (std::fs::File, std::os::fd::OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let pty = nix::pty::openpty(None, None).unwrap();
    // Not inherited by the other tests' children (openpty's fds are not close-on-exec).
    for fd in [&pty.master, &pty.slave] {
        fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    }
    (std::fs::File::from(pty.master), pty.slave)
}

/// What the terminal shows now, once odmrd has exited (read without waiting).
fn screen(master: std::fs::File) -> String {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    fcntl(std::os::fd::AsRawFd::as_raw_fd(&master), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let mut master = master;
    let mut shown = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match std::io::Read::read(&mut master, &mut buf) {
            Ok(0) | Err(_) => return text(&shown),
            Ok(n) => shown.extend_from_slice(&buf[..n]),
        }
    }
}

#[test]
fn a_start_from_a_terminal_shows_the_error_whatever_log_says() {
    let p = Provider::new();
    let config = with_log(&p, "syslog = off\nstderr = no");
    std::fs::remove_file(p.path().join("passwd")).unwrap();
    let (master, slave) = terminal();
    let status = odmrd_command(&config)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(slave))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(78));
    let shown = screen(master);
    assert!(shown.contains("[credentials] file: cannot read"), "{shown:?}");
}

#[test]
fn cram_md5_on_a_terminal_prompts_and_does_not_echo() {
    let (mut master, slave) = terminal();
    let stdin = slave.try_clone().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_odmrd"))
        .arg("--cram-md5")
        .stdin(std::process::Stdio::from(stdin))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::from(slave))
        .spawn()
        .unwrap();
    // Wait for the prompt: echo is off by then, so the password is typed into a quiet terminal.
    let mut shown = Vec::new();
    let mut buf = [0u8; 256];
    while !text(&shown).contains("Password: ") {
        let n = std::io::Read::read(&mut master, &mut buf).unwrap();
        assert!(n > 0, "no prompt: {:?}", text(&shown));
        shown.extend_from_slice(&buf[..n]);
    }
    std::io::Write::write_all(&mut master, format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(text(&out.stdout).trim(), support::doveadm_cram_md5(PASSWORD));
    let rest = screen(master);
    assert!(!rest.contains(PASSWORD) && !text(&shown).contains(PASSWORD), "echoed: {rest:?}");
}

// ---------------------------------------------------------------------------
// Log lines an operator and fail2ban can use

/// A user name that tries to add fields, even a client address of its own.
const FORGER: &str = "x result=failed reason=y failures=9 client=10.9.9.9 event=forged";

#[test]
fn a_user_name_cannot_add_a_field_to_a_log_line() {
    let p = Provider::new();
    let mut c = start_inetd_command(odmrd_command(&p.config()));
    c.hello();
    c.auth("a b event=forged", PASSWORD, 535);
    c.auth("q\" event=forged \\", PASSWORD, 535);
    c.command("QUIT", 221);
    let (_, log) = c.finish();
    assert!(log.contains("event=auth user=\"a b event=forged\" result=failed"), "{log}");
    assert!(log.contains("event=auth user=\"q\\\" event=forged \\\\\" result=failed"), "{log}");
    // Outside quotes, no line has an event= but its own first one.
    for line in log.lines() {
        let mut quoted = false;
        let mut escaped = false;
        let mut outside = String::new();
        for ch in line.chars() {
            match ch {
                _ if escaped => escaped = false,
                '\\' if quoted => escaped = true,
                '"' => quoted = !quoted,
                ch if !quoted => outside.push(ch),
                _ => {}
            }
        }
        assert!(outside.matches(" event=").count() <= 1 && !outside.contains("forged"), "{line}");
    }
}

#[test]
fn fail2ban_regex_matches_the_failed_auth_lines_and_nothing_else() {
    let Some(fail2ban_regex) = ["/usr/bin/fail2ban-regex"].into_iter().find(|p| Path::new(p).exists()) else {
        panic!("fail2ban-regex is missing: run t/setup-deps");
    };
    let p = Provider::new();
    p.queue(
        "example.org",
        "1.m",
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: s\n\nb\n.\n",
    );
    let daemon = Daemon::start(&p.config());
    let mut wrong = daemon.connect_from("127.0.0.2");
    wrong.hello();
    wrong.auth(USER, "wrong", 535);
    wrong.command("QUIT", 221);
    let mut forger = daemon.connect_from("127.0.0.3");
    forger.hello();
    forger.auth(FORGER, PASSWORD, 535);
    forger.command("QUIT", 221);
    let mut good = daemon.connect_from("127.0.0.4");
    good.login(USER, PASSWORD);
    good.command("ATRN example.org", 250);
    good.turn_around(EHLO_NAME, &[]);
    good.receive_one();
    good.expect_quit();
    let (_, log) = daemon.stop();
    // The queue's own lines during the session carry its id.
    let queue_lines: Vec<&str> =
        log.lines().filter(|l| l.contains("plugin=maildir maildir: domain=")).collect();
    assert!(!queue_lines.is_empty() && queue_lines.iter().all(|l| l.contains("session=")), "{log}");
    // Plugins are loaded once, at the standalone start, said at info in one line.
    assert_eq!(log.matches("event=plugins credentials=").count(), 1, "{log}");

    // As rsyslog writes them to /var/log/mail.log.
    let dir = tempfile::tempdir().unwrap();
    let stamp = "Nov 26 15:00:00 mail";
    let lines: String = log.lines().map(|l| format!("{stamp} {l}\n")).collect();
    std::fs::write(dir.path().join("mail.log"), &lines).unwrap();
    let filter = dir.path().join("odmrd.conf");
    std::fs::copy(support::odmrd::workspace().join("etc/fail2ban/filter.d/odmrd.conf"), &filter).unwrap();
    std::fs::copy("/etc/fail2ban/filter.d/common.conf", dir.path().join("common.conf")).unwrap();
    let out = Command::new(fail2ban_regex)
        .args(["--out", "ip"])
        .arg(dir.path().join("mail.log"))
        .arg(&filter)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let banned: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(banned, ["127.0.0.2", "127.0.0.3"], "over:\n{lines}");
}

#[test]
fn an_empty_inetd_poll_logs_four_lines_at_info_and_no_plugin_loading() {
    let p = Provider::new();
    let config = with_log(&p, "syslog = off\nstderr = yes\nlevel = info");
    std::fs::create_dir(p.path().join("locks")).unwrap(); // as after the first start
    let mut c = start_inetd_command(odmrd_command(&config));
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    let events: Vec<&str> =
        log.lines().map(|l| l.split_whitespace().find(|w| w.starts_with("event=")).unwrap_or(l)).collect();
    assert_eq!(events, ["event=connect", "event=auth", "event=atrn", "event=close"], "{log}");
    assert!(log.contains("event=atrn user=customer domains=example.org result=453 reason=no-mail"), "{log}");
    assert!(log.contains("event=close end=normal"), "{log}");
}
