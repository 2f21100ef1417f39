//! The man pages (man/*.scd, built into the package): odmrd.ini(5) documents every key the
//! configuration accepts, and both pages render with `man -l` without a warning.
//!
//! The keys are asked from the code, never listed here: the parser's error for an unknown
//! section lists the sections, its error for an unknown key lists that section's keys, the
//! error for an unknown built-in backend lists the built-ins, and each built-in backend's
//! error for an unknown key lists its keys. A key added to the code without a line in
//! odmrd.ini(5) therefore fails `every_configuration_key_is_documented`, naming it.
//!
//! In odmrd.ini.5.scd a key is documented by a line `*KEY* = ...` under the heading of its
//! section (`## [server]`) or, for a backend's key, of the backend (`## [queue] builtin:exim`).

use odmrd::backend::{instantiate, Kind};
use odmrd::config::{Config, HOLD_KEYS};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A key no section or backend knows, to make the code list the keys it does know.
const PROBE: &str = "zz_undocumented_probe";

fn man_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../man")
}

/// The comma-separated list in the parentheses after `marker` in `message`.
fn listed_after(message: &str, marker: &str) -> Option<Vec<String>> {
    let start = message.find(marker)? + marker.len();
    let end = start + message[start..].find(')')?;
    Some(message[start..end].split(',').map(|item| item.trim().to_string()).collect())
}

/// The keys or names an error message lists: `(expected a, b)` or `(known: a, b)`.
fn listed(message: &str) -> Vec<String> {
    listed_after(message, "(expected ")
        .or_else(|| listed_after(message, "(known: "))
        .unwrap_or_else(|| panic!("the error lists nothing to compare with: {message}"))
}

fn config(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("probe.ini")).map_err(|e| e.to_string())
}

/// A valid configuration whose `section` (credentials or queue) uses `plugin` and holds the
/// keys `extra` only.
fn with_plugin(section: &str, plugin: &str, extra: &str) -> String {
    let credentials = "[credentials]\nplugin = builtin:passwd\nfile = /nonexistent\n";
    let queue = "[queue]\nplugin = builtin:maildir\ndirectory = /nonexistent/{domain}\n";
    let probed = format!("[{section}]\nplugin = {plugin}\n{extra}\n");
    match section {
        "credentials" => format!("{probed}{queue}"),
        _ => format!("{credentials}{probed}"),
    }
}

/// Every (`[section]`, key) of the core sections; `[credentials]` and `[queue]` have `plugin`.
fn core_keys() -> Vec<(String, String)> {
    let sections = listed(&config(&format!("[{PROBE}]\n")).unwrap_err());
    let mut keys = Vec::new();
    for section in sections {
        if section == "credentials" || section == "queue" {
            keys.push((format!("[{section}]"), "plugin".to_string()));
            if section == "queue" {
                // odmrd's own keys of [queue], taken out before the backend sees the section.
                keys.extend(HOLD_KEYS.iter().map(|key| ("[queue]".to_string(), key.to_string())));
            }
            continue;
        }
        let text = format!("{}[{section}]\n{PROBE} = 1\n", with_plugin("queue", "builtin:maildir", ""));
        let error = config(&text).expect_err("an unknown key is an error");
        assert!(error.contains(PROBE), "[{section}]: expected an error about {PROBE}, got: {error}");
        keys.extend(listed(&error).into_iter().map(|key| (format!("[{section}]"), key)));
    }
    keys
}

/// Every (heading, key) of the built-in backends, the heading being `[SECTION] builtin:NAME`.
fn backend_keys() -> Vec<(String, String)> {
    let unknown = config(&with_plugin("credentials", &format!("builtin:{PROBE}"), "")).unwrap();
    let error =
        instantiate(&unknown.credentials, Kind::Credentials).err().expect("an unknown built-in is an error");
    let builtins = listed(&error.to_string());
    assert!(builtins.len() >= 4, "built-ins: {builtins:?}");
    let mut keys = Vec::new();
    for builtin in &builtins {
        for section in ["credentials", "queue"] {
            let config = config(&with_plugin(section, builtin, &format!("{PROBE} = 1"))).unwrap();
            let error = match section {
                "credentials" => instantiate(&config.credentials, Kind::Credentials).err(),
                _ => instantiate(&config.queue, Kind::Queue).err(),
            };
            let error = error.map(|e| e.to_string()).unwrap_or_default();
            // Not an error about the probe: this built-in does not serve this section.
            if !error.contains(&format!("unknown key '{PROBE}'")) {
                continue;
            }
            let heading = format!("[{section}] {builtin}");
            keys.extend(listed(&error).into_iter().map(|key| (heading.clone(), key)));
        }
    }
    keys
}

/// The lines under `## HEADING` up to the next heading, or None when there is no such heading.
fn block<'a>(page: &'a str, heading: &str) -> Option<Vec<&'a str>> {
    let mut lines = page.lines().skip_while(|line| line.trim_end() != format!("## {heading}"));
    lines.next()?;
    Some(lines.take_while(|line| !line.starts_with('#')).collect())
}

#[test]
fn every_configuration_key_is_documented() {
    let page = std::fs::read_to_string(man_dir().join("odmrd.ini.5.scd")).unwrap();
    let keys: Vec<(String, String)> = core_keys().into_iter().chain(backend_keys()).collect();
    assert!(keys.iter().any(|(s, k)| s == "[server]" && k == "max_sessions"), "{keys:?}");
    assert!(keys.iter().any(|(s, k)| s == "[queue] builtin:exim" && k == "busy_wait"), "{keys:?}");
    let missing: Vec<String> = keys
        .iter()
        .filter(|(heading, key)| {
            let documented = block(&page, heading)
                .is_some_and(|lines| lines.iter().any(|line| line.starts_with(&format!("*{key}* ="))));
            !documented
        })
        .map(|(heading, key)| format!("{heading} {key}"))
        .collect();
    assert!(
        missing.is_empty(),
        "man/odmrd.ini.5.scd does not document these keys (add a line `*KEY* = VALUE` and an \
         indented description under the heading `## [SECTION]`, or `## [SECTION] builtin:NAME` \
         for a backend's key):\n    {}",
        missing.join("\n    ")
    );
}

#[test]
fn both_pages_render_without_warnings() {
    for page in ["odmrd.8", "odmrd.ini.5"] {
        let source = std::fs::read(man_dir().join(format!("{page}.scd"))).unwrap();
        let mut scdoc = Command::new("scdoc")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("scdoc is missing: install it (t/setup-deps)");
        std::io::Write::write_all(&mut scdoc.stdin.take().unwrap(), &source).unwrap();
        let roff = scdoc.wait_with_output().unwrap();
        assert!(roff.status.success(), "scdoc {page}.scd: {}", String::from_utf8_lossy(&roff.stderr));

        let dir = tempfile::tempdir().unwrap();
        let built = dir.path().join(page);
        std::fs::write(&built, &roff.stdout).unwrap();
        let man = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(&built)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .output()
            .expect("man is missing: install man-db (t/setup-deps)");
        let warnings = String::from_utf8_lossy(&man.stderr);
        assert!(man.status.success() && warnings.is_empty(), "man -l {page}: {}\n{warnings}", man.status);
        // Bold and underline reach a pipe as overstrikes (`X\x08X`, `_\x08X`): keep the last.
        let mut text = String::new();
        for c in String::from_utf8_lossy(&man.stdout).chars() {
            if c == '\x08' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        for heading in ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"] {
            assert!(text.contains(heading), "{page} renders without {heading}:\n{text}");
        }
    }
}
