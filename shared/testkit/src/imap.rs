//! Dovecot (IMAP and LMTP) on loopback with mailboxes for the test's users.

use crate::free_port;
use crate::process::start_quiet;
use crate::wait::wait_port;
use anyhow::{Result, bail};

/// A real IMAP server (Dovecot, from Debian's `dovecot-imapd` and `dovecot-lmtpd`) on free
/// loopback ports, its configuration, state and mail in a temporary directory; plain-text
/// IMAP (loopback only) and LMTP for putting mail into a mailbox. Stopped on drop.
pub struct Dovecot {
    child: Option<std::process::Child>,
    pub imap_port: u16,
    pub lmtp_port: u16,
    dir: tempfile::TempDir,
}

impl Dovecot {
    /// Start it with one account per `(user, password)` (users like `ann@example.test`).
    pub fn start(accounts: &[(&str, &str)]) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let base = dir.path().display().to_string();
        for d in ["run", "state", "mail"] {
            std::fs::create_dir_all(dir.path().join(d))?;
        }
        // mail processes run as nobody and refuse root
        std::os::unix::fs::chown(dir.path().join("mail"), Some(65534), Some(65534))?;
        let users: String = accounts
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.path().join("users"), users)?;
        let (imap_port, lmtp_port) = (free_port(), free_port());
        let instance = dir
            .path()
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "tocsin-test".into());
        let config = format!(
            "base_dir = {base}/run
state_dir = {base}/state
instance_name = dovecot-{instance}
log_path = {base}/dovecot.log
protocols = imap lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {base}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={base}/mail/%u
}}
mail_location = maildir:~/Maildir
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lmtp_port}
  }}
}}
"
        );
        std::fs::write(dir.path().join("dovecot.conf"), config)?;
        let child = start_quiet(
            std::process::Command::new("dovecot")
                .arg("-c")
                .arg(dir.path().join("dovecot.conf"))
                .arg("-F"),
            "dovecot",
            "run `make test-tools` (apt-get install dovecot-imapd dovecot-lmtpd)",
        )?;
        let mut d = Dovecot {
            child: Some(child),
            imap_port,
            lmtp_port,
            dir,
        };
        wait_port(imap_port, "dovecot (imap)")?;
        wait_port(lmtp_port, "dovecot (lmtp)")?;
        if let Some(c) = d.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            bail!("dovecot exited at start with {status}");
        }
        Ok(d)
    }

    /// Put a raw message into `user`'s INBOX through LMTP (with swaks).
    pub fn deliver(&self, user: &str, raw: &str) -> Result<()> {
        let file = self.dir.path().join(format!("msg-{}.eml", free_port()));
        std::fs::write(&file, raw)?;
        let out = std::process::Command::new("swaks")
            .args(["--protocol", "LMTP", "--server"])
            .arg(format!("127.0.0.1:{}", self.lmtp_port))
            .args(["--from", "sender@example.test", "--to", user, "--data"])
            .arg(&file)
            .stdin(std::process::Stdio::null())
            .output()?;
        let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() || !transcript.contains("250 ") {
            bail!("LMTP delivery failed: {transcript}");
        }
        Ok(())
    }

    /// How many messages in `user`'s INBOX carry the `\Seen` flag (Maildir `cur/*:2,*S*`).
    pub fn seen(&self, user: &str) -> usize {
        std::fs::read_dir(self.dir.path().join("mail").join(user).join("Maildir/cur"))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.rsplit_once(":2,")
                            .is_some_and(|(_, flags)| flags.contains('S'))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
