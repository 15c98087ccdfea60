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
