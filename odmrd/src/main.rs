//! odmrd's command line: arguments → configuration → run. This file alone
//! decides exit statuses (sysexits.h: 64 usage, 69 unavailable, 71 OS error,
//! 77 no permission, 78 configuration).

use odmrd::backend::Backends;
use odmrd::config::Config;
use odmrd::session::Start;
use odmrd::{demo, log, server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_OSERR: u8 = 71;
const EX_NOPERM: u8 = 77;
const EX_CONFIG: u8 = 78;

const USAGE: &str = "usage: odmrd [-c FILE] [--inetd] [--listen ADDR:PORT] [--check-config]
       odmrd --demo [--listen ADDR:PORT]   start a demo provider with sample mail
       odmrd --cram-md5                    read a password on stdin, print its {CRAM-MD5} entry
       odmrd [-c FILE] --queue [--json] [--by-account] [DOMAIN...]   list the held mail (reads only)
       odmrd [-c FILE] --expire [--dry-run]           bounce mail held past [queue] max_hold

  -c FILE             configuration file (default /etc/odmrd.ini)
  --inetd             serve one session on stdin/stdout, whatever [server] listen says
  --tls               with --inetd: the session starts with a TLS handshake (implicit TLS)
  --listen ADDR:PORT  run standalone on this address, whatever [server] listen says
  --check-config      validate the configuration and the backends, then exit";

#[derive(Default)]
struct Options {
    config: Option<PathBuf>,
    inetd: bool,
    listen: Option<std::net::SocketAddr>,
    check_config: bool,
    tls: bool,
    demo: bool,
    cram_md5: bool,
    /// `--queue`, `--expire` and their options (odmrd::hold_cli).
    hold: Option<odmrd::hold_cli::Command>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => options.config = Some(args.next().ok_or("-c needs a file")?.into()),
            "--inetd" => options.inetd = true,
            "--listen" => {
                let value = args.next().ok_or("--listen needs ADDR:PORT")?;
                options.listen = Some(value.parse().map_err(|e| format!("--listen {value}: {e}"))?);
            }
            "--check-config" => options.check_config = true,
            "--tls" => options.tls = true,
            "--demo" => options.demo = true,
            "--cram-md5" => options.cram_md5 = true,
            "--queue" | "--expire" | "--json" | "--dry-run" | "--by-account" => {
                odmrd::hold_cli::Command::parse_flag(&mut options.hold, &arg)?
            }
            domain if options.hold.is_some() && !domain.starts_with('-') => {
                odmrd::hold_cli::Command::parse_domain(&mut options.hold, domain)?
            }
            "-h" | "--help" => return Err(String::new()),
            "-V" | "--version" => {
                println!("odmrd {}", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if options.inetd && options.listen.is_some() {
        return Err("--inetd and --listen exclude each other".into());
    }
    if let Some(command) = &options.hold {
        command.check()?;
        if options.inetd || options.listen.is_some() || options.check_config || options.demo {
            return Err("--queue and --expire take only -c and their own options".into());
        }
    }
    if options.tls && !options.inetd {
        return Err("--tls goes with --inetd (standalone, use [server] listen_tls)".into());
    }
    if options.demo && (options.config.is_some() || options.inetd) {
        return Err("--demo makes its own configuration; it takes only --listen".into());
    }
    Ok(options)
}

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(why) => {
            if why.is_empty() {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            eprintln!("odmrd: {why}\n{USAGE}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if options.cram_md5 {
        return print_cram_md5_entry();
    }
    // Until the configuration says otherwise: syslog, and stderr only when it
    // is not a socket (under inetd it may be the customer's connection).
    log::init_early();
    // A panic (a bug) is logged like everything else, never printed to fd 2;
    // a session thread that panics ends that session only.
    std::panic::set_hook(Box::new(|info| log::error(&format!("event=panic {info}"))));

    let inetd = options.inetd
        || (options.listen.is_none() && !options.demo && options.hold.is_none() && server::stdin_is_socket());
    let path = if options.demo {
        match demo::prepare(options.listen) {
            Ok(path) => path,
            Err(e) => {
                log::error(&format!("demo: {e}"));
                return ExitCode::from(EX_OSERR);
            }
        }
    } else {
        options.config.clone().unwrap_or_else(|| PathBuf::from("/etc/odmrd.ini"))
    };
    let fail_start = |message: &str, code: u8, hostname: &str| {
        log::error(message);
        if inetd {
            server::refuse_inetd_client(hostname);
        }
        ExitCode::from(code)
    };

    let mut config = match Config::load(&path) {
        Ok(config) => config,
        Err(e) => {
            return fail_start(
                &format!("configuration error: {e}"),
                EX_CONFIG,
                &nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default(),
            )
        }
    };
    if options.inetd {
        config.server.listen = None;
    }
    if let Some(listen) = options.listen {
        config.server.listen = Some(listen);
    }
    if let Err(e) = log::init(&config.log) {
        return fail_start(&format!("{}: [log]: {e}", path.display()), EX_CONFIG, &config.server.hostname);
    }
    let hostname = config.server.hostname.clone();

    let identity = match &config.tls.identity {
        None if options.tls => {
            let message = format!("{}: --tls needs [tls] certificate and key", path.display());
            return fail_start(&message, EX_CONFIG, &hostname);
        }
        None => None,
        Some(files) => match odmrd::tls::Identity::load(&files.certificate, &files.key) {
            Ok(identity) => {
                let days = identity.days_left(std::time::SystemTime::now());
                if days < odmrd::tls::EXPIRY_WARNING_DAYS {
                    let message = format!(
                        "{}:{}: [tls] certificate: {} expires in {days} days",
                        path.display(),
                        files.certificate_line,
                        files.certificate.display()
                    );
                    if options.check_config {
                        eprintln!("odmrd: warning: {message}");
                    }
                    log::warn(&message);
                }
                Some(Arc::new(identity))
            }
            Err(e) => {
                let (key, line) = if e.path == files.key {
                    ("key", files.key_line)
                } else {
                    ("certificate", files.certificate_line)
                };
                let message = format!("{}:{line}: [tls] {key}: {e}", path.display());
                return fail_start(&message, EX_CONFIG, &hostname);
            }
        },
    };
    let bind =
        |addr: Option<std::net::SocketAddr>| match (addr, options.check_config || options.hold.is_some()) {
            (Some(addr), false) => server::bind(addr, config.server.listen_backlog)
                .map(Some)
                .map_err(|e| format!("cannot listen on {addr}: {e}")),
            _ => Ok(None),
        };
    let (listener, tls_listener) = match (bind(config.server.listen), bind(config.server.listen_tls)) {
        (Ok(listener), Ok(tls_listener)) => (listener, tls_listener),
        (Err(e), _) | (_, Err(e)) => return fail_start(&e, EX_UNAVAILABLE, &hostname),
    };
    if let (Some(user), Some(_)) = (&config.server.user, &listener) {
        if let Err(e) = server::drop_privileges(user) {
            return fail_start(&format!("{}: [server] user: {e}", path.display()), EX_NOPERM, &hostname);
        }
    }
    let backends = match Backends::load(&config.credentials, &config.queue) {
        Ok(backends) => backends,
        Err(e) => return fail_start(&format!("{}: {e}", path.display()), EX_CONFIG, &hostname),
    };
    if options.check_config {
        println!("{}: configuration OK", path.display());
        return ExitCode::SUCCESS;
    }
    if let Some(command) = &options.hold {
        return ExitCode::from(command.run(&config, &backends));
    }
    let result = match listener {
        Some(listener) => {
            let config = Arc::new(config);
            odmrd::expire::spawn_periodic(Arc::clone(&config), backends.clone());
            server::run_standalone(config, backends, identity, listener, tls_listener)
        }
        None => {
            let start = if options.tls { Start::ImplicitTls } else { Start::Clear };
            server::run_inetd(&config, &backends, identity.as_deref(), start).map(drop)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error(&format!("fatal: {e}"));
            ExitCode::from(EX_OSERR)
        }
    }
}

/// `odmrd --cram-md5`: one password on stdin (the line end is not part of
/// it), its Dovecot `{CRAM-MD5}` entry on stdout.
fn print_cram_md5_entry() -> ExitCode {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        eprintln!("odmrd: reading the password: {e}");
        return ExitCode::from(EX_USAGE);
    }
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        eprintln!("odmrd: empty password on stdin");
        return ExitCode::from(EX_USAGE);
    }
    println!("{}", odmrd::sasl::cram_md5_entry(password.as_bytes()));
    ExitCode::SUCCESS
}
