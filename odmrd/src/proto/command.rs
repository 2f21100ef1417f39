//! The provider side of the protocol: the customer's commands in, our replies out.
//!
//! Owns: the limits of the customer's command lines (the shared `LineSplitter` splits them),
//! parsing the commands of the initial and authenticated states (EHLO, AUTH, ATRN, ...), the
//! RFC 2645 ATRN domain syntax, and formatting our replies. Does not: parse what the customer answers after the
//! turnaround (that is [`super::reply`]).

use super::printable;
use std::fmt;

/// Longest command line we accept, in octets including the CRLF (RFC 5321 4.5.3.1.4).
pub const MAX_COMMAND_LINE: usize = 512;

/// Longest AUTH continuation line (a SASL response after `334`) we accept, in octets including
/// the CRLF (RFC 4954 section 4).
pub const MAX_AUTH_LINE: usize = 12288;

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

/// A command of the initial or authenticated state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// EHLO with its argument (the rest of the line, trimmed).
    Ehlo(String),
    /// HELO with its argument (the rest of the line, trimmed).
    Helo(String),
    /// AUTH mechanism \[initial-response\].
    Auth {
        /// The mechanism name, upper-cased.
        mechanism: String,
        /// The initial response exactly as sent (base64, or `=` for an empty one).
        initial_response: Option<String>,
    },
    /// ATRN with its domains: lower-cased, validated, de-duplicated, order kept; empty = bare ATRN.
    Atrn(Vec<String>),
    Quit,
    Rset,
    Noop,
    Help,
    StartTls,
    /// A command we recognise but refuse with 502; the upper-cased verb.
    NotImplemented(String),
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// Unknown verb (500).
    Unknown,
    /// Syntax error in the parameters (501) with this reply text.
    Syntax(&'static str),
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandError::Unknown => f.write_str("command unrecognized"),
            CommandError::Syntax(text) => f.write_str(text),
        }
    }
}

impl std::error::Error for CommandError {}

/// Verbs that are part of SMTP but have no place in an ODMR session: refused with 502.
const NOT_IMPLEMENTED: &[&str] =
    &["MAIL", "RCPT", "DATA", "BDAT", "VRFY", "EXPN", "ETRN", "TURN", "SEND", "SOML", "SAML"];

/// Parse one command line (without its CRLF). Verbs are case-insensitive and separated from
/// their parameters by spaces or tabs; surplus whitespace around parameters is ignored.
///
/// A NUL, any other control character (except HT), or invalid UTF-8 is a syntax error (501).
/// EHLO and HELO need an argument. QUIT, RSET and STARTTLS take none (RFC 5321, RFC 3207);
/// NOOP and HELP ignore theirs.
pub fn parse_command(line: &[u8]) -> Result<Command, CommandError> {
    if line.contains(&0) {
        return Err(CommandError::Syntax("NUL character in command"));
    }
    let line = std::str::from_utf8(line).map_err(|_| CommandError::Syntax("command is not valid UTF-8"))?;
    if line.chars().any(|c| c.is_control() && c != '\t') {
        return Err(CommandError::Syntax("control character in command"));
    }
    let (verb, args) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i + 1..].trim_matches([' ', '\t'])),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    match verb.as_str() {
        "EHLO" if args.is_empty() => Err(CommandError::Syntax("EHLO requires a domain")),
        "EHLO" => Ok(Command::Ehlo(args.to_string())),
        "HELO" if args.is_empty() => Err(CommandError::Syntax("HELO requires a domain")),
        "HELO" => Ok(Command::Helo(args.to_string())),
        "AUTH" => parse_auth(args),
        "ATRN" => parse_atrn_domains(args).map(Command::Atrn),
        "QUIT" => no_args(args, Command::Quit, "QUIT takes no parameters"),
        "RSET" => no_args(args, Command::Rset, "RSET takes no parameters"),
        "STARTTLS" => no_args(args, Command::StartTls, "STARTTLS takes no parameters"),
        "NOOP" => Ok(Command::Noop),
        "HELP" => Ok(Command::Help),
        v if NOT_IMPLEMENTED.contains(&v) => Ok(Command::NotImplemented(verb)),
        _ => Err(CommandError::Unknown),
    }
}

fn no_args(args: &str, command: Command, error: &'static str) -> Result<Command, CommandError> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(CommandError::Syntax(error))
    }
}

fn parse_auth(args: &str) -> Result<Command, CommandError> {
    let mut words = args.split([' ', '\t']).filter(|w| !w.is_empty());
    let Some(mechanism) = words.next() else {
        return Err(CommandError::Syntax("AUTH requires a mechanism name"));
    };
    let initial_response = words.next().map(str::to_string);
    if words.next().is_some() {
        return Err(CommandError::Syntax("AUTH takes a mechanism and an optional initial response"));
    }
    // RFC 4422 3.1: 1 to 20 characters of A-Z, 0-9, '-' and '_'.
    let mechanism = mechanism.to_ascii_uppercase();
    let valid = (1..=20).contains(&mechanism.len())
        && mechanism.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !valid {
        return Err(CommandError::Syntax("invalid SASL mechanism name"));
    }
    Ok(Command::Auth { mechanism, initial_response })
}

/// Parse the parameter of ATRN (the text after the verb).
///
/// RFC 2645: `atrn = "ATRN" [SP domain *("," domain)]`, `domain = sub-domain 1*("." sub-domain)`,
/// labels of letters, digits and hyphens that begin and end with a letter or digit. Empty (or
/// only whitespace) means bare ATRN and gives an empty list.
///
/// The ABNF allows no whitespace inside the list. We nevertheless accept spaces and tabs around
/// each comma (`a.example, b.example`): they cannot make a domain ambiguous, fetchmail never
/// sends them, and a person typing the command gets what they meant instead of a 501. Everything
/// else is strict: an empty element (`a.example,,b.example`, a trailing comma), a trailing dot,
/// a single label, `_`, and anything non-ASCII are syntax errors. Domains are lower-cased and
/// de-duplicated, keeping the order of first appearance.
pub fn parse_atrn_domains(args: &str) -> Result<Vec<String>, CommandError> {
    let args = args.trim_matches([' ', '\t']);
    if args.is_empty() {
        return Ok(Vec::new());
    }
    let mut domains: Vec<String> = Vec::new();
    for part in args.split(',') {
        let domain = part.trim_matches([' ', '\t']);
        if domain.is_empty() {
            return Err(CommandError::Syntax("empty domain in ATRN list"));
        }
        if !is_valid_domain(domain) {
            return Err(CommandError::Syntax("syntax error in ATRN domain list"));
        }
        let domain = domain.to_ascii_lowercase();
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    Ok(domains)
}

/// Does this ATRN command line have white space around a comma of its domain list? Accepted
/// (see [`parse_atrn_domains`]) but outside RFC 2645's grammar, so the session logs it.
pub fn atrn_list_has_spaces(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let args = text.trim_end_matches(['\r', '\n']).get(4..).unwrap_or("").trim_matches([' ', '\t']);
    args.split(',').any(|part| part != part.trim_matches([' ', '\t']))
}

/// The RFC 2645 domain rule, shared with every backend: at least two labels separated by single
/// dots; each label 1 to 63 ASCII letters, digits or hyphens, not beginning or ending with a
/// hyphen; at most 255 octets in all; no trailing dot. Safe to use as a file-name component once
/// lower-cased (no `/`, no `..`).
pub use odmr_api::names::is_valid_domain;

// ---------------------------------------------------------------------------------------------
// Our replies
// ---------------------------------------------------------------------------------------------

/// One reply line: `"250 text\r\n"` (`"250\r\n"` when `text` is empty). Control characters in
/// `text` are replaced so a reply can never span lines.
pub fn reply(code: u16, text: &str) -> String {
    if text.is_empty() {
        format!("{code}\r\n")
    } else {
        format!("{code} {}\r\n", printable(text))
    }
}

/// A multi-line reply: `"250-a\r\n250-b\r\n250 c\r\n"`. With no lines, like `reply(code, "")`.
pub fn reply_multiline(code: u16, lines: &[&str]) -> String {
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let sep = if i + 1 == lines.len() { ' ' } else { '-' };
        out.push_str(&format!("{code}{sep}{}\r\n", printable(line)));
    }
    if out.is_empty() {
        out = reply(code, "");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(c: Command) -> Result<Command, CommandError> {
        Ok(c)
    }

    /// Stands for "any 501 text" in the table below.
    const ANY: &str = "";

    /// Compare results, treating any Syntax text as equal when the expectation's text is "".
    fn same(got: &Result<Command, CommandError>, want: &Result<Command, CommandError>) -> bool {
        match (got, want) {
            (Err(CommandError::Syntax(_)), Err(CommandError::Syntax(ANY))) => true,
            _ => got == want,
        }
    }

    fn atrn(d: &[&str]) -> Result<Command, CommandError> {
        Ok(Command::Atrn(d.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn parse_command_table() {
        use Command::*;
        use CommandError::*;
        let long = format!("ATRN {}.example", "a".repeat(64));
        let cases: Vec<(&[u8], Result<Command, CommandError>)> = vec![
            (b"EHLO client.example", ok(Ehlo("client.example".into()))),
            (b"ehlo client.example", ok(Ehlo("client.example".into()))),
            (b"EhLo  client.example  ", ok(Ehlo("client.example".into()))),
            (b"EHLO [192.0.2.1]", ok(Ehlo("[192.0.2.1]".into()))),
            (b"EHLO", Err(Syntax("EHLO requires a domain"))),
            (b"EHLO   ", Err(Syntax("EHLO requires a domain"))),
            (b"HELO client.example", ok(Helo("client.example".into()))),
            (b"helo", Err(Syntax("HELO requires a domain"))),
            (b"AUTH CRAM-MD5", ok(Auth { mechanism: "CRAM-MD5".into(), initial_response: None })),
            (
                b"auth plain AGZvbwBiYXI=",
                ok(Auth { mechanism: "PLAIN".into(), initial_response: Some("AGZvbwBiYXI=".into()) }),
            ),
            (b"AUTH login =", ok(Auth { mechanism: "LOGIN".into(), initial_response: Some("=".into()) })),
            (b"AUTH", Err(Syntax(ANY))),
            (b"AUTH PLAIN a b", Err(Syntax(ANY))),
            (b"AUTH CRAM/MD5", Err(Syntax(ANY))),
            (b"AUTH ABCDEFGHIJKLMNOPQRSTU", Err(Syntax(ANY))),
            (b"ATRN", atrn(&[])),
            (b"atrn   ", atrn(&[])),
            (b"ATRN example.org", atrn(&["example.org"])),
            (b"ATRN Example.ORG", atrn(&["example.org"])),
            (b"ATRN a.example,b.example,A.example", atrn(&["a.example", "b.example"])),
            (b"ATRN example.org.uk", atrn(&["example.org.uk"])),
            (b"ATRN ../x", Err(Syntax(ANY))),
            (b"ATRN example", Err(Syntax(ANY))),
            (long.as_bytes(), Err(Syntax(ANY))),
            (b"QUIT", ok(Quit)),
            (b"quit", ok(Quit)),
            (b"QUIT now", Err(Syntax("QUIT takes no parameters"))),
            (b"RSET", ok(Rset)),
            (b"Rset x", Err(Syntax("RSET takes no parameters"))),
            (b"NOOP", ok(Noop)),
            (b"noop anything at all", ok(Noop)),
            (b"HELP", ok(Help)),
            (b"help ATRN", ok(Help)),
            (b"STARTTLS", ok(StartTls)),
            (b"starttls x", Err(Syntax("STARTTLS takes no parameters"))),
            (b"MAIL FROM:<a@b.example>", ok(NotImplemented("MAIL".into()))),
            (b"rcpt TO:<a@b.example>", ok(NotImplemented("RCPT".into()))),
            (b"DATA", ok(NotImplemented("DATA".into()))),
            (b"BDAT 10 LAST", ok(NotImplemented("BDAT".into()))),
            (b"VRFY postmaster", ok(NotImplemented("VRFY".into()))),
            (b"EXPN list", ok(NotImplemented("EXPN".into()))),
            (b"ETRN example.org", ok(NotImplemented("ETRN".into()))),
            (b"turn", ok(NotImplemented("TURN".into()))),
            (b"SEND FROM:<>", ok(NotImplemented("SEND".into()))),
            (b"SOML FROM:<>", ok(NotImplemented("SOML".into()))),
            (b"saml FROM:<>", ok(NotImplemented("SAML".into()))),
            (b"", Err(Unknown)),
            (b"   ", Err(Unknown)),
            (b"FOO", Err(Unknown)),
            (b"QUITX", Err(Unknown)),
            (b"EHLOclient", Err(Unknown)),
            (b" QUIT", Err(Unknown)),
            (b"QU\0IT", Err(Syntax("NUL character in command"))),
            (b"EHLO a\0b", Err(Syntax("NUL character in command"))),
            (b"EHLO \xff\xfe", Err(Syntax("command is not valid UTF-8"))),
            (b"EHLO a\rb", Err(Syntax("control character in command"))),
            (b"EHLO a\x1bb", Err(Syntax("control character in command"))),
            (b"EHLO\tclient.example", ok(Ehlo("client.example".into()))),
        ];
        for (input, want) in cases {
            let got = parse_command(input);
            assert!(same(&got, &want), "{:?}: got {got:?}, want {want:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn spaces_in_an_atrn_list_are_noticed() {
        assert!(atrn_list_has_spaces(b"ATRN a.example, b.example\r\n"));
        assert!(atrn_list_has_spaces(b"atrn a.example ,b.example"));
        assert!(!atrn_list_has_spaces(b"ATRN a.example,b.example\r\n"));
        assert!(!atrn_list_has_spaces(b"ATRN  a.example\r\n"));
        assert!(!atrn_list_has_spaces(b"ATRN"));
    }

    #[test]
    fn atrn_domains_table() {
        let d63 = "a".repeat(63);
        let d64 = "a".repeat(64);
        let label63 = format!("{d63}.example");
        let long_ok = format!("{d63}.{d63}.{d63}.{}", "b".repeat(63));
        assert_eq!(long_ok.len(), 255);
        let long_bad = format!("c.{long_ok}"); // valid labels, 257 octets
        let cases: Vec<(String, Option<Vec<&str>>)> = vec![
            ("".into(), Some(vec![])),
            ("  ".into(), Some(vec![])),
            ("example.org".into(), Some(vec!["example.org"])),
            ("EXAMPLE.Org".into(), Some(vec!["example.org"])),
            ("example.org.uk".into(), Some(vec!["example.org.uk"])),
            ("a-b.example,x1.example".into(), Some(vec!["a-b.example", "x1.example"])),
            ("1.2".into(), Some(vec!["1.2"])),
            ("a.example,b.example,a.example".into(), Some(vec!["a.example", "b.example"])),
            ("b.example,A.EXAMPLE,a.example".into(), Some(vec!["b.example", "a.example"])),
            ("a.example, b.example".into(), Some(vec!["a.example", "b.example"])),
            ("a.example ,\tb.example".into(), Some(vec!["a.example", "b.example"])),
            (label63.clone(), Some(vec![&label63])),
            (long_ok.clone(), Some(vec![&long_ok])),
            (long_bad, None),
            (format!("{d64}.example"), None),
            ("../x".into(), None),
            ("..".into(), None),
            ("a..b".into(), None),
            ("example".into(), None),
            ("example.org.".into(), None),
            (".example.org".into(), None),
            ("ex_ample.org".into(), None),
            ("-a.example".into(), None),
            ("a-.example".into(), None),
            ("a.-example".into(), None),
            ("a.example,".into(), None),
            (",a.example".into(), None),
            ("a.example,,b.example".into(), None),
            ("a.example b.example".into(), None),
            ("a/b.example".into(), None),
            ("a.example/..".into(), None),
            ("exämple.org".into(), None),
            ("a.example;rm".into(), None),
            ("*.example".into(), None),
        ];
        for (input, want) in cases {
            let got = parse_atrn_domains(&input);
            match want {
                Some(domains) => {
                    assert_eq!(got, Ok(domains.iter().map(|s| s.to_string()).collect()), "{input:?}")
                }
                None => assert!(matches!(got, Err(CommandError::Syntax(_))), "{input:?}: {got:?}"),
            }
        }
    }

    #[test]
    fn is_valid_domain_table() {
        let cases = [
            ("example.org", true),
            ("Example.ORG", true),
            ("a.b.c.d", true),
            ("0.example", true),
            ("xn--bcher-kva.example", true),
            ("example", false),
            ("", false),
            (".", false),
            ("../x", false),
            ("./example.org", false),
            ("example.org.", false),
            ("ex_ample.org", false),
            ("a..b", false),
            ("a b.example", false),
        ];
        for (d, want) in cases {
            assert_eq!(is_valid_domain(d), want, "{d:?}");
        }
    }

    #[test]
    fn reply_formatting() {
        let cases: Vec<(String, &str)> = vec![
            (reply(250, "OK now reversing the connection"), "250 OK now reversing the connection\r\n"),
            (reply(501, ""), "501\r\n"),
            (reply(500, "bad\r\n250 injected"), "500 bad??250 injected\r\n"),
            (reply_multiline(250, &["a", "b", "c"]), "250-a\r\n250-b\r\n250 c\r\n"),
            (reply_multiline(250, &["only"]), "250 only\r\n"),
            (reply_multiline(250, &[]), "250\r\n"),
            (reply_multiline(250, &["x\ny", "z"]), "250-x?y\r\n250 z\r\n"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
    }
}
