//! SMTP sessions against the real ingestor: a session waiting for its next command is told
//! "421 shutting down" at shutdown and `run` returns; one client holds at most its share of
//! the sessions, and no session outlives its lifetime however busy it keeps itself; pipelined
//! commands (RFC 2920) are answered in order.

use std::net::SocketAddr;
use std::time::Duration;
use tocsin_bus::BusConfig;
use tocsin_testkit::{NatsServer, free_port, unique_prefix};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::sync::CancellationToken;

struct Ingress {
    _nats: NatsServer,
    port: u16,
    shutdown: CancellationToken,
    run: tokio::task::JoinHandle<Result<(), tocsin_runtime::ServiceError>>,
}

/// The ingestor with its SMTP ingress on a free loopback port, as `tweak` sets it.
async fn start(tweak: impl FnOnce(&mut tocsin_ingestor::IngestorConfig)) -> Ingress {
    tocsin_runtime::install_crypto();
    let nats = NatsServer::start().expect("nats-server");
    let port = free_port();
    let mut ingestor = tocsin_ingestor::IngestorConfig {
        ops_listen: String::new(),
        smtp_listen: format!("127.0.0.1:{port}"),
        // a session left to its command timeout would outlive these tests' patience
        smtp_timeout_secs: 300,
        ..Default::default()
    };
    tweak(&mut ingestor);
    let config = tocsin_ingestor::Config {
        bus: BusConfig {
            url: nats.url(),
            prefix: unique_prefix("smtpsess"),
            ..Default::default()
        },
        ingestor,
    };
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(tocsin_ingestor::run(config, shutdown.clone()));
    tocsin_testkit::wait_for(Duration::from_secs(30), "the SMTP ingress", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
    })
    .await
    .expect("listening");
    Ingress {
        _nats: nats,
        port,
        shutdown,
        run,
    }
}

type Session = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

/// Connect from `from` (any loopback address: 127.0.0.0/8 is all ours) and read the first
/// line the server says.
async fn connect(port: u16, from: &str) -> (Session, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = socket
        .connect(SocketAddr::new("127.0.0.1".parse().unwrap(), port))
        .await
        .unwrap();
    let (r, w) = stream.into_split();
    let mut r = BufReader::new(r);
    let first = line(&mut r).await;
    ((r, w), first)
}

async fn line(r: &mut BufReader<OwnedReadHalf>) -> String {
    let mut l = String::new();
    tokio::time::timeout(Duration::from_secs(20), r.read_line(&mut l))
        .await
        .expect("a line from the server")
        .unwrap();
    l
}

async fn ehlo((r, w): &mut Session) {
    w.write_all(b"EHLO test.example\r\n").await.unwrap();
    while !line(r).await.starts_with("250 ") {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_smtp_session_is_closed_with_421_and_run_returns() {
    let ingress = start(|_| {}).await;
    let (mut s, greeting) = connect(ingress.port, "127.0.0.1").await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    ehlo(&mut s).await;
    ingress.shutdown.cancel();
    let said = line(&mut s.0).await;
    assert!(said.starts_with("421 "), "{said}");
    tokio::time::timeout(Duration::from_secs(30), ingress.run)
        .await
        .expect("the ingestor did not stop")
        .unwrap()
        .expect("run ends cleanly");
}

/// The report: 64 slots shared by everyone and no session lifetime, so one client could
/// hold every slot for as long as it liked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holds_its_share_of_sessions_for_at_most_their_lifetime() {
    let ingress = start(|c| {
        c.smtp_max_connections_per_client = 2;
        c.smtp_max_session_secs = 3;
    })
    .await;
    let port = ingress.port;
    // the client here is 127.0.0.3: the readiness probe's connection from 127.0.0.1 may still
    // hold its slot for a moment
    let (mut a, greeting) = connect(port, "127.0.0.3").await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let (_b, greeting) = connect(port, "127.0.0.3").await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    let (_c, refused) = connect(port, "127.0.0.3").await;
    assert!(refused.starts_with("421 4.7.0"), "{refused}");
    // another client is served meanwhile
    let (_d, greeting) = connect(port, "127.0.0.2").await;
    assert!(greeting.starts_with("220 "), "{greeting}");
    // a session that keeps itself busy is still closed at its lifetime
    ehlo(&mut a).await;
    let started = std::time::Instant::now();
    let closed = loop {
        a.1.write_all(b"NOOP\r\n").await.unwrap();
        let said = line(&mut a.0).await;
        if !said.starts_with("250") {
            break said;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the session outlived its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(closed.starts_with("421 4.4.2"), "{closed}");
    drop(a);
    // its slot is given back
    let again = tocsin_testkit::wait_for(Duration::from_secs(10), "a slot given back", || async {
        let (_s, greeting) = connect(port, "127.0.0.3").await;
        greeting.starts_with("220 ").then_some(greeting)
    })
    .await;
    assert!(again.is_ok());
    ingress.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), ingress.run).await;
}

/// RFC 2920: commands a client sends in one go are answered in order, each of them, and the
/// replies held for the batch are written once its last command is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_are_answered_in_order() {
    let ingress = start(|_| {}).await;
    let (mut s, _) = connect(ingress.port, "127.0.0.1").await;
    ehlo(&mut s).await;
    let (r, w) = &mut s;
    w.write_all(
        b"MAIL FROM:<ann@example.org>\r\nRCPT TO:<nobody.nosecret@in.example>\r\nNOOP\r\nRSET\r\nVRFY ann\r\n",
    )
    .await
    .unwrap();
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(line(r).await);
    }
    let codes: Vec<&str> = replies.iter().map(|l| &l[..3]).collect();
    assert_eq!(codes, ["250", "550", "250", "250", "252"], "{replies:?}");
    // and a command on its own afterwards is answered on its own
    w.write_all(b"QUIT\r\n").await.unwrap();
    assert!(line(r).await.starts_with("221 "));
    ingress.shutdown.cancel();
}
