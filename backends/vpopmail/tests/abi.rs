//! `vpopmail_plugin_init` driven through its C tables by odmrd's own host
//! code (`odmr_api::host`): proves the export works end to end, including
//! the host's log up-call.

use odmr_api::ffi::*;
use odmr_api::testing::{describe, TestHost};
use odmr_api::{Secret, Status};
use odmr_backend_vpopmail::vpopmail_plugin_init;

mod cdb_tool;
use cdb_tool::tinycdb;

#[test]
fn the_exported_plugin_serves_credentials_through_the_c_tables() {
    let mut host = TestHost::new();
    let d = host.load(vpopmail_plugin_init);
    assert_eq!(describe(d), ("vpopmail".to_string(), true, false, true));

    let (rc, err) = host.try_instance(&[("colour", "blue")]).unwrap_err();
    assert_eq!(rc, ODMR_INVALID_ARGUMENT);
    assert!(err.contains("unknown key 'colour'"), "{err}");

    // users/cdb with a real and an alias domain; vpasswd.cdb for the domain.
    let tmp = tempfile::tempdir().unwrap();
    let users = tmp.path().join("users");
    let domain = tmp.path().join("domains/example.com");
    std::fs::create_dir_all(&users).unwrap();
    std::fs::create_dir_all(&domain).unwrap();
    let value = format!("example.com\x0089\x0089\x00{}\x00-\x00", domain.display());
    tinycdb::<&[u8], &[u8]>(
        &users.join("cdb"),
        &[(b"!example.com-", value.as_bytes()), (b"!alias.example-", value.as_bytes()), (b"", b"-")],
    );
    tinycdb::<&[u8], &[u8]>(
        &domain.join("vpasswd.cdb"),
        &[
            (b"customer1", b"$1$salt$hash:1:0:Customer One:/x/customer1:NOQUOTA:S3cret-odmr"),
            (b"noclear", b"$1$salt$hash:1:0:No clear:/x/noclear:NOQUOTA"),
            (b"nosmtp", b"$1$salt$hash:1:2048:No SMTP:/x/nosmtp:NOQUOTA:pw-nosmtp"),
        ],
    );
    let store = host
        .credentials(&[
            ("qmail_users", users.to_str().unwrap()),
            ("vpopmail_home", tmp.path().to_str().unwrap()),
        ])
        .unwrap();
    let plain = |p: &[u8]| Ok(Secret::Plain(p.to_vec()));
    assert_eq!(store.lookup_secret("customer1@example.com"), plain(b"S3cret-odmr"));
    assert_eq!(store.lookup_secret("customer1%alias.example"), plain(b"S3cret-odmr"));
    assert_eq!(store.lookup_secret("nobody@example.com"), Err(Status::NotFound));
    assert_eq!(store.lookup_secret("customer1@unknown.example"), Err(Status::NotFound));
    assert_eq!(store.lookup_secret("nosmtp@example.com"), Err(Status::Denied));

    host.clear_logs();
    assert_eq!(store.lookup_secret("noclear@example.com"), Err(Status::Unsupported));
    let logged = host.logs();
    assert!(
        logged.iter().any(|(level, m)| *level == ODMR_LOG_WARN
            && m.contains("account noclear@example.com has no clear-text password")),
        "{logged:?}"
    );

    assert_eq!(store.domains("Customer1@Example.com").unwrap(), ["example.com", "alias.example"]);
    // The store reveals secrets; it does not verify digests itself.
    assert_eq!(store.verify_cram_md5("noclear@example.com", "<1.2@h>", "00"), Err(Status::Unsupported));

    let all = host.logs();
    assert!(all.iter().all(|(_, m)| !m.contains("S3cret") && !m.contains("$1$")), "{all:?}");
}
