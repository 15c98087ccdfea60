//! The e-mail channel against a real SMTP server (aiosmtpd) on loopback: the message arrives
//! with the parsed subject and body, a Message-ID derived from the job, no injected header;
//! through an outage of the server every message is delivered exactly once.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tocsin_tests::{Harness, smtp_out};

use tocsin_model::Channel;
use tocsin_testkit::{SmtpSink, free_port, wait_for};

async fn harness(name: &str, smtp_port: u16, max_deliver: i64) -> anyhow::Result<Harness> {
    Harness::start_with(name, move |s| {
        s.bus.max_deliver = max_deliver;
        s.delivery.channels = vec![Channel::Webhook, Channel::Email];
        s.delivery.smtp = smtp_out(smtp_port);
    })
    .await
}

/// tocsin with its SMTP ingress, an SMTP server for the e-mail channel, and a user whose
/// notifications go out by e-mail to `<user>@example.org`.
struct MailWorld {
    smtp_out: SmtpSink,
    h: Harness,
    token: String,
    inbound: String,
    in_port: u16,
}

async fn mail_world(name: &str, user: &str) -> anyhow::Result<MailWorld> {
    let out_port = free_port();
    let smtp_out = SmtpSink::start(out_port)?;
    let in_port = free_port();
    let h = harness_in_out(name, in_port, out_port).await?;
    let created = h.create_user_json(user).await?;
    let token = created["token"].as_str().unwrap().to_owned();
    let inbound = created["inbound_address"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/destinations",
            Some(&token),
            Some(json!({"channel": "email", "address": format!("{user}@example.org")})),
        )
        .await?;
    anyhow::ensure!(status == 201, "email destination: {status} {v}");
    Ok(MailWorld {
        smtp_out,
        h,
        token,
        inbound,
        in_port,
    })
}

/// The SMTP ingress on `in_port` (64 KiB messages at most) and the e-mail channel to `out_port`.
async fn harness_in_out(name: &str, in_port: u16, out_port: u16) -> anyhow::Result<Harness> {
    Harness::start_with(name, move |s| {
        s.ingestor.smtp_listen = format!("127.0.0.1:{in_port}");
        s.ingestor.smtp_max_message_bytes = 64 * 1024;
        s.delivery.channels = vec![Channel::Email];
        s.delivery.smtp = smtp_out(out_port);
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
    let id = h.publish(&token, json!({"title": "Disk full on db1\r\nBcc: evil@example.org", "body": "98% used on /var", "click_url": "https://grafana.example.org/d/1"})).await?;
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
    h.add_destination(
        &token,
        json!({"channel": "email", "address": "kim@example.org"}),
    )
    .await?;
    for i in 0..5 {
        h.publish(&token, json!({"title": format!("alert {i}")}))
            .await?;
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
    let subjects: Vec<String> = msgs
        .iter()
        .map(|m| header(m, "Subject").unwrap().to_owned())
        .collect();
    assert_eq!(
        subjects,
        ["alert 0", "alert 1", "alert 2", "alert 3", "alert 4"],
        "in order for the user, as queued"
    );
    h.shutdown().await;
    Ok(())
}

async fn send_mail(
    port: u16,
    to: &str,
    raw: &[u8],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    send_mail_from(port, "me@example.org", to, raw).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_alert_reaches_history_and_goes_out_by_email() -> anyhow::Result<()> {
    let MailWorld {
        smtp_out,
        h,
        token,
        inbound,
        in_port,
    } = mail_world("e2emailin", "max").await?;

    let alert = std::fs::read(
        tocsin_testkit::workspace_root().join("services/ingestor/tests/mail/grafana-alert.eml"),
    )?;
    let reply = send_mail(in_port, &inbound, &alert).await?;
    assert!(reply.is_positive(), "{reply:?}");
    // sent twice (a sending server's retry): still one notification
    send_mail(in_port, &inbound, &alert).await?;

    let items = wait_for(Duration::from_secs(20), "the alert in history", || async {
        let items = h.history(&token).await.ok()?;
        (!items.is_empty()).then_some(items)
    })
    .await?;
    let n = &items[0]["notification"];
    assert_eq!(n["title"], "[FIRING:1] DiskSpaceLow db1 (prod)");
    assert_eq!(n["priority"], 5, "X-Priority: 1 is urgent");
    assert_eq!(n["source"]["kind"], "email");
    assert!(n["body"].as_str().unwrap().contains("/var is 97% full"));
    assert_eq!(
        n["url"],
        "https://grafana.example.org/alerting/grafana/abc123/view"
    );
    let out = wait_for(Duration::from_secs(20), "the e-mail out", || async {
        smtp_out.messages().into_iter().next()
    })
    .await?;
    assert!(
        header(&out, "Subject").unwrap().contains("DiskSpaceLow"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.history(&token).await?.len(),
        1,
        "the retried send is the same notification"
    );

    // refusals: an unknown or forged recipient at RCPT, an oversized message with 552
    let forged = inbound.replacen('.', ".0", 1);
    let e = send_mail(in_port, &forged, &alert).await.unwrap_err();
    assert!(e.is_permanent() && e.to_string().contains("550"), "{e}");
    let e = send_mail(in_port, "nobody@tocsin.localhost", &alert)
        .await
        .unwrap_err();
    assert!(e.is_permanent(), "{e}");
    let mut big = b"Subject: big\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 100 * 1024));
    let e = send_mail(in_port, &inbound, &big).await.unwrap_err();
    assert!(e.to_string().contains("552"), "{e}");
    // and the ingress is still up
    assert!(
        send_mail(in_port, &inbound, b"Subject: still here\r\n\r\nyes\r\n")
            .await?
            .is_positive()
    );
    h.shutdown().await;
    Ok(())
}

/// E-mail rules give forwarded alert mail a lifecycle: Grafana's FIRING mail is an alert with a
/// key (and the priority the rule sets), its RESOLVED mail resolves it instead of being one more
/// notification. A rule that is not a regular expression is refused by field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_rules_resolve_a_forwarded_alert_with_its_resolved_mail() -> anyhow::Result<()> {
    let MailWorld {
        smtp_out,
        h,
        token,
        inbound,
        in_port,
    } = mail_world("e2emailrules", "rita").await?;
    let rules = json!({"rules": [
        {"subject": "^\\[RESOLVED\\] (?P<key>.+)$", "resolve": true},
        {"subject": "^\\[FIRING:\\d+\\] (?P<key>.+)$", "priority": 4}
    ]});
    let (status, v) = h
        .call(Method::PUT, "/v1/inbound/rules", Some(&token), Some(rules))
        .await?;
    assert_eq!(status, 200, "{v}");
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/inbound/rules",
            Some(&token),
            Some(json!({"rules": [{"subject": "([unclosed"}]})),
        )
        .await?;
    assert_eq!(
        (status.as_u16(), v["error"]["field"].as_str()),
        (400, Some("rules[0].subject")),
        "{v}"
    );
    let firing = std::fs::read(
        tocsin_testkit::workspace_root().join("services/ingestor/tests/mail/grafana-alert.eml"),
    )?;
    assert!(send_mail(in_port, &inbound, &firing).await?.is_positive());
    let items = wait_for(Duration::from_secs(20), "the alert in history", || async {
        let items = h.history(&token).await.ok()?;
        (!items.is_empty()).then_some(items)
    })
    .await?;
    let id = items[0]["notification"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        items[0]["notification"]["priority"], 4,
        "the rule's priority"
    );
    let resolved = b"From: Grafana <alerts@grafana.example.org>\r\n\
        Subject: [RESOLVED] DiskSpaceLow db1 (prod)\r\n\
        Message-ID: <resolved-1@grafana.example.org>\r\n\r\n\
        /var is 60% full\r\n";
    assert!(send_mail(in_port, &inbound, resolved).await?.is_positive());
    wait_for(Duration::from_secs(20), "the alert resolved", || async {
        let items = h.history(&token).await.ok()?;
        let timeline = items
            .iter()
            .find(|i| i["notification"]["id"] == id.as_str())?["timeline"]
            .as_array()?
            .clone();
        timeline
            .iter()
            .any(|e| {
                e["kind"] == "resolved"
                    && e["detail"]
                        .as_str()
                        .unwrap_or_default()
                        .starts_with("via e-mail rule 1")
            })
            .then_some(())
    })
    .await?;
    assert_eq!(
        h.history(&token).await?.len(),
        1,
        "the RESOLVED mail is no notification"
    );
    wait_for(
        Duration::from_secs(20),
        "the alert's e-mail out",
        || async { (smtp_out.messages().len() == 1).then_some(()) },
    )
    .await?;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_offers_starttls_when_a_certificate_is_configured() -> anyhow::Result<()> {
    use lettre::AsyncTransport;
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    tocsin_runtime::install_crypto();
    let dir = tempfile::tempdir()?;
    let (crt, key) = tocsin_tests::test_certificate(dir.path())?;
    let in_port = free_port();
    let (c, k) = (crt.display().to_string(), key.display().to_string());
    let h = Harness::start_with("e2emailtls", move |s| {
        s.ingestor.smtp_listen = format!("127.0.0.1:{in_port}");
        s.ingestor.smtp_tls_cert = c;
        s.ingestor.smtp_tls_key = k;
    })
    .await?;
    let created = h.create_user_json("tls").await?;
    let token = created["token"].as_str().unwrap().to_owned();
    let inbound = created["inbound_address"].as_str().unwrap().to_owned();
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&std::fs::read(&crt)?)?)
        .build_rustls()?;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(in_port)
            .tls(Tls::Required(tls))
            .timeout(Some(Duration::from_secs(10)))
            .build();
    let envelope =
        lettre::address::Envelope::new(Some("me@example.org".parse()?), vec![inbound.parse()?])?;
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        transport.send_raw(&envelope, b"Subject: over TLS\r\n\r\nsecret stuff\r\n"),
    )
    .await??;
    assert!(reply.is_positive());
    h.wait_for_title(&token, "over TLS").await?;
    // plain sessions keep working beside it
    assert!(
        send_mail(in_port, &inbound, b"Subject: plain\r\n\r\nx\r\n")
            .await?
            .is_positive()
    );
    h.shutdown().await;
    Ok(())
}

async fn send_mail_from(
    port: u16,
    from: &str,
    to: &str,
    raw: &[u8],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    use lettre::AsyncTransport;
    let transport =
        lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(port)
            .timeout(Some(Duration::from_secs(10)))
            .build();
    let envelope =
        lettre::address::Envelope::new(Some(from.parse().unwrap()), vec![to.parse().unwrap()])
            .unwrap();
    // lettre's timeout bounds only the connect: a session the ingress stops answering would
    // otherwise hold the test for ever
    tokio::time::timeout(Duration::from_secs(30), transport.send_raw(&envelope, raw))
        .await
        .unwrap_or_else(|_| {
            panic!("the SMTP ingress on port {port} did not finish a session within 30 s")
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_senders_reach_an_address_that_lists_them() -> anyhow::Result<()> {
    let in_port = free_port();
    let h = Harness::start_with("e2emailallow", move |s| {
        s.ingestor.smtp_listen = format!("127.0.0.1:{in_port}")
    })
    .await?;
    let created = h.create_user_json("ally").await?;
    let token = created["token"].as_str().unwrap().to_owned();
    let inbound = created["inbound_address"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/inbound",
            Some(&token),
            Some(json!({"allowed_senders": ["not an address"]})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["field"], "allowed_senders");
    let (status, _) = h
        .call(
            Method::PUT,
            "/v1/inbound",
            Some(&token),
            Some(json!({"allowed_senders": ["@alerts.example.com"]})),
        )
        .await?;
    assert_eq!(status, 200);
    let (_, v) = h
        .call(Method::GET, "/v1/inbound", Some(&token), None)
        .await?;
    assert_eq!(v["allowed_senders"], json!(["@alerts.example.com"]));
    let e = send_mail_from(
        in_port,
        "eve@example.org",
        &inbound,
        b"Subject: spam\r\n\r\nx\r\n",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("5.7.1"), "{e}");
    let ok = send_mail_from(
        in_port,
        "grafana@alerts.example.com",
        &inbound,
        b"Subject: allowed\r\n\r\nx\r\n",
    )
    .await?;
    assert!(ok.is_positive());
    // the refusal is in Ann's history (once, however often eve tries), next to the message
    for _ in 0..3 {
        let _ = send_mail_from(
            in_port,
            "eve@example.org",
            &inbound,
            b"Subject: spam\r\n\r\nx\r\n",
        )
        .await;
    }
    let items = wait_for(Duration::from_secs(20), "the allowed message", || async {
        let items = h.history(&token).await.ok()?;
        (items.len() >= 2).then_some(items)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let titles = h.history_titles(&token).await?;
    assert_eq!(
        titles.iter().filter(|t| t.starts_with("Refused")).count(),
        1,
        "{titles:?}"
    );
    assert!(titles.contains(&"allowed".to_owned()), "{titles:?}");
    let refusal = items
        .iter()
        .find(|i| i["notification"]["title"] == "Refused an e-mail from eve@example.org")
        .expect("the refusal");
    assert_eq!(refusal["timeline"][0]["kind"], "refused");
    assert!(
        refusal["timeline"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("not on the address's allowed senders")
    );
    h.shutdown().await;
    Ok(())
}

/// Debian's swaks, the real SMTP client, as a sender would use it.
fn swaks(port: u16, from: &str, to: &str, headers: &[&str], body: &str) -> anyhow::Result<String> {
    let mut cmd = std::process::Command::new("swaks");
    cmd.args([
        "--server",
        &format!("127.0.0.1:{port}"),
        "--from",
        from,
        "--to",
        to,
    ])
    .args(["--body", body, "--timeout", "20"]);
    for h in headers {
        cmd.args(["--header", h]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run swaks ({e}): run `make test-tools`"))?;
    let transcript = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(out.status.success(), "swaks failed: {transcript}");
    Ok(transcript)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swaks_forwards_an_alert_that_reaches_history_and_an_smtp_server() -> anyhow::Result<()> {
    let MailWorld {
        smtp_out,
        h,
        token,
        inbound,
        in_port,
    } = mail_world("e2eswaks", "sam").await?;
    let body = "see below\n\n---------- Forwarded message ---------\nFrom: Sensors <sensors@facility.example.net>\nDate: Sat, 21 Nov 2026 14:55:00 +0000\nSubject: Server room temperature high\nTo: sam@example.org\n\nRoom B2 is at 31.5 C (threshold 28 C).\nDashboard: https://facility.example.net/rooms/b2\n";
    let started = std::time::Instant::now();
    let transcript = swaks(
        in_port,
        "sam@example.org",
        &inbound,
        &["Subject: Fw: Server room temperature high"],
        body,
    )?;
    assert!(
        transcript.contains("250 2.0.0 OK queued as"),
        "{transcript}"
    );
    let items = wait_for(Duration::from_secs(20), "the alert in history", || async {
        let items = h.history(&token).await.ok()?;
        (!items.is_empty()).then_some(items)
    })
    .await?;
    let n = &items[0]["notification"];
    assert_eq!(
        n["title"], "Server room temperature high",
        "the original subject"
    );
    assert_eq!(
        n["source"]["label"], "Sensors <sensors@facility.example.net>",
        "the original sender"
    );
    assert_eq!(n["url"], "https://facility.example.net/rooms/b2");
    let out = wait_for(Duration::from_secs(20), "the e-mail out", || async {
        smtp_out.messages().into_iter().next()
    })
    .await?;
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        header(&out, "Subject"),
        Some("Server room temperature high"),
        "{out}"
    );
    assert!(out.contains("Room B2 is at 31.5 C"), "{out}");
    assert_eq!(header(&out, "X-RcptTo"), Some("sam@example.org"));
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_that_requires_it_takes_only_mail_passing_spf_or_dkim() -> anyhow::Result<()> {
    use base64::Engine;
    use mail_auth::common::crypto::Ed25519Key;
    use mail_auth::common::headers::HeaderWriter;
    use mail_auth::dkim::DkimSigner;
    let pkcs8 = Ed25519Key::generate_pkcs8().map_err(|e| anyhow::anyhow!("{e}"))?;
    let key = Ed25519Key::from_pkcs8_der(&pkcs8).map_err(|e| anyhow::anyhow!("{e}"))?;
    let public = base64::engine::general_purpose::STANDARD.encode(key.public_key());
    let dkim_record = format!("v=DKIM1; k=ed25519; p={public}");
    let dns = tocsin_testkit::Dns::start(&[
        ("example.org", "v=spf1 ip4:127.0.0.1 -all"),
        ("evil.example", "v=spf1 -all"),
        ("sel._domainkey.signed.example", &dkim_record),
    ])?;
    let in_port = free_port();
    let dns_addr = dns.addr();
    let h = Harness::start_with("e2emailauth", move |s| {
        s.ingestor.smtp_listen = format!("127.0.0.1:{in_port}");
        s.ingestor.smtp_verify_senders = true;
        s.ingestor.smtp_dns_server = dns_addr;
    })
    .await?;
    let created = h.create_user_json("strict").await?;
    let token = created["token"].as_str().unwrap().to_owned();
    let inbound = created["inbound_address"].as_str().unwrap().to_owned();
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/inbound",
            Some(&token),
            Some(json!({"allowed_senders": [], "require_authenticated": true})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");

    // SPF passes: 127.0.0.1 may send for example.org
    let ok = send_mail_from(
        in_port,
        "alerts@example.org",
        &inbound,
        b"From: alerts@example.org\r\nSubject: spf passes\r\n\r\nx\r\n",
    )
    .await?;
    assert!(ok.is_positive());
    // SPF fails and nothing is signed: refused, and the refusal is in the history
    let e = send_mail_from(
        in_port,
        "ceo@evil.example",
        &inbound,
        b"From: ceo@evil.example\r\nSubject: wire the money\r\n\r\nnow\r\n",
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("5.7.26"), "{e}");
    // no SPF record, but a DKIM signature by the From domain
    let body = b"From: bot@signed.example\r\nTo: strict@example.org\r\nSubject: dkim passes\r\n\r\nsigned body\r\n";
    let signer = DkimSigner::from_key(key)
        .domain("signed.example")
        .selector("sel")
        .headers(["From", "To", "Subject"]);
    let signature = signer.sign(body).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut signed = signature.to_header().into_bytes();
    signed.extend_from_slice(body);
    assert!(
        send_mail_from(in_port, "bot@signed.example", &inbound, &signed)
            .await?
            .is_positive()
    );
    // the same signature on a changed body fails
    let mut tampered = signature.to_header().into_bytes();
    tampered.extend_from_slice(&body[..body.len() - 6]);
    tampered.extend_from_slice(b"EVIL\r\n");
    let e = send_mail_from(in_port, "bot@signed.example", &inbound, &tampered)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("5.7.26"), "{e}");

    let items = wait_for(Duration::from_secs(20), "three history items", || async {
        let items = h.history(&token).await.ok()?;
        (items.len() >= 3).then_some(items)
    })
    .await?;
    let by_title = |t: &str| {
        items
            .iter()
            .find(|i| i["notification"]["title"] == t)
            .unwrap_or_else(|| panic!("{t} in {items:?}"))
            .clone()
    };
    let spf = by_title("spf passes");
    let tags = spf["notification"]["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("spf:pass")), "{tags:?}");
    let dkim = by_title("dkim passes");
    let tags = dkim["notification"]["tags"].as_array().unwrap();
    assert!(
        tags.contains(&json!("dkim:pass")) && tags.contains(&json!("spf:none")),
        "{tags:?}"
    );
    let refused = by_title("Refused an e-mail from ceo@evil.example");
    assert!(
        refused["timeline"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("SPF fail, DKIM none"),
        "{refused}"
    );
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_imap_mailbox_turns_new_mail_into_notifications() -> anyhow::Result<()> {
    let dovecot = tocsin_testkit::Dovecot::start(&[("ann@example.test", "imap-password")])?;
    let mut h = Harness::start_with("e2eimap", |s| {
        s.ingestor.smtp_max_message_bytes = 64 * 1024;
    })
    .await?;
    let (_, token, _) = h.create_user("ann").await?;
    let source = |password: &str| {
        json!({
            "kind": "imap", "host": "127.0.0.1", "port": dovecot.imap_port, "tls": "none",
            "username": "ann@example.test", "password": password, "label": "work mail",
            "filter": {"exclude": ["newsletter"]}
        })
    };
    let (status, v) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&token),
            Some(source("imap-password")),
        )
        .await?;
    assert_eq!(status, 201, "{v}");
    assert!(
        !v.to_string().contains("imap-password"),
        "the password is echoed: {v}"
    );
    let alert = std::fs::read_to_string(
        tocsin_testkit::workspace_root().join("services/ingestor/tests/mail/grafana-alert.eml"),
    )?;
    dovecot.deliver("ann@example.test", &alert)?;
    dovecot.deliver(
        "ann@example.test",
        "From: news@example.test\r\nSubject: Weekly newsletter\r\nMessage-ID: <nl-1@example.test>\r\n\r\nhello\r\n",
    )?;
    // over the size limit: skipped, never read into memory
    dovecot.deliver(
        "ann@example.test",
        &format!(
            "From: big@example.test\r\nSubject: Huge attachment\r\n\r\n{}\r\n",
            "x".repeat(100 * 1024)
        ),
    )?;
    h.wait_for_title(&token, "[FIRING:1] DiskSpaceLow db1 (prod)")
        .await?;
    wait_for(
        Duration::from_secs(20),
        "every message marked seen",
        || async { (dovecot.seen("ann@example.test") == 3).then_some(()) },
    )
    .await?;
    let items = h.history(&token).await?;
    assert_eq!(
        items.len(),
        1,
        "the newsletter is filtered out, the huge one skipped"
    );
    let n = &items[0]["notification"];
    assert_eq!(n["priority"], 5);
    assert!(n["tags"].as_array().unwrap().contains(&json!("imap")));
    // the source reports itself healthy, and no password is stored where the API reads
    let sources = h.wait_sources_checked(&token, 1).await?;
    assert_eq!(sources[0]["status"]["ok"], true, "{sources:?}");
    assert!(!sources[0].to_string().contains("imap-password"));

    // the ingestor restarts: the watch resumes from its bucket
    h.kill(tocsin_tests::Svc::Ingestor).await;
    h.start_service(tocsin_tests::Svc::Ingestor);
    dovecot.deliver(
        "ann@example.test",
        "From: ci@example.test\r\nSubject: Build failed on main\r\nMessage-ID: <ci-7@example.test>\r\n\r\nstep 3 of 5\r\n",
    )?;
    h.wait_for_title(&token, "Build failed on main").await?;

    // a wrong password: the source says so
    let (_, other, _) = h.create_user("bob").await?;
    let (status, _) = h
        .call(
            Method::POST,
            "/v1/sources",
            Some(&other),
            Some(source("wrong")),
        )
        .await?;
    assert_eq!(status, 201);
    let sources = wait_for(Duration::from_secs(20), "the login failure", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/sources", Some(&other), None)
            .await
            .ok()?;
        let s = v["sources"].as_array()?.clone();
        (s.first()?["status"]["ok"] == false).then_some(s)
    })
    .await?;
    let error = sources[0]["status"]["error"].as_str().unwrap();
    assert!(
        error.contains("login as ann@example.test refused"),
        "{error}"
    );
    h.shutdown().await;
    Ok(())
}

/// The same listing by feed and by a forwarded alert e-mail reaches the user once: a mail rule
/// marks the shop's alert mail as a listing, whose key is its link's canonical form — the
/// feed's link without its tracking parameters, `www.` or `http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_by_feed_and_by_e_mail_reaches_the_user_once() -> anyhow::Result<()> {
    let MailWorld {
        smtp_out: _smtp_out,
        h,
        token,
        inbound,
        in_port,
    } = mail_world("e2emaillisting", "lisa").await?;
    let (status, v) = h
        .call(
            Method::PUT,
            "/v1/inbound/rules",
            Some(&token),
            Some(json!({"rules": [{"subject": "^New listing", "listing": true}]})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    h.feeds.set(
        "listings.rdf",
        tocsin_tests::rdf(&[("4711", "Road bike, 56 cm - $400", "Light and fast")]),
        "application/rss+xml",
    );
    h.add_source(
        &token,
        json!({"url": h.feeds.url("listings.rdf"), "deliver_existing": true}),
    )
    .await?;
    h.wait_for_title(&token, "Road bike, 56 cm - $400").await?;
    // the shop's alert mail for the same listing, its link dressed for e-mail
    let mail = "From: alerts@shop.example\r\nSubject: New listing: Road bike, 56 cm\r\n\r\nA new listing matches your search:\r\nhttp://www.example.test/l/4711?utm_source=alert&utm_medium=email\r\n";
    assert!(
        send_mail(in_port, &inbound, mail.as_bytes())
            .await?
            .is_positive()
    );
    // a later mail of another kind: once it is in history, the listing mail was handled
    let marker = "Subject: backup finished\r\n\r\nall good\r\n";
    assert!(
        send_mail(in_port, &inbound, marker.as_bytes())
            .await?
            .is_positive()
    );
    h.wait_for_title(&token, "backup finished").await?;
    let titles = h.history_titles(&token).await?;
    assert_eq!(
        titles,
        ["backup finished", "Road bike, 56 cm - $400"],
        "the listing once, by the feed"
    );
    h.shutdown().await;
    Ok(())
}

/// No loops (issue 20, item 4): a destination may not be an inbound address, tocsin's own
/// sender or its own API; mail tocsin sent carries `Auto-Submitted` and its loop mark, and when
/// a user's mailbox forwards it back to their inbound address it is accepted (no bounce), said
/// in their history, and never becomes a notification or another e-mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tocsins_own_mail_forwarded_back_is_not_taken_and_loops_are_refused_as_destinations()
-> anyhow::Result<()> {
    let MailWorld {
        smtp_out,
        h,
        token,
        inbound,
        in_port,
    } = mail_world("e2eloop", "lou").await?;
    for (channel, address, says) in [
        ("email", inbound.as_str(), "inbound address"),
        (
            "email",
            "NOTIFY@tocsin.test",
            "tocsin itself sends email from",
        ),
        (
            "webhook",
            &format!("{}/v1/publish", h.api_url),
            "tocsin's own API",
        ),
    ] {
        let body = json!({"channel": channel, "address": address});
        let message = h.destination_refused(&token, body).await?;
        assert!(message.contains(says), "{address}: {message}");
    }

    let reply = send_mail(
        in_port,
        &inbound,
        b"From: cron@db1.example\r\nSubject: backup failed\r\nAuto-Submitted: auto-generated\r\nMessage-ID: <b1@db1.example>\r\n\r\nexit 1\r\n",
    )
    .await?;
    assert!(reply.is_positive(), "{reply:?}");
    let out = wait_for(Duration::from_secs(20), "the e-mail out", || async {
        smtp_out.messages().into_iter().next()
    })
    .await?;
    assert_eq!(
        header(&out, "Auto-Submitted"),
        Some("auto-generated"),
        "{out}"
    );
    assert_eq!(header(&out, "X-Tocsin-Loop"), Some("tocsin.test"), "{out}");

    // Lou's mailbox forwards everything to the inbound address, tocsin's own mail too
    let back = out.replace("\r\n", "\n").replace('\n', "\r\n");
    let reply = send_mail_from(in_port, "notify@tocsin.test", &inbound, back.as_bytes()).await?;
    assert!(
        reply.is_positive(),
        "accepted, so no bounce answers it: {reply:?}"
    );
    assert!(reply.message().any(|l| l.contains("dropped")), "{reply:?}");
    let refusal = wait_for(
        Duration::from_secs(20),
        "the refusal in history",
        || async {
            let items = h.history(&token).await.ok()?;
            items
                .into_iter()
                .find(|i| i["timeline"][0]["kind"] == "refused")
        },
    )
    .await?;
    let detail = refusal["timeline"][0]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains("X-Tocsin-Loop"), "{refusal}");
    // a message after it is taken, and by then the returned one would have been too
    send_mail(
        in_port,
        &inbound,
        b"Subject: after\r\nMessage-ID: <b2@db1.example>\r\n\r\nyes\r\n",
    )
    .await?;
    wait_for(Duration::from_secs(20), "the next message out", || async {
        (smtp_out.messages().len() >= 2).then_some(())
    })
    .await?;
    let mut titles = h.history_titles(&token).await?;
    titles.retain(|t| !t.starts_with("Refused"));
    titles.sort();
    assert_eq!(titles, ["after", "backup failed"]);
    let subjects: Vec<String> = smtp_out
        .messages()
        .iter()
        .filter_map(|m| header(m, "Subject").map(str::to_owned))
        .collect();
    assert_eq!(subjects, ["backup failed", "after"], "one e-mail each");
    h.shutdown().await;
    Ok(())
}
