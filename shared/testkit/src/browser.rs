//! A real `chromedriver` (Debian's `chromium-driver`) on a free loopback port, driving
//! Debian's headless `chromium`; stopped when dropped. The WebDriver client that talks to it
//! is the tests crate's (`tests/src/browser.rs`).

use crate::process::{sigkill, start_quiet};
use crate::wait::wait_listening;
use anyhow::Result;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

pub struct ChromeDriver {
    pub port: u16,
    /// Chromium's profile and downloads: removed when dropped.
    pub profile: tempfile::TempDir,
    child: Option<Child>,
}

impl ChromeDriver {
    pub fn start() -> Result<ChromeDriver> {
        let port = crate::free_port();
        let profile = tempfile::tempdir()?;
        // its own process group, so that dropping it also stops the browsers it started
        let mut child = start_quiet(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .process_group(0),
            "chromedriver",
            "run `make test-tools` (apt-get install chromium chromium-driver)",
        )?;
        wait_listening(&mut child, port, "chromedriver")?;
        Ok(ChromeDriver {
            port,
            profile,
            child: Some(child),
        })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            // the whole group: chromedriver and every chromium process under it
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
        }
        sigkill(&mut self.child);
    }
}
