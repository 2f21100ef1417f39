//! Behaviour of the SQL backend through its `Credentials` interface on an
//! SQLite file (the servers are exercised end to end by t/sql.rs), with the
//! host's log captured.

use super::*;
use odmr_api::testing::TestHost;

/// Configuration pairs as `Instance::new` receives them.
fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The four keys of an SQLite instance on `path`.
#[cfg(feature = "sqlite")]
fn sqlite_pairs(path: &std::path::Path, password_query: &str, domains_query: &str) -> Vec<(String, String)> {
    pairs(&[
        ("driver", "sqlite"),
        ("connect", path.to_str().unwrap()),
        ("password_query", password_query),
        ("domains_query", domains_query),
    ])
}

#[test]
fn result_columns_are_checked_naming_the_key() {
    let col = |name: &str, text| Column { name: name.into(), text };
    let layout = password_layout(&[col("nologin", Some(false)), col("PASSWORD", Some(true))]).unwrap();
    assert_eq!((layout.password, layout.nologin, layout.allow_nets), (1, Some(0), None));
    let err = |columns: &[Column]| password_layout(columns).err().unwrap();
    assert!(err(&[col("pw", None)]).contains("unknown result column 'pw'"));
    assert!(err(&[col("nologin", None)]).contains("no column 'password'"));
    assert!(err(&[col("password", Some(false))]).contains("'password' is not text"));
    assert!(check_domains_columns(&[col("d", None)]).is_ok());
    assert!(check_domains_columns(&[col("d", None), col("e", None)]).unwrap_err().contains("2 columns"));
    assert!(check_domains_columns(&[col("d", Some(false))]).unwrap_err().starts_with("key 'domains_query'"));
}

#[test]
fn nologin_values() {
    for yes in ["1", "Y", "yes", "true", "t", "2"] {
        assert!(truthy(yes), "{yes}");
    }
    for no in ["", "0", "n", "No", "false", "F", " 0 "] {
        assert!(!truthy(no), "{no}");
    }
}

#[test]
fn configuration_errors_name_the_key() {
    let host = TestHost::new();
    let new = |items: &[(&str, &str)]| Sql::new(host.host(), &pairs(items)).err().unwrap();
    assert!(new(&[("driver", "oracle")]).contains("unknown driver 'oracle'"));
    assert!(new(&[("colour", "blue")]).contains("unknown key 'colour'"));
    if !cfg!(feature = "sqlite") {
        assert!(new(&[("driver", "sqlite")]).contains("cargo feature 'sqlite'"));
        return;
    }
    assert!(new(&[("driver", "sqlite"), ("connect", "/x"), ("domains_query", "SELECT 1")])
        .contains("missing required key 'password_query'"));
    assert!(new(&[
        ("driver", "sqlite"),
        ("connect", "/x"),
        ("password_query", "SELECT %x"),
        ("domains_query", "SELECT 1")
    ])
    .contains("key 'password_query': unknown placeholder"));
    assert!(new(&[("driver", "sqlite"), ("connect", "/x"), ("query_timeout", "0")]).contains("query_timeout"));
}

#[cfg(feature = "sqlite")]
mod sqlite {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        sql: Sql,
        host: TestHost,
    }

    /// A database made by `script`, queried with the two queries.
    fn fixture(script: &str, password_query: &str, domains_query: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        rusqlite::Connection::open(&path).unwrap().execute_batch(script).unwrap();
        let host = TestHost::new();
        let sql = Sql::new(host.host(), &sqlite_pairs(&path, password_query, domains_query)).unwrap();
        Fixture { _dir: dir, sql, host }
    }

    const USERS: &str = "CREATE TABLE u (login TEXT, password TEXT, allow_nets TEXT, nologin INTEGER);
        INSERT INTO u VALUES ('a@x.example', '{PLAIN}pw', NULL, 0);
        INSERT INTO u VALUES ('b@x.example', '{PLAIN}pw', '192.0.2.0/24', 0);
        INSERT INTO u VALUES ('c@x.example', '{PLAIN}pw', '', 1);
        INSERT INTO u VALUES ('d@x.example', '$6$salt$hash', NULL, 0);
        INSERT INTO u VALUES ('e@x.example', '', NULL, 0);
        INSERT INTO u VALUES ('twice', '{PLAIN}pw', NULL, 0);
        INSERT INTO u VALUES ('twice', '{PLAIN}pw', NULL, 0);
        CREATE TABLE d (login TEXT, domain TEXT);
        INSERT INTO d VALUES ('a@x.example', 'Example.ORG'), ('a@x.example', 'example.org'),
            ('a@x.example', 'bad..domain'), ('a@x.example', NULL), ('a@x.example', 'x.example');";

    fn users() -> Fixture {
        fixture(
            USERS,
            "SELECT password, allow_nets, nologin FROM u WHERE login = '%u'",
            "SELECT domain FROM d WHERE login = %u",
        )
    }

    #[test]
    fn rows_become_secrets_and_refusals() {
        let f = users();
        assert!(matches!(f.sql.lookup_secret("a@x.example"), Ok(Secret::Plain(p)) if p == b"pw"));
        assert_eq!(f.sql.lookup_secret("nobody").err(), Some(Status::NotFound));
        // allow_nets is the host's to check: the secret, and the networks.
        assert!(matches!(f.sql.lookup_secret("b@x.example"), Ok(Secret::Plain(p)) if p == b"pw"));
        assert_eq!(f.sql.allowed_networks("b@x.example"), Ok(Some(vec!["192.0.2.0/24".to_string()])));
        assert_eq!(f.sql.allowed_networks("a@x.example"), Ok(None));
        assert_eq!(f.sql.allowed_networks("nobody"), Err(Status::NotFound));
        assert_eq!(f.sql.lookup_secret("c@x.example").err(), Some(Status::Denied));
        assert_eq!(f.sql.lookup_secret("d@x.example").err(), Some(Status::Unsupported));
        assert_eq!(f.sql.lookup_secret("e@x.example").err(), Some(Status::Denied));
        assert_eq!(f.sql.lookup_secret("twice").err(), Some(Status::Denied));
        let warnings = f.host.logs_at(LogLevel::Warn).join("\n");
        assert!(warnings.contains("cannot serve CRAM-MD5"), "{warnings}");
        assert!(!warnings.contains("$6$salt"), "a log line holds the hash: {warnings}");
    }

    #[test]
    fn domains_are_validated_lowercased_and_deduplicated() {
        let f = users();
        assert_eq!(f.sql.domains("a@x.example").unwrap(), ["example.org", "x.example"]);
        assert!(f.host.logs_at(LogLevel::Warn).join("\n").contains("invalid domain 'bad..domain'"));
        assert!(f.sql.domains("nobody").unwrap().is_empty());
    }

    #[test]
    fn a_vanished_database_is_a_temporary_failure_logged_once() {
        let f = users();
        std::fs::remove_file(f._dir.path().join("db.sqlite")).unwrap();
        // A fresh instance (its pool empty) on the now missing file starts,
        // with a warning, and answers TempFail.
        let missing = fixture_at_missing_path(&f);
        for _ in 0..3 {
            assert_eq!(missing.lookup_secret("a@x.example").err(), Some(Status::TempFail));
        }
        let errors = f.host.logs_at(LogLevel::Error);
        assert_eq!(errors.iter().filter(|l| l.contains("database unavailable")).count(), 1, "{errors:?}");
    }

    /// An instance on a path where no database is (yet): starts, with a warning.
    fn fixture_at_missing_path(f: &Fixture) -> Sql {
        let path = f._dir.path().join("db.sqlite");
        let pairs = sqlite_pairs(
            &path,
            "SELECT password FROM u WHERE login = %u",
            "SELECT domain FROM d WHERE login = %u",
        );
        Sql::new(f.host.host(), &pairs).unwrap()
    }

    #[test]
    fn a_broken_query_is_a_configuration_error_when_the_database_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        rusqlite::Connection::open(&path).unwrap().execute_batch(USERS).unwrap();
        let host = TestHost::new();
        let err = |pq: &str, dq: &str| Sql::new(host.host(), &sqlite_pairs(&path, pq, dq)).err().unwrap();
        assert!(err("SELECT password FROM nowhere WHERE l = %u", "SELECT domain FROM d")
            .contains("key 'password_query'"));
        assert!(err("SELECT password FROM u", "SELECT domain, login FROM d").contains("2 columns"));
        assert!(err("SELECT login FROM u", "SELECT domain FROM d").contains("unknown result column 'login'"));
    }
}
