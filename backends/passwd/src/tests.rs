//! Behaviour of the passwd backend through its `Credentials` interface, with
//! the host's log captured.

use super::*;
use std::io::Write;
use tempfile::TempDir;

use odmr_api::testing::TestHost;
type Config = Vec<(String, String)>;

/// formats.md's synthetic `S3cret-odmr` context, as hex and as base64.
const CTX_HEX: &str = "42d5ce522a349cfb0efdd84a3c80b7ecf4fe938d4df1d7b9813b26e76095b1e1";
const CTX_B64: &str = "QtXOUio0nPsO/dhKPIC37PT+k41N8de5gTsm52CVseE=";

fn context() -> [u8; 32] {
    decode_hex(CTX_HEX.as_bytes()).unwrap().try_into().unwrap()
}

struct Fixture {
    dir: TempDir,
    passwd: Passwd,
    host: TestHost,
}

impl Fixture {
    fn new(content: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("passwd"), content).unwrap();
        let host = TestHost::new();
        let config = [("file".to_string(), dir.path().join("passwd").display().to_string())];
        let passwd = Passwd::open(host.host(), &config).unwrap();
        Fixture { dir, passwd, host }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("passwd")
    }

    /// Replaces the file atomically, as `mv new passwd` would.
    fn replace(&self, content: &str) {
        let tmp = self.dir.path().join("passwd.new");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.path()).unwrap();
    }

    fn logged(&self, level: LogLevel) -> Vec<String> {
        self.host.logs_at(level)
    }

    fn all_logs(&self) -> String {
        self.host.logs().into_iter().map(|(_, m)| m).collect::<Vec<_>>().join("\n")
    }
}

#[test]
fn secrets_by_scheme() {
    let file = format!(
        "# a comment\n\
         \n   \n\
         plain:{{PLAIN}}pw-one\n\
         clear:{{CLEARTEXT}}pw-two:1000:1000:Clear Text:/home/clear:/bin/sh\n\
         lower:{{plain}}pw-three\n\
         plainb64:{{PLAIN.b64}}cHctZm91cg==\n\
         plainhex:{{PLAIN.hex}}70772d66697665\n\
         withcolons:{{PLAIN}}pw-six:::::\n\
         crlf:{{PLAIN}}pw-seven\r\n\
         cramhex:{{CRAM-MD5}}{CTX_HEX}\n\
         cramupper:{{CRAM-MD5}}{upper}\n\
         cramdothex:{{CRAM-MD5.hex}}{CTX_HEX}\n\
         cramb64:{{CRAM-MD5.b64}}{CTX_B64}\n\
         cramguess64:{{CRAM-MD5}}{CTX_B64}\n\
         hmac:{{HMAC-MD5}}{CTX_HEX}\n\
         customer1@example.com:{{CRAM-MD5}}{CTX_HEX}::::::\n\
         sha:{{SHA512-CRYPT}}$6$pw-salt$pw-hash-sha\n\
         crypt:$6$pw-salt$pw-hash-crypt\n\
         des:pw-DES-hash\n\
         odd:{{ODD}}pw-odd\n\
         empty:\n\
         emptyplain:{{PLAIN}}\n\
         locked:{{PLAIN}}pw-locked::::::nologin\n",
        upper = CTX_HEX.to_uppercase(),
    );
    let fx = Fixture::new(&file);
    let plain = |s: &str| Ok(Secret::Plain(s.as_bytes().to_vec()));
    let cram = Ok(Secret::CramMd5Context(context()));
    let cases: Vec<(&str, Result<Secret, Status>)> = vec![
        ("plain", plain("pw-one")),
        ("clear", plain("pw-two")),
        ("lower", plain("pw-three")),
        ("plainb64", plain("pw-four")),
        ("plainhex", plain("pw-five")),
        ("withcolons", plain("pw-six")),
        ("crlf", plain("pw-seven")),
        ("cramhex", cram.clone()),
        ("cramupper", cram.clone()),
        ("cramdothex", cram.clone()),
        ("cramb64", cram.clone()),
        ("cramguess64", cram.clone()),
        ("hmac", cram.clone()),
        ("customer1@example.com", cram.clone()),
        ("sha", Err(Status::Unsupported)),
        ("crypt", Err(Status::Unsupported)),
        ("des", Err(Status::Unsupported)),
        ("odd", Err(Status::Unsupported)),
        ("empty", Err(Status::Denied)),
        ("emptyplain", Err(Status::Denied)),
        ("locked", Err(Status::Denied)),
        ("nobody", Err(Status::NotFound)),
        ("Plain", Err(Status::NotFound)),
        ("plain ", Err(Status::NotFound)),
        ("# a comment", Err(Status::NotFound)),
        ("", Err(Status::NotFound)),
    ];
    for (user, expected) in cases {
        assert_eq!(fx.passwd.lookup_secret(user), expected, "user {user:?}");
    }
    // The file parsed cleanly; the only warnings are the four unusable schemes.
    let warns = fx.logged(LogLevel::Warn);
    assert_eq!(warns.len(), 4, "{warns:?}");
    assert!(warns.iter().all(|w| w.contains("cannot serve CRAM-MD5")), "{warns:?}");
    // No log line ever carries password material.
    assert!(!fx.all_logs().contains("pw-"), "{}", fx.all_logs());
}

#[test]
fn unsupported_schemes_are_logged_as_warnings_naming_the_scheme() {
    let fx = Fixture::new(
        "sha:{SHA512-CRYPT}$6$pw-salt$pw-hash\ncrypt:$6$pw-salt$pw-hash\ndes:pw-DES-hash\nweird:{pw- secret}x\n",
    );
    let cases = [
        ("sha", "{SHA512-CRYPT}"),
        ("crypt", "crypt $6$"),
        ("des", "CRYPT (no {SCHEME} prefix"),
        ("weird", "(an unrecognised scheme)"),
    ];
    for (user, scheme) in cases {
        fx.host.clear_logs();
        assert_eq!(fx.passwd.lookup_secret(user), Err(Status::Unsupported));
        let warns = fx.logged(LogLevel::Warn);
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(warns[0].contains(&format!("user '{user}'")), "{}", warns[0]);
        assert!(warns[0].contains(scheme), "{}", warns[0]);
        assert!(warns[0].contains("cannot serve CRAM-MD5"), "{}", warns[0]);
        assert!(!warns[0].contains("pw-"), "{}", warns[0]);
    }
}

#[test]
fn malformed_lines_are_logged_with_their_number_and_skipped() {
    let fx = Fixture::new(
        "good:{PLAIN}pw-good\n\
         short:{CRAM-MD5}abcdef0123\n\
         nopassword\n\
         :{PLAIN}pw-nouser\n\
         badhex:{CRAM-MD5.hex}zz\n\
         good:{PLAIN}pw-second\n\
         after:{PLAIN}pw-after\n",
    );
    assert_eq!(fx.passwd.lookup_secret("good"), Ok(Secret::Plain(b"pw-good".to_vec())));
    assert_eq!(fx.passwd.lookup_secret("after"), Ok(Secret::Plain(b"pw-after".to_vec())));
    for user in ["short", "nopassword", "badhex"] {
        assert_eq!(fx.passwd.lookup_secret(user), Err(Status::NotFound), "{user}");
    }
    let warns = fx.logged(LogLevel::Warn);
    for (line, what) in
        [(2, "user 'short'"), (3, "user 'nopassword'"), (4, "empty user"), (5, "user 'badhex'"), (6, "again")]
    {
        let prefix = format!("line {line}: ");
        assert!(warns.iter().any(|w| w.contains(&prefix) && w.contains(what)), "line {line}: {warns:?}");
    }
    assert_eq!(warns.len(), 5, "{warns:?}");
    assert!(!fx.all_logs().contains("pw-"), "{}", fx.all_logs());
    assert!(!fx.all_logs().contains("abcdef"), "{}", fx.all_logs());
}

#[test]
fn domains_are_parsed_lowercased_validated_and_deduplicated() {
    let fx = Fixture::new(
        "customer:{PLAIN}secret::::::odmr_domains=example.org,example.com\n\
         mixed:{PLAIN}x:1000:1000:G:/home/m:/bin/sh:quota=1G odmr_domains=Example.ORG,,b.example,EXAMPLE.org userdb_x=a:b\n\
         bad:{PLAIN}x::::::odmr_domains=nodot,a..b,trailing.dot.,under_score.example,ok-1.example,-hy.example\n\
         split:{PLAIN}x::::::odmr_domains=a.example odmr_domains=b.example\n\
         none:{PLAIN}x\n\
         sha:{SHA512-CRYPT}$6$salt$hash::::::odmr_domains=sha.example\n",
    );
    let cases: [(&str, Result<Vec<&str>, Status>); 7] = [
        ("customer", Ok(vec!["example.org", "example.com"])),
        ("mixed", Ok(vec!["example.org", "b.example"])),
        // `-hy.example` is refused by the shared RFC 2645 rule (odmr_api::names),
        // as odmrd refuses it in ATRN: a label does not begin with a hyphen.
        ("bad", Ok(vec!["ok-1.example"])),
        ("split", Ok(vec!["a.example", "b.example"])),
        ("none", Ok(vec![])),
        ("sha", Ok(vec!["sha.example"])),
        ("nobody", Err(Status::NotFound)),
    ];
    for (user, expected) in cases {
        let expected = expected.map(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
        assert_eq!(fx.passwd.domains(user), expected, "user {user}");
    }
    let warns = fx.logged(LogLevel::Warn);
    for domain in ["nodot", "a..b", "trailing.dot.", "under_score.example", "-hy.example"] {
        let needle = format!("invalid domain '{domain}'");
        assert!(warns.iter().any(|w| w.contains("line 3: user 'bad'") && w.contains(&needle)), "{warns:?}");
    }
    // `quota=1G` is not odmrd's; `userdb_x` is Dovecot's userdb field, ignored quietly.
    assert!(warns.iter().any(|w| w.contains("line 2: user 'mixed': extra field 'quota'")), "{warns:?}");
    assert_eq!(warns.len(), 6, "{warns:?}");
}

#[test]
fn a_space_after_a_comma_in_odmr_domains_is_reported_with_its_line() {
    let fx = Fixture::new(
        "ok:{PLAIN}x::::::odmr_domains=a.example\n\
         spaced:{PLAIN}x::::::odmr_domains=a.example, b.example nologin\n",
    );
    assert_eq!(fx.passwd.domains("spaced"), Ok(vec!["a.example".to_string()]));
    let warns = fx.logged(LogLevel::Warn);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(warns[0].contains("line 2: user 'spaced': a space after a comma in odmr_domains"), "{warns:?}");
    assert!(warns[0].contains("'b.example' is not collected"), "{warns:?}");
    assert!(warns[0].contains(&fx.path().display().to_string()), "{warns:?}");
}

#[test]
fn allow_nets_are_handed_to_the_host_and_bad_entries_reported() {
    let fx = Fixture::new(
        "open:{PLAIN}pw-open::::::odmr_domains=a.example\n\
         restricted:{PLAIN}x::::::allow_nets=10.0.0.0/8,192.0.2.1,2001:db8::/32\n\
         typo:{PLAIN}x::::::allow_nets=10.0.0.0/33,example.org,192.0.2.7\n\
         nowhere:{PLAIN}x::::::allow_nets=nonsense\n",
    );
    let nets = |user| fx.passwd.allowed_networks(user);
    let owned = |list: &[&str]| Ok(Some(list.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    assert_eq!(nets("open"), Ok(None));
    assert_eq!(nets("restricted"), owned(&["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]));
    assert_eq!(nets("typo"), owned(&["192.0.2.7"]));
    assert_eq!(nets("nowhere"), owned(&[]));
    assert_eq!(nets("nobody"), Err(Status::NotFound));
    let warns = fx.logged(LogLevel::Warn);
    for (line, what) in [(3, "'10.0.0.0/33'"), (3, "'example.org'"), (4, "no valid network")] {
        assert!(
            warns.iter().any(|w| w.contains(&format!("line {line}: ")) && w.contains(what)),
            "{what}: {warns:?}"
        );
    }
}

#[test]
fn a_replaced_file_is_reloaded_without_restart() {
    let fx = Fixture::new("alice:{PLAIN}old::::::odmr_domains=a.example\n");
    assert_eq!(fx.passwd.lookup_secret("alice"), Ok(Secret::Plain(b"old".to_vec())));
    assert_eq!(fx.passwd.lookup_secret("bob"), Err(Status::NotFound));

    fx.replace(&format!("alice:{{PLAIN}}new::::::odmr_domains=b.example\nbob:{{CRAM-MD5}}{CTX_HEX}\n"));
    assert_eq!(fx.passwd.lookup_secret("alice"), Ok(Secret::Plain(b"new".to_vec())));
    assert_eq!(fx.passwd.domains("alice"), Ok(vec!["b.example".to_string()]));
    assert_eq!(fx.passwd.lookup_secret("bob"), Ok(Secret::CramMd5Context(context())));

    // Rewritten in place, same length: the stamp still changes (size/times).
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(fx.path()).unwrap();
    file.write_all(
        format!("alice:{{PLAIN}}NEW::::::odmr_domains=b.example\nbob:{{CRAM-MD5}}{CTX_HEX}\n").as_bytes(),
    )
    .unwrap();
    drop(file);
    // Make sure the times differ even on a coarse-grained file system.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
    File::options().write(true).open(fx.path()).unwrap().set_modified(later).unwrap();
    assert_eq!(fx.passwd.lookup_secret("alice"), Ok(Secret::Plain(b"NEW".to_vec())));

    let loads = |level| fx.logged(level).iter().filter(|m| m.contains("loaded")).count();
    // The load at start is part of loading the plugin (debug); each change is news (info).
    assert_eq!(
        (loads(LogLevel::Debug), loads(LogLevel::Info)),
        (1, 2),
        "one load at start and one per change"
    );
    // Unchanged file: no reload.
    assert!(fx.passwd.lookup_secret("bob").is_ok());
    assert_eq!((loads(LogLevel::Debug), loads(LogLevel::Info)), (1, 2));
}

#[test]
fn an_unreadable_file_is_a_temporary_failure_not_an_empty_store() {
    let fx = Fixture::new("alice:{PLAIN}pw-alice::::::odmr_domains=a.example\n");
    std::fs::rename(fx.path(), fx.dir.path().join("elsewhere")).unwrap();
    assert_eq!(fx.passwd.lookup_secret("alice"), Err(Status::TempFail));
    assert_eq!(fx.passwd.domains("alice"), Err(Status::TempFail));
    assert_eq!(fx.passwd.lookup_secret("nobody"), Err(Status::TempFail));
    let errors = fx.logged(LogLevel::Error);
    assert!(!errors.is_empty());
    assert!(errors.iter().all(|e| e.contains(&fx.path().display().to_string())), "{errors:?}");

    // A directory in its place cannot be read either.
    std::fs::create_dir(fx.path()).unwrap();
    assert_eq!(fx.passwd.lookup_secret("alice"), Err(Status::TempFail));
    std::fs::remove_dir(fx.path()).unwrap();

    std::fs::rename(fx.dir.path().join("elsewhere"), fx.path()).unwrap();
    assert_eq!(fx.passwd.lookup_secret("alice"), Ok(Secret::Plain(b"pw-alice".to_vec())));
}

#[test]
fn configuration_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "a:{PLAIN}b\n").unwrap();
    let file = file.display().to_string();
    let missing = dir.path().join("missing").display().to_string();
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    let cases: Vec<(Config, Option<&str>)> = vec![
        (vec![kv("file", &file)], None),
        (vec![], Some("missing required key 'file'")),
        (vec![kv("file", &file), kv("colour", "blue")], Some("unknown key 'colour'")),
        (vec![kv("plugin", "builtin:passwd"), kv("file", &file)], Some("unknown key 'plugin'")),
        (vec![kv("file", &file), kv("file", &file)], Some("'file' is given more than once")),
        (vec![kv("file", "")], Some("'file' is empty")),
        (vec![kv("file", &missing)], Some("key 'file': cannot read '")),
        (vec![kv("file", &missing)], Some("No such file or directory")),
        (vec![kv("file", dir.path().to_str().unwrap())], Some("not a regular file")),
    ];
    for (config, expected) in cases {
        let host = TestHost::new();
        let result = Passwd::open(host.host(), &config);
        match (result, expected) {
            (Ok(_), None) => {}
            (Err(e), Some(want)) => assert!(e.contains(want), "{config:?}: {e}"),
            (Ok(_), Some(want)) => panic!("{config:?}: accepted, expected {want}"),
            (Err(e), None) => panic!("{config:?}: {e}"),
        }
    }
}

/// Hashes as Dovecot 2.3's `doveadm pw -s SCHEME -p tanstaaf` printed them.
const DOVEADM_HASHES: [&str; 4] = [
    "{SHA512-CRYPT}$6$OhLdiyQM559x6wim$MXePt.7TnvhSR/bOMmI3/q.kY6sNENvxwpI/sIzcjepSBgqlw.fw72i5dYm75A8qmWP8dYoqjirJF5Z9sAdq4.",
    "{SHA256-CRYPT}$5$ZYz9fWFvSSu5HGsb$WWdylfzTQdn4j77ZjHYdwSmofpFm/fVXhLSdzVDUF48",
    "{MD5-CRYPT}$1$Ob6eeIio$v5ZcXallDO2JXjC6M0PtM/",
    "{BLF-CRYPT}$2y$05$MkbJ4i/IYd3DUhxzg0L.oOUbcGq8/KG2iI3pKpg4ILTrt5qTJOsPm",
];

#[test]
fn clear_passwords_verify_against_dovecot_crypt_hashes() {
    let mut file = String::new();
    for (n, hash) in DOVEADM_HASHES.iter().enumerate() {
        file.push_str(&format!("u{n}:{hash}\n"));
    }
    file.push_str("bare:$1$Ob6eeIio$v5ZcXallDO2JXjC6M0PtM/\nplain:{PLAIN}tanstaaf\n");
    file.push_str(
        "off:{SHA256-CRYPT}$5$ZYz9fWFvSSu5HGsb$WWdylfzTQdn4j77ZjHYdwSmofpFm/fVXhLSdzVDUF48::::::nologin\n",
    );
    let fx = Fixture::new(&file);
    for user in ["u0", "u1", "u2", "u3", "bare", "plain"] {
        assert_eq!(fx.passwd.verify_password(user, b"tanstaaf"), Ok(true), "{user}");
        assert_eq!(fx.passwd.verify_password(user, b"tanstaaF"), Ok(false), "{user}");
        assert_eq!(fx.passwd.verify_password(user, b""), Ok(false), "{user}");
    }
    assert_eq!(fx.passwd.verify_password("off", b"tanstaaf"), Err(Status::Denied));
    assert_eq!(fx.passwd.verify_password("nobody", b"tanstaaf"), Err(Status::NotFound));
    // CRAM-MD5 cannot use them, and the log says what would work.
    assert_eq!(fx.passwd.lookup_secret("u0"), Err(Status::Unsupported));
    let warns = fx.logged(LogLevel::Warn);
    assert!(warns.iter().any(|w| w.contains("PLAIN or LOGIN under TLS")), "{warns:?}");
}

/// Property tests of the line parser (arbitrary bytes are the fuzz harness's, replayed in
/// `odmrd/tests/parsers.rs`). Bounded to 256 cases.
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn domain() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9]{1,8}\\.(example|Example\\.ORG)"
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn a_written_line_parses_back(
            user in "[a-z0-9._@-]{1,20}",
            password in "[!-9;-~]{1,20}",
            domains in proptest::collection::vec(domain(), 0..5),
            nologin in any::<bool>(),
        ) {
            let extra = format!("odmr_domains={}{}", domains.join(","), if nologin { " nologin" } else { "" });
            let line = format!("{user}:{{PLAIN}}{password}:1000:1000::/home/u::{extra}\n");
            let (table, warnings) = parse(line.as_bytes());
            prop_assert!(warnings.is_empty(), "{:?}", warnings);
            let account = &table.users[&user];
            prop_assert!(account.nologin == nologin);
            prop_assert!(matches!(&account.password, Password::Usable(Secret::Plain(p)) if p == password.as_bytes()));
            let mut expected: Vec<String> = Vec::new();
            for domain in domains.iter().map(|d| d.to_ascii_lowercase()) {
                if !expected.contains(&domain) {
                    expected.push(domain);
                }
            }
            prop_assert_eq!(&account.domains, &expected);
        }

        /// A malformed or unusable password field is reported without the value in it.
        #[test]
        fn warnings_never_hold_the_password_field(
            secret in "[a-zA-Z0-9]{12,24}",
            scheme in prop_oneof![
                Just("{CRAM-MD5}"), Just("{HMAC-MD5.HEX}"), Just("{PLAIN.HEX}"), Just("{PLAIN.B64}!"),
                Just("{SHA512-CRYPT}"), Just("$6$"), Just(""), Just("{"),
            ],
        ) {
            let content = format!("u:{scheme}{secret}\nu:{{PLAIN}}{secret}\n");
            let (_, warnings) = parse(content.as_bytes());
            for warning in &warnings {
                prop_assert!(!warning.contains(&secret), "{}", warning);
            }
        }
    }
}

#[test]
fn accounts_carry_their_domains_quota_and_contact() {
    let fx = Fixture::new(
        "b:{PLAIN}x::::::odmr_domains=b.example odmr_quota=10M odmr_notify=ops@b.example\n\
         a:{PLAIN}x::::::odmr_domains=A.example,a2.example odmr_quota=2048\n\
         nodomains:{PLAIN}x::::::odmr_quota=5\n\
         bad:{PLAIN}x::::::odmr_domains=c.example odmr_quota=lots odmr_notify=nobody\n",
    );
    let account =
        |user: &str, domains: &[&str], quota: Option<u64>, contact: Option<&str>| odmr_api::Account {
            user: user.into(),
            domains: domains.iter().map(|d| d.to_string()).collect(),
            quota,
            contact: contact.map(str::to_string),
        };
    assert_eq!(
        fx.passwd.accounts().unwrap(),
        [
            account("a", &["a.example", "a2.example"], Some(2048), None),
            account("b", &["b.example"], Some(10 << 20), Some("ops@b.example")),
            account("bad", &["c.example"], None, None),
        ]
    );
    let warns = fx.logged(LogLevel::Warn);
    assert!(warns.iter().any(|w| w.contains("line 4") && w.contains("odmr_quota 'lots'")), "{warns:?}");
    assert!(warns.iter().any(|w| w.contains("line 4") && w.contains("odmr_notify 'nobody'")), "{warns:?}");
}
