//! Shared by the Exim end-to-end tests (`t/exim.rs`, `t/exim_fetchmail.rs`, which also include
//! `t/support/mod.rs` as `support`): a provider whose
//! mail is held by the real Exim 4.96 from Debian (`/usr/sbin/exim4`), run only as command-line
//! invocations with a private `-C` configuration and a private spool — no daemon — and the
//! odmrd configuration that serves that spool with `builtin:exim`.
//!
//! Privileges: with `-C` on a file not in Debian's `TRUSTED_CONFIG_LIST` Exim gives up root and
//! runs as its caller. As root (CI) every Exim command therefore runs as `Debian-exim`, which
//! owns the spool as on a real Debian host; as an ordinary user everything runs as that user.
//! The Exim configuration holds every domain in the queue: a `redirect` router answers
//! `:defer:` for the ODMR domains (the setup the README recommends) and another defers the rest
//! (no remote delivery in tests), so queue runners (`-qff`) take Exim's locks and merge
//! journals but never deliver.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use crate::support::odmrd::{PASSWORD, USER};
use crate::support::RecordingSendmail;
pub use crate::support::EXIM;

/// The domains the customer may collect.
pub const ODMR_DOMAINS: &str = "example.org : example.net : example.org.uk";

/// Who runs Exim (and owns the spool): Debian-exim as root, else ourselves.
pub fn exim_identity() -> (u32, u32) {
    use nix::unistd::{getegid, geteuid, User};
    if !geteuid().is_root() {
        return (geteuid().as_raw(), getegid().as_raw());
    }
    let user = User::from_name("Debian-exim").ok().flatten().expect("the Debian-exim user (exim4-base)");
    (user.uid.as_raw(), user.gid.as_raw())
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    if !is_root() {
        return;
    }
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    if path.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

/// Which user odmrd runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunAs {
    /// The Exim user, as the README tells sites to run it.
    EximUser,
    /// Whoever runs the test (root in CI: exercises handing journals to the Exim user).
    Caller,
    /// `nobody` with the Exim group (only as root): group access is not enough.
    NobodyWithEximGroup,
}

/// The provider: Exim's configuration and spool, odmrd's configuration, a DSN recorder.
pub struct Provider {
    pub dir: tempfile::TempDir,
    pub uid: u32,
    pub gid: u32,
    /// Records the DSNs odmrd submits.
    pub sendmail: RecordingSendmail,
    /// odmrd's `[queue] plugin`: `builtin:exim` or the path of a shared object.
    pub queue_plugin: String,
    /// Extra lines for odmrd's `[queue]` section.
    pub queue_extra: String,
}

impl Provider {
    /// `split`: Exim's `split_spool_directory`.
    pub fn new(split: bool) -> Provider {
        assert!(Path::new(EXIM).exists(), "{EXIM} is missing: install exim4-daemon-light (t/setup-deps)");
        let (uid, gid) = exim_identity();
        let dir = tempfile::Builder::new().prefix("odmrd-exim.").tempdir().unwrap();
        let root = dir.path();
        fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir(root.join("spool")).unwrap();
        fs::create_dir(root.join("locks")).unwrap();
        let d = root.display();
        let conf = format!(
            "# Provider Exim for odmrd's tests (t/exim_common.rs)\n\
             exim_user = {uid}\nexim_group = {gid}\n\
             primary_hostname = provider.test\nqualify_domain = provider.test\n\
             spool_directory = {d}/spool\nlog_file_path = {d}/spool/log/%slog\n\
             split_spool_directory = {split}\n\
             host_lookup =\nkeep_environment =\n\
             domainlist odmr_domains = {ODMR_DOMAINS}\n\
             dsn_advertise_hosts = *\nacl_smtp_rcpt = accept_all\n\
             \nbegin acl\n\naccept_all:\n  accept\n\
             \nbegin routers\n\n\
             odmr_hold:\n  driver = redirect\n  domains = +odmr_domains\n  allow_defer\n\
             \x20 data = :defer: held for ODMR collection\n  no_verify\n\n\
             no_remote:\n  driver = redirect\n  allow_defer\n  data = :defer: no remote delivery in tests\n\
             \nbegin retry\n\n\
             *  *  F,30d,1h\n",
            split = if split { "true" } else { "false" }
        );
        fs::write(root.join("exim.conf"), conf).unwrap();
        fs::write(
            root.join("passwd"),
            format!("{USER}:{{PLAIN}}{PASSWORD}::::::odmr_domains=example.org,example.net,example.org.uk\n"),
        )
        .unwrap();
        chown_tree(root, uid, gid);
        fs::set_permissions(root.join("locks"), fs::Permissions::from_mode(0o777)).unwrap();
        Provider {
            dir,
            uid,
            gid,
            sendmail: RecordingSendmail::new(),
            queue_plugin: "builtin:exim".into(),
            queue_extra: String::new(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn spool(&self) -> PathBuf {
        self.path().join("spool")
    }

    pub fn conf(&self) -> PathBuf {
        self.path().join("exim.conf")
    }

    /// An Exim command as the Exim user.
    pub fn exim_command(&self) -> Command {
        let mut cmd = Command::new(EXIM);
        cmd.arg("-C").arg(self.conf());
        cmd.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").current_dir(self.path());
        if is_root() {
            cmd.uid(self.uid).gid(self.gid);
        }
        cmd
    }

    /// Run Exim with `args`; panics on failure.
    pub fn exim(&self, args: &[&str]) -> String {
        let out = self.exim_command().args(args).stdin(Stdio::null()).output().unwrap();
        assert!(out.status.success(), "exim {args:?}: {}\n{}", out.status, self.exim_logs());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Start `exim -qff` (every message, frozen or not, ignoring retry times) in the background.
    pub fn spawn_queue_run(&self) -> Child {
        self.exim_command()
            .arg("-qff")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Queue a message with `exim -odq`; returns its id.
    pub fn queue(&self, sender: &str, rcpts: &[&str], subject: &str, body: &str) -> String {
        let before = self.ids(&[]);
        let mut child = self
            .exim_command()
            .args(["-odq", "-oi", "-f", sender])
            .args(rcpts)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let message = format!("From: {sender}\nSubject: {subject}\n\n{body}");
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), message.as_bytes()).unwrap();
        drop(child.stdin.take());
        assert!(child.wait().unwrap().success(), "{}", self.exim_logs());
        let after = self.ids(&[]);
        let new: Vec<String> = after.difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "one new message expected: {new:?}");
        new.into_iter().next().unwrap()
    }

    /// Queue a message with `exim -bs -odq` (local SMTP, so ESMTP parameters
    /// such as RET, ENVID, NOTIFY and ORCPT reach the spool): `mail` and
    /// `rcpts` are the arguments of MAIL FROM: and RCPT TO:. Returns its id.
    pub fn queue_smtp(&self, mail: &str, rcpts: &[&str], message: &str) -> String {
        let before = self.ids(&[]);
        let mut script = format!("EHLO client.example\r\nMAIL FROM:{mail}\r\n");
        for rcpt in rcpts {
            script.push_str(&format!("RCPT TO:{rcpt}\r\n"));
        }
        script.push_str("DATA\r\n");
        for line in message.lines() {
            let stuffed = if line.starts_with('.') { "." } else { "" };
            script.push_str(&format!("{stuffed}{line}\r\n"));
        }
        script.push_str(".\r\nQUIT\r\n");
        let mut child = self
            .exim_command()
            .args(["-odq", "-bs"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let transcript = String::from_utf8_lossy(&out.stdout);
        assert!(transcript.contains("250 OK id="), "{transcript}\n{}", self.exim_logs());
        let after = self.ids(&[]);
        let new: Vec<String> = after.difference(&before).cloned().collect();
        assert_eq!(new.len(), 1, "one new message expected: {new:?}");
        new.into_iter().next().unwrap()
    }

    /// Message ids on the queue (from `-bp`), with extra options such as `-qGname`.
    pub fn ids(&self, extra: &[&str]) -> BTreeSet<String> {
        let mut args = extra.to_vec();
        args.push("-bp");
        parse_bp(&self.exim(&args)).into_keys().collect()
    }

    /// Exim's view of the queue (`-bp`): each message id with its undelivered recipients;
    /// recipients marked `D` (delivered, from `-H` or `-J`) are left out.
    pub fn pending(&self, extra: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        let mut args = extra.to_vec();
        args.push("-bp");
        parse_bp(&self.exim(&args))
    }

    /// Ids of frozen messages according to `-bp`.
    pub fn frozen(&self) -> BTreeSet<String> {
        self.exim(&["-bp"])
            .lines()
            .filter(|l| l.contains("*** frozen ***"))
            .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
            .collect()
    }

    /// Every `-J` file left under the spool.
    pub fn journals(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = fs::read_dir(p) else { return };
            for e in entries {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.to_string_lossy().ends_with("-J") {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.spool(), &mut out);
        out
    }

    /// Path of a message's file in input/ (split or not), if present.
    pub fn spool_file(&self, id: &str, suffix: &str) -> Option<PathBuf> {
        let name = format!("{id}{suffix}");
        let input = self.spool().join("input");
        [input.join(&name), input.join(&id[5..6]).join(&name)].into_iter().find(|p| p.exists())
    }

    /// One of Exim's logs (`mainlog`, `paniclog`) without the expected "-C" privilege notes.
    fn exim_log(&self, name: &str) -> String {
        fs::read_to_string(self.spool().join("log").join(name))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("lost privilege for using -C option"))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// Exim's main and panic logs, without the expected "-C" privilege note.
    pub fn exim_logs(&self) -> String {
        format!("--- mainlog\n{}--- paniclog\n{}", self.exim_log("mainlog"), self.exim_log("paniclog"))
    }

    /// The panic log without the expected "-C" privilege notes.
    pub fn panics(&self) -> String {
        self.exim_log("paniclog")
    }

    /// odmrd's configuration for this provider; `listen` for the standalone tests.
    pub fn odmrd_config(&self) -> PathBuf {
        let d = self.path().display();
        let ini = format!(
            "[server]\nhostname = odmr.test.example\nlock_directory = {d}/locks\n\
             [auth]\nmax_failures = 3\n\
             [credentials]\nplugin = builtin:passwd\nfile = {d}/passwd\n\
             [queue]\nplugin = {plugin}\nspool_directory = {d}/spool\n{extra}\n\
             [bounce]\nsendmail = {sendmail}\n\
             [log]\nsyslog = off\nstderr = yes\nlevel = debug\n",
            plugin = self.queue_plugin,
            extra = self.queue_extra,
            sendmail = self.sendmail.path().display()
        );
        let path = self.path().join("odmrd.ini");
        fs::write(&path, ini).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// An odmrd command with this configuration, as `who`.
    pub fn odmrd_command(&self, who: RunAs) -> Command {
        let mut cmd = crate::support::odmrd::odmrd_command(&self.odmrd_config());
        match who {
            RunAs::Caller => {}
            RunAs::EximUser => {
                if is_root() {
                    cmd.uid(self.uid).gid(self.gid);
                }
            }
            RunAs::NobodyWithEximGroup => {
                let nobody = nix::unistd::User::from_name("nobody").unwrap().expect("user nobody");
                cmd.uid(nobody.uid.as_raw()).gid(self.gid);
            }
        }
        cmd
    }
}

/// Parse `exim -bp` into id → undelivered recipients.
pub fn parse_bp(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with(' ') || line.trim_start().chars().next().is_some_and(|c| c.is_ascii_digit()) {
            // "  0m   290 1xV8MQ-0000Kc-1y <alice@sender.example>"; the size is missing
            // for a -H without its -D, so the id is the word before the sender.
            let words: Vec<&str> = line.split_whitespace().collect();
            let sender = words.iter().position(|w| w.starts_with('<')).expect("sender in -bp line");
            let id = words[sender - 1].to_string();
            out.entry(id.clone()).or_default();
            current = Some(id);
            continue;
        }
        let rcpt = line.trim();
        if rcpt.starts_with("D ") {
            continue;
        }
        let id = current.clone().expect("recipient before message line");
        out.get_mut(&id).unwrap().insert(rcpt.to_string());
    }
    out
}

/// Convenience: a set of strings.
pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}
