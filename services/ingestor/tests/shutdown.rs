//! The ingestor drains on shutdown: an SMTP session waiting for its next command is told
//! "421 shutting down" at once instead of being left to its command timeout, and `run`
//! returns once its tracked work is done.

use std::time::Duration;
use tocsin_bus::BusConfig;
use tocsin_testkit::{NatsServer, free_port, unique_prefix};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_smtp_session_is_closed_with_421_and_run_returns() {
    tocsin_runtime::install_crypto();
    let nats = NatsServer::start().expect("nats-server");
    let smtp = free_port();
    let config = tocsin_ingestor::Config {
        bus: BusConfig {
            url: nats.url(),
            prefix: unique_prefix("ingestdrain"),
            ..Default::default()
        },
        ingestor: tocsin_ingestor::IngestorConfig {
            ops_listen: String::new(),
            smtp_listen: format!("127.0.0.1:{smtp}"),
            // a session left to its command timeout would outlive this test's patience
            smtp_timeout_secs: 300,
            ..Default::default()
        },
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(tocsin_ingestor::run(config, shutdown.clone()));
    let stream = tocsin_testkit::wait_for(Duration::from_secs(30), "the SMTP ingress", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", smtp))
            .await
            .ok()
    })
    .await
    .expect("listening");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut line = String::new();
    r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("220 "), "{line}");
    w.write_all(b"EHLO test.example\r\n").await.unwrap();
    loop {
        line.clear();
        r.read_line(&mut line).await.unwrap();
        if line.starts_with("250 ") {
            break;
        }
    }

    shutdown.cancel();
    line.clear();
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("the idle session was not told of the shutdown")
        .unwrap();
    assert!(line.starts_with("421 "), "{line}");
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the ingestor did not stop")
        .unwrap()
        .expect("run ends cleanly");
}
