//! The fault suite: while a few thousand notifications flow, every service — each its own OS
//! process, `tocsin-<service>` with a configuration file — is killed in turn with SIGKILL and
//! started again, the nats-server is killed with SIGKILL and restarted, and the webhook target
//! answers 503 for a while. Afterwards every notification was delivered exactly once — save
//! the few in flight at the moment delivery itself was killed, repeated with the same
//! `X-Tocsin-Id` — and is in history exactly once, checked by id.
//!
//! A second run sends every notification by e-mail, instant message and SMS at once while
//! each target goes away for a while: the SMTP server (aiosmtpd) and the XMPP server (Prosody)
//! are killed with SIGKILL and started again, and the SMS provider (a Twilio-speaking server on
//! loopback) answers 503. Afterwards each notification reached each channel exactly once —
//! save a message the killed server took in without confirming it, resent with the same
//! `Message-ID` or stanza id — and is in history exactly once, with one acknowledgement from
//! the XMPP server (XEP-0198) per IM. The IM accounts are not logged in during the run; what
//! the server accepted waits in their offline stores (on disk, so a kill keeps it) and is read
//! back by logging each account in at the end.
//!
//! The long versions (`TOCSIN_FAULTS_LONG=1`) publish ten times as many and repeat the
//! round of kills three times.

use anyhow::{Context, Result};
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tocsin_model::Channel;
use tocsin_testkit::im::ImUser;
use tocsin_testkit::{Prosody, SmtpSink, free_port, wait_for};
use tocsin_tests::workload::Workload;
use tocsin_tests::{Harness, Recorder, Svc, smtp_out, twilio_path, use_twilio, xmpp_service};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_killed_in_turn_loses_and_doubles_nothing() -> Result<()> {
    let long = std::env::var_os("TOCSIN_FAULTS_LONG").is_some();
    let (step, rounds) = if long { (1_000, 3) } else { (150, 1) };
    let mut h = Harness::start_with("faults", |s| {
        // each service its own process: a kill is SIGKILL
        s.processes = true;
        s.bus.max_deliver = 20;
        s.delivery.concurrency = 4;
    })
    .await?;
    let mut w = Workload::users(&h, 2).await?;
    w.start(&h, Duration::from_millis(2));
    w.advance(step).await?;
    let mut delivery_kills = 0;
    for _ in 0..rounds {
        for svc in [Svc::Router, Svc::History, Svc::Delivery, Svc::Ingestor] {
            h.kill(svc).await;
            eprintln!("{svc:?} killed at {:.3}s", w.elapsed().as_secs_f64());
            w.advance(step).await?;
            h.start_service(svc);
            w.advance(step).await?;
            delivery_kills += usize::from(svc == Svc::Delivery);
        }
        // the bus itself: SIGKILL, store kept, restarted on the same port
        let nats = h.nats.as_mut().expect("one nats-server");
        nats.kill();
        eprintln!("nats-server killed at {:.3}s", w.elapsed().as_secs_f64());
        nats.restart()?;
        w.advance(step).await?;
        // the target refuses for a while: deliveries wait and retry, nothing is dropped
        for u in &w.users {
            w.hooks.answer(&u.path, 503, "{}");
        }
        w.advance(step).await?;
        for u in &w.users {
            w.hooks.answer(&u.path, 200, "{}");
        }
        w.advance(step).await?;
    }
    let n = w.finish().await?;
    eprintln!("{n} notifications published through the faults");
    // at most the jobs sent but not yet settled at each delivery kill: a destination's jobs go
    // out one at a time, so one per destination (here one per user) per kill
    w.assert_each_delivered(&h, delivery_kills * w.users.len())
        .await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_target_down_for_a_while_loses_and_doubles_nothing() -> Result<()> {
    let long = std::env::var_os("TOCSIN_FAULTS_LONG").is_some();
    let (step, rounds) = if long { (600, 3) } else { (60, 1) };
    let im_pw = "im-password";
    let mut prosody = Prosody::start()?;
    let xmpp = xmpp_service(&prosody)?;
    let mut smtp = SmtpSink::start(free_port())?;
    let twilio = Recorder::start().await?;
    let h = Harness::start_with("faults-targets", |s| {
        s.bus.max_deliver = 30;
        s.delivery.channels = vec![Channel::Email, Channel::Xmpp, Channel::Sms];
        s.delivery.smtp = smtp_out(smtp.port);
        s.delivery.xmpp = xmpp;
        use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    // one user per silo; each notification goes to the user's mailbox, IM account and phone,
    // all in the policy's one step
    let mut w = Workload::users_with(&h, 1, Recorder::start().await?, |path| {
        let n: u32 = path.trim_start_matches("/u").parse().expect("/u<n>");
        prosody
            .register(&format!("u{n}"), im_pw)
            .expect("an IM account");
        vec![
            json!({"channel": "email", "address": format!("u{n}@example.org")}),
            json!({"channel": "xmpp", "address": format!("u{n}@localhost")}),
            json!({"channel": "sms", "address": format!("+1 555 010 {n:04}")}),
        ]
    })
    .await?;
    w.start(&h, Duration::from_millis(5));
    w.advance(step).await?;
    for _ in 0..rounds {
        // the mail server dies (connections refused), then comes back on its Maildir
        smtp.kill();
        w.advance(step).await?;
        smtp.restart()?;
        w.advance(step).await?;
        // the XMPP server dies and comes back on its store: tocsin's link notices by its
        // keep-alive and logs in again
        prosody.kill();
        w.advance(step).await?;
        prosody.restart()?;
        w.advance(step).await?;
        // the SMS provider refuses for a while
        twilio.answer(
            &twilio_path(),
            503,
            r#"{"code":20500,"message":"Internal Server Error"}"#,
        );
        w.advance(step).await?;
        twilio.answer(&twilio_path(), 201, r#"{"sid":"SM1","status":"queued"}"#);
        w.advance(step).await?;
    }
    let n = w.finish().await?;
    eprintln!("{n} notifications published through the target outages");
    let accepted = w.accepted();

    // what each channel received, keyed by the notification it was about
    let mail_ids = |smtp: &SmtpSink| -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for m in smtp.messages() {
            let id = m
                .lines()
                .find_map(|l| l.strip_prefix("Message-ID: <"))
                .and_then(|v| v.split('.').next())
                .unwrap_or_default()
                .to_owned();
            *out.entry(id).or_default() += 1;
        }
        out
    };
    let sms_titles = || -> Vec<String> {
        twilio
            .requests(&twilio_path())
            .into_iter()
            .filter(|r| r.status < 300)
            .filter_map(|r| r.form("Body"))
            .collect()
    };
    let everything_arrived = wait_for(
        Duration::from_secs(120),
        "every notification by e-mail and SMS",
        || {
            let (mails, sms) = (mail_ids(&smtp), sms_titles());
            let all = accepted.iter().all(|(_, id, title)| {
                mails.contains_key(id) && sms.iter().any(|b| b.contains(title.as_str()))
            });
            async move { all.then_some(()) }
        },
    )
    .await;
    everything_arrived.with_context(|| {
        let (mails, sms) = (mail_ids(&smtp), sms_titles());
        let missing = |f: &dyn Fn(&str, &str) -> bool| {
            accepted
                .iter()
                .filter(|(_, id, t)| !f(id, t))
                .map(|(_, _, t)| t.clone())
                .collect::<Vec<_>>()
        };
        format!(
            "missing: e-mail {:?}; SMS {:?}",
            missing(&|id, _| mails.contains_key(id)),
            missing(&|_, t| sms.iter().any(|b| b.contains(t))),
        )
    })?;
    // every IM handed to the XMPP server (acknowledged by it, per the history timelines)
    wait_for(
        Duration::from_secs(120),
        "every IM acknowledged by the XMPP server",
        || async {
            for (u, user) in w.users.iter().enumerate() {
                let items = h.history(&user.token).await.ok()?;
                let acked = |id: &str| {
                    items.iter().any(|i| {
                        i["notification"]["id"] == id
                            && i["timeline"].as_array().is_some_and(|t| {
                                t.iter()
                                    .any(|e| e["kind"] == "delivered" && e["channel"] == "xmpp")
                            })
                    })
                };
                if !accepted
                    .iter()
                    .filter(|(p, ..)| *p == u)
                    .all(|(_, id, _)| acked(id))
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await?;
    // each outage was felt: deliveries that took more than one attempt, per channel; and
    // each IM was handed over once (one acknowledgement from the XMPP server per notification)
    let mut retried: HashMap<String, usize> = HashMap::new();
    for user in &w.users {
        for item in h.history(&user.token).await? {
            let timeline = item["timeline"].as_array().cloned().unwrap_or_default();
            let handed = timeline
                .iter()
                .filter(|e| e["kind"] == "delivered" && e["channel"] == "xmpp")
                .count();
            anyhow::ensure!(
                handed == 1,
                "{} handed to the XMPP server {handed} times: {timeline:?}",
                item["notification"]["id"]
            );
            for e in &timeline {
                let detail = e["detail"].as_str().unwrap_or_default();
                if e["kind"] == "delivered" && detail.contains("(attempt ") {
                    *retried
                        .entry(e["channel"].as_str().unwrap_or("?").into())
                        .or_default() += 1;
                }
            }
        }
    }
    for channel in ["email", "xmpp", "sms"] {
        anyhow::ensure!(
            retried.get(channel).is_some_and(|n| *n > 0),
            "no {channel} delivery took a second attempt: the outage was not felt ({retried:?})"
        );
    }
    // nothing more trickles in
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mails, sms) = (mail_ids(&smtp), sms_titles());
    // nobody was logged in: each user's IMs wait in the server's offline store, which hands
    // them over at login — read what each user gets then
    let mut im: Vec<(String, Option<String>)> = Vec::new();
    for u in &w.users {
        let jid = format!("{}@localhost", u.path.trim_start_matches('/'));
        let mut client = ImUser::login(&prosody.addr(), &jid, im_pw).await?;
        client.show(None);
        let expected = accepted
            .iter()
            .filter(|(p, ..)| w.users[*p].path == u.path)
            .count();
        let mut got = Vec::new();
        // until every one is there and nothing more comes for 2 s (at most 60 s)
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut last_error = String::new();
        while std::time::Instant::now() < deadline {
            match client.next_with_id(Duration::from_secs(2)).await {
                Ok(m) => got.push(m),
                Err(_) if got.len() >= expected => break,
                Err(e) => last_error = e.to_string(),
            }
        }
        anyhow::ensure!(
            got.len() >= expected,
            "{jid}: read back {} of {expected} IMs (last: {:?}); the reader said: {last_error}",
            got.len(),
            got.last()
                .map(|(b, _)| b.lines().next().unwrap_or_default().to_owned())
        );
        im.extend(got);
    }
    for (_, id, title) in &accepted {
        anyhow::ensure!(
            im.iter().any(|(b, _)| b.contains(title.as_str())),
            "{title} ({id}) never reached its IM account"
        );
    }

    // exactly once each, but for what a killed server may have taken in without saying so:
    // at most one per destination per kill (a destination's jobs go out one at a time)
    let allowed = rounds * w.users.len();
    let mut repeated = (0, 0);
    for (_, id, title) in &accepted {
        let sent = sms.iter().filter(|b| b.contains(title.as_str())).count();
        assert_eq!(sent, 1, "{title} ({id}) sent by SMS {sent} times");
        let got = mails[id];
        if got > 1 {
            repeated.0 += got - 1;
        }
        let ims: Vec<&Option<String>> = im
            .iter()
            .filter(|(b, _)| b.contains(title.as_str()))
            .map(|(_, sid)| sid)
            .collect();
        if ims.len() > 1 {
            repeated.1 += ims.len() - 1;
            assert!(
                ims.iter().all(|s| s.is_some() && *s == ims[0]),
                "{title}: an IM resent with another stanza id: {ims:?}"
            );
        }
    }
    assert!(
        repeated.0 <= allowed && repeated.1 <= allowed,
        "repeated e-mails {}, IMs {} (at most {allowed} each)",
        repeated.0,
        repeated.1
    );
    assert!(
        mails
            .keys()
            .all(|id| accepted.iter().any(|(_, a, _)| a == id)),
        "a mailbox got a notification nobody published"
    );
    w.assert_each_in_history_once(&h).await?;
    eprintln!(
        "{n} notifications: each sent once by SMS and in history once; e-mail repeated {}, IM {} (same ids); deliveries after a retry: {retried:?}",
        repeated.0, repeated.1
    );
    h.shutdown().await;
    Ok(())
}
