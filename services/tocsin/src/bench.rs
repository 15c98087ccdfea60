//! `tocsin bench`: push N notifications through publish → router → history and → delivery
//! (to the `sink` channel, which does no I/O) on this machine and print the rate and latency
//! of both, next to a raw JetStream work-queue publish → consume baseline measured in the same
//! run on the same server.

use anyhow::{Context, Result, anyhow};
use async_nats::jetstream;
use futures::StreamExt;
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_model::{
    AvatarMessage, Channel, Command, Destination, Notification, NotificationId, Priority,
    SourceKind, SourceRef, UserId, now_ms,
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

pub struct Report {
    pub baseline: Figures,
    /// Publish → committed to history.
    pub pipeline: Figures,
    /// Publish → delivered to the sink channel (its outcome reported).
    pub delivered: Figures,
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
        s.push_str(&figure_rows(
            &[&self.baseline, &self.pipeline, &self.delivered],
            44,
        ));
        for (what, f) in [("stored", &self.pipeline), ("delivered", &self.delivered)] {
            s.push_str(&format!(
                "{:<44} {:>10.3} {:>10.1} {:>10.1} {:>10.1}\n",
                format!("ratio {what}/baseline (rate; latency x)"),
                f.per_sec / self.baseline.per_sec,
                f.p50_ms / self.baseline.p50_ms.max(0.001),
                f.p99_ms / self.baseline.p99_ms.max(0.001),
                f.p999_ms / self.baseline.p999_ms.max(0.001),
            ));
        }
        s
    }
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

/// Run the benchmark against a fresh nats-server of its own.
pub async fn run(opts: BenchOptions) -> Result<Report> {
    let nats = BenchNats::start()?;
    let version = std::process::Command::new(&nats.binary)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let url = nats.url.clone();
    let baseline = baseline(&url, &opts).await.context("baseline")?;
    let (pipeline, delivered) = pipeline(&url, &opts, &nats.store)
        .await
        .context("pipeline")?;
    Ok(Report {
        baseline,
        pipeline,
        delivered,
        options: opts,
        nats_version: version,
    })
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
        Command::CreateUser {
            name: u.to_string(),
            token_hash: "bench".into(),
            feed_token_hash: "bench".into(),
            inbound_token_hash: inbound_hash(u),
        }
    })
    .await
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

/// A typical notification for the benchmarks.
pub(crate) fn notification(user: &UserId, id: String, title: String) -> Notification {
    Notification {
        id: NotificationId(id),
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

/// Raw JetStream: a work-queue stream, windowed publishes with ids, one pull consumer acking.
pub(crate) async fn baseline(url: &str, opts: &BenchOptions) -> Result<Figures> {
    // each run its own stream: message ids repeat from one run to the next
    use std::sync::atomic::{AtomicU32, Ordering};
    static RUN: AtomicU32 = AtomicU32::new(0);
    let run = RUN.fetch_add(1, Ordering::Relaxed);
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
    Ok(figures(
        "raw jetstream work queue (publish→ack)",
        n,
        elapsed,
        &hist,
    ))
}

/// tocsin: router and history running in this process; notifications published into the
/// silos as the API does; latency measured to the moment history has committed them.
/// Publish → router → history and → delivery (sink): the figures to "stored" and to
/// "delivered", from one run.
async fn pipeline(
    url: &str,
    opts: &BenchOptions,
    store: &std::path::Path,
) -> Result<(Figures, Figures)> {
    let (bus_cfg, router) = bench_router(url, "bench", opts.silo_count);
    let shutdown = CancellationToken::new();
    let history = tocsin_history::Config {
        bus: bus_cfg.clone(),
        history: tocsin_history::HistoryConfig {
            ops_listen: String::new(),
            data_dir: store.join("history"),
            ..Default::default()
        },
    };
    let delivery = tocsin_delivery::Config {
        bus: bus_cfg.clone(),
        delivery: tocsin_delivery::DeliveryConfig {
            ops_listen: String::new(),
            channels: vec![Channel::Sink],
            ..Default::default()
        },
    };
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let h = tokio::spawn(tocsin_history::run(history, shutdown.clone()));
    let d = tokio::spawn(tocsin_delivery::run(delivery, shutdown.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..opts.users)
        .map(|i| UserId::parse(&format!("bench{i}")).expect("valid"))
        .collect();
    // create the users, each with a sink destination, and wait until every avatar has
    // confirmed
    create_users(&bus, &users, |_| String::new(), opts.window, opts.timeout).await?;
    add_sinks(&bus, &users, opts.window, opts.timeout).await?;
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let prefix = bus.subjects().prefix().to_owned();
    let live = bus.client().subscribe(format!("{prefix}.live.*")).await?;
    // delivery reports each job's outcome to the user's avatar: seen here as it is published
    let outcomes = bus
        .client()
        .subscribe(format!("{prefix}.silo.*.*.outcome"))
        .await?;
    let n = opts.notifications;
    let start = Instant::now();
    let stored = receive(live, n, sent.clone(), start, |payload| {
        let note: Notification = serde_json::from_slice(payload).ok()?;
        Some(note.id.0)
    });
    let delivered =
        receive(
            outcomes,
            n,
            sent.clone(),
            start,
            |payload| match serde_json::from_slice(payload).ok()? {
                AvatarMessage::Outcome { outcome } if outcome.delivered => {
                    Some(outcome.notification_id.0)
                }
                _ => None,
            },
        );
    let mut window = bus.window(opts.window);
    let pacer = Pacer::new(opts.rate);
    for i in 0..n {
        pacer.wait(i).await;
        let u = &users[i % users.len()];
        let note = notification(u, format!("nbench{i}"), format!("bench notification {i}"));
        let id = note.id.clone();
        let msg = AvatarMessage::Notify { notification: note };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        sent.lock()
            .expect("lock")
            .insert(id.0.clone(), Instant::now());
        window.push(subject, id.0, tocsin_bus::encode(&msg)?).await;
    }
    window.flush().await?;
    let stored = tokio::time::timeout(opts.timeout, stored).await;
    let delivered = tokio::time::timeout(opts.timeout, delivered).await;
    shutdown.cancel();
    let _ = r.await;
    let _ = h.await;
    let _ = d.await;
    let (stored_in, stored_hist) = stored.context("history timed out")???;
    let (delivered_in, delivered_hist) = delivered.context("delivery timed out")???;
    Ok((
        figures(
            "tocsin publish→router→history (stored)",
            n,
            stored_in,
            &stored_hist,
        ),
        figures(
            "tocsin publish→router→delivery (sink)",
            n,
            delivered_in,
            &delivered_hist,
        ),
    ))
}

/// A task that reads `n` distinct notification ids (`id_of` each message) from `sub` and
/// records each one's latency since it was sent; returns the time from `start` and the
/// histogram.
fn receive(
    mut sub: async_nats::Subscriber,
    n: usize,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    start: Instant,
    id_of: impl Fn(&[u8]) -> Option<String> + Send + 'static,
) -> tokio::task::JoinHandle<Result<(Duration, Histogram<u64>)>> {
    tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut seen = std::collections::HashSet::new();
        while seen.len() < n {
            let m = sub
                .next()
                .await
                .ok_or_else(|| anyhow!("subscription ended"))?;
            let Some(id) = id_of(&m.payload) else {
                continue;
            };
            let at = sent.lock().expect("lock").get(&id).copied();
            if let Some(t) = at
                && seen.insert(id)
            {
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
            }
        }
        Ok((start.elapsed(), hist))
    })
}

/// Give each user a `sink` destination and wait until every avatar has confirmed.
async fn add_sinks(bus: &Bus, users: &[UserId], window: usize, timeout: Duration) -> Result<()> {
    command_each(bus, users, "sink", window, timeout, |_| {
        Command::AddDestination {
            destination: Destination {
                id: "sink".into(),
                channel: Channel::Sink,
                address: "bench".into(),
                secret: None,
                label: String::new(),
                push_format: None,
                created_at_ms: now_ms(),
            },
        }
    })
    .await
}

/// Options of `tocsin bench-mail`.
#[derive(Debug, Clone)]
pub struct MailBenchOptions {
    pub messages: usize,
    pub senders: usize,
    pub users: usize,
    pub timeout: Duration,
}

pub struct MailReport {
    pub baseline: Figures,
    pub ingress: Figures,
    pub parse_us: f64,
    pub options: MailBenchOptions,
}

impl MailReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin bench-mail: {} messages from {} concurrent SMTP senders to {} addresses\n",
            o.messages, o.senders, o.users
        );
        s.push_str(&figure_rows(&[&self.baseline, &self.ingress], 44));
        s.push_str(&format!(
            "{:<44} {:>10.3}\n",
            "ratio ingress/baseline (rate)",
            self.ingress.per_sec / self.baseline.per_sec
        ));
        s.push_str(&format!(
            "{:<44} {:>10.1}\n",
            "parse cost per message (µs, Grafana alert)", self.parse_us
        ));
        s
    }
}

const ALERT: &[u8] = include_bytes!("../../ingestor/tests/mail/grafana-alert.eml");

/// SMTP transactions through the ingress (accepted = on the bus), against a raw JetStream
/// baseline from the same run, and the parser's cost alone.
pub async fn run_mail(opts: MailBenchOptions) -> Result<MailReport> {
    let parse_us = {
        let n = 5000;
        let started = Instant::now();
        for _ in 0..n {
            std::hint::black_box(tocsin_ingestor::mail::parse(std::hint::black_box(ALERT)));
        }
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    };
    let nats = BenchNats::start()?;
    let url = nats.url.clone();
    let base_opts = BenchOptions {
        notifications: opts.messages,
        users: opts.users,
        silo_count: 16,
        window: 512,
        rate: 0,
        timeout: opts.timeout,
    };
    let baseline = baseline(&url, &base_opts).await.context("baseline")?;

    let bus_cfg = BusConfig {
        url: url.clone(),
        prefix: "benchmail".into(),
        silo_count: 16,
        ..Default::default()
    };
    let smtp_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let shutdown = CancellationToken::new();
    let router = tocsin_router::Config {
        bus: bus_cfg.clone(),
        router: tocsin_router::RouterConfig {
            ops_listen: String::new(),
            ..Default::default()
        },
    };
    let ingestor = tocsin_ingestor::Config {
        bus: bus_cfg.clone(),
        ingestor: tocsin_ingestor::IngestorConfig {
            ops_listen: String::new(),
            smtp_listen: format!("127.0.0.1:{smtp_port}"),
            smtp_per_address_per_minute: 0,
            smtp_max_connections: opts.senders.max(1) * 2,
            ..Default::default()
        },
    };
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let i = tokio::spawn(tocsin_ingestor::run(ingestor, shutdown.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..opts.users)
        .map(|n| UserId::parse(&format!("mail{n}")).expect("valid"))
        .collect();
    let secret = |u: &UserId| format!("s{u}");
    create_users(
        &bus,
        &users,
        |u| tocsin_model::hash_token(&secret(u)),
        512,
        opts.timeout,
    )
    .await?;
    let addresses: Vec<String> = users
        .iter()
        .map(|u| format!("{u}.{}@bench.test", secret(u)))
        .collect();
    // wait for the SMTP listener
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", smtp_port))
        .await
        .is_err()
    {
        if i.is_finished() {
            shutdown.cancel();
            let result = i.await?;
            return Err(anyhow!("the ingestor stopped: {:?}", result.err()));
        }
        anyhow::ensure!(Instant::now() < deadline, "the SMTP ingress did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let per_sender = opts.messages.div_ceil(opts.senders.max(1));
    let addresses = Arc::new(addresses);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..opts.senders.max(1) {
        let addresses = addresses.clone();
        let total = opts.messages;
        tasks.spawn(async move {
            // one connection per sender, reused, with TCP_NODELAY as production MTAs do
            let mut smtp = SmtpClient::connect(smtp_port).await?;
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut sent = 0;
            for k in 0..per_sender {
                let n = s * per_sender + k;
                if n >= total {
                    break;
                }
                let to = &addresses[n % addresses.len()];
                let raw = format!(
                    "From: Grafana <alerts@grafana.example.org>\r\nTo: {to}\r\nSubject: [FIRING:1] DiskSpaceLow db{n}\r\nMessage-ID: <bench-{n}@grafana.example.org>\r\nX-Priority: 1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nValue: A=97.3\r\nsummary = /var is 97% full on db{n}\r\nSource: https://grafana.example.org/alerting/{n}/view\r\n"
                );
                let t = Instant::now();
                smtp.send("alerts@grafana.example.org", to, &raw).await?;
                hist.record(t.elapsed().as_micros().max(1) as u64)?;
                sent += 1;
            }
            smtp.quit().await;
            Ok::<_, anyhow::Error>((sent, hist))
        });
    }
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let mut sent = 0;
    while let Some(done) = tasks.join_next().await {
        let (n, h) = done??;
        sent += n;
        hist.add(h)?;
    }
    let elapsed = started.elapsed();
    shutdown.cancel();
    let _ = r.await;
    let _ = i.await;
    Ok(MailReport {
        baseline,
        ingress: figures(
            "tocsin SMTP ingress (250 = on the bus)",
            sent,
            elapsed,
            &hist,
        ),
        parse_us,
        options: opts,
    })
}

/// A minimal SMTP client for the benchmark: one transaction at a time on one connection.
struct SmtpClient {
    r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl SmtpClient {
    async fn connect(port: u16) -> Result<Self> {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.set_nodelay(true)?;
        let (r, w) = stream.into_split();
        let mut c = Self {
            r: tokio::io::BufReader::new(r),
            w,
        };
        c.expect("220").await?;
        c.command("EHLO bench.test\r\n", "250").await?;
        Ok(c)
    }

    async fn expect(&mut self, code: &str) -> Result<()> {
        use tokio::io::AsyncBufReadExt;
        loop {
            let mut line = String::new();
            anyhow::ensure!(
                self.r.read_line(&mut line).await? > 0,
                "the server closed the connection"
            );
            anyhow::ensure!(
                line.starts_with(code),
                "expected {code}, got {}",
                line.trim()
            );
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(());
            }
        }
    }

    async fn command(&mut self, line: &str, code: &str) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        self.w.write_all(line.as_bytes()).await?;
        self.expect(code).await
    }

    async fn send(&mut self, from: &str, to: &str, data: &str) -> Result<()> {
        self.command(&format!("MAIL FROM:<{from}>\r\n"), "250")
            .await?;
        self.command(&format!("RCPT TO:<{to}>\r\n"), "250").await?;
        self.command("DATA\r\n", "354").await?;
        self.command(&format!("{data}.\r\n"), "250").await
    }

    async fn quit(&mut self) {
        let _ = self.command("QUIT\r\n", "221").await;
    }
}
