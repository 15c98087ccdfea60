//! Delivery to a webhook on loopback: signed, retried through an outage, delivered once,
//! recorded in the notification's timeline; a permanent failure is recorded too; a slow
//! receiver gets backpressure (a bounded number of jobs held, the backlog in the stream); a
//! job repeated in another envelope after a delivery crash is not sent again; a number removed
//! while its message is retried gets no more tries.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::Harness;

const SECRET: &str = "webhook-secret-0123456789";

#[derive(Default)]
struct Receiver {
    /// Answer this many requests with 503 before accepting.
    fail_first: usize,
    seen: usize,
    accepted: Vec<(String, Value)>,
    bad_signatures: usize,
}

async fn hook(
    State(r): State<Arc<Mutex<Receiver>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut r = r.lock().unwrap();
    r.seen += 1;
    if r.seen <= r.fail_first {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{}.", h("x-tocsin-timestamp")).as_bytes());
    mac.update(&body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if h("x-tocsin-signature") != want {
        r.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    r.accepted
        .push((h("x-tocsin-id"), serde_json::from_slice(&body).unwrap()));
    StatusCode::NO_CONTENT
}

async fn receiver(fail_first: usize) -> anyhow::Result<(String, Arc<Mutex<Receiver>>)> {
    let state = Arc::new(Mutex::new(Receiver {
        fail_first,
        ..Default::default()
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(hook))
        .route("/gone", axum::routing::post(|| async { StatusCode::GONE }))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, state))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_each_notification_once_signed_through_an_outage() -> anyhow::Result<()> {
    // an outage (5 refusals, ~8 s of backoff) much longer than ack_wait (2 s): the jobs
    // waiting behind the first must neither be redelivered nor sent twice
    let h = Harness::start_with("e2ehook", |s| s.bus.max_deliver = 10).await?;
    let (url, rx) = receiver(5).await?;
    let (_u, token, _) = h.create_user("gwen").await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "webhook", "address": url, "secret": SECRET})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    assert!(
        v["destination"].get("secret").is_none(),
        "the secret is never returned"
    );
    let (_, list) = h
        .call(Method::GET, "/v1/destinations", Some(&token), None)
        .await?;
    assert_eq!(list["destinations"][0]["signed"], true);

    for i in 0..5 {
        h.publish(
            &token,
            json!({"title": format!("alert {i}"), "priority": 4}),
        )
        .await?;
    }
    wait_for(
        Duration::from_secs(30),
        "five webhook deliveries",
        || async { (rx.lock().unwrap().accepted.len() >= 5).then_some(()) },
    )
    .await?;
    // redeliveries would show up now if there were any
    tokio::time::sleep(Duration::from_secs(2)).await;
    {
        let r = rx.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        assert_eq!(
            r.accepted.len(),
            5,
            "each notification delivered exactly once"
        );
        let titles: Vec<_> = r
            .accepted
            .iter()
            .map(|(_, b)| b["title"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            titles,
            ["alert 0", "alert 1", "alert 2", "alert 3", "alert 4"],
            "in publish order, the first one retried through the outage before the others"
        );
        assert!(
            r.seen >= 10,
            "the first five attempts were refused and retried"
        );
    }

    // the timeline shows routed then delivered
    let items = wait_for(
        Duration::from_secs(20),
        "delivered entries in history",
        || async {
            let items = h.history(&token).await.ok()?;
            items
                .iter()
                .all(|i| {
                    i["timeline"]
                        .as_array()
                        .is_some_and(|t| t.iter().any(|e| e["kind"] == "delivered"))
                })
                .then_some(items)
        },
    )
    .await?;
    let kinds: Vec<_> = items[0]["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["routed", "delivered"]);
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_failing_webhook_is_recorded_as_failed() -> anyhow::Result<()> {
    let h = Harness::start("e2ehookfail").await?;
    let (url, _rx) = receiver(0).await?;
    let (_u, token, _) = h.create_user("hal").await?;
    let gone = url.replace("/hook", "/gone");
    h.add_destination(&token, json!({"channel": "webhook", "address": gone}))
        .await?;
    for (body, field) in [
        (
            json!({"channel": "webhook", "address": "not a url"}),
            "address",
        ),
        (json!({"channel": "pigeon", "address": "x"}), "channel"),
        (
            json!({"channel": "webhook", "address": "https://x.org/", "secret": "short"}),
            "secret",
        ),
    ] {
        let (status, v) = h
            .call(Method::POST, "/v1/destinations", Some(&token), Some(body))
            .await?;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    h.publish(&token, json!({"title": "will fail"})).await?;
    let entry = wait_for(Duration::from_secs(20), "a failed entry", || async {
        let items = h.history(&token).await.ok()?;
        items.first()?["timeline"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "failed")
            .cloned()
    })
    .await?;
    assert!(
        entry["detail"].as_str().unwrap().contains("HTTP 410"),
        "{entry}"
    );
    h.shutdown().await;
    Ok(())
}

/// Delivery's consumer of webhook jobs, to watch what it holds.
async fn webhook_jobs(
    bus: &tocsin_bus::Bus,
) -> anyhow::Result<async_nats::jetstream::consumer::PullConsumer> {
    let stream = bus.subjects().stream(tocsin_bus::StreamKind::Delivery);
    bus.jetstream()
        .get_stream(&stream)
        .await?
        .get_consumer("delivery-webhook")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_gets_backpressure_not_a_backlog_in_memory() -> anyhow::Result<()> {
    const HELD: i64 = 20;
    const N: usize = 150;
    let h = Harness::start_with("slowhook", |s| s.delivery.max_ack_pending = HELD).await?;
    // a receiver that takes 40 ms per request
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/slow", listener.local_addr()?);
    let app = axum::Router::new()
        .route(
            "/slow",
            axum::routing::post(
                |State(got): State<Arc<Mutex<Vec<String>>>>, body: axum::body::Bytes| async move {
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    got.lock()
                        .unwrap()
                        .push(v["id"].as_str().unwrap_or_default().to_owned());
                    StatusCode::OK
                },
            ),
        )
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let (_u, token, _) = h.create_user("slow").await?;
    h.add_destination(&token, json!({"channel": "webhook", "address": url}))
        .await?;
    let mut ids = std::collections::HashSet::new();
    for i in 0..N {
        ids.insert(h.publish(&token, json!({"title": format!("s{i}")})).await?);
    }
    // one destination's jobs go out in order, one at a time: ~6 s for all. Meanwhile the
    // delivery consumer never holds more than HELD; the rest waits in the stream.
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let mut consumer = webhook_jobs(&bus).await?;
    let (mut most_held, mut most_waiting) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while got.lock().unwrap().len() < N {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} delivered after 60 s",
            got.lock().unwrap().len()
        );
        if let Ok(info) = consumer.info().await {
            most_held = most_held.max(info.num_ack_pending);
            most_waiting = most_waiting.max(info.num_pending);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        most_held <= HELD as usize,
        "{most_held} jobs held, more than max_ack_pending"
    );
    assert!(
        most_waiting > 0,
        "the backlog waited in the stream (most waiting: {most_waiting})"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = got.lock().unwrap().clone();
    let unique: std::collections::HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), N, "each delivered once");
    assert_eq!(unique, ids);
    eprintln!("held at most {most_held} of {N}; at most {most_waiting} waited in the stream");
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

/// A job that comes again in another envelope — a router round handed over again after a
/// crash, its records batched anew, so the server's duplicate window does not drop it — to a
/// delivery instance started after the one that sent it was killed, is not sent again: the
/// instances' log of the jobs they sent (the `sent` bucket) says it went out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_repeated_in_another_envelope_after_a_delivery_crash_is_not_sent_again()
-> anyhow::Result<()> {
    use anyhow::Context;
    use futures::StreamExt;
    use tocsin_bus::envelope;
    use tocsin_tests::{Recorder, Svc};
    let mut h = Harness::start("resent").await?;
    let hooks = Recorder::start().await?;
    let (_u, token, _) = h.create_user("ann").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/ann")}),
    )
    .await?;
    // what the router hands delivery, as it goes by
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let subject = bus.subjects().delivery("webhook");
    let mut spy = bus.client().subscribe(subject.clone()).await?;
    let first = h.publish(&token, json!({"title": "once"})).await?;
    let handed = tokio::time::timeout(Duration::from_secs(30), spy.next())
        .await
        .context("no job for the first notification within 30 s")?
        .context("the subscription ended")?;
    let sent_to_ann = |id: &str| {
        hooks
            .requests("/ann")
            .iter()
            // the job's id: the notification's, then the destination's
            .filter(|r| {
                r.headers
                    .get("x-tocsin-id")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.starts_with(&format!("{id}:")))
            })
            .count()
    };
    // sent, and its job acked: nothing of it is left for a new instance to repeat
    let consumer = webhook_jobs(&bus).await?;
    wait_for(
        Duration::from_secs(30),
        "the first job sent and acked",
        || {
            let mut c = consumer.clone();
            let sent = sent_to_ann(&first);
            async move {
                let i = c.info().await.ok()?.clone();
                (sent == 1 && i.num_ack_pending == 0 && i.num_pending == 0).then_some(())
            }
        },
    )
    .await?;
    h.kill(Svc::Delivery).await;
    // the same jobs again, in an envelope of another id
    let mut records = envelope::records(&handed.payload)?;
    if !envelope::is_envelope(&handed.payload) {
        // a job of its own: its id is the message's
        records[0].id = handed
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .context("a job message without Nats-Msg-Id")?
            .to_string();
    }
    let again = envelope::encode(records.iter().map(|r| (r.id.as_str(), r.payload.as_ref())));
    bus.publish(subject, "env:handed-again", again).await?;
    h.start_service(Svc::Delivery);
    // a later notification to the same destination goes out after the repeated job (one
    // destination's jobs go in order): once it is there, the repeat was handled
    let second = h.publish(&token, json!({"title": "after"})).await?;
    wait_for(Duration::from_secs(60), "the second notification", || {
        let n = sent_to_ann(&second);
        async move { (n == 1).then_some(()) }
    })
    .await?;
    assert_eq!(
        sent_to_ann(&first),
        1,
        "the first notification was sent again"
    );
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

/// A number removed while its message waits to be retried gets no more tries: before each send
/// delivery reads the address index, which says the destination went after the notification
/// was made. Against a Twilio stand-in (Twilio is on the internet) that keeps answering 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_removed_while_its_message_is_retried_gets_no_more_tries() -> anyhow::Result<()> {
    use tocsin_tests::{Recorder, twilio_path, use_twilio};
    let twilio = Recorder::start().await?;
    let h = Harness::start_with("e2eremoved", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Sms];
        use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    twilio.answer(&twilio_path(), 503, r#"{"message":"try later"}"#);
    let (_, token, _) = h.create_user("Rae").await?;
    let phone = h
        .add_destination(&token, json!({"channel": "sms", "address": "+15550006666"}))
        .await?;
    h.set_policy(&token, json!({"steps": [{"channels": ["sms"]}]}))
        .await?;
    let id = h.publish(&token, json!({"title": "Disk full"})).await?;
    wait_for(Duration::from_secs(20), "the first try", || async {
        (!twilio.requests(&twilio_path()).is_empty()).then_some(())
    })
    .await?;
    let (status, v) = h
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{phone}"),
            Some(&token),
            None,
        )
        .await?;
    assert!(status.is_success(), "{v}");
    // the job ends at its next try, saying why, long before its attempts would run out
    let failed = h.timeline_entry(&token, &id, "failed").await?;
    assert!(
        failed["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("the destination was removed after the notification was made"),
        "{failed}"
    );
    let tries = twilio.requests(&twilio_path()).len();
    assert!(tries < 6, "{tries} tries: the removal was not heeded");
    Ok(())
}
