//! Per-domain collection locks held in the database, for several odmrd
//! front ends on several hosts (`[server] lock = database`).
//!
//! Each collection opens its own connection (not a pooled one) and takes one
//! lock per domain without waiting: PostgreSQL's `pg_try_advisory_lock` on a
//! 64-bit hash of `odmrd:<domain>`, MariaDB/MySQL's `GET_LOCK('odmrd:<domain>', 0)`.
//! Both belong to the connection, so they are released when the session
//! drops [`Held`] and, just as surely, when the front end dies and the
//! database sees its connection close. SQLite has no such lock (its users
//! have one host and the default `flock` locks).
//!
//! The connection keys are those of the `[credentials]` section
//! (`driver`, `connect`, `connect_timeout`, `query_timeout`); the other keys
//! of that section are the credential backend's and are not read here.
//! odmrd reaches this module through the private entry of
//! `libodmr_backend_sql.so` (`odmr_sql_locks_*`, in `backends/sql/so`).
//! This module owns taking and holding the locks; what a busy domain means
//! (450) or an unreachable database (451) is the host's decision.

use crate::driver::{Connection, Driver, Target};
use odmr_api::settings::Settings;

/// Where the locks live.
pub struct DatabaseLocks {
    driver: Driver,
    target: Target,
}

/// Why the locks could not be taken.
#[derive(Debug)]
pub enum LockFailure {
    /// Another session (perhaps on another host) collects this domain.
    Busy(String),
    /// The database could not be reached or refused the lock call.
    Unavailable(String),
}

/// Locks held for one session; dropping closes the connection, which
/// releases them all.
pub struct Held {
    _connection: Box<dyn Connection>,
}

impl std::fmt::Debug for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Held")
    }
}

impl DatabaseLocks {
    /// From the `[credentials]` pairs of a `builtin:sql` backend. Errors name
    /// the key; a driver without session locks (SQLite) is an error.
    pub fn from_credentials(pairs: &[(String, String)]) -> Result<DatabaseLocks, String> {
        let mut settings = Settings::new(pairs)?;
        let (driver, target) = crate::connection(&mut settings)?;
        let driver = driver.ok_or("missing required key 'driver'")?;
        if !driver.has_session_locks() {
            return Err(
                "lock = database needs driver postgresql or mysql (SQLite locks are local to one host; \
                        use lock = flock)"
                    .into(),
            );
        }
        Ok(DatabaseLocks { driver, target })
    }

    /// Lock every domain of `domains` without waiting, or none of them.
    pub fn acquire(&self, domains: &[String]) -> Result<Held, LockFailure> {
        let mut connection = self.driver.connect(&self.target).map_err(LockFailure::Unavailable)?;
        for domain in domains {
            match connection.try_lock(&format!("odmrd:{domain}")) {
                Ok(true) => {}
                // Dropping the connection releases the ones already taken.
                Ok(false) => return Err(LockFailure::Busy(domain.clone())),
                Err(e) => return Err(LockFailure::Unavailable(e)),
            }
        }
        Ok(Held { _connection: connection })
    }
}
