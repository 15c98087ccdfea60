//! Test helpers shared by every crate's tests: a real `nats-server` with JetStream per test,
//! on a free loopback port with a temporary store, stopped when dropped; waits that always
//! have a timeout.

use anyhow::{Context, Result, bail};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `nats-server -js` child process on 127.0.0.1, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: tempfile::TempDir,
    binary: PathBuf,
}

/// Where the nats-server binary is: `$TOCSIN_NATS_SERVER`, the project's `.tools` venv
/// (installed by `make tools`), or `PATH`.
pub fn nats_server_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TOCSIN_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let root = workspace_root();
    let venv = root.join(".tools/venv/bin/nats-server");
    if venv.exists() {
        return Ok(venv);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("nats-server");
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("nats-server not found: run `make tools` (installs nats-server 2.15 into .tools/) or set TOCSIN_NATS_SERVER")
}

/// The workspace root (the directory holding the top `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    while !dir.join(".git").exists() && !dir.join("Makefile").exists() {
        if !dir.pop() {
            return PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        }
    }
    dir
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl NatsServer {
    /// Start a server and wait until it accepts connections (10 s at most).
    pub fn start() -> Result<Self> {
        let binary = nats_server_binary()?;
        let store = tempfile::tempdir()?;
        let mut last = None;
        for _ in 0..5 {
            let port = free_port();
            match Self::spawn(&binary, port, store.path()) {
                Ok(child) => {
                    return Ok(Self {
                        child: Some(child),
                        port,
                        store,
                        binary,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("could not start nats-server")))
    }

    fn spawn(binary: &Path, port: u16, store: &Path) -> Result<Child> {
        let mut child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("nats-server exited early with {status} (port {port} taken?)");
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("nats-server did not listen on 127.0.0.1:{port} within 10s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::spawn(&self.binary, self.port, self.store.path()) {
                Ok(c) => {
                    self.child = Some(c);
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
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
