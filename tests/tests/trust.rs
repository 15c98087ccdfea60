//! Trust boundaries (issue 20): credentials replaced stop working at once, against the real
//! pipeline (the API, the user's avatar in the router, its record in the bus's KV).

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
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

/// Deleting a user (issue 20, item 5) leaves nothing of them, checked by reading each place:
/// their record, their address in the index, their escalation timer, their topic, their
/// history in the silo's database; the feed they shared keeps serving the other subscriber,
/// and nothing of theirs is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_user_leaves_nothing_behind_and_others_keep_their_shared_feed()
-> anyhow::Result<()> {
    use tocsin_model::{AddressEntry, Channel, TopicRecord};
    use tocsin_testkit::wait_for;
    use tocsin_tests::{ADMIN, Recorder, rdf};
    let hooks = Recorder::start().await?;
    let h = Harness::start("e2edelete").await?;
    h.feeds.set(
        "shared.rdf",
        rdf(&[("1", "Old bike", "listed")]),
        "application/rdf+xml",
    );
    let url = h.feeds.url("shared.rdf");
    let (gus, gus_token, _) = h.create_user("Gus").await?;
    let (_kim, kim_token, _) = h.create_user("Kim").await?;
    for t in [&gus_token, &kim_token] {
        h.add_source(t, json!({"url": url})).await?;
        h.wait_sources_checked(t, 1).await?;
    }
    h.add_destination(
        &gus_token,
        json!({"channel": "webhook", "address": hooks.url("/gus")}),
    )
    .await?;
    let phone = "+15550001234";
    h.add_destination(&gus_token, json!({"channel": "sms", "address": phone}))
        .await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/topics",
            Some(&gus_token),
            Some(json!({"name": "gusalerts"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    // an escalation whose second step is an hour after the first: a timer is pending
    h.set_policy(
        &gus_token,
        json!({"steps": [{"channels": ["webhook"], "wait_secs": 3600}, {"channels": ["webhook"]}]}),
    )
    .await?;
    let id = h.publish(&gus_token, json!({"title": "Disk full"})).await?;
    h.wait_for_title(&gus_token, "Disk full").await?;
    wait_for(Duration::from_secs(20), "the first step sent", || async {
        (!hooks.requests("/gus").is_empty()).then_some(())
    })
    .await?;

    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let user = tocsin_model::UserId::parse(&gus)?;
    let silo = bus.silo_of(&user);
    let (avatars, addresses, timers, topics) = (
        bus.kv("avatars").await?,
        bus.kv("addresses").await?,
        bus.kv("timers").await?,
        bus.kv("topics").await?,
    );
    let phone_key = AddressEntry::key(Channel::Sms, phone);
    let timer_key = format!("s{silo}.{gus}");
    let topic_key = TopicRecord::key("gusalerts");
    wait_for(
        Duration::from_secs(20),
        "the escalation's timer",
        || async { timers.get(&timer_key).await.ok().flatten().map(|_| ()) },
    )
    .await?;
    assert!(avatars.get(&gus).await?.is_some());
    assert!(addresses.get(&phone_key).await?.is_some());
    assert!(topics.get(&topic_key).await?.is_some());
    let db = h.data.path().join(format!("history/silo-{silo}.db"));
    let stored = |id: String| {
        let db = db.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                tocsin_history::store::Store::open(&db)
                    .and_then(|s| s.contains(&id))
                    .unwrap_or(true)
            })
            .await
            .unwrap_or(true)
        }
    };
    assert!(stored(id.clone()).await, "in history before");

    let (status, v) = h.call(Method::GET, "/v1/users", Some(ADMIN), None).await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["users"].as_array().map(Vec::len), Some(2), "{v}");
    let path = format!("/v1/users/{gus}");
    let (status, v) = h
        .call(Method::DELETE, &path, Some(&gus_token), None)
        .await?;
    assert_eq!(status, 401, "a user is not the operator: {v}");
    let (status, v) = h.call(Method::DELETE, &path, Some(ADMIN), None).await?;
    assert_eq!(status, 204, "{v}");

    // gone at once from the bus's buckets, and from history once it has read the order
    assert_eq!(avatars.get(&gus).await?, None, "the record");
    assert_eq!(addresses.get(&phone_key).await?, None, "the address index");
    assert_eq!(timers.get(&timer_key).await?, None, "the escalation timer");
    assert_eq!(topics.get(&topic_key).await?, None, "the topic");
    wait_for(Duration::from_secs(20), "history to forget", || async {
        (!stored(id.clone()).await).then_some(())
    })
    .await?;
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&gus_token), None)
            .await?
            .0,
        401
    );
    let (_, v) = h.call(Method::GET, "/v1/users", Some(ADMIN), None).await?;
    assert_eq!(v["users"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(
        h.call(Method::DELETE, &path, Some(ADMIN), None).await?.0,
        404
    );

    // the shared feed still serves Kim; nothing reaches Gus's webhook again
    h.feeds.set(
        "shared.rdf",
        rdf(&[("2", "New bike", "just in"), ("1", "Old bike", "listed")]),
        "application/rdf+xml",
    );
    h.wait_for_title(&kim_token, "New bike").await?;
    assert_eq!(
        hooks.requests("/gus").len(),
        1,
        "only the first step, before"
    );

    // a user deletes their own account, confirming with their id
    let (status, v) = h
        .call(
            Method::DELETE,
            "/v1/me",
            Some(&kim_token),
            Some(json!({"confirm": "yes"})),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), v["error"]["field"].as_str()),
        (400, Some("confirm")),
        "{v}"
    );
    let kim = h
        .call(Method::GET, "/v1/me", Some(&kim_token), None)
        .await?
        .1["user_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, v) = h
        .call(
            Method::DELETE,
            "/v1/me",
            Some(&kim_token),
            Some(json!({"confirm": kim})),
        )
        .await?;
    assert_eq!(status, 204, "{v}");
    assert_eq!(
        h.call(Method::GET, "/v1/me", Some(&kim_token), None)
            .await?
            .0,
        401
    );
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

/// SMS costs the operator: a number is taken only in a country the operator allows
/// (`api.sms_allowed_prefixes`, `+1` in these tests) and never in a premium-rate range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_goes_only_to_allowed_countries_and_never_to_premium_ranges() -> anyhow::Result<()> {
    let h = Harness::start("e2esmsprefix").await?;
    let (_, token, _) = h.create_user("Pia").await?;
    for (number, says) in [
        ("+447700900123", "only to numbers starting +1"),
        ("+19005550123", "premium-rate"),
        ("+8816123456789", "premium-rate"),
    ] {
        let body = json!({"channel": "sms", "address": number});
        let message = h.destination_refused(&token, body).await?;
        assert!(message.contains(says), "{number}: {message}");
    }
    h.add_destination(&token, json!({"channel": "sms", "address": "+15551234567"}))
        .await?;
    h.shutdown().await;
    Ok(())
}

/// Verified destinations (issue 20, item 3): a new SMS number gets a code and nothing else
/// until the code comes back; wrong codes use up tries; a new code is sent at most once a
/// minute; once confirmed it gets the user's notifications. Against a Twilio stand-in (Twilio
/// is on the internet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_sms_number_gets_only_its_code_until_the_code_comes_back() -> anyhow::Result<()> {
    use tocsin_testkit::wait_for;
    use tocsin_tests::{Recorder, twilio_path, use_twilio};
    let twilio = Recorder::start().await?;
    let hooks = Recorder::start().await?;
    let h = Harness::start_with("e2everify", |s| {
        s.api.verify_destinations = true;
        s.delivery.channels = vec![tocsin_model::Channel::Sms, tocsin_model::Channel::Webhook];
        use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    let (_, token, _) = h.create_user("Vera").await?;
    h.set_policy(&token, json!({"steps": [{"channels": ["sms", "webhook"]}]}))
        .await?;
    let texts = || -> Vec<String> {
        twilio
            .requests(&twilio_path())
            .iter()
            .filter_map(|r| r.form("Body"))
            .collect()
    };
    // a webhook needs no code: it is the user's own URL, behind the address guard
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "webhook", "address": hooks.url("/vera")})),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), v["destination"]["verified"].as_bool()),
        (201, Some(true)),
        "{v}"
    );
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "sms", "address": "+15550004321"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["destination"]["verified"], false, "{v}");
    assert!(
        v["verification"]
            .as_str()
            .unwrap_or_default()
            .contains("a code was sent"),
        "{v}"
    );
    let phone = v["destination"]["id"].as_str().unwrap().to_owned();
    // a channel no delivery instance serves: no code is sent to wait unsent, and asking for
    // one says why
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "xmpp", "address": "vera@im.example"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let said = v["verification"].as_str().unwrap_or_default();
    assert!(
        said.starts_with("no code was sent: this server does not deliver by xmpp"),
        "{v}"
    );
    let im = v["destination"]["id"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call(
            Method::POST,
            &format!("/v1/destinations/{im}/verify"),
            Some(&token),
            Some(json!({})),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    h.call(
        Method::DELETE,
        &format!("/v1/destinations/{im}"),
        Some(&token),
        None,
    )
    .await?;
    let first = wait_for(Duration::from_secs(20), "the code by SMS", || async {
        texts().into_iter().find(|t| t.contains("Your tocsin code"))
    })
    .await?;
    let code =
        |text: &str| -> String { text.chars().filter(char::is_ascii_digit).take(6).collect() };
    let first_code = code(&first);
    assert_eq!(first_code.len(), 6, "{first}");

    // unconfirmed: a notification reaches the webhook, not the number; no test message either
    h.publish(&token, json!({"title": "Disk full"})).await?;
    wait_for(Duration::from_secs(20), "the webhook", || async {
        (!hooks.requests("/vera").is_empty()).then_some(())
    })
    .await?;
    let test_path = format!("/v1/destinations/{phone}/test");
    assert_eq!(
        h.call(Method::POST, &test_path, Some(&token), None)
            .await?
            .0,
        409
    );
    let verify = format!("/v1/destinations/{phone}/verify");
    let (status, v) = h
        .call(
            Method::POST,
            &verify,
            Some(&token),
            Some(json!({"code": "000000"})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("4 tries left"),
        "{v}"
    );
    // a new code at once is refused (a minute between codes), and the old one still works
    let (status, v) = h
        .call(Method::POST, &verify, Some(&token), Some(json!({})))
        .await?;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("wait"),
        "{v}"
    );
    assert!(
        !texts().iter().any(|t| t.contains("Disk full")),
        "nothing but the code reached the number: {:?}",
        texts()
    );
    let (status, v) = h
        .call(
            Method::POST,
            &verify,
            Some(&token),
            Some(json!({"code": first_code})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let (_, list) = h
        .call(Method::GET, "/v1/destinations", Some(&token), None)
        .await?;
    let confirmed = list["destinations"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == phone.as_str()))
        .map(|d| d["verified"].clone());
    assert_eq!(confirmed, Some(json!(true)), "{list}");

    // confirmed: the next notification reaches it
    h.publish(&token, json!({"title": "Disk still full"}))
        .await?;
    wait_for(Duration::from_secs(20), "the SMS", || async {
        texts().into_iter().find(|t| t.contains("Disk still full"))
    })
    .await?;
    assert!(
        !texts().iter().any(|t| t.contains("Disk full -")),
        "{:?}",
        texts()
    );
    h.shutdown().await;
    Ok(())
}

/// A phone number someone added and never confirmed is theirs only for the claim period
/// (`api.claim_unconfirmed_after_secs`, a day; 1 s here): then its real owner adds and
/// confirms it, the index says it is theirs, and the squatter removing their stale
/// destination does not take it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_held_unconfirmed_is_claimed_by_whoever_confirms_it() -> anyhow::Result<()> {
    use tocsin_model::{AddressEntry, Channel};
    use tocsin_testkit::wait_for;
    use tocsin_tests::{Recorder, twilio_path, use_twilio};
    let twilio = Recorder::start().await?;
    let h = Harness::start_with("e2eclaim", |s| {
        s.api.verify_destinations = true;
        s.api.claim_unconfirmed_after_secs = 1;
        s.delivery.channels = vec![Channel::Sms];
        use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    let (_, squatter, _) = h.create_user("Sid").await?;
    let (owner_id, owner, _) = h.create_user("Olive").await?;
    let number = "+15550005555";
    let sms = json!({"channel": "sms", "address": number});
    let stale = h.add_destination(&squatter, sms.clone()).await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&owner),
            Some(sms.clone()),
        )
        .await?;
    assert_eq!(status, 409, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("not confirmed it yet"),
        "{v}"
    );
    let mine = wait_for(
        Duration::from_secs(10),
        "the claim period to pass",
        || async {
            let (status, v) = h
                .call(
                    Method::POST,
                    "/v1/destinations",
                    Some(&owner),
                    Some(sms.clone()),
                )
                .await
                .ok()?;
            (status == 201).then(|| v["destination"]["id"].as_str().map(str::to_owned))?
        },
    )
    .await?;
    let code = wait_for(Duration::from_secs(20), "the owner's code", || async {
        let texts: Vec<String> = twilio
            .requests(&twilio_path())
            .iter()
            .filter_map(|r| r.form("Body"))
            .collect();
        // the squatter's code went first; the owner's is the last one
        (texts.len() >= 2).then(|| texts.last().cloned())?
    })
    .await?;
    let code: String = code.chars().filter(char::is_ascii_digit).take(6).collect();
    let verify = format!("/v1/destinations/{mine}/verify");
    let (status, v) = h
        .call(
            Method::POST,
            &verify,
            Some(&owner),
            Some(json!({"code": code})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let addresses = bus.kv("addresses").await?;
    let key = AddressEntry::key(Channel::Sms, number);
    let holder = || async {
        let b = addresses.get(&key).await.ok().flatten()?;
        serde_json::from_slice::<AddressEntry>(&b).ok()
    };
    let entry = holder().await.expect("indexed");
    assert_eq!(
        (entry.user.as_str(), entry.unconfirmed_since_ms),
        (owner_id.as_str(), None)
    );
    // the squatter removes theirs: the owner's entry stays
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{stale}"),
            Some(&squatter),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let entry = holder().await.expect("still indexed");
    assert_eq!(entry.user.as_str(), owner_id);
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}
