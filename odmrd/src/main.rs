//! odmrd's command line: arguments → one [`Command`] → run it. This file alone
//! decides exit statuses (sysexits.h: 64 usage, 69 unavailable, 70 a bug,
//! 71 OS error, 77 no permission, 78 configuration).
//!
//! odmrd enters through C's `main`, not Rust's usual start (`#![no_main]`): under inetd
//! every session is a new process, and Rust's start places the main thread's stack guard
//! by reading `/proc/self/maps`, which cost about 0.1 ms of each start here (perf stat of
//! `odmrd --version`: 0.50 against 0.42 ms of task-clock), under inetd paid by every session.
//! The rest of that start odmrd does itself, in [`c_main`]: the standard descriptors are made valid, SIGPIPE never kills
//! (a write to a closed connection fails with EPIPE instead), a panic out of the command is
//! an exit status, and standard output is flushed at the end. A stack overflow is then a
//! plain SIGSEGV without Rust's message.
// The unit tests below keep the test harness's own entry.
#![cfg_attr(not(test), no_main)]

use odmrd::start::{Failure, Listen};
use odmrd::{check, demo, log, start};
use std::ffi::{c_char, c_int};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: odmrd [-c FILE] [--inetd] [--listen ADDR:PORT] [--check-config]
       odmrd --demo [--listen ADDR:PORT]   start a demo provider with sample mail
       odmrd --cram-md5                    read a password, print its {CRAM-MD5} entry
       odmrd [-c FILE] --queue [--json] [--by-account] [DOMAIN...]   list the held mail (reads only)
       odmrd [-c FILE] --expire [--dry-run]           bounce mail held past [queue] max_hold

  -c FILE             configuration file (default /etc/odmrd.ini)
  --inetd             serve one session on stdin/stdout, whatever [server] listen says
  --tls               with --inetd: the session starts with a TLS handshake (implicit TLS)
  --listen ADDR:PORT  run standalone on this address, whatever [server] listen says
  --check-config      check the configuration, the backends and the files the service
                      needs (as [server] user when run as root), then exit";

/// What this run of odmrd does, decided once from the arguments.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Help,
    Version,
    /// Print a `{CRAM-MD5}` passwd entry for a password.
    CramMd5,
    /// A provider with sample mail in a fresh directory.
    Demo {
        listen: Option<SocketAddr>,
    },
    /// `--check-config`.
    Check {
        config: PathBuf,
    },
    /// `--queue` or `--expire` (odmrd::hold_cli).
    Hold {
        config: PathBuf,
        command: odmrd::hold_cli::Command,
    },
    /// Serve sessions: inetd, standalone, or as `[server] listen` says.
    Serve {
        config: PathBuf,
        listen: Listen,
    },
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let (mut config, mut inetd, mut listen) = (None, false, None);
    let (mut check_config, mut demo, mut cram_md5, mut tls) = (false, false, false, false);
    let mut hold = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => config = Some(PathBuf::from(args.next().ok_or("-c needs a file")?)),
            "--inetd" => inetd = true,
            "--listen" => {
                let value = args.next().ok_or("--listen needs ADDR:PORT")?;
                listen = Some(value.parse().map_err(|e| format!("--listen {value}: {e}"))?);
            }
            "--check-config" => check_config = true,
            "--tls" => tls = true,
            "--demo" => demo = true,
            "--cram-md5" => cram_md5 = true,
            "--queue" | "--expire" | "--json" | "--dry-run" | "--by-account" => {
                odmrd::hold_cli::Command::parse_flag(&mut hold, &arg)?
            }
            domain if hold.is_some() && !domain.starts_with('-') => {
                odmrd::hold_cli::Command::parse_domain(&mut hold, domain)?
            }
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if inetd && listen.is_some() {
        return Err("--inetd and --listen exclude each other".into());
    }
    if tls && !inetd {
        return Err("--tls goes with --inetd (standalone, use [server] listen_tls)".into());
    }
    if demo && (config.is_some() || inetd || check_config) {
        return Err("--demo makes its own configuration; it takes only --listen".into());
    }
    if let Some(command) = &hold {
        command.check()?;
        if inetd || listen.is_some() || check_config || demo || cram_md5 || tls {
            return Err("--queue and --expire take only -c and their own options".into());
        }
    }
    if cram_md5 {
        return Ok(Command::CramMd5);
    }
    if demo {
        return Ok(Command::Demo { listen });
    }
    let config = config.unwrap_or_else(|| PathBuf::from(odmrd::config::DEFAULT_PATH));
    if check_config {
        return Ok(Command::Check { config });
    }
    if let Some(command) = hold {
        return Ok(Command::Hold { config, command });
    }
    let listen = match (inetd, listen) {
        (true, _) => Listen::Inetd { tls },
        (false, Some(addr)) => Listen::On(addr),
        (false, None) => Listen::AsConfigured,
    };
    Ok(Command::Serve { config, listen })
}

const EX_SOFTWARE: u8 = 70;

/// The process's entry point, C's `main`, called by the C runtime (see the module's comment
/// for why). Under `cargo test` the harness has the symbol; this stays unused there.
#[cfg_attr(not(test), export_name = "main")]
#[cfg_attr(test, allow(dead_code))]
pub extern "C" fn c_main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    standard_descriptors_open();
    // The handler only sets a flag nobody reads: the signal no longer kills, so the write
    // that caused it returns EPIPE, as under Rust's usual start (which ignores SIGPIPE).
    // exec resets a handled signal, so children still get the default.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGPIPE, Arc::new(AtomicBool::new(false)));
    // The panic hook (set in try_main) has logged a panic; unwinding must not leave this
    // extern "C" function.
    let status = std::panic::catch_unwind(try_main).unwrap_or(Err(EX_SOFTWARE));
    let _ = std::io::stdout().flush();
    match status {
        Ok(()) => 0,
        Err(code) => c_int::from(code),
    }
}

/// Descriptors 0, 1 and 2 refer to something (/dev/null when they were closed), so that no
/// file odmrd opens becomes its standard output or error and receives log lines.
fn standard_descriptors_open() {
    use nix::fcntl::{fcntl, FcntlArg};
    for fd in 0..=2 {
        if fcntl(fd, FcntlArg::F_GETFD) == Err(nix::errno::Errno::EBADF) {
            // Opened while `fd` is the lowest free descriptor, so it takes that number; kept
            // open for the life of the process.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                std::mem::forget(null);
            }
        }
    }
}

/// Run the command; Err is the exit status, after the reason was reported.
fn try_main() -> Result<(), u8> {
    let command = parse_args(std::env::args().skip(1)).map_err(|why| {
        eprintln!("odmrd: {why}\n{USAGE}");
        EX_USAGE
    })?;
    // A panic (a bug) is logged like everything else, never printed to fd 2;
    // a session thread that panics ends that session only.
    std::panic::set_hook(Box::new(|info| log::error(&format!("event=panic {info}"))));
    match command {
        Command::Help => println!("{USAGE}"),
        Command::Version => println!("odmrd {}", env!("CARGO_PKG_VERSION")),
        Command::CramMd5 => print_cram_md5_entry().map_err(|why| {
            eprintln!("odmrd: {why}");
            EX_USAGE
        })?,
        Command::Check { config } => {
            check::run(&config).map_err(|summary| {
                eprintln!("{summary}");
                EX_CONFIG
            })?;
        }
        Command::Demo { listen } => {
            let config = demo::prepare(listen).map_err(|e| {
                log::echo_to_person(true);
                log::error(&format!("demo: {e}"));
                EX_OSERR
            })?;
            start::serve(config, Listen::AsConfigured).map_err(exit_status)?;
        }
        Command::Hold { config, command } => {
            log::echo_to_person(log::stderr_is_terminal());
            let config = start::load_config(&config).map_err(exit_status)?;
            log::init(&config.log);
            let backends = start::load_backends(&config).map_err(exit_status)?;
            match command.run(&config, &backends) {
                0 => {}
                code => return Err(code),
            }
        }
        Command::Serve { config, listen } => start::serve(config, listen).map_err(exit_status)?,
    }
    Ok(())
}

/// `odmrd --cram-md5`: one password (the line end is not part of it), its Dovecot `{CRAM-MD5}`
/// entry on stdout. On a terminal it prompts and does not echo the password.
fn print_cram_md5_entry() -> Result<(), String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let terminal = tcgetattr(&stdin).ok();
    if let Some(saved) = &terminal {
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSAFLUSH, &quiet).map_err(|e| format!("turning off echo: {e}"))?;
        // The prompt once echo is off: what is typed after it is never shown.
        eprint!("Password: ");
    }
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    if let Some(saved) = &terminal {
        let _ = tcsetattr(&stdin, SetArg::TCSAFLUSH, saved);
        eprintln!();
    }
    read.map_err(|e| format!("reading the password: {e}"))?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err("empty password".into());
    }
    println!("{}", odmrd::sasl::cram_md5_entry(password.as_bytes()));
    Ok(())
}

fn exit_status(failure: Failure) -> u8 {
    match failure {
        Failure::Config(_) => EX_CONFIG,
        Failure::Unavailable(_) => EX_UNAVAILABLE,
        Failure::NoPermission(_) => EX_NOPERM,
        Failure::Os(_) => EX_OSERR,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn the_run_mode_is_decided_once_from_the_arguments() {
        let etc = || PathBuf::from("/etc/odmrd.ini");
        let addr: SocketAddr = "127.0.0.1:366".parse().unwrap();
        let cases: Vec<(&[&str], Result<Command, ()>)> = vec![
            (&[], Ok(Command::Serve { config: etc(), listen: Listen::AsConfigured })),
            (&["--inetd"], Ok(Command::Serve { config: etc(), listen: Listen::Inetd { tls: false } })),
            (
                &["--inetd", "--tls"],
                Ok(Command::Serve { config: etc(), listen: Listen::Inetd { tls: true } }),
            ),
            (&["--tls"], Err(())),
            (&["--listen", "127.0.0.1:366"], Ok(Command::Serve { config: etc(), listen: Listen::On(addr) })),
            (&["-c", "/x.ini", "--check-config"], Ok(Command::Check { config: "/x.ini".into() })),
            (&["--demo"], Ok(Command::Demo { listen: None })),
            (&["--cram-md5"], Ok(Command::CramMd5)),
            (&["--version"], Ok(Command::Version)),
            (&["--help"], Ok(Command::Help)),
            (&["--inetd", "--listen", "127.0.0.1:366"], Err(())),
            (&["--demo", "-c", "/x.ini"], Err(())),
            (&["--demo", "--check-config"], Err(())),
            (&["--listen"], Err(())),
            (&["--bogus"], Err(())),
        ];
        for (args, want) in cases {
            assert_eq!(parse(args).map_err(|_| ()), want, "{args:?}");
        }
    }
}
