//! Property tests of the `-H` parser (`header`): a file written the way Exim's `spool_out.c`
//! writes it parses back to the same envelope, and a recipient line in any of the forms Exim has
//! written gives back its address. Arbitrary bytes are covered by the fuzz harness
//! (`fuzz/src/lib.rs`, replayed in `odmrd/tests/parsers.rs`). Bounded to 256 cases.

use odmr_backend_exim::header::{self, recipient_address};
use proptest::collection::vec;
use proptest::prelude::*;
use std::collections::HashSet;

const ID: &str = "1vMkbR-00000000Ab3-0Fq2";

fn address() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9.+=_-]{1,12}@[a-z0-9]{1,8}\\.(example|ODMR\\.example)"
}

/// Text Exim prints in a recipient line's extra fields (no newline; spaces, digits, commas and
/// `#` included, since only the lengths delimit them).
fn field_text() -> impl Strategy<Value = String> {
    "[ -~]{0,30}"
}

/// A recipient line as some Exim version writes it, and its address.
fn recipient_line() -> impl Strategy<Value = (String, String)> {
    let current = (address(), field_text(), 0u32..16, field_text(), -1i32..5).prop_map(
        |(address, orcpt, dsn, errors_to, pno)| {
            let line =
                format!("{address} {orcpt} {},{dsn} {errors_to} {},{pno}#3", orcpt.len(), errors_to.len());
            (line, address)
        },
    );
    prop_oneof![
        address().prop_map(|a| (a.clone(), a)),
        (address(), 0u32..9).prop_map(|(a, pno)| (format!("{a} {pno}"), a)),
        (address(), 0u32..9, 0u32..9).prop_map(|(a, e, d)| (format!("{a} {e},{d},0"), a)),
        current,
    ]
}

/// Header records `NNNF text`: the length counts the text including its newline.
fn records() -> impl Strategy<Value = Vec<(char, String)>> {
    vec((prop_oneof![Just(' '), Just('*'), Just('F'), Just('P')], "[ -~]{1,60}\n(\t[ -~]{1,20}\n)?"), 0..5)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_recipient_line_form_gives_back_its_address(line in recipient_line()) {
        let (line, address) = line;
        prop_assert_eq!(recipient_address(line.as_bytes()), address.as_bytes(), "line {:?}", line);
    }

    #[test]
    fn a_header_written_like_exim_parses_back(
        sender in prop_oneof![Just(String::new()), address()],
        recipients in vec(recipient_line(), 1..6),
        done in vec(address(), 0..5),
        frozen in any::<bool>(),
        records in records(),
    ) {
        let mut file = format!("{ID}-H\nDebian-exim 101 103\n<{sender}>\n1763806345 0\n-ident x\n");
        if frozen {
            file.push_str("-frozen 1763806345\n");
        }
        file.push_str("-aclm 0 6\nYN x\n\n\n");
        if done.is_empty() {
            file.push_str("XX\n");
        }
        // A right-leaning chain is a valid (if unbalanced) tree.
        for (i, address) in done.iter().enumerate() {
            file.push_str(if i + 1 < done.len() { "NY " } else { "NN " });
            file.push_str(address);
            file.push('\n');
        }
        file.push_str(&format!("{}\n", recipients.len()));
        for (line, _) in &recipients {
            file.push_str(line);
            file.push('\n');
        }
        file.push('\n');
        let offset = file.len() as u64;
        let mut transmitted = 0;
        for (flag, text) in &records {
            file.push_str(&format!("{:03}{flag} {text}", text.len()));
            if *flag != '*' {
                transmitted += text.len() as u64;
            }
        }

        let parsed = header::parse(file.as_bytes(), ID).expect("a file written like Exim's parses");
        prop_assert_eq!(&parsed.sender, &sender);
        prop_assert_eq!(parsed.frozen, frozen);
        let addresses: Vec<&str> = recipients.iter().map(|(_, a)| a.as_str()).collect();
        prop_assert_eq!(parsed.recipients.iter().map(String::as_str).collect::<Vec<_>>(), addresses);
        let done: HashSet<Vec<u8>> = done.iter().map(|a| a.as_bytes().to_vec()).collect();
        prop_assert_eq!(&parsed.done, &done);
        prop_assert_eq!(parsed.headers_offset, offset);
        let mut rest = &file.as_bytes()[offset as usize..];
        prop_assert_eq!(header::transmitted_size(&mut rest).expect("records parse"), transmitted);
    }
}
