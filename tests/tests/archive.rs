//! The event archive end to end: a scripted workload through the real pipeline is archived
//! as Parquet, and `tocsin analytics` reports exactly its counts; an archiver killed again
//! and again mid-file leaves every event in the archive exactly once (each event of each
//! stream message, alone or in an envelope); foreign and damaged
//! files are reported and skipped.

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use tocsin_archiver::analytics::{self, Options, Row};
use tocsin_archiver::store::{Archive, S3Options};
use tocsin_archiver::table;
use tocsin_model::Channel;
use tocsin_testkit::wait_for;
use tocsin_tests::{Harness, Recorder, Svc};

fn archive(h: &Harness) -> Archive {
    Archive::open(&h.archiver.target, &S3Options::default()).expect("archive")
}

/// Every row of the archive: (stream sequence, event id, kind).
async fn rows(a: &Archive) -> Result<Vec<(u64, String, String)>> {
    let mut out = Vec::new();
    for f in a.list().await? {
        if f.name.is_none() {
            continue;
        }
        let bytes = a.get(&f.relative).await?;
        for c in table::read_columns(bytes, &["seq", "id", "kind"])? {
            let (seq, id, kind) = (
                c.seq.as_ref().context("seq")?,
                c.text("id").context("id")?,
                c.text("kind").context("kind")?,
            );
            for i in 0..c.rows {
                out.push((
                    seq.value(i),
                    id.value(i).to_owned(),
                    kind.value(i).to_owned(),
                ));
            }
        }
    }
    Ok(out)
}

/// Every event the event stream holds, as (stream sequence, event id): a message carries one
/// event or an envelope of them. Fails if the stream lost a message (limits retention keeps
/// them all).
async fn stream_events(h: &Harness) -> Result<Vec<(u64, String)>> {
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let name = bus.subjects().stream(tocsin_bus::StreamKind::Events);
    let mut s = bus.jetstream().get_stream(&name).await?;
    let info = s.info().await?;
    ensure!(
        info.state.messages == info.state.last_sequence,
        "the event stream lost messages: {} held, last sequence {}",
        info.state.messages,
        info.state.last_sequence
    );
    let mut out = Vec::new();
    for seq in 1..=info.state.last_sequence {
        let m = s.get_raw_message(seq).await?;
        for r in tocsin_bus::envelope::records(&m.payload)? {
            let e: tocsin_model::Event = serde_json::from_slice(&r.payload)?;
            out.push((seq, e.id));
        }
    }
    Ok(out)
}

/// The report's `all` rows summed over days (a run may cross midnight UTC), and its rows per
/// channel summed likewise.
fn totals(rows: &[Row]) -> BTreeMap<String, Row> {
    let mut out: BTreeMap<String, Row> = BTreeMap::new();
    for r in rows {
        let t = out.entry(r.channel.clone()).or_default();
        t.ingested += r.ingested;
        t.matched += r.matched;
        t.routed += r.routed;
        t.attempts += r.attempts;
        t.delivered += r.delivered;
        t.failed += r.failed;
        t.escalated += r.escalated;
        t.acked += r.acked;
        t.resolved += r.resolved;
        t.silenced += r.silenced;
        t.delivery_p50_ms = t.delivery_p50_ms.or(r.delivery_p50_ms);
        t.ack_p50_ms = t.ack_p50_ms.or(r.ack_p50_ms);
    }
    out
}

/// An alert's lifecycle is counted: one resolved while it escalated, one kept from everyone by
/// a silence, one whose escalation a new silence stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analytics_counts_resolved_and_silenced_alerts() -> Result<()> {
    let hooks = Recorder::start().await?;
    let mut h = Harness::start_with("archive-lifecycle", |s| {
        s.delivery.channels = vec![Channel::Webhook];
    })
    .await?;
    h.start_service(Svc::Archiver);
    let (_, token, _) = h.create_user("Ann").await?;
    let mut ids = Vec::new();
    for path in ["/now", "/later"] {
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/destinations",
                Some(&token),
                Some(json!({"channel": "webhook", "address": hooks.url(path)})),
            )
            .await?;
        ensure!(status == 201, "add {path}: {status} {v}");
        ids.push(v["destination"]["id"].as_str().context("id")?.to_owned());
    }
    let policy = json!({"steps": [
        {"destinations": [ids[0]], "wait_secs": 3600},
        {"destinations": [ids[1]]},
    ]});
    let (status, v) = h
        .call(Method::PUT, "/v1/policy", Some(&token), Some(policy))
        .await?;
    ensure!(status == 200, "policy: {status} {v}");
    let silence = |body: serde_json::Value| {
        let (h, token) = (&h, &token);
        async move {
            let (status, v) = h
                .call(Method::POST, "/v1/silences", Some(token), Some(body))
                .await?;
            ensure!(status == 201, "silence: {status} {v}");
            Ok(())
        }
    };
    // resolved while it escalates
    h.publish(&token, json!({"title": "disk full", "dedup_key": "disk"}))
        .await?;
    // escalating when a silence on its tag arrives
    h.publish(&token, json!({"title": "backup late", "tags": ["backup"]}))
        .await?;
    wait_for(Duration::from_secs(15), "both first pages", || async {
        (hooks.requests("/now").len() == 2).then_some(())
    })
    .await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            Some(json!({"dedup_key": "disk", "resolve": true})),
        )
        .await?;
    ensure!(status.is_success(), "resolve: {status} {v}");
    silence(json!({"tag": "backup", "for": "2h"})).await?;
    // kept from everyone by the silence
    h.publish(
        &token,
        json!({"title": "backup later still", "tags": ["backup"]}),
    )
    .await?;
    let a = archive(&h);
    let report = wait_for(
        Duration::from_secs(30),
        "the archive to hold the lifecycle",
        || async {
            let r = analytics::report(&a, &Options::default()).await.ok()?;
            totals(&r.rows)
                .get("all")
                .filter(|t| t.routed == 3 && t.resolved == 1 && t.silenced == 2)
                .map(|_| r)
        },
    )
    .await?;
    let csv = analytics::render(&report, analytics::Format::Csv, false);
    let header = csv.lines().next().unwrap_or_default();
    assert!(
        header.ends_with(",resolved,silenced,heartbeat_missed,grouped"),
        "{csv}"
    );
    assert_eq!(
        hooks.requests("/now").len(),
        2,
        "the silenced one reached no one"
    );
    assert!(hooks.requests("/later").is_empty(), "nothing escalated");
    h.shutdown().await;
    Ok(())
}

/// Ten notifications to Ann, whose policy sends each to two webhooks at once — one accepts,
/// one answers 404 — and after 4 s to a third. She acknowledges four before the wait ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn analytics_reports_exactly_what_a_scripted_workload_did() -> Result<()> {
    let hooks = Recorder::start().await?;
    hooks.answer("/gone", 404, r#"{"error":"no such hook"}"#);
    let mut h = Harness::start_with("archive-analytics", |s| {
        s.delivery.channels = vec![Channel::Webhook];
    })
    .await?;
    h.start_service(Svc::Archiver);
    let (_, token, _) = h.create_user("Ann").await?;
    let mut ids = Vec::new();
    for path in ["/ok", "/gone", "/later"] {
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/destinations",
                Some(&token),
                Some(json!({"channel": "webhook", "address": hooks.url(path)})),
            )
            .await?;
        ensure!(status == 201, "add {path}: {status} {v}");
        ids.push(v["destination"]["id"].as_str().context("id")?.to_owned());
    }
    let policy = json!({"steps": [
        {"destinations": [ids[0], ids[1]], "wait_secs": 4},
        {"destinations": [ids[2]]},
    ]});
    let (status, v) = h
        .call(Method::PUT, "/v1/policy", Some(&token), Some(policy))
        .await?;
    ensure!(status == 200, "policy: {status} {v}");
    let mut notifications = Vec::new();
    for i in 0..10 {
        notifications.push(
            h.publish(&token, json!({"title": format!("alert {i}")}))
                .await?,
        );
    }
    wait_for(
        Duration::from_secs(15),
        "both first-step webhooks",
        || async {
            (hooks.requests("/ok").len() == 10 && hooks.requests("/gone").len() == 10).then_some(())
        },
    )
    .await?;
    for id in &notifications[..4] {
        let (status, v) = h
            .call(
                Method::POST,
                &format!("/v1/notifications/{id}/ack"),
                Some(&token),
                None,
            )
            .await?;
        ensure!(status.is_success(), "ack: {status} {v}");
    }
    wait_for(Duration::from_secs(20), "the escalations", || async {
        (hooks.requests("/later").len() == 6).then_some(())
    })
    .await?;

    let a = archive(&h);
    let expected_all = |t: &Row| {
        t.ingested == 10
            && t.matched == 10
            && t.routed == 10
            && t.attempts == 26
            && t.delivered == 16
            && t.failed == 10
            && t.escalated == 6
            && t.acked == 4
    };
    let report = wait_for(
        Duration::from_secs(30),
        "the archive to hold the workload",
        || async {
            let r = analytics::report(&a, &Options::default()).await.ok()?;
            totals(&r.rows)
                .get("all")
                .filter(|t| expected_all(t))
                .map(|_| r)
        },
    )
    .await?;
    print!(
        "{}",
        analytics::render(&report, analytics::Format::Table, false)
    );
    let t = totals(&report.rows);
    let all = &t["all"];
    let webhook = &t["webhook"];
    assert_eq!(
        (
            webhook.attempts,
            webhook.delivered,
            webhook.failed,
            webhook.escalated
        ),
        (26, 16, 10, 6),
        "{report:#?}"
    );
    // acks through the API come through no channel: counted in `all` only
    assert_eq!(webhook.acked, 0);
    assert!(
        all.delivery_p50_ms.is_some() && all.ack_p50_ms.is_some(),
        "{report:#?}"
    );
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    let day_rows: Vec<&Row> = report.rows.iter().filter(|r| r.channel == "all").collect();
    if day_rows.len() == 1 {
        assert_eq!(day_rows[0].ack_rate, Some(0.4));
    }
    // the configuration changes are in the archive too, each once
    let kinds = rows(&a).await?;
    let count = |k: &str| kinds.iter().filter(|r| r.2 == k).count();
    assert_eq!(count("user_created"), 1);
    assert_eq!(count("destination_changed"), 3);
    assert_eq!(count("policy_changed"), 1);

    // the same report as CSV and JSON
    let csv = analytics::render(&report, analytics::Format::Csv, false);
    assert!(csv.starts_with("day,channel,ingested,"), "{csv}");
    assert!(
        csv.lines()
            .any(|l| l.contains(",webhook,,,,,26,16,10,6,0,")),
        "{csv}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&analytics::render(&report, analytics::Format::Json, false))?;
    assert_eq!(
        json["rows"].as_array().map(Vec::len),
        Some(report.rows.len())
    );
    // per user: Ann's rows carry her id
    let by_user = analytics::report(
        &a,
        &Options {
            by_user: true,
            ..Default::default()
        },
    )
    .await?;
    assert!(
        by_user
            .rows
            .iter()
            .any(|r| r.channel == "webhook" && r.user.is_some())
    );

    // a foreign file and a damaged archive file are reported and skipped
    let root = std::path::PathBuf::from(&h.archiver.target);
    std::fs::write(root.join("notes.txt"), "not an archive file")?;
    let first = a
        .list()
        .await?
        .into_iter()
        .find(|f| f.name.is_some())
        .context("a file")?;
    let name = first.name.clone().context("name")?;
    let damaged = tocsin_archiver::store::FileName {
        first_seq: 900_000,
        last_seq: 900_001,
        ..name
    };
    let whole = a.get(&first.relative).await?;
    std::fs::write(root.join(damaged.relative()), &whole[..whole.len() / 2])?;
    let again = analytics::report(&a, &Options::default()).await?;
    assert_eq!(totals(&again.rows)["all"].delivered, 16);
    let skipped: Vec<&str> = again.skipped.iter().map(|s| s.file.as_str()).collect();
    assert_eq!(
        skipped,
        vec![damaged.relative().as_str(), "notes.txt"],
        "{again:#?}"
    );
    let text = analytics::render(&again, analytics::Format::Table, false);
    assert!(
        text.contains("skipped notes.txt: not an archive file"),
        "{text}"
    );
    h.shutdown().await;
    Ok(())
}

/// The archiver is killed three times while events flow (one file per 40 events, so kills
/// land between writing a file and acking its events, too). Afterwards the archive holds
/// every event of the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_archiver_killed_mid_file_loses_and_repeats_nothing() -> Result<()> {
    let hooks = Recorder::start().await?;
    let mut h = Harness::start_with("archive-kill", |s| {
        s.delivery.channels = vec![Channel::Webhook];
    })
    .await?;
    h.archiver.roll_max_events = 40;
    h.start_service(Svc::Archiver);
    let (_, token, _) = h.create_user("Bea").await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "webhook", "address": hooks.url("/bea")})),
        )
        .await?;
    ensure!(status == 201, "{status} {v}");
    for round in 0..4 {
        for i in 0..60 {
            h.publish(&token, json!({"title": format!("round {round} item {i}")}))
                .await?;
        }
        if round < 3 {
            tokio::time::sleep(Duration::from_millis(150 + 100 * round)).await;
            h.kill(Svc::Archiver).await;
            h.start_service(Svc::Archiver);
        }
    }
    wait_for(Duration::from_secs(20), "every delivery", || async {
        (hooks.requests("/bea").len() == 240).then_some(())
    })
    .await?;
    let a = archive(&h);
    // 240 notifications × (ingested, matched, routed, delivered) + the setup
    let events = wait_for(Duration::from_secs(30), "the stream to settle", || async {
        let e = stream_events(&h).await.ok()?;
        (e.len() >= 240 * 4 + 2).then_some(e)
    })
    .await?;
    let archived = wait_for(
        Duration::from_secs(40),
        "the archive to catch up",
        || async {
            let r = rows(&a).await.ok()?;
            (r.len() >= events.len()).then_some(r)
        },
    )
    .await?;
    let mut got: Vec<(u64, &str)> = archived.iter().map(|r| (r.0, r.1.as_str())).collect();
    got.sort_unstable();
    let mut expected: Vec<(u64, &str)> = events.iter().map(|(s, id)| (*s, id.as_str())).collect();
    expected.sort_unstable();
    assert_eq!(got, expected, "every event of the stream exactly once");
    let mut ids: Vec<&str> = archived.iter().map(|r| r.1.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), archived.len(), "no event id twice");
    // nothing more arrives later (a straggling duplicate)
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rows(&a).await?.len(), archived.len());
    h.shutdown().await;
    Ok(())
}
