//! Reading a plugin's ini section, the `(key, value)` pairs that
//! [`Instance::new`](crate::Instance::new) receives, with the conventions
//! odmrd's backends share: every error names its key, a repeated key is an
//! error, an unknown key is an error that lists the known ones.
//!
//! ```
//! # use odmr_api::settings::Settings;
//! # use std::path::PathBuf;
//! fn from_pairs(pairs: &[(String, String)]) -> Result<(PathBuf, u64), String> {
//!     let mut s = Settings::new(pairs)?;
//!     let file = s.take_path("file")?;
//!     let limit = s.take_u64("limit")?.unwrap_or(10);
//!     s.finish()?; // "unknown key 'colour' (known: file, limit)"
//!     let file = file.ok_or("missing required key 'file'")?;
//!     Ok((file, limit))
//! }
//! # let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
//! # assert_eq!(from_pairs(&pairs(&[("file", "/etc/x")])), Ok(("/etc/x".into(), 10)));
//! # assert!(from_pairs(&pairs(&[("colour", "blue")])).unwrap_err().starts_with("unknown key 'colour'"));
//! ```
//!
//! Take every key the backend knows, then call [`Settings::finish`] before
//! checking for required keys, so that a misspelt key is reported as such
//! rather than as a missing one. Safe code only; it knows no backend's keys.

use std::path::PathBuf;

/// The pairs of one ini section, consumed key by key.
pub struct Settings<'a> {
    pairs: &'a [(String, String)],
    taken: Vec<bool>,
    /// Every key asked for, in order: the list an unknown key's error shows.
    known: Vec<&'static str>,
}

impl<'a> Settings<'a> {
    /// Start reading `pairs`. A key given twice is an error naming it.
    pub fn new(pairs: &'a [(String, String)]) -> Result<Settings<'a>, String> {
        for (i, (key, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(format!("key '{key}' is given more than once"));
            }
        }
        Ok(Settings { pairs, taken: vec![false; pairs.len()], known: Vec::new() })
    }

    /// Refuse a control character (tab included) in any value, naming the key.
    pub fn forbid_control_characters(&self) -> Result<(), String> {
        match self.pairs.iter().find(|(_, value)| value.chars().any(char::is_control)) {
            Some((key, _)) => Err(format!("key '{key}' contains a control character")),
            None => Ok(()),
        }
    }

    /// The value of `key` as written, if given; `key` is now known.
    pub fn take_str(&mut self, key: &'static str) -> Option<&'a str> {
        if !self.known.contains(&key) {
            self.known.push(key);
        }
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        self.taken[i] = true;
        Some(self.pairs[i].1.as_str())
    }

    /// The value of `key` parsed by `parse`; its error is prefixed with
    /// `key 'KEY': `.
    pub fn take_with<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&'a str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.take_str(key).map(|value| parse(value).map_err(|why| format!("key '{key}': {why}"))).transpose()
    }

    /// The value of `key`, which must be an absolute path.
    pub fn take_path(&mut self, key: &'static str) -> Result<Option<PathBuf>, String> {
        self.take_str(key).map(|value| check_absolute(key, value).map(|()| PathBuf::from(value))).transpose()
    }

    /// The value of `key` as a whole number (decimal, no sign).
    pub fn take_u64(&mut self, key: &'static str) -> Result<Option<u64>, String> {
        self.take_with(key, |value| {
            value
                .parse()
                .ok()
                .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| format!("'{value}' is not a whole number"))
        })
    }

    /// The value of `key` as a boolean: `yes`/`true`/`on`/`1` or
    /// `no`/`false`/`off`/`0`, in any case.
    pub fn take_bool(&mut self, key: &'static str) -> Result<Option<bool>, String> {
        self.take_with(key, |value| match value.to_ascii_lowercase().as_str() {
            "yes" | "true" | "on" | "1" => Ok(true),
            "no" | "false" | "off" | "0" => Ok(false),
            _ => Err(format!("'{value}' is not yes or no")),
        })
    }

    /// Done: any key not taken is unknown, an error naming it and listing
    /// the keys taken (`unknown key 'colour' (known: file, limit)`).
    pub fn finish(self) -> Result<(), String> {
        match self.pairs.iter().zip(&self.taken).find(|(_, taken)| !**taken) {
            Some(((key, _), _)) => Err(format!("unknown key '{key}' (known: {})", self.known.join(", "))),
            None => Ok(()),
        }
    }
}

/// `value` of `key` must be an absolute path: an error naming both otherwise.
pub fn check_absolute(key: &str, value: &str) -> Result<(), String> {
    if value.starts_with('/') {
        Ok(())
    } else {
        Err(format!("key '{key}': '{value}' is not an absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keys_are_taken_and_leftovers_are_unknown() {
        let p = pairs(&[("b", "2"), ("a", "x"), ("colour", "blue")]);
        let mut s = Settings::new(&p).unwrap();
        assert_eq!(s.take_str("a"), Some("x"));
        assert_eq!(s.take_u64("b").unwrap(), Some(2));
        assert_eq!(s.take_str("c"), None);
        assert_eq!(s.finish().unwrap_err(), "unknown key 'colour' (known: a, b, c)");
        let p = pairs(&[("a", "x")]);
        let mut s = Settings::new(&p).unwrap();
        s.take_str("a");
        assert!(s.finish().is_ok());
    }

    #[test]
    fn a_repeated_key_is_refused() {
        let p = pairs(&[("a", "1"), ("b", "2"), ("a", "3")]);
        assert_eq!(Settings::new(&p).err().unwrap(), "key 'a' is given more than once");
    }

    #[test]
    fn values_are_checked_and_errors_name_the_key() {
        let p = pairs(&[
            ("dir", "relative/x"),
            ("abs", "/var/x"),
            ("n", "-1"),
            ("m", "+1"),
            ("t", "Yes"),
            ("f", "off"),
            ("maybe", "perhaps"),
            ("odd", "x"),
        ]);
        let mut s = Settings::new(&p).unwrap();
        assert_eq!(s.take_path("dir").unwrap_err(), "key 'dir': 'relative/x' is not an absolute path");
        assert_eq!(s.take_path("abs").unwrap(), Some(PathBuf::from("/var/x")));
        assert_eq!(s.take_u64("n").unwrap_err(), "key 'n': '-1' is not a whole number");
        assert_eq!(s.take_u64("m").unwrap_err(), "key 'm': '+1' is not a whole number");
        assert_eq!(s.take_bool("t").unwrap(), Some(true));
        assert_eq!(s.take_bool("f").unwrap(), Some(false));
        assert_eq!(s.take_bool("maybe").unwrap_err(), "key 'maybe': 'perhaps' is not yes or no");
        assert_eq!(
            s.take_with("odd", |v| Err::<(), _>(format!("'{v}' is odd"))).unwrap_err(),
            "key 'odd': 'x' is odd"
        );
        assert_eq!(s.take_u64("absent").unwrap(), None);
        assert!(s.finish().is_ok());
    }

    #[test]
    fn control_characters_can_be_forbidden() {
        let p = pairs(&[("a", "fine"), ("b", "tab\there")]);
        let s = Settings::new(&p).unwrap();
        assert_eq!(s.forbid_control_characters().unwrap_err(), "key 'b' contains a control character");
    }
}
