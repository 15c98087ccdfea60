//! Waiting with a timeout, never a bare sleep: for a condition, or for a child process to
//! listen on its port.

use anyhow::{Result, bail};
use std::time::Duration;

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

/// Wait (15 s at most) until `child` listens on 127.0.0.1:`port`; if it exits or never does,
/// say so (and stop it).
pub(crate) fn wait_listening(child: &mut std::process::Child, port: u16, what: &str) -> Result<()> {
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

pub(crate) fn wait_port(port: u16, what: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("{what} did not listen on 127.0.0.1:{port} within 15s");
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}
