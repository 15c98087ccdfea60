//! Prosody on loopback with accounts registered by the test (the XMPP server in tests).

use crate::free_port;
use crate::process::{sigkill, start_quiet};
use crate::wait::wait_listening;
use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;

/// A real XMPP server (Prosody, from Debian's packages) on a free loopback port, with its
/// configuration and data in a temporary directory; killed on drop. Plain-text client
/// connections are allowed (loopback only), stream management (XEP-0198) is on.
pub struct Prosody {
    child: Option<std::process::Child>,
    pub port: u16,
    pub domain: String,
    dir: tempfile::TempDir,
}

impl Prosody {
    /// Start it and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let base = dir.path().display().to_string();
        std::fs::create_dir_all(dir.path().join("data"))?;
        let config = format!(
            r#"pidfile = "{base}/prosody.pid"
data_path = "{base}/data"
run_as_root = true
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {port} }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
modules_enabled = {{ "roster"; "saslauth"; "disco"; "ping"; "presence"; "smacks"; "offline" }}
modules_disabled = {{ "s2s"; "tls" }}
authentication = "internal_hashed"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{base}/prosody.log" }} }}
VirtualHost "localhost"
"#
        );
        std::fs::write(dir.path().join("prosody.cfg.lua"), config)?;
        let mut p = Self {
            child: None,
            port,
            domain: "localhost".into(),
            dir,
        };
        p.spawn()?;
        Ok(p)
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("prosody.cfg.lua")
    }

    fn spawn(&mut self) -> Result<()> {
        let mut child = start_quiet(
            std::process::Command::new("prosody")
                .arg("--config")
                .arg(self.config())
                .arg("-F"),
            "prosody",
            "run `make test-tools` (apt-get install prosody)",
        )?;
        wait_listening(&mut child, self.port, "prosody")
            .map_err(|e| anyhow!("{e}; see {}", self.log_path().display()))?;
        self.child = Some(child);
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("prosody.log")
    }

    /// `host:port` for clients.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Create an account (`user@localhost`).
    pub fn register(&self, user: &str, password: &str) -> Result<String> {
        let out = std::process::Command::new("prosodyctl")
            .arg("--config")
            .arg(self.config())
            .args(["register", user, &self.domain, password])
            .stdin(std::process::Stdio::null())
            .output()?;
        if !out.status.success() {
            bail!(
                "prosodyctl register {user} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(format!("{user}@{}", self.domain))
    }

    /// Kill the server (SIGKILL); accounts and rosters stay.
    pub fn kill(&mut self) {
        sigkill(&mut self.child);
    }

    /// Start it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }
}

impl Drop for Prosody {
    fn drop(&mut self) {
        self.kill();
    }
}
