//! End to end through a real nats-server: feed → ingestor → router → history → API and the
//! private feed; restarts; hostile feeds; API validation and isolation between users.

use reqwest::Method;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::{ADMIN, Harness, Svc, rdf};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_matching_item_reaches_history_and_the_private_feed_once_per_url()
-> anyhow::Result<()> {
    let h = Harness::start("e2efeed").await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[("1", "Old road bike - $500", "already listed")]),
        "application/rdf+xml",
    );
    let url = h.feeds.url("bikes.rdf");
    let (_u1, t1, atom1) = h.create_user("ann").await?;
    let (_u2, t2, _) = h.create_user("bob").await?;
    h.add_source(
        &t1,
        json!({"url": url, "label": "bikes", "filter": {"any": ["bike"], "price_max": 1000}}),
    )
    .await?;
    h.add_source(&t2, json!({"url": url})).await?;
    h.wait_sources_checked(&t1, 1).await?;
    h.wait_sources_checked(&t2, 1).await?;
    // the first poll is a baseline: the item already listed is not announced
    assert!(h.history_titles(&t1).await?.is_empty());

    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            (
                "3",
                "Cheap road BIKE - $650 (oakland)",
                "<b>barely</b> ridden &amp; clean",
            ),
            (
                "2",
                "Sofa - $300",
                "not a bike... well, the word is here but price fine",
            ),
            ("4", "Carbon bike - $3.5k", "too expensive"),
            ("1", "Old road bike - $500", "already listed"),
        ]),
        "application/rdf+xml",
    );
    let titles = wait_for(
        Duration::from_secs(20),
        "ann's two matches in history",
        || async {
            let t = h.history_titles(&t1).await.ok()?;
            (t.len() >= 2).then_some(t)
        },
    )
    .await?;
    // "Sofa" mentions bike in its text and is cheap, so it matches too: the filter is over
    // title and text; the $3.5k one and the baseline item do not
    let mut sorted = titles.clone();
    sorted.sort();
    assert_eq!(sorted, ["Cheap road BIKE - $650 (oakland)", "Sofa - $300"]);
    let bob = wait_for(Duration::from_secs(20), "bob's three new items", || async {
        let t = h.history_titles(&t2).await.ok()?;
        (t.len() == 3).then_some(t)
    })
    .await?;
    assert!(!bob.contains(&"Old road bike - $500".to_string()));

    // the private feed is a valid Atom document a reader accepts, text escaped
    let xml = h.http.get(&atom1).send().await?.text().await?;
    let feed = feed_rs::parser::parse(xml.as_bytes())?;
    let mut in_feed: Vec<_> = feed
        .entries
        .iter()
        .map(|e| e.title.as_ref().unwrap().content.clone())
        .collect();
    in_feed.sort();
    assert_eq!(in_feed, sorted);
    let rss = h
        .http
        .get(atom1.replace(".atom", ".rss"))
        .send()
        .await?
        .text()
        .await?;
    assert_eq!(feed_rs::parser::parse(rss.as_bytes())?.entries.len(), 2);
    assert!(xml.contains("barely ridden &amp; clean"), "{xml}");

    // one fetch per poll for the URL, however many subscribers: polls are ~1 s apart
    let reqs = h.feeds.requests("bikes.rdf");
    assert!(reqs.len() >= 2);
    for pair in reqs.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(700),
            "two fetches {gap:?} apart: a second subscriber caused a second fetch"
        );
    }
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_router_and_history_mid_flow_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start("e2ecrash").await?;
    let (_u, token, _) = h.create_user("carol").await?;
    let total = 300;
    let mut ids = HashSet::new();
    for i in 0..total {
        if i == 100 {
            h.kill(Svc::Router).await;
        }
        if i == 150 {
            h.start_service(Svc::Router);
            h.kill(Svc::History).await;
        }
        if i == 220 {
            h.start_service(Svc::History);
        }
        let id = h
            .publish(
                &token,
                json!({"title": format!("n{i}"), "idempotency_key": format!("k{i}")}),
            )
            .await?;
        ids.insert(id.clone());
        // a retried publish (same key) is the same notification
        if i % 50 == 0 {
            let (_, again) = h
                .call(
                    Method::POST,
                    "/v1/publish",
                    Some(&token),
                    Some(json!({"title": format!("n{i}"), "idempotency_key": format!("k{i}")})),
                )
                .await?;
            assert_eq!(again["id"], id.as_str());
        }
    }
    h.assert_history_is_exactly(&token, &ids).await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_feeds_get_readable_errors_and_do_not_stop_other_feeds() -> anyhow::Result<()> {
    let h = Harness::start_with("e2ehostile", |s| s.ingestor.max_body_bytes = 256 * 1024).await?;
    let f = &h.feeds;
    f.set(
        "ok.rdf",
        rdf(&[("1", "Good item", "fine")]),
        "application/rdf+xml",
    );
    f.set("garbage.xml", "this is not xml at all {", "text/plain");
    let full = rdf(&[("1", "a", "b"), ("2", "c", "d")]);
    f.set(
        "truncated.xml",
        &full.as_bytes()[..full.len() / 2],
        "application/xml",
    );
    f.set("latin1.xml", b"<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>caf\xe9</title><item><title>cr\xe8me \xff\xfe</title></item></channel></rss>".to_vec(), "application/xml");
    f.set(
        "huge.xml",
        format!(
            "<rss><channel>{}</channel></rss>",
            "<item><title>x</title></item>".repeat(20_000)
        ),
        "application/xml",
    );
    f.set(
        "bomb.xml",
        r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><rss version="2.0"><channel><title>&c;</title></channel></rss>"#,
        "application/xml",
    );
    let (_u, token, _) = h.create_user("dan").await?;
    for name in [
        "garbage.xml",
        "truncated.xml",
        "latin1.xml",
        "huge.xml",
        "bomb.xml",
        "missing.xml",
    ] {
        h.add_source(&token, json!({"url": f.url(name), "label": name}))
            .await?;
    }
    h.add_source(
        &token,
        json!({"url": f.url("ok.rdf"), "label": "ok", "deliver_existing": true}),
    )
    .await?;
    let sources = h.wait_sources_checked(&token, 7).await?;
    let status = |label: &str| {
        sources
            .iter()
            .find(|s| s["label"] == label)
            .map(|s| s["status"].clone())
            .unwrap()
    };
    assert_eq!(status("ok")["ok"], true);
    for (label, expect) in [
        ("garbage.xml", "not a valid RSS"),
        ("huge.xml", "larger than 262144 bytes"),
        ("bomb.xml", "declares entities"),
        ("missing.xml", "HTTP 404"),
    ] {
        let s = status(label);
        assert_eq!(s["ok"], false, "{label}: {s}");
        let err = s["error"].as_str().unwrap();
        assert!(
            err.contains(expect),
            "{label}: {err:?} should mention {expect:?}"
        );
    }
    // truncated and mis-encoded documents: either a recorded error or a clean parse
    for label in ["truncated.xml", "latin1.xml"] {
        let s = status(label);
        assert!(
            s["ok"] == true || s["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{label}: {s}"
        );
    }
    // the healthy feed kept working
    let titles = wait_for(Duration::from_secs(20), "the good item", || async {
        let t = h.history_titles(&token).await.ok()?;
        t.contains(&"Good item".to_string()).then_some(t)
    })
    .await?;
    assert!(titles.contains(&"Good item".to_string()));
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_names_bad_fields_and_keeps_users_apart() -> anyhow::Result<()> {
    let h = Harness::start("e2eapi").await?;
    let (ua, ta, atom_a) = h.create_user("alice").await?;
    let (_ub, tb, _) = h.create_user("bob").await?;
    h.feeds
        .set("a.rdf", rdf(&[("1", "x", "y")]), "application/rdf+xml");
    let sa = h
        .add_source(&ta, json!({"url": h.feeds.url("a.rdf")}))
        .await?;

    // validation names the field
    for (body, field) in [
        (json!({"url": "ftp://example.org/"}), "url"),
        (
            json!({"url": "https://example.org/", "filter": {"regex": "(unclosed"}}),
            "filter.regex",
        ),
        (
            json!({"url": "https://example.org/", "filter": {"price_min": 10, "price_max": 1}}),
            "filter.price_min",
        ),
        (
            json!({"url": "https://example.org/", "filter": {"anny": ["x"]}}),
            "filter.anny",
        ),
        (json!({"url": 5}), "url"),
    ] {
        let (status, v) = h
            .call(Method::POST, "/v1/sources", Some(&ta), Some(body.clone()))
            .await?;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"]["field"], field, "{body} → {v}");
    }
    for (body, field) in [
        (json!({"title": ""}), "title"),
        (json!({"title": "x", "priority": 7}), "priority"),
        (json!({"title": "x", "priority": "high"}), "priority"),
        (
            json!({"title": "x", "click_url": "javascript:alert(1)"}),
            "click_url",
        ),
    ] {
        let (status, v) = h
            .call(Method::POST, "/v1/publish", Some(&ta), Some(body.clone()))
            .await?;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"]["field"], field, "{body} → {v}");
    }
    let r = h
        .http
        .post(format!("{}/v1/publish", h.api_url))
        .bearer_auth(&ta)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = h
        .http
        .post(format!("{}/v1/publish", h.api_url))
        .bearer_auth(&ta)
        .header("content-type", "application/json")
        .body(vec![b' '; 200_000])
        .send()
        .await?;
    assert_eq!(r.status(), 413);
    // the body was not read: the connection is not reused for the next request
    assert_eq!(r.headers()["connection"], "close");
    let (status, _) = h
        .call(Method::GET, "/v1/history?limit=0", Some(&ta), None)
        .await?;
    assert_eq!(status, 400);
    let (status, _) = h
        .call(Method::GET, "/v1/history?cursor=bogus", Some(&ta), None)
        .await?;
    assert_eq!(status, 400);

    // authentication and isolation
    let (status, _) = h.call(Method::GET, "/v1/sources", None, None).await?;
    assert_eq!(status, 401);
    let forged = format!("tk_{ua}_{}", "0".repeat(32));
    let (status, _) = h
        .call(Method::GET, "/v1/sources", Some(&forged), None)
        .await?;
    assert_eq!(status, 401);
    let (status, _) = h
        .call(Method::POST, "/v1/users", Some(&ta), Some(json!({})))
        .await?;
    assert_eq!(status, 401, "a user token is not an admin token");
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/sources/{sa}"),
            Some(&tb),
            None,
        )
        .await?;
    assert_eq!(status, 404, "bob cannot remove alice's source");
    let (_, v) = h.call(Method::GET, "/v1/sources", Some(&tb), None).await?;
    assert_eq!(v["sources"].as_array().unwrap().len(), 0);
    h.publish(&ta, json!({"title": "for alice only"})).await?;
    h.wait_for_title(&ta, "for alice only").await?;
    assert!(
        h.history_titles(&tb).await?.is_empty(),
        "bob sees alice's history"
    );
    let wrong_secret = format!("{}/feeds/{ua}/{}.atom", h.api_url, "f".repeat(32));
    assert_eq!(h.http.get(&wrong_secret).send().await?.status(), 404);
    assert_eq!(h.http.get(&atom_a).send().await?.status(), 200);

    // removing a source works for its owner
    let (status, _) = h
        .call(
            Method::DELETE,
            &format!("/v1/sources/{sa}"),
            Some(&ta),
            None,
        )
        .await?;
    assert_eq!(status, 204);
    let (_, v) = h.call(Method::GET, "/v1/openapi.json", None, None).await?;
    assert_eq!(v["openapi"], "3.1.0");
    // every service's metrics, in this process's one registry
    let metrics = h
        .http
        .get(format!("{}/metrics", h.api_url))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "tocsin_api_published_total",
        "tocsin_router_messages_total",
        "tocsin_history_records_total",
        "tocsin_bus_published_total",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_dead_lettered_listed_and_replayable() -> anyhow::Result<()> {
    let h = Harness::start("e2edlq").await?;
    let (uid, token, _) = h.create_user("erin").await?;
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let user = tocsin_model::UserId::parse(&uid)?;
    let subject = bus.subjects().silo(bus.silo_of(&user), &uid, "notify");
    bus.publish(
        subject.clone(),
        "poison-1",
        bytes::Bytes::from_static(b"{\"type\":\"notify\",\"garbage\":true}"),
    )
    .await?;
    let list = wait_for(Duration::from_secs(20), "the dead letter", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/admin/dead-letters", Some(ADMIN), None)
            .await
            .ok()?;
        let l = v["dead_letters"].as_array()?.clone();
        (!l.is_empty()).then_some(l)
    })
    .await?;
    assert_eq!(list[0]["original_subject"], subject);
    assert!(
        list[0]["reason"]
            .as_str()
            .unwrap()
            .contains("cannot encode or decode"),
        "{}",
        list[0]
    );
    let (status, _) = h
        .call(Method::GET, "/v1/admin/dead-letters", Some(&token), None)
        .await?;
    assert_eq!(status, 401, "users cannot see dead letters");
    // still poison: it comes back to the dead-letter stream under a new sequence
    replay_until_dead_again(&h, list[0]["seq"].as_u64().unwrap()).await?;
    // and the user's avatar kept working
    h.publish(&token, json!({"title": "after poison"})).await?;
    h.wait_for_title(&token, "after poison").await?;
    h.shutdown().await;
    Ok(())
}

/// The first dead letter, once there is one.
async fn first_dead_letter(h: &Harness) -> anyhow::Result<serde_json::Value> {
    wait_for(Duration::from_secs(20), "the dead letter", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/admin/dead-letters", Some(ADMIN), None)
            .await
            .ok()?;
        v["dead_letters"].as_array()?.first().cloned()
    })
    .await
}

/// Replay dead letter `seq` and wait until it is the one dead letter again, under a new
/// sequence (its message is still poison).
async fn replay_until_dead_again(h: &Harness, seq: u64) -> anyhow::Result<()> {
    let (status, v) = h
        .call(
            Method::POST,
            &format!("/v1/admin/dead-letters/{seq}/replay"),
            Some(ADMIN),
            None,
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    wait_for(
        Duration::from_secs(20),
        "the replayed letter to be dead again",
        || async {
            let (_, v) = h
                .call(Method::GET, "/v1/admin/dead-letters", Some(ADMIN), None)
                .await
                .ok()?;
            let l = v["dead_letters"].as_array()?.clone();
            (l.len() == 1 && l[0]["seq"].as_u64()? != seq).then_some(())
        },
    )
    .await?;
    Ok(())
}

/// An envelope of history records with one unreadable record: history writes the others
/// and dead-letters the envelope, naming the record, so nothing is lost and nothing is
/// written twice when it is replayed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_envelope_with_a_bad_record_keeps_the_good_ones_and_names_the_bad() -> anyhow::Result<()>
{
    let h = Harness::start("e2eenvelope").await?;
    let (uid, token, _) = h.create_user("ivy").await?;
    let id = h.publish(&token, json!({"title": "enveloped"})).await?;
    h.wait_for_title(&token, "enveloped").await?;
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let user = tocsin_model::UserId::parse(&uid)?;
    let note = |kind: &str| tocsin_model::HistoryRecord::Timeline {
        user: user.clone(),
        notification_id: tocsin_model::NotificationId(id.clone()),
        entry: tocsin_model::TimelineEntry {
            at_ms: 1_700_000_000_000,
            kind: kind.into(),
            channel: None,
            detail: "from an envelope".into(),
        },
    };
    let (good1, good2) = (
        tocsin_bus::encode(&note("noted"))?,
        tocsin_bus::encode(&note("seen"))?,
    );
    // a record of a user in another silo does not belong in this silo's envelope
    let stranger = (0..1000)
        .filter_map(|i| tocsin_model::UserId::parse(&format!("ustranger{i}")).ok())
        .find(|u| bus.silo_of(u) != bus.silo_of(&user))
        .ok_or_else(|| anyhow::anyhow!("no user of another silo among 1,000 names"))?;
    let strayed = tocsin_bus::encode(&tocsin_model::HistoryRecord::Forget {
        user: stranger.clone(),
    })?;
    let payload = tocsin_bus::envelope::encode([
        ("good-1", &good1[..]),
        ("bad", &b"{\"not\":\"a record\"}"[..]),
        ("good-2", &good2[..]),
        ("strayed", &strayed[..]),
    ]);
    let subject = bus.subjects().history_envelope(bus.silo_of(&user));
    bus.publish(subject.clone(), "env-test-1", payload).await?;
    let letter = first_dead_letter(&h).await?;
    assert_eq!(letter["original_subject"], subject);
    let reason = letter["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("record 1 (bad): "), "{reason}");
    assert!(
        reason.contains(&format!(
            "; record 3 (strayed): record for user {stranger} arrived on the wrong subject"
        )),
        "{reason}"
    );
    let kinds = |items: Vec<serde_json::Value>| -> Vec<String> {
        items
            .iter()
            .find(|i| i["notification"]["id"] == id.as_str())
            .and_then(|i| i["timeline"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|e| e["kind"].as_str().map(str::to_owned))
            .collect()
    };
    let got = kinds(h.history(&token).await?);
    assert!(
        got.contains(&"noted".to_owned()) && got.contains(&"seen".to_owned()),
        "{got:?}"
    );
    // replayed, the good records change nothing and the letter comes back
    replay_until_dead_again(&h, letter["seq"].as_u64().unwrap_or_default()).await?;
    let again = kinds(h.history(&token).await?);
    assert_eq!(again.len(), got.len(), "{again:?}");
    h.shutdown().await;
    Ok(())
}

/// A bulk hand-over (a silo's notifications in envelopes, as the ingestor sends a feed item's
/// subscribers): each record reaches its avatar once, an unreadable record is dead-lettered
/// alone as the message it would have been (and replays as one), and the same records handed
/// over again are duplicates, not new notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_hand_over_routes_each_record_once_and_sets_a_bad_one_aside_alone()
-> anyhow::Result<()> {
    let h = Harness::start("e2ebulk").await?;
    let (uid, token, _) = h.create_user("bulk").await?;
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let user = tocsin_model::UserId::parse(&uid)?;
    let note = |i: u32| tocsin_model::Notification {
        id: tocsin_model::NotificationId(format!("nbulk{i}")),
        user: user.clone(),
        source: tocsin_model::SourceRef {
            kind: tocsin_model::SourceKind::Publish,
            id: None,
            label: "bulk".into(),
        },
        title: format!("bulk {i}"),
        body: String::new(),
        url: None,
        priority: Default::default(),
        tags: Vec::new(),
        created_at_ms: tocsin_model::now_ms(),
        published_at_ms: None,
        dedup_key: None,
    };
    let record = |i: u32| -> anyhow::Result<(String, bytes::Bytes)> {
        let n = note(i);
        let id = tocsin_bus::envelope::addressed(&uid, n.id.as_str());
        let msg = tocsin_model::AvatarMessage::Notify { notification: n };
        Ok((id, tocsin_bus::encode(&msg)?))
    };
    let ((id1, p1), (id2, p2)) = (record(1)?, record(2)?);
    let bad_id = tocsin_bus::envelope::addressed(&uid, "nbad");
    let payload = tocsin_bus::envelope::encode([
        (id1.as_str(), &p1[..]),
        (
            bad_id.as_str(),
            &b"{\"type\":\"notify\",\"garbage\":true}"[..],
        ),
        (id2.as_str(), &p2[..]),
    ]);
    let silo = bus.silo_of(&user);
    let subject = bus.subjects().silo_envelope(silo, "notify");
    bus.publish(subject.clone(), "bulk-test-1", payload).await?;
    let letter = first_dead_letter(&h).await?;
    // set aside as the message it would have been on its own, so a replay is one
    assert_eq!(
        letter["original_subject"],
        bus.subjects().silo(silo, &uid, "notify")
    );
    assert_eq!(letter["payload"], "{\"type\":\"notify\",\"garbage\":true}");
    h.wait_for_title(&token, "bulk 1").await?;
    h.wait_for_title(&token, "bulk 2").await?;
    // handed over again with a new one (the publisher's own code this time): only the new one
    let again: Vec<_> = [1, 2, 3].into_iter().map(note).collect();
    for (subject, id, payload) in bus.notify_outputs(&again)? {
        assert_eq!(subject, bus.subjects().silo_envelope(silo, "notify"));
        bus.publish(subject, &id, payload).await?;
    }
    h.wait_for_title(&token, "bulk 3").await?;
    let titles: Vec<String> = h
        .history(&token)
        .await?
        .iter()
        .filter_map(|i| i["notification"]["title"].as_str().map(str::to_owned))
        .collect();
    for t in ["bulk 1", "bulk 2", "bulk 3"] {
        assert_eq!(titles.iter().filter(|x| *x == t).count(), 1, "{titles:?}");
    }
    // the dead letter replays as a message of its own and, still poison, comes back alone
    replay_until_dead_again(&h, letter["seq"].as_u64().unwrap_or_default()).await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_avatar_comes_back_with_its_state() -> anyhow::Result<()> {
    let h = Harness::start("e2eevict").await?;
    let (_u, token, _) = h.create_user("gil").await?;
    for round in 0..3 {
        for i in 0..20 {
            let body = json!({"title": format!("r{round} n{i}"), "idempotency_key": format!("{round}-{i}")});
            let (status, _) = h
                .call(Method::POST, "/v1/publish", Some(&token), Some(body))
                .await?;
            assert_eq!(status, 202);
        }
        // idle for longer than avatar_idle_secs (1 s): the avatar is evicted
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    // a publish repeated after eviction is still recognised (the avatar's recent ids were saved)
    let (_, again) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            Some(json!({"title": "r0 n0", "idempotency_key": "0-0"})),
        )
        .await?;
    assert!(again["id"].is_string());
    let items = wait_for(Duration::from_secs(20), "60 notifications", || async {
        let items = h.history(&token).await.ok()?;
        (items.len() >= 60).then_some(items)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.history(&token).await?.len(), 60);
    assert_eq!(items.len(), 60);
    h.shutdown().await;
    Ok(())
}

/// A long-lived user's recent keys spill out of their record into a base of their own
/// (ADR 0033); a restarted router reads both, and what reached the user before still counts
/// as seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lived_users_recent_keys_outlive_a_restart_in_their_base() -> anyhow::Result<()> {
    let mut h = Harness::start("e2eseenbase").await?;
    let (user, token, _) = h.create_user("hal").await?;
    // each alert is two keys (its id and its content key): 80, past the 64 a record carries
    for i in 0..40 {
        let alert = json!({"title": format!("alert {i}"), "dedup_key": format!("a{i}")});
        h.publish(&token, alert).await?;
    }
    h.notifications_at_least(&token, 40).await?;
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let (avatars, seen) = (bus.kv("avatars").await?, bus.kv("seen").await?);
    let base = wait_for(
        Duration::from_secs(20),
        "the user's base of recent keys",
        || async { seen.entry(user.as_str()).await.ok().flatten() },
    )
    .await?;
    assert_eq!(base.value[0], 1, "the base's format byte");
    assert!(base.value.len() > 1 + 8 * 64, "{} bytes", base.value.len());
    // the base holds every key as of the checkpoint that wrote it, which depends on how the
    // avatar's rounds fell; the records after it keep only the change: the rest of the 80, and
    // the two keys of one more alert
    let in_base = (base.value.len() - 1) / 8;
    let since = 82 - in_base;
    // 8 bytes a key, in base64 without padding
    let since_b64 = (since * 8 * 4).div_ceil(3);
    h.publish(&token, json!({"title": "one more", "dedup_key": "more"}))
        .await?;
    let in_record = wait_for(
        Duration::from_secs(20),
        "a record naming its base, with the keys added since it",
        || async {
            let stored = avatars.get(user.as_str()).await.ok().flatten()?;
            let record: serde_json::Value = serde_json::from_slice(&stored).ok()?;
            let seen = &record["seen"];
            (seen["base"].is_u64() && seen["added"].as_str().map(str::len) == Some(since_b64))
                .then(|| seen.clone())
        },
    )
    .await?;
    assert_eq!(in_record["base"], base.revision, "{in_record}");
    // and a filter of the base's keys (80 of them: 128 bytes, 171 in base64)
    assert_eq!(
        in_record["filter"].as_str().map(str::len),
        Some(171),
        "{in_record}"
    );
    // nothing forgotten: every alert was new
    assert!(
        in_record.get("forgot").is_none_or(|f| f == ""),
        "{in_record}"
    );
    h.stop(Svc::Router).await;
    h.start_service(Svc::Router);
    // a new alert, which the woken avatar routes without reading the base (its filter rules
    // the keys out); the first alert again (its content key is in the base: the avatar reads
    // it then, and decides again); then a new one: in order, so once the new one is in
    // history the repeat has been handled
    h.publish(&token, json!({"title": "first after", "dedup_key": "new0"}))
        .await?;
    h.publish(&token, json!({"title": "alert 0 again", "dedup_key": "a0"}))
        .await?;
    h.publish(&token, json!({"title": "after", "dedup_key": "new"}))
        .await?;
    let titles = wait_for(
        Duration::from_secs(20),
        "the new alert in history",
        || async {
            let t = h.history_titles(&token).await.ok()?;
            t.iter().any(|t| t == "after").then_some(t)
        },
    )
    .await?;
    assert_eq!(titles.len(), 43, "{titles:?}");
    assert!(titles.iter().any(|t| t == "first after"), "{titles:?}");
    assert!(!titles.iter().any(|t| t == "alert 0 again"), "{titles:?}");
    // deleted, the user leaves no base behind either
    let path = format!("/v1/users/{user}");
    let (status, v) = h.call(Method::DELETE, &path, Some(ADMIN), None).await?;
    assert_eq!(status, 204, "{v}");
    assert_eq!(avatars.get(user.as_str()).await?, None, "the record");
    assert_eq!(seen.get(user.as_str()).await?, None, "the base");
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_ingestor_keeps_its_subscribers_and_what_it_has_seen() -> anyhow::Result<()> {
    let mut h = Harness::start("e2eingrestart").await?;
    h.feeds.set(
        "r.rdf",
        rdf(&[("1", "listed before", "x")]),
        "application/rdf+xml",
    );
    let (_u, token, _) = h.create_user("finn").await?;
    h.add_source(&token, json!({"url": h.feeds.url("r.rdf")}))
        .await?;
    h.wait_sources_checked(&token, 1).await?;
    h.kill(Svc::Ingestor).await;
    h.feeds.set(
        "r.rdf",
        rdf(&[("2", "listed while down", "y"), ("1", "listed before", "x")]),
        "application/rdf+xml",
    );
    h.start_service(Svc::Ingestor);
    let titles = wait_for(
        Duration::from_secs(20),
        "the item listed while the ingestor was down",
        || async {
            let t = h.history_titles(&token).await.ok()?;
            (!t.is_empty()).then_some(t)
        },
    )
    .await?;
    assert_eq!(titles, ["listed while down"]);
    // several more polls, each answered 304: nothing is announced again, and the feed's
    // record on the bus is not rewritten for them (only its times would change)
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let feeds = bus.kv("feeds").await?;
    let key = tocsin_ingestor::feeds::feed_key(&h.feeds.url("r.rdf"));
    let revision = || async { feeds.entry(&key).await.ok().flatten().map(|e| e.revision) };
    // the poll that found the item writes the record with both items seen
    wait_for(
        Duration::from_secs(20),
        "the record with both items seen",
        || async {
            let e = feeds.entry(&key).await.ok().flatten()?;
            let v: serde_json::Value = serde_json::from_slice(&e.value).ok()?;
            (v["seen"].as_array()?.len() == 2).then_some(())
        },
    )
    .await?;
    let before = revision().await;
    let polls = h.feeds.requests("r.rdf").len();
    wait_for(Duration::from_secs(20), "two more polls", || async {
        (h.feeds.requests("r.rdf").len() >= polls + 2).then_some(())
    })
    .await?;
    assert_eq!(h.history_titles(&token).await?, ["listed while down"]);
    assert_eq!(revision().await, before, "a 304 rewrote the feed's record");
    bus.drain().await;
    h.shutdown().await;
    Ok(())
}

/// A second subscriber to a feed already watched asks for what is listed: the feed server
/// answers 304 to the ingestor's usual conditional GET, so the poll for the newcomer must fetch
/// the document itself, and the first subscriber gets nothing again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_subscriber_gets_the_listed_items_from_a_feed_answering_304() -> anyhow::Result<()> {
    let h = Harness::start("e2elate").await?;
    h.feeds.set(
        "l.rdf",
        rdf(&[("1", "listed one", "x"), ("2", "listed two", "y")]),
        "application/rdf+xml",
    );
    let url = h.feeds.url("l.rdf");
    let (_u1, t1, _) = h.create_user("gail").await?;
    let (_u2, t2, _) = h.create_user("hugo").await?;
    h.add_source(&t1, json!({"url": url})).await?;
    h.wait_sources_checked(&t1, 1).await?;
    // a few conditional polls (304s) so the feed is settled and its ETag known
    let polls = h.feeds.requests("l.rdf").len();
    wait_for(Duration::from_secs(20), "two more polls", || async {
        (h.feeds.requests("l.rdf").len() >= polls + 2).then_some(())
    })
    .await?;
    h.add_source(&t2, json!({"url": url, "deliver_existing": true}))
        .await?;
    let titles = wait_for(
        Duration::from_secs(20),
        "the listed items for hugo",
        || async {
            let mut t = h.history_titles(&t2).await.ok()?;
            t.sort();
            (t.len() == 2).then_some(t)
        },
    )
    .await?;
    assert_eq!(titles, ["listed one", "listed two"]);
    // more polls: nobody is told again, and gail (a baseline subscriber) never was
    let polls = h.feeds.requests("l.rdf").len();
    wait_for(Duration::from_secs(20), "two more polls", || async {
        (h.feeds.requests("l.rdf").len() >= polls + 2).then_some(())
    })
    .await?;
    assert_eq!(h.history_titles(&t2).await?.len(), 2);
    assert!(h.history_titles(&t1).await?.is_empty());
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restart_mid_flow_loses_and_duplicates_nothing() -> anyhow::Result<()> {
    let mut h = Harness::start("e2enatsrestart").await?;
    let (_u, token, _) = h.create_user("lou").await?;
    let mut ids = HashSet::new();
    for i in 0..120 {
        if i == 60 {
            // SIGKILL: in-flight acks and publishes are lost; the store survives
            let nats = h.nats.as_mut().expect("one nats-server");
            nats.kill();
            nats.restart()?;
        }
        let body = json!({"title": format!("m{i}"), "idempotency_key": format!("m{i}")});
        // publishes made while the server is away get 503 after the retry budget; a client
        // retries with the same key
        let id = wait_for(Duration::from_secs(30), "an accepted publish", || async {
            let (status, v) = h
                .call(
                    Method::POST,
                    "/v1/publish",
                    Some(&token),
                    Some(body.clone()),
                )
                .await
                .ok()?;
            (status == 202).then(|| v["id"].as_str().unwrap().to_owned())
        })
        .await?;
        ids.insert(id);
    }
    h.assert_history_is_exactly(&token, &ids).await?;
    // the pipeline still flows after the restart
    h.publish(&token, json!({"title": "after"})).await?;
    h.wait_for_title(&token, "after").await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_limits_requests_per_user_and_per_address() -> anyhow::Result<()> {
    let h = Harness::start_with("ratelimit", |s| {
        s.api.rate_per_user_per_minute = 3;
        s.api.rate_per_ip_per_minute = 8;
    })
    .await?;
    let (_, token, _) = h.create_user("busy").await?; // 1 from this address
    for _ in 0..3 {
        let (status, v) = h.call(Method::GET, "/v1/me", Some(&token), None).await?;
        assert_eq!(status, 200, "{v}");
    }
    let (status, v) = h.call(Method::GET, "/v1/me", Some(&token), None).await?;
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("for this user"),
        "{v}"
    );
    // the address has used 5 of its 8; unauthenticated calls use up the rest
    for _ in 0..3 {
        let (status, _) = h.call(Method::GET, "/v1/openapi.json", None, None).await?;
        assert_eq!(status, 200);
    }
    let r = h
        .http
        .get(format!("{}/v1/openapi.json", h.api_url))
        .send()
        .await?;
    assert_eq!(r.status(), 429);
    assert!(r.headers().get("retry-after").is_some());
    // health checks are never limited
    let r = h.http.get(format!("{}/healthz", h.api_url)).send().await?;
    assert_eq!(r.status(), 200);
    h.shutdown().await;
    Ok(())
}
