//! Alerts and sources as first-class (issue 17), end to end through a real nats-server:
//! ntfy-style publishing, alerts with a dedup key until resolved, a source's own priority and
//! mute, and a broken source told to its owner.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::{Harness, rdf};

/// A script written for ntfy publishes unchanged: a plain-text body to `/<topic>` with ntfy's
/// headers, a GET trigger with `?auth=`, Basic auth with the token as the password. Each
/// becomes one notification of the caller, delivered and in history with the topic as its
/// source; what tocsin cannot do, and a missing or wrong token, are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ntfy_style_publishes_reach_the_user_with_their_title_priority_tags_and_click()
-> anyhow::Result<()> {
    use base64::Engine;
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2entfy", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("nina").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/nina")}),
    )
    .await?;
    let base = &h.api_url;
    // curl -d "backup done" -H "Title: Nightly backup" -H "Priority: high" -H "Tags: floppy_disk,cron" host/backups
    let r = h
        .http
        .post(format!("{base}/backups"))
        .bearer_auth(&token)
        .header("Title", "Nightly backup")
        .header("Priority", "high")
        .header("Tags", "floppy_disk,cron")
        .header("Click", "https://backup.example.org/runs/7")
        .body("backup done")
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "publish: {}", r.status());
    let answer: serde_json::Value = r.json().await?;
    assert_eq!(answer["event"], "message");
    assert_eq!(answer["topic"], "backups");
    assert_eq!(answer["message"], "backup done");
    assert_eq!(answer["priority"], 4);
    let first = answer["id"].as_str().unwrap_or_default().to_owned();
    // a webhook that can only GET: the token in ?auth=, the message in ?message=
    let auth = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("Bearer {token}"));
    let r = h
        .http
        .get(format!(
            "{base}/cron/trigger?auth={auth}&message=job+finished&p=2"
        ))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "trigger: {}", r.status());
    // Basic, with the token as the password (ntfy's clients' way of sending a token)
    let r = h
        .http
        .put(format!("{base}/backups"))
        .basic_auth("", Some(&token))
        .body("second run")
        .send()
        .await?;
    anyhow::ensure!(r.status() == 200, "basic: {}", r.status());

    // refused, by name
    for (req, status, field) in [
        (h.http.post(format!("{base}/backups")).body("x"), 401, None),
        (
            h.http
                .post(format!("{base}/backups"))
                .bearer_auth(format!("tk_nina_{}", "0".repeat(32)))
                .body("x"),
            401,
            None,
        ),
        (
            h.http
                .post(format!("{base}/backups?delay=10m"))
                .bearer_auth(&token)
                .body("x"),
            400,
            Some("delay"),
        ),
        (
            h.http
                .post(format!("{base}/backups"))
                .bearer_auth(&token)
                .header("Priority", "loud")
                .body("x"),
            400,
            Some("priority"),
        ),
        (
            h.http
                .post(format!("{base}/v1"))
                .bearer_auth(&token)
                .body("x"),
            400,
            Some("topic"),
        ),
    ] {
        let r = req.send().await?;
        let got = r.status().as_u16();
        let v: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(got, status, "{v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{v}");
        }
    }

    // three notifications, each delivered once
    wait_for(Duration::from_secs(20), "three deliveries", || async {
        (hooks.requests("/nina").len() == 3).then_some(())
    })
    .await?;
    let bodies: Vec<String> = hooks.requests("/nina").iter().map(|r| r.text()).collect();
    for text in ["backup done", "job finished", "second run"] {
        assert_eq!(
            bodies.iter().filter(|b| b.contains(text)).count(),
            1,
            "{text} once in {bodies:?}"
        );
    }
    let history = h.notifications_at_least(&token, 3).await?;
    assert_eq!(history.len(), 3, "{history:?}");
    let n = history
        .iter()
        .find(|n| n["id"] == first.as_str())
        .expect("the first publish in history");
    assert_eq!(n["title"], "Nightly backup");
    assert_eq!(n["body"], "backup done");
    assert_eq!(n["priority"], 4);
    assert_eq!(n["tags"], json!(["floppy_disk", "cron"]));
    assert_eq!(n["url"], "https://backup.example.org/runs/7");
    assert_eq!(n["source"]["label"], "backups");
    let cron = history
        .iter()
        .find(|n| n["source"]["label"] == "cron")
        .expect("the trigger in history");
    assert_eq!(
        (&cron["title"], &cron["body"], &cron["priority"]),
        (&json!("cron"), &json!("job finished"), &json!(2))
    );
    h.shutdown().await;
    Ok(())
}

/// A feed that keeps failing is announced to its owner once, as a notification of that source,
/// when it has failed `source_broken_after` checks in a row; once more when it works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_source_is_told_to_its_owner_once_and_again_when_it_works() -> anyhow::Result<()> {
    let h = Harness::start("e2ebroken").await?;
    h.feeds
        .set("flaky.xml", "this is not a feed {", "text/plain");
    let (_, token, _) = h.create_user("omar").await?;
    h.add_source(
        &token,
        json!({"url": h.feeds.url("flaky.xml"), "label": "flaky"}),
    )
    .await?;
    h.wait_for_title(&token, "Source flaky is not working")
        .await?;
    // it keeps failing: not told again
    let failed = h.feeds.requests("flaky.xml").len();
    wait_for(
        Duration::from_secs(20),
        "two more failed checks",
        || async { (h.feeds.requests("flaky.xml").len() >= failed + 2).then_some(()) },
    )
    .await?;
    h.feeds.set(
        "flaky.xml",
        rdf(&[("1", "A listing", "back")]),
        "application/rdf+xml",
    );
    h.wait_for_title(&token, "Source flaky works again").await?;
    let notices = h.notifications(&token).await?;
    let titles: Vec<&str> = notices.iter().filter_map(|n| n["title"].as_str()).collect();
    assert_eq!(
        titles,
        vec!["Source flaky works again", "Source flaky is not working"],
        "newest first, each once"
    );
    let broken = &notices[1];
    assert_eq!(broken["source"]["label"], "flaky");
    assert!(
        broken["body"]
            .as_str()
            .unwrap_or_default()
            .contains("checks in a row failed"),
        "{broken}"
    );
    h.shutdown().await;
    Ok(())
}

/// A source's settings decide for its items: its priority replaces theirs, and while it is
/// muted they are kept in history and reach no one; the timeline says why. Unknown sources and
/// bad settings are refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sources_priority_and_mute_apply_to_its_new_items() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2esettings", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[("1", "Old road bike - $500", "already listed")]),
        "application/rdf+xml",
    );
    let (_, token, _) = h.create_user("sara").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/sara")}),
    )
    .await?;
    let id = h
        .add_source(
            &token,
            json!({"url": h.feeds.url("bikes.rdf"), "label": "bikes"}),
        )
        .await?;
    h.wait_sources_checked(&token, 1).await?;
    let path = format!("/v1/sources/{id}/settings");
    let until = tocsin_model::now_ms() + 3_600_000;
    let (status, v) = h
        .call(
            Method::PUT,
            &path,
            Some(&token),
            Some(json!({"priority": 2, "muted_until_ms": until})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["source"]["settings"],
        json!({"priority": 2, "muted_until_ms": until})
    );
    let (_, listed) = h
        .call(Method::GET, "/v1/sources", Some(&token), None)
        .await?;
    assert_eq!(listed["sources"][0]["settings"]["priority"], 2, "{listed}");

    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            ("2", "Cheap road bike - $200", "new"),
            ("1", "Old road bike - $500", "already listed"),
        ]),
        "application/rdf+xml",
    );
    h.wait_for_title(&token, "Cheap road bike - $200").await?;
    let item = h
        .history(&token)
        .await?
        .into_iter()
        .find(|i| i["notification"]["title"] == "Cheap road bike - $200")
        .expect("the new item");
    assert_eq!(item["notification"]["priority"], 2);
    let routed = item["timeline"]
        .as_array()
        .and_then(|t| t.iter().find(|e| e["kind"] == "routed"))
        .cloned()
        .unwrap_or_default();
    let detail = routed["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with(
            "priority 2 (the source's setting); kept in history: this source is muted until"
        ),
        "{routed}"
    );
    assert!(hooks.requests("/sara").is_empty(), "muted: no one reached");

    // back to the defaults: nothing left out is kept
    let (status, v) = h
        .call(Method::PUT, &path, Some(&token), Some(json!({})))
        .await?;
    assert_eq!(status, 200, "{v}");
    assert!(v["source"].get("settings").is_none(), "{v}");
    for (path, body, want, field) in [
        ("/v1/sources/nope/settings", json!({}), 404, None),
        (path.as_str(), json!({"priority": 9}), 400, Some("priority")),
        (path.as_str(), json!({"colour": "red"}), 400, None),
        (
            path.as_str(),
            json!({"muted_until_ms": tocsin_model::now_ms() + 400 * 86_400_000}),
            400,
            Some("muted_until_ms"),
        ),
    ] {
        let (status, v) = h.call(Method::PUT, path, Some(&token), Some(body)).await?;
        assert_eq!(status, want, "{path}: {v}");
        if let Some(f) = field {
            assert_eq!(v["error"]["field"], f, "{v}");
        }
    }
    h.shutdown().await;
    Ok(())
}

/// The road-bike problem: with a paging default policy, a new listing reaches the user on every
/// channel but SMS (the built-in `feeds` policy), while an alert pages their phone. A source
/// that names a paging policy pages; that policy cannot be removed while it is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_item_does_not_page_by_sms_where_an_alert_does() -> anyhow::Result<()> {
    use tocsin_model::Channel;
    use tocsin_tests::{twilio_path, use_twilio};
    let hooks = tocsin_tests::Recorder::start().await?;
    let twilio = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2epolicies", |s| {
        s.delivery.channels = vec![Channel::Webhook, Channel::Sms];
        use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[("1", "Road bike - $400", "size 56")]),
        "application/rdf+xml",
    );
    let (_, token, _) = h.create_user("pia").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/pia")}),
    )
    .await?;
    h.add_destination(&token, json!({"channel": "sms", "address": "+15550001234"}))
        .await?;
    // everything at once, the phone included
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&token),
            Some(json!({"steps": [{}]})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let source = h
        .add_source(
            &token,
            json!({"url": h.feeds.url("bikes.rdf"), "label": "bikes", "deliver_existing": true}),
        )
        .await?;
    h.wait_for_title(&token, "Road bike - $400").await?;
    h.publish(&token, json!({"title": "Database down", "priority": 4}))
        .await?;
    let texts = || -> Vec<String> {
        twilio
            .requests(&twilio_path())
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect()
    };
    wait_for(Duration::from_secs(20), "the alert's SMS", || async {
        texts()
            .iter()
            .any(|t| t.contains("Database+down"))
            .then_some(())
    })
    .await?;
    wait_for(Duration::from_secs(20), "both on the webhook", || async {
        (hooks.requests("/pia").len() == 2).then_some(())
    })
    .await?;
    assert_eq!(texts().len(), 1, "only the alert was texted: {:?}", texts());
    let routed = |title: &'static str| {
        let h = &h;
        let token = token.clone();
        async move {
            // history stores it on its own path: a delivery can come first
            wait_for(
                Duration::from_secs(20),
                "the notification in history",
                || async {
                    let item = h
                        .history(&token)
                        .await
                        .ok()?
                        .into_iter()
                        .find(|i| i["notification"]["title"] == title)?;
                    item["timeline"]
                        .as_array()?
                        .iter()
                        .find(|e| e["kind"] == "routed")?["detail"]
                        .as_str()
                        .map(str::to_owned)
                },
            )
            .await
        }
    };
    assert!(
        routed("Road bike - $400")
            .await?
            .starts_with("policy feeds (what feeds follow): to webhook"),
        "{}",
        routed("Road bike - $400").await?
    );
    assert!(
        routed("Database down")
            .await?
            .starts_with("policy default: to ")
    );
    // the policies, and who follows which
    let (_, v) = h
        .call(Method::GET, "/v1/policies", Some(&token), None)
        .await?;
    let names: Vec<&str> = v["policies"]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["default", "feeds"], "{v}");
    assert_eq!(v["policies"][1]["custom"], false, "{v}");
    assert_eq!(v["policies"][1]["sources"], json!([source]), "{v}");
    assert!(
        !v["policies"][1]["policy"].to_string().contains("sms"),
        "{v}"
    );

    // the user wants this one search on their phone
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/policies/pager",
            Some(&token),
            Some(json!({"steps": [{"channels": ["sms"]}]})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let (status, v) = h
        .call(
            Method::PUT,
            &format!("/v1/sources/{source}/settings"),
            Some(&token),
            Some(json!({"policy": "pager"})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            ("2", "Gravel bike - $900", "size 54"),
            ("1", "Road bike - $400", "size 56"),
        ]),
        "application/rdf+xml",
    );
    wait_for(Duration::from_secs(30), "the listing's SMS", || async {
        texts()
            .iter()
            .any(|t| t.contains("Gravel+bike"))
            .then_some(())
    })
    .await?;
    h.wait_for_title(&token, "Gravel bike - $900").await?;
    assert!(
        routed("Gravel bike - $900")
            .await?
            .starts_with("policy pager (the source's setting): to sms"),
        "{}",
        routed("Gravel bike - $900").await?
    );
    // refused by name: a followed policy, a bad name, an unknown policy
    for (method, path, body, want) in [
        (Method::DELETE, "/v1/policies/pager", None, 400),
        (
            Method::PUT,
            "/v1/policies/Bad%20Name",
            Some(json!({"steps": [{}]})),
            400,
        ),
        (Method::GET, "/v1/policies/nope", None, 404),
    ] {
        let (status, v) = h.call(method, path, Some(&token), body).await?;
        assert_eq!(status, want, "{path}: {v}");
    }
    h.shutdown().await;
    Ok(())
}

/// A silence on an ntfy topic keeps its messages in history, marked silenced, while other
/// topics still reach the user; listed while it holds, and once removed the topic reaches the
/// user again. Bad silences are refused by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silenced_topic_is_kept_in_history_and_reaches_no_one() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2esilence", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("olga").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/olga")}),
    )
    .await?;
    let base = &h.api_url;
    let ntfy = |topic: &str, body: &str| {
        h.http
            .post(format!("{base}/{topic}"))
            .bearer_auth(&token)
            .body(body.to_owned())
            .send()
    };
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/silences",
            Some(&token),
            Some(json!({"source": "backups", "for": "2h", "comment": "moving the NAS"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let id = v["silence"]["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(ntfy("backups", "backup failed").await?.status(), 200);
    assert_eq!(ntfy("deploys", "deploy done").await?.status(), 200);
    h.wait_for_title(&token, "backups").await?;
    wait_for(Duration::from_secs(20), "the other topic", || async {
        (hooks.requests("/olga").len() == 1).then_some(())
    })
    .await?;
    let silenced = h
        .history(&token)
        .await?
        .into_iter()
        .find(|i| i["notification"]["title"] == "backups")
        .expect("the silenced message in history");
    let routed = silenced["timeline"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(
        routed.starts_with(&format!(
            "kept in history: silenced by {id} (source backups) until"
        )),
        "{silenced}"
    );
    let (_, listed) = h
        .call(Method::GET, "/v1/silences", Some(&token), None)
        .await?;
    assert_eq!(listed["silences"][0]["id"], id.as_str(), "{listed}");
    assert_eq!(listed["silences"][0]["active"], true, "{listed}");
    assert_eq!(listed["silences"][0]["comment"], "moving the NAS");
    // removed: the topic reaches the user again
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/silences/{id}"),
            Some(&token),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    assert_eq!(ntfy("backups", "backup done").await?.status(), 200);
    wait_for(Duration::from_secs(20), "the topic again", || async {
        (hooks.requests("/olga").len() == 2).then_some(())
    })
    .await?;
    assert_eq!(
        hooks.requests("/olga").len(),
        2,
        "the silenced one never came"
    );
    for (body, field) in [
        (json!({"for": "2h"}), "source"),
        (json!({"source": "x", "for": "forever"}), "for"),
        (json!({"source": "x"}), "for"),
        (
            json!({"source": "x", "for": "1h", "colour": "red"}),
            "colour",
        ),
        (json!({"source": "x", "ends_at_ms": 5}), "ends_at_ms"),
        (
            json!({"source": "x", "for": "1h",
                   "window": {"start": "25:00", "end": "06:00", "tz": "UTC"}}),
            "window",
        ),
    ] {
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/silences",
                Some(&token),
                Some(body.clone()),
            )
            .await?;
        assert_eq!(
            (status.as_u16(), v["error"]["field"].as_str()),
            (400, Some(field)),
            "{body}: {v}"
        );
    }
    let (status, _) = h
        .call(Method::DELETE, "/v1/silences/nope", Some(&token), None)
        .await?;
    assert_eq!(status, 404);
    // a weekly maintenance window, for a month
    let window = json!({"days": ["sat", "sun"], "start": "22:00", "end": "06:00",
                        "tz": "Europe/Berlin"});
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/silences",
            Some(&token),
            Some(json!({"tag": "db", "for": "30d", "window": window})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["silence"]["window"], window);
    h.shutdown().await;
    Ok(())
}

/// A heartbeat (dead-man's switch): its ping URL takes a curl without a token; when a period
/// passes without a ping its owner is paged once, and the next ping resolves that. A wrong
/// secret is a 404 that says nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_heartbeat_pages_and_the_next_ping_resolves_it() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2eheartbeat", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("hugo").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/hugo")}),
    )
    .await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&token),
            Some(
                json!({"kind": "heartbeat", "period_secs": 10, "grace_secs": 0,
                        "label": "nightly backup"}),
            ),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let ping_url = v["ping_url"].as_str().unwrap_or_default().to_owned();
    let path = &ping_url[ping_url.find("/v1/heartbeats/").unwrap_or(0)..];
    let ping = format!("{}{path}", h.api_url);
    assert!(
        v["source"].get("token_hash").is_some()
            && !v["source"].to_string().contains(&path[path.len() - 32..]),
        "the secret is not kept: {v}"
    );
    // curl "$PING_URL" (the job ran)
    let r = h.http.get(&ping).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await?, "OK\n");
    let wrong = format!(
        "{}{}",
        &ping[..ping.len() - 1],
        if ping.ends_with('0') { "1" } else { "0" }
    );
    assert_eq!(h.http.post(&wrong).send().await?.status(), 404);
    // the job stops running: paged once
    wait_for(
        Duration::from_secs(40),
        "the missed heartbeat's page",
        || async { (!hooks.requests("/hugo").is_empty()).then_some(()) },
    )
    .await?;
    let page: serde_json::Value = serde_json::from_slice(&hooks.requests("/hugo")[0].body)?;
    assert_eq!(page["title"], "nightly backup: no heartbeat", "{page}");
    let (_, listed) = h
        .call(Method::GET, "/v1/sources", Some(&token), None)
        .await?;
    let missed = listed["sources"][0]["heartbeat"]["missed"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(missed, page["id"].as_str().unwrap_or_default(), "{listed}");
    // it runs again: the miss is resolved
    assert_eq!(h.http.post(&ping).send().await?.status(), 200);
    h.timeline_entry(&token, &missed, "resolved").await?;
    assert_eq!(hooks.requests("/hugo").len(), 1, "one page for one miss");
    h.shutdown().await;
    Ok(())
}

/// A hook source has its own secret URL: any program's JSON becomes notifications through the
/// source's mapping (one per item, keyed, resolving), and an Alertmanager payload sent to an
/// `alertmanager` hook is read as Alertmanager's. Their notifications are the source's (its
/// priority applies); a payload the mapping cannot render is refused naming the field, and
/// the owner sees why in the source's status until a call works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_hook_maps_any_payload_and_keeps_its_last_refusal() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2ehook", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("jo").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/jo")}),
    )
    .await?;
    let mapping = json!({
        "items": "/checks",
        "title": "{{ /name }} is {{ /state }} on {{ $/host }}",
        "body": "{{ /output | no output }}",
        "priority": "{{ /state }}",
        "priorities": {"critical": 5, "warning": 3, "ok": 2},
        "key": "{{ $/host }}/{{ /name }}",
        "resolve": "{{ /state }}",
        "url": "https://mon.example.org/{{ /name }}"
    });
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&token),
            Some(json!({"kind": "hook", "format": "json", "label": "monitor", "mapping": mapping})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let source = v["source"]["id"].as_str().unwrap_or_default().to_owned();
    let url = v["hook_url"].as_str().unwrap_or_default();
    let url = format!(
        "{}{}",
        h.api_url,
        &url[url.find("/v1/hooks/").unwrap_or(0)..]
    );
    let post = |body: serde_json::Value| h.http.post(&url).json(&body).send();
    let r = post(json!({"host": "web1", "checks": [
        {"name": "disk", "state": "CRITICAL", "output": "/var 97% full"},
        {"name": "load", "state": "OK"}
    ]}))
    .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        json!({"notified": 1, "resolved": 1})
    );
    wait_for(Duration::from_secs(20), "the check's page", || async {
        (hooks.requests("/jo").len() == 1).then_some(())
    })
    .await?;
    let page: serde_json::Value = serde_json::from_slice(&hooks.requests("/jo")[0].body)?;
    assert_eq!(page["title"], "disk is CRITICAL on web1", "{page}");
    assert_eq!(page["priority"], 5);
    assert_eq!(
        page["source"]["id"],
        source.as_str(),
        "the hook source's notification"
    );
    assert_eq!(page["url"], "https://mon.example.org/disk");
    // a payload the mapping cannot render: refused by field, kept as the source's status
    let r = post(json!({"host": "web1", "checks": [{"nme": "disk"}]})).await?;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await?;
    assert_eq!(e["error"]["field"], "mapping.title", "{e}");
    let status_of = || async {
        let (_, v) = h
            .call(Method::GET, "/v1/sources", Some(&token), None)
            .await
            .ok()?;
        Some(v["sources"][0]["status"].clone())
    };
    wait_for(
        Duration::from_secs(20),
        "the refusal in the status",
        || async {
            status_of().await.filter(|s| {
                s["ok"] == false && s["error"].as_str().unwrap_or("").contains("has no /name")
            })
        },
    )
    .await?;
    // deep JSON and a wrong secret
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let r = h.http.post(&url).body(deep).send().await?;
    assert_eq!(r.status(), 400);
    assert_eq!(
        h.http
            .post(format!("{url}x"))
            .json(&json!({}))
            .send()
            .await?
            .status(),
        404
    );
    // the disk is fine again: resolved, and the status says the hook works
    let r = post(json!({"host": "web1", "checks": [{"name": "disk", "state": "OK"}]})).await?;
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        json!({"notified": 0, "resolved": 1})
    );
    wait_for(Duration::from_secs(20), "the status ok again", || async {
        status_of().await.filter(|s| s["ok"] == true)
    })
    .await?;
    wait_for(
        Duration::from_secs(20),
        "the check resolved in history",
        || async {
            let items = h.history(&token).await.ok()?;
            items
                .iter()
                .any(|i| i["timeline"].to_string().contains("\"resolved\""))
                .then_some(())
        },
    )
    .await?;

    // an Alertmanager hook: Alertmanager's payload, this source's notification
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&token),
            Some(
                json!({"kind": "hook", "format": "alertmanager", "label": "prod",
                        "settings": {"priority": 2}}),
            ),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let am = v["hook_url"].as_str().unwrap_or_default();
    let am = format!("{}{}", h.api_url, &am[am.find("/v1/hooks/").unwrap_or(0)..]);
    let r = h
        .http
        .post(&am)
        .json(
            &json!({"version": "4", "receiver": "tocsin", "status": "firing", "alerts": [{
            "status": "firing", "labels": {"alertname": "Down", "instance": "db1"},
            "annotations": {"summary": "db1 is down"}, "fingerprint": "0123456789abcdef"}]}),
        )
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    wait_for(Duration::from_secs(20), "the alert", || async {
        (hooks.requests("/jo").len() == 2).then_some(())
    })
    .await?;
    let page: serde_json::Value = serde_json::from_slice(&hooks.requests("/jo")[1].body)?;
    assert_eq!(page["title"], "db1 is down", "{page}");
    assert_eq!(page["priority"], 2, "the source's priority: {page}");
    assert_eq!(page["source"]["label"], "prod");
    // per group: two firing alerts of one group are one page, resolved with the group
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&token),
            Some(
                json!({"kind": "hook", "format": "alertmanager", "label": "staging",
                        "per_group": true}),
            ),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let grouped = v["hook_url"].as_str().unwrap_or_default();
    let grouped = format!(
        "{}{}",
        h.api_url,
        &grouped[grouped.find("/v1/hooks/").unwrap_or(0)..]
    );
    let group = |status: &str| {
        let alert = |instance: &str, fp: &str| {
            json!({"status": status,
            "labels": {"alertname": "Down", "instance": instance},
            "annotations": {"summary": format!("{instance} is down")}, "fingerprint": fp})
        };
        json!({"version": "4", "receiver": "tocsin", "status": status,
               "groupKey": "{}:{alertname=\"Down\"}", "groupLabels": {"alertname": "Down"},
               "alerts": [alert("web1", "aaaaaaaaaaaaaaaa"), alert("web2", "bbbbbbbbbbbbbbbb")]})
    };
    let r = h.http.post(&grouped).json(&group("firing")).send().await?;
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        json!({"notified": 1, "resolved": 0})
    );
    wait_for(Duration::from_secs(20), "the group's page", || async {
        (hooks.requests("/jo").len() == 3).then_some(())
    })
    .await?;
    let page: serde_json::Value = serde_json::from_slice(&hooks.requests("/jo")[2].body)?;
    assert_eq!(page["title"], "[FIRING:2] Down", "{page}");
    let r = h
        .http
        .post(&grouped)
        .json(&group("resolved"))
        .send()
        .await?;
    assert_eq!(
        r.json::<serde_json::Value>().await?,
        json!({"notified": 0, "resolved": 1})
    );
    let group_id = page["id"].as_str().unwrap_or_default().to_owned();
    wait_for(Duration::from_secs(20), "the group resolved", || async {
        let items = h.history(&token).await.ok()?;
        let t = items
            .iter()
            .find(|i| i["notification"]["id"] == group_id.as_str())?["timeline"]
            .to_string();
        t.contains("\"resolved\"").then_some(())
    })
    .await?;
    h.shutdown().await;
    Ok(())
}

/// A policy with `tell_resolved`: when the alert is resolved, the webhook it paged gets a
/// "Resolved" message too, delivered and recorded on the alert's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_alert_is_told_to_the_destination_it_paged() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2etellresolved", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("ines").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/ines")}),
    )
    .await?;
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&token),
            Some(json!({"steps": [{}], "tell_resolved": true, "ack_expires_secs": 30})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "ack_expires_secs", "{v}");
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&token),
            Some(json!({"steps": [{}], "tell_resolved": true, "ack_expires_secs": 3600})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    let id = h
        .publish(
            &token,
            json!({"title": "Queue backed up", "dedup_key": "queue"}),
        )
        .await?;
    wait_for(Duration::from_secs(20), "the page", || async {
        (hooks.requests("/ines").len() == 1).then_some(())
    })
    .await?;
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            Some(json!({"dedup_key": "queue", "resolve": true})),
        )
        .await?;
    assert_eq!(status, 202);
    wait_for(Duration::from_secs(20), "the resolution told", || async {
        (hooks.requests("/ines").len() == 2).then_some(())
    })
    .await?;
    let told: serde_json::Value = serde_json::from_slice(&hooks.requests("/ines")[1].body)?;
    assert_eq!(told["title"], "Resolved: Queue backed up", "{told}");
    assert_eq!(told["id"], id.as_str());
    wait_for(
        Duration::from_secs(20),
        "both deliveries on the timeline",
        || async {
            let items = h.history(&token).await.ok()?;
            let t = items
                .iter()
                .find(|i| i["notification"]["id"] == id.as_str())?["timeline"]
                .as_array()?
                .clone();
            let delivered = t.iter().filter(|e| e["kind"] == "delivered").count();
            (delivered == 2 && t.iter().any(|e| e["kind"] == "resolved")).then_some(())
        },
    )
    .await?;
    h.shutdown().await;
    Ok(())
}

/// A feed that groups: its first new listing reaches the user at once, the rest of the window
/// are kept in history and arrive as one summary when the window ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_listings_is_one_page_and_one_summary() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2egroup", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            ("1", "Road bike - $400", ""),
            ("2", "Gravel bike - $900", ""),
            ("3", "Kids bike - $80", ""),
        ]),
        "application/rdf+xml",
    );
    let (_, token, _) = h.create_user("gus").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/gus")}),
    )
    .await?;
    h.add_source(
        &token,
        json!({"url": h.feeds.url("bikes.rdf"), "label": "bikes", "deliver_existing": true,
               "settings": {"group_secs": 10}}),
    )
    .await?;
    wait_for(Duration::from_secs(20), "all three in history", || async {
        (h.history(&token).await.ok()?.len() == 3).then_some(())
    })
    .await?;
    wait_for(
        Duration::from_secs(20),
        "the first listing's page",
        || async { (!hooks.requests("/gus").is_empty()).then_some(()) },
    )
    .await?;
    // the window is 10 s: the summary cannot have come yet
    assert_eq!(
        hooks.requests("/gus").len(),
        1,
        "only the first went out at once"
    );
    wait_for(Duration::from_secs(30), "the summary", || async {
        (hooks.requests("/gus").len() == 2).then_some(())
    })
    .await?;
    let summary: serde_json::Value = serde_json::from_slice(&hooks.requests("/gus")[1].body)?;
    assert_eq!(summary["title"], "2 more from bikes", "{summary}");
    assert_eq!(summary["source"]["label"], "bikes");
    h.shutdown().await;
    Ok(())
}

/// A shared topic: its owner creates it and hands out its subscribe key; each subscriber's
/// filter applies; a publish with the publish key reaches every subscriber through the
/// ingestor's fan-out; wrong keys are refused, and an unsubscribed user gets nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_topic_reaches_every_subscriber_through_their_filters() -> anyhow::Result<()> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2etopic", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, owner, _) = h.create_user("olaf").await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/topics",
            Some(&owner),
            Some(json!({"name": "homelab"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let publish_key = v["publish_key"].as_str().unwrap_or_default().to_owned();
    let subscribe_key = v["subscribe_key"].as_str().unwrap_or_default().to_owned();
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/topics",
            Some(&owner),
            Some(json!({"name": "homelab"})),
        )
        .await?;
    assert_eq!(status, 409, "a name is taken once");
    let (_, v) = h
        .call(Method::GET, "/v1/topics", Some(&owner), None)
        .await?;
    assert_eq!(v["topics"], json!(["homelab"]), "{v}");
    // two subscribers, one who only wants what mentions the NAS
    let mut sources = Vec::new();
    for (name, filter) in [("uma", json!({})), ("vic", json!({"any": ["nas"]}))] {
        let (_, token, _) = h.create_user(name).await?;
        h.add_destination(
            &token,
            json!({"channel": "webhook", "address": hooks.url(&format!("/{name}"))}),
        )
        .await?;
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/sources",
                Some(&token),
                Some(
                    json!({"kind": "topic", "topic": "homelab", "key": subscribe_key,
                            "label": "home", "filter": filter}),
                ),
            )
            .await?;
        assert_eq!(status, 201, "{v}");
        sources.push((
            token,
            v["source"]["id"].as_str().unwrap_or_default().to_owned(),
        ));
        // a wrong subscribe key is refused by field
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/sources",
                Some(&sources.last().unwrap().0),
                Some(json!({"kind": "topic", "topic": "homelab", "key": "ts_nope"})),
            )
            .await?;
        assert_eq!(
            (status.as_u16(), v["error"]["field"].as_str()),
            (400, Some("key")),
            "{v}"
        );
    }
    let publish = |title: &'static str| {
        h.http
            .post(format!("{}/v1/topics/homelab", h.api_url))
            .bearer_auth(&publish_key)
            .json(&json!({"title": title, "priority": 4}))
            .send()
    };
    // the subscriptions reach the ingestor through the bus: publish until the first arrives
    wait_for(
        Duration::from_secs(20),
        "the first message to uma",
        || async {
            let r = publish("Backup finished").await.ok()?;
            assert_eq!(r.status(), 202);
            (!hooks.requests("/uma").is_empty()).then_some(())
        },
    )
    .await?;
    let first: serde_json::Value = serde_json::from_slice(&hooks.requests("/uma")[0].body)?;
    assert_eq!(first["title"], "Backup finished");
    assert_eq!(first["priority"], 4, "the publisher's priority");
    assert_eq!(first["source"]["label"], "home");
    assert_eq!(first["source"]["id"], sources[0].1.as_str());
    assert_eq!(publish("NAS disk 3 failing").await?.status(), 202);
    wait_for(
        Duration::from_secs(20),
        "the NAS message to both",
        || async {
            let seen = |path: &str| {
                hooks
                    .requests(path)
                    .iter()
                    .any(|r| String::from_utf8_lossy(&r.body).contains("NAS disk 3 failing"))
            };
            (seen("/uma") && seen("/vic")).then_some(())
        },
    )
    .await?;
    assert!(
        hooks
            .requests("/vic")
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains("Backup finished")),
        "vic's filter keeps only the NAS"
    );
    // a wrong publish key, and the owner's own token, are not the publish key
    for key in ["tp_homelab_nope", owner.as_str()] {
        let r = h
            .http
            .post(format!("{}/v1/topics/homelab", h.api_url))
            .bearer_auth(key)
            .json(&json!({"title": "x"}))
            .send()
            .await?;
        assert_eq!(r.status(), 401);
    }
    // uma unsubscribes: the next message reaches vic only
    let (uma, uma_source) = &sources[0];
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/sources/{uma_source}"),
            Some(uma),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let before = hooks.requests("/uma").len();
    wait_for(Duration::from_secs(20), "vic's next message", || async {
        let r = publish("NAS rebuilt").await.ok()?;
        assert_eq!(r.status(), 202);
        hooks
            .requests("/vic")
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("NAS rebuilt"))
            .then_some(())
    })
    .await?;
    // (uma's removal went through the same ingest stream before vic's message did)
    assert_eq!(
        hooks.requests("/uma").len(),
        before,
        "nothing after unsubscribing"
    );
    h.shutdown().await;
    Ok(())
}

/// An alert published with a dedup key pages once while it is open: firing again adds a
/// `repeated` entry to the first, not a page. Resolving the key marks it resolved and stops its
/// escalation; when it fires after that, it pages again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_with_a_dedup_key_pages_once_until_it_is_resolved() -> anyhow::Result<()> {
    let (hooks, h, token) = on_call("e2eresolve", "rita").await?;
    let alert = json!({"title": "db1 disk 95% full", "priority": 4, "dedup_key": "disk:db1"});
    let first = h.publish(&token, alert.clone()).await?;
    wait_for(Duration::from_secs(20), "the first page", || async {
        (hooks.requests("/now").len() == 1).then_some(())
    })
    .await?;
    h.publish(&token, alert.clone()).await?;
    let timeline_of = |id: String| {
        let h = &h;
        let token = &token;
        async move {
            let item = h
                .history(token)
                .await
                .ok()?
                .into_iter()
                .find(|i| i["notification"]["id"] == id.as_str())?;
            let kinds: Vec<String> = item["timeline"]
                .as_array()?
                .iter()
                .filter_map(|e| e["kind"].as_str().map(str::to_owned))
                .collect();
            Some(kinds)
        }
    };
    wait_for(Duration::from_secs(20), "a `repeated` entry", || async {
        timeline_of(first.clone())
            .await
            .filter(|k| k.iter().any(|k| k == "repeated"))
    })
    .await?;
    let (_, v) = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?;
    assert_eq!(v["pending_escalations"], 1, "{v}");
    // resolved: the escalation stops, and the timeline says so
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            // as docs/alerts.md shows it: no title needed, the key as published (spaces trimmed)
            Some(json!({"dedup_key": " disk:db1 ", "resolve": true})),
        )
        .await?;
    assert_eq!(status, 202, "{v}");
    assert_eq!(v["resolved"], "disk:db1");
    wait_for(Duration::from_secs(20), "a `resolved` entry", || async {
        timeline_of(first.clone())
            .await
            .filter(|k| k.iter().any(|k| k == "resolved"))
    })
    .await?;
    let (_, v) = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?;
    assert_eq!(v["pending_escalations"], 0, "{v}");
    // it fires again: a new page
    let again = h.publish(&token, alert).await?;
    assert_ne!(again, first);
    wait_for(Duration::from_secs(20), "the second page", || async {
        (hooks.requests("/now").len() == 2).then_some(())
    })
    .await?;
    assert_eq!(
        h.notifications_at_least(&token, 2).await?.len(),
        2,
        "two notifications, not three"
    );
    // resolving needs a key
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            Some(json!({"title": "x", "resolve": true})),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), &v["error"]["field"]),
        (400, &json!("dedup_key"))
    );
    h.shutdown().await;
    Ok(())
}

/// A real Prometheus Alertmanager with tocsin as its webhook receiver: an alert posted to
/// Alertmanager's API pages through the user's policy; Alertmanager's own repeats of the group
/// add no page; when the alert ends, Alertmanager sends the resolution and the escalation stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_fires_pages_and_resolves_through_tocsin() -> anyhow::Result<()> {
    let (hooks, h, token) = on_call("e2eam", "olga").await?;
    let am =
        tocsin_testkit::Alertmanager::start(&format!("{}/v1/alertmanager", h.api_url), &token)?;
    let alert = |ends: Option<&str>| {
        let mut a = json!({
            "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical"},
            "annotations": {"summary": "db1: /var is 97% full"},
            "generatorURL": "http://prometheus.example.org/graph"
        });
        if let Some(t) = ends {
            a["endsAt"] = json!(t);
        }
        json!([a]).to_string()
    };
    am.post_alerts(&alert(None))?;
    wait_for(Duration::from_secs(30), "the alert's page", || async {
        (hooks.requests("/now").len() == 1).then_some(())
    })
    .await?;
    let n = h.notifications_at_least(&token, 1).await?;
    assert_eq!(n.len(), 1, "{n:?}");
    assert_eq!(n[0]["title"], "db1: /var is 97% full");
    assert_eq!(n[0]["priority"], 5);
    assert_eq!(n[0]["source"]["label"], "tocsin");
    // the alert ends: Alertmanager sends the resolution, the escalation stops
    let ended = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    am.post_alerts(&alert(Some(&ended)))?;
    let timeline = wait_for(Duration::from_secs(30), "the resolution", || async {
        let item = h.history(&token).await.ok()?.into_iter().next()?;
        let kinds: Vec<String> = item["timeline"]
            .as_array()?
            .iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_owned))
            .collect();
        kinds.iter().any(|k| k == "resolved").then_some(kinds)
    })
    .await?;
    assert!(timeline.contains(&"routed".to_owned()), "{timeline:?}");
    let (_, v) = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?;
    assert_eq!(v["pending_escalations"], 0, "{v}");
    assert_eq!(hooks.requests("/now").len(), 1, "one page");
    assert!(
        hooks.requests("/later").is_empty(),
        "the escalation stopped"
    );
    h.shutdown().await;
    Ok(())
}

/// A user on call: a webhook `/now` paged at once, and `/later` an hour after if nobody
/// acknowledges or resolves. Returns the recorder of both webhooks, the harness and the token.
async fn on_call(
    prefix: &str,
    name: &str,
) -> anyhow::Result<(tocsin_tests::Recorder, Harness, String)> {
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with(prefix, |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user(name).await?;
    let mut steps = Vec::new();
    for (path, wait) in [("/now", Some(3600)), ("/later", None)] {
        let id = h
            .add_destination(
                &token,
                json!({"channel": "webhook", "address": hooks.url(path)}),
            )
            .await?;
        steps.push(match wait {
            Some(w) => json!({"destinations": [id], "wait_secs": w}),
            None => json!({"destinations": [id]}),
        });
    }
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/policy",
            Some(&token),
            Some(json!({ "steps": steps })),
        )
        .await?;
    anyhow::ensure!(status == 200, "policy: {status} {v}");
    Ok((hooks, h, token))
}

/// Grafana Alerting's webhook contact point, with the body its documentation shows: a firing
/// alert pages once with its panel as the link, and its resolution stops the escalation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grafana_alert_pages_with_its_panel_and_resolves() -> anyhow::Result<()> {
    let (hooks, h, token) = on_call("e2egrafana", "gina").await?;
    let body = |status: &str| {
        json!({
            "receiver": "grafana-oncall",
            "status": status,
            "orgId": 1,
            "alerts": [{
                "status": status,
                "labels": {"alertname": "High memory usage", "team": "blue", "severity": "error"},
                "annotations": {"summary": "Memory high in us-1"},
                "startsAt": "2026-12-03T09:51:03.157076+02:00",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "https://grafana.example.org/alerting/1afz29v7z/edit",
                "fingerprint": "c6eadffa33fcdf37",
                "dashboardURL": "https://grafana.example.org/d/mem",
                "panelURL": "https://grafana.example.org/d/mem?viewPanel=2",
                "valueString": "[ var='B' value=44.2 ]"
            }],
            "version": "1",
            "title": "[FIRING:1] High memory usage",
            "state": "alerting"
        })
    };
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/grafana",
            Some(&token),
            Some(body("firing")),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v, json!({"notified": 1, "resolved": 0}));
    wait_for(Duration::from_secs(20), "the page", || async {
        (hooks.requests("/now").len() == 1).then_some(())
    })
    .await?;
    let n = h.notifications_at_least(&token, 1).await?;
    assert_eq!(n[0]["url"], "https://grafana.example.org/d/mem?viewPanel=2");
    assert_eq!(n[0]["priority"], 4);
    assert_eq!(n[0]["source"]["label"], "grafana-oncall");
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/grafana",
            Some(&token),
            Some(body("resolved")),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), &v),
        (200, &json!({"notified": 0, "resolved": 1}))
    );
    h.escalations_over(&token).await?;
    // an Alertmanager body sent to Grafana's receiver is refused by its version
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/grafana",
            Some(&token),
            Some(json!({"version": "4", "alerts": []})),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), &v["error"]["field"]),
        (400, &json!("version"))
    );
    h.shutdown().await;
    Ok(())
}
