//! Private database servers for the SQL tests: a real PostgreSQL and a real
//! MariaDB (Debian's `postgresql` and `mariadb-server`, which `t/setup-deps`
//! installs), each initialised in a temporary directory and listening only
//! on a Unix socket there, run as `nobody` when the tests run as root (both
//! servers refuse root), stopped (fast shutdown) when dropped. They can be
//! stopped and started again on the same data, to play a database restart.
//!
//! [`Postgres::start`] and [`Mariadb::start`] return `None` with a loud
//! message on stderr when the server binaries are missing, so a developer
//! without them still runs the other tests; CI installs them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::wait_until;

/// The user the servers run as: `nobody` under root, else ourselves.
fn as_server_user(command: &mut Command) -> &mut Command {
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
        command.uid(nobody.uid.as_raw()).gid(nobody.gid.as_raw()).env("HOME", "/tmp");
    }
    command
}

/// A directory the server user owns, inside a fresh temporary directory.
fn server_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let top = tempfile::tempdir().unwrap();
    std::fs::set_permissions(top.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dir = top.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    if nix::unistd::geteuid().is_root() {
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        nix::unistd::chown(&dir, Some(nobody.uid), Some(nobody.gid)).unwrap();
    }
    (top, dir)
}

fn missing(what: &str, package: &str) {
    eprintln!(
        "\n*** SKIPPED: {what} is not installed (Debian package {package}); run t/setup-deps to run \
         the SQL tests against it ***\n"
    );
}

fn run(command: &mut Command, what: &str) {
    let out = command.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Stop a server with `signal` and wait for it.
fn stop(child: &mut Option<Child>, signal: nix::sys::signal::Signal) {
    if let Some(mut child) = child.take() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
        let _ = child.wait();
    }
}

/// A private PostgreSQL server, superuser `odmr`, trust authentication on its socket.
pub struct Postgres {
    _top: tempfile::TempDir,
    dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

impl Postgres {
    pub fn start() -> Option<Postgres> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|bin| bin.join("postgres").exists())
            .max();
        let Some(bin) = bin else {
            missing("PostgreSQL", "postgresql");
            return None;
        };
        let (top, dir) = server_dir("pg");
        run(
            as_server_user(Command::new(bin.join("initdb")).current_dir(&dir).args([
                "-D",
                "data",
                "-U",
                "odmr",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])),
            "initdb",
        );
        let mut pg = Postgres { _top: top, dir, bin, child: None };
        pg.resume();
        Some(pg)
    }

    /// `connect =` for odmrd.
    pub fn connect(&self) -> String {
        format!("host={} port=5432 user=odmr dbname=postgres connect_timeout=3", self.dir.display())
    }

    /// Start the server again (after [`Postgres::halt`]) and wait until it answers.
    pub fn resume(&mut self) {
        let log = std::fs::File::create(self.dir.join("log")).unwrap();
        let child = as_server_user(Command::new(self.bin.join("postgres")).current_dir(&self.dir).args([
            "-D",
            "data",
            "-p",
            "5432",
            "-c",
            "listen_addresses=",
            "-c",
            "fsync=off",
        ]))
        .arg("-k")
        .arg(&self.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(30), || {
            self.psql_command().arg("-c").arg("SELECT 1").output().is_ok_and(|o| o.status.success())
        });
        assert!(
            ready,
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// Fast shutdown (SIGINT): sessions are cut, the data stays.
    pub fn halt(&mut self) {
        stop(&mut self.child, nix::sys::signal::Signal::SIGINT);
    }

    fn psql_command(&self) -> Command {
        let mut command = Command::new(self.bin.join("psql"));
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-U", "odmr", "-p", "5432", "-h"])
            .arg(&self.dir);
        command
    }

    /// Run SQL statements.
    pub fn sql(&self, statements: &str) {
        run(self.psql_command().arg("-c").arg(statements), "psql");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A private MariaDB server, user `root` without a password on its socket,
/// database `odmr`.
pub struct Mariadb {
    _top: tempfile::TempDir,
    dir: PathBuf,
    child: Option<Child>,
}

const MARIADBD: &str = "/usr/sbin/mariadbd";

impl Mariadb {
    pub fn start() -> Option<Mariadb> {
        if !Path::new(MARIADBD).exists() || !Path::new("/usr/bin/mariadb-install-db").exists() {
            missing("MariaDB", "mariadb-server");
            return None;
        }
        let (top, dir) = server_dir("my");
        run(
            as_server_user(
                Command::new("/usr/bin/mariadb-install-db")
                    // Its own temporary files: two servers set up at once
                    // would collide in /tmp.
                    .env("TMPDIR", &dir)
                    .args(["--no-defaults", "--auth-root-authentication-method=normal", "--skip-test-db"])
                    .arg(format!("--datadir={}", dir.join("data").display())),
            ),
            "mariadb-install-db",
        );
        let mut db = Mariadb { _top: top, dir, child: None };
        db.resume();
        db.sql("CREATE DATABASE odmr");
        Some(db)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// `connect =` for odmrd.
    pub fn connect(&self) -> String {
        format!("mysql://root@localhost/odmr?socket={}", self.socket().display())
    }

    /// Start the server again (after [`Mariadb::halt`]) and wait until it answers.
    pub fn resume(&mut self) {
        let child = as_server_user(Command::new(MARIADBD).current_dir(&self.dir).args([
            "--no-defaults",
            "--skip-networking",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
        ]))
        .arg(format!("--datadir={}", self.dir.join("data").display()))
        .arg(format!("--tmpdir={}", self.dir.display()))
        .arg(format!("--log-error={}", self.dir.join("err.log").display()))
        .arg(format!("--pid-file={}", self.dir.join("mariadbd.pid").display()))
        .arg(format!("--socket={}", self.socket().display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        self.child = Some(child);
        let ready = wait_until(Duration::from_secs(60), || {
            self.client().arg("-e").arg("SELECT 1").output().is_ok_and(|o| o.status.success())
        });
        assert!(
            ready,
            "MariaDB did not start: {}",
            std::fs::read_to_string(self.dir.join("err.log")).unwrap_or_default()
        );
    }

    /// Shutdown (SIGTERM): sessions are cut, the data stays.
    pub fn halt(&mut self) {
        stop(&mut self.child, nix::sys::signal::Signal::SIGTERM);
    }

    fn client(&self) -> Command {
        let mut command = Command::new("/usr/bin/mariadb");
        command
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket().display()))
            .args(["-u", "root"]);
        command
    }

    /// Run SQL statements in database `odmr` (or none, before it exists).
    pub fn sql(&self, statements: &str) {
        let mut command = self.client();
        if self.child.is_some() && !statements.starts_with("CREATE DATABASE") {
            command.arg("odmr");
        }
        run(command.arg("-e").arg(statements), "mariadb");
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.halt();
    }
}
