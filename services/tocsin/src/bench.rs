//! `tocsin bench`: push N notifications through publish → router → history on this machine
//! and print the rate and latency, next to a raw JetStream work-queue publish → consume
//! baseline measured in the same run on the same server.

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_model::{
    AvatarMessage, Command, Notification, NotificationId, Priority, SourceKind, SourceRef, UserId,
    now_ms,
};
use tocsin_runtime::local_nats::{LocalNats, find_binary};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub notifications: usize,
    pub users: usize,
    pub silo_count: u32,
    pub window: usize,
    /// Publishes per second; 0 publishes as fast as the window allows (a burst).
    pub rate: u64,
    pub timeout: Duration,
}

/// Spaces publishes at a fixed rate (or not at all).
struct Pacer {
    start: tokio::time::Instant,
    rate: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            rate,
        }
    }

    async fn wait(&self, i: usize) {
        if self.rate > 0 {
            let at = self.start + Duration::from_secs_f64(i as f64 / self.rate as f64);
            tokio::time::sleep_until(at).await;
        }
    }
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub name: &'static str,
    pub count: usize,
    pub per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

pub struct Report {
    pub baseline: Figures,
    pub pipeline: Figures,
    pub options: BenchOptions,
    pub nats_version: String,
}

impl Report {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin bench: {} notifications, {} users, {} silos, window {}, {}, nats-server {}\n",
            o.notifications,
            o.users,
            o.silo_count,
            o.window,
            if o.rate == 0 {
                "burst".to_owned()
            } else {
                format!("{}/s offered", o.rate)
            },
            self.nats_version
        );
        s.push_str(&format!(
            "{:<38} {:>10} {:>10} {:>10}\n",
            "path", "msgs/s", "p50 ms", "p99 ms"
        ));
        for f in [&self.baseline, &self.pipeline] {
            s.push_str(&format!(
                "{:<38} {:>10.0} {:>10.2} {:>10.2}\n",
                f.name, f.per_sec, f.p50_ms, f.p99_ms
            ));
        }
        s.push_str(&format!(
            "{:<38} {:>10.3} {:>10.1} {:>10.1}\n",
            "ratio pipeline/baseline (rate; latency x)",
            self.pipeline.per_sec / self.baseline.per_sec,
            self.pipeline.p50_ms / self.baseline.p50_ms.max(0.001),
            self.pipeline.p99_ms / self.baseline.p99_ms.max(0.001),
        ));
        s
    }
}

fn figures(name: &'static str, count: usize, elapsed: Duration, hist: &Histogram<u64>) -> Figures {
    Figures {
        name,
        count,
        per_sec: count as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
    }
}

/// Run the benchmark against a fresh nats-server of its own.
pub async fn run(opts: BenchOptions) -> Result<Report> {
    let binary = find_binary(&std::env::current_dir()?).map_err(|e| anyhow!(e))?;
    let version = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let store = tempfile_dir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let _nats = LocalNats::start(&binary, port, &store, None).map_err(|e| anyhow!(e))?;
    let url = format!("nats://127.0.0.1:{port}");
    let baseline = baseline(&url, &opts).await.context("baseline")?;
    let pipeline = pipeline(&url, &opts, &store).await.context("pipeline")?;
    let _ = std::fs::remove_dir_all(&store);
    Ok(Report {
        baseline,
        pipeline,
        options: opts,
        nats_version: version,
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("tocsin-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// Raw JetStream: a work-queue stream, windowed publishes with ids, one pull consumer acking.
async fn baseline(url: &str, opts: &BenchOptions) -> Result<Figures> {
    let cfg = BusConfig {
        url: url.into(),
        prefix: "benchraw".into(),
        silo_count: 1,
        ..Default::default()
    };
    let bus = Bus::connect(&cfg, "bench").await?;
    let js = bus.jetstream().clone();
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "BENCH_RAW".into(),
            subjects: vec!["benchraw.wq.>".into()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await?;
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("c".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let n = opts.notifications;
    let start = Instant::now();
    let consume = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut msgs = consumer.messages().await?;
        let mut got = 0;
        while got < n {
            let m = msgs.next().await.ok_or_else(|| anyhow!("stream ended"))??;
            let sent: u64 = std::str::from_utf8(&m.payload)?.parse()?;
            let now = start.elapsed().as_micros() as u64;
            hist.record(now.saturating_sub(sent).max(1))?;
            m.ack().await.map_err(|e| anyhow!(e))?;
            got += 1;
        }
        Ok::<_, anyhow::Error>((start.elapsed(), hist))
    });
    let mut window = bus.window(opts.window);
    let pacer = Pacer::new(opts.rate);
    for i in 0..n {
        pacer.wait(i).await;
        let payload = start.elapsed().as_micros().to_string();
        window
            .push(
                format!("benchraw.wq.u{}", i % opts.users),
                format!("m{i}"),
                payload.into(),
            )
            .await;
    }
    window.flush().await?;
    let (elapsed, hist) = tokio::time::timeout(opts.timeout, consume)
        .await
        .context("baseline timed out")???;
    Ok(figures(
        "raw jetstream work queue (publish→ack)",
        n,
        elapsed,
        &hist,
    ))
}

/// tocsin: router and history running in this process; notifications published into the
/// silos as the API does; latency measured to the moment history has committed them.
async fn pipeline(url: &str, opts: &BenchOptions, store: &std::path::Path) -> Result<Figures> {
    let bus_cfg = BusConfig {
        url: url.into(),
        prefix: "bench".into(),
        silo_count: opts.silo_count,
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let router = tocsin_router::Config {
        bus: bus_cfg.clone(),
        router: tocsin_router::RouterConfig {
            ops_listen: String::new(),
            ..Default::default()
        },
    };
    let history = tocsin_history::Config {
        bus: bus_cfg.clone(),
        history: tocsin_history::HistoryConfig {
            ops_listen: String::new(),
            data_dir: store.join("history"),
            ..Default::default()
        },
    };
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let h = tokio::spawn(tocsin_history::run(history, shutdown.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..opts.users)
        .map(|i| UserId::parse(&format!("bench{i}")).expect("valid"))
        .collect();
    // create the users and wait until every avatar has confirmed
    let inbox = bus.client().new_inbox();
    let mut replies = bus.client().subscribe(format!("{inbox}.*")).await?;
    let mut window = bus.window(opts.window);
    for (i, u) in users.iter().enumerate() {
        let msg = AvatarMessage::Command {
            command_id: format!("create-{u}"),
            command: Command::CreateUser {
                name: u.to_string(),
                token_hash: "bench".into(),
                feed_token_hash: "bench".into(),
                inbound_token_hash: String::new(),
            },
            reply_to: Some(format!("{inbox}.{i}")),
        };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        window
            .push(subject, format!("create-{u}"), tocsin_bus::encode(&msg)?)
            .await;
    }
    window.flush().await?;
    for _ in 0..users.len() {
        tokio::time::timeout(opts.timeout, replies.next())
            .await
            .context("users not created in time")?;
    }
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut live = bus
        .client()
        .subscribe(format!("{}.live.*", bus.subjects().prefix()))
        .await?;
    let n = opts.notifications;
    let sent_c = sent.clone();
    let start = Instant::now();
    let receive = tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut got = 0;
        while got < n {
            let m = live
                .next()
                .await
                .ok_or_else(|| anyhow!("live subscription ended"))?;
            let note: Notification = serde_json::from_slice(&m.payload)?;
            if let Some(t) = sent_c.lock().expect("lock").remove(note.id.as_str()) {
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                got += 1;
            }
        }
        Ok::<_, anyhow::Error>((start.elapsed(), hist))
    });
    let mut window = bus.window(opts.window);
    let pacer = Pacer::new(opts.rate);
    for i in 0..n {
        pacer.wait(i).await;
        let u = &users[i % users.len()];
        let id = NotificationId(format!("nbench{i}"));
        let note = Notification {
            id: id.clone(),
            user: u.clone(),
            source: SourceRef {
                kind: SourceKind::Publish,
                id: None,
                label: "bench".into(),
            },
            title: format!("bench notification {i}"),
            body: "a benchmark notification body of a typical length for an alert".into(),
            url: None,
            priority: Priority::DEFAULT,
            tags: vec![],
            created_at_ms: now_ms(),
            published_at_ms: None,
            dedup_key: None,
        };
        let msg = AvatarMessage::Notify { notification: note };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        sent.lock()
            .expect("lock")
            .insert(id.0.clone(), Instant::now());
        window.push(subject, id.0, tocsin_bus::encode(&msg)?).await;
    }
    window.flush().await?;
    let result = tokio::time::timeout(opts.timeout, receive).await;
    shutdown.cancel();
    let _ = r.await;
    let _ = h.await;
    let (elapsed, hist) = result.context("pipeline timed out")???;
    Ok(figures(
        "tocsin publish→router→history (stored)",
        n,
        elapsed,
        &hist,
    ))
}
