//! Live streams (`/v1/stream`, Server-Sent Events) against the real `tocsin-api` process: a
//! user holds at most `api.max_streams_per_user` at once, a closed one gives its slot back, and
//! SIGTERM ends open streams so the process exits within its grace period.

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
