//! SMS through a real Kannel gateway, in Reaching the person's world (`super::world`): the
//! notification goes out through Kannel's sendsms, the phone's answer comes back through its
//! MO URL, and what is refused on the way is said to the user.

use super::{World, world};
use anyhow::Result;
use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::Svc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_through_a_real_kannel_gateway_and_an_ack_from_the_phone() -> Result<()> {
    let mut w = world("reach-kannel", |s| {
        s.api.sms_inbound_token = "kannel-inbound-token".into();
    })
    .await?;
    let mo = format!(
        "{}/v1/sms/kannel?token=kannel-inbound-token&from=%p&text=%a&time=%t",
        w.h.api_url
    );
    let mut kannel = tocsin_testkit::Kannel::start(&mo)?;
    w.h.stop(Svc::Delivery).await;
    w.h.delivery.sms = tocsin_delivery::sms::SmsConfig {
        provider: tocsin_delivery::sms::SmsProvider::Kannel,
        kannel_url: kannel.sendsms_url(),
        kannel_username: kannel.username.clone(),
        kannel_password: kannel.password.clone(),
        kannel_from: "12345".into(),
        rate_per_sec: 0.0,
        ..Default::default()
    };
    w.h.start_service(Svc::Delivery);
    let policy = json!({"steps": [
        {"channels": ["sms"], "wait_secs": 20},
        {"channels": ["webhook"]},
    ]});
    w.set_policy(policy).await?;
    let n = w.publish("Freezer temperature high").await?;
    let line = wait_for(
        Duration::from_secs(20),
        "the SMS at the fake SMSC",
        || async {
            kannel
                .delivered()
                .into_iter()
                .find(|l| l.contains("Freezer temperature high"))
        },
    )
    .await?;
    assert!(line.contains("+15550001111"), "{line}");
    let t = w.timeline_on(&n, "delivered", Some("sms")).await?;
    let d = t
        .iter()
        .find(|e| e["kind"] == "delivered" && e["channel"] == "sms")
        .unwrap();
    assert!(
        d["detail"]
            .as_str()
            .unwrap()
            .contains("Accepted for delivery"),
        "{d}"
    );
    // Ann answers from her phone; Kannel passes it to the API, the escalation stops
    kannel.phone_sends("15550001111", "ack")?;
    let t = w.timeline_on(&n, "acked", Some("sms")).await?;
    assert!(t.iter().any(|e| e["kind"] == "acked"));
    let (_, v) =
        w.h.call(Method::GET, "/v1/policy", Some(&w.token), None)
            .await?;
    assert_eq!(v["pending_escalations"], 0, "{v}");
    assert!(w.hooks_about("/first", &n).is_empty() && w.hooks_about("/last", &n).is_empty());

    // a sender number can be forged: a reply that changes settings needs Ann's reply PIN.
    // Without one set, and with a wrong one, nothing changes and her history says why.
    kannel.phone_sends("15550001111", "mute 30d")?;
    let why = sms_refusals(&w, 1).await?;
    assert!(why[0].contains("PUT /v1/me/reply-pin"), "{why:?}");
    let pin = |pin: &str| json!({ "pin": pin });
    let (status, v) =
        w.h.call(
            Method::PUT,
            "/v1/me/reply-pin",
            Some(&w.token),
            Some(pin("12")),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), v["error"]["field"].as_str()),
        (400, Some("pin"))
    );
    let (status, _) =
        w.h.call(
            Method::PUT,
            "/v1/me/reply-pin",
            Some(&w.token),
            Some(pin("4821")),
        )
        .await?;
    assert_eq!(status, 204);
    let (_, me) =
        w.h.call(Method::GET, "/v1/me", Some(&w.token), None)
            .await?;
    assert_eq!(me["reply_pin"], true);
    kannel.phone_sends("15550001111", "1111 mute 30d")?;
    let why = sms_refusals(&w, 2).await?;
    assert_eq!(why[0], "the reply PIN was wrong");
    let (_, v) =
        w.h.call(Method::GET, "/v1/policy", Some(&w.token), None)
            .await?;
    assert!(
        v["muted_until_ms"].is_null(),
        "muted by a refused reply: {v}"
    );
    // with the PIN, the same reply mutes her
    kannel.phone_sends("15550001111", "4821 mute 30d")?;
    wait_for(
        Duration::from_secs(20),
        "muted by the reply with the PIN",
        || async {
            let (_, v) =
                w.h.call(Method::GET, "/v1/policy", Some(&w.token), None)
                    .await
                    .ok()?;
            v["muted_until_ms"].as_i64()
        },
    )
    .await?;
    assert_eq!(sms_refusals(&w, 2).await?.len(), 2);
    w.h.shutdown().await;
    Ok(())
}

/// The reasons of the SMS replies refused in the user's history once there are `n`, newest
/// first.
async fn sms_refusals(w: &World, n: usize) -> Result<Vec<String>> {
    wait_for(
        Duration::from_secs(20),
        &format!("{n} refused SMS replies in history"),
        || async {
            let items = w.h.history(&w.token).await.ok()?;
            let why: Vec<String> = items
                .iter()
                .map(|i| &i["notification"])
                .filter(|n| {
                    n["title"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("Refused an SMS reply from"))
                })
                .map(|n| n["body"].as_str().unwrap_or_default().to_owned())
                .collect();
            (why.len() >= n).then_some(why)
        },
    )
    .await
}
