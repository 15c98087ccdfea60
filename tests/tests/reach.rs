//! Reaching the person, against real servers on loopback: Prosody (XMPP) with tocsin's
//! account and a user's, a real XMPP client logged in as the user, a Twilio-speaking SMS
//! endpoint, webhooks. Presence decides the channel, the policy's waits escalate, an ack from
//! IM or the signed link stops the rest, and a router restart neither loses nor repeats a
//! step.

use anyhow::{Context, Result, ensure};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tocsin_tests::{Harness, Recorder, Svc, twilio_path, use_twilio, xmpp_service};

use tocsin_model::Channel;
use tocsin_testkit::im::ImUser;
use tocsin_testkit::im::Show;
use tocsin_testkit::{Prosody, wait_for};

mod sms;

const SERVICE: &str = tocsin_tests::XMPP_SERVICE;

struct World {
    h: Harness,
    prosody: Prosody,
    twilio: Recorder,
    hooks: Recorder,
    token: String,
    ann: ImUser,
}

/// tocsin with the xmpp, sms and webhook channels; a user Ann with IM, SMS and two webhooks;
/// her policy: IM if present → first webhook, wait 2 s → SMS, wait 2 s → last webhook. Ann is
/// logged in and present.
async fn world(name: &str, tweak: impl FnOnce(&mut tocsin_tests::Settings)) -> Result<World> {
    let prosody = Prosody::start()?;
    let xmpp = xmpp_service(&prosody)?;
    prosody.register("ann", "ann-password")?;
    let twilio = Recorder::start().await?;
    let hooks = Recorder::start().await?;
    let h = Harness::start_with(name, |s| {
        s.delivery.channels = vec![Channel::Xmpp, Channel::Sms, Channel::Webhook];
        s.delivery.xmpp = xmpp;
        use_twilio(&mut s.delivery, &twilio);
        tweak(s);
    })
    .await?;
    let (_, token, _) = h.create_user("Ann").await?;
    let mut ids = Vec::new();
    for (channel, address) in [
        ("xmpp", "ann@localhost".to_owned()),
        ("sms", "+1 555 000 1111".to_owned()),
        ("webhook", hooks.url("/first")),
        ("webhook", hooks.url("/last")),
    ] {
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/destinations",
                Some(&token),
                Some(json!({"channel": channel, "address": address})),
            )
            .await?;
        ensure!(status == 201, "add {channel}: {status} {v}");
        ids.push(v["destination"]["id"].as_str().context("id")?.to_owned());
    }
    let policy = json!({"steps": [
        {"destinations": [ids[0]], "when": "present"},
        {"destinations": [ids[2]], "wait_secs": 2},
        {"destinations": [ids[1]], "wait_secs": 2},
        {"destinations": [ids[3]]},
    ]});
    let (status, v) = h
        .call(Method::PUT, "/v1/policy", Some(&token), Some(policy))
        .await?;
    ensure!(status == 200, "policy: {status} {v}");
    let ann = ImUser::login(&prosody.addr(), "ann@localhost", "ann-password").await?;
    ann.show(None);
    let w = World {
        h,
        prosody,
        twilio,
        hooks,
        token,
        ann,
    };
    w.wait_presence(true).await?;
    Ok(w)
}

impl World {
    async fn wait_presence(&self, present: bool) -> Result<()> {
        wait_for(
            Duration::from_secs(20),
            &format!("the avatar to see Ann present={present}"),
            || async {
                let (_, v) = self
                    .h
                    .call(Method::GET, "/v1/policy", Some(&self.token), None)
                    .await
                    .ok()?;
                (v["present"] == json!(present)).then_some(())
            },
        )
        .await
    }

    /// Replace Ann's escalation policy.
    async fn set_policy(&self, policy: Value) -> Result<()> {
        let (status, v) = self
            .h
            .call(Method::PUT, "/v1/policy", Some(&self.token), Some(policy))
            .await?;
        ensure!(status == 200, "policy: {status} {v}");
        Ok(())
    }

    async fn publish(&self, title: &str) -> Result<String> {
        let (status, v) = self
            .h
            .call(
                Method::POST,
                "/v1/publish",
                Some(&self.token),
                Some(json!({"title": title, "body": "details"})),
            )
            .await?;
        ensure!(status == 202, "publish: {status} {v}");
        Ok(v["id"].as_str().context("id")?.to_owned())
    }

    /// SMS bodies sent so far that mention `title`.
    fn sms_about(&self, title: &str) -> Vec<tocsin_tests::Recorded> {
        self.twilio
            .requests(&twilio_path())
            .into_iter()
            .filter(|r| r.form("Body").is_some_and(|b| b.contains(title)))
            .collect()
    }

    fn hooks_about(&self, path: &str, id: &str) -> Vec<tocsin_tests::Recorded> {
        self.hooks
            .requests(path)
            .into_iter()
            .filter(|r| r.text().contains(id))
            .collect()
    }

    /// The timeline of notification `id`, once it has an entry of `kind`.
    async fn timeline_with(&self, id: &str, kind: &str) -> Result<Vec<Value>> {
        self.timeline_on(id, kind, None).await
    }

    /// The timeline of notification `id`, once it has an entry of `kind` (on `channel`).
    async fn timeline_on(&self, id: &str, kind: &str, channel: Option<&str>) -> Result<Vec<Value>> {
        wait_for(
            Duration::from_secs(30),
            &format!("a {kind} entry ({channel:?}) in {id}'s timeline"),
            || async {
                let items = self.h.history(&self.token).await.ok()?;
                let item = items.iter().find(|i| i["notification"]["id"] == id)?;
                let t = item["timeline"].as_array()?.clone();
                t.iter()
                    .any(|e| e["kind"] == kind && channel.is_none_or(|c| e["channel"] == c))
                    .then_some(t)
            },
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn present_on_im_then_away_to_sms_acked_from_im_and_from_the_link() -> Result<()> {
    let mut w = world("reach", |_| {}).await?;

    // present: the IM arrives, with the way to acknowledge
    let n1 = w.publish("Disk full on db1").await?;
    let (from, body) = w.ann.next_message(Duration::from_secs(20)).await?;
    assert_eq!(from, SERVICE);
    assert!(body.starts_with("Disk full on db1\ndetails"), "{body}");
    assert!(body.contains("Reply \"ack 1\" to acknowledge"), "{body}");
    wait_for(Duration::from_secs(10), "the first webhook", || async {
        (!w.hooks_about("/first", &n1).is_empty()).then_some(())
    })
    .await?;
    // Ann answers over IM before the SMS step is due
    w.ann.say(SERVICE, "ack");
    let (_, answer) = w.ann.next_message(Duration::from_secs(10)).await?;
    assert_eq!(answer, "Acknowledged 1.");
    let t = w.timeline_with(&n1, "acked").await?;
    let acked = t.iter().find(|e| e["kind"] == "acked").unwrap();
    assert_eq!(acked["channel"], "xmpp");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        w.sms_about("Disk full").is_empty(),
        "an acked notification escalated to SMS"
    );
    assert!(w.hooks_about("/last", &n1).is_empty());

    // away: no IM; the first webhook at once, the SMS after the 2 s wait
    w.ann.show(Some(Show::Away));
    w.wait_presence(false).await?;
    let start = Instant::now();
    let n2 = w.publish("Server down").await?;
    let sms = wait_for(Duration::from_secs(15), "the SMS", || async {
        w.sms_about("Server down").first().cloned()
    })
    .await?;
    let waited = sms.at.duration_since(start);
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "the SMS came {waited:?} after the publish; the policy waits 2 s"
    );
    assert_eq!(w.hooks_about("/first", &n2).len(), 1);
    let body = sms.form("Body").unwrap();
    assert_eq!(sms.form("To").as_deref(), Some("+15550001111"));
    assert_eq!(sms.form("From").as_deref(), Some("+15550009999"));
    let link = body
        .lines()
        .find_map(|l| l.strip_prefix("Ack: "))
        .context("an ack link in the SMS")?
        .to_owned();
    assert!(
        link.starts_with(&format!("{}/v1/ack/", w.h.api_url)),
        "{link}"
    );
    // a tampered link is refused; a GET only shows the button; the POST acknowledges
    let last = if link.ends_with('0') { '1' } else { '0' };
    let tampered = format!("{}{last}", &link[..link.len() - 1]);
    let r = w.h.http.post(&tampered).send().await?;
    assert_eq!(r.status(), 404);
    let r = w.h.http.get(&link).send().await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains("<form method=\"post\">"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !w.timeline_with(&n2, "routed")
            .await?
            .iter()
            .any(|e| e["kind"] == "acked"),
        "a GET acknowledged"
    );
    let r = w.h.http.post(&link).send().await?;
    assert_eq!(r.status(), 200);
    let t = w.timeline_with(&n2, "acked").await?;
    assert!(
        t.iter()
            .any(|e| e["kind"] == "acked" && e["detail"].as_str().unwrap().starts_with("via link"))
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        w.hooks_about("/last", &n2).is_empty(),
        "the step after the ack was sent"
    );
    assert_eq!(w.sms_about("Server down").len(), 1);
    let ims: Vec<String> = w.ann.received().into_iter().map(|(_, b)| b).collect();
    assert!(
        !ims.iter().any(|b| b.contains("Server down")),
        "IM while away: {ims:?}"
    );
    w.h.shutdown().await;
    drop(w.prosody);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_killed_while_an_escalation_waits_fires_the_step_once() -> Result<()> {
    let mut w = world("reach-restart", |_| {}).await?;
    w.ann.show(Some(Show::Xa));
    w.wait_presence(false).await?;
    let n = w.publish("Backup failed").await?;
    wait_for(Duration::from_secs(10), "the first webhook", || async {
        (!w.hooks_about("/first", &n).is_empty()).then_some(())
    })
    .await?;
    // the SMS step is due 2 s from now: the router is gone until well after that. It is
    // killed once the notification's routing is durable (a kill in the middle of routing
    // routes it again after the restart, which adds a second "escalated" entry to the
    // timeline — a different test's matter)
    w.h.wait_routers_settled().await?;
    w.h.kill(Svc::Router).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(w.sms_about("Backup failed").is_empty());
    let restarted = Instant::now();
    w.h.start_service(Svc::Router);
    let sms = wait_for(
        Duration::from_secs(15),
        "the SMS after the restart",
        || async { w.sms_about("Backup failed").first().cloned() },
    )
    .await?;
    let late = sms.at.duration_since(restarted);
    assert!(
        late < Duration::from_secs(5),
        "fired {late:?} after the restart"
    );
    // and once: the timer ticks again later, the avatar finds nothing due
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(w.sms_about("Backup failed").len(), 1);
    // the last step, 2 s after the SMS, also once
    assert_eq!(w.hooks_about("/last", &n).len(), 1);
    let t = w.timeline_with(&n, "escalated").await?;
    let escalations = t.iter().filter(|e| e["kind"] == "escalated").count();
    assert_eq!(escalations, 3, "{t:?}");
    w.h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_are_retried_and_a_permanent_failure_moves_on_at_once() -> Result<()> {
    let mut w = world("reach-outage", |s| {
        // give the XMPP reconnect time before a job gives up
        s.bus.max_deliver = 10;
    })
    .await?;

    // the SMS provider answers 503 for a while
    w.ann.show(Some(Show::Away));
    w.wait_presence(false).await?;
    w.twilio.answer(
        &twilio_path(),
        503,
        r#"{"code":20500,"message":"Internal Server Error"}"#,
    );
    let n1 = w.publish("Queue backlog").await?;
    wait_for(
        Duration::from_secs(15),
        "two failed SMS attempts",
        || async { (w.sms_about("Queue backlog").len() >= 2).then_some(()) },
    )
    .await?;
    w.twilio
        .answer(&twilio_path(), 201, r#"{"sid":"SM1","status":"queued"}"#);
    let before = w.sms_about("Queue backlog").len();
    w.timeline_on(&n1, "delivered", Some("sms")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        w.sms_about("Queue backlog").len(),
        before + 1,
        "sent once after the outage"
    );

    // a number Twilio will never reach: the next step goes out without the SMS step's 20 s wait
    let policy = json!({"steps": [
        {"channels": ["xmpp"], "when": "present"},
        {"channels": ["sms"], "wait_secs": 20},
        {"channels": ["webhook"]},
    ]});
    w.set_policy(policy).await?;
    w.twilio.answer(
        &twilio_path(),
        400,
        r#"{"code":21211,"message":"The 'To' number +15550001111 is not a valid phone number."}"#,
    );
    let n2 = w.publish("Cert expiring").await?;
    let sms = wait_for(Duration::from_secs(15), "the refused SMS", || async {
        w.sms_about("Cert expiring").first().cloned()
    })
    .await?;
    let last = wait_for(Duration::from_secs(15), "the last webhook", || async {
        w.hooks_about("/last", &n2).first().cloned()
    })
    .await?;
    let gap = last.at.duration_since(sms.at);
    assert!(gap < Duration::from_secs(10), "moved on after {gap:?}");
    assert_eq!(
        w.sms_about("Cert expiring").len(),
        1,
        "a permanent failure is not retried"
    );
    let t = w.timeline_with(&n2, "failed").await?;
    let failed = t.iter().find(|e| e["kind"] == "failed").unwrap();
    assert!(
        failed["detail"].as_str().unwrap().contains("21211"),
        "{failed}"
    );

    // the XMPP server goes away while Ann is present; the IM is delivered once it is back
    w.ann.show(None);
    w.wait_presence(true).await?;
    w.twilio
        .answer(&twilio_path(), 201, r#"{"sid":"SM2","status":"queued"}"#);
    w.prosody.kill();
    let n3 = w.publish("Payment received").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.prosody.restart()?;
    // Ann's client logs in again (tokio-xmpp, like tocsin's, cannot resume a session the
    // restarted server forgot; tocsin notices through its keep-alive ping and logs in anew)
    w.ann = ImUser::login(&w.prosody.addr(), "ann@localhost", "ann-password").await?;
    w.ann.show(None);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && !seen.iter().any(|b: &String| b.contains("Payment received"))
    {
        if let Ok((_, b)) = w.ann.next_message(Duration::from_secs(2)).await {
            seen.push(b);
        }
    }
    assert!(
        seen.iter().any(|b| b.contains("Payment received")),
        "IM after the outage: {seen:?}"
    );
    w.timeline_on(&n3, "delivered", Some("xmpp")).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    seen.extend(w.ann.received().into_iter().map(|(_, b)| b));
    assert_eq!(
        seen.iter()
            .filter(|b| b.contains("Payment received"))
            .count(),
        1,
        "{seen:?}"
    );
    w.h.shutdown().await;
    Ok(())
}

/// Twilio's request signature, computed the way Twilio documents it: base64 HMAC-SHA1 keyed by
/// the auth token over the URL followed by each POST parameter's name and value, sorted.
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_sms_replies_and_im_commands() -> Result<()> {
    const INBOUND: &str = "twilio-inbound-auth-token";
    let mut w = world("reach-replies", |s| {
        s.delivery.channels.push(Channel::Push);
        s.api.twilio_auth_token = INBOUND.into();
        s.api.sms_inbound_token = "kannel-inbound-token".into();
    })
    .await?;
    let mut ids = Vec::new();
    for (address, format) in [
        (w.hooks.url("/ntfy/alerts-ann"), "ntfy"),
        (w.hooks.url("/up/endpoint-1"), "unifiedpush"),
    ] {
        let (status, v) = w
            .h
            .call(
                Method::POST,
                "/v1/destinations",
                Some(&w.token),
                Some(json!({"channel": "push", "address": address, "push_format": format, "secret": "ntfy-access-token"})),
            )
            .await?;
        ensure!(status == 201, "add push: {status} {v}");
        ids.push(v["destination"]["id"].as_str().unwrap().to_owned());
    }
    // push at once; SMS after a second; the last webhook 30 s later (never, if acked)
    let policy = json!({"steps": [
        {"channels": ["push"], "wait_secs": 1},
        {"channels": ["sms"], "wait_secs": 30},
        {"channels": ["webhook"]},
    ]});
    w.set_policy(policy).await?;
    let (status, v) =
        w.h.call(
            Method::PUT,
            "/v1/policy",
            Some(&w.token),
            Some(json!({"steps": [{"destinations": ["nope"]}]})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "steps[0].destinations", "{v}");

    let (status, v) = w
        .h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&w.token),
            Some(json!({"title": "Water leak", "body": "basement sensor", "priority": 5, "click_url": "https://example.org/s/1"})),
        )
        .await?;
    ensure!(status == 202, "{v}");
    let n1 = v["id"].as_str().unwrap().to_owned();
    let ntfy = wait_for(Duration::from_secs(15), "the ntfy publish", || async {
        w.hooks.requests("/ntfy/").first().cloned()
    })
    .await?;
    let m: Value = serde_json::from_slice(&ntfy.body)?;
    assert_eq!(m["topic"], "alerts-ann");
    assert_eq!(m["title"], "Water leak");
    assert_eq!(m["message"], "basement sensor");
    assert_eq!(m["priority"], 5);
    assert_eq!(m["click"], "https://example.org/s/1");
    assert_eq!(m["actions"][0]["method"], "POST");
    assert!(
        m["actions"][0]["url"]
            .as_str()
            .unwrap()
            .contains("/v1/ack/")
    );
    assert_eq!(
        ntfy.headers["authorization"].to_str()?,
        "Bearer ntfy-access-token"
    );
    let up = wait_for(
        Duration::from_secs(15),
        "the UnifiedPush message",
        || async { w.hooks.requests("/up/endpoint-1").first().cloned() },
    )
    .await?;
    assert_eq!(up.headers["urgency"].to_str()?, "high");
    let m: Value = serde_json::from_slice(&up.body)?;
    assert_eq!(m["id"], n1.as_str());
    assert!(up.body.len() <= 4096);
    wait_for(Duration::from_secs(15), "the SMS", || async {
        w.sms_about("Water leak").first().cloned()
    })
    .await?;

    // SMS replies: a forged signature and a stranger change nothing; Ann's ACK acknowledges
    let url = format!("{}/v1/sms/twilio", w.h.api_url);
    let post = |params: Vec<(&'static str, String)>, sig: String| {
        let http = w.h.http.clone();
        let url = url.clone();
        async move {
            http.post(&url)
                .header("x-twilio-signature", sig)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(params.iter())
                        .finish(),
                )
                .send()
                .await
        }
    };
    let ann_says = vec![
        ("From", "+15550001111".to_owned()),
        ("To", "+15550009999".to_owned()),
        ("Body", "ACK".to_owned()),
        ("MessageSid", "SM0001".to_owned()),
    ];
    let r = post(ann_says.clone(), "Zm9yZ2Vk".into()).await?;
    assert_eq!(r.status(), 403);
    let stranger = vec![
        ("From", "+15557770000".to_owned()),
        ("Body", "ack all".to_owned()),
        ("MessageSid", "SM0002".to_owned()),
    ];
    let p: Vec<(&str, &str)> = stranger.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post(stranger.clone(), twilio_signature(INBOUND, &url, &p)).await?;
    assert_eq!(r.status(), 200);
    let p: Vec<(&str, &str)> = ann_says.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = post(ann_says.clone(), twilio_signature(INBOUND, &url, &p)).await?;
    assert_eq!(r.status(), 200);
    assert!(r.text().await?.contains("<Response>"));
    let t = w.timeline_on(&n1, "acked", Some("sms")).await?;
    assert_eq!(t.iter().filter(|e| e["kind"] == "acked").count(), 1);
    // Kannel's inbound form: a wrong token is refused
    let kannel = |token: &str| {
        format!(
            "{}/v1/sms/kannel?token={token}&from=15550001111&text=ack%20all&time=1",
            w.h.api_url
        )
    };
    assert_eq!(w.h.http.get(kannel("wrong")).send().await?.status(), 403);
    assert_eq!(
        w.h.http
            .get(kannel("kannel-inbound-token"))
            .send()
            .await?
            .status(),
        204
    );

    // IM commands

    assert!(ask(&mut w.ann, "help").await?.starts_with("Commands: ack"));
    let status = ask(&mut w.ann, "status").await?;
    assert!(
        status.starts_with("You are present, not muted; 0 notification(s) waiting"),
        "{status}"
    );
    assert!(ask(&mut w.ann, "mute 1h").await?.starts_with("Muted until"));
    assert!(
        ask(&mut w.ann, "list")
            .await?
            .starts_with("Nothing is waiting")
    );
    assert!(
        ask(&mut w.ann, "frobnicate")
            .await?
            .starts_with("I did not understand \"frobnicate\"")
    );
    // muted: a normal notification is only kept in history
    let n2 = w.publish("Newsletter").await?;
    let t = w.timeline_with(&n2, "routed").await?;
    assert!(
        t[0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("kept in history: muted until"),
        "{t:?}"
    );
    assert!(ask(&mut w.ann, "unmute").await?.starts_with("Unmuted"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(w.hooks_about("/ntfy/", &n2).is_empty());
    assert!(
        w.hooks_about("/last", &n1).is_empty(),
        "escalated after the SMS ack"
    );
    w.h.shutdown().await;
    Ok(())
}

/// Write `text` to tocsin over IM and return its answer.
async fn ask(ann: &mut ImUser, text: &str) -> Result<String> {
    ann.say(SERVICE, text);
    Ok(ann.next_message(Duration::from_secs(10)).await?.1)
}
