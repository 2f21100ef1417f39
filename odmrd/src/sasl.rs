//! SASL mechanics: CRAM-MD5 (RFC 2195) challenges, responses and verification.
//!
//! This module owns the cryptography and the wire encoding of the CRAM-MD5
//! exchange: building a challenge, decoding the client's base64 response into
//! a user name and a digest, and checking that digest in constant time against
//! a [`Secret`] — either a clear-text password (plain HMAC-MD5) or Dovecot's
//! 32-byte `{CRAM-MD5}` context (the MD5 states after the HMAC opad and ipad
//! blocks, continued here with our own MD5 compression function because the
//! `md-5` crate does not expose one). It also produces that context, exactly as
//! `doveadm pw -s CRAM-MD5` does.
//!
//! It does not know where secrets come from (credential backends do), does not
//! speak SMTP (the `334`/`235`/`535` replies belong to `session`), does not
//! count failures, and never logs: nothing here prints a secret or a digest.
#![forbid(unsafe_code)]

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use odmr_api::Secret;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};
use subtle::ConstantTimeEq;

/// Builds a fresh challenge `"<RANDOM.UNIXTIME@hostname>"`.
///
/// RANDOM is 64 bits from the operating system's CSPRNG (`getrandom`) written
/// as 20 zero-padded decimal digits, so challenges are unpredictable and, in
/// practice, unique per call (a replayed response never matches a new one).
///
/// # Panics
/// If the operating system cannot supply random bytes. A predictable challenge
/// would allow replaying captured responses, so there is no weaker fallback.
pub fn new_challenge(hostname: &str) -> String {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).expect("getrandom: no secure randomness for a CRAM-MD5 challenge");
    let random = u64::from_le_bytes(bytes);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("<{random:020}.{now}@{hostname}>")
}

/// Why a client's CRAM-MD5 response was refused before any verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    /// The line is not valid base64.
    BadBase64,
    /// The decoded text is not `user SP 32-hex-digits` (or holds NUL or other
    /// control characters, or is not UTF-8).
    Malformed,
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseError::BadBase64 => "response is not valid base64",
            ResponseError::Malformed => "response is not 'user digest'",
        })
    }
}

impl std::error::Error for ResponseError {}

/// Standard alphabet; padding optional (some clients omit it), no trailing bits.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes the client's base64 response into `(user, digest)`, the digest as
/// 32 lower-case hex digits.
///
/// Surrounding white space of the line is ignored. The decoded text is split at
/// its rightmost space (so user names may contain spaces, as in Dovecot). NUL
/// and other control characters are refused anywhere (they would corrupt log
/// lines and C strings further on), as are an empty user and a digest that is
/// not exactly 32 hex digits (either case accepted).
pub fn decode_cram_response(base64_line: &str) -> Result<(String, String), ResponseError> {
    let raw = BASE64.decode(base64_line.trim().as_bytes()).map_err(|_| ResponseError::BadBase64)?;
    let text = String::from_utf8(raw).map_err(|_| ResponseError::Malformed)?;
    if text.chars().any(char::is_control) {
        return Err(ResponseError::Malformed);
    }
    let (user, digest) = text.rsplit_once(' ').ok_or(ResponseError::Malformed)?;
    if user.is_empty() || digest.len() != 32 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ResponseError::Malformed);
    }
    Ok((user.to_owned(), digest.to_ascii_lowercase()))
}

/// Checks, in constant time, that `digest_hex` (32 hex digits, either case) is
/// HMAC-MD5(secret, challenge). A malformed digest simply does not match.
pub fn verify(secret: &Secret, challenge: &str, digest_hex: &str) -> bool {
    let Some(given) = decode_hex::<16>(digest_hex.as_bytes()) else { return false };
    match secret {
        Secret::Plain(password) => {
            let Ok(mut mac) = Hmac::<Md5>::new_from_slice(password) else { return false };
            mac.update(challenge.as_bytes());
            mac.verify_slice(&given).is_ok()
        }
        Secret::CramMd5Context(context) => {
            let expected = hmac_md5_from_context(context, challenge.as_bytes());
            expected.ct_eq(&given).into()
        }
    }
}

/// Decodes an AUTH PLAIN response (RFC 4616: `authzid NUL authcid NUL password`, base64) into
/// `(user, password)`. An authorisation identity other than the user itself is refused: odmrd
/// has no proxy users. The user name follows the same rules as in CRAM-MD5 responses.
pub fn decode_plain_response(base64_line: &str) -> Result<(String, Vec<u8>), ResponseError> {
    let raw = BASE64.decode(base64_line.trim().as_bytes()).map_err(|_| ResponseError::BadBase64)?;
    let mut parts = raw.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ResponseError::Malformed);
    };
    let user = valid_user(user)?;
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(ResponseError::Malformed);
    }
    if password.is_empty() || password.contains(&0) {
        return Err(ResponseError::Malformed);
    }
    Ok((user, password.to_vec()))
}

/// Decodes one AUTH LOGIN answer (the user name or the password, base64).
pub fn decode_login_field(base64_line: &str) -> Result<Vec<u8>, ResponseError> {
    let raw = BASE64.decode(base64_line.trim().as_bytes()).map_err(|_| ResponseError::BadBase64)?;
    if raw.is_empty() || raw.contains(&0) {
        return Err(ResponseError::Malformed);
    }
    Ok(raw)
}

/// A user name from a PLAIN or LOGIN exchange: UTF-8 without control characters, not empty.
pub fn valid_user(raw: &[u8]) -> Result<String, ResponseError> {
    let text = std::str::from_utf8(raw).map_err(|_| ResponseError::Malformed)?;
    if text.is_empty() || text.chars().any(char::is_control) {
        return Err(ResponseError::Malformed);
    }
    Ok(text.to_owned())
}

/// Checks a clear-text password against a stored secret, in constant time: equal to a clear
/// secret, or producing the same Dovecot CRAM-MD5 context.
pub fn verify_password(secret: &Secret, password: &[u8]) -> bool {
    match secret {
        Secret::Plain(stored) => stored.as_slice().ct_eq(password).into(),
        Secret::CramMd5Context(context) => cram_md5_context(password).ct_eq(context).into(),
    }
}

/// Dovecot's 32-byte CRAM-MD5 context for `password`: the MD5 state after the
/// opad block, then after the ipad block, each as four little-endian words.
/// Keys longer than 64 bytes are first replaced by their MD5, as in HMAC.
pub fn cram_md5_context(password: &[u8]) -> [u8; 32] {
    let mut key = [0u8; BLOCK];
    if password.len() > BLOCK {
        key[..16].copy_from_slice(&Md5::digest(password));
    } else {
        key[..password.len()].copy_from_slice(password);
    }
    let pad = |byte: u8| {
        let mut block = [0u8; BLOCK];
        for (out, k) in block.iter_mut().zip(key) {
            *out = k ^ byte;
        }
        let mut state = MD5_INIT;
        compress(&mut state, &block);
        state
    };
    let (opad, ipad) = (pad(0x5c), pad(0x36));
    let mut context = [0u8; 32];
    for (chunk, word) in context.chunks_exact_mut(4).zip(opad.iter().chain(ipad.iter())) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    context
}

/// The passwd-file entry for `password`: `"{CRAM-MD5}"` and 64 lower-case hex
/// digits, exactly as `doveadm pw -s CRAM-MD5` prints it.
pub fn cram_md5_entry(password: &[u8]) -> String {
    let mut entry = String::from("{CRAM-MD5}");
    for byte in cram_md5_context(password) {
        entry.push_str(&format!("{byte:02x}"));
    }
    entry
}

/// HMAC-MD5 of `message` continued from a Dovecot context: the inner hash
/// resumes from the ipad state, the outer from the opad state, both with 64
/// bytes already counted.
fn hmac_md5_from_context(context: &[u8; 32], message: &[u8]) -> [u8; 16] {
    let word = |i: usize| u32::from_le_bytes([context[i], context[i + 1], context[i + 2], context[i + 3]]);
    let opad = [word(0), word(4), word(8), word(12)];
    let ipad = [word(16), word(20), word(24), word(28)];
    let inner = md5_finish(ipad, BLOCK as u64, message);
    md5_finish(opad, BLOCK as u64, &inner)
}

/// Decodes exactly `N` bytes from `2 * N` hex digits of either case.
fn decode_hex<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

// ---------------------------------------------------------------------------
// MD5 (RFC 1321) with an explicit state, so that hashing can resume from the
// states stored in a Dovecot context. Checked against the `md-5` crate below.

const BLOCK: usize = 64;

const MD5_INIT: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// Per-round shift amounts.
const SHIFT: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, //
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, //
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, //
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// `floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// The MD5 compression function: absorbs one 64-byte block into `state`.
fn compress(state: &mut [u32; 4], block: &[u8; BLOCK]) {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    let [mut a, mut b, mut c, mut d] = *state;
    for i in 0..64 {
        let (f, g) = match i / 16 {
            0 => ((b & c) | (!b & d), i),
            1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
            2 => (b ^ c ^ d, (3 * i + 5) % 16),
            _ => (c ^ (b | !d), (7 * i) % 16),
        };
        let rotated = a.wrapping_add(f).wrapping_add(K[i]).wrapping_add(m[g]).rotate_left(SHIFT[i]);
        a = d;
        d = c;
        c = b;
        b = b.wrapping_add(rotated);
    }
    for (s, v) in state.iter_mut().zip([a, b, c, d]) {
        *s = s.wrapping_add(v);
    }
}

/// Finishes an MD5 that has already absorbed `prefix_len` bytes (a multiple
/// of 64) into `state`, by absorbing `data` and the padding.
fn md5_finish(mut state: [u32; 4], prefix_len: u64, data: &[u8]) -> [u8; 16] {
    let mut blocks = data.chunks_exact(BLOCK);
    for block in blocks.by_ref() {
        compress(&mut state, block.try_into().expect("chunks_exact yields whole blocks"));
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 2 * BLOCK];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
    let bits = prefix_len.wrapping_add(data.len() as u64).wrapping_mul(8);
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_le_bytes());
    for block in tail[..tail_len].chunks_exact(BLOCK) {
        compress(&mut state, block.try_into().expect("chunks_exact yields whole blocks"));
    }
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::process::Command;

    const RFC2195_CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
    const RFC2195_SECRET: &[u8] = b"tanstaaftanstaaf";
    const RFC2195_DIGEST: &str = "b913a602c7eda7a495b4e6e7334d3890";
    const RFC2195_CONTEXT: &str = "d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b";

    fn context_of(hex: &str) -> [u8; 32] {
        decode_hex::<32>(hex.as_bytes()).expect("64 hex digits")
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac_md5(key: &[u8], msg: &[u8]) -> String {
        let mut mac = Hmac::<Md5>::new_from_slice(key).unwrap();
        mac.update(msg);
        hex(&mac.finalize().into_bytes())
    }

    #[test]
    fn md5_matches_the_md5_crate_at_every_padding_boundary() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 300] {
            let ours = md5_finish(MD5_INIT, 0, &data[..len]);
            assert_eq!(ours[..], Md5::digest(&data[..len])[..], "length {len}");
        }
    }

    #[test]
    fn md5_resumes_from_a_state_after_one_block() {
        let first: [u8; 64] = std::array::from_fn(|i| i as u8 ^ 0x36);
        for len in [0, 1, 42, 55, 56, 64, 100] {
            let rest = vec![b'x'; len];
            let mut state = MD5_INIT;
            compress(&mut state, &first);
            let whole = [&first[..], &rest[..]].concat();
            assert_eq!(md5_finish(state, 64, &rest)[..], Md5::digest(&whole)[..], "rest {len}");
        }
    }

    #[test]
    fn rfc2195_example_verifies_with_plain_secret_and_with_its_context() {
        assert_eq!(hex(&cram_md5_context(RFC2195_SECRET)), RFC2195_CONTEXT);
        let secrets =
            [Secret::Plain(RFC2195_SECRET.to_vec()), Secret::CramMd5Context(context_of(RFC2195_CONTEXT))];
        for secret in &secrets {
            assert!(verify(secret, RFC2195_CHALLENGE, RFC2195_DIGEST), "{secret:?}");
            assert!(verify(secret, RFC2195_CHALLENGE, &RFC2195_DIGEST.to_uppercase()), "{secret:?}");
            // One flipped digit, another challenge, a malformed digest: no.
            assert!(!verify(secret, RFC2195_CHALLENGE, "b913a602c7eda7a495b4e6e7334d3891"), "{secret:?}");
            assert!(!verify(secret, "<1897.697170952@postoffice.reston.mci.net>", RFC2195_DIGEST));
            for bad in [
                "",
                "b913a602c7eda7a495b4e6e7334d389",
                "b913a602c7eda7a495b4e6e7334d3890aa",
                "x".repeat(32).as_str(),
            ] {
                assert!(!verify(secret, RFC2195_CHALLENGE, bad), "digest {bad:?}");
            }
        }
        let (user, digest) =
            decode_cram_response("dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw").unwrap();
        assert_eq!((user.as_str(), digest.as_str()), ("tim", RFC2195_DIGEST));
    }

    #[test]
    fn dovecot_and_formats_md_vectors() {
        let cases: [(&[u8], &str); 3] = [
            (b"test", "{CRAM-MD5}e02d374fde0dc75a17a557039a3a5338c7743304777dccd376f332bee68d2cf6"),
            (
                b"tanstaaftanstaaf",
                "{CRAM-MD5}d06d4e1b26fccaa4b0b61801132340a354b21152711fb604ca3e035e7015116b",
            ),
            (b"S3cret-odmr", "{CRAM-MD5}42d5ce522a349cfb0efdd84a3c80b7ecf4fe938d4df1d7b9813b26e76095b1e1"),
        ];
        for (password, entry) in cases {
            assert_eq!(cram_md5_entry(password), entry);
        }
    }

    #[test]
    fn formats_md_synthetic_exchange() {
        let challenge =
            String::from_utf8(BASE64.decode("PDE4OTYuNjk3MTcwOTUyQHByb3ZpZGVyLmV4YW1wbGU+").unwrap())
                .unwrap();
        assert_eq!(challenge, "<1896.697170952@provider.example>");
        let (user, digest) =
            decode_cram_response("Y3VzdG9tZXIxQGV4YW1wbGUuY29tIDIzNWE1NDU5NmNmZGJjYWIyZjRkZTlkZTcyYTk1ZTE5")
                .unwrap();
        assert_eq!(user, "customer1@example.com");
        let context = context_of("42d5ce522a349cfb0efdd84a3c80b7ecf4fe938d4df1d7b9813b26e76095b1e1");
        assert!(verify(&Secret::CramMd5Context(context), &challenge, &digest));
        assert!(verify(&Secret::Plain(b"S3cret-odmr".to_vec()), &challenge, &digest));
        assert!(!verify(&Secret::Plain(b"S3cret-odmR".to_vec()), &challenge, &digest));
    }

    #[test]
    fn context_and_plain_agree_for_many_keys_and_challenges() {
        let long = vec![b'k'; 65];
        let exact = vec![b'e'; 64];
        let keys: [&[u8]; 6] = [b"", b"a", b"p\xe4ssw\xf6rd", &exact, &long, &[0xff; 200]];
        let challenges = ["<1.2@h>", "", &"c".repeat(55), &"c".repeat(56), &"c".repeat(200)];
        for key in keys {
            let context = Secret::CramMd5Context(cram_md5_context(key));
            for challenge in challenges {
                let digest = hmac_md5(key, challenge.as_bytes());
                assert!(
                    verify(&context, challenge, &digest),
                    "key len {} challenge {challenge:?}",
                    key.len()
                );
                assert!(verify(&Secret::Plain(key.to_vec()), challenge, &digest));
            }
        }
    }

    #[test]
    fn entries_match_doveadm() {
        let doveadm = std::path::Path::new("/usr/bin/doveadm");
        if !doveadm.exists() {
            eprintln!("note: /usr/bin/doveadm is absent; skipping the comparison with real doveadm output");
            return;
        }
        let passwords = [
            "test".to_string(),
            "S3cret-odmr".to_string(),
            "with space and ünïcode".to_string(),
            "x".repeat(64),
            "a-password-that-is-longer-than-sixty-four-bytes-so-hmac-hashes-it-first!".to_string(),
            "L".repeat(200),
        ];
        assert!(passwords.iter().any(|p| p.len() > 64));
        for password in &passwords {
            let out = Command::new(doveadm).args(["pw", "-s", "CRAM-MD5", "-p", password]).output().unwrap();
            assert!(out.status.success(), "doveadm failed: {}", String::from_utf8_lossy(&out.stderr));
            let printed = String::from_utf8(out.stdout).unwrap();
            assert_eq!(
                cram_md5_entry(password.as_bytes()),
                printed.trim_end(),
                "password of {} bytes",
                password.len()
            );
        }
    }

    #[test]
    fn challenges_have_the_right_shape_and_never_repeat() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let challenge = new_challenge("odmr.example.net");
            let inner =
                challenge.strip_prefix('<').and_then(|c| c.strip_suffix("@odmr.example.net>")).unwrap();
            let (random, time) = inner.split_once('.').unwrap();
            assert_eq!(random.len(), 20, "{challenge}");
            assert!(random.bytes().all(|b| b.is_ascii_digit()), "{challenge}");
            assert!(random.parse::<u64>().is_ok(), "{challenge}");
            assert!(time.parse::<u64>().unwrap() > 1_600_000_000, "{challenge}");
            assert!(seen.insert(challenge));
        }
    }

    #[test]
    fn responses_are_decoded_or_refused() {
        let digest = "b913a602c7eda7a495b4e6e7334d3890";
        let ok: [(&str, &str); 5] = [
            ("tim b913a602c7eda7a495b4e6e7334d3890", "tim"),
            ("tim B913A602C7EDA7A495B4E6E7334D3890", "tim"),
            ("first last b913a602c7eda7a495b4e6e7334d3890", "first last"),
            ("user@example.com b913a602c7eda7a495b4e6e7334d3890", "user@example.com"),
            ("t b913a602c7eda7a495b4e6e7334d3890", "t"),
        ];
        for (text, user) in ok {
            let got = decode_cram_response(&BASE64.encode(text)).unwrap();
            assert_eq!((got.0.as_str(), got.1.as_str()), (user, digest), "{text:?}");
        }
        // Unpadded base64 and surrounding white space are tolerated.
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode("tim ".to_string() + digest);
        assert!(decode_cram_response(&format!(" {unpadded}\r\n")).is_ok());

        let malformed = [
            "tim".to_string(),
            format!("tim{digest}"),
            format!(" {digest}"),
            format!("tim {}", &digest[..31]),
            format!("tim {digest}0"),
            format!("tim {digest} "),
            format!("tim {}g", &digest[..31]),
            format!("ti\0m {digest}"),
            format!("tim {}\0", &digest[..31]),
            format!("tim\r\n {digest}"),
            String::new(),
        ];
        for text in &malformed {
            assert_eq!(decode_cram_response(&BASE64.encode(text)), Err(ResponseError::Malformed), "{text:?}");
        }
        let not_utf8 = BASE64.encode(b"t\xffm b913a602c7eda7a495b4e6e7334d3890");
        assert_eq!(decode_cram_response(&not_utf8), Err(ResponseError::Malformed));
        for line in ["*", "dGlt!", "dGltIGI5MTNh=YjAy", "d"] {
            assert_eq!(decode_cram_response(line), Err(ResponseError::BadBase64), "{line:?}");
        }
    }

    #[test]
    fn plain_responses_decode_and_refuse_what_is_not_rfc_4616() {
        let ok = [
            (&b"\0tim\0tanstaaf"[..], "tim", &b"tanstaaf"[..]),
            (b"tim\0tim\0pass word", "tim", b"pass word"),
            (b"\0t\xc3\xa9\0x", "t\u{e9}", b"x"),
        ];
        for (raw, user, password) in ok {
            let got = decode_plain_response(&BASE64.encode(raw)).unwrap();
            assert_eq!((got.0.as_str(), got.1.as_slice()), (user, password), "{raw:?}");
        }
        let malformed: [&[u8]; 7] = [
            b"tim\0tanstaaf",
            b"\0\0pw",
            b"\0tim\0",
            b"other\0tim\0pw",
            b"\0ti\nm\0pw",
            b"\0t\xffm\0pw",
            b"",
        ];
        for raw in malformed {
            assert_eq!(decode_plain_response(&BASE64.encode(raw)), Err(ResponseError::Malformed), "{raw:?}");
        }
        assert_eq!(decode_plain_response("not base64!"), Err(ResponseError::BadBase64));
        assert_eq!(decode_login_field(&BASE64.encode("tim")).unwrap(), b"tim");
        assert_eq!(decode_login_field(&BASE64.encode("")), Err(ResponseError::Malformed));
    }

    #[test]
    fn clear_passwords_verify_against_clear_secrets_and_contexts() {
        let plain = Secret::Plain(RFC2195_SECRET.to_vec());
        let context = Secret::CramMd5Context(context_of(RFC2195_CONTEXT));
        for secret in [&plain, &context] {
            assert!(verify_password(secret, RFC2195_SECRET), "{secret:?}");
            assert!(!verify_password(secret, b"tanstaaftanstaaF"), "{secret:?}");
            assert!(!verify_password(secret, b"tanstaaf"), "{secret:?}");
            assert!(!verify_password(secret, b""), "{secret:?}");
        }
    }
}
