//! dnsmasq on loopback answering only the TXT records a test gives it (SPF and DKIM).

use crate::free_port;
use crate::process::start_quiet;
use crate::wait::wait_listening;
use anyhow::Result;

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
        let mut child = start_quiet(
            &mut cmd,
            "dnsmasq",
            "run `make test-tools` (apt-get install dnsmasq-base)",
        )?;
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
