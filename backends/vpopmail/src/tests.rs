//! Behaviour of the vpopmail backend against real vpopmail trees built in
//! temporary directories. Every cdb here is written by Debian's tinycdb
//! `cdb -c` (package `tinycdb`, installed by t/setup-deps), never by this
//! crate, so the reader is checked against an independent writer.

use super::*;

use tempfile::TempDir;

use odmr_api::testing::TestHost;

const HASH6: &str =
    "$6$Qx7vKp2L$PaGkFlIEBu0b6G5B2wPhUAfR8EbykfdgW7wcUcVJVkb1GXaqsLgOHpg4jGORtsjsHg7d8xkgxwg1F1ch.Ypbn0";
const HASH1: &str = "$1$Qx7vKp2L$uZMpE2SG/pgYgOdeVC73u1";

#[path = "../tests/cdb_tool/mod.rs"]
mod cdb_tool;
use cdb_tool::{tinycdb, tinycdb_map};

/// A vpopmail installation in a temporary directory: qmail's users
/// directory, vpopmail's home, domain directories (one hashed), alias domains.
struct Tree {
    tmp: TempDir,
    host: TestHost,
}

impl Tree {
    fn new() -> Tree {
        let tree = Tree { tmp: tempfile::tempdir().unwrap(), host: TestHost::new() };
        std::fs::create_dir_all(tree.users()).unwrap();
        std::fs::create_dir_all(tree.home().join("etc")).unwrap();
        tree
    }

    /// The standard tree: example.com (with alias.example and other.alias),
    /// big.example in a hashed directory, solo.example with only a text vpasswd.
    fn standard() -> Tree {
        let tree = Tree::new();
        tree.assign(&[
            ("example.com", "example.com", "example.com"),
            ("alias.example", "example.com", "example.com"),
            ("big.example", "big.example", "0/big.example"),
            ("solo.example", "solo.example", "solo.example"),
            ("Other.Alias", "example.com", "example.com"),
        ]);
        tree.vpasswd(
            "example.com",
            &[
                &format!(
                    "customer1:{HASH6}:1:0:Customer One:{}:NOQUOTA:S3cret-odmr",
                    tree.maildir("customer1")
                ),
                &format!("nosmtp:{HASH1}:1:2048:Blocked:/x/nosmtp:NOQUOTA:pw-nosmtp"),
                &format!("norelay:{HASH1}:1:32:No relay:/x/norelay:NOQUOTA:pw-norelay"),
                &format!("nodialup:{HASH1}:1:64:No dialup:/x/nodialup:NOQUOTA:pw-nodialup"),
                &format!("noclear:{HASH6}:1:0:No clear text:/x/noclear:NOQUOTA"),
                &format!("emptyclear:{HASH6}:1:0:Empty clear text:/x/emptyclear:NOQUOTA:"),
                &format!("colons:{HASH1}:1:0:Colons:/x/colons:NOQUOTA:pw:with::colons"),
                &format!("override:{HASH1}:1:8192:Override:/x/override:NOQUOTA:pw-override"),
                &format!("badgid:{HASH1}:1:lots:Bad gid:/x/badgid:NOQUOTA:pw-badgid"),
            ],
        );
        tree.vpasswd("0/big.example", &[&format!("boss:{HASH1}:1:0:Boss:/x/boss:NOQUOTA:pw-boss")]);
        let solo = tree.domains().join("solo.example");
        std::fs::create_dir_all(&solo).unwrap();
        std::fs::write(solo.join("vpasswd"), format!("solo:{HASH1}:1:0:Solo::NOQUOTA:pw-solo\n")).unwrap();
        tree
    }

    fn users(&self) -> PathBuf {
        self.tmp.path().join("qmail/users")
    }

    fn home(&self) -> PathBuf {
        self.tmp.path().join("vpopmail")
    }

    fn domains(&self) -> PathBuf {
        self.home().join("domains")
    }

    fn maildir(&self, user: &str) -> String {
        self.domains().join("example.com").join(user).display().to_string()
    }

    /// Writes users/assign as vpopmail's add_domain_assign() does (one
    /// wildcard line per domain, then `.`) and compiles it into users/cdb the
    /// way qmail-newu does: key `!` + the lower-cased `loc`, value the next
    /// six fields with `:` turned into NUL, plus the `""` key of wildcard
    /// characters.
    fn assign(&self, domains: &[(&str, &str, &str)]) {
        let text = self.assign_text(domains);
        std::fs::write(self.users().join("assign"), &text).unwrap();
        let mut records = Vec::new();
        for line in text.lines().filter(|l| l.starts_with('+')) {
            let (loc, rest) = line[1..].split_once(':').unwrap();
            let value: Vec<&str> = rest.splitn(7, ':').take(6).collect();
            records
                .push((format!("!{}", loc.to_ascii_lowercase()).into_bytes(), value.join("\0").into_bytes()));
        }
        records.push((Vec::new(), b"-".to_vec()));
        tinycdb(&self.users().join("cdb"), &records);
    }

    fn assign_text(&self, domains: &[(&str, &str, &str)]) -> String {
        let mut text = String::from("=vpopmail:vpopmail:89:89:/home/vpopmail:::\n+autoturn-:qmaild:7770:2108:/var/qmail/autoturn:-::\n");
        for (domain, real, dir) in domains {
            text.push_str(&format!("+{domain}-:{real}:89:89:{}:-::\n", self.domains().join(dir).display()));
        }
        text.push_str(".\n");
        text
    }

    /// Writes a domain's vpasswd (by rename, as vpopmail does) and builds its
    /// vpasswd.cdb with `cdb -c -m`, as make_vpasswd_cdb(): key = the name,
    /// data = the rest of the line.
    fn vpasswd(&self, dir: &str, lines: &[&str]) {
        let dir = self.domains().join(dir);
        std::fs::create_dir_all(&dir).unwrap();
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.join("vpasswd.bak.1"), &text).unwrap();
        std::fs::rename(dir.join("vpasswd.bak.1"), dir.join("vpasswd")).unwrap();
        let map: String = lines
            .iter()
            .map(|l| {
                let (name, rest) = l.split_once(':').unwrap();
                format!("{name} {rest}\n")
            })
            .collect();
        tinycdb_map(&dir.join("vpasswd.cdb"), &map);
    }

    fn backend(&self, extra: &[(&str, &str)]) -> Result<Vpopmail, String> {
        let mut config = vec![
            ("qmail_users".to_string(), self.users().display().to_string()),
            ("vpopmail_home".to_string(), self.home().display().to_string()),
        ];
        config.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Vpopmail::open(self.host.host(), &config)
    }

    fn start(&self) -> Vpopmail {
        self.backend(&[]).unwrap()
    }

    fn logs(&self) -> Vec<(LogLevel, String)> {
        self.host.logs().into_iter().map(|(level, m)| (LogLevel::from_raw(level), m)).collect()
    }

    fn logged(&self, needle: &str) -> bool {
        self.logs().iter().any(|(_, m)| m.contains(needle))
    }

    fn clear_logs(&self) {
        self.host.clear_logs();
    }

    /// No log line may contain a password or a crypted hash.
    fn assert_no_secrets_logged(&self) {
        for (_, line) in self.logs() {
            for secret in ["S3cret", "pw-", "pw:", "$6$", "$1$", "new-pass"] {
                assert!(!line.contains(secret), "secret material {secret:?} logged: {line}");
            }
        }
    }
}

fn plain(s: &str) -> Result<Secret, Status> {
    Ok(Secret::Plain(s.as_bytes().to_vec()))
}

fn strings(v: &[&str]) -> Result<Vec<String>, Status> {
    Ok(v.iter().map(|s| s.to_string()).collect())
}

// ---------------------------------------------------------------------------
// Logins, domains and accounts.

#[test]
fn secrets_by_login() {
    let tree = Tree::standard();
    let vp = tree.start();
    let cases: Vec<(&str, Result<Secret, Status>)> = vec![
        ("customer1@example.com", plain("S3cret-odmr")),
        ("CUSTOMER1@Example.COM", plain("S3cret-odmr")),
        ("customer1%example.com", plain("S3cret-odmr")),
        ("customer1/example.com", plain("S3cret-odmr")),
        // An alias domain resolves to its real domain's accounts.
        ("customer1@alias.example", plain("S3cret-odmr")),
        ("customer1@other.alias", plain("S3cret-odmr")),
        // A hashed domain directory, found through users/cdb.
        ("boss@big.example", plain("pw-boss")),
        // A domain with only the text vpasswd.
        ("solo@solo.example", plain("pw-solo")),
        // The 8th field is the rest of the line, colons and all.
        ("colons@example.com", plain("pw:with::colons")),
        ("override@example.com", plain("pw-override")),
        // Wrong users, wrong domains.
        ("nobody@example.com", Err(Status::NotFound)),
        ("customer1@unknown.example", Err(Status::NotFound)),
        ("customer1@example.org", Err(Status::NotFound)),
        ("customer1@example", Err(Status::NotFound)),
        ("customer1@", Err(Status::NotFound)),
        ("@example.com", Err(Status::NotFound)),
        ("customer1", Err(Status::NotFound)),
        ("customer1@example.com.", Err(Status::NotFound)),
        ("customer1 @example.com", Err(Status::NotFound)),
        ("customer1:x@example.com", Err(Status::NotFound)),
        ("", Err(Status::NotFound)),
        // qmail's own wildcard assignments are not vpopmail domains.
        ("x@autoturn", Err(Status::NotFound)),
        ("vpopmail@vpopmail", Err(Status::NotFound)),
        // The user name is never split at the domain's first character.
        ("customer1@xample.com", Err(Status::NotFound)),
    ];
    for (login, expected) in cases {
        assert_eq!(vp.lookup_secret(login), expected, "login {login:?}");
    }
    assert!(tree.logged("unknown domain unknown.example"), "{:?}", tree.logs());
    assert!(tree.logged("no account nobody in domain example.com"), "{:?}", tree.logs());
    assert!(tree.logged("login 'customer1' names no domain"), "{:?}", tree.logs());
    tree.assert_no_secrets_logged();
}

#[test]
fn separators_are_configurable_and_at_is_always_accepted() {
    let tree = Tree::standard();
    let only_at = tree.backend(&[("separators", "")]).unwrap();
    assert_eq!(only_at.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    assert_eq!(only_at.lookup_secret("customer1%example.com"), Err(Status::NotFound));
    assert_eq!(only_at.lookup_secret("customer1/example.com"), Err(Status::NotFound));

    let plus = tree.backend(&[("separators", "+")]).unwrap();
    assert_eq!(plus.lookup_secret("customer1+example.com"), plain("S3cret-odmr"));
    assert_eq!(plus.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    assert_eq!(plus.lookup_secret("customer1%example.com"), Err(Status::NotFound));
    // Split at the first separator, as vchkpw's parse_email().
    assert_eq!(tree.start().lookup_secret("customer1%example.com@x.example"), Err(Status::NotFound));
}

#[test]
fn bare_logins_take_the_default_domain() {
    let tree = Tree::standard();
    assert_eq!(tree.start().lookup_secret("customer1"), Err(Status::NotFound));
    // vpopmail's own ~vpopmail/etc/defaultdomain, read when needed.
    std::fs::write(tree.home().join("etc/defaultdomain"), "Example.com\n").unwrap();
    let vp = tree.start();
    assert_eq!(vp.lookup_secret("customer1"), plain("S3cret-odmr"));
    assert_eq!(vp.domains("customer1"), strings(&["example.com", "alias.example", "other.alias"]));
    // The key wins over the file.
    let vp = tree.backend(&[("default_domain", "big.example")]).unwrap();
    assert_eq!(vp.lookup_secret("boss"), plain("pw-boss"));
    assert_eq!(vp.lookup_secret("customer1"), Err(Status::NotFound));
}

#[test]
fn a_missing_clear_text_password_is_unsupported_and_says_why() {
    let tree = Tree::standard();
    let vp = tree.start();
    for (login, account) in [
        ("noclear@example.com", "account noclear@example.com has"),
        ("emptyclear@example.com", "account emptyclear@example.com has"),
        ("noclear@alias.example", "account noclear@example.com (logged in as noclear@alias.example) has"),
    ] {
        tree.clear_logs();
        assert_eq!(vp.lookup_secret(login), Err(Status::Unsupported), "{login}");
        let logs = tree.logs();
        assert_eq!(logs.len(), 1, "{logs:?}");
        let (level, line) = &logs[0];
        assert_eq!(*level, LogLevel::Warn);
        assert!(line.contains(account), "{line}");
        assert!(
            line.contains("no clear-text password (vpopmail built without --enable-clear-passwd?)"),
            "{line}"
        );
        assert!(line.contains("example.com/vpasswd"), "{line}");
    }
    // The crypted hash is no use for CRAM-MD5, and it is not revealed.
    assert_eq!(vp.verify_cram_md5("noclear@example.com", "<1.2@h>", "00"), Err(Status::Unsupported));
    tree.assert_no_secrets_logged();
}

#[test]
fn disabled_accounts_are_refused_by_their_flags() {
    let tree = Tree::standard();
    let vp = tree.start();
    assert_eq!(vp.lookup_secret("nosmtp@example.com"), Err(Status::Denied));
    assert!(tree.logged("account nosmtp@example.com is disabled: its vpasswd gid field sets NO_SMTP (0x800)"));
    // NO_RELAY only turns off POP-before-SMTP in vpopmail: not refused by default.
    assert_eq!(vp.lookup_secret("norelay@example.com"), plain("pw-norelay"));
    let relay_too = tree.backend(&[("refuse_flags", "NO_SMTP, NO_RELAY")]).unwrap();
    assert_eq!(relay_too.lookup_secret("norelay@example.com"), Err(Status::Denied));
    assert!(
        tree.logged("account norelay@example.com is disabled: its vpasswd gid field sets NO_RELAY (0x20)")
    );
    assert_eq!(vp.domains("nosmtp@example.com"), Err(Status::Denied));
    // A gid that is not a number fails closed.
    assert_eq!(vp.lookup_secret("badgid@example.com"), Err(Status::Denied));
    assert!(tree.logged("account badgid@example.com: the gid (flags) field is not a number"));
    // NO_DIALUP is not refused by default, only when configured.
    assert_eq!(vp.lookup_secret("nodialup@example.com"), plain("pw-nodialup"));
    let strict = tree.backend(&[("refuse_flags", "NO_SMTP, NO_RELAY, NO_DIALUP")]).unwrap();
    assert_eq!(strict.lookup_secret("nodialup@example.com"), Err(Status::Denied));
    let lax = tree.backend(&[("refuse_flags", "")]).unwrap();
    assert_eq!(lax.lookup_secret("nosmtp@example.com"), plain("pw-nosmtp"));
    let numeric = tree.backend(&[("refuse_flags", "0x800")]).unwrap();
    assert_eq!(numeric.lookup_secret("nosmtp@example.com"), Err(Status::Denied));
    assert_eq!(numeric.lookup_secret("norelay@example.com"), plain("pw-norelay"));
    tree.assert_no_secrets_logged();
}

#[test]
fn domain_limits_refuse_every_account_but_v_override() {
    let tree = Tree::standard();
    let vp = tree.start();
    // vpopmail's global default applies when the domain has no file of its own.
    // `vmoddomlimits -d -g r`: NO_RELAY for every account, which vpopmail's SMTP AUTH ignores.
    std::fs::write(tree.home().join("etc/vlimits.default"), "maxpopaccounts: 100\ndisable_external_relay\n")
        .unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    std::fs::write(tree.home().join("etc/vlimits.default"), "maxpopaccounts: 100\ndisable_smtp\n").unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::Denied));
    assert!(
        tree.logged("account customer1@example.com is disabled: the domain's limits sets NO_SMTP (0x800)")
    );
    assert_eq!(vp.lookup_secret("override@example.com"), plain("pw-override"));
    // The domain's own .qmailadmin-limits replaces the default.
    let limits = tree.domains().join("example.com/.qmailadmin-limits");
    std::fs::write(&limits, "disable_pop\ndisable_imap\n").unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    std::fs::write(&limits, "disable_smtp\n").unwrap();
    assert_eq!(vp.lookup_secret("customer1@alias.example"), Err(Status::Denied));
    assert_eq!(vp.lookup_secret("nosmtp@example.com"), Err(Status::Denied));
    assert!(tree.logged(
        "account nosmtp@example.com is disabled: its vpasswd gid field and the domain's limits set NO_SMTP"
    ));
    assert_eq!(vp.lookup_secret("override@example.com"), plain("pw-override"));
    // Other domains are not affected by example.com's file.
    assert_eq!(vp.lookup_secret("boss@big.example"), Err(Status::Denied), "vlimits.default still applies");
    std::fs::remove_file(tree.home().join("etc/vlimits.default")).unwrap();
    assert_eq!(vp.lookup_secret("boss@big.example"), plain("pw-boss"));
}

#[test]
fn vpasswd_cdb_is_read_when_present_and_vpasswd_otherwise() {
    let tree = Tree::standard();
    let vp = tree.start();
    let dir = tree.domains().join("example.com");
    // Edit the text file by hand without rebuilding the cdb: the cdb still
    // rules (as for vchkpw), and the operator is told.
    let text = std::fs::read_to_string(dir.join("vpasswd")).unwrap().replace("S3cret-odmr", "edited-by-hand");
    std::fs::write(dir.join("vpasswd"), text).unwrap();
    let later = SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(dir.join("vpasswd")).unwrap().set_modified(later).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    let stale: Vec<_> = tree.logs().into_iter().filter(|(_, m)| m.contains("is newer than")).collect();
    assert_eq!(stale.len(), 1, "warned once: {stale:?}");
    assert_eq!(stale[0].0, LogLevel::Warn);
    assert!(stale[0].1.contains("run vmkpasswd"), "{}", stale[0].1);
    // Without the cdb, the text file is read.
    std::fs::remove_file(dir.join("vpasswd.cdb")).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("edited-by-hand"));
    assert_eq!(vp.lookup_secret("nosmtp@example.com"), Err(Status::Denied));
    assert_eq!(vp.lookup_secret("noclear@example.com"), Err(Status::Unsupported));
    assert_eq!(vp.lookup_secret("nobody@example.com"), Err(Status::NotFound));
    // Neither: the domain has no accounts.
    std::fs::remove_file(dir.join("vpasswd")).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::NotFound));
    assert!(tree.logged("domain example.com has neither"));
}

#[test]
fn users_assign_is_read_when_there_is_no_users_cdb() {
    let tree = Tree::standard();
    std::fs::remove_file(tree.users().join("cdb")).unwrap();
    let vp = tree.start();
    assert_eq!(vp.lookup_secret("customer1@alias.example"), plain("S3cret-odmr"));
    assert_eq!(vp.lookup_secret("boss@BIG.example"), plain("pw-boss"));
    assert_eq!(vp.lookup_secret("customer1@other.alias"), plain("S3cret-odmr"));
    assert_eq!(vp.lookup_secret("x@unknown.example"), Err(Status::NotFound));
    assert_eq!(
        vp.domains("customer1@example.com"),
        strings(&["example.com", "alias.example", "other.alias"])
    );
    // Lines after the terminating "." are not assignments.
    let mut text = std::fs::read_to_string(tree.users().join("assign")).unwrap();
    text.push_str(&format!(
        "+late.example-:example.com:89:89:{}:-::\n",
        tree.domains().join("example.com").display()
    ));
    std::fs::write(tree.users().join("assign"), text).unwrap();
    assert_eq!(vp.lookup_secret("customer1@late.example"), Err(Status::NotFound));
    assert_eq!(
        vp.domains("customer1@example.com"),
        strings(&["example.com", "alias.example", "other.alias"])
    );
}

#[test]
fn an_assign_newer_than_users_cdb_is_reported_and_the_cdb_wins() {
    let tree = Tree::standard();
    let assign = tree.users().join("assign");
    let text = std::fs::read_to_string(&assign).unwrap().replace("+solo.example-", "+renamed.example-");
    std::fs::write(&assign, text).unwrap();
    let later = SystemTime::now() + std::time::Duration::from_secs(5);
    std::fs::File::options().write(true).open(&assign).unwrap().set_modified(later).unwrap();
    let vp = tree.start();
    assert!(tree.logged("assign is newer than"), "{:?}", tree.logs());
    assert!(tree.logged("run qmail-newu"), "{:?}", tree.logs());
    assert_eq!(vp.lookup_secret("solo@solo.example"), plain("pw-solo"));
    assert_eq!(vp.lookup_secret("solo@renamed.example"), Err(Status::NotFound));
}

// ---------------------------------------------------------------------------
// What an account may collect.

#[test]
fn domains_are_the_real_domain_its_aliases_and_the_grants() {
    let tree = Tree::standard();
    let vp = tree.start();
    let own = strings(&["example.com", "alias.example", "other.alias"]);
    assert_eq!(vp.domains("customer1@example.com"), own);
    assert_eq!(vp.domains("Customer1%Alias.Example"), own);
    assert_eq!(vp.domains("boss@big.example"), strings(&["big.example"]));
    assert_eq!(vp.domains("nobody@example.com"), Err(Status::NotFound));
    assert_eq!(vp.domains("x@unknown.example"), Err(Status::NotFound));

    let grants = tree.tmp.path().join("grants");
    std::fs::write(
        &grants,
        "# account: domains\n\
         customer1@example.com: example.org, Example.NET, alias.example\n\
         boss@big.example: example.org\n\
         customer1@alias.example: via-alias.example\n\
         broken line\n",
    )
    .unwrap();
    let vp = tree.backend(&[("grants", grants.to_str().unwrap())]).unwrap();
    assert!(tree.logged("line 5: no ':'"), "{:?}", tree.logs());
    assert_eq!(
        vp.domains("customer1@example.com"),
        strings(&["example.com", "alias.example", "other.alias", "example.org", "example.net"])
    );
    // A grant may name the account by the alias it logs in with.
    assert_eq!(
        vp.domains("customer1@alias.example"),
        strings(&[
            "example.com",
            "alias.example",
            "other.alias",
            "example.org",
            "example.net",
            "via-alias.example"
        ])
    );
    assert_eq!(vp.domains("boss@big.example"), strings(&["big.example", "example.org"]));
    // Edits are picked up at once.
    std::fs::write(&grants, "boss@big.example: example.net\n").unwrap();
    assert_eq!(vp.domains("boss@big.example"), strings(&["big.example", "example.net"]));
    assert_eq!(vp.domains("customer1@example.com"), own);
    // A grants file that disappears is a temporary failure, not an empty grant.
    std::fs::remove_file(&grants).unwrap();
    assert_eq!(vp.domains("boss@big.example"), Err(Status::TempFail));
    assert!(tree.logged("cannot read grants file"));
}

// ---------------------------------------------------------------------------
// Changes on disk, failures.

#[test]
fn changes_on_disk_are_seen_without_a_restart() {
    let tree = Tree::standard();
    let vp = tree.start();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    assert_eq!(vp.lookup_secret("newbie@example.com"), Err(Status::NotFound));
    // vpasswd (vpopmail's rename) and vpasswd.cdb (cdb's rename) rewritten.
    tree.vpasswd(
        "example.com",
        &[
            &format!("customer1:{HASH6}:1:0:Customer One:/x/customer1:NOQUOTA:new-pass-1"),
            &format!("newbie:{HASH6}:1:0:Newbie:/x/newbie:NOQUOTA:new-pass-2"),
        ],
    );
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("new-pass-1"));
    assert_eq!(vp.lookup_secret("newbie@example.com"), plain("new-pass-2"));
    assert_eq!(vp.lookup_secret("nosmtp@example.com"), Err(Status::NotFound));
    // A new alias domain and a new domain in users/cdb.
    tree.assign(&[
        ("example.com", "example.com", "example.com"),
        ("fresh-alias.example", "example.com", "example.com"),
        ("big.example", "big.example", "0/big.example"),
    ]);
    assert_eq!(vp.lookup_secret("newbie@fresh-alias.example"), plain("new-pass-2"));
    assert_eq!(vp.lookup_secret("newbie@alias.example"), Err(Status::NotFound));
    assert_eq!(vp.domains("newbie@example.com"), strings(&["example.com", "fresh-alias.example"]));
    tree.assert_no_secrets_logged();
}

#[test]
fn unreadable_stores_are_temporary_failures() {
    let tree = Tree::standard();
    let vp = tree.start();
    // A truncated vpasswd.cdb.
    let cdb = tree.domains().join("example.com/vpasswd.cdb");
    let bytes = std::fs::read(&cdb).unwrap();
    std::fs::write(&cdb, &bytes[..bytes.len() - 20]).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::TempFail));
    assert!(tree.logged("cannot read the accounts of example.com"), "{:?}", tree.logs());
    std::fs::write(&cdb, &bytes[..100]).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::TempFail));
    std::fs::write(&cdb, &bytes).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), plain("S3cret-odmr"));
    // qmail's users database gone.
    std::fs::rename(tree.users(), tree.tmp.path().join("users.away")).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::TempFail));
    assert_eq!(vp.domains("customer1@example.com"), Err(Status::TempFail));
    assert!(tree.logged("cannot read qmail's users database"), "{:?}", tree.logs());
    std::fs::rename(tree.tmp.path().join("users.away"), tree.users()).unwrap();
    // A directory where a limits file should be.
    std::fs::create_dir(tree.domains().join("example.com/.qmailadmin-limits")).unwrap();
    assert_eq!(vp.lookup_secret("customer1@example.com"), Err(Status::TempFail));
    assert!(tree.logged("cannot read limits file"), "{:?}", tree.logs());
}

#[test]
fn configuration_is_checked() {
    let tree = Tree::standard();
    let users = tree.users().display().to_string();
    let missing = tree.tmp.path().join("missing").display().to_string();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("colour", "blue")], "unknown key 'colour'"),
        (vec![("plugin", "builtin:vpopmail")], "unknown key 'plugin'"),
        (vec![("qmail_users", &users)], "'qmail_users' is given more than once"),
        (vec![("refuse_flags", "NO_SMTP, NO_FUN")], "key 'refuse_flags': 'NO_FUN'"),
        (vec![("separators", "%:")], "key 'separators': ':'"),
        (vec![("separators", "a")], "key 'separators': 'a'"),
        (vec![("default_domain", "localhost")], "key 'default_domain'"),
        (vec![("grants", "relative/grants")], "not an absolute path"),
        (vec![("grants", &missing)], "key 'grants': cannot read"),
    ];
    for (extra, want) in cases {
        let err = tree.backend(&extra).err().unwrap_or_else(|| panic!("{extra:?} accepted"));
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let kv = |k: &str, v: &str| (k.to_string(), v.to_string());
    let logger = || TestHost::new().host();
    let err = Vpopmail::open(logger(), &[kv("qmail_users", &missing)]).err().unwrap();
    assert!(err.contains("neither") && err.contains("missing/cdb"), "{err}");
    let err =
        Vpopmail::open(logger(), &[kv("qmail_users", &users), kv("vpopmail_home", &missing)]).err().unwrap();
    assert!(err.contains("key 'vpopmail_home'"), "{err}");
    let err = Vpopmail::open(logger(), &[kv("qmail_users", "users")]).err().unwrap();
    assert!(err.contains("not an absolute path"), "{err}");
    // A corrupt users/cdb is found at start.
    std::fs::write(tree.users().join("cdb"), vec![0xffu8; 2100]).unwrap();
    let err = tree.backend(&[]).err().unwrap();
    assert!(err.contains("corrupt cdb"), "{err}");
    // The defaults name vpopmail's usual places (absent here: a clear error).
    if !Path::new(DEFAULT_QMAIL_USERS).exists() {
        let err = Vpopmail::open(logger(), &[]).err().unwrap();
        assert!(err.contains("/var/qmail/users/cdb"), "{err}");
    }
    // The start-up line says what is refused.
    let tree = Tree::standard();
    tree.start();
    assert!(tree.logged("refused when their flags include NO_SMTP (0x800)"), "{:?}", tree.logs());
}

// ---------------------------------------------------------------------------
// The cdb reader against tinycdb.

#[test]
fn the_cdb_reader_finds_what_tinycdb_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cdb");
    let mut records: Vec<(Vec<u8>, Vec<u8>)> = (0..3000)
        .map(|i| (format!("key{i}").into_bytes(), format!("value {i}").repeat(i % 7).into_bytes()))
        .collect();
    records.push((b"".to_vec(), b"empty key".to_vec()));
    records.push((b"bin\0\xff\n".to_vec(), b"\0\r\n\xfe".to_vec()));
    records.push((b"dup".to_vec(), b"first".to_vec()));
    records.push((b"dup".to_vec(), b"second".to_vec()));
    tinycdb(&path, &records);

    let mut cdb = cdb::Cdb::open(&path).unwrap().unwrap();
    for (key, data) in records.iter().filter(|(k, _)| k != b"dup") {
        assert_eq!(cdb.get(key).unwrap().as_ref(), Some(data), "{}", String::from_utf8_lossy(key));
    }
    assert_eq!(cdb.get(b"dup").unwrap(), Some(b"first".to_vec()));
    for missing in [&b"key3000"[..], b"Key1", b"key", b"bin\0\xff", b"\0"] {
        assert_eq!(cdb.get(missing).unwrap(), None, "{}", String::from_utf8_lossy(missing));
    }
    let mut all = Vec::new();
    cdb.for_each(|k, d| all.push((k.to_vec(), d.to_vec()))).unwrap();
    assert_eq!(all, records);

    // tinycdb's `-m` input, as an operator would type it.
    tinycdb_map(&path, "# comment\nalpha one two\n  beta\tthree:four\n");
    let mut cdb = cdb::Cdb::open(&path).unwrap().unwrap();
    assert_eq!(cdb.get(b"alpha").unwrap(), Some(b"one two".to_vec()));
    assert_eq!(cdb.get(b"beta").unwrap(), Some(b"three:four".to_vec()));

    // An empty database.
    tinycdb::<&[u8], &[u8]>(&path, &[]);
    let mut cdb = cdb::Cdb::open(&path).unwrap().unwrap();
    assert_eq!(cdb.get(b"anything").unwrap(), None);
    let mut n = 0;
    cdb.for_each(|_, _| n += 1).unwrap();
    assert_eq!(n, 0);

    assert!(cdb::Cdb::open(&dir.path().join("absent.cdb")).unwrap().is_none());
    assert!(cdb::Cdb::open(dir.path()).is_err());
}

#[test]
fn the_cdb_reader_rejects_damaged_files_without_panicking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.cdb");
    let records: Vec<(Vec<u8>, Vec<u8>)> =
        (0..50).map(|i| (format!("k{i}").into_bytes(), format!("v{i}").into_bytes())).collect();
    tinycdb(&path, &records);
    let good = std::fs::read(&path).unwrap();
    let records_end = (0..256)
        .map(|i| u32::from_le_bytes(good[i * 8..i * 8 + 4].try_into().unwrap()) as usize)
        .min()
        .unwrap();
    // Every truncation either fails cleanly or (for lookups that never touch
    // the missing part) still answers correctly.
    for len in (0..good.len()).step_by(7) {
        std::fs::write(&path, &good[..len]).unwrap();
        match cdb::Cdb::open(&path) {
            Err(err) => assert_eq!(err.kind(), io::ErrorKind::InvalidData),
            Ok(Some(mut cdb)) => {
                for (key, data) in &records {
                    if let Ok(Some(found)) = cdb.get(key) {
                        assert_eq!(&found, data);
                    }
                }
                // Walking the records needs exactly the records.
                assert_eq!(cdb.for_each(|_, _| {}).is_err(), len < records_end, "length {len}");
            }
            Ok(None) => unreachable!(),
        }
    }
    // Lengths that point far beyond the file.
    let mut bad = good.clone();
    bad[2048..2056].copy_from_slice(&[0xff, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff, 0x7f]);
    std::fs::write(&path, &bad).unwrap();
    let mut cdb = cdb::Cdb::open(&path).unwrap().unwrap();
    assert!(cdb.for_each(|_, _| {}).is_err());
}

#[test]
fn the_hash_is_djbs() {
    // Values from cdb's definition: h = 5381; h = (h << 5) + h ^ c.
    assert_eq!(cdb::hash(b""), 5381);
    assert_eq!(cdb::hash(b"a"), (5381u32 << 5).wrapping_add(5381) ^ 97);
    assert_eq!(cdb::hash(b"!example.com-"), {
        let mut h = 5381u32;
        for &c in b"!example.com-" {
            h = (h << 5).wrapping_add(h) ^ u32::from(c);
        }
        h
    });
}

/// `openssl passwd -6 -salt odmrsalt tanstaaf`, as vpopmail's pw_passwd holds it.
const REAL_HASH6: &str =
    "$6$odmrsalt$NfwqrogrOHng5UOzqG7QWFFa58rAz7PbRmjZIradWjs4ZhmubZhuMWFBH0dPxlAoqc2FlD5dqQdDhRgyq3vAX/";

#[test]
fn clear_passwords_verify_against_pw_passwd_for_plain_under_tls() {
    let tree = Tree::standard();
    tree.vpasswd(
        "solo.example",
        &[
            &format!("hashed:{REAL_HASH6}:1:0:Hashed only:/x/hashed:NOQUOTA"),
            &format!("blocked:{REAL_HASH6}:1:2048:No SMTP:/x/blocked:NOQUOTA"),
        ],
    );
    let vp = tree.start();
    assert_eq!(vp.verify_password("hashed@solo.example", b"tanstaaf"), Ok(true));
    assert_eq!(vp.verify_password("hashed@solo.example", b"tanstaaF"), Ok(false));
    assert_eq!(vp.verify_password("blocked@solo.example", b"tanstaaf"), Err(Status::Denied), "NO_SMTP");
    assert_eq!(vp.verify_password("nobody@solo.example", b"tanstaaf"), Err(Status::NotFound));
    tree.assert_no_secrets_logged();
}
