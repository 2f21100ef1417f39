//! `include/odmr_api.h` cannot drift from `src/ffi.rs`: it is regenerated here
//! with cbindgen (as a library, so no hand-installed binary is needed) and
//! compared byte for byte; then a C program compiled against it prints every
//! macro, size and field offset, which must equal the Rust definitions.

use odmr_api::ffi::*;
use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

const BLESS: &str = "ODMR_BLESS=1 cargo test -p odmr-api --test header";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    root().join("include").join("odmr_api.h")
}

/// The header as cbindgen writes it today from `src/ffi.rs` and `cbindgen.toml`.
fn generate() -> String {
    let config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root().join("src").join("ffi.rs"))
        .generate()
        .expect("cbindgen could not generate the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("the header is UTF-8")
}

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let fresh = generate();
    if std::env::var_os("ODMR_BLESS").is_some() {
        std::fs::create_dir_all(header_path().parent().unwrap()).unwrap();
        std::fs::write(header_path(), &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(header_path()).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or_else(|| committed.lines().count().min(fresh.lines().count()) + 1, |i| i + 1);
        panic!(
            "odmr-api/include/odmr_api.h is out of date with src/ffi.rs (first difference at line {line}:\n\
             committed: {:?}\n\
             generated: {:?}).\n\
             Regenerate it with:\n    {BLESS}\nand commit the result.",
            committed.lines().nth(line - 1).unwrap_or("<end of file>"),
            fresh.lines().nth(line - 1).unwrap_or("<end of file>"),
        );
    }
}

/// Every value the C side must agree on, as the Rust side defines it.
fn rust_values() -> BTreeMap<String, i128> {
    let mut v: BTreeMap<String, i128> = BTreeMap::new();
    let mut put = |name: &str, value: i128| {
        v.insert(name.to_string(), value);
    };
    put("ODMR_ABI_MAJOR", ODMR_ABI_MAJOR.into());
    put("ODMR_ABI_MINOR", ODMR_ABI_MINOR.into());
    for (name, value) in [
        ("ODMR_OK", ODMR_OK),
        ("ODMR_END", ODMR_END),
        ("ODMR_NOT_FOUND", ODMR_NOT_FOUND),
        ("ODMR_DENIED", ODMR_DENIED),
        ("ODMR_TEMPFAIL", ODMR_TEMPFAIL),
        ("ODMR_PERMFAIL", ODMR_PERMFAIL),
        ("ODMR_BUFFER_TOO_SMALL", ODMR_BUFFER_TOO_SMALL),
        ("ODMR_INVALID_ARGUMENT", ODMR_INVALID_ARGUMENT),
        ("ODMR_UNSUPPORTED", ODMR_UNSUPPORTED),
        ("ODMR_VERSION", ODMR_VERSION),
        ("ODMR_PANIC", ODMR_PANIC),
        ("ODMR_INTERNAL", ODMR_INTERNAL),
        ("ODMR_LOG_ERROR", ODMR_LOG_ERROR),
        ("ODMR_LOG_WARN", ODMR_LOG_WARN),
        ("ODMR_LOG_INFO", ODMR_LOG_INFO),
        ("ODMR_LOG_DEBUG", ODMR_LOG_DEBUG),
        ("ODMR_OUTCOME_DELIVERED", ODMR_OUTCOME_DELIVERED),
        ("ODMR_OUTCOME_TEMPFAIL", ODMR_OUTCOME_TEMPFAIL),
        ("ODMR_OUTCOME_PERMFAIL", ODMR_OUTCOME_PERMFAIL),
    ] {
        put(name, value.into());
    }
    for (name, value) in [
        ("ODMR_QF_NEXT_BEFORE_COMMIT", ODMR_QF_NEXT_BEFORE_COMMIT),
        ("ODMR_RET_UNSPECIFIED", ODMR_RET_UNSPECIFIED),
        ("ODMR_RET_FULL", ODMR_RET_FULL),
        ("ODMR_RET_HDRS", ODMR_RET_HDRS),
        ("ODMR_NOTIFY_NEVER", ODMR_NOTIFY_NEVER),
        ("ODMR_NOTIFY_SUCCESS", ODMR_NOTIFY_SUCCESS),
        ("ODMR_NOTIFY_FAILURE", ODMR_NOTIFY_FAILURE),
        ("ODMR_NOTIFY_DELAY", ODMR_NOTIFY_DELAY),
        ("ODMR_MSG_SMTPUTF8", ODMR_MSG_SMTPUTF8),
        ("ODMR_MSG_8BIT", ODMR_MSG_8BIT),
        ("ODMR_MSG_7BIT", ODMR_MSG_7BIT),
    ] {
        put(name, value.into());
    }
    put("ODMR_F_THREADSAFE", ODMR_F_THREADSAFE.into());
    put("ODMR_SECRET_PLAIN", ODMR_SECRET_PLAIN.into());
    put("ODMR_SECRET_CRAM_MD5_CONTEXT", ODMR_SECRET_CRAM_MD5_CONTEXT.into());
    put("sizeof(odmr_status)", size_of::<odmr_status>() as i128);

    macro_rules! layout {
        ($c:literal, $ty:ty, [$($field:ident),* $(,)?]) => {
            put(concat!("sizeof(", $c, ")"), size_of::<$ty>() as i128);
            $(put(concat!("offsetof(", $c, ", ", stringify!($field), ")"), offset_of!($ty, $field) as i128);)*
        };
    }
    layout!("odmr_str", OdmrStr, [ptr, len]);
    layout!("odmr_kv", OdmrKv, [key, value]);
    layout!("odmr_host", odmr_host, [struct_size, abi_major, abi_minor, ctx, log]);
    layout!(
        "odmr_credentials_ops",
        odmr_credentials_ops,
        [
            struct_size,
            lookup_secret,
            verify_cram_md5,
            list_domains,
            verify_password,
            allowed_networks,
            list_accounts
        ]
    );
    layout!(
        "odmr_envelope_sink",
        odmr_envelope_sink,
        [ctx, message, recipient, message_details, recipient_details]
    );
    layout!("odmr_list_sink", odmr_list_sink, [struct_size, ctx, message, recipient, unreadable]);
    layout!(
        "odmr_queue_ops",
        odmr_queue_ops,
        [
            struct_size,
            has_pending,
            cursor_open,
            cursor_next,
            read_body,
            set_outcome,
            commit,
            cursor_close,
            flags,
            list,
            set_outcome_reply
        ]
    );
    layout!(
        "odmr_plugin",
        odmr_plugin,
        [
            struct_size,
            abi_major,
            abi_minor,
            name,
            version,
            flags,
            instance_new,
            instance_free,
            credentials,
            queue,
            check
        ]
    );
    v
}

/// A C program that prints, for each name in `rust_values`, the C side's value.
fn c_program(names: &[&String]) -> String {
    let mut c = String::from(
        "#include <stdio.h>\n#include <stddef.h>\n#include \"odmr_api.h\"\n\
         /* The prototype in the header must accept a definition with this signature. */\n\
         int32_t odmr_plugin_init(const odmr_host *host, const odmr_plugin **out) { (void)host; (void)out; return ODMR_VERSION; }\n\
         int main(void) {\n",
    );
    for name in names {
        c.push_str(&format!("    printf(\"%s %lld\\n\", \"{name}\", (long long)({name}));\n"));
    }
    c.push_str("    return 0;\n}\n");
    c
}

#[test]
fn the_header_agrees_with_the_rust_constants_and_layouts() {
    let expected = rust_values();
    let names: Vec<&String> = expected.keys().collect();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("values.c");
    let exe = dir.path().join("values");
    std::fs::write(&src, c_program(&names)).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let compiled = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-I"])
        .arg(root().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(compiled.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&compiled.stderr));
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let printed: BTreeMap<String, i128> = String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').unwrap();
            (name.to_string(), value.parse().unwrap())
        })
        .collect();
    for (name, value) in &expected {
        assert_eq!(
            printed.get(name),
            Some(value),
            "{name}: C says {:?}, Rust says {value}",
            printed.get(name)
        );
    }
    assert_eq!(printed.len(), expected.len());
}
