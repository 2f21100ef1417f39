//! The `[queue]` section of a `builtin:exim` instance.
//!
//! Owns: validating the ini keys (errors name the key), their defaults, and
//! the check that a requested domain is a plain host name. Does not: touch
//! the file system or run Exim.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `spool_directory` | `/var/spool/exim4` | Exim's `spool_directory` |
//! | `queue` | (none) | a named queue (`spool_directory/NAME/input`) instead of the default one |
//! | `exim` | (none: off) | command run as `COMMAND -Mc ID` after a partial delivery, so that Exim merges the journal at once |
//! | `busy_wait` | `10` | seconds a session keeps retrying messages that Exim has locked, after everything else was sent; `0` = no retry |

use odmr_api::settings::{check_absolute, Settings};
use std::path::PathBuf;
use std::time::Duration;

/// Debian's spool directory; Exim's own default is build-dependent.
pub const DEFAULT_SPOOL_DIRECTORY: &str = "/var/spool/exim4";
/// Default for `busy_wait`.
pub const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(10);

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Exim's `spool_directory`.
    pub spool_directory: PathBuf,
    /// A named queue, or None for the default queue.
    pub queue: Option<String>,
    /// `exim -Mc` command (program and leading arguments), or None when off.
    pub exim: Option<Vec<String>>,
    /// How long to keep retrying locked messages within one session.
    pub busy_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            spool_directory: PathBuf::from(DEFAULT_SPOOL_DIRECTORY),
            queue: None,
            exim: None,
            busy_wait: DEFAULT_BUSY_WAIT,
        }
    }
}

impl Config {
    /// Build from the `(key, value)` pairs of the ini section. Unknown keys,
    /// repeated keys and bad values are errors naming the key.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Config, String> {
        let mut settings = Settings::new(pairs)?;
        settings.forbid_control_characters()?;
        let spool_directory = settings.take_str("spool_directory");
        let queue = settings.take_with("queue", |value| {
            // Exim's queue names are used as one path component.
            let ok = !value.is_empty()
                && value != "."
                && value != ".."
                && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if ok {
                Ok(value.to_owned())
            } else {
                Err(format!("'{value}' is not a queue name (letters, digits, '-', '_', '.')"))
            }
        })?;
        let exim = settings.take_str("exim");
        let busy_wait = settings.take_with("busy_wait", |value| {
            value
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && (0.0..=3600.0).contains(s))
                .map(Duration::from_secs_f64)
                .ok_or_else(|| format!("'{value}' is not a number of seconds from 0 to 3600"))
        })?;
        settings.finish()?;
        let spool_directory = match spool_directory {
            None => PathBuf::from(DEFAULT_SPOOL_DIRECTORY),
            Some(value) => {
                check_absolute("spool_directory", value)?;
                match value.trim_end_matches('/') {
                    "" => return Err("key 'spool_directory': '/' is not a spool directory".into()),
                    trimmed => PathBuf::from(trimmed),
                }
            }
        };
        let exim: Option<Vec<String>> =
            exim.map(|value| value.split_whitespace().map(str::to_string).collect());
        if let Some(program) = exim.as_ref().and_then(|words| words.first()) {
            check_absolute("exim", program)?;
        }
        Ok(Config {
            spool_directory,
            queue,
            exim: exim.filter(|words| !words.is_empty()),
            busy_wait: busy_wait.unwrap_or(DEFAULT_BUSY_WAIT),
        })
    }

    /// The directory holding `input/`, `msglog/` of the configured queue.
    pub fn queue_root(&self) -> PathBuf {
        match &self.queue {
            Some(name) => self.spool_directory.join(name),
            None => self.spool_directory.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_debians() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.spool_directory, PathBuf::from("/var/spool/exim4"));
        assert_eq!(c.queue_root(), PathBuf::from("/var/spool/exim4"));
        assert_eq!(c.exim, None);
        assert_eq!(c.busy_wait, Duration::from_secs(10));
    }

    #[test]
    fn every_key_is_read() {
        let c = Config::from_pairs(&pairs(&[
            ("spool_directory", "/var/spool/exim/"),
            ("queue", "odmr"),
            ("exim", "/usr/sbin/exim4  -C /etc/exim4/odmr.conf"),
            ("busy_wait", "2.5"),
        ]))
        .unwrap();
        assert_eq!(c.spool_directory, PathBuf::from("/var/spool/exim"));
        assert_eq!(c.queue_root(), PathBuf::from("/var/spool/exim/odmr"));
        assert_eq!(c.exim.unwrap(), vec!["/usr/sbin/exim4", "-C", "/etc/exim4/odmr.conf"]);
        assert_eq!(c.busy_wait, Duration::from_millis(2500));
        assert_eq!(Config::from_pairs(&pairs(&[("exim", "")])).unwrap().exim, None);
    }

    #[test]
    fn errors_name_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("directory", "/x")], "unknown key 'directory'"),
            (&[("queue", "a"), ("queue", "b")], "'queue' is given more than once"),
            (&[("spool_directory", "spool")], "key 'spool_directory'"),
            (&[("spool_directory", "/")], "key 'spool_directory'"),
            (&[("queue", "../etc")], "key 'queue'"),
            (&[("queue", "a/b")], "key 'queue'"),
            (&[("queue", "..")], "key 'queue'"),
            (&[("queue", "")], "key 'queue'"),
            (&[("exim", "exim4")], "key 'exim'"),
            (&[("busy_wait", "soon")], "key 'busy_wait'"),
            (&[("busy_wait", "-1")], "key 'busy_wait'"),
            (&[("busy_wait", "NaN")], "key 'busy_wait'"),
        ];
        for (input, expected) in cases {
            let err = Config::from_pairs(&pairs(input)).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }
}
