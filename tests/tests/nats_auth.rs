//! The bus as a trust boundary (issue 20, item 1; ADR 0029): every service of every other test
//! runs under its own NKey identity, so the suite proves each works within its permissions;
//! these tests prove nats-server refuses what lies outside them, and refuses services without
//! the right credentials, saying so.

use async_nats::jetstream;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::{Bus, Role, StreamKind};
use tocsin_tests::Harness;

/// A raw connection as `role`'s identity (its own reply subjects), keeping what the server
/// refused (`-ERR` lines).
async fn connect_as(
    h: &Harness,
    role: Role,
) -> anyhow::Result<(async_nats::Client, Arc<Mutex<Vec<String>>>)> {
    let id = h
        .identities
        .iter()
        .find(|i| i.role == role)
        .ok_or_else(|| anyhow::anyhow!("no identity for {role:?}"))?;
    let seed = std::fs::read_to_string(&id.seed_file)?;
    let refused = Arc::new(Mutex::new(Vec::new()));
    let r = refused.clone();
    let client = async_nats::ConnectOptions::new()
        .nkey(seed.trim().to_owned())
        .custom_inbox_prefix(role.inbox_prefix())
        .event_callback(move |e| {
            let r = r.clone();
            async move {
                if let async_nats::Event::ServerError(e) = e {
                    r.lock().unwrap().push(e.to_string().to_lowercase());
                }
            }
        })
        .connect(h.bus.url.as_str())
        .await?;
    Ok((client, refused))
}

/// Wait (5 s at most) until the server has refused something containing `what`.
async fn refused(log: &Arc<Mutex<Vec<String>>>, what: &str) -> anyhow::Result<()> {
    let what = what.to_lowercase();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        {
            let seen = log.lock().unwrap();
            if seen
                .iter()
                .any(|e| e.contains("permissions violation") && e.contains(&what))
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the server did not refuse {what:?}; it refused: {seen:?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_is_refused_outside_its_permissions() -> anyhow::Result<()> {
    let h = Harness::start("nats-perms").await?;
    let api = &h;
    let (_, token, _) = api.create_user("ann").await?;
    api.publish(
        &token,
        json!({"title": "through every service's own identity"}),
    )
    .await?;
    api.wait_for_title(&token, "through every service's own identity")
        .await?;
    let s = tocsin_bus::Subjects::new(&h.bus.prefix);
    let short = Duration::from_secs(2);

    // delivery cannot write user records, nor command an avatar
    let (delivery, log) = connect_as(&h, Role::Delivery).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(short)
        .build(delivery.clone());
    let forged = format!("$KV.{}.forged", s.bucket("avatars"));
    let put = js.publish(forged.clone(), "{}".into()).await;
    let acked = match put {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "delivery wrote a user record");
    refused(&log, &forged).await?;
    let cmd = s.silo(0, "forged", "cmd");
    delivery.publish(cmd.clone(), "{}".into()).await?;
    delivery.flush().await?;
    refused(&log, &cmd).await?;
    // what delivery does publish is let through: a presence for a silo
    let presence = s.silo(0, "someone", "presence");
    delivery.publish(presence.clone(), "{}".into()).await?;
    delivery.flush().await?;
    // and it reads the address index, a deletion's marker included, as a send checks it
    // (ADR 0035)
    let admin = Bus::connect(&h.bus, "harness").await?;
    let index = admin.kv("addresses").await?;
    index.put("sms.checked", "{}".into()).await?;
    index.delete("sms.checked").await?;
    let seen = js
        .get_key_value(s.bucket("addresses"))
        .await?
        .entry("sms.checked")
        .await?;
    assert_eq!(
        seen.map(|e| e.operation),
        Some(jetstream::kv::Operation::Delete)
    );

    // the API cannot read history records: no subscription, no consumer, no direct read
    let (api_conn, log) = connect_as(&h, Role::Api).await?;
    let _sub = api_conn.subscribe(s.history_all()).await?;
    api_conn.flush().await?;
    refused(&log, &s.history_all()).await?;
    let js = jetstream::ContextBuilder::new()
        .timeout(short)
        .build(api_conn.clone());
    let history = s.stream(StreamKind::History);
    let consumer = js
        .create_consumer_on_stream(
            jetstream::consumer::pull::Config {
                durable_name: Some("peek".into()),
                ..Default::default()
            },
            history.as_str(),
        )
        .await;
    assert!(consumer.is_err(), "the API made a consumer on {history}");
    refused(&log, &format!("$JS.API.CONSUMER.CREATE.{history}")).await?;
    // nor the IMAP passwords the ingestor keeps, nor another service's answers
    let imap = format!("$JS.API.DIRECT.GET.KV_{}", s.bucket("imap"));
    api_conn.publish(imap.clone(), "{}".into()).await?;
    api_conn.flush().await?;
    refused(&log, &imap).await?;
    let _spy = api_conn.subscribe("_INBOX_router.>").await?;
    api_conn.flush().await?;
    refused(&log, "_INBOX_router.>").await?;

    // the ingestor cannot change the silo streams (a republish there would copy every
    // avatar message out)
    let (ingestor, log) = connect_as(&h, Role::Ingestor).await?;
    let update = format!("$JS.API.STREAM.UPDATE.{}", s.stream(StreamKind::Silo(0)));
    ingestor.publish(update.clone(), "{}".into()).await?;
    ingestor.flush().await?;
    refused(&log, &update).await?;

    // and the pipeline still works for everyone after the refusals
    api.publish(&token, json!({"title": "still flowing"}))
        .await?;
    api.wait_for_title(&token, "still flowing").await?;
    // and the harness, which checks every other test's server log, sees these refusals
    let shut = tokio::spawn(h.shutdown()).await;
    let why = shut.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        why.contains("Publish Violation"),
        "shutdown did not see: {why}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_without_its_credentials_is_refused_and_says_why() -> anyhow::Result<()> {
    let h = Harness::start("nats-creds").await?;
    // no credentials at all
    let none = tocsin_bus::BusConfig {
        nkey_seed_file: String::new(),
        ..h.bus.clone()
    };
    let e = Bus::connect(&none, "router")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("connected without credentials"))?
        .to_string();
    assert!(
        e.contains("refused tocsin-router with no credentials") && e.contains("authorization"),
        "{e}"
    );
    // a seed the server does not know
    let stranger = h.data.path().join("stranger.nk");
    let pair = nkeys::KeyPair::new_user();
    std::fs::write(&stranger, pair.seed()?)?;
    let wrong = tocsin_bus::BusConfig {
        nkey_seed_file: stranger.display().to_string(),
        ..h.bus.clone()
    };
    let e = Bus::connect(&wrong, "history")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("connected with an unknown key"))?
        .to_string();
    assert!(
        e.contains(&pair.public_key()) && e.contains("stranger.nk"),
        "{e}"
    );
    // a service started that way fails at once with the same words
    let cfg = tocsin_history::Config {
        bus: wrong,
        history: tocsin_history::HistoryConfig {
            ops_listen: String::new(),
            data_dir: h.data.path().join("refused-history"),
            ..Default::default()
        },
    };
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        tocsin_history::run(cfg, tokio_util::sync::CancellationToken::new()),
    )
    .await?;
    let e = started
        .err()
        .ok_or_else(|| anyhow::anyhow!("history ran with an unknown key"))?
        .to_string();
    assert!(e.contains("nats-server refused tocsin-history"), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_over_tls_takes_only_clients_that_trust_its_certificate() -> anyhow::Result<()> {
    let h = Harness::start_with("nats-tls", |s| s.nats_tls = true).await?;
    let (_, token, _) = h.create_user("tess").await?;
    h.publish(&token, json!({"title": "over tls"})).await?;
    h.wait_for_title(&token, "over tls").await?;
    // a client that does not know the server's CA cannot connect: the server requires TLS
    // and the certificate is nobody's the system trusts
    let untrusting = tocsin_bus::BusConfig {
        tls_ca_file: String::new(),
        connect_timeout_secs: 3,
        ..h.bus.clone()
    };
    let e = Bus::connect(&untrusting, "api")
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("connected without trusting the certificate"))?
        .to_string();
    assert!(
        e.contains("cannot connect to nats") && e.contains("certificate"),
        "{e}"
    );
    Ok(())
}
