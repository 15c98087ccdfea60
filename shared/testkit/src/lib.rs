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
            let args = [
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
        let mut child = std::process::Command::new(&python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{}", self.port),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(self.maildir.path().join("Maildir"))
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

/// An S3-compatible server (moto's server mode, installed into `.tools/s3venv` by
/// `make test-tools`) on a free loopback port, everything in memory; killed on drop. It speaks
/// the S3 REST API with SigV4 as AWS does; any access key is accepted.
pub struct S3Server {
    child: std::process::Child,
    pub port: u16,
}

impl S3Server {
    pub fn start() -> Result<Self> {
        let binary = std::env::var("TOCSIN_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".tools/s3venv/bin/moto_server"));
        let port = free_port();
        let mut child = std::process::Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "cannot start {} ({e}): run `make test-tools`",
                    binary.display()
                )
            })?;
        wait_listening(&mut child, port, "moto_server")?;
        Ok(Self { child, port })
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Create a bucket (S3 CreateBucket: `PUT /<bucket>`; moto takes it unsigned).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
        write!(
            conn,
            "PUT /{bucket} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        )?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer)?;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(anyhow!(
                "create bucket {bucket}: {}",
                answer.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }
}

impl Drop for S3Server {
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
                anyhow!(
                    "cannot start prosody ({e}): run `make test-tools` (apt-get install prosody)"
                )
            })?;
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

/// A real SMS gateway: Kannel (Debian's `kannel` and `kannel-extras`) — bearerbox, smsbox and
/// the fake SMSC `fakesmsc` — on free loopback ports, in a temporary directory; killed on
/// drop. Outbound messages (`sendsms`) end up in fakesmsc's log ([`Kannel::delivered`]);
/// [`Kannel::phone_sends`] makes fakesmsc send an inbound message, which Kannel passes to
/// `mo_url`.
pub struct Kannel {
    children: Vec<std::process::Child>,
    /// fakesmsc reads inbound messages from this FIFO; holding it open keeps fakesmsc alive.
    fifo: Option<std::fs::File>,
    pub sendsms_port: u16,
    pub username: String,
    pub password: String,
    dir: tempfile::TempDir,
}

impl Kannel {
    /// Start Kannel; inbound messages are fetched as `mo_url` with `%p` (sender), `%a`
    /// (text) and `%t` (time) filled in.
    pub fn start(mo_url: &str) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let base = dir.path().display().to_string();
        let (admin, smsbox, smsc, sendsms) = (free_port(), free_port(), free_port(), free_port());
        let config = format!(
            r#"group = core
admin-port = {admin}
admin-interface = 127.0.0.1
admin-password = adminpw
status-password = statuspw
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox}
smsbox-interface = 127.0.0.1
box-allow-ip = "127.0.0.1"
log-file = "{base}/bearerbox.log"
log-level = 0
access-log = "{base}/bb-access.log"
store-type = file
store-location = "{base}/kannel.store"

group = smsc
smsc = fake
smsc-id = fake1
port = {smsc}
connect-allow-ip = "127.0.0.1"

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox}
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
global-sender = 12345
log-file = "{base}/smsbox.log"
log-level = 0
access-log = "{base}/smsbox-access.log"

group = sendsms-user
username = tocsin
password = gateway-password
max-messages = 3
concatenation = true

group = sms-service
keyword = default
get-url = "{mo_url}"
omit-empty = true
max-messages = 0
"#
        );
        let conf = dir.path().join("kannel.conf");
        std::fs::write(&conf, config)?;
        let path = dir.path().to_path_buf();
        let spawn = |program: &str, args: &[&str], out: &str| -> Result<std::process::Child> {
            let log = std::fs::File::create(path.join(out))?;
            std::process::Command::new(program)
                .args(args)
                .current_dir(&path)
                .stdin(std::process::Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| {
                    anyhow!("cannot start {program} ({e}): run `make test-tools` (apt-get install kannel kannel-extras)")
                })
        };
        let conf_s = conf.display().to_string();
        let mut k = Kannel {
            children: vec![],
            fifo: None,
            sendsms_port: sendsms,
            username: "tocsin".into(),
            password: "gateway-password".into(),
            dir,
        };
        k.children
            .push(spawn("bearerbox", &["-v", "1", &conf_s], "bb.out")?);
        wait_port(smsbox, "bearerbox")?;
        k.children
            .push(spawn("smsbox", &["-v", "1", &conf_s], "smsbox.out")?);
        wait_port(sendsms, "smsbox")?;
        // fakesmsc reads inbound messages from a FIFO; we hold its write end
        let fifo = k.dir.path().join("mo.fifo");
        let status = std::process::Command::new("mkfifo").arg(&fifo).status()?;
        if !status.success() {
            bail!("mkfifo failed");
        }
        let fifo_s = fifo.display().to_string();
        let cmd =
            format!("exec /usr/lib/kannel/test/fakesmsc -H 127.0.0.1 -r {smsc} -m -1 < '{fifo_s}'");
        k.children.push(spawn("sh", &["-c", &cmd], "fakesmsc.log")?);
        k.fifo = Some(std::fs::OpenOptions::new().write(true).open(&fifo)?);
        // wait until the fake SMSC is connected: before that, sendsms only queues
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if http_get_local(admin, "/status.txt?password=statuspw").contains("online") {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("the fake SMSC did not come online within 15s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(k)
    }

    /// Kannel's sendsms URL.
    pub fn sendsms_url(&self) -> String {
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", self.sendsms_port)
    }

    /// The messages Kannel handed to the fake SMSC (bearerbox's access log lines for them:
    /// `Sent SMS [SMSC:fake1] … [to:…] … [msg:…]`).
    pub fn delivered(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("bb-access.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Sent SMS"))
            .map(str::to_owned)
            .collect()
    }

    /// Kannel's logs, for a failing test's message.
    pub fn logs(&self) -> String {
        ["bb-access.log", "smsbox-access.log", "fakesmsc.log"]
            .iter()
            .map(|f| {
                let t = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                format!("--- {f}\n{t}")
            })
            .collect()
    }

    /// A phone (`from`, digits) texts `text` to the gateway's number.
    pub fn phone_sends(&mut self, from: &str, text: &str) -> Result<()> {
        use std::io::Write;
        let f = self
            .fifo
            .as_mut()
            .ok_or_else(|| anyhow!("fakesmsc is gone"))?;
        writeln!(f, "{from} 12345 text {text}")?;
        f.flush()?;
        Ok(())
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        self.fifo.take();
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGKILL `child`, if running, and reap it.
fn sigkill(child: &mut Option<std::process::Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// The body of a plain HTTP/1.0 GET to 127.0.0.1:`port` (empty on any error).
fn http_get_local(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Wait (15 s at most) until `child` listens on 127.0.0.1:`port`; if it exits or never does,
/// say so (and stop it).
fn wait_listening(child: &mut std::process::Child, port: u16, what: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            bail!("{what} exited at start with {status}");
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what} did not listen on 127.0.0.1:{port} within 15s");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} within 15s");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// A real DNS server (dnsmasq, from Debian's `dnsmasq-base`) on a free loopback port that
/// answers only the TXT records it is given; killed on drop. For SPF and DKIM tests.
pub struct Dns {
    child: std::process::Child,
    pub port: u16,
}

impl Dns {
    /// Serve `records` (name, TXT text).
    pub fn start(records: &[(&str, &str)]) -> Result<Self> {
        let port = free_port();
        let mut cmd = std::process::Command::new("dnsmasq");
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            "--user=root",
        ])
        .arg(format!("--port={port}"));
        let mut zones = std::collections::BTreeSet::new();
        for (name, text) in records {
            cmd.arg(format!("--txt-record={name},{text}"));
            // answer for the whole zone (NXDOMAIN/no data for other names), as an
            // authoritative server would, rather than refusing
            let labels: Vec<&str> = name.rsplit('.').take(2).collect();
            zones.insert(format!("{}.{}", labels[1], labels[0]));
        }
        for z in zones {
            cmd.arg(format!("--local=/{z}/"));
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow!(
                    "cannot start dnsmasq ({e}): run `make test-tools` (apt-get install dnsmasq-base)"
                )
            })?;
        wait_listening(&mut child, port, "dnsmasq")?;
        Ok(Dns { child, port })
    }

    /// `127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        let child = std::process::Command::new("dovecot")
            .arg("-c")
            .arg(dir.path().join("dovecot.conf"))
            .arg("-F")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| anyhow!("cannot start dovecot ({e}): run `make test-tools` (apt-get install dovecot-imapd dovecot-lmtpd)"))?;
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
