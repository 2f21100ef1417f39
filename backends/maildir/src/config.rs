//! The `[queue]` section of a `builtin:maildir` instance: the `directory` and
//! `strip_prefix` templates, and the check that a domain is safe to put into a
//! path.
//!
//! Owns: validating the ini keys (errors name the key), expanding `{domain}`,
//! and refusing domains that could escape the spool (`..`, `/`, odd bytes;
//! the rule is `odmr_api::names`').
//! Does not: touch the file system, parse messages or take locks.

use odmr_api::names::checked_domain;
use odmr_api::settings::{check_absolute, Settings};
use std::path::PathBuf;

/// The placeholder substituted in both templates.
const PLACEHOLDER: &str = "{domain}";

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Path template of each domain's maildir; contains `{domain}`.
    directory: String,
    /// qmail virtualdomains prefix to strip from `Delivered-To`; may contain `{domain}`.
    strip_prefix: Option<String>,
    /// `claim = yes`: front ends on several hosts share the spool (see `claim`).
    pub claims: Option<Claims>,
}

/// How this front end claims messages in a shared spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `claim_host`, default the system's host name: part of each claim name.
    pub host: String,
    /// `stale_claim_after`, seconds (default 3600): a claim older than this
    /// is a dead front end's and is returned.
    pub stale_after: u64,
}

impl Config {
    /// Build from the `(key, value)` pairs of the ini section. Unknown keys,
    /// repeated keys and bad values are errors naming the key.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut settings = Settings::new(pairs)?;
        let directory = settings.take_str("directory");
        let strip_prefix = settings.take_str("strip_prefix");
        let claim = settings.take_with("claim", |v| match v {
            "yes" => Ok(true),
            "no" => Ok(false),
            _ => Err(format!("'{v}' is not yes or no")),
        })?;
        let claim_host = settings.take_str("claim_host").map(str::to_owned);
        let stale_after = settings.take_u64("stale_claim_after")?;
        settings.finish()?;
        let claims = match claim.unwrap_or(false) {
            true => Some(Claims {
                host: claim_host.unwrap_or_else(|| {
                    nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
                }),
                stale_after: stale_after.unwrap_or(3600),
            }),
            false if claim_host.is_some() || stale_after.is_some() => {
                return Err("keys 'claim_host' and 'stale_claim_after' need claim = yes".into())
            }
            false => None,
        };
        for (key, value) in [("directory", directory), ("strip_prefix", strip_prefix)] {
            if let Some(value) = value {
                check_template(key, value)?;
            }
        }
        let directory = directory.ok_or("key 'directory' is required (e.g. /var/spool/odmr/{domain})")?;
        check_absolute("directory", directory)?;
        if !directory.contains(PLACEHOLDER) {
            return Err(format!("key 'directory': '{directory}' does not contain {PLACEHOLDER}"));
        }
        Ok(Config {
            directory: directory.to_owned(),
            strip_prefix: strip_prefix.filter(|p| !p.is_empty()).map(str::to_owned),
            claims,
        })
    }

    /// The maildir of `domain`, or an error when the domain is not safe to
    /// substitute into a path.
    pub fn maildir(&self, domain: &str) -> Result<PathBuf, String> {
        let domain = checked_domain(domain)?;
        Ok(PathBuf::from(self.directory.replace(PLACEHOLDER, &domain)))
    }

    /// The directory above every domain's maildir: the template up to the
    /// `/` before `{domain}` (`/var/spool/odmr/{domain}` → `/var/spool/odmr`).
    pub fn spool_root(&self) -> PathBuf {
        let before = &self.directory[..self.directory.find(PLACEHOLDER).unwrap_or(0)];
        let root = &before[..before.rfind('/').unwrap_or(0)];
        PathBuf::from(if root.is_empty() { "/" } else { root })
    }

    /// The directory template, as configured.
    pub fn template(&self) -> &str {
        &self.directory
    }

    /// The domain whose maildir lies under the spool root's entry `name`
    /// (the component with `{domain}`, e.g. `example.org` or
    /// `example.org.d` for a component `{domain}.d`), if it is a valid one.
    pub fn domain_of_entry(&self, name: &str) -> Option<String> {
        let (before, after) = self.directory.split_once(PLACEHOLDER).expect("checked in from_pairs");
        let prefix = &before[before.rfind('/').map_or(0, |i| i + 1)..];
        let suffix = after.split('/').next().unwrap_or("");
        let domain = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
        checked_domain(domain).ok().filter(|d| d == domain)
    }

    /// The prefix to strip from `Delivered-To` addresses found in `domain`'s
    /// maildir, with `{domain}` expanded; None when stripping is off.
    pub fn prefix_for(&self, domain: &str) -> Option<String> {
        self.strip_prefix.as_ref().map(|p| p.replace(PLACEHOLDER, domain))
    }
}

/// Reject empty values, control characters and any brace that is not part of
/// `{domain}` (a typo such as `{domian}` would otherwise become a literal path).
fn check_template(key: &str, value: &str) -> Result<(), String> {
    if key == "directory" && value.is_empty() {
        return Err("key 'directory' is empty".into());
    }
    if value.chars().any(char::is_control) {
        return Err(format!("key '{key}' contains a control character"));
    }
    if value.replace(PLACEHOLDER, "").contains(['{', '}']) {
        return Err(format!("key '{key}': '{value}' has a placeholder other than {PLACEHOLDER}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_spool_root_is_the_template_above_the_domain() {
        let cases = [
            ("/var/spool/odmr/{domain}", "/var/spool/odmr"),
            ("/home/vpopmail/domains/{domain}/odmr/Maildir", "/home/vpopmail/domains"),
            ("/spool/x-{domain}/Maildir", "/spool"),
            ("/{domain}", "/"),
        ];
        for (template, root) in cases {
            let c = Config::from_pairs(&pairs(&[("directory", template)])).unwrap();
            assert_eq!(c.spool_root(), PathBuf::from(root), "{template}");
        }
    }

    #[test]
    fn directory_is_expanded_per_domain() {
        let c = Config::from_pairs(&pairs(&[("directory", "/var/spool/odmr/{domain}/Maildir")])).unwrap();
        assert_eq!(c.maildir("example.org").unwrap(), PathBuf::from("/var/spool/odmr/example.org/Maildir"));
        assert_eq!(c.maildir("Example.ORG").unwrap(), PathBuf::from("/var/spool/odmr/example.org/Maildir"));
        assert_eq!(c.prefix_for("example.org"), None);
    }

    #[test]
    fn the_spool_root_and_its_entries_lead_back_to_domains() {
        for (template, root, entry, domain) in [
            ("/var/spool/odmr/{domain}", "/var/spool/odmr", "example.org", Some("example.org")),
            ("/var/spool/odmr/{domain}/Maildir", "/var/spool/odmr", "example.org", Some("example.org")),
            ("/home/vpop/d-{domain}.dir/M", "/home/vpop", "d-example.org.dir", Some("example.org")),
            ("/{domain}", "/", "example.org", Some("example.org")),
            ("/s/{domain}", "/s", "..", None),
            ("/s/{domain}", "/s", "Example.Org", None),
            ("/s/d-{domain}", "/s", "example.org", None),
        ] {
            let c = Config::from_pairs(&pairs(&[("directory", template)])).unwrap();
            assert_eq!(c.spool_root(), PathBuf::from(root), "{template}");
            assert_eq!(c.domain_of_entry(entry).as_deref(), domain, "{template} {entry}");
        }
    }

    #[test]
    fn bad_domains_never_become_paths() {
        let c = Config::from_pairs(&pairs(&[("directory", "/spool/{domain}")])).unwrap();
        for bad in
            ["..", "../etc", "a/b", "a..b", ".example.org", "example.org.", "", "a b", "ex\0ample", "é.org"]
        {
            assert!(c.maildir(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn strip_prefix_may_name_the_domain() {
        let c = Config::from_pairs(&pairs(&[("directory", "/s/{domain}"), ("strip_prefix", "{domain}-")]))
            .unwrap();
        assert_eq!(c.prefix_for("example.com").as_deref(), Some("example.com-"));
        let c = Config::from_pairs(&pairs(&[("directory", "/s/{domain}"), ("strip_prefix", "")])).unwrap();
        assert_eq!(c.prefix_for("example.com"), None);
    }

    #[test]
    fn claims_are_off_unless_asked_for() {
        let c = Config::from_pairs(&pairs(&[("directory", "/s/{domain}")])).unwrap();
        assert_eq!(c.claims, None);
        let c = Config::from_pairs(&pairs(&[
            ("directory", "/s/{domain}"),
            ("claim", "yes"),
            ("claim_host", "a"),
        ]))
        .unwrap();
        assert_eq!(c.claims, Some(Claims { host: "a".into(), stale_after: 3600 }));
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "'directory' is required"),
            (&[("directory", "/s/{domain}"), ("colour", "x")], "unknown key 'colour'"),
            (
                &[("directory", "/s/{domain}"), ("directory", "/t/{domain}")],
                "'directory' is given more than once",
            ),
            (&[("directory", "relative/{domain}")], "key 'directory'"),
            (&[("directory", "/s/fixed")], "key 'directory'"),
            (&[("directory", "/s/{domian}")], "key 'directory'"),
            (&[("directory", "/s/{domain}"), ("strip_prefix", "{user}-")], "key 'strip_prefix'"),
            (&[("directory", "/s/{domain}"), ("claim", "maybe")], "key 'claim'"),
            (&[("directory", "/s/{domain}"), ("claim_host", "a")], "need claim = yes"),
            (
                &[("directory", "/s/{domain}"), ("claim", "yes"), ("stale_claim_after", "soon")],
                "stale_claim_after",
            ),
        ];
        for (input, expected) in cases {
            let err = Config::from_pairs(&pairs(input)).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }
}
