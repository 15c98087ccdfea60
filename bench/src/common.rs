//! What every benchmark shares: a nats-server of its own, the raw JetStream baseline, a pacer
//! for fixed-rate runs, latency figures from a histogram, and the helpers that create users and
//! send them commands.

use crate::pipeline::BenchOptions;
use anyhow::{Context, Result, anyhow};
use async_nats::jetstream;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_model::{
    AvatarMessage, Channel, Command, Destination, Notification, NotificationId, Priority,
    SourceKind, SourceRef, UserId, now_ms,
};
use tocsin_runtime::local_nats::{LocalNats, find_binary};

/// Spaces publishes at a fixed rate (or not at all).
pub(crate) struct Pacer {
    start: tokio::time::Instant,
    rate: u64,
}

impl Pacer {
    pub(crate) fn new(rate: u64) -> Self {
        Self {
            start: tokio::time::Instant::now(),
            rate,
        }
    }

    pub(crate) async fn wait(&self, i: usize) {
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
    pub p999_ms: f64,
}

pub(crate) fn figures(
    name: &'static str,
    count: usize,
    elapsed: Duration,
    hist: &Histogram<u64>,
) -> Figures {
    Figures {
        name,
        count,
        per_sec: count as f64 / elapsed.as_secs_f64(),
        p50_ms: hist.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: hist.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: hist.value_at_quantile(0.999) as f64 / 1000.0,
    }
}

/// A nats-server of the benchmark's own, on a free loopback port with a fresh store; killed
/// and its store removed when dropped.
pub(crate) struct BenchNats {
    nats: LocalNats,
    pub binary: std::path::PathBuf,
    pub store: std::path::PathBuf,
    pub url: String,
}

impl BenchNats {
    /// A meter of this process's CPU and this server's.
    pub(crate) fn cpu_meter(&self) -> crate::cpu::CpuMeter {
        crate::cpu::CpuMeter::new(self.nats.pid())
    }

    pub(crate) fn start() -> Result<BenchNats> {
        let binary = find_binary(&std::env::current_dir()?).map_err(|e| anyhow!(e))?;
        let store = tempfile_dir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let nats = LocalNats::start(&binary, port, &store, None).map_err(|e| anyhow!(e))?;
        Ok(BenchNats {
            url: nats.url(),
            nats,
            binary,
            store,
        })
    }
}

impl Drop for BenchNats {
    fn drop(&mut self) {
        self.nats.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

/// Create `users` through their avatars (as the API does) and wait until each has confirmed.
pub(crate) async fn create_users(
    bus: &Bus,
    users: &[UserId],
    inbound_hash: impl Fn(&UserId) -> String,
    window: usize,
    timeout: Duration,
) -> Result<()> {
    command_each(bus, users, "create", window, timeout, |u| {
        create_user(u, inbound_hash(u))
    })
    .await
}

/// Wait until the work-queue streams `kinds` hold nothing: every message in them acked (an
/// avatar acks its silo's message after its checkpoint), `timeout` at most; `what` names the
/// wait in its error.
pub(crate) async fn emptied(
    bus: &Bus,
    kinds: impl IntoIterator<Item = tocsin_bus::StreamKind>,
    timeout: Duration,
    what: &str,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    for kind in kinds {
        let name = bus.subjects().stream(kind);
        loop {
            let mut s = bus.jetstream().get_stream(&name).await?;
            if s.info().await?.state.messages == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{what}: {name} not emptied in time"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

/// A bench user's destination `id` on `channel` at `address`, with nothing else set.
pub(crate) fn destination(id: &str, channel: Channel, address: String) -> Destination {
    Destination {
        id: id.into(),
        channel,
        address,
        secret: None,
        label: String::new(),
        push_format: None,
        throttle: None,
        verification: None,
        created_at_ms: now_ms(),
    }
}

/// The command creating a bench user (`inbound_token_hash` empty: no inbound address).
pub(crate) fn create_user(u: &UserId, inbound_token_hash: String) -> Command {
    Command::CreateUser {
        name: u.to_string(),
        token_hash: "bench".into(),
        feed_token_hash: "bench".into(),
        inbound_token_hash,
    }
}

/// Send each user's avatar one command (`command(user)`, id `<what>-<user>`) through a
/// publish window, and wait until every avatar has answered ok.
pub(crate) async fn command_each(
    bus: &Bus,
    users: &[UserId],
    what: &str,
    window: usize,
    timeout: Duration,
    command: impl Fn(&UserId) -> Command,
) -> Result<()> {
    let inbox = bus.client().new_inbox();
    let replies = bus.client().subscribe(format!("{inbox}.*")).await?;
    // count the answers while publishing: a subscription's buffer would overflow otherwise
    let confirmed = count_replies(replies, users.len(), timeout);
    let mut w = bus.window(window);
    for (i, u) in users.iter().enumerate() {
        let id = format!("{what}-{u}");
        let msg = AvatarMessage::Command {
            command_id: id.clone(),
            command: command(u),
            reply_to: Some(format!("{inbox}.{i}")),
        };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        w.push(subject, id, tocsin_bus::encode(&msg)?).await;
    }
    w.flush().await?;
    confirmed.await.context("the reply counter failed")?
}

/// A task that reads `n` command replies and checks each is ok.
pub(crate) fn count_replies(
    mut replies: async_nats::Subscriber,
    n: usize,
    timeout: Duration,
) -> tokio::task::JoinHandle<Result<()>> {
    tokio::spawn(async move {
        for _ in 0..n {
            let m = tokio::time::timeout(timeout, replies.next())
                .await
                .context("commands not confirmed in time")?
                .ok_or_else(|| anyhow!("reply subscription ended"))?;
            let r: tocsin_model::CommandReply = serde_json::from_slice(&m.payload)?;
            anyhow::ensure!(r.ok, "a command was refused: {:?}", r.message);
        }
        Ok(())
    })
}

/// The bus and router settings of a benchmark run under `prefix` (no ops listener).
pub(crate) fn bench_router(
    url: &str,
    prefix: &str,
    silos: u32,
) -> (BusConfig, tocsin_router::Config) {
    let bus = BusConfig {
        url: url.into(),
        prefix: prefix.into(),
        silo_count: silos,
        ..Default::default()
    };
    let router = tocsin_router::Config {
        bus: bus.clone(),
        router: tocsin_router::RouterConfig {
            ops_listen: String::new(),
            ..Default::default()
        },
    };
    (bus, router)
}

/// A typical notification for the benchmarks, published with idempotency key `key`: its id is
/// derived as the API derives it (a hash, so stores index ids spread as in production, not in
/// the order they were sent).
pub(crate) fn notification(user: &UserId, key: String, title: String) -> Notification {
    Notification {
        id: NotificationId::for_publish(user, &key),
        user: user.clone(),
        source: SourceRef {
            kind: SourceKind::Publish,
            id: None,
            label: "bench".into(),
        },
        title,
        body: "a benchmark notification".into(),
        url: None,
        priority: Priority::DEFAULT,
        tags: vec![],
        created_at_ms: now_ms(),
        published_at_ms: None,
        dedup_key: None,
    }
}

/// The figures as table rows under a header, `width` wide in the first column.
pub(crate) fn figure_rows(rows: &[&Figures], width: usize) -> String {
    let mut s = format!(
        "{:<width$} {:>10} {:>10} {:>10} {:>10}\n",
        "path", "msgs/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    for f in rows {
        s.push_str(&format!(
            "{:<width$} {:>10.0} {:>10.2} {:>10.2} {:>10.2}\n",
            f.name, f.per_sec, f.p50_ms, f.p99_ms, f.p999_ms
        ));
    }
    s
}

/// A fresh directory for one benchmark run (runs in one process never share one).
pub(crate) fn tempfile_dir() -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let d = std::env::temp_dir().join(format!(
        "tocsin-bench-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// A connection, as the bench, to the server at `url` under `prefix` (one silo: the streams a
/// baseline makes are its own).
pub(crate) async fn bench_bus(url: &str, prefix: &str) -> Result<Bus> {
    let cfg = BusConfig {
        url: url.into(),
        prefix: prefix.into(),
        silo_count: 1,
        ..Default::default()
    };
    Ok(Bus::connect(&cfg, "bench").await?)
}

/// Raw JetStream: a work-queue stream, windowed publishes with ids, one pull consumer acking.
pub(crate) async fn baseline(url: &str, opts: &BenchOptions) -> Result<Figures> {
    // each run its own stream: message ids repeat from one run to the next
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let bus = bench_bus(url, "benchraw").await?;
    let js = bus.jetstream().clone();
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: format!("BENCH_RAW_{run}"),
            subjects: vec![format!("benchraw.wq{run}.>")],
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
        // the services' own pull: a missed heartbeat on a busy machine renews it, as there
        let mut msgs = tocsin_bus::Pull::new(consumer, 512, "the baseline");
        let mut got = 0;
        while got < n {
            let m = msgs.next().await;
            let sent: u64 = std::str::from_utf8(&m.message().payload)?.parse()?;
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
                format!("benchraw.wq{run}.u{}", i % opts.users),
                format!("m{i}"),
                payload.into(),
            )
            .await;
    }
    window.flush().await?;
    let (elapsed, hist) = tokio::time::timeout(opts.timeout, consume)
        .await
        .context("baseline timed out")???;
    // the last acks are on their way out of this connection's buffer: sent before it closes
    bus.client().flush().await?;
    Ok(figures(
        "raw jetstream work queue (publish→ack)",
        n,
        elapsed,
        &hist,
    ))
}

/// Give each user's stored record `keys` recent keys (half notification ids, half content
/// keys, as routing adds them), written while no router runs: the avatars woken next meet the
/// record of a user who has had notifications for a while. Stored as an avatar stores them:
/// past `RecentSet::SPILL` of them, as a base of their own and a record naming it (ADR 0033).
pub(crate) async fn age_records(bus: &Bus, users: &[UserId], keys: usize) -> Result<()> {
    use futures::StreamExt;
    let avatars = bus.kv("avatars").await?;
    let seen = bus.kv("seen").await?;
    let started = std::time::Instant::now();
    let (avatars, seen) = (&avatars, &seen);
    let mut writes = futures::stream::iter(users.iter().map(|u| async move {
        let stored = avatars
            .get(u.as_str())
            .await?
            .ok_or_else(|| anyhow::anyhow!("{u} has no record to age"))?;
        let mut rec: tocsin_model::UserRecord = serde_json::from_slice(&stored)?;
        for k in 0..keys {
            let key = format!("aged{k}");
            rec.recent.insert(if k % 2 == 0 {
                tocsin_model::NotificationId::for_publish(u, &key).0
            } else {
                format!("k:sha256:{}", tocsin_model::digest(&[&key]))
            });
        }
        if rec.recent.wants_base() {
            let revision = seen.put(u.as_str(), rec.recent.base_bytes().into()).await?;
            rec.recent.rebased(revision);
        }
        avatars
            .put(u.as_str(), serde_json::to_vec(&rec)?.into())
            .await?;
        Ok::<_, anyhow::Error>(())
    }))
    .buffer_unordered(64);
    while let Some(done) = writes.next().await {
        done?;
    }
    eprintln!(
        "bench: {} records aged with {keys} recent keys in {:.1} s",
        users.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
