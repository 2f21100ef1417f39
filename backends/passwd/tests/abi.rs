//! `passwd_plugin_init` driven through the raw C tables, as odmrd's registry
//! does: proves the export works end to end, including the host's log up-call.
//! (The `unsafe` here is the test acting as the C host; the crate has none.)

use odmr_api::ffi::*;
use odmr_backend_passwd::passwd_plugin_init;
use std::ffi::c_void;
use std::ptr;
use std::sync::Mutex;

const CTX_HEX: &str = "42d5ce522a349cfb0efdd84a3c80b7ecf4fe938d4df1d7b9813b26e76095b1e1";

static LOG: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn log(_ctx: *mut c_void, level: i32, msg: *const u8, len: usize) {
    // SAFETY: the plugin passes a message valid for the call.
    let msg = unsafe { std::slice::from_raw_parts(msg, len) };
    LOG.lock().unwrap().push((level, String::from_utf8_lossy(msg).into_owned()));
}

unsafe extern "C" fn collect(ctx: *mut c_void, domain: OdmrStr) {
    // SAFETY: `ctx` is the Vec passed to list_domains; `domain` is borrowed for the call.
    let (got, domain) = unsafe { (&mut *ctx.cast::<Vec<String>>(), domain.as_str().unwrap()) };
    got.push(domain.to_owned());
}

/// The host lives as long as the process, as odmrd's does.
fn host() -> &'static odmr_host {
    Box::leak(Box::new(odmr_host {
        struct_size: std::mem::size_of::<odmr_host>() as u32,
        abi_major: ODMR_ABI_MAJOR,
        abi_minor: ODMR_ABI_MINOR,
        ctx: ptr::null_mut(),
        log: Some(log),
    }))
}

fn descriptor() -> &'static odmr_plugin {
    let mut out: *const odmr_plugin = ptr::null();
    // SAFETY: valid host and out pointer.
    assert_eq!(unsafe { passwd_plugin_init(host(), &mut out) }, ODMR_OK);
    // SAFETY: the plugin hands out a static descriptor.
    unsafe { &*out }
}

fn new_instance(kvs: &[(&str, &str)]) -> Result<*mut odmr_instance, (odmr_status, String)> {
    let kvs: Vec<OdmrKv> = kvs
        .iter()
        .map(|(k, v)| OdmrKv {
            key: OdmrStr::from_bytes(k.as_bytes()),
            value: OdmrStr::from_bytes(v.as_bytes()),
        })
        .collect();
    let mut inst = ptr::null_mut();
    let (mut err, mut err_len) = ([0u8; 256], 0usize);
    let new = descriptor().instance_new.unwrap();
    // SAFETY: every pointer is valid for the call.
    let rc =
        unsafe { new(host(), kvs.as_ptr(), kvs.len(), &mut inst, err.as_mut_ptr(), err.len(), &mut err_len) };
    if rc == ODMR_OK {
        Ok(inst)
    } else {
        Err((rc, String::from_utf8_lossy(&err[..err_len.min(err.len())]).into_owned()))
    }
}

#[test]
fn the_exported_plugin_serves_credentials_through_the_c_tables() {
    let d = descriptor();
    // SAFETY: NUL-terminated static name.
    assert_eq!(unsafe { std::ffi::CStr::from_ptr(d.name) }.to_str().unwrap(), "passwd");
    assert!(!d.credentials.is_null() && d.queue.is_null());
    assert_eq!(d.flags & ODMR_F_THREADSAFE, ODMR_F_THREADSAFE);

    let (rc, err) = new_instance(&[("colour", "blue")]).unwrap_err();
    assert_eq!(rc, ODMR_INVALID_ARGUMENT);
    assert!(err.contains("unknown key 'colour'"), "{err}");
    let (_, err) = new_instance(&[]).unwrap_err();
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
    let inst = new_instance(&[("file", file.to_str().unwrap())]).unwrap();
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

    LOG.lock().unwrap().clear();
    assert_eq!(lookup("sha").0, ODMR_UNSUPPORTED);
    let logged = LOG.lock().unwrap().clone();
    assert!(
        logged.iter().any(|(level, m)| *level == ODMR_LOG_WARN && m.contains("user 'sha'")),
        "{logged:?}"
    );

    let mut got: Vec<String> = Vec::new();
    // SAFETY: our instance; `got` outlives the call.
    let rc = unsafe {
        (ops.list_domains.unwrap())(
            inst,
            OdmrStr::from_bytes(b"customer"),
            (&mut got as *mut Vec<String>).cast(),
            collect,
        )
    };
    assert_eq!((rc, got), (ODMR_OK, vec!["example.org".to_string(), "example.com".to_string()]));

    // The kit's default: this store reveals secrets, it does not verify.
    let s = |t: &'static str| OdmrStr::from_bytes(t.as_bytes());
    // SAFETY: our instance, strings valid for the call.
    let rc = unsafe { (ops.verify_cram_md5.unwrap())(inst, s("cram"), s("<1.2@h>"), s(CTX_HEX)) };
    assert_eq!(rc, ODMR_UNSUPPORTED);

    // SAFETY: created by instance_new above, freed once.
    unsafe { (d.instance_free.unwrap())(inst) };
}
