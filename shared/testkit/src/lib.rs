//! Test helpers shared by every crate's tests: a real `nats-server` with JetStream per test,
//! on a free loopback port with a temporary store, stopped when dropped; waits that always
//! have a timeout; unique bus prefixes.

mod alertmanager;
mod browser;
mod dns;
pub mod im;
mod imap;
mod nats;
mod process;
mod push_service;
mod s3;
mod sms;
mod smtp;
mod wait;
mod xmpp;

pub use alertmanager::Alertmanager;
pub use browser::ChromeDriver;
pub use dns::Dns;
pub use imap::Dovecot;
pub use nats::{NatsCluster, NatsServer};
pub use process::{Graceful, podman};
pub use push_service::PushService;
pub use s3::S3Server;
pub use sms::Kannel;
pub use smtp::SmtpSink;
pub use wait::wait_for;
pub use xmpp::Prosody;

use std::net::TcpListener;
use std::path::PathBuf;

/// One HTTP/1.1 request to a server on 127.0.0.1:`port` (the connection closed after it, the
/// answer read within 10 s); returns the whole answer, status line first.
pub(crate) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port))?;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
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
