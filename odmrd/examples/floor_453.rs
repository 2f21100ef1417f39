//! The floor of an inetd-launched provider for bench_customers (not a provider): answers the
//! 453 session's dialogue on stdin/stdout with canned replies, checks nothing, reads no
//! configuration. What it costs is what any process started per connection pays here:
//! process creation, the dynamic loader and the round trips. It enters through C's `main`, as
//! odmrd does (see odmrd's main.rs), so Rust's runtime start is not part of the floor either.
// `cargo test --all-targets` runs examples under the test harness, which keeps its own entry.
#![cfg_attr(not(test), no_main)]

use std::io::{BufRead, Write};

#[cfg_attr(not(test), export_name = "main")]
#[cfg_attr(test, allow(dead_code))]
pub extern "C" fn c_main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    serve();
    0
}

fn serve() {
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let mut reply = |text: &str| {
        out.write_all(text.as_bytes()).unwrap();
        out.flush().unwrap();
    };
    reply("220 floor.example ESMTP\r\n");
    let mut line = String::new();
    let mut in_auth = false;
    while input.read_line(&mut line).unwrap_or(0) > 0 {
        let command = line.get(..4).unwrap_or("").to_ascii_uppercase();
        match command.as_str() {
            _ if in_auth => {
                in_auth = false;
                reply("235 ok\r\n");
            }
            "EHLO" => reply("250-floor.example\r\n250 AUTH CRAM-MD5\r\n"),
            // The challenge must be base64 for the benchmark's client to answer it.
            "AUTH" => {
                in_auth = true;
                reply("334 PDEyMzQ1LjY3ODlAZmxvb3IuZXhhbXBsZT4=\r\n");
            }
            "ATRN" => reply("453 You have no mail\r\n"),
            "QUIT" => {
                reply("221 bye\r\n");
                return;
            }
            _ => reply("250 ok\r\n"),
        }
        line.clear();
    }
}
