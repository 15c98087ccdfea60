//! A real `nats-server` with JetStream per test (or a three-node cluster), on free loopback
//! ports with temporary stores, killed on drop.

use crate::{free_port, workspace_root};
use anyhow::{Result, anyhow, bail};
use std::time::Duration;
use tocsin_runtime::local_nats::{LocalNats, find_binary};

/// A `nats-server -js` child process on 127.0.0.1 with a temporary store, killed on drop.
pub struct NatsServer {
    inner: LocalNats,
    _store: tempfile::TempDir,
}

impl NatsServer {
    /// Start a server on a free port and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        Self::start_with_config(None)
    }

    /// [`NatsServer::start`] with a configuration file (`-c`: an authorization block).
    pub fn start_with_config(config: Option<&std::path::Path>) -> Result<Self> {
        let binary = find_binary(&workspace_root()).map_err(|e| anyhow!(e))?;
        let store = tempfile::tempdir()?;
        let args: Vec<String> = config
            .map(|c| vec!["-c".to_owned(), c.display().to_string()])
            .unwrap_or_default();
        let mut last = String::new();
        for _ in 0..5 {
            match LocalNats::start_with_args(&binary, free_port(), store.path(), None, &args) {
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

/// A JetStream cluster of nats-servers on loopback (`--cluster` routes between them), each
/// with its own store; any node can be killed and restarted. Streams created with
/// `replicas = 3` survive the loss of one node.
pub struct NatsCluster {
    nodes: Vec<(LocalNats, u16)>,
    _stores: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Start `n` nodes and wait (30 s at most) until every one reports JetStream healthy
    /// (current with the meta leader).
    pub fn start(n: usize) -> Result<Self> {
        Self::start_with_config(n, None)
    }

    /// [`NatsCluster::start`] with a configuration file for every node (`-c`).
    pub fn start_with_config(n: usize, config: Option<&std::path::Path>) -> Result<Self> {
        let binary = find_binary(&workspace_root()).map_err(|e| anyhow!(e))?;
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let routes = ports
            .iter()
            .map(|(_, c, _)| format!("nats://127.0.0.1:{c}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        let mut stores = Vec::new();
        for (i, (port, cluster, monitor)) in ports.iter().enumerate() {
            let store = tempfile::tempdir()?;
            let mut args = vec![
                "--server_name".to_owned(),
                format!("n{i}"),
                "--cluster_name".to_owned(),
                "tocsin-test".to_owned(),
                "--cluster".to_owned(),
                format!("nats://127.0.0.1:{cluster}"),
                "--routes".to_owned(),
                routes.clone(),
                "-m".to_owned(),
                monitor.to_string(),
            ];
            if let Some(c) = config {
                args.extend(["-c".to_owned(), c.display().to_string()]);
            }
            let node = LocalNats::start_with_args(&binary, *port, store.path(), None, &args)
                .map_err(|e| anyhow!("cluster node n{i}: {e}"))?;
            nodes.push((node, *monitor));
            stores.push(store);
        }
        let c = NatsCluster {
            nodes,
            _stores: stores,
        };
        for i in 0..n {
            c.wait_healthy(i, Duration::from_secs(30))?;
        }
        Ok(c)
    }

    /// Every node's client URL, comma-separated (what `bus.url` takes).
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|(n, _)| n.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kill node `i` (SIGKILL), keeping its store.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].0.kill();
    }

    /// Start node `i` again with its store and wait until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<()> {
        self.nodes[i].0.restart().map_err(|e| anyhow!(e))?;
        self.wait_healthy(i, Duration::from_secs(30))
    }

    /// Wait until node `i`'s monitoring endpoint answers `/healthz` with 200.
    pub fn wait_healthy(&self, i: usize, timeout: Duration) -> Result<()> {
        use std::io::{Read, Write};
        let port = self.nodes[i].1;
        let deadline = std::time::Instant::now() + timeout;
        let mut last = String::new();
        while std::time::Instant::now() < deadline {
            let answer = (|| -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                s.set_read_timeout(Some(Duration::from_secs(2)))?;
                s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })();
            match answer {
                Ok(a) if a.starts_with("HTTP/1.0 200") || a.starts_with("HTTP/1.1 200") => {
                    return Ok(());
                }
                Ok(a) => last = a.lines().last().unwrap_or_default().to_owned(),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("cluster node n{i} not healthy after {timeout:?}: {last}")
    }
}
