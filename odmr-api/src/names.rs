//! Domain names and addresses, as every backend and the host must read them
//! alike.
//!
//! The host and all backends share one rule for what a domain is
//! ([`is_valid_domain`], RFC 2645's ATRN syntax) and one rule for which
//! domain an address belongs to ([`domain_of`], [`in_domains`]), so that a
//! domain the host accepts is one a backend can serve, and `has_pending`
//! and a cursor select exactly the same recipients.
//!
//! Safe code only; no policy beyond these rules (no SMTP, files or
//! configuration).

/// The RFC 2645 domain rule: at least two labels separated by single dots;
/// each label 1 to 63 ASCII letters, digits or hyphens, not beginning or
/// ending with a hyphen; at most 255 octets in all; no trailing dot. Case is
/// not checked. Safe to use as a file-name component once lower-cased (no
/// `/`, no `..`).
pub fn is_valid_domain(d: &str) -> bool {
    if d.is_empty() || d.len() > 255 {
        return false;
    }
    let mut labels = 0;
    for label in d.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 {
            return false;
        }
        if !b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') {
            return false;
        }
        if b[0] == b'-' || b[b.len() - 1] == b'-' {
            return false;
        }
        labels += 1;
    }
    labels >= 2
}

/// `domain` in lower case if it is valid ([`is_valid_domain`]), else an
/// error naming it (escaped, so it is safe in a log line).
pub fn checked_domain(domain: &str) -> Result<String, String> {
    if is_valid_domain(domain) {
        Ok(domain.to_ascii_lowercase())
    } else {
        Err(format!("domain '{}' is not a plain host name", domain.escape_debug()))
    }
}

/// The domains a queue was asked for, lower case, without repeats, in the
/// order given. The host validates ATRN domains already; this is a backend's
/// own guard before a domain reaches a path or a comparison. The first
/// invalid domain refuses the whole request (the error names it).
pub fn requested_domains(domains: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::with_capacity(domains.len());
    for d in domains {
        let d = checked_domain(d)?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The domain of `address`: the text after its last `@` (a quoted local
/// part may itself contain `@`), or None without one.
pub fn domain_of(address: &str) -> Option<&str> {
    address.rfind('@').map(|at| &address[at + 1..])
}

/// Does `address` belong to one of `domains`? Its domain ([`domain_of`]) is
/// compared exactly, ignoring ASCII case: a subdomain or a longer name is a
/// different domain.
pub fn in_domains(address: &str, domains: &[String]) -> bool {
    domain_of(address).is_some_and(|domain| domains.iter().any(|d| d.eq_ignore_ascii_case(domain)))
}

/// A client network as Dovecot's `allow_nets` writes one: an IP address
/// (`192.0.2.1`, `2001:db8::1`) or an address with a prefix length that fits
/// it (`10.0.0.0/8`, `2001:db8::/32`). What backends hand to the host's
/// `allowed_networks` check.
pub fn is_valid_network(net: &str) -> bool {
    let (address, prefix) = match net.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (net, None),
    };
    let Ok(address) = address.parse::<std::net::IpAddr>() else { return false };
    let bits = if address.is_ipv4() { 32 } else { 128 };
    match prefix {
        None => true,
        Some(p) => p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u8>().is_ok_and(|p| p <= bits),
    }
}

/// The networks of an `allow_nets` value (comma- or space-separated), each
/// checked by [`is_valid_network`]: (the valid ones, the others as written).
pub fn split_networks(value: &str) -> (Vec<String>, Vec<String>) {
    let items = value.split([',', ' ', '\t']).filter(|n| !n.is_empty());
    let (valid, invalid): (Vec<&str>, Vec<&str>) = items.partition(|n| is_valid_network(n));
    (valid.into_iter().map(str::to_string).collect(), invalid.into_iter().map(str::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_rule_and_allow_nets_lists() {
        let cases = [
            ("192.0.2.1", true),
            ("10.0.0.0/8", true),
            ("0.0.0.0/0", true),
            ("2001:db8::/32", true),
            ("::1", true),
            ("10.0.0.0/33", false),
            ("2001:db8::/129", false),
            ("10.0.0.0/", false),
            ("10.0.0.0/+8", false),
            ("example.org", false),
            ("", false),
        ];
        for (net, valid) in cases {
            assert_eq!(is_valid_network(net), valid, "{net:?}");
        }
        let (valid, invalid) = split_networks("10.0.0.0/8, 192.0.2.1,,bogus 2001:db8::/32");
        assert_eq!(valid, ["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]);
        assert_eq!(invalid, ["bogus"]);
    }

    #[test]
    fn the_domain_rule() {
        let cases = [
            ("example.org", true),
            ("Example.ORG", true),
            ("a.b", true),
            ("a.b.c.d", true),
            ("0.example", true),
            ("a-b.example", true),
            ("ok-1.example", true),
            ("mail-1.example.co.uk", true),
            ("xn--bcher-kva.example", true),
            ("example", false),
            ("localhost", false),
            ("", false),
            (".", false),
            ("../x", false),
            ("./example.org", false),
            (".example.org", false),
            ("example.org.", false),
            ("a..b", false),
            ("ex_ample.org", false),
            ("under_score.example", false),
            ("a b.example", false),
            ("a/b.example", false),
            ("bücher.example", false),
            ("-hy.example", false),
            ("hy-.example", false),
            ("example.-org", false),
        ];
        for (d, want) in cases {
            assert_eq!(is_valid_domain(d), want, "{d:?}");
        }
    }

    #[test]
    fn lengths() {
        let label = "a".repeat(63);
        assert!(is_valid_domain(&format!("{label}.example")));
        assert!(!is_valid_domain(&format!("a{label}.example")));
        // 4 labels of 63 and dots: 255 octets, then one more.
        let long = [label.as_str(); 4].join(".");
        assert_eq!(long.len(), 255);
        assert!(is_valid_domain(&long));
        assert!(!is_valid_domain(&format!("{long}a")));
    }

    #[test]
    fn checked_domains_are_lowered_and_errors_are_escaped() {
        assert_eq!(checked_domain("Example.ORG").unwrap(), "example.org");
        for bad in ["", "a..b", ".a.b", "a b", "a/b", "é.org", "..", "../etc", "ex\0ample", "localhost"] {
            assert!(checked_domain(bad).is_err(), "{bad:?}");
        }
        assert_eq!(checked_domain("a\nb").unwrap_err(), "domain 'a\\nb' is not a plain host name");
    }

    #[test]
    fn requested_domains_are_lowered_and_deduplicated() {
        let list = |l: &[&str]| l.iter().map(|d| d.to_string()).collect::<Vec<_>>();
        let got = requested_domains(&list(&["B.example", "a.example", "b.EXAMPLE"])).unwrap();
        assert_eq!(got, ["b.example", "a.example"]);
        let err = requested_domains(&list(&["a.example", "../etc"])).unwrap_err();
        assert!(err.contains("'../etc'"), "{err}");
        assert!(requested_domains(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_domain_of_an_address_is_after_the_last_at() {
        assert_eq!(domain_of("a@example.org"), Some("example.org"));
        assert_eq!(domain_of("\"x@y\"@example.org"), Some("example.org"));
        assert_eq!(domain_of("a@"), Some(""));
        assert_eq!(domain_of("postmaster"), None);
    }

    #[test]
    fn domains_match_exactly_and_case_insensitively() {
        let want = vec!["example.org".to_string()];
        assert!(in_domains("a@example.org", &want));
        assert!(in_domains("a@EXAMPLE.ORG", &want));
        assert!(in_domains("\"x@y\"@example.org", &want));
        assert!(in_domains("\"x@y\"@Example.Org", &want));
        assert!(!in_domains("a@example.org.uk", &want));
        assert!(!in_domains("a@xexample.org", &want));
        assert!(!in_domains("a@sub.example.org", &want));
        assert!(!in_domains("example.org", &want));
        assert!(!in_domains("postmaster", &want));
        assert!(!in_domains("a@example.org@other.example", &want));
        assert!(!in_domains("example.org@other.example", &want));
    }
}
