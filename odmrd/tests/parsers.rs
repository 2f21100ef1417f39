//! Every parser under hostile input, on the stable toolchain: the inputs the fuzzers found
//! (`fuzz/regressions/`) and their seeds replayed through the fuzz harnesses, property tests that
//! no parser panics, and that parsing what our formatters write gives back what they were given
//! (replies, commands, ATRN lists, DATA encoding, a BSMTP file read by the maildir backend, the
//! throttle's state file).
//! Case counts are bounded so the suite stays fast; the fuzzers (nightly) go further.

#[path = "../../fuzz/src/lib.rs"]
mod harness;

use odmr_api::params::{self, Notify, Ret};
use odmr_api::RecipientDetails;
use odmr_backend_maildir::envelope::{self, Layout};
use odmrd::proto::{self, Command, Reply, ReplyParser};
use odmrd::throttle::{self, Record};
use proptest::collection::vec;
use proptest::prelude::*;
use std::net::IpAddr;
use std::path::Path;

fn bounded() -> ProptestConfig {
    ProptestConfig { cases: 256, ..ProptestConfig::default() }
}

#[test]
fn fuzz_regressions_and_seeds_still_pass_their_harness() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let seeds = harness::replay_regressions(&fuzz.join("seeds"));
    assert!(seeds >= harness::TARGETS.len(), "only {seeds} seed files found under {}", fuzz.display());
    harness::replay_regressions(&fuzz.join("regressions"));
}

/// Bytes built from the tokens the parsers look for, so random inputs get past their first
/// checks far more often than uniform bytes do.
fn protocol_like() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "MAIL FROM:<",
        "RCPT TO:<",
        "DATA",
        "\r\n",
        "\n",
        "\r",
        ".",
        "..",
        "250-",
        "250 ",
        "354 ",
        "550 ",
        "ATRN ",
        "AUTH CRAM-MD5 ",
        "EHLO ",
        "QUIT",
        ",",
        "a.example",
        "B.Example.ORG",
        "<",
        ">",
        "\"",
        "\\",
        ":",
        "@",
        "{PLAIN}",
        "{CRAM-MD5}",
        "odmr_domains=",
        "[server]",
        "[queue]",
        "plugin = ",
        "=",
        "Return-Path: ",
        "Delivered-To: ",
        " ",
        "\t",
        "1tGb3c-000Abc-7x-H\n",
        "u 1 2\n",
        "YN ",
        "NN ",
        "XX\n",
        "#",
        "0,",
        "12",
        "-aclc x 3\n",
        "049F ",
        "\u{e9}",
        "\0",
        " NOTIFY=SUCCESS",
        " ORCPT=rfc822;",
        "+2B",
        " ENVID=",
        " RET=HDRS",
        ";",
        "192.0.2.1 ",
        "2001:db8::/64 ",
    ];
    let token = prop_oneof![
        4 => proptest::sample::select(TOKENS).prop_map(|t| t.as_bytes().to_vec()),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    (any::<u8>(), vec(token, 0..60)).prop_map(|(first, tokens)| {
        let mut data = vec![first];
        data.extend(tokens.concat());
        data
    })
}

/// Message bodies rich in what the DATA encoding must get right: dots, CR and LF.
fn body_bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'x'), any::<u8>()], 0..300)
}

fn label() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    vec(label(), 2..4).prop_map(|labels| labels.join("."))
}

fn address() -> impl Strategy<Value = String> {
    ("[a-zA-Z0-9.+=_-]{1,12}", domain()).prop_map(|(local, domain)| format!("{local}@{domain}"))
}

fn notify() -> impl Strategy<Value = Notify> {
    prop_oneof![
        Just(Notify::UNSPECIFIED),
        Just(Notify::NEVER),
        (1u32..8).prop_map(|bits| Notify::from_raw(bits << 1))
    ]
}

/// Reply text without control characters (which `reply` replaces).
fn reply_text() -> impl Strategy<Value = String> {
    "[^\\x00-\\x1f\\x7f-\\x9f]{0,40}"
}

fn parse_one_reply(wire: &[u8]) -> (usize, Option<Result<Reply, proto::ReplyError>>) {
    ReplyParser::new().feed(wire)
}

proptest! {
    #![proptest_config(bounded())]

    #[test]
    fn no_parser_panics_on_arbitrary_bytes(data in vec(any::<u8>(), 0..600)) {
        for (_, parse) in harness::TARGETS {
            parse(&data);
        }
    }

    #[test]
    fn no_parser_panics_on_protocol_like_bytes(data in protocol_like()) {
        for (_, parse) in harness::TARGETS {
            parse(&data);
        }
    }

    #[test]
    fn dot_stuffing_round_trips_through_the_bsmtp_unstuffer(body in body_bytes()) {
        // The harness encodes in chunks chosen by the first byte and asserts the round trip.
        harness::proto_dotstuff(&body);
    }

    #[test]
    fn a_formatted_multiline_reply_parses_back(code in 200u16..600, lines in vec(reply_text(), 1..6)) {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let wire = proto::reply_multiline(code, &refs);
        prop_assert_eq!(parse_one_reply(wire.as_bytes()), (wire.len(), Some(Ok(Reply { code, lines }))));
    }

    #[test]
    fn a_formatted_reply_parses_back(code in 200u16..600, text in reply_text()) {
        let wire = proto::reply(code, &text);
        prop_assert_eq!(parse_one_reply(wire.as_bytes()), (wire.len(), Some(Ok(Reply { code, lines: vec![text] }))));
    }

    #[test]
    fn any_reply_text_stays_one_line_per_line(code in 200u16..600, lines in vec(any::<String>(), 1..6)) {
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let wire = proto::reply_multiline(code, &refs);
        let (used, reply) = parse_one_reply(wire.as_bytes());
        prop_assert_eq!(used, wire.len());
        let reply = reply.expect("a whole reply").expect("a well-formed reply");
        prop_assert_eq!((reply.code, reply.lines.len()), (code, lines.len()));
    }

    #[test]
    fn an_atrn_list_parses_back_lowercased_and_deduplicated(
        verb in "(?i)atrn",
        domains in vec(domain(), 0..6),
        separators in vec(prop_oneof![Just(","), Just(" , "), Just(",\t"), Just("\t,")], 6),
    ) {
        let mut list = String::new();
        for (i, domain) in domains.iter().enumerate() {
            if i > 0 {
                list.push_str(separators[i]);
            }
            list.push_str(domain);
        }
        let mut expected: Vec<String> = Vec::new();
        for domain in domains.iter().map(|d| d.to_ascii_lowercase()) {
            if !expected.contains(&domain) {
                expected.push(domain);
            }
        }
        prop_assert_eq!(proto::parse_atrn_domains(&list), Ok(expected.clone()));
        prop_assert_eq!(proto::parse_command(format!("{verb} {list}").as_bytes()), Ok(Command::Atrn(expected)));
    }

    #[test]
    fn auth_and_ehlo_commands_parse_back(
        mechanism in "[A-Za-z0-9_-]{1,20}",
        response in proptest::option::of("[A-Za-z0-9+/]{1,40}={0,2}|="),
        greeting in "[!-~]{1,30}",
    ) {
        let line = match &response {
            Some(response) => format!("AUTH {mechanism} {response}"),
            None => format!("auth\t{mechanism}"),
        };
        let expected = Command::Auth { mechanism: mechanism.to_ascii_uppercase(), initial_response: response };
        prop_assert_eq!(proto::parse_command(line.as_bytes()), Ok(expected));
        prop_assert_eq!(proto::parse_command(format!("EHLO {greeting}").as_bytes()), Ok(Command::Ehlo(greeting)));
    }

    /// What odmrd sends in DATA is a BSMTP transaction: written with our formatters (commands,
    /// DSN parameters, DATA encoding), the maildir backend's BSMTP parser must read back the same
    /// envelope, parameters and body.
    #[test]
    fn bsmtp_written_by_our_formatters_parses_back(
        sender in proptest::option::of(address()),
        recipients in vec((address(), notify(), proptest::option::of(address())), 1..4),
        envid in proptest::option::of(any::<String>()),
        ret in proptest::option::of(prop_oneof![Just(Ret::Full), Just(Ret::Headers)]),
        body in body_bytes(),
    ) {
        let sender = sender.unwrap_or_default();
        let mut mail_params = Vec::new();
        mail_params.extend(envid.iter().map(|envid| format!("ENVID={}", params::xtext_encode(envid))));
        mail_params.extend(ret.map(|ret| format!("RET={}", ret.param())));
        let mut file = proto::mail_from(&sender, &mail_params).into_bytes();
        let mut expected = Vec::new();
        for (address, notify, orcpt) in &recipients {
            let orcpt = orcpt.as_ref().map(|o| format!("rfc822;{o}"));
            let mut rcpt_params: Vec<String> = notify.param().map(|n| format!("NOTIFY={n}")).into_iter().collect();
            rcpt_params.extend(orcpt.iter().map(|o| format!("ORCPT={}", params::orcpt_param(o))));
            file.extend_from_slice(proto::rcpt_to(address, &rcpt_params).as_bytes());
            expected.push((address.clone(), RecipientDetails { notify: *notify, orcpt }));
        }
        file.extend_from_slice(b"DATA\r\n");
        let mut stuffer = proto::DotStuffer::new();
        stuffer.encode(&body, &mut file);
        stuffer.finish(&mut file);

        let parsed = envelope::parse(&mut std::io::Cursor::new(&file[..]), None).expect("our own BSMTP parses");
        prop_assert_eq!(&parsed.sender, &sender);
        prop_assert_eq!((&parsed.params.envid, parsed.params.ret), (&envid, ret));
        let got: Vec<_> = parsed.recipients.iter().map(|r| (r.address.clone(), r.details.clone())).collect();
        prop_assert_eq!(got, expected);
        let Layout::Bsmtp { data_start, .. } = parsed.layout else { panic!("not read as BSMTP") };
        let (data, terminated) = harness::unstuffed(&file[data_start as usize..], 64);
        prop_assert!(terminated);
        prop_assert_eq!(data, harness::crlf_normalised(&body));
    }

    /// The inetd throttle's state file keeps every address's record across processes.
    #[test]
    fn a_throttle_table_written_reads_back(
        entries in vec((any::<IpAddr>(), any::<(u64, u32, u32, u64, u64)>()), 0..20),
    ) {
        let table: throttle::Table = entries
            .into_iter()
            .map(|(ip, (window_start, failures, streak, last_attempt, next_turn))| {
                let record = Record { window_start, failures, streak, last_attempt, next_turn };
                (throttle::address_key(ip), record)
            })
            .collect();
        prop_assert_eq!(throttle::parse_table(&throttle::format_table(&table)), table);
    }
}
