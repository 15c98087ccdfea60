//! A browser's push service on loopback (`push_service.py`, Python's `http_ece` and
//! `cryptography` from `.tools/venv`): it holds one subscription, checks each push's VAPID
//! token and decrypts it with an implementation independent of tocsin's; killed on drop.

use crate::process::{sigkill, start_quiet};
use crate::wait::wait_listening;
use crate::workspace_root;
use anyhow::{Context, Result};
use std::path::PathBuf;

const SCRIPT: &str = include_str!("push_service.py");

pub struct PushService {
    pub port: u16,
    /// The subscription's keys as a `web_push` destination's secret: `<p256dh>.<auth>`.
    pub keys: String,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PushService {
    pub fn start() -> Result<PushService> {
        let port = crate::free_port();
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("push_service.py");
        std::fs::write(&script, SCRIPT)?;
        let python = std::env::var("TOCSIN_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".tools/venv/bin/python"));
        let out = dir.path().join("pushes");
        std::fs::create_dir(&out)?;
        let mut child = start_quiet(
            std::process::Command::new(&python)
                .arg(&script)
                .arg(port.to_string())
                .arg(&out),
            &format!("the push service with {}", python.display()),
            "run `make test-tools` (http_ece and cryptography into .tools/venv)",
        )?;
        wait_listening(&mut child, port, "the push service")?;
        let keys: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("keys.json"))?)?;
        let keys = format!(
            "{}.{}",
            keys["p256dh"].as_str().context("p256dh")?,
            keys["auth"].as_str().context("auth")?
        );
        Ok(PushService {
            port,
            keys,
            dir,
            child: Some(child),
        })
    }

    /// A subscription endpoint on this service (`/gone/…`: answered 410).
    pub fn endpoint(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every push received so far, oldest first: `{path, ttl, urgency, message?, refused?}`.
    pub fn pushes(&self) -> Vec<serde_json::Value> {
        let dir = self.dir.path().join("pushes");
        let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.file_name().is_some_and(|n| n != "keys.json"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter_map(|p| serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok())
            .collect()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        sigkill(&mut self.child);
    }
}
