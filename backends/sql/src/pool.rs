//! A small pool of connections per process, and the outage bookkeeping.
//!
//! Up to `pool_size` idle connections are kept for reuse; a connection that
//! fails is dropped, never returned. A call that fails on a reused
//! connection is tried once more on a fresh one, so the first lookup after a
//! database restart succeeds instead of answering 451. While the database
//! stays unreachable every call fails fast with the connect timeout, and one
//! error line is logged when the outage starts and one info line when it
//! ends, not one per session (per process: under inetd every session is its
//! own process, so there it is one line per session that meets the outage).
//!
//! This module owns connection reuse and those log lines; it knows nothing
//! about what the queries mean.

use crate::driver::{Connection, Driver, Target};
use odmr_api::{Host, LogLevel};
use std::sync::{Mutex, PoisonError};

/// Connections to one database.
pub struct Pool {
    driver: Driver,
    target: Target,
    size: usize,
    idle: Mutex<Vec<Box<dyn Connection>>>,
    /// Whether the last attempt failed (an outage is under way).
    down: Mutex<bool>,
    log: Host,
}

impl Pool {
    pub fn new(driver: Driver, target: Target, size: usize, log: Host) -> Pool {
        Pool { driver, target, size, idle: Mutex::new(Vec::new()), down: Mutex::new(false), log }
    }

    pub fn driver(&self) -> Driver {
        self.driver
    }

    /// A new connection that is not part of the pool (for a lock that must
    /// live exactly as long as its session).
    pub fn dedicated(&self) -> Result<Box<dyn Connection>, String> {
        self.driver.connect(&self.target).inspect_err(|e| self.went_down(e)).inspect(|_| self.came_back())
    }

    /// Run `work` on a pooled connection; `what` names the work in the
    /// outage log line. Errors are already logged (once per outage).
    pub fn with<T>(
        &self,
        what: &str,
        mut work: impl FnMut(&mut dyn Connection) -> Result<T, String>,
    ) -> Result<T, String> {
        let reused = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        if let Some(mut conn) = reused {
            if let Ok(value) = work(conn.as_mut()) {
                self.give_back(conn);
                self.came_back();
                return Ok(value);
            }
            // Perhaps only this connection died (a database restart): retry
            // once on a fresh one before calling it an outage.
        }
        let result = self.driver.connect(&self.target).and_then(|mut conn| {
            let value = work(conn.as_mut())?;
            self.give_back(conn);
            Ok(value)
        });
        match &result {
            Ok(_) => self.came_back(),
            Err(e) => self.went_down(&format!("{what}: {e}")),
        }
        result
    }

    /// Keep `conn` for reuse (if the pool has room).
    pub fn give_back(&self, conn: Box<dyn Connection>) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.size {
            idle.push(conn);
        }
    }

    fn went_down(&self, why: &str) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if !*down {
            *down = true;
            self.log.log(
                LogLevel::Error,
                &format!("sql: database unavailable ({why}); AUTH and ATRN answer 451 until it is back"),
            );
        }
    }

    fn came_back(&self) {
        let mut down = self.down.lock().unwrap_or_else(PoisonError::into_inner);
        if *down {
            *down = false;
            self.log.log(LogLevel::Info, "sql: database reachable again");
        }
    }
}
