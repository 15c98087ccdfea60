//! WebSub: a feed that advertises a hub is subscribed to; the hub's verification is answered
//! only for our own subscription; signed pushes become notifications without a poll, and
//! unsigned or forged pushes are dropped.

use axum::extract::State;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::Harness;

#[derive(Default, Clone, Debug)]
struct Subscription {
    params: HashMap<String, String>,
    verified: bool,
}

type Hub = Arc<Mutex<Vec<Subscription>>>;

/// A minimal hub: records the request, then verifies the intent like a real hub does.
async fn hub(State(hub): State<Hub>, body: String) -> axum::http::StatusCode {
    let params: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let idx = {
        let mut h = hub.lock().unwrap();
        h.push(Subscription {
            params: params.clone(),
            verified: false,
        });
        h.len() - 1
    };
    tokio::spawn(async move {
        let mut cb = url::Url::parse(&params["hub.callback"]).unwrap();
        cb.query_pairs_mut()
            .append_pair("hub.mode", &params["hub.mode"])
            .append_pair("hub.topic", &params["hub.topic"])
            .append_pair("hub.challenge", "challenge-4711")
            .append_pair("hub.lease_seconds", "600");
        let answer = reqwest::get(cb).await.unwrap().text().await.unwrap();
        hub.lock().unwrap()[idx].verified = answer == "challenge-4711";
    });
    axum::http::StatusCode::ACCEPTED
}

fn atom(feed_url: &str, hub_url: &str, entries: &[(&str, &str)]) -> String {
    let mut s = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>pushed</title><id>urn:pushed</id><updated>2026-11-22T10:00:00Z</updated><link rel="self" href="{feed_url}"/><link rel="hub" href="{hub_url}"/>"#
    );
    for (id, title) in entries {
        s.push_str(&format!("<entry><id>urn:e:{id}</id><title>{title}</title><updated>2026-11-22T10:00:00Z</updated><link href=\"https://example.test/{id}\"/></entry>"));
    }
    s.push_str("</feed>");
    s
}

fn sign(secret: &str, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_pushes_new_items_instead_of_polling() -> anyhow::Result<()> {
    let port = tocsin_testkit::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let p = public.clone();
    let h = Harness::start_with("e2ewebsub", move |s| {
        s.ingestor.poll_interval_secs = 3600;
        s.ingestor.websub_public_url = p;
        s.ingestor.websub_listen = format!("127.0.0.1:{port}");
    })
    .await?;
    let hub_state: Hub = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hub_url = format!("http://{}/hub", listener.local_addr()?);
    let app = axum::Router::new()
        .route("/hub", axum::routing::post(hub))
        .with_state(hub_state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let feed_url = h.feeds.url("pushed.atom");
    h.feeds.set(
        "pushed.atom",
        atom(&feed_url, &hub_url, &[("1", "first")]),
        "application/atom+xml",
    );
    let (_u, token, _) = h.create_user("ivy").await?;
    h.add_source(&token, json!({"url": feed_url})).await?;

    let sub = wait_for(
        Duration::from_secs(20),
        "a verified hub subscription",
        || async {
            hub_state
                .lock()
                .unwrap()
                .iter()
                .find(|s| s.verified)
                .cloned()
        },
    )
    .await?;
    assert_eq!(sub.params["hub.mode"], "subscribe");
    assert_eq!(sub.params["hub.topic"], feed_url);
    let callback = sub.params["hub.callback"].clone();
    assert!(callback.starts_with(&public), "{callback}");
    let secret = sub.params["hub.secret"].clone();
    assert!(secret.len() >= 32);

    // a verification for a topic we did not ask for is refused
    let forged = reqwest::get(format!("{callback}?hub.mode=subscribe&hub.topic=https://evil.test/&hub.challenge=x&hub.lease_seconds=9")).await?;
    assert_eq!(forged.status(), 404);

    // a forged push is dropped, a signed one becomes a notification
    let bad = atom(&feed_url, &hub_url, &[("3", "forged"), ("1", "first")]);
    let r = h
        .http
        .post(&callback)
        .header("x-hub-signature", sign("wrong-secret", &bad))
        .body(bad)
        .send()
        .await?;
    assert!(r.status().is_success());
    let good = atom(&feed_url, &hub_url, &[("2", "pushed item"), ("1", "first")]);
    let r = h
        .http
        .post(&callback)
        .header("x-hub-signature", sign(&secret, &good))
        .body(good)
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    let titles = wait_for(
        Duration::from_secs(20),
        "the pushed item in history",
        || async {
            let t = h.history_titles(&token).await.ok()?;
            (!t.is_empty()).then_some(t)
        },
    )
    .await?;
    assert_eq!(
        titles,
        ["pushed item"],
        "the baseline item and the forged one stay out"
    );
    assert_eq!(
        h.feeds.requests("pushed.atom").len(),
        1,
        "no polling besides the first fetch"
    );
    h.shutdown().await;
    Ok(())
}
