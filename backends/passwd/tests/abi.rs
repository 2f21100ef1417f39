//! `passwd_plugin_init` driven through the raw C tables, as odmrd's registry
//! does: proves the export works end to end, including the host's log up-call.
//! (The `unsafe` here is the test acting as the C host; the crate has none.)

use odmr_api::ffi::*;
use odmr_api::testing::{describe, list_domains, TestHost};
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
    let inst = host.instance(&[("file", file.to_str().unwrap())]).unwrap();
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

    assert_eq!(lookup("customer"), (ODMR_OK, ODMR_SECRET_PLAIN, b"secret".to_vec()));
    let (rc, kind, context) = lookup("cram");
    assert_eq!((rc, kind, context.len()), (ODMR_OK, ODMR_SECRET_CRAM_MD5_CONTEXT, 32));
    let hex: String = context.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, CTX_HEX);
    assert_eq!(lookup("nobody").0, ODMR_NOT_FOUND);

    host.clear_logs();
    assert_eq!(lookup("sha").0, ODMR_UNSUPPORTED);
    let logged = host.logs();
    assert!(
        logged.iter().any(|(level, m)| *level == ODMR_LOG_WARN && m.contains("user 'sha'")),
        "{logged:?}"
    );

    // SAFETY: our live instance of this plugin.
    let (rc, got) = unsafe { list_domains(ops, inst, "customer") };
    assert_eq!((rc, got), (ODMR_OK, vec!["example.org".to_string(), "example.com".to_string()]));

    // The kit's default: this store reveals secrets, it does not verify.
    let s = |t: &'static str| OdmrStr::from_bytes(t.as_bytes());
    // SAFETY: our instance, strings valid for the call.
    let rc = unsafe { (ops.verify_cram_md5.unwrap())(inst, s("cram"), s("<1.2@h>"), s(CTX_HEX)) };
    assert_eq!(rc, ODMR_UNSUPPORTED);

    // SAFETY: created by instance_new above, freed once.
    unsafe { (d.instance_free.unwrap())(inst) };
}
