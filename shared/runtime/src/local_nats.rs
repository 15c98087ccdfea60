//! Starting a local `nats-server` with JetStream: for `tocsin up` (a fixed port, the store
//! under `./data`) and for tests (a free port, a temporary store). Killed when dropped.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the nats-server binary is: `$TOCSIN_NATS_SERVER`, the project's `.tools` venv
/// (`make tools` installs the pinned 2.15 build there; `start_dir` and its ancestors are
/// searched), or `PATH`.
pub fn find_binary(start_dir: &Path) -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("TOCSIN_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let mut dir = Some(start_dir);
    while let Some(d) = dir {
        let venv = d.join(".tools/venv/bin/nats-server");
        if venv.exists() {
            return Ok(venv);
        }
        dir = d.parent();
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        let p = dir.join("nats-server");
        if p.exists() {
            return Ok(p);
        }
    }
    Err("nats-server not found: run `make tools` (installs nats-server 2.15 into .tools/), put it on PATH, or set TOCSIN_NATS_SERVER".into())
}

/// A running nats-server child process.
pub struct LocalNats {
    child: Option<Child>,
    pub port: u16,
    pub binary: PathBuf,
    pub store: PathBuf,
    /// Further arguments (a cluster node's name and routes).
    pub args: Vec<String>,
}

impl LocalNats {
    /// Start `binary` on 127.0.0.1:`port` with JetStream storing in `store`, and wait (10 s at
    /// most) until it accepts connections. Refuses a port that is already taken.
    pub fn start(
        binary: &Path,
        port: u16,
        store: &Path,
        log: Option<&Path>,
    ) -> Result<Self, String> {
        Self::start_with_args(binary, port, store, log, &[])
    }

    /// [`LocalNats::start`] with further arguments for nats-server.
    pub fn start_with_args(
        binary: &Path,
        port: u16,
        store: &Path,
        log: Option<&Path>,
        args: &[String],
    ) -> Result<Self, String> {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Err(format!(
                "port {port} on 127.0.0.1 is already in use (another nats-server?); stop it or choose another bus.url"
            ));
        }
        std::fs::create_dir_all(store)
            .map_err(|e| format!("cannot create {}: {e}", store.display()))?;
        let mut cmd = Command::new(binary);
        cmd.args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(l) = log {
            cmd.arg("-l").arg(l);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "nats-server exited at start with {status}; see its log"
                ));
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "nats-server did not listen on 127.0.0.1:{port} within 10s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            child: Some(child),
            port,
            binary: binary.to_owned(),
            store: store.to_owned(),
            args: args.to_vec(),
        })
    }

    /// The server's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stop it now (SIGKILL), keeping the store.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop it gracefully (SIGTERM; JetStream flushes), waiting up to `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the same server again (same port, same store) after [`LocalNats::kill`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Self::start_with_args(&self.binary, self.port, &self.store, None, &self.args) {
                Ok(mut fresh) => {
                    self.child = fresh.child.take();
                    return Ok(());
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        self.kill();
    }
}
