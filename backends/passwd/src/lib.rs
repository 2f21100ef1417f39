//! `builtin:passwd`: a credential backend over a Dovecot-style passwd-file.
//!
//! This crate owns reading and interpreting the file: the line syntax
//! (`user:{SCHEME}secret:uid:gid:gecos:home:shell:extra fields`), the password
//! schemes that can serve CRAM-MD5 (`{PLAIN}`/`{CLEARTEXT}` and `{CRAM-MD5}`,
//! with Dovecot's `.hex`/`.b64` encodings), the extra fields, and reloading
//! the file whenever it changes (checked with one `stat` per lookup), so
//! password changes need no restart.
//!
//! Extra fields (after the 7th `:`, separated by spaces, as in Dovecot):
//! - `odmr_domains=a.example,b.example`: the domains the user may collect with
//!   ATRN. A space after a comma ends the field (Dovecot splits at spaces): it
//!   is reported with the line, and the domain after the space is not added.
//! - `nologin`: the account is disabled (Dovecot's; `reason=` may go with it).
//! - `allow_nets=10.0.0.0/8,192.0.2.1`: Dovecot's per-user client restriction,
//!   handed to the host (`allowed_networks`), which refuses a login from
//!   elsewhere like a wrong password and logs why. An entry that is not an
//!   address or `address/prefix` is ignored with a warning; none valid means
//!   nobody may log in as that user.
//! - `userdb_*` (Dovecot's userdb fields in a shared file) are ignored; any
//!   other field is ignored with a warning naming it and its line.
//!
//! It does not verify CRAM-MD5 responses (odmrd's `sasl` does, from the secret
//! returned here), does not decide SMTP replies (the host maps statuses), and
//! never writes to fds 0-2: everything goes through the host's log, and no log
//! line or `Debug` output ever contains a secret.
//!
//! Statuses: unknown user → `NotFound`; an account whose password scheme cannot
//! serve CRAM-MD5 (e.g. `{SHA512-CRYPT}`) → `Unsupported`; an empty password or
//! Dovecot's `nologin` extra field → `Denied`; a file that cannot be read →
//! `TempFail`, never an empty user list.
#![deny(unsafe_code)]

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use odmr_api::names::{is_valid_domain, split_networks};
use odmr_api::settings::Settings;
use odmr_api::{Credentials, Host, Instance, LogLevel, Secret, Status};
use std::collections::hash_map::{Entry, HashMap};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

odmr_api::export_plugin!(
    #[allow(unsafe_code)]
    fn passwd_plugin_init, "passwd", Passwd: [credentials]
);

/// The backend instance: one passwd-file, reloaded when it changes.
pub struct Passwd {
    log: Host,
    path: PathBuf,
    cache: Mutex<Cache>,
}

impl Instance for Passwd {
    fn new(host: Host, config: &[(String, String)]) -> Result<Self, String> {
        Self::open(host, config)
    }

    /// `--check-config`: the file is readable now (its lines' warnings were
    /// logged when it was read), and not readable by every user.
    fn check(&self, report: &mut dyn FnMut(LogLevel, &str)) -> Result<(), Status> {
        let name = self.path.display();
        match self.read() {
            Err(e) => report(LogLevel::Error, &format!("key 'file': cannot read '{name}': {e}")),
            Ok((_, content)) => {
                let (table, _) = parse(&content);
                report(LogLevel::Info, &format!("{name}: {} users", table.users.len()));
            }
        }
        if std::fs::metadata(&self.path).is_ok_and(|m| m.mode() & 0o004 != 0) {
            report(
                LogLevel::Warn,
                &format!("key 'file': '{name}' is readable by every user; it holds secrets (chmod o-r)"),
            );
        }
        Ok(())
    }
}

impl Credentials for Passwd {
    fn lookup_secret(&self, user: &str) -> Result<Secret, Status> {
        let table = self.table()?;
        let account = table.users.get(user).ok_or(Status::NotFound)?;
        if account.nologin {
            self.log.log(LogLevel::Info, &format!("passwd: user '{user}' has the nologin extra field"));
            return Err(Status::Denied);
        }

        match &account.password {
            Password::Usable(secret) => Ok(secret.clone()),
            Password::Empty => {
                self.log.log(LogLevel::Info, &format!("passwd: user '{user}' has an empty password"));
                Err(Status::Denied)
            }
            Password::Hashed { scheme, .. } => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "passwd: user '{user}' in {}: {scheme} is a one-way hash and cannot serve CRAM-MD5; \
                         the customer can log in with PLAIN or LOGIN under TLS (or store {{CRAM-MD5}}, \
                         as `odmrd --cram-md5` prints it)",
                        self.path.display()
                    ),
                );
                Err(Status::Unsupported)
            }
            Password::Unusable(scheme) => {
                self.log.log(
                    LogLevel::Warn,
                    &format!(
                        "passwd: user '{user}' in {}: password scheme {scheme} cannot serve CRAM-MD5 \
                         (store it as {{PLAIN}} or {{CRAM-MD5}})",
                        self.path.display()
                    ),
                );
                Err(Status::Unsupported)
            }
        }
    }

    /// A clear password (PLAIN or LOGIN under TLS) against a crypt hash: `{SHA512-CRYPT}`,
    /// `{SHA256-CRYPT}`, `{MD5-CRYPT}`, `{BLF-CRYPT}`, `{CRYPT}` or a bare `$id$` hash, as
    /// Dovecot writes them. Clear secrets and CRAM-MD5 contexts are the host's to check.
    fn verify_password(&self, user: &str, password: &[u8]) -> Result<bool, Status> {
        let table = self.table()?;
        let account = table.users.get(user).ok_or(Status::NotFound)?;
        if account.nologin {
            self.log.log(LogLevel::Info, &format!("passwd: user '{user}' has the nologin extra field"));
            return Err(Status::Denied);
        }
        verify_clear(&account.password, password)
    }

    fn domains(&self, user: &str) -> Result<Vec<String>, Status> {
        let table = self.table()?;
        table.users.get(user).map(|account| account.domains.clone()).ok_or(Status::NotFound)
    }

    /// `allow_nets`, for the host to check the client against.
    fn allowed_networks(&self, user: &str) -> Result<Option<Vec<String>>, Status> {
        let table = self.table()?;
        let account = table.users.get(user).ok_or(Status::NotFound)?;
        Ok(account.allow_nets.clone())
    }

    fn accounts(&self) -> Result<Vec<odmr_api::Account>, Status> {
        let table = self.table()?;
        let mut accounts: Vec<odmr_api::Account> = table
            .users
            .iter()
            .filter(|(_, a)| !a.domains.is_empty())
            .map(|(user, a)| odmr_api::Account {
                user: user.clone(),
                domains: a.domains.clone(),
                quota: a.quota,
                contact: a.contact.clone(),
            })
            .collect();
        accounts.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(accounts)
    }
}

impl Passwd {
    /// Read the configuration; `log` receives the backend's log lines.
    fn open(log: Host, config: &[(String, String)]) -> Result<Passwd, String> {
        let mut settings = Settings::new(config)?;
        let file = settings.take_str("file");
        settings.finish()?;
        let file = file.ok_or("missing required key 'file' (the passwd-file to read)")?;
        if file.is_empty() {
            return Err("key 'file' is empty".into());
        }
        let path = PathBuf::from(file);
        let passwd = Passwd { log, path, cache: Mutex::new(Cache::default()) };
        // Read it now, so that a wrong path is a configuration error at start.
        passwd
            .refresh()
            .map_err(|err| format!("key 'file': cannot read '{}': {err}", passwd.path.display()))?;
        Ok(passwd)
    }

    /// The current table; a file that cannot be read is a temporary failure
    /// (logged), never an empty store.
    fn table(&self) -> Result<Arc<Table>, Status> {
        self.refresh().map_err(|err| {
            let msg = format!("passwd: cannot read {}: {err}; lookups fail temporarily", self.path.display());
            self.log.log(LogLevel::Error, &msg);
            Status::TempFail
        })
    }

    /// The table, reloaded first if the file's identity, size or times changed.
    fn refresh(&self) -> io::Result<Arc<Table>> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let stamp = Stamp::of(&std::fs::metadata(&self.path)?);
        if let Some((cached, table)) = &cache.current {
            if *cached == stamp {
                return Ok(Arc::clone(table));
            }
        }
        let (stamp, content) = self.read()?;
        let (table, warnings) = parse(&content);
        let name = self.path.display();
        for warning in warnings {
            self.log.log(LogLevel::Warn, &format!("passwd: {name} {warning}"));
        }
        // The first reading is part of loading the plugin (under inetd, at every connection):
        // debug. A change of the file while running is news: info.
        let level = if cache.current.is_some() { LogLevel::Info } else { LogLevel::Debug };
        self.log.log(level, &format!("passwd: loaded {} users from {name}", table.users.len()));
        let table = Arc::new(table);
        cache.current = Some((stamp, Arc::clone(&table)));
        Ok(table)
    }

    /// Reads the file, with the stamp of exactly the file that was read.
    fn read(&self) -> io::Result<(Stamp, Vec<u8>)> {
        let mut file = File::open(&self.path)?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
        }
        let mut content = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut content)?;
        Ok((Stamp::of(&meta), content))
    }
}

#[derive(Default)]
struct Cache {
    current: Option<(Stamp, Arc<Table>)>,
}

/// What identifies one version of the file: a replacement by rename changes
/// the inode, an edit in place changes size or times.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The parsed file. Deliberately not `Debug`: it holds secrets.
#[derive(Default)]
struct Table {
    users: HashMap<String, Account>,
}

struct Account {
    password: Password,
    nologin: bool,
    domains: Vec<String>,
    /// Dovecot's `allow_nets`: the networks as written; empty when none is
    /// valid (nobody may then log in as this user).
    allow_nets: Option<Vec<String>>,
    /// `odmr_quota=`: held bytes the operator allows (reported by `odmrd --queue`).
    quota: Option<u64>,
    /// `odmr_notify=`: where "mail is waiting" notices go.
    contact: Option<String>,
}

pub enum Password {
    /// A secret that can serve CRAM-MD5.
    Usable(Secret),
    /// An empty password: nobody can log in (as in Dovecot).
    Empty,
    /// A crypt(3) hash: only a clear password (PLAIN under TLS) can be checked against it.
    Hashed { scheme: String, hash: String },
    /// A scheme that cannot serve CRAM-MD5; holds a printable scheme name.
    Unusable(String),
}

/// Parses the file's content; the warnings say `line N: ...` and never hold
/// a secret.
fn parse(content: &[u8]) -> (Table, Vec<String>) {
    let mut table = Table::default();
    let mut warnings = Vec::new();
    for (index, line) in content.split(|&b| b == b'\n').enumerate() {
        let number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) || line.starts_with(b"#") {
            continue;
        }
        match parse_line(line, &mut |w| warnings.push(format!("line {number}: {w}"))) {
            Ok((user, account)) => match table.users.entry(user) {
                Entry::Occupied(first) => warnings.push(format!(
                    "line {number}: user '{}' appears again; this line is ignored",
                    first.key()
                )),
                Entry::Vacant(slot) => {
                    slot.insert(account);
                }
            },
            Err(reason) => warnings.push(format!("line {number}: {reason}; line skipped")),
        }
    }
    (table, warnings)
}

/// The file parser, for the fuzz targets and property tests only (`fuzz/`): how many accounts
/// a load of `content` gives, and its warnings. Not part of the API.
#[doc(hidden)]
pub fn parse_for_fuzzing(content: &[u8]) -> (usize, Vec<String>) {
    let (table, warnings) = parse(content);
    (table.users.len(), warnings)
}

/// One non-comment line: `user:password[:uid:gid:gecos:home:shell[:extra fields]]`.
fn parse_line(line: &[u8], warn: &mut dyn FnMut(String)) -> Result<(String, Account), String> {
    let fields: Vec<&[u8]> = line.split(|&b| b == b':').collect();
    let user = std::str::from_utf8(fields[0]).map_err(|_| "the user name is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("empty user name".into());
    }
    if fields.len() < 2 {
        return Err(format!("user '{user}' has no password field"));
    }
    let password = parse_password(fields[1]).map_err(|reason| format!("user '{user}': {reason}"))?;
    let mut account = Account {
        password,
        nologin: false,
        domains: Vec::new(),
        allow_nets: None,
        quota: None,
        contact: None,
    };
    // As Dovecot: everything after the 7th field, re-joined, is space-separated
    // `key=value` extra fields.
    let extra = if fields.len() > 7 { fields[7..].join(&b':') } else { Vec::new() };
    let extra = String::from_utf8_lossy(&extra);
    let mut after_comma = false;
    for field in extra.split(' ').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        // `odmr_domains=a.example, b.example`: the field ended at the space.
        if std::mem::take(&mut after_comma) && !field.contains('=') {
            warn(format!(
                "user '{user}': a space after a comma in odmr_domains ends the field (extra fields are \
                 separated by spaces), so '{field}' is not collected; write the list without spaces"
            ));
            continue;
        }
        match key {
            "odmr_domains" => {
                after_comma = value.ends_with(',');
                for domain in value.split(',').filter(|d| !d.is_empty()) {
                    let domain = domain.to_ascii_lowercase();
                    if !is_valid_domain(&domain) {
                        warn(format!("user '{user}': ignoring invalid domain '{domain}' in odmr_domains"));
                    } else if !account.domains.contains(&domain) {
                        account.domains.push(domain);
                    }
                }
            }
            "nologin" => account.nologin = true,
            "allow_nets" => {
                let (nets, invalid) = split_networks(value);
                for net in invalid {
                    warn(format!(
                        "user '{user}': ignoring '{net}' in allow_nets: not an address or address/prefix"
                    ));
                }
                if nets.is_empty() {
                    warn(format!(
                        "user '{user}': allow_nets names no valid network; this user cannot log in"
                    ));
                }
                account.allow_nets = Some(nets);
            }
            "odmr_quota" => match parse_quota(value) {
                Some(bytes) => account.quota = Some(bytes),
                None => warn(format!(
                    "user '{user}': ignoring odmr_quota '{value}' (bytes, or a number with K, M or G)"
                )),
            },
            "odmr_notify" if value.contains('@') && !value.contains(char::is_control) => {
                account.contact = Some(value.to_owned())
            }
            "odmr_notify" => warn(format!("user '{user}': ignoring odmr_notify '{value}' (not an address)")),
            "reason" => {}
            _ if key.starts_with("userdb_") => {}
            _ => warn(format!(
                "user '{user}': extra field '{key}' is not used by odmrd and is ignored \
                 (known: odmr_domains, odmr_quota, odmr_notify, allow_nets, nologin, reason, userdb_*)"
            )),
        }
    }
    Ok((user.to_owned(), account))
}

/// `odmr_quota=`: bytes, or a number with `K`, `M` or `G` (powers of 1024).
fn parse_quota(value: &str) -> Option<u64> {
    let (digits, scale) = match value.char_indices().last()? {
        (i, 'k' | 'K') => (&value[..i], 1 << 10),
        (i, 'm' | 'M') => (&value[..i], 1 << 20),
        (i, 'g' | 'G') => (&value[..i], 1 << 30),
        _ => (value, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale).filter(|&bytes| bytes > 0)
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Default,
    Hex,
    Base64,
}

/// Interprets a password field (also `builtin:sql`'s `password` column).
/// `Err` is a malformed value (the reason never contains the value itself).
pub fn parse_password(field: &[u8]) -> Result<Password, String> {
    if field.is_empty() {
        return Ok(Password::Empty);
    }
    let Some((scheme, data)) = field.strip_prefix(b"{").and_then(|rest| {
        let end = rest.iter().position(|&b| b == b'}')?;
        Some((&rest[..end], &rest[end + 1..]))
    }) else {
        // No {SCHEME}: Dovecot's default scheme, CRYPT, or a $id$ crypt hash.
        return Ok(hashed(crypt_name(field), field));
    };
    let scheme = String::from_utf8_lossy(scheme).to_ascii_uppercase();
    if !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) || scheme.len() > 40 {
        return Ok(Password::Unusable("(an unrecognised scheme)".into()));
    }
    let (name, encoding) = match scheme.rsplit_once('.') {
        Some((name, "HEX")) => (name, Encoding::Hex),
        Some((name, "B64" | "BASE64")) => (name, Encoding::Base64),
        _ => (scheme.as_str(), Encoding::Default),
    };
    match name {
        "PLAIN" | "CLEARTEXT" => {
            let password = match encoding {
                Encoding::Default => data.to_vec(),
                Encoding::Hex => decode_hex(data).ok_or(format!("{{{scheme}}} value is not hex"))?,
                Encoding::Base64 => {
                    BASE64.decode(data).map_err(|_| format!("{{{scheme}}} value is not base64"))?
                }
            };
            Ok(if password.is_empty() { Password::Empty } else { Password::Usable(Secret::Plain(password)) })
        }
        "CRAM-MD5" | "HMAC-MD5" => {
            // Dovecot's password_decode(): without a suffix, 64 characters are
            // hex (or base64 if they are not hex), anything else base64.
            let decoded = match encoding {
                Encoding::Hex => decode_hex(data),
                Encoding::Base64 => BASE64.decode(data).ok(),
                Encoding::Default if data.len() == 64 => {
                    decode_hex(data).or_else(|| BASE64.decode(data).ok())
                }
                Encoding::Default => BASE64.decode(data).ok(),
            };
            match decoded.and_then(|bytes| <[u8; 32]>::try_from(bytes).ok()) {
                Some(context) => Ok(Password::Usable(Secret::CramMd5Context(context))),
                None => Err(format!("{{{scheme}}} value is not 32 bytes in hex or base64")),
            }
        }
        "SHA512-CRYPT" | "SHA256-CRYPT" | "MD5-CRYPT" | "BLF-CRYPT" | "CRYPT" | "DES-CRYPT" => {
            Ok(hashed(format!("{{{scheme}}}"), data))
        }
        _ => Ok(Password::Unusable(format!("{{{scheme}}}"))),
    }
}

/// Checks a clear password (PLAIN or LOGIN under TLS) against a parsed password field, in
/// constant time: a crypt hash, or a clear secret. CRAM-MD5 contexts and unknown schemes are
/// `Unsupported` (the host checks contexts itself); an empty password admits nobody.
pub fn verify_clear(stored: &Password, clear: &[u8]) -> Result<bool, Status> {
    match stored {
        Password::Hashed { hash, .. } => Ok(pwhash::unix::verify(clear, hash)),
        Password::Usable(Secret::Plain(secret)) => {
            Ok(subtle::ConstantTimeEq::ct_eq(secret.as_slice(), clear).into())
        }
        Password::Empty => Err(Status::Denied),
        Password::Usable(Secret::CramMd5Context(_)) | Password::Unusable(_) => Err(Status::Unsupported),
    }
}

/// A crypt hash (text) under the printable `scheme` name.
fn hashed(scheme: String, hash: &[u8]) -> Password {
    match std::str::from_utf8(hash) {
        Ok(hash) if !hash.is_empty() => Password::Hashed { scheme, hash: hash.to_owned() },
        _ => Password::Unusable(scheme),
    }
}

/// A printable name for a password without `{SCHEME}`, without its data.
fn crypt_name(field: &[u8]) -> String {
    let id = field
        .strip_prefix(b"$")
        .and_then(|rest| rest.iter().position(|&b| b == b'$').map(|end| &rest[..end]))
        .filter(|id| !id.is_empty() && id.len() <= 8 && id.iter().all(u8::is_ascii_alphanumeric));
    match id {
        Some(id) => format!("crypt ${}$", String::from_utf8_lossy(id)),
        None => "CRYPT (no {SCHEME} prefix, Dovecot's default)".into(),
    }
}

/// Standard alphabet, padding optional, as Dovecot's decoder is lenient.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn decode_hex(hex: &[u8]) -> Option<Vec<u8>> {
    let pairs = hex.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
    pairs.map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?)).collect()
}

#[cfg(test)]
mod tests;
