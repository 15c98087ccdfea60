//! Connections and live streams (`/v1/stream`, Server-Sent Events) against the real
//! `tocsin-api` process: one client holds at most `api.max_connections_per_client`
//! connections, a connection that sends nothing (or trickles its headers) is closed at its
//! deadline; a user holds at most `api.max_streams_per_user` streams, a closed one gives its
//! slot back, and SIGTERM ends open streams so the process exits within its grace period.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_testkit::{NatsServer, free_port, unique_prefix, wait_for};

/// The API process, killed if the test fails before it exits.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `tocsin-api` (with `env` added) and a user it knows: (process, base URL, token,
/// the nats-server, which must outlive the process).
async fn api_with_a_user(env: &[(&str, &str)]) -> (Api, String, &'static str, NatsServer) {
    tocsin_runtime::install_crypto();
    let nats = NatsServer::start().expect("nats-server");
    let prefix = unique_prefix("apistreams");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let api = Api(Command::new(env!("CARGO_BIN_EXE_tocsin-api"))
        .env("TOCSIN_BUS__URL", nats.url())
        .env("TOCSIN_BUS__PREFIX", &prefix)
        .env("TOCSIN_API__LISTEN", format!("127.0.0.1:{port}"))
        .env("TOCSIN_API__PUBLIC_URL", &base)
        .env("TOCSIN_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn tocsin-api"));
    let http = reqwest::Client::new();
    wait_for(Duration::from_secs(30), "the api to be ready", || {
        let http = http.clone();
        let url = format!("{base}/readyz");
        async move {
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => Some(()),
                _ => None,
            }
        }
    })
    .await
    .expect("ready");

    // a user, written where the API reads tokens (the avatar would have written it)
    let bus = Bus::connect(
        &BusConfig {
            url: nats.url(),
            prefix: prefix.clone(),
            ..Default::default()
        },
        "test",
    )
    .await
    .expect("bus");
    let token = "tk_u1_0123456789abcdef0123456789abcdef";
    let record = serde_json::json!({
        "id": "u1",
        "name": "ann",
        "created_at_ms": 0,
        "token_hash": tocsin_model::hash_token(token),
        "feed_token_hash": tocsin_model::hash_token("feed"),
    });
    bus.kv("avatars")
        .await
        .expect("avatars bucket")
        .put("u1", serde_json::to_vec(&record).unwrap().into())
        .await
        .expect("put the user");
    (api, base, token, nats)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_open_live_streams_and_the_api_exits_within_its_grace() {
    let grace = 3;
    let (mut api, base, token, _nats) =
        api_with_a_user(&[("TOCSIN_API__SHUTDOWN_GRACE_SECS", "3")]).await;
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/v1/stream"))
        .bearer_auth(token)
        .send()
        .await
        .expect("open the stream");
    assert_eq!(stream.status(), 200);

    let sent = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &api.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    // the stream ends (the server closes it) instead of holding the shutdown open
    let ended = tokio::time::timeout(Duration::from_secs(grace + 10), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the live stream was still open after {:?}",
        sent.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(grace + 10);
    let status = loop {
        if let Some(s) = api.0.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "tocsin-api still running {:?} after SIGTERM with a live stream open",
            sent.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "tocsin-api exited with {status}");
    eprintln!("tocsin-api exited {:?} after SIGTERM", sent.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_holds_at_most_max_streams_and_a_closed_one_frees_its_slot() {
    let (_api, base, token, _nats) =
        api_with_a_user(&[("TOCSIN_API__MAX_STREAMS_PER_USER", "2")]).await;
    let http = reqwest::Client::new();
    let open = || {
        http.get(format!("{base}/v1/stream"))
            .bearer_auth(token)
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = open().await.unwrap();
    assert_eq!(third.status(), 429, "a third stream for the same user");
    drop(second);
    // the server notices the closed stream at its next write (a keep-alive, every 15 s)
    tocsin_testkit::wait_for(Duration::from_secs(40), "the slot to come back", || async {
        let r = open().await.ok()?;
        (r.status() == 200).then_some(r)
    })
    .await
    .expect("a closed stream gives its slot back");
}

/// Connect from `from` (127.0.0.0/8 is all loopback) to the API at `base`.
async fn connect_from(base: &str, from: &str) -> tokio::net::TcpStream {
    let to: std::net::SocketAddr = base.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes `s` within `within` (reads end or fail).
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

/// A request over a raw connection: the status line of the answer.
async fn status_line(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: tocsin\r\n\r\n")
        .await
        .unwrap();
    let mut line = String::new();
    let mut r = tokio::io::BufReader::new(s);
    tokio::time::timeout(Duration::from_secs(10), r.read_line(&mut line))
        .await
        .expect("an answer")
        .unwrap();
    line
}

/// The report: no connection cap and no header or idle timeout, so a client that opened
/// sockets and sent nothing exhausted the file descriptors of every service under `tocsin up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_trickling_connections_are_capped_per_client_and_closed_in_time() {
    let (_api, base, _token, _nats) = api_with_a_user(&[
        ("TOCSIN_API__MAX_CONNECTIONS_PER_CLIENT", "4"),
        ("TOCSIN_API__COMMAND_TIMEOUT_SECS", "1"),
        ("TOCSIN_API__QUERY_TIMEOUT_SECS", "1"),
        ("TOCSIN_API__HEADER_TIMEOUT_SECS", "3"),
        ("TOCSIN_API__IDLE_TIMEOUT_SECS", "4"),
    ])
    .await;
    // the client here is 127.0.0.3: the readiness probe's pooled connection from 127.0.0.1
    // may still hold its slot for a moment
    let opened = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect_from(&base, "127.0.0.3").await);
    }
    // a fifth from the same client is closed at once; another client is served
    let mut fifth = connect_from(&base, "127.0.0.3").await;
    assert!(closed_within(&mut fifth, Duration::from_secs(2)).await);
    let mut other = connect_from(&base, "127.0.0.2").await;
    assert!(status_line(&mut other).await.starts_with("HTTP/1.1 200"));
    // the silent ones are closed at the header deadline, not held
    for s in &mut silent {
        assert!(
            closed_within(s, Duration::from_secs(15)).await,
            "a silent connection was held"
        );
    }
    let held = opened.elapsed();
    assert!(
        held >= Duration::from_secs(3),
        "closed before its deadline: {held:?}"
    );
    // the client has its slots back
    let mut again = connect_from(&base, "127.0.0.3").await;
    assert!(status_line(&mut again).await.starts_with("HTTP/1.1 200"));
    // a connection that trickles its headers is cut off all the same
    let mut slow = connect_from(&base, "127.0.0.3").await;
    let started = Instant::now();
    let trickled = tokio::time::timeout(Duration::from_secs(15), async {
        use tokio::io::AsyncWriteExt;
        for b in b"GET /healthz HTTP/1.1\r\nX-Slow: "
            .iter()
            .chain(b"a".repeat(1000).iter())
        {
            if slow.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        trickled.is_ok(),
        "a trickling client held its connection for 15 s"
    );
    eprintln!(
        "a trickling client was cut off after {:?}",
        started.elapsed()
    );
    // an idle keep-alive connection is closed after its idle timeout
    assert!(closed_within(&mut again, Duration::from_secs(15)).await);
}
