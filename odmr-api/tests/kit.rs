//! The Rust kit seen from the C side: a plugin built with `export_plugin!` is
//! driven through its raw function tables, as the host does.

use odmr_api::ffi::*;
use odmr_api::testing::TestHost;
use odmr_api::*;
use std::ptr;

struct Demo {
    fail_key: bool,
}

impl Instance for Demo {
    fn new(_host: Host, config: &[(String, String)]) -> Result<Self, String> {
        match config {
            [] => Ok(Demo { fail_key: false }),
            [(k, _)] if k == "panic" => Ok(Demo { fail_key: true }),
            [(k, _), ..] => Err(format!("unknown key '{k}'")),
        }
    }
}

impl Credentials for Demo {
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        if self.fail_key {
            panic!("boom");
        }
        match user {
            "alice" => Ok(Secret::Plain(b"wonderland".to_vec())),
            _ => Err(Status::NotFound),
        }
    }
    fn domains(&self, _user: &str) -> Result<Vec<String>, Status> {
        Ok(vec!["example.org".into(), "example.net".into()])
    }
}

export_plugin!(fn demo_init, "demo", Demo: [credentials]);

fn host() -> TestHost {
    let mut host = TestHost::new();
    host.load(demo_init);
    host
}

fn descriptor() -> &'static odmr_plugin {
    TestHost::new().load(demo_init)
}

fn new_instance(kvs: &[(&str, &str)]) -> Result<*mut odmr_instance, String> {
    host().instance(kvs)
}

#[test]
fn descriptor_declares_only_the_listed_capabilities() {
    let d = descriptor();
    assert_eq!(d.abi_major, ODMR_ABI_MAJOR);
    assert_eq!(d.struct_size as usize, std::mem::size_of::<odmr_plugin>());
    assert!(!d.credentials.is_null());
    assert!(d.queue.is_null());
    let name = unsafe { std::ffi::CStr::from_ptr(d.name) };
    assert_eq!(name.to_str().unwrap(), "demo");
}

#[test]
fn init_refuses_another_major() {
    let host = TestHost::with_abi(2, ODMR_ABI_MINOR);
    let mut out: *const odmr_plugin = ptr::null();
    assert_eq!(unsafe { demo_init(host.raw(), &mut out) }, ODMR_VERSION);
    assert!(out.is_null());
}

#[test]
fn instance_new_reports_the_plugins_reason() {
    assert_eq!(new_instance(&[("colour", "blue")]).unwrap_err(), "unknown key 'colour'");
}

#[test]
fn lookup_secret_uses_caller_buffers() {
    let d = descriptor();
    let ops = unsafe { &*d.credentials };
    let inst = new_instance(&[]).unwrap();
    let (mut kind, mut len) = (0u32, 0usize);
    let mut small = [0u8; 4];
    let user = OdmrStr::from_bytes(b"alice");
    let rc = unsafe {
        (ops.lookup_secret.unwrap())(inst, user, &mut kind, small.as_mut_ptr(), small.len(), &mut len)
    };
    assert_eq!((rc, len), (ODMR_BUFFER_TOO_SMALL, 10));
    let mut buf = [0u8; 32];
    let rc =
        unsafe { (ops.lookup_secret.unwrap())(inst, user, &mut kind, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!((rc, kind, &buf[..len]), (ODMR_OK, ODMR_SECRET_PLAIN, &b"wonderland"[..]));
    let nobody = OdmrStr::from_bytes(b"bob");
    let rc = unsafe {
        (ops.lookup_secret.unwrap())(inst, nobody, &mut kind, buf.as_mut_ptr(), buf.len(), &mut len)
    };
    assert_eq!(rc, ODMR_NOT_FOUND);
    unsafe { (d.instance_free.unwrap())(inst) };
}

#[test]
fn a_panic_becomes_a_status() {
    let d = descriptor();
    let ops = unsafe { &*d.credentials };
    let inst = new_instance(&[("panic", "")]).unwrap();
    let (mut kind, mut len, mut buf) = (0u32, 0usize, [0u8; 32]);
    let user = OdmrStr::from_bytes(b"alice");
    let rc =
        unsafe { (ops.lookup_secret.unwrap())(inst, user, &mut kind, buf.as_mut_ptr(), buf.len(), &mut len) };
    assert_eq!(rc, ODMR_PANIC);
}

#[test]
fn list_domains_calls_back_per_domain() {
    let store = host().credentials(&[] as &[(&str, &str)]).unwrap();
    assert_eq!(store.domains("alice").unwrap(), ["example.org", "example.net"]);
}

#[test]
fn unknown_status_values_are_internal() {
    assert_eq!(Status::from_raw(12345), Status::Internal);
    for s in [Status::NotFound, Status::Denied, Status::TempFail, Status::PermFail, Status::Panic] {
        assert_eq!(Status::from_raw(s.to_raw()), s);
    }
}
