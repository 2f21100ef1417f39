//! The three database drivers behind one small interface: connect with
//! timeouts, describe a query's columns, run it with text parameters, and
//! take a per-domain lock that lives as long as the connection.
//!
//! Each driver is a cargo feature (`postgresql`, `mysql`, `sqlite`); a driver
//! that was not built in is a configuration error that says which feature
//! is missing. Values come back as text whatever the column type (integers
//! and booleans are printed), `NULL` as `None`.
//!
//! This module owns the client crates; it knows nothing about passwords,
//! pools or logging.

use crate::query::{Query, Style};
use std::time::Duration;

/// Which database `driver =` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    Postgresql,
    Mysql,
    Sqlite,
}

impl Driver {
    /// Parse `driver =`; a driver not built in is an error naming its feature.
    pub fn parse(name: &str) -> Result<Driver, String> {
        let driver = match name {
            "postgresql" | "pgsql" => Driver::Postgresql,
            "mysql" | "mariadb" => Driver::Mysql,
            "sqlite" => Driver::Sqlite,
            _ => {
                return Err(format!(
                    "key 'driver': unknown driver '{name}' (known: postgresql, mysql, sqlite)"
                ))
            }
        };
        if !driver.built_in() {
            return Err(format!(
                "key 'driver': this build has no {name} driver (build odmr-backend-sql-so, libodmr_backend_sql.so, with the cargo feature '{}')",
                driver.feature()
            ));
        }
        Ok(driver)
    }

    fn feature(self) -> &'static str {
        match self {
            Driver::Postgresql => "postgresql",
            Driver::Mysql => "mysql",
            Driver::Sqlite => "sqlite",
        }
    }

    fn built_in(self) -> bool {
        match self {
            Driver::Postgresql => cfg!(feature = "postgresql"),
            Driver::Mysql => cfg!(feature = "mysql"),
            Driver::Sqlite => cfg!(feature = "sqlite"),
        }
    }

    /// How its queries write parameters.
    pub fn style(self) -> Style {
        match self {
            Driver::Postgresql => Style::Dollar,
            Driver::Mysql | Driver::Sqlite => Style::Question,
        }
    }

    /// Whether it can hold a lock for a front end on another host.
    pub fn has_session_locks(self) -> bool {
        self != Driver::Sqlite
    }

    /// Open one connection.
    pub fn connect(self, target: &Target) -> Result<Box<dyn Connection>, String> {
        match self {
            #[cfg(feature = "postgresql")]
            Driver::Postgresql => pg::connect(target),
            #[cfg(feature = "mysql")]
            Driver::Mysql => my::connect(target),
            #[cfg(feature = "sqlite")]
            Driver::Sqlite => lite::connect(target),
            #[allow(unreachable_patterns)]
            _ => {
                let _ = target;
                Err(format!("no {} driver in this build", self.feature()))
            }
        }
    }
}

/// Where and how patiently to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// `connect =`: a libpq-style string, a MySQL URL, or an SQLite file.
    pub connect: String,
    /// Limit for establishing a connection.
    pub connect_timeout: Duration,
    /// Limit for one query (server-side where the database has it, and on
    /// the socket).
    pub query_timeout: Duration,
}

/// A column of a query's result: its name and whether it is text-like
/// (`None` when the driver cannot tell before a row arrives, as SQLite).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub text: Option<bool>,
}

/// One row, one value per column, as text.
pub type Row = Vec<Option<String>>;

/// One open database connection.
pub trait Connection: Send {
    /// The result columns of `query` (prepares it: syntax and names are
    /// checked by the server).
    fn columns(&mut self, query: &Query) -> Result<Vec<Column>, String>;
    /// Run `query` with `params` bound in order: its columns, and the
    /// rows' values as text.
    fn rows(&mut self, query: &Query, params: &[String]) -> Result<(Vec<Column>, Vec<Row>), String>;
    /// Try to take the named lock for as long as this connection lives,
    /// without waiting: `Ok(false)` when another connection holds it.
    fn try_lock(&mut self, name: &str) -> Result<bool, String>;
}

/// A stable 64-bit hash of a lock name (FNV-1a), the same on every host, for
/// databases whose locks take a number.
pub fn lock_number(name: &str) -> i64 {
    let hash =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    hash as i64
}

#[cfg(feature = "postgresql")]
mod pg {
    use super::*;
    use postgres::types::{ToSql, Type};
    use postgres::{Client, Config, NoTls};

    struct Pg(Client);

    pub fn connect(target: &Target) -> Result<Box<dyn Connection>, String> {
        let mut config: Config = target.connect.parse().map_err(|e| format!("key 'connect': {e}"))?;
        config.connect_timeout(target.connect_timeout);
        // A server that stops answering mid-query must not hold a session
        // forever: bound unacknowledged writes and probe idle sockets.
        config.tcp_user_timeout(target.query_timeout);
        config.keepalives(true).keepalives_idle(target.query_timeout);
        config.application_name("odmrd");
        let mut client = config.connect(NoTls).map_err(|e| e.to_string())?;
        let ms = target.query_timeout.as_millis();
        client.batch_execute(&format!("SET statement_timeout = {ms}")).map_err(|e| e.to_string())?;
        Ok(Box::new(Pg(client)))
    }

    fn is_text(ty: &Type) -> bool {
        [Type::TEXT, Type::VARCHAR, Type::BPCHAR, Type::NAME, Type::UNKNOWN].contains(ty)
    }

    fn columns(statement: &postgres::Statement) -> Vec<Column> {
        statement
            .columns()
            .iter()
            .map(|c| Column { name: c.name().to_owned(), text: Some(is_text(c.type_())) })
            .collect()
    }

    impl Pg {
        /// Parameters typed as TEXT, so a comparison with any text column works.
        fn prepare(&mut self, query: &Query) -> Result<postgres::Statement, String> {
            let types = vec![Type::TEXT; query.parts.len()];
            self.0.prepare_typed(&query.sql, &types).map_err(|e| error_text(&e))
        }
    }

    impl Connection for Pg {
        fn columns(&mut self, query: &Query) -> Result<Vec<Column>, String> {
            Ok(columns(&self.prepare(query)?))
        }

        fn rows(&mut self, query: &Query, params: &[String]) -> Result<(Vec<Column>, Vec<Row>), String> {
            let statement = self.prepare(query)?;
            let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
            let rows = self.0.query(&statement, &refs).map_err(|e| error_text(&e))?;
            let rows: Result<Vec<Row>, String> =
                rows.iter().map(|row| (0..row.len()).map(|i| value(row, i)).collect()).collect();
            Ok((columns(&statement), rows?))
        }

        fn try_lock(&mut self, name: &str) -> Result<bool, String> {
            let row = self
                .0
                .query_one("SELECT pg_try_advisory_lock($1)", &[&lock_number(name)])
                .map_err(|e| error_text(&e))?;
            row.try_get::<_, bool>(0).map_err(|e| e.to_string())
        }
    }

    /// The server's message (with its SQLSTATE), not just "db error".
    fn error_text(e: &postgres::Error) -> String {
        match e.as_db_error() {
            Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
            None => e.to_string(),
        }
    }

    fn value(row: &postgres::Row, i: usize) -> Result<Option<String>, String> {
        let ty = row.columns()[i].type_().clone();
        let name = row.columns()[i].name().to_owned();
        let text = match ty {
            Type::BOOL => {
                row.try_get::<_, Option<bool>>(i).map(|v| v.map(|b| if b { "1" } else { "0" }.into()))
            }
            Type::INT2 => row.try_get::<_, Option<i16>>(i).map(|v| v.map(|n| n.to_string())),
            Type::INT4 => row.try_get::<_, Option<i32>>(i).map(|v| v.map(|n| n.to_string())),
            Type::INT8 => row.try_get::<_, Option<i64>>(i).map(|v| v.map(|n| n.to_string())),
            _ => row.try_get::<_, Option<String>>(i),
        };
        text.map_err(|_| format!("column '{name}' has type {ty}, which is not text, a number or a boolean"))
    }
}

#[cfg(feature = "mysql")]
mod my {
    use super::*;
    use mysql::consts::ColumnType;
    use mysql::prelude::Queryable;
    use mysql::{Conn, Opts, OptsBuilder, Params, Value};

    struct My(Conn);

    pub fn connect(target: &Target) -> Result<Box<dyn Connection>, String> {
        let opts = Opts::from_url(&target.connect).map_err(|e| format!("key 'connect': {e}"))?;
        let opts = OptsBuilder::from_opts(opts)
            .tcp_connect_timeout(Some(target.connect_timeout))
            .read_timeout(Some(target.query_timeout))
            .write_timeout(Some(target.query_timeout));
        let conn = Conn::new(opts).map_err(|e| e.to_string())?;
        Ok(Box::new(My(conn)))
    }

    fn is_text(ty: ColumnType) -> bool {
        use ColumnType::*;
        matches!(
            ty,
            MYSQL_TYPE_VARCHAR
                | MYSQL_TYPE_VAR_STRING
                | MYSQL_TYPE_STRING
                | MYSQL_TYPE_BLOB
                | MYSQL_TYPE_TINY_BLOB
                | MYSQL_TYPE_MEDIUM_BLOB
                | MYSQL_TYPE_LONG_BLOB
        )
    }

    fn columns(statement: &mysql::Statement) -> Vec<Column> {
        let column = |c: &mysql::Column| Column {
            name: c.name_str().into_owned(),
            text: Some(is_text(c.column_type())),
        };
        statement.columns().iter().map(column).collect()
    }

    impl Connection for My {
        fn columns(&mut self, query: &Query) -> Result<Vec<Column>, String> {
            let statement = self.0.prep(&query.sql).map_err(|e| e.to_string())?;
            Ok(columns(&statement))
        }

        fn rows(&mut self, query: &Query, params: &[String]) -> Result<(Vec<Column>, Vec<Row>), String> {
            // Prepared statements are cached per connection by the client.
            let statement = self.0.prep(&query.sql).map_err(|e| e.to_string())?;
            let params = Params::Positional(params.iter().map(|p| Value::from(p.as_str())).collect());
            let rows: Vec<mysql::Row> = self.0.exec(&statement, params).map_err(|e| e.to_string())?;
            let rows = rows.into_iter().map(|row| row.unwrap().into_iter().map(text).collect()).collect();
            Ok((columns(&statement), rows))
        }

        fn try_lock(&mut self, name: &str) -> Result<bool, String> {
            // MariaDB and MySQL limit lock names to 64 characters.
            let name =
                if name.len() <= 64 { name.to_owned() } else { format!("odmrd#{:016x}", lock_number(name)) };
            let got: Option<Option<i64>> =
                self.0.exec_first("SELECT GET_LOCK(?, 0)", (name,)).map_err(|e| e.to_string())?;
            match got.flatten() {
                Some(1) => Ok(true),
                Some(_) => Ok(false),
                None => Err("GET_LOCK returned NULL (an error on the server)".into()),
            }
        }
    }

    fn text(value: Value) -> Option<String> {
        match value {
            Value::NULL => None,
            Value::Bytes(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Value::Int(n) => Some(n.to_string()),
            Value::UInt(n) => Some(n.to_string()),
            Value::Float(n) => Some(n.to_string()),
            Value::Double(n) => Some(n.to_string()),
            other => Some(other.as_sql(true)),
        }
    }
}

#[cfg(feature = "sqlite")]
mod lite {
    use super::*;
    use rusqlite::types::ValueRef;
    use rusqlite::{params_from_iter, OpenFlags};

    struct Lite(rusqlite::Connection);

    pub fn connect(target: &Target) -> Result<Box<dyn Connection>, String> {
        // Read-only: odmrd never writes credentials, and a missing file is
        // an error rather than a new empty database.
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = rusqlite::Connection::open_with_flags(&target.connect, flags)
            .map_err(|e| format!("{}: {e}", target.connect))?;
        // A writer holding the file locked makes a query wait this long at most.
        conn.busy_timeout(target.query_timeout).map_err(|e| e.to_string())?;
        Ok(Box::new(Lite(conn)))
    }

    impl Connection for Lite {
        fn columns(&mut self, query: &Query) -> Result<Vec<Column>, String> {
            let statement = self.0.prepare(&query.sql).map_err(|e| e.to_string())?;
            Ok(statement
                .column_names()
                .into_iter()
                .map(|name| Column { name: name.to_owned(), text: None })
                .collect())
        }

        fn rows(&mut self, query: &Query, params: &[String]) -> Result<(Vec<Column>, Vec<Row>), String> {
            let mut statement = self.0.prepare_cached(&query.sql).map_err(|e| e.to_string())?;
            let width = statement.column_count();
            let columns = statement
                .column_names()
                .into_iter()
                .map(|name| Column { name: name.to_owned(), text: None })
                .collect();
            let rows = statement
                .query_map(params_from_iter(params.iter()), |row| {
                    (0..width).map(|i| row.get_ref(i).map(text)).collect::<Result<Row, _>>()
                })
                .map_err(|e| e.to_string())?;
            Ok((columns, rows.collect::<Result<Vec<Row>, _>>().map_err(|e| e.to_string())?))
        }

        fn try_lock(&mut self, _name: &str) -> Result<bool, String> {
            Err("SQLite has no locks that outlive one host's processes; use lock = flock".into())
        }
    }

    fn text(value: ValueRef<'_>) -> Option<String> {
        match value {
            ValueRef::Null => None,
            ValueRef::Integer(n) => Some(n.to_string()),
            ValueRef::Real(n) => Some(n.to_string()),
            ValueRef::Text(bytes) | ValueRef::Blob(bytes) => {
                Some(String::from_utf8_lossy(bytes).into_owned())
            }
        }
    }
}
