//! Test helpers shared by every crate's tests: a real `nats-server` with JetStream per test,
//! on a free loopback port with a temporary store, stopped when dropped; waits that always
//! have a timeout; unique bus prefixes.

pub mod im;

use anyhow::{Result, anyhow, bail};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;
use tocsin_runtime::local_nats::{LocalNats, find_binary};

/// A `nats-server -js` child process on 127.0.0.1 with a temporary store, killed on drop.
pub struct NatsServer {
    inner: LocalNats,
    _store: tempfile::TempDir,
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.pop();
    dir.pop();
    dir
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        let binary = find_binary(&workspace_root()).map_err(|e| anyhow!(e))?;
        let store = tempfile::tempdir()?;
        let mut last = String::new();
        for _ in 0..5 {
            match LocalNats::start(&binary, free_port(), store.path(), None) {
                Ok(inner) => {
                    return Ok(Self {
                        inner,
                        _store: store,
                    });
                }
                Err(e) => last = e,
            }
        }
        bail!("could not start nats-server: {last}")
    }

    pub fn url(&self) -> String {
        self.inner.url()
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Kill the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        self.inner.kill();
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<()> {
        self.inner.restart().map_err(|e| anyhow!(e))
    }
}

/// Poll `check` every 25 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A unique bus prefix for one test, so tests can share a server without sharing streams.
pub fn unique_prefix(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let clean: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("t{}-{clean}-{n}", std::process::id())
}

/// A real SMTP server (aiosmtpd, installed into `.tools` by `make tools`) on 127.0.0.1 that
/// stores every message it accepts in a Maildir; killed on drop.
pub struct SmtpSink {
    child: std::process::Child,
    pub port: u16,
    maildir: tempfile::TempDir,
}

impl SmtpSink {
    /// Start it on `port` (pick one with [`free_port`]) and wait until it accepts connections.
    pub fn start(port: u16) -> Result<Self> {
        let python = std::env::var("TOCSIN_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".tools/venv/bin/python"));
        let maildir = tempfile::tempdir()?;
        let mut child = std::process::Command::new(&python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("Maildir"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "cannot start aiosmtpd with {} ({e}): run `make tools`",
                    python.display()
                )
            })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("aiosmtpd exited at start with {status}");
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("aiosmtpd did not listen on 127.0.0.1:{port} within 15s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            port,
            maildir,
        })
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let mut child = std::process::Command::new("prosody")
            .arg("--config")
            .arg(self.config())
            .arg("-F")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!("cannot start prosody ({e}): run `make tools` (apt-get install prosody)")
            })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "prosody exited at start with {status}; see {}",
                    self.log_path().display()
                );
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "prosody did not listen on 127.0.0.1:{} within 15s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
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
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
