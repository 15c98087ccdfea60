//! Trust boundaries (issue 20): credentials replaced stop working at once, against the real
//! pipeline (the API, the user's avatar in the router, its record in the bus's KV).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tocsin_tests::Harness;

/// A browser's session: its cookie and CSRF token, from a sign-in with `token`.
struct Browser {
    cookie: String,
    csrf: String,
}

async fn sign_in(h: &Harness, token: &str) -> anyhow::Result<Browser> {
    let r = h
        .http
        .post(format!("{}/v1/session", h.api_url))
        .json(&json!({ "token": token }))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "sign-in: {}", r.status());
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("tocsin_session="))
        .and_then(|v| v.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let v: Value = r.json().await?;
    Ok(Browser {
        cookie,
        csrf: v["csrf"].as_str().unwrap_or_default().to_owned(),
    })
}

impl Browser {
    async fn call(
        &self,
        h: &Harness,
        method: Method,
        path: &str,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let r = h
            .http
            .request(method, format!("{}{path}", h.api_url))
            .header("cookie", format!("tocsin_session={}", self.cookie))
            .header("x-csrf-token", &self.csrf)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }
}

async fn status_of(h: &Harness, url: &str) -> anyhow::Result<StatusCode> {
    Ok(h.http.get(url).send().await?.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_token_feed_address_or_session_stops_working_at_once() -> anyhow::Result<()> {
    let h = Harness::start("e2erotate").await?;
    let (_, old_token, old_feed) = h.create_user("Rhea").await?;
    let (_, other_token, other_feed) = h.create_user("Sam").await?;
    assert_eq!(status_of(&h, &old_feed).await?, 200);

    // sign out everywhere else: this browser stays, the other one is out
    let here = sign_in(&h, &old_token).await?;
    let there = sign_in(&h, &old_token).await?;
    assert_eq!(there.call(&h, Method::GET, "/v1/me").await?.0, 200);
    let (status, v) = here.call(&h, Method::DELETE, "/v1/sessions").await?;
    assert_eq!(status, 204, "{v}");
    assert_eq!(there.call(&h, Method::GET, "/v1/me").await?.0, 401);
    assert_eq!(here.call(&h, Method::GET, "/v1/me").await?.0, 200);
    let gone = there.call(&h, Method::DELETE, "/v1/sessions").await?;
    assert_eq!(
        gone.0, 401,
        "an ended session cannot end others: {}",
        gone.1
    );

    // a new API token: the old one and every session (this one signed in with it) stop
    let (status, v) = h
        .call(Method::POST, "/v1/me/token", Some(&old_token), None)
        .await?;
    assert_eq!(status, 200, "{v}");
    let new_token = v["token"].as_str().unwrap().to_owned();
    assert_ne!(new_token, old_token);
    let (status, v) = h
        .call(Method::GET, "/v1/me", Some(&old_token), None)
        .await?;
    assert_eq!(status, 401, "the old token: {v}");
    let (status, me) = h
        .call(Method::GET, "/v1/me", Some(&new_token), None)
        .await?;
    assert_eq!(
        (status, me["name"].as_str()),
        (StatusCode::OK, Some("Rhea"))
    );
    assert_eq!(here.call(&h, Method::GET, "/v1/me").await?.0, 401);

    // from a session, a new token keeps the session that asked
    let browser = sign_in(&h, &new_token).await?;
    let (status, v) = browser.call(&h, Method::POST, "/v1/me/token").await?;
    assert_eq!(status, 200, "{v}");
    let newest = v["token"].as_str().unwrap().to_owned();
    assert_eq!(browser.call(&h, Method::GET, "/v1/me").await?.0, 200);
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&new_token), None)
            .await?
            .0,
        401
    );

    // new private feed addresses: the old ones answer 404 at once
    let (status, v) = h
        .call(Method::POST, "/v1/me/feed", Some(&newest), None)
        .await?;
    assert_eq!(status, 200, "{v}");
    let (atom, rss) = (
        v["feed"]["atom"].as_str().unwrap().to_owned(),
        v["feed"]["rss"].as_str().unwrap().to_owned(),
    );
    assert_eq!(status_of(&h, &old_feed).await?, 404);
    assert_eq!(
        status_of(&h, &old_feed.replace(".atom", ".rss")).await?,
        404
    );
    assert_eq!(status_of(&h, &atom).await?, 200);
    assert_eq!(status_of(&h, &rss).await?, 200);

    // the same for a new inbound address (128 secret bits)
    let (status, v) = h
        .call(Method::POST, "/v1/inbound/address", Some(&newest), None)
        .await?;
    assert_eq!(status, 200, "{v}");
    let address = v["inbound_address"].as_str().unwrap();
    let secret = address
        .split('@')
        .next()
        .unwrap()
        .split('.')
        .nth(1)
        .unwrap();
    assert_eq!(secret.len(), 32, "{address}");

    // another user is untouched
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&other_token), None)
            .await?
            .0,
        200
    );
    assert_eq!(status_of(&h, &other_feed).await?, 200);
    h.shutdown().await;
    Ok(())
}

/// With `api.ops_listen` (the Helm chart sets it), `/metrics` and the probes are served there
/// and not on the public listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_kept_off_the_public_listener() -> anyhow::Result<()> {
    let ops_port = tocsin_testkit::free_port();
    let h = Harness::start_with("e2eopsport", move |s| {
        s.api.ops_listen = format!("127.0.0.1:{ops_port}");
    })
    .await?;
    let ops = format!("http://127.0.0.1:{ops_port}");
    let metrics = h.http.get(format!("{ops}/metrics")).send().await?;
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await?;
    assert!(text.contains("# TYPE tocsin_"), "tocsin's metrics: {text}");
    assert_eq!(status_of(&h, &format!("{ops}/readyz")).await?, 200);
    for path in ["/metrics", "/readyz", "/healthz"] {
        let public = format!("{}{path}", h.api_url);
        // (not found, or not allowed where it reads as an ntfy-style topic)
        let r = h.http.get(&public).send().await?;
        assert!(
            matches!(r.status().as_u16(), 404 | 405),
            "{public}: {}",
            r.status()
        );
        assert!(!r.text().await?.contains("# TYPE"), "{public}");
    }
    h.shutdown().await;
    Ok(())
}
