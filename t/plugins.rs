//! Plugins loaded by path, end to end: the odmrd binary is run against real
//! shared objects built here, with `cc` from C sources (the example backend in
//! `backends/example-c`, and `t/plugins/testplugin.c` shaped by -D flags into
//! broken, older, newer and concurrent plugins) and with cargo from Rust
//! (the in-tree backends as cdylibs, and a plugin that panics).
//!
//! Covered: every way loading fails (one message naming the path and the
//! reason, exit 78, and 421 to an inetd client); a full ODMR session through
//! the C example, with a recipient deferred and one bounced; the maildir and
//! passwd backends loaded by path; a plugin of the next minor; a panicking
//! Rust plugin under the standalone daemon; the thread contract; and the
//! version check of the SQL object's private entry.

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use support::odmrd::{
    check_config, odmrd_alone, shared_object, workspace, Daemon, Provider, EHLO_NAME, PASSWORD, USER,
};

/// Compile C `src` into the shared object `out` against the committed header.
fn cc_shared(src: &Path, out: &Path, defines: &[&str]) {
    cc_shared_against(&workspace().join("odmr-api/include"), src, out, defines);
}

/// The ABI 1.0 header as released, kept to build plugins of that minor.
fn v1_0_include() -> PathBuf {
    workspace().join("t/plugins/v1_0")
}

/// Compile C `src` into the shared object `out` against the `odmr_api.h` in `include`.
fn cc_shared_against(include: &Path, src: &Path, out: &Path, defines: &[&str]) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let result = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(include)
        .args(defines)
        .arg(src)
        .arg("-o")
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(result.status.success(), "{cc} {defines:?} failed:\n{}", String::from_utf8_lossy(&result.stderr));
}

/// `t/plugins/testplugin.c` built with `defines` into `dir/name`.
fn test_plugin(dir: &Path, name: &str, defines: &[&str]) -> PathBuf {
    let out = dir.join(name);
    cc_shared(&workspace().join("t/plugins/testplugin.c"), &out, defines);
    out
}

/// The C example backend built into `dir/libexample.so`.
fn example_plugin(dir: &Path) -> PathBuf {
    example_plugin_against(&workspace().join("odmr-api/include"), dir)
}

/// The C example backend built against the header in `include` into `dir/libexample.so`.
fn example_plugin_against(include: &Path, dir: &Path) -> PathBuf {
    let out = dir.join("libexample.so");
    cc_shared_against(include, &workspace().join("backends/example-c/example.c"), &out, &[]);
    out
}

/// The shared provider, with room for the parallel sessions of the thread
/// contract tests (all from 127.0.0.1).
fn provider() -> Provider {
    let mut p = Provider::new();
    p.extra_server = "max_sessions_per_ip = 50".into();
    p
}

/// The files of the C example's queue directory, by name.
fn queue_files(p: &Provider) -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir(p.path().join("queue"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------
// Every way loading fails: one message naming the path and the reason, exit
// 78 (EX_CONFIG), and under inetd a 421 to the client first.

/// `plugin` configured in `section` must be refused with a message holding
/// every fragment of `reason`, in `--check-config` and in `--inetd` mode.
fn assert_refused(p: &Provider, section: &str, plugin: &Path, reason: &[&str]) {
    let plugin = plugin.display().to_string();
    // `FILE:LINE: [section] plugin: PATH: reason`, or for the backend's verdict on its
    // settings `FILE:LINE: [section] KEY: reason (backend PATH)`.
    let what = format!("[{section}]");
    let check = |log: &str, mode: &str| {
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&what) && l.contains(&plugin)).collect();
        assert_eq!(lines.len(), 1, "{mode}: one message naming {plugin}, got:\n{log}");
        for fragment in reason {
            assert!(lines[0].contains(fragment), "{mode}: {fragment:?} missing from {:?}", lines[0]);
        }
        assert!(lines[0].contains(&p.path().join("odmrd.ini").display().to_string()), "{}", lines[0]);
    };

    let out = check_config(&p.config());
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "--check-config: {log}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(!said.contains("configuration OK"), "nothing says OK: {said:?}");
    check(&log, "--check-config");

    let mut c = p.start();
    let text = c.expect(421);
    assert!(text.starts_with("odmr.test.example"), "{text}");
    c.expect_eof();
    let (status, log) = c.finish();
    assert_eq!(status.code(), Some(78), "--inetd: {log}");
    check(&log, "--inetd");
}

fn refused_credentials(plugin: &Path, reason: &[&str], p: &mut Provider) {
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", plugin.display());
    assert_refused(p, "credentials", plugin, reason);
}

#[test]
fn a_missing_file_is_refused() {
    let mut p = provider();
    let path = p.path().join("no-such-plugin.so");
    refused_credentials(&path, &["cannot open", "No such file"], &mut p);
}

#[test]
fn a_file_that_is_not_a_shared_object_is_refused() {
    let mut p = provider();
    let path = p.path().join("libtext.so");
    std::fs::write(&path, "this is a text file, not ELF\n").unwrap();
    refused_credentials(&path, &["cannot be loaded (dlopen): "], &mut p);
    // A shared object whose own dependencies do not resolve (RTLD_NOW).
    let src = p.path().join("undefined.c");
    std::fs::write(
        &src,
        "int missing_dependency(void);\nint odmr_plugin_init(void) { return missing_dependency(); }\n",
    )
    .unwrap();
    let path = p.path().join("libundefined.so");
    cc_shared(&src, &path, &[]);
    refused_credentials(
        &path,
        &["cannot be loaded (dlopen): ", "undefined symbol: missing_dependency"],
        &mut p,
    );
    let directory = p.path().to_path_buf();
    refused_credentials(&directory, &["not a shared object: not a regular file"], &mut p);
}

#[test]
fn a_shared_object_without_odmr_plugin_init_is_refused() {
    let mut p = provider();
    let path = test_plugin(p.path(), "libnoinit.so", &["-DNO_INIT"]);
    refused_credentials(&path, &["does not export odmr_plugin_init"], &mut p);
}

#[test]
fn a_plugin_of_another_major_is_refused() {
    let mut p = provider();
    let path = test_plugin(p.path(), "libmajor2.so", &["-DMAJOR=2"]);
    refused_credentials(&path, &["built for ABI major 2", "speaks major 1 only", "rebuild"], &mut p);
    // A plugin that itself refuses this host's major.
    let path = test_plugin(p.path(), "libversion.so", &["-DINIT_VERSION"]);
    let this_abi = format!("odmr_plugin_init refused this odmrd's ABI 1.{}", odmr_api::ffi::ODMR_ABI_MINOR);
    refused_credentials(&path, &[&this_abi, "ODMR_VERSION"], &mut p);
}

#[test]
fn a_struct_size_below_v1_0_is_refused() {
    let mut p = provider();
    let path = test_plugin(p.path(), "libsmall.so", &["-DSHRINK=8"]);
    refused_credentials(&path, &["odmr_plugin struct_size", "smaller than the", "ABI 1.0"], &mut p);
    let path = test_plugin(p.path(), "libsmallops.so", &["-DOPS_SHRINK=8"]);
    refused_credentials(&path, &["odmr_credentials_ops struct_size", "smaller than the"], &mut p);
}

#[test]
fn instance_new_failing_is_refused_with_the_plugins_reason() {
    let mut p = provider();
    let path = test_plugin(p.path(), "libfailnew.so", &["-DFAIL_NEW"]);
    refused_credentials(
        &path,
        &["cannot open the user database /nonexistent/users.db: No such file"],
        &mut p,
    );
    // The section's keys reach instance_new: the C example names a key it
    // does not know.
    let example = example_plugin(p.path());
    p.credentials = format!("plugin = {}\nbogus = 1\n", example.display());
    assert_refused(&p, "credentials", &example, &["[credentials] bogus: unknown key", "(backend "]);
}

#[test]
fn a_plugin_of_the_wrong_kind_for_its_section_is_refused() {
    let p = &mut provider();
    let credentials_only = test_plugin(p.path(), "libcreds.so", &[]);
    p.queue = format!("plugin = {}\nuser = a:b:example.org\n", credentials_only.display());
    assert_refused(p, "queue", &credentials_only, &["is not a queue backend"]);
    let queue_only = shared_object("libodmr_backend_maildir.so");
    p.queue = "plugin = builtin:maildir\ndirectory = /tmp/{domain}\n".into();
    p.credentials = format!("plugin = {}\ndirectory = /tmp/{{domain}}\n", queue_only.display());
    assert_refused(p, "credentials", &queue_only, &["is not a credentials backend"]);
}

// ---------------------------------------------------------------------------
// The C example backend: credentials and queue, a full session.

fn example_message(from: &str, to: &[&str], content: &str) -> String {
    let mut s = format!("Envelope-From: <{from}>\n");
    for rcpt in to {
        s.push_str(&format!("Envelope-To: <{rcpt}>\n"));
    }
    s.push('\n');
    s.push_str(content);
    s
}

#[test]
fn the_c_example_serves_a_whole_session_with_a_deferred_and_a_bounced_recipient() {
    let log = the_c_example_session(&workspace().join("odmr-api/include"));
    assert!(log.contains(&format!(" abi=1.{} ", odmr_api::ffi::ODMR_ABI_MINOR)), "{log}");
}

#[test]
fn a_v1_0_c_plugin_built_from_the_1_0_header_serves_a_session() {
    let header = std::fs::read_to_string(v1_0_include().join("odmr_api.h")).unwrap();
    assert!(header.contains("#define ODMR_ABI_MINOR 0"), "t/plugins/v1_0 holds the 1.0 header");
    let log = the_c_example_session(&v1_0_include());
    assert!(log.contains("plugin=example-c version=1.0 section=queue"), "{log}");
    assert!(log.contains(" abi=1.0 "), "{log}");
}

/// The C example built against the header in `include`, through a whole
/// session and a second collection; the daemon's log of the first.
fn the_c_example_session(include: &Path) -> String {
    let mut p = provider();
    let so = example_plugin_against(include, p.path());
    let d = p.path().display().to_string();
    p.credentials = format!(
        "plugin = {}\nuser = {USER}:{PASSWORD}:example.org,example.net\nuser2 = other:pw:example.com\n",
        so.display()
    );
    p.queue = format!("plugin = {}\ndirectory = {d}/queue\n", so.display());
    std::fs::create_dir(p.path().join("queue")).unwrap();
    let content = "Subject: mixed\nFrom: alice@s.example\n\n.leading dot\nbody\n";
    let mixed = example_message(
        "alice@s.example",
        &["ok@example.org", "later@example.org", "gone@example.org", "x@example.com"],
        content,
    );
    let other = example_message("bob@s.example", &["y@example.com"], "Subject: other\n\nbody\n");
    std::fs::write(p.path().join("queue/1-mixed"), &mixed).unwrap();
    std::fs::write(p.path().join("queue/2-other"), &other).unwrap();
    std::fs::write(p.path().join("queue/.hidden"), "not a message").unwrap();

    let mut c = p.start();
    c.hello();
    c.auth(USER, "wrong", 535);
    c.auth("nobody", PASSWORD, 535);
    c.auth(USER, PASSWORD, 235);
    c.command("ATRN example.com", 450); // not one of this user's domains
    c.command("ATRN example.net", 453); // nothing queued for it
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, &[]);
    let (mail, rcpts, data) = c.receive_data(&["250 ok", "451 4.3.0 try later", "550 5.1.1 no such user"]);
    assert_eq!(mail, "MAIL FROM:<alice@s.example>");
    assert_eq!(
        rcpts,
        ["RCPT TO:<ok@example.org>", "RCPT TO:<later@example.org>", "RCPT TO:<gone@example.org>"]
    );
    assert_eq!(data, "Subject: mixed\r\nFrom: alice@s.example\r\n\r\n..leading dot\r\nbody\r\n");
    assert_eq!(queue_files(&p)[1].1, mixed, "nothing changes before the reply to the final dot");
    c.send("250 queued");
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");

    // The delivered and the bounced recipients left the queue; the deferred
    // one and the other domain's stay, with the content byte for byte.
    let expected_left = example_message("alice@s.example", &["later@example.org", "x@example.com"], content);
    assert_eq!(
        queue_files(&p),
        [
            (".hidden".to_string(), "not a message".to_string()),
            ("1-mixed".to_string(), expected_left),
            ("2-other".to_string(), other),
        ]
    );
    assert!(log.contains("to=<ok@example.org> status=sent"), "{log}");
    assert!(log.contains("to=<later@example.org> status=deferred"), "{log}");
    assert!(log.contains("to=<gone@example.org> status=bounced dsn=sent"), "{log}");
    // The plugin logs through the host, tagged with its name.
    assert!(log.contains("plugin=example-c example: 2 users, queue directory (none)"), "{log}");
    assert!(
        log.contains("plugin=example-c example: message 1-mixed: 2 recipient(s) removed, 2 stay queued"),
        "{log}"
    );
    assert!(log.contains("plugin=example-c version=1.0 section=queue"), "{log}");
    assert!(log.contains("threadsafe=no"), "{log}");

    let dsns = p.sendmail.calls();
    assert_eq!(dsns.len(), 1, "one DSN");
    assert_eq!(dsns[0].args, ["-i", "-f", "<>", "--", "alice@s.example"]);
    let dsn = String::from_utf8_lossy(&dsns[0].stdin);
    assert!(dsn.contains("Final-Recipient: rfc822; gone@example.org"), "{dsn}");

    // The deferred recipient is delivered next time; then only example.com's remain.
    let mut c = p.start();
    c.login(USER, PASSWORD);
    c.command("ATRN", 250);
    c.turn_around(EHLO_NAME, &[]);
    let (mail, rcpts, _) = c.receive_one();
    assert_eq!(mail, "MAIL FROM:<alice@s.example>");
    assert_eq!(rcpts, ["RCPT TO:<later@example.org>"]);
    c.expect_quit();
    c.finish();
    let left = queue_files(&p);
    assert_eq!(left[1].1, example_message("alice@s.example", &["x@example.com"], content));
    log
}

// ---------------------------------------------------------------------------
// The guide's minimal C example, taken from odmr-api/README.md as written.

#[test]
fn the_guides_minimal_c_example_compiles_and_is_served() {
    let guide = std::fs::read_to_string(workspace().join("odmr-api/README.md")).unwrap();
    let block = &guide[guide.find("<!-- minimal-example:start").expect("the marked example")..];
    let code = &block[block.find("```c\n").unwrap() + "```c\n".len()..];
    let code = &code[..code.find("```").unwrap()];
    let mut p = provider();
    let (src, so) = (p.path().join("one.c"), p.path().join("libone.so"));
    std::fs::write(&src, code).unwrap();
    cc_shared(&src, &so, &[]);

    p.credentials =
        format!("plugin = {}\nuser = {USER}\npassword = {PASSWORD}\ndomain = example.org\n", so.display());
    let mut c = p.start();
    c.hello();
    c.auth(USER, "wrong", 535);
    c.auth("nobody", PASSWORD, 535);
    c.auth(USER, PASSWORD, 235);
    c.command("ATRN example.net", 450);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(log.contains("plugin=one one user configured"), "{log}");
    assert!(log.contains("plugin=one version=1.0 section=credentials"), "{log}");

    p.credentials = format!("plugin = {}\ncolour = blue\n", so.display());
    assert_refused(&p, "credentials", &so, &["[credentials]: unknown key or value too long: 'colour'"]);
}

// ---------------------------------------------------------------------------
// The in-tree Rust backends, built as cdylibs, loaded by path.

#[test]
fn the_maildir_and_passwd_backends_load_by_path_and_serve_a_session() {
    let mut p = provider();
    let (passwd, maildir) =
        (shared_object("libodmr_backend_passwd.so"), shared_object("libodmr_backend_maildir.so"));
    let d = p.path().display().to_string();
    p.credentials = format!("plugin = {}\nfile = {d}/passwd\n", passwd.display());
    p.queue = format!("plugin = {}\ndirectory = {d}/spool/{{domain}}\n", maildir.display());
    let new = p.path().join("spool/example.org/new");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::create_dir_all(p.path().join("spool/example.org/cur")).unwrap();
    std::fs::create_dir_all(p.path().join("spool/example.org/tmp")).unwrap();
    std::fs::write(
        new.join("1.m"),
        "MAIL FROM:<a@s.example>\nRCPT TO:<x@example.org>\nDATA\nSubject: so\n\nbody\n.\n",
    )
    .unwrap();

    assert!(check_config(&p.config()).status.success());
    let mut c = p.start();
    c.login(USER, PASSWORD);
    c.command("ATRN example.org", 250);
    c.turn_around(EHLO_NAME, &[]);
    let (mail, rcpts, data) = c.receive_one();
    assert_eq!(mail, "MAIL FROM:<a@s.example>");
    assert_eq!(rcpts, ["RCPT TO:<x@example.org>"]);
    assert_eq!(data, "Subject: so\r\n\r\nbody\r\n");
    c.expect_quit();
    let (status, log) = c.finish();
    assert!(status.success(), "{log}");
    assert!(!new.join("1.m").exists(), "delivered, so removed");
    assert!(
        log.contains(&format!("plugin=maildir version=0.1.0 section=queue loaded={}", maildir.display())),
        "{log}"
    );
    assert!(
        log.contains(&format!("plugin=passwd version=0.1.0 section=credentials loaded={}", passwd.display())),
        "{log}"
    );
}

// ---------------------------------------------------------------------------
// Evolution: a plugin of the next minor (appended fields, larger struct_size)
// loads and works on this host.

#[test]
fn a_plugin_of_a_newer_minor_with_appended_fields_loads_and_works() {
    let mut p = provider();
    let so = test_plugin(p.path(), "libnext.so", &["-DNEWER_MINOR"]);
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", so.display());
    let out = check_config(&p.config());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut c = p.start();
    c.login(USER, PASSWORD);
    c.command("ATRN example.net", 450);
    c.command("ATRN example.org", 453);
    c.command("QUIT", 221);
    let (status, log) = c.finish();
    assert!(status.success());
    assert!(log.contains("plugin=testplugin version=next-minor section=credentials"), "{log}");
    assert!(log.contains(&format!(" abi=1.{} ", odmr_api::ffi::ODMR_ABI_MINOR + 1)), "{log}");
}

// ---------------------------------------------------------------------------
// A panicking Rust plugin never takes the daemon down.

#[test]
fn a_panicking_rust_plugin_gets_451_and_the_daemon_and_other_sessions_carry_on() {
    let mut p = provider();
    let so = shared_object("libodmr_test_panicky.so");
    p.credentials = format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\n", so.display());
    let daemon = p.start_daemon();

    let mut first = daemon.connect();
    first.hello();
    first.auth("panic", "whatever", 451);
    // The same session goes on, and so does a second one.
    first.auth(USER, PASSWORD, 235);
    let mut second = daemon.connect();
    second.login(USER, PASSWORD);
    second.command("ATRN example.org", 453);
    second.command("QUIT", 221);
    first.command("ATRN example.org", 453);
    first.command("QUIT", 221);

    let (status, log) = daemon.stop();
    assert!(status.success(), "{log}");
    // The panic message went through the host log with the plugin's name...
    let panic_line = log.lines().find(|l| l.contains("deliberate panic for user panic")).expect(&log);
    assert!(panic_line.contains("plugin=panicky panic in thread"), "{panic_line}");
    assert!(panic_line.contains("t/plugins/panicky/src/lib.rs"), "{panic_line}");
    // ...and the host logged the failed call, also by name.
    assert!(log.contains("plugin=panicky call=lookup_secret status=plugin panicked"), "{log}");
    // Nothing reached stderr around the host's log (std's default hook).
    for line in log.lines() {
        assert!(line.starts_with("odmrd["), "a line not written by odmrd's log: {line:?}");
    }
}

// ---------------------------------------------------------------------------
// The thread contract.

/// Run `n` sessions at once against `daemon`: each authenticates (one
/// `lookup_secret`) and asks for example.org (one `list_domains`).
fn parallel_sessions(daemon: &Daemon, n: usize) {
    let barrier = Arc::new(Barrier::new(n));
    let sessions: Vec<_> = (0..n)
        .map(|_| {
            let mut c = daemon.connect();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                c.hello();
                barrier.wait();
                c.auth(USER, PASSWORD, 235);
                // list_domains runs first; then the domain's lock decides
                // between "nothing queued" and "being collected".
                c.send("ATRN example.org");
                let reply = c.reply();
                assert!(reply[0].starts_with("453 ") || reply[0].starts_with("450 "), "{reply:?}");
                c.command("QUIT", 221);
            })
        })
        .collect();
    for s in sessions {
        s.join().expect("a session failed");
    }
}

/// The largest `max=` the test plugin logged, and how many calls logged.
fn entries(log: &str) -> (usize, usize) {
    let maxima: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("plugin=testplugin entries"))
        .map(|l| l.rsplit_once("max=").unwrap().1.trim().parse().unwrap())
        .collect();
    (maxima.iter().copied().max().unwrap_or(0), maxima.len())
}

#[test]
fn a_plugin_without_threadsafe_is_never_entered_twice_at_once() {
    let mut p = provider();
    let so = test_plugin(p.path(), "libserial.so", &[]);
    p.credentials =
        format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\nsleep_ms = 20\n", so.display());
    let daemon = p.start_daemon();
    parallel_sessions(&daemon, 20);
    let (_, log) = daemon.stop();
    assert!(log.contains("plugin=testplugin version=test section=credentials"), "{log}");
    let (max, calls) = entries(&log);
    assert_eq!(calls, 40, "20 lookups and 20 domain lists:\n{log}");
    assert_eq!(max, 1, "entered concurrently:\n{log}");
}

#[test]
fn a_threadsafe_plugin_is_called_concurrently() {
    let mut p = provider();
    let so = test_plugin(p.path(), "libconcurrent.so", &["-DTHREADSAFE"]);
    p.credentials =
        format!("plugin = {}\nuser = {USER}:{PASSWORD}:example.org\nsleep_ms = 300\n", so.display());
    let daemon = p.start_daemon();
    parallel_sessions(&daemon, 10);
    let (_, log) = daemon.stop();
    assert!(log.contains("threadsafe=yes"), "{log}");
    let (max, calls) = entries(&log);
    assert_eq!(calls, 20, "{log}");
    assert!(max > 1, "ten sessions sleeping 300 ms each inside the plugin never overlapped:\n{log}");
}

/// The private lock entry of `libodmr_backend_sql.so` is for the object of
/// odmrd's own build: a stand-in object of another version beside a copy of
/// odmrd is refused for `lock = database`, with both versions named at the
/// key's line.
#[test]
fn an_sql_object_of_another_version_is_refused_for_database_locks() {
    let Some((alone, _)) = odmrd_alone("libodmr_backend_sql.so") else { return };
    let odmrd = alone.path().join("odmrd");
    let src = alone.path().join("other.c");
    std::fs::write(
        &src,
        "#include \"odmr_api.h\"\n\
         odmr_str odmr_sql_private_version(void) {\n\
         \x20   odmr_str version = { (const uint8_t *)\"0.0.0-other\", 11 };\n\
         \x20   return version;\n\
         }\n",
    )
    .unwrap();
    cc_shared(&src, &alone.path().join("libodmr_backend_sql.so"), &[]);
    let mut p = provider();
    p.credentials = "plugin = builtin:sql\ndriver = postgresql\nconnect = host=/nonexistent\n".into();
    p.extra_server = "lock = database\n".into();
    let out = Command::new(&odmrd).arg("-c").arg(p.config()).arg("--check-config").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("[server] lock: "), "{err}");
    assert!(
        err.contains(&format!("is version 0.0.0-other but odmrd is {}+locks.1", env!("CARGO_PKG_VERSION"))),
        "{err}"
    );
}
