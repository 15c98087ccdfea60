//! An upgrade (issue 21, item 4): the data a previous release left — its JetStream store,
//! history databases and archive, made by `tests/fixtures/upgrade/make.py` with that release's
//! own build — taken over by this build's `tocsin up`. Nothing is lost, the users' old tokens
//! still sign in, every stored record still reads with today's types (payloads only ever gain
//! fields), and the pipeline goes on.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tocsin_testkit::{Graceful, free_port, wait_for, workspace_root};

/// The store the previous release (the stop-28 landing, commit 17851db) left.
const FIXTURE: &str = "tests/fixtures/upgrade/17851db.tar.gz";

async fn get(http: &reqwest::Client, url: &str, token: &str) -> anyhow::Result<Value> {
    let r = http.get(url).bearer_auth(token).send().await?;
    anyhow::ensure!(r.status() == 200, "GET {url}: {}", r.status());
    Ok(r.json().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_releases_store_upgrades_without_losing_anything() -> anyhow::Result<()> {
    tocsin_runtime::install_crypto();
    let data = tempfile::tempdir()?;
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(workspace_root().join(FIXTURE))
        .arg("-C")
        .arg(data.path())
        .status()?;
    anyhow::ensure!(unpacked.success(), "cannot unpack {FIXTURE}");
    let expect: Value = serde_json::from_str(&std::fs::read_to_string(
        data.path().join("upgrade-expect.json"),
    )?)?;

    let (nats, api) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{api}");
    let mut cmd = Command::new(tocsin_tests::tocsin_binary()?);
    cmd.args(["up", "--demo-feed-port", "0", "--data-dir"])
        .arg(data.path())
        .env("TOCSIN_BUS__URL", format!("nats://127.0.0.1:{nats}"))
        .env("TOCSIN_API__LISTEN", format!("127.0.0.1:{api}"))
        .env("TOCSIN_API__PUBLIC_URL", &url)
        .env("TOCSIN_INGESTOR__SMTP_LISTEN", "")
        .env("TOCSIN_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for s in ["INGESTOR", "ROUTER", "HISTORY", "DELIVERY", "ARCHIVER"] {
        cmd.env(format!("TOCSIN_{s}__OPS_LISTEN"), "");
    }
    let mut up = Graceful(cmd.spawn()?);
    let stdout = up.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .map_err(|_| anyhow::anyhow!("tocsin up did not start on the old store"))?;
        if line.contains("tocsin is running") {
            break;
        }
    }

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    for (n, user) in expect["users"]
        .as_array()
        .expect("users")
        .iter()
        .enumerate()
    {
        let token = user["token"].as_str().expect("token");
        // the old token signs in, and the record holds what the old build was told
        let me = get(&http, &format!("{url}/v1/me"), token).await?;
        assert_eq!(me["user_id"], user["user_id"]);
        let sources = get(&http, &format!("{url}/v1/sources"), token).await?;
        assert_eq!(
            sources["sources"][0]["label"],
            format!("bikes{n}"),
            "{sources}"
        );
        let silences = get(&http, &format!("{url}/v1/silences"), token).await?;
        assert_eq!(silences["silences"][0]["comment"], "kept over the upgrade");
        let policies = get(&http, &format!("{url}/v1/policies"), token).await?;
        assert!(policies.to_string().contains("pager"), "{policies}");
        let rules = get(&http, &format!("{url}/v1/inbound/rules"), token).await?;
        assert_eq!(rules["rules"][0]["subject"], "CRITICAL", "{rules}");
        // every notification is in history, the acknowledged one with its timeline
        let history = get(&http, &format!("{url}/v1/history?limit=100"), token).await?;
        let items = history["items"].as_array().expect("items");
        let want: Vec<&str> = user["notifications"]
            .as_array()
            .expect("ids")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for id in &want {
            assert!(
                items.iter().any(|i| i["notification"]["id"] == *id),
                "{id} lost in the upgrade"
            );
        }
        assert_eq!(items.len(), want.len(), "{history}");
        let first = items
            .iter()
            .find(|i| i["notification"]["id"] == want[0])
            .expect("the first");
        assert!(
            first["timeline"].to_string().contains("\"acked\""),
            "{first}"
        );
        // and the pipeline goes on
        let r = http
            .post(format!("{url}/v1/publish"))
            .bearer_auth(token)
            .json(&json!({"title": format!("after the upgrade {n}")}))
            .send()
            .await?;
        assert_eq!(r.status(), 202);
        wait_for(
            Duration::from_secs(20),
            "the new notification in history",
            || async {
                let h = get(&http, &format!("{url}/v1/history?limit=100"), token)
                    .await
                    .ok()?;
                h["items"]
                    .as_array()?
                    .iter()
                    .any(|i| i["notification"]["title"] == format!("after the upgrade {n}"))
                    .then_some(())
            },
        )
        .await?;
    }

    // every record the old build stored reads with today's types
    let bus = tocsin_bus::BusConfig {
        url: format!("nats://127.0.0.1:{nats}"),
        nkey_seed_file: data.path().join("nats-auth/admin.nk").display().to_string(),
        ..Default::default()
    };
    let bus = tocsin_bus::Bus::connect(&bus, "test").await?;
    let mut read = 0;
    for bucket in ["avatars", "feeds", "addresses", "topics"] {
        let Some(kv) = bus.kv_existing(bucket).await else {
            continue;
        };
        let mut keys = Vec::new();
        if let Ok(mut k) = kv.keys().await {
            use futures::StreamExt;
            while let Some(Ok(key)) = k.next().await {
                keys.push(key);
            }
        }
        for key in keys {
            let Some(value) = kv.get(&key).await? else {
                continue;
            };
            let parsed = match (bucket, key.chars().next()) {
                ("avatars", _) => {
                    serde_json::from_slice::<tocsin_model::UserRecord>(&value).map(drop)
                }
                ("feeds", Some('f')) => {
                    serde_json::from_slice::<tocsin_ingestor::feeds::record::FeedRecord>(&value)
                        .map(drop)
                }
                ("feeds", _) => {
                    serde_json::from_slice::<tocsin_ingestor::feeds::record::Subscriber>(&value)
                        .map(drop)
                }
                ("addresses", _) => {
                    serde_json::from_slice::<tocsin_model::AddressEntry>(&value).map(drop)
                }
                _ => serde_json::from_slice::<tocsin_model::TopicRecord>(&value).map(drop),
            };
            parsed.map_err(|e| anyhow::anyhow!("{bucket}/{key} no longer reads: {e}"))?;
            read += 1;
        }
    }
    // the demo user's and the second user's records, a feed and its two subscribers
    eprintln!("{read} stored records read with today's types");
    assert!(read >= 5, "only {read} records read");
    bus.drain().await;
    drop(up);
    // made before `tocsin up` recorded its silo count: it kept the built-in 16 its streams were
    // made with (a new data directory takes 4, ADR 0032), and that is now recorded
    let recorded = std::fs::read_to_string(data.path().join("silo-count"))?;
    assert_eq!(recorded, "16\n");
    Ok(())
}
