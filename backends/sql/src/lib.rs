//! `builtin:sql`: credentials kept in PostgreSQL, MariaDB/MySQL or SQLite,
//! read with Dovecot-style queries, and (for `[server] lock = database`) the
//! per-domain collection locks held in that database.
//!
//! This crate owns the `[credentials]` keys of the SQL backend, turning a
//! row into a secret and rows into domains ([`Sql`]), the queries'
//! placeholders ([`query`]), the drivers ([`driver`]), connection reuse and
//! outage logging ([`pool`]) and database locks ([`lock`]).
//!
//! `password_query` returns a column `password` with a Dovecot `{SCHEME}`
//! prefix, read exactly as `builtin:passwd` reads its password field
//! (`{PLAIN}`, `{CRAM-MD5}` …), and optionally `allow_nets` and `nologin`;
//! `domains_query` returns one domain per row.
//!
//! Statuses: no row → `NotFound`; an empty password, a true `nologin` or
//! several rows → `Denied`; a non-empty `allow_nets` is handed to the host
//! (`allowed_networks`), which refuses a login from elsewhere; a
//! scheme that cannot serve CRAM-MD5 (a crypt hash) → `Unsupported`; the
//! database unreachable, slow past `query_timeout` or failing the query →
//! `TempFail` (the host answers 451). No log line holds a password.
//!
//! It does not verify CRAM-MD5 responses (odmrd's `sasl` does) and never
//! writes to fds 0-2.
//!
//! odmrd does not link this crate (the drivers would cost every start of the
//! daemon): `builtin:sql` is the shared object `libodmr_backend_sql.so`
//! (`backends/sql/so`), which exports [`sql_plugin_init`] as
//! `odmr_plugin_init` and, for `[server] lock = database`, a small entry over
//! [`lock`] that is private between odmrd and the object of the same build
//! (not part of the plugin ABI; documented in that crate).
#![deny(unsafe_code)]

pub mod driver;
pub mod lock;
pub mod pool;
pub mod query;

use driver::{Column, Driver, Target};
use odmr_api::names::{is_valid_domain, split_networks};
use odmr_api::settings::Settings;
use odmr_api::{Credentials, Host, Instance, LogLevel, Secret, Status};
use odmr_backend_passwd::{parse_password, verify_clear, Password};
use pool::Pool;
use query::Query;
use std::time::Duration;

odmr_api::export_plugin!(
    #[allow(unsafe_code)]
    fn sql_plugin_init, "sql", Sql: [credentials]
);

/// The columns `password_query` may return.
const PASSWORD_COLUMNS: &[&str] = &["password", "allow_nets", "nologin"];

/// The backend instance: its queries and a pool of connections.
pub struct Sql {
    log: Host,
    pool: Pool,
    password_query: Query,
    domains_query: Query,
}

/// Where `password_query`'s columns are in a row.
struct Layout {
    password: usize,
    allow_nets: Option<usize>,
    nologin: Option<usize>,
}

/// The connection keys, shared by the credentials and the lock: which
/// driver, where, how patiently. Reads `driver`, `connect`,
/// `connect_timeout` and `query_timeout` from `settings`.
pub fn connection(settings: &mut Settings<'_>) -> Result<(Option<Driver>, Target), String> {
    let driver = settings.take_str("driver").map(Driver::parse).transpose()?;
    let connect = settings.take_str("connect").unwrap_or_default().to_owned();
    let seconds = |s: &mut Settings<'_>, key, default| -> Result<Duration, String> {
        match s.take_u64(key)?.unwrap_or(default) {
            0 => Err(format!("key '{key}' must be at least 1 (seconds)")),
            n => Ok(Duration::from_secs(n)),
        }
    };
    let connect_timeout = seconds(settings, "connect_timeout", 5)?;
    let query_timeout = seconds(settings, "query_timeout", 10)?;
    Ok((driver, Target { connect, connect_timeout, query_timeout }))
}

impl Instance for Sql {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        let mut settings = Settings::new(config)?;
        settings.forbid_control_characters()?;
        let (driver, target) = connection(&mut settings)?;
        let password_query = settings.take_str("password_query");
        let domains_query = settings.take_str("domains_query");
        let pool_size = settings.take_u64("pool_size")?.unwrap_or(4) as usize;
        settings.finish()?;
        let driver = driver.ok_or("missing required key 'driver' (postgresql, mysql or sqlite)")?;
        if target.connect.is_empty() {
            return Err("missing required key 'connect' (a connection string, URL or SQLite file)".into());
        }
        let style = driver.style();
        let parse = |key, value: Option<&str>| {
            Query::parse(key, value.ok_or_else(|| format!("missing required key '{key}'"))?, style)
        };
        let sql = Sql {
            password_query: parse("password_query", password_query)?,
            domains_query: parse("domains_query", domains_query)?,
            pool: Pool::new(driver, target, pool_size, host),
            log: host,
        };
        sql.check_queries()?;
        Ok(sql)
    }

    /// `--check-config`: the database must answer now, and both queries
    /// prepare with the right columns (`new` let an unreachable database pass).
    fn check(&self, report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        let checked = self.pool.dedicated().map_err(|e| format!("key 'connect': cannot connect: {e}"));
        if let Err(e) = checked.and_then(|mut conn| self.verify_queries(conn.as_mut())) {
            report(LogLevel::Error, &e);
        }
        Ok(())
    }
}

impl Sql {
    /// Prepare both queries once at start (and so under `--check-config`):
    /// a syntax error, a missing `password` column or a wrong column count
    /// or type is a configuration error naming the key. A database that
    /// cannot be reached now is not: lookups answer 451 until it is back.
    fn check_queries(&self) -> Result<(), String> {
        let mut conn = match self.pool.dedicated() {
            Ok(conn) => conn,
            Err(e) => {
                self.log.log(LogLevel::Warn, &format!("sql: queries not checked at start: {e}"));
                return Ok(());
            }
        };
        self.verify_queries(conn.as_mut())?;
        self.pool.give_back(conn);
        Ok(())
    }

    /// Prepare both queries on `conn` and check their columns; the error
    /// names the key.
    fn verify_queries(&self, conn: &mut dyn driver::Connection) -> Result<(), String> {
        let columns = conn.columns(&self.password_query).map_err(|e| format!("key 'password_query': {e}"))?;
        password_layout(&columns)?;
        let columns = conn.columns(&self.domains_query).map_err(|e| format!("key 'domains_query': {e}"))?;
        check_domains_columns(&columns)
    }

    /// `password_query`'s one row for `user` and where its columns are:
    /// `NotFound` for no row, `Denied` (logged) for several.
    fn password_row(&self, user: &str) -> Result<(Layout, driver::Row), Status> {
        let (columns, rows) = self.query(&self.password_query, user)?;
        let layout = password_layout(&columns).map_err(|e| {
            self.log.log(LogLevel::Error, &format!("sql: {e}"));
            Status::TempFail
        })?;
        let mut rows = rows.into_iter();
        match (rows.next(), rows.len()) {
            (None, _) => Err(Status::NotFound),
            (Some(row), 0) => Ok((layout, row)),
            (Some(_), more) => {
                let n = more + 1;
                let msg = format!("sql: password_query returned {n} rows for user '{user}'; refused");
                self.log.log(LogLevel::Warn, &msg);
                Err(Status::Denied)
            }
        }
    }

    fn query(&self, query: &Query, user: &str) -> Result<(Vec<Column>, Vec<driver::Row>), Status> {
        let params = query.bind(user);
        self.pool.with(query.key, |conn| conn.rows(query, &params)).map_err(|_| Status::TempFail)
    }
}

/// Where the columns of `password_query` are; errors name the key.
fn password_layout(columns: &[Column]) -> Result<Layout, String> {
    let find = |name: &str| columns.iter().position(|c| c.name.eq_ignore_ascii_case(name));
    if let Some(extra) =
        columns.iter().find(|c| !PASSWORD_COLUMNS.iter().any(|k| c.name.eq_ignore_ascii_case(k)))
    {
        return Err(format!(
            "key 'password_query': unknown result column '{}' (known: {}; rename with AS)",
            extra.name,
            PASSWORD_COLUMNS.join(", ")
        ));
    }
    let password = find("password").ok_or("key 'password_query': the result has no column 'password'")?;
    if columns[password].text == Some(false) {
        return Err("key 'password_query': column 'password' is not text".into());
    }
    Ok(Layout { password, allow_nets: find("allow_nets"), nologin: find("nologin") })
}

fn check_domains_columns(columns: &[Column]) -> Result<(), String> {
    match columns {
        [only] if only.text != Some(false) => Ok(()),
        [only] => Err(format!("key 'domains_query': column '{}' is not text", only.name)),
        _ => Err(format!(
            "key 'domains_query': returns {} columns, expected exactly 1 (the domain)",
            columns.len()
        )),
    }
}

/// Whether a `nologin` value means "refuse": anything but NULL, empty, 0, n, no, false, f.
fn truthy(value: &str) -> bool {
    !matches!(value.trim().to_ascii_lowercase().as_str(), "" | "0" | "n" | "no" | "false" | "f")
}

impl Sql {
    /// The user's row of `password_query`: its password field, once `nologin` has not refused
    /// it (`allow_nets` is the host's to check, through `allowed_networks`).
    fn password(&self, user: &str) -> Result<Password, Status> {
        let (layout, row) = self.password_row(user)?;
        let value = |index: Option<usize>| index.and_then(|i| row[i].as_deref()).unwrap_or("");
        if truthy(value(layout.nologin)) {
            self.log.log(LogLevel::Info, &format!("sql: user '{user}' has nologin set"));
            return Err(Status::Denied);
        }
        parse_password(value(Some(layout.password)).as_bytes()).map_err(|reason| {
            self.log.log(LogLevel::Warn, &format!("sql: user '{user}': {reason}; refused"));
            Status::Denied
        })
    }
}

impl Credentials for Sql {
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        match self.password(user)? {
            Password::Usable(secret) => Ok(secret),
            Password::Empty => {
                self.log.log(LogLevel::Info, &format!("sql: user '{user}' has an empty password"));
                Err(Status::Denied)
            }
            Password::Hashed { scheme, .. } => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "sql: user '{user}': {scheme} is a one-way hash and cannot serve CRAM-MD5; the \
                         customer can log in with PLAIN or LOGIN under TLS (or return {{PLAIN}} or \
                         {{CRAM-MD5}})"
                    ),
                );
                Err(Status::Unsupported)
            }
            Password::Unusable(scheme) => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "sql: user '{user}': password scheme {scheme} cannot serve CRAM-MD5 (a hash can only \
                         check a clear password; return {{PLAIN}} or {{CRAM-MD5}} for CRAM-MD5)"
                    ),
                );
                Err(Status::Unsupported)
            }
        }
    }

    /// A clear password (PLAIN or LOGIN under TLS) against the row's password, crypt hashes
    /// (vpopmail's `pw_passwd`, Postfix Admin's `password`) included.
    fn verify_password(&self, user: &str, password: &[u8]) -> Result<bool, Status> {
        verify_clear(&self.password(user)?, password)
    }

    /// The `allow_nets` column, for the host to check the client against; an
    /// entry that is not an address or `address/prefix` is ignored with a
    /// warning (none valid: nobody may log in as this user).
    fn allowed_networks(&self, user: &str) -> Result<Option<Vec<String>>, Status> {
        let (layout, row) = self.password_row(user)?;
        let Some(value) = layout.allow_nets.and_then(|i| row[i].as_deref()).filter(|v| !v.trim().is_empty())
        else {
            return Ok(None);
        };
        let (nets, invalid) = split_networks(value);
        for net in invalid {
            let net = net.escape_debug();
            self.log.log(LogLevel::Warn, &format!("sql: user '{user}': ignoring '{net}' in allow_nets"));
        }
        Ok(Some(nets))
    }

    fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        let (_, rows) = self.query(&self.domains_query, user)?;
        let mut domains: Vec<String> = Vec::new();
        for value in rows.into_iter().filter_map(|row| row.into_iter().next().flatten()) {
            let domain = value.trim().to_ascii_lowercase();
            if !is_valid_domain(&domain) {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "sql: domains_query gave user '{user}' an invalid domain '{}'; ignored",
                        value.escape_debug()
                    ),
                );
            } else if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        Ok(domains)
    }
}

#[cfg(test)]
mod tests;
