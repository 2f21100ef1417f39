//! `vpopmail_plugin_init` driven through the raw C tables, as odmrd's registry
//! does: proves the export works end to end, including the host's log up-call.
//! (The `unsafe` here is the test acting as the C host; the crate has none.)

use odmr_api::ffi::*;
use odmr_api::testing::{describe, list_domains, TestHost};
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
    let inst = host
        .instance(&[
            ("qmail_users", users.to_str().unwrap()),
            ("vpopmail_home", tmp.path().to_str().unwrap()),
        ])
        .unwrap();
    // SAFETY: non-null per the descriptor check above.
    let ops = unsafe { &*d.credentials };
    let lookup = |user: &str| {
        let (mut kind, mut len, mut buf) = (0u32, 0usize, [0u8; 64]);
        let user = OdmrStr::from_bytes(user.as_bytes());
        // SAFETY: our instance, buffers valid for the call.
        let rc = unsafe {
            (ops.lookup_secret.unwrap())(inst, user, &mut kind, buf.as_mut_ptr(), buf.len(), &mut len)
        };
        (rc, kind, buf[..len.min(buf.len())].to_vec())
    };

    assert_eq!(lookup("customer1@example.com"), (ODMR_OK, ODMR_SECRET_PLAIN, b"S3cret-odmr".to_vec()));
    assert_eq!(lookup("customer1%alias.example"), (ODMR_OK, ODMR_SECRET_PLAIN, b"S3cret-odmr".to_vec()));
    assert_eq!(lookup("nobody@example.com").0, ODMR_NOT_FOUND);
    assert_eq!(lookup("customer1@unknown.example").0, ODMR_NOT_FOUND);
    assert_eq!(lookup("nosmtp@example.com").0, ODMR_DENIED);

    host.clear_logs();
    assert_eq!(lookup("noclear@example.com").0, ODMR_UNSUPPORTED);
    let logged = host.logs();
    assert!(
        logged.iter().any(|(level, m)| *level == ODMR_LOG_WARN
            && m.contains("account noclear@example.com has no clear-text password")),
        "{logged:?}"
    );

    // SAFETY: our live instance of this plugin.
    let (rc, got) = unsafe { list_domains(ops, inst, "Customer1@Example.com") };
    assert_eq!((rc, got), (ODMR_OK, vec!["example.com".to_string(), "alias.example".to_string()]));

    // The store reveals secrets; it does not verify digests itself.
    let s = |t: &'static str| OdmrStr::from_bytes(t.as_bytes());
    // SAFETY: our instance, strings valid for the call.
    let rc = unsafe { (ops.verify_cram_md5.unwrap())(inst, s("noclear@example.com"), s("<1.2@h>"), s("00")) };
    assert_eq!(rc, ODMR_UNSUPPORTED);

    let all = host.logs();
    assert!(all.iter().all(|(_, m)| !m.contains("S3cret") && !m.contains("$1$")), "{all:?}");

    // SAFETY: created by instance_new above, freed once.
    unsafe { (d.instance_free.unwrap())(inst) };
}
