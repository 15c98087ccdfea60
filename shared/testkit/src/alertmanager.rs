//! Prometheus Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `make test-tools`) on a free loopback port, routing every alert to one webhook receiver:
//! the real sender for tocsin's Alertmanager ingest. Killed on drop.

use crate::free_port;
use crate::process::start_quiet;
use crate::wait::wait_listening;
use anyhow::{Context, Result, anyhow};
use std::path::PathBuf;

pub struct Alertmanager {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Start it with one route to `webhook` (with `Authorization: Bearer <token>`), alerts
    /// grouped by name, a group sent 1 s after it changes, resolutions sent too.
    pub fn start(webhook: &str, token: &str) -> Result<Self> {
        let binary = std::env::var("TOCSIN_ALERTMANAGER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("prometheus-alertmanager"));
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: tocsin\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
                 receivers:\n- name: tocsin\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: true\n    http_config:\n      authorization:\n        type: Bearer\n        credentials: {token}\n"
            ),
        )?;
        let port = free_port();
        let mut child = start_quiet(
            std::process::Command::new(&binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // one instance: no gossip port
                .arg("--cluster.listen-address="),
            &binary.display().to_string(),
            "run `make test-tools` (Debian's prometheus-alertmanager)",
        )?;
        wait_listening(&mut child, port, "alertmanager")?;
        Ok(Self {
            child,
            port,
            _dir: dir,
        })
    }

    /// Post alerts to its API (`POST /api/v2/alerts`, a JSON array), as Prometheus does.
    pub fn post_alerts(&self, alerts: &str) -> Result<()> {
        let answer = crate::http_request(self.port, "POST", "/api/v2/alerts", alerts)
            .context("posting to alertmanager")?;
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(anyhow!(
                "alertmanager refused the alerts: {}",
                answer.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
