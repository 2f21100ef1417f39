//! `passwd_plugin_init` driven through its C tables by odmrd's own host code
//! (`odmr_api::host`): proves the export works end to end, including the
//! host's log up-call.

use odmr_api::ffi::*;
use odmr_api::testing::{describe, TestHost};
use odmr_api::{Secret, Status};
use odmr_backend_passwd::passwd_plugin_init;

const CTX_HEX: &str = "42d5ce522a349cfb0efdd84a3c80b7ecf4fe938d4df1d7b9813b26e76095b1e1";

#[test]
fn the_exported_plugin_serves_credentials_through_the_c_tables() {
    let mut host = TestHost::new();
    let d = host.load(passwd_plugin_init);
    assert_eq!(describe(d), ("passwd".to_string(), true, false, true));

    let (rc, err) = host.try_instance(&[("colour", "blue")]).unwrap_err();
    assert_eq!(rc, ODMR_INVALID_ARGUMENT);
    assert!(err.contains("unknown key 'colour'"), "{err}");
    let (_, err) = host.try_instance(&[] as &[(&str, &str)]).unwrap_err();
    assert!(err.contains("missing required key 'file'"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(
        &file,
        format!(
            "customer:{{PLAIN}}secret::::::odmr_domains=example.org,Example.COM\n\
             cram:{{CRAM-MD5}}{CTX_HEX}\n\
             sha:{{SHA512-CRYPT}}$6$salt$hash\n"
        ),
    )
    .unwrap();
    let store = host.credentials(&[("file", file.to_str().unwrap())]).unwrap();
    assert_eq!(store.lookup_secret("customer"), Ok(Secret::Plain(b"secret".to_vec())));
    let Ok(Secret::CramMd5Context(context)) = store.lookup_secret("cram") else {
        panic!("a CRAM-MD5 context")
    };
    let hex: String = context.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, CTX_HEX);
    assert_eq!(store.lookup_secret("nobody"), Err(Status::NotFound));

    host.clear_logs();
    assert_eq!(store.lookup_secret("sha"), Err(Status::Unsupported));
    let logged = host.logs();
    assert!(
        logged.iter().any(|(level, m)| *level == ODMR_LOG_WARN && m.contains("user 'sha'")),
        "{logged:?}"
    );

    assert_eq!(store.domains("customer").unwrap(), ["example.org", "example.com"]);
    // The kit's default: this store reveals secrets, it does not verify CRAM-MD5 itself.
    assert_eq!(store.verify_cram_md5("cram", "<1.2@h>", CTX_HEX), Err(Status::Unsupported));
    // ABI 1.1: clear passwords (PLAIN under TLS) through the C table.
    assert_eq!(store.verify_password("customer", b"secret"), Ok(true));
    assert_eq!(store.verify_password("customer", b"Secret"), Ok(false));
}
