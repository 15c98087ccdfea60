//! Kannel (bearerbox, smsbox and a fake SMSC) on loopback: the SMS gateway in tests, with
//! inbound (MO) messages injected through the fake SMSC.

use crate::free_port;
use crate::wait::wait_port;
use anyhow::{Result, anyhow, bail};
use std::time::Duration;

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
