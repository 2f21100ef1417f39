//! Property tests of BSMTP un-stuffing (`body::Unstuffer`): whatever the data, its line ends
//! (kept as they are: LF, CRLF or stray CRs) and the output buffer size, un-stuffing what a
//! BSMTP writer stuffed gives the data back and stops exactly at the terminating line. The
//! round trip through odmrd's own `DotStuffer` and the envelope parsers under arbitrary bytes
//! are in `odmrd/tests/parsers.rs`. Bounded to 256 cases.

use odmr_backend_maildir::body::Unstuffer;
use proptest::collection::vec;
use proptest::prelude::*;

/// What Exim's `use_bsmtp` transport writes: each line beginning with `.` gets another `.`, and
/// `.` plus the line end ends the data. Unterminated data gets a line end first.
fn bsmtp_stuff(data: &[u8], line_end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in data.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !out.is_empty() && !out.ends_with(b"\n") {
        out.extend_from_slice(line_end);
    }
    out.push(b'.');
    out.extend_from_slice(line_end);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn unstuffing_undoes_bsmtp_stuffing(
        data in vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..300),
        crlf in any::<bool>(),
        out_size in 1usize..17,
        trailer in vec(any::<u8>(), 0..8),
    ) {
        let line_end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut expected = data.clone();
        if !expected.is_empty() && !expected.ends_with(b"\n") {
            expected.extend_from_slice(line_end);
        }
        let stuffed = bsmtp_stuff(&data, line_end);
        let mut input = stuffed.clone();
        input.extend_from_slice(&trailer);

        let mut unstuffer = Unstuffer::default();
        let mut buf = vec![0; out_size];
        let (mut got, mut consumed) = (Vec::new(), 0);
        while consumed < input.len() && !unstuffer.is_done() {
            let (used, n) = unstuffer.decode(&input[consumed..], &mut buf);
            got.extend_from_slice(&buf[..n]);
            consumed += used;
        }
        prop_assert!(unstuffer.is_done(), "terminator not seen");
        prop_assert_eq!(consumed, stuffed.len(), "stopped elsewhere than after the terminator");
        prop_assert_eq!(got, expected);
    }
}
