//! aiosmtpd on loopback, storing each accepted message in a Maildir (the e-mail channel's
//! relay in tests); can be killed and restarted on the same port.

use crate::process::{sigkill, start_quiet};
use crate::wait::wait_listening;
use crate::workspace_root;
use anyhow::Result;
use std::path::PathBuf;

/// A real SMTP server (aiosmtpd, installed into `.tools` by `make tools`) on 127.0.0.1 that
/// stores every message it accepts in a Maildir; killed on drop. It can be killed and started
/// again on the same port, keeping what it has stored.
pub struct SmtpSink {
    child: Option<std::process::Child>,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    /// Start it on `port` (pick one with [`free_port`]) and wait until it accepts connections.
    pub fn start(port: u16) -> Result<Self> {
        let mut sink = Self {
            child: None,
            port,
            maildir: tempfile::tempdir()?,
        };
        sink.spawn()?;
        Ok(sink)
    }

    fn spawn(&mut self) -> Result<()> {
        let python = std::env::var("TOCSIN_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".tools/venv/bin/python"));
        let mut cmd = std::process::Command::new(&python);
        cmd.args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{}", self.port),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(self.maildir.path().join("Maildir"));
        let mut child = start_quiet(
            &mut cmd,
            &format!("aiosmtpd with {}", python.display()),
            "run `make tools`",
        )?;
        wait_listening(&mut child, self.port, "aiosmtpd")?;
        self.child = Some(child);
        Ok(())
    }

    /// Kill it (SIGKILL): connections refused until [`SmtpSink::restart`].
    pub fn kill(&mut self) {
        sigkill(&mut self.child);
    }

    /// Start it again on the same port with the same Maildir.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Every message received so far, raw.
    pub fn messages(&self) -> Vec<String> {
        let dir = self.maildir.path().join("Maildir/new");
        let mut out: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let t = e.metadata().and_then(|m| m.modified()).ok()?;
                        Some((t, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by_key(|(t, _)| *t);
        out.into_iter().map(|(_, m)| m).collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.kill();
    }
}
