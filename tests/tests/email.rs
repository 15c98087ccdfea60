//! The e-mail channel against a real SMTP server (aiosmtpd) on loopback: the message arrives
//! with the parsed subject and body, a Message-ID derived from the job, no injected header;
//! through an outage of the server every message is delivered exactly once.

mod common;

use common::Harness;
use reqwest::Method;
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use tocsin_delivery::email::{SmtpConfig, SmtpTls};
use tocsin_model::Channel;
use tocsin_testkit::{SmtpSink, free_port, wait_for};

async fn harness(name: &str, smtp_port: u16, max_deliver: i64) -> anyhow::Result<Harness> {
    Harness::start_with(name, move |s| {
        s.bus.max_deliver = max_deliver;
        s.delivery.channels = vec![Channel::Webhook, Channel::Email];
        s.delivery.smtp = SmtpConfig {
            host: "127.0.0.1".into(),
            port: smtp_port,
            tls: SmtpTls::None,
            from: "tocsin <notify@tocsin.test>".into(),
            timeout_secs: 5,
            ..Default::default()
        };
    })
    .await
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    msg.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notification_arrives_by_email_without_injected_headers() -> anyhow::Result<()> {
    let port = free_port();
    let smtp = SmtpSink::start(port)?;
    let h = harness("e2email", port, 4).await?;
    let (_u, token, _) = h.create_user("jo").await?;
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "email", "address": "jo@example.org"})),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    let dest = v["destination"]["id"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/publish",
            Some(&token),
            Some(json!({"title": "Disk full on db1\r\nBcc: evil@example.org", "body": "98% used on /var", "click_url": "https://grafana.example.org/d/1"})),
        )
        .await?;
    assert_eq!(status, 202);
    let id = v["id"].as_str().unwrap().to_owned();
    let msg = wait_for(Duration::from_secs(20), "the e-mail", || async {
        smtp.messages().into_iter().next()
    })
    .await?;
    assert_eq!(header(&msg, "To"), Some("jo@example.org"));
    assert_eq!(
        header(&msg, "X-RcptTo"),
        Some("jo@example.org"),
        "one recipient only"
    );
    assert!(
        header(&msg, "Subject")
            .unwrap()
            .starts_with("Disk full on db1"),
        "{msg}"
    );
    assert!(header(&msg, "Bcc").is_none(), "{msg}");
    assert_eq!(
        header(&msg, "Message-ID"),
        Some(format!("<{id}.{dest}@tocsin.test>").as_str())
    );
    assert!(
        msg.contains("98% used on /var") || msg.contains("98=25 used on /var"),
        "{msg}"
    );
    assert!(msg.contains("multipart/alternative"));
    let entry = wait_for(Duration::from_secs(20), "a delivered entry", || async {
        let items = h.history(&token).await.ok()?;
        items.first()?["timeline"]
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "delivered")
            .cloned()
    })
    .await?;
    assert_eq!(entry["channel"], "email");
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_queued_while_the_server_is_down_is_delivered_once_when_it_returns()
-> anyhow::Result<()> {
    let port = free_port();
    let h = harness("e2emaildown", port, 30).await?;
    let (_u, token, _) = h.create_user("kim").await?;
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "email", "address": "kim@example.org"})),
        )
        .await?;
    assert_eq!(status, 201);
    for i in 0..5 {
        let (status, _) = h
            .call(
                Method::POST,
                "/v1/publish",
                Some(&token),
                Some(json!({"title": format!("alert {i}")})),
            )
            .await?;
        assert_eq!(status, 202);
    }
    // let the first attempts fail against the closed port
    wait_for(Duration::from_secs(20), "all five in history", || async {
        (h.history(&token).await.ok()?.len() == 5).then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let smtp = SmtpSink::start(port)?;
    let msgs = wait_for(Duration::from_secs(60), "five e-mails", || async {
        let m = smtp.messages();
        (m.len() >= 5).then_some(m)
    })
    .await?;
    // anything delivered twice would show up now
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(smtp.messages().len(), 5, "each message exactly once");
    let subjects: HashSet<String> = msgs
        .iter()
        .map(|m| header(m, "Subject").unwrap().to_owned())
        .collect();
    assert_eq!(subjects.len(), 5);
    h.shutdown().await;
    Ok(())
}
