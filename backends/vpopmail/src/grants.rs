//! The optional grants file: more domains an account may collect than its
//! own domain and that domain's aliases.
//!
//! ```text
//! # account: domain, domain ...
//! customer1@example.com: example.org, example.net
//! ```
//!
//! Owns: the syntax (one account per line, `#` comments, domains separated by
//! commas and/or spaces, a repeated account adds to its earlier lines) and its
//! validation. Does not: read the file (the caller does, on every ATRN, so
//! edits need no restart) or resolve accounts.

use odmr_api::names::is_valid_domain;
use std::collections::HashMap;

/// Account (`user@domain`, lower case) → granted domains (lower case).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grants {
    pub by_account: HashMap<String, Vec<String>>,
}

/// Parses the file; each warning says `line N: …`.
pub fn parse(content: &[u8]) -> (Grants, Vec<String>) {
    let mut grants = Grants::default();
    let mut warnings = Vec::new();
    for (index, line) in String::from_utf8_lossy(content).lines().enumerate() {
        let number = index + 1;
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let Some((account, domains)) = line.split_once(':') else {
            warnings.push(format!("line {number}: no ':' after the account; line skipped"));
            continue;
        };
        let account = account.trim().to_ascii_lowercase();
        let valid_account = account.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && !local.contains(char::is_whitespace) && is_valid_domain(domain)
        });
        if !valid_account {
            warnings.push(format!(
                "line {number}: '{account}' is not an account of the form user@domain; line skipped"
            ));
            continue;
        }
        let granted = grants.by_account.entry(account.clone()).or_default();
        for domain in domains.split([',', ' ', '\t']).filter(|d| !d.is_empty()) {
            let domain = domain.to_ascii_lowercase();
            if !is_valid_domain(&domain) {
                warnings.push(format!("line {number}: {account}: ignoring invalid domain '{domain}'"));
            } else if !granted.contains(&domain) {
                granted.push(domain);
            }
        }
    }
    (grants, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_domains_comments_and_warnings() {
        let (grants, warnings) = parse(
            b"# grants\n\
              customer1@example.com: example.org, Example.NET\n\
              \n\
              Customer1@EXAMPLE.com: example.org third.example # more\n\
              other@example.com:bad_domain.example,ok.example\n\
              no colon here\n\
              nodomain: a.example\n\
              @example.com: a.example\n\
              empty@example.com:\n",
        );
        let get = |a: &str| grants.by_account.get(a).cloned();
        let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(get("customer1@example.com"), strings(&["example.org", "example.net", "third.example"]));
        assert_eq!(get("other@example.com"), strings(&["ok.example"]));
        assert_eq!(get("empty@example.com"), strings(&[]));
        assert_eq!(grants.by_account.len(), 3);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0]
            .starts_with("line 5: other@example.com: ignoring invalid domain 'bad_domain.example'"));
        assert!(warnings[1].starts_with("line 6: no ':'"));
        assert!(warnings[2].starts_with("line 7: 'nodomain' is not an account"));
        assert!(warnings[3].starts_with("line 8: '@example.com' is not an account"));
    }
}
