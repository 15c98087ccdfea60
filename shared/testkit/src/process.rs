//! Child processes of the test servers: started quietly with an error that says how to
//! install what is missing, and killed hard and reaped.

use anyhow::{Result, anyhow};
use std::process::{Child, Command, Stdio};

/// Start `cmd` with no standard input or output; `what` names it and `install` says how to
/// get it when it cannot be started (e.g. "run `make test-tools` (apt-get install prosody)").
pub(crate) fn start_quiet(cmd: &mut Command, what: &str, install: &str) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("cannot start {what} ({e}): {install}"))
}

/// SIGKILL `child`, if running, and reap it.
pub(crate) fn sigkill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A child that is stopped as a service manager stops one when it is dropped — SIGTERM, up
/// to 30 s to exit, then SIGKILL — so a failing test leaves nothing running.
pub struct Graceful(pub Child);

impl Drop for Graceful {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(self.0.id().to_string())
                .status();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `podman` as the image tests run it: with runc (crun cannot set rlimits on every host) and
/// the repository's containers.conf (no default ulimits; docs/deploy.md).
pub fn podman() -> Command {
    let mut cmd = Command::new("podman");
    cmd.env(
        "CONTAINERS_CONF",
        crate::workspace_root().join("deploy/image/containers.conf"),
    )
    .args(["--runtime", "/usr/bin/runc"]);
    cmd
}
