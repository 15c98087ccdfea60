//! Attacks from tenants and from outside, against the real pipeline, each beside a bystander
//! tenant: the attacker gets an error or nothing, the bystander's notifications are
//! delivered as if nothing happened, nothing is lost, the services stay ready.

use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tocsin_testkit::wait_for;
use tocsin_tests::Harness;

/// A webhook receiver on loopback that records the titles it gets.
async fn receiver() -> anyhow::Result<(String, Arc<Mutex<Vec<String>>>)> {
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |State(got): State<Arc<Mutex<Vec<String>>>>, body: axum::body::Bytes| async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    got.lock()
                        .unwrap()
                        .push(v["title"].as_str().unwrap_or_default().to_owned());
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// Publish one notification for the bystander and wait for it at its webhook.
async fn bystander_served(
    h: &Harness,
    token: &str,
    got: &Mutex<Vec<String>>,
) -> anyhow::Result<()> {
    h.publish(token, json!({"title": "still here"})).await?;
    wait_for(
        Duration::from_secs(20),
        "the bystander's webhook",
        || async {
            got.lock()
                .unwrap()
                .iter()
                .any(|t| t == "still here")
                .then_some(())
        },
    )
    .await
}

/// A tarpit: takes connections and never answers. Returns its URL and how many connections
/// it took.
async fn tarpit() -> anyhow::Result<(String, Arc<Mutex<usize>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let taken: Arc<Mutex<usize>> = Arc::default();
    let t = taken.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            *t.lock().unwrap() += 1;
            held.push(s);
        }
    });
    Ok((url, taken))
}

/// The report: tarpit webhooks and a few hundred publishes blocked every other tenant's
/// webhooks for hours, because the jobs waiting behind the tarpit filled the channel's
/// window. Now the attacker holds at most its share, its other jobs are parked in the
/// stream, its failing destinations are paused, and a bystander's webhook is delivered at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tarpit_webhooks_of_one_tenant_do_not_delay_another_tenants() -> anyhow::Result<()> {
    const WINDOW: i64 = 40;
    const SHARE: usize = 8;
    let h = Harness::start_with("tarpit", |s| {
        s.delivery.max_ack_pending = WINDOW;
        s.delivery.max_held_per_user = SHARE;
        // a tarpit holds a send permit until its request times out: mallory gets 2 of 4
        s.delivery.concurrency = 4;
        s.delivery.max_sends_per_user = 2;
        s.delivery.breaker_failures = 3;
        s.delivery.webhook_timeout_secs = 5;
        s.bus.max_deliver = 5;
    })
    .await?;
    let (_m, mallory, _) = h.create_user("mallory").await?;
    let (_b, bystander, _) = h.create_user("bystander").await?;
    let mut tarpits = Vec::new();
    for _ in 0..5 {
        let (url, taken) = tarpit().await?;
        h.add_destination(&mallory, json!({"channel": "webhook", "address": url}))
            .await?;
        tarpits.push(taken);
    }
    let (url, got) = receiver().await?;
    h.add_destination(&bystander, json!({"channel": "webhook", "address": url}))
        .await?;
    // the attacker: five tarpits, each notification to all of them: 10x the window in jobs
    for i in 0..2 * WINDOW {
        h.publish(&mallory, json!({"title": format!("m{i}"), "priority": 4}))
            .await?;
    }
    wait_for(
        Duration::from_secs(30),
        "the tarpits taking requests",
        || async {
            let busy = tarpits.iter().filter(|t| *t.lock().unwrap() > 0).count();
            (busy >= 2).then_some(())
        },
    )
    .await?;
    // the bystander, while the tarpits hold their connections
    let started = Instant::now();
    for i in 0..10 {
        h.publish(&bystander, json!({"title": format!("b{i}")}))
            .await?;
    }
    wait_for(
        Duration::from_secs(20),
        "the bystander's ten webhooks",
        || async { (got.lock().unwrap().len() >= 10).then_some(()) },
    )
    .await?;
    let took = started.elapsed();
    eprintln!("the bystander's 10 webhooks arrived in {took:?} beside 5 tarpits");
    // not one of its sends waited for a tarpit's request to time out (5 s): before the
    // per-user share of send permits, the tarpits held them all and it took ~9 s
    assert!(
        took < Duration::from_secs(5),
        "the bystander waited {took:?}, as long as a tarpit's timeout"
    );
    let titles = got.lock().unwrap().clone();
    let want: Vec<String> = (0..10).map(|i| format!("b{i}")).collect();
    assert_eq!(titles, want, "each once, in order");

    // what the attacker holds of the window is its share; the rest waits in the stream
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let stream = bus.subjects().stream(tocsin_bus::StreamKind::Delivery);
    let js_stream = bus.jetstream().get_stream(&stream).await?;
    let mut main: async_nats::jetstream::consumer::PullConsumer = js_stream
        .get_consumer("delivery-webhook")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let held = main.info().await?.num_ack_pending;
    assert!(
        held <= SHARE,
        "the attacker holds {held} jobs, over {SHARE}"
    );
    let mut parked: async_nats::jetstream::consumer::PullConsumer = js_stream
        .get_consumer("delivery-webhook-parked")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let info = parked.info().await?;
    assert!(
        info.num_pending + info.num_ack_pending as u64 > 0,
        "the attacker's other jobs are parked"
    );
    // the tarpits' breakers open (those tried so far: mallory sends two at a time), and their
    // owner sees why
    let paused = wait_for(
        Duration::from_secs(90),
        "the tarpits reported paused",
        || async {
            let (_, v) = h
                .call(
                    reqwest::Method::GET,
                    "/v1/destinations",
                    Some(&mallory),
                    None,
                )
                .await
                .ok()?;
            let list = v["destinations"].as_array()?.clone();
            let paused = list.iter().filter(|d| d["status"]["ok"] == false).count();
            (paused >= 2).then_some(list)
        },
    )
    .await?;
    let error = paused
        .iter()
        .find_map(|d| d["status"]["error"].as_str())
        .unwrap_or_default();
    assert!(
        error.contains("times in a row") && error.contains("paused"),
        "{error}"
    );
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

/// The report: IMAP sources connected anywhere (internal port scans), and `tls: none` sent a
/// password to any host. Now an IMAP host goes through the address guard like every URL: with
/// loopback not allowed, a source on 127.0.0.1 is refused with the reason, and nothing
/// connects to the listener there; the bystander is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imap_source_on_a_refused_address_is_never_contacted() -> anyhow::Result<()> {
    let h = Harness::start_with("imapguard", |s| s.ingestor.allow_loopback = false).await?;
    let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = internal.local_addr()?.port();
    let contacted: Arc<Mutex<usize>> = Arc::default();
    let c = contacted.clone();
    tokio::spawn(async move {
        while internal.accept().await.is_ok() {
            *c.lock().unwrap() += 1;
        }
    });
    let (_m, mallory, _) = h.create_user("mallory").await?;
    let (_b, bystander, _) = h.create_user("bystander").await?;
    let (url, got) = receiver().await?;
    h.add_destination(&bystander, json!({"channel": "webhook", "address": url}))
        .await?;
    h.add_source(
        &mallory,
        json!({
            "kind": "imap", "host": "127.0.0.1", "port": port, "tls": "none",
            "username": "scan", "password": "secret-password"
        }),
    )
    .await?;
    let sources = h.wait_sources_checked(&mallory, 1).await?;
    let status = &sources[0]["status"];
    assert_eq!(status["ok"], false, "{status}");
    let error = status["error"].as_str().unwrap_or_default();
    assert!(error.contains("loopback address; refused"), "{error}");
    assert_eq!(
        *contacted.lock().unwrap(),
        0,
        "nothing reached the listener"
    );
    bystander_served(&h, &bystander, &got).await?;
    h.shutdown().await;
    Ok(())
}

/// One message over raw SMTP; returns the server's answer to the end of DATA.
async fn smtp_send(port: u16, to: &str, message: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> anyhow::Result<String> {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            tokio::time::timeout(Duration::from_secs(60), r.read_line(&mut line)).await??;
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return Ok(all);
            }
        }
    }
    reply(&mut r).await?;
    for cmd in [
        "EHLO attacker.example".to_owned(),
        "MAIL FROM:<a@attacker.example>".to_owned(),
        format!("RCPT TO:<{to}>"),
        "DATA".to_owned(),
    ] {
        w.write_all(format!("{cmd}\r\n").as_bytes()).await?;
        let said = reply(&mut r).await?;
        anyhow::ensure!(
            said.starts_with('2') || said.starts_with('3'),
            "{cmd}: {said}"
        );
    }
    w.write_all(message.replace("\n.", "\n..").as_bytes())
        .await?;
    w.write_all(b"\r\n.\r\n").await?;
    let said = reply(&mut r).await?;
    w.write_all(b"QUIT\r\n").await?;
    Ok(said)
}

/// The report's mails, through the real SMTP ingress: two with 600 KB Message-IDs (the
/// user's record grew past a bus message and the avatar could never save again), one dated
/// `31 Dec 9999 -2359` (history answered 500 for the whole silo), one of 5 MB of `<script>`
/// tags and `http://` runs (quadratic text paths). Afterwards the attacker's account works —
/// history, private feed, a configuration change — and a bystander in the same silos is
/// delivered to as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_mails_leave_every_account_working() -> anyhow::Result<()> {
    let port = tocsin_testkit::free_port();
    let h = Harness::start_with("hostilemail", |s| {
        s.ingestor.smtp_listen = format!("127.0.0.1:{port}");
    })
    .await?;
    let created = h.create_user_json("mallory").await?;
    let mallory = created["token"].as_str().unwrap().to_owned();
    let inbound = created["inbound_address"].as_str().unwrap().to_owned();
    let feed = created["feed"]["atom"].as_str().unwrap().to_owned();
    let (_b, bystander, _) = h.create_user("bystander").await?;
    let (url, got) = receiver().await?;
    h.add_destination(&bystander, json!({"channel": "webhook", "address": url}))
        .await?;
    let started = Instant::now();
    for i in 0..2 {
        let mail = format!(
            "From: a@attacker.example\r\nSubject: long id {i}\r\nMessage-ID: <{}{i}@x>\r\n\r\nbody\r\n",
            "i".repeat(600_000)
        );
        let said = smtp_send(port, &inbound, &mail).await?;
        assert!(said.starts_with("250"), "{said}");
    }
    let dated = "From: a@attacker.example\r\nSubject: from the future\r\nDate: Fri, 31 Dec 9999 23:59:59 -2359\r\nMessage-ID: <future@x>\r\n\r\nbody\r\n";
    assert!(smtp_send(port, &inbound, dated).await?.starts_with("250"));
    let heavy = format!(
        "From: a@attacker.example\r\nSubject: heavy\r\nMessage-ID: <heavy@x>\r\nContent-Type: text/html\r\n\r\n{}\r\n{}\r\n",
        "<script>x</script>&".repeat(150_000),
        "http://".repeat(300_000)
    );
    assert!(smtp_send(port, &inbound, &heavy).await?.starts_with("250"));
    eprintln!("four hostile mails taken in {:?}", started.elapsed());

    // the attacker's account still works: history, the private feed, a configuration change
    let titles = wait_for(
        Duration::from_secs(30),
        "the four mails in history",
        || async {
            let t = h.history_titles(&mallory).await.ok()?;
            (t.len() == 4).then_some(t)
        },
    )
    .await?;
    assert!(titles.contains(&"from the future".to_owned()), "{titles:?}");
    let atom = h.http.get(&feed).send().await?;
    assert_eq!(atom.status(), 200, "the private feed renders");
    h.add_destination(
        &mallory,
        json!({"channel": "webhook", "address": "https://hooks.example.org/x"}),
    )
    .await?;
    // and the bystander is served
    bystander_served(&h, &bystander, &got).await?;
    h.shutdown().await;
    Ok(())
}
