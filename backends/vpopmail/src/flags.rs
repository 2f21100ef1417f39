//! vpopmail's per-account flag bits (the `pw_gid` field of vpasswd,
//! `vpopmail.h`) and the domain-wide limits that vpopmail OR-s into them
//! (`vlimits.c`: `<domain dir>/.qmailadmin-limits`, else
//! `~vpopmail/etc/vlimits.default`; an account with `V_OVERRIDE` is exempt).
//!
//! Owns: flag names and values, parsing the `refuse_flags` key, and the
//! limits-file keywords. Does not: read files or decide replies.

/// The flag bits of `vpopmail.h`, by name.
pub const FLAGS: &[(&str, u32)] = &[
    ("NO_PASSWD_CHNG", 0x01),
    ("NO_POP", 0x02),
    ("NO_WEBMAIL", 0x04),
    ("NO_IMAP", 0x08),
    ("BOUNCE_MAIL", 0x10),
    ("NO_RELAY", 0x20),
    ("NO_DIALUP", 0x40),
    ("V_USER0", 0x80),
    ("V_USER1", 0x100),
    ("V_USER2", 0x200),
    ("V_USER3", 0x400),
    ("NO_SMTP", 0x800),
    ("QA_ADMIN", 0x1000),
    ("V_OVERRIDE", 0x2000),
    ("NO_SPAMASSASSIN", 0x4000),
    ("DELETE_SPAM", 0x8000),
    ("SA_ADMIN", 0x10000),
    ("SA_EXPERT", 0x20000),
    ("NO_MAILDROP", 0x40000),
];

pub const NO_SMTP: u32 = 0x800;
pub const NO_RELAY: u32 = 0x20;
pub const V_OVERRIDE: u32 = 0x2000;

/// What `refuse_flags` defaults to: what vpopmail's own SMTP AUTH (`vchkpw`)
/// refuses, `NO_SMTP`. `NO_RELAY` only turns off POP-before-SMTP relaying in
/// vpopmail (`vmoddomlimits -d -g r` sets it for every account of a domain), so
/// refusing it would lock out accounts vpopmail lets authenticate.
pub const DEFAULT_REFUSE: u32 = NO_SMTP;

/// `NO_SMTP|NO_RELAY (0x820)`: the names of the bits in `mask`, and the value.
pub fn describe(mask: u32) -> String {
    let mut names: Vec<String> =
        FLAGS.iter().filter(|(_, bit)| mask & bit != 0).map(|(name, _)| (*name).to_owned()).collect();
    let unnamed = mask & !FLAGS.iter().fold(0, |all, (_, bit)| all | bit);
    if unnamed != 0 {
        names.push(format!("{unnamed:#x}"));
    }
    format!("{} ({mask:#x})", names.join("|"))
}

/// Parses `refuse_flags`: names from [`FLAGS`] (any case) and numbers
/// (decimal or `0x` hex), separated by commas, spaces or `|`. Empty → 0.
pub fn parse_mask(value: &str) -> Result<u32, String> {
    let mut mask = 0;
    for item in value.split([',', '|', ' ', '\t']).filter(|i| !i.is_empty()) {
        let bits = if let Some(hex) = item.strip_prefix("0x").or_else(|| item.strip_prefix("0X")) {
            u32::from_str_radix(hex, 16).ok()
        } else if item.bytes().all(|b| b.is_ascii_digit()) {
            item.parse().ok()
        } else {
            FLAGS.iter().find(|(name, _)| name.eq_ignore_ascii_case(item)).map(|(_, bit)| *bit)
        };
        mask |= bits.ok_or_else(|| {
            format!(
                "'{item}' is neither a number nor a vpopmail flag name (e.g. NO_SMTP, NO_RELAY, NO_DIALUP)"
            )
        })?;
    }
    Ok(mask)
}

/// The flag bits a vpopmail limits file sets, as `vlimits_get_flag_mask()`
/// computes them: one keyword per line, at its start, ended by space, `:`,
/// tab or the line end. An indented line or an unknown keyword is ignored,
/// as vpopmail ignores it.
pub fn limits_mask(content: &[u8]) -> u32 {
    let mut mask = 0;
    for line in content.split(|&b| b == b'\n' || b == b'\r') {
        let token = line.split(|b| b" :\t".contains(b)).next().unwrap_or_default();
        mask |= match token {
            b"disable_pop" => 0x02,
            b"disable_smtp" => NO_SMTP,
            b"disable_imap" => 0x08,
            b"disable_external_relay" => NO_RELAY,
            b"disable_webmail" => 0x04,
            b"disable_password_changing" => 0x01,
            b"disable_dialup" => 0x40,
            b"disable_spamassassin" => 0x4000,
            b"delete_spam" => 0x8000,
            b"disable_maildrop" => 0x40000,
            _ => 0,
        };
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_from_names_and_numbers() {
        let cases: [(&str, Result<u32, &str>); 9] = [
            ("NO_SMTP, NO_RELAY", Ok(0x820)),
            ("no_smtp|no_dialup", Ok(0x840)),
            ("2048", Ok(0x800)),
            ("0x800 0x20", Ok(0x820)),
            ("NO_SMTP,,NO_SMTP", Ok(0x800)),
            ("", Ok(0)),
            ("NO_SMTPX", Err("'NO_SMTPX'")),
            ("0xZZ", Err("'0xZZ'")),
            ("-1", Err("'-1'")),
        ];
        for (value, expected) in cases {
            match (parse_mask(value), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{value:?}"),
                (Err(err), Err(want)) => assert!(err.contains(want), "{value:?}: {err}"),
                (got, want) => panic!("{value:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn descriptions_name_each_bit() {
        assert_eq!(describe(0x820), "NO_RELAY|NO_SMTP (0x820)");
        assert_eq!(describe(0x800), "NO_SMTP (0x800)");
        assert_eq!(describe(0x8000_0040), "NO_DIALUP|0x80000000 (0x80000040)");
    }

    #[test]
    fn limits_files_as_vpopmail_writes_them() {
        // vlimits_write_limits_file() writes "keyword" lines and "key: value" lines.
        let file = b"maxpopaccounts: 10\nquota: 100\ndisable_smtp\r\ndisable_external_relay\n\
                     disable_dialup\nperm_account: 0\n  \n";
        assert_eq!(limits_mask(file), NO_SMTP | NO_RELAY | 0x40);
        assert_eq!(limits_mask(b"disable_pop\ndisable_imap\n"), 0x0a);
        assert_eq!(limits_mask(b"# disable_smtp\nxdisable_smtp\n"), 0);
        // Indented or unknown: ignored, as vpopmail does.
        assert_eq!(limits_mask(b"  disable_smtp\n\tdisable_smtp\nfrobnicate\ndisable_imap\n"), 0x08);
        assert_eq!(limits_mask(b""), 0);
    }
}
