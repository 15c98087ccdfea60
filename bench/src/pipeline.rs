//! `tocsin-bench pipeline`: push N notifications through publish → router → history and → delivery
//! (to the `sink` channel, which does no I/O) on this machine and print the rate and latency
//! of both, next to a raw JetStream work-queue publish → consume baseline measured in the same
//! run on the same server.

use crate::common::{
    BenchNats, Figures, Pacer, baseline, bench_router, command_each, create_users, destination,
    figure_rows, figures, notification,
};
use crate::cpu::{CpuMeter, CpuPer};
use crate::floor::Floor;
use crate::writes::{WritesPer, settled, stored};
use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tocsin_bus::Bus;
use tocsin_model::{AvatarMessage, Channel, Command, Destination, EventKind, UserId};
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
    /// Notifications each user gets (in a burst, awaited) before the measured ones, so the
    /// avatars carry a history (recent ids in their records) as a long-lived user's do.
    pub warm: usize,
}

pub struct Report {
    pub baseline: Figures,
    /// Publish → committed to history.
    pub pipeline: Figures,
    /// Publish → delivered to the sink channel (its outcome reported).
    pub delivered: Figures,
    pub options: BenchOptions,
    pub nats_version: String,
    /// One notification's latency by hop, from the router's and delivery's own events.
    pub hops: Hops,
    /// The CPU each message cost the baseline and each notification cost tocsin (until the
    /// last was stored and delivered), where `/proc` could be read.
    pub cpu: Option<(CpuPer, CpuPer)>,
    /// The JetStream writes (stored messages, KV included) each message cost the baseline and
    /// each notification cost tocsin: from where `cpu` starts until every consumer had acked
    /// all it was given (later than `cpu` ends: checkpoints and settled envelopes count too).
    pub writes: (WritesPer, WritesPer),
    /// The same notifications through tocsin's hops with none of its work ([`crate::floor`]):
    /// what the shape itself costs on this server.
    pub floor: Floor,
}

/// Per-hop latency percentiles (p50, p99) in ms, from the `routed` and `delivered` events'
/// `latency_ms` (each since the notification's creation, at millisecond resolution).
#[derive(Debug, Clone, Default)]
pub struct Hops {
    /// Publish → the avatar routed it (silo stream, router, its batch).
    pub routed: (f64, f64),
    /// Routed → the sink delivered it (the job through the delivery stream, the lane, the send).
    pub to_delivered: (f64, f64),
    /// Notifications both events were seen for.
    pub seen: usize,
}

impl Report {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin-bench pipeline: {} notifications, {} users{}, {} silos, window {}, {}, nats-server {}\n",
            o.notifications,
            o.users,
            match o.warm {
                0 => String::new(),
                w => format!(" (warmed up with {w} each)"),
            },
            o.silo_count,
            o.window,
            if o.rate == 0 {
                "burst".to_owned()
            } else {
                format!("{}/s offered", o.rate)
            },
            self.nats_version
        );
        let floor = &self.floor;
        s.push_str(&figure_rows(
            &[
                &self.baseline,
                &floor.stored,
                &floor.delivered,
                &self.pipeline,
                &self.delivered,
            ],
            44,
        ));
        let h = &self.hops;
        s.push_str(&format!(
            "hops ({} notifications, ms from their events): publish → routed p50 {:.0} p99 {:.0}; routed → delivered p50 {:.0} p99 {:.0}\n",
            h.seen, h.routed.0, h.routed.1, h.to_delivered.0, h.to_delivered.1
        ));
        if let Some((raw, ours)) = &self.cpu {
            let of = |c: &CpuPer| {
                format!(
                    "{:.1} + {:.1} = {:.1}",
                    c.process_us,
                    c.server_us,
                    c.total_us()
                )
            };
            let floor = floor.cpu.as_ref().map_or("-".into(), of);
            s.push_str(&format!(
                "cpu per message, µs (this process + nats-server): raw {}; floor {floor}; tocsin {} ({:.1}x)\n",
                of(raw),
                of(ours),
                ours.total_us() / raw.total_us().max(0.001)
            ));
        }
        let (raw, ours) = &self.writes;
        s.push_str(&format!(
            "jetstream writes per message (stored, KV included): raw {:.2}; floor {:.2}; tocsin {ours}\n",
            raw.total, floor.writes.total
        ));
        for (what, f, base, against) in [
            ("stored", &self.pipeline, &self.baseline, "baseline"),
            ("delivered", &self.delivered, &self.baseline, "baseline"),
            ("stored", &self.pipeline, &floor.stored, "floor"),
            ("delivered", &self.delivered, &floor.delivered, "floor"),
        ] {
            s.push_str(&format!(
                "{:<44} {:>10.3} {:>10.1} {:>10.1} {:>10.1}\n",
                format!("ratio {what}/{against} (rate; latency x)"),
                f.per_sec / base.per_sec,
                f.p50_ms / base.p50_ms.max(0.001),
                f.p99_ms / base.p99_ms.max(0.001),
                f.p999_ms / base.p999_ms.max(0.001),
            ));
        }
        s
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
    let meter = nats.cpu_meter();
    let js = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let before = meter.read();
    let written = stored(&js).await?;
    let baseline = baseline(&url, &opts).await.context("baseline")?;
    let raw_cpu = before
        .zip(meter.read())
        .map(|(a, b)| a.per(b, baseline.count));
    let raw_writes = written.per(&stored(&js).await?, baseline.count);
    let floor = crate::floor::run(&url, &opts, &nats.store, meter)
        .await
        .context("the shape's floor")?;
    let (pipeline, delivered, hops, (cpu, writes)) = pipeline(&url, &opts, &nats.store, meter)
        .await
        .context("pipeline")?;
    Ok(Report {
        baseline,
        pipeline,
        delivered,
        hops,
        cpu: raw_cpu.zip(cpu),
        writes: (raw_writes, writes),
        floor,
        options: opts,
        nats_version: version,
    })
}

/// tocsin: router and history running in this process; notifications published into the
/// silos as the API does; latency measured to the moment history has committed them.
/// Publish → router → history and → delivery (sink): the figures to "stored" and to
/// "delivered", from one run.
async fn pipeline(
    url: &str,
    opts: &BenchOptions,
    store: &std::path::Path,
    meter: CpuMeter,
) -> Result<(Figures, Figures, Hops, (Option<CpuPer>, WritesPer))> {
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
    if opts.warm > 0 {
        let burst = BenchOptions {
            rate: 0,
            ..opts.clone()
        };
        publish_and_wait(&bus, &users, users.len() * opts.warm, "warm", &burst)
            .await
            .context("warming the users up")?;
    }
    let n = opts.notifications;
    let cpu_before = meter.read();
    let written = stored(bus.jetstream()).await?;
    let (arrived, delivered) = publish_and_wait(&bus, &users, n, "nbench", opts).await?;
    let cpu = cpu_before.zip(meter.read()).map(|(a, b)| a.per(b, n));
    // the writes that follow the last delivery (checkpoints, settled envelopes) are the run's too
    settled(bus.jetstream(), opts.timeout).await?;
    let writes = written.per(&stored(bus.jetstream()).await?, n);
    shutdown.cancel();
    let _ = r.await;
    let _ = h.await;
    let _ = d.await;
    let (stored_in, stored_hist) = arrived;
    let ((delivered_in, delivered_hist), hops) = delivered;
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
        hops,
        (cpu, writes),
    ))
}

/// When the last of a path's notifications arrived, and each one's latency in µs.
type Arrival = (Duration, Histogram<u64>);

/// Publish `n` notifications round-robin over `users` (idempotency keys `<key><i>`) at
/// `opts.rate` (0: a burst) and wait until each is stored (history's live announcement of
/// it) and delivered (its `delivered` event): when the last of each arrived, each one's
/// latency, and the hops.
async fn publish_and_wait(
    bus: &Bus,
    users: &[UserId],
    n: usize,
    key: &str,
    opts: &BenchOptions,
) -> Result<(Arrival, (Arrival, Hops))> {
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let prefix = bus.subjects().prefix().to_owned();
    let live = bus.client().subscribe(format!("{prefix}.live.*")).await?;
    // delivery reports each delivered job with its `delivered` event: seen here as the
    // envelope carrying it is published. One subscription, each event decoded once: the
    // bench shares the process (and its two cores) with the services it measures.
    let events = bus.client().subscribe(bus.subjects().events_all()).await?;
    let start = Instant::now();
    let stored = receive(live, n, sent.clone(), start, |payload| {
        serde_json::from_slice::<Announced>(payload)
            .map(|note| note.id.into_owned())
            .into_iter()
            .collect()
    });
    let delivered = read_events(events, n, sent.clone(), start, Duration::from_secs(10));
    let mut window = bus.window(opts.window);
    let pacer = Pacer::new(opts.rate);
    for i in 0..n {
        pacer.wait(i).await;
        let u = &users[i % users.len()];
        let note = notification(u, format!("{key}{i}"), format!("bench notification {i}"));
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
    Ok((
        stored.context("history timed out")???,
        delivered.context("delivery timed out")???,
    ))
}

/// A task that reads the events of `n` notifications from `sub`, each message decoded once:
/// the time from each notification's publish (`sent`) to its `delivered` event being seen,
/// and the per-hop percentiles from the `routed` and `delivered` events' own times. Once every
/// notification is delivered it waits at most `linger` for `routed` events still missing.
fn read_events(
    mut sub: async_nats::Subscriber,
    n: usize,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    start: Instant,
    linger: Duration,
) -> tokio::task::JoinHandle<Result<(Arrival, Hops)>> {
    tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut all_delivered = None;
        let mut routed: HashMap<String, i64> = HashMap::new();
        let mut delivered: HashMap<String, i64> = HashMap::new();
        while all_delivered.is_none() || routed.len() < n {
            let m = match all_delivered {
                None => sub.next().await,
                Some(_) => match tokio::time::timeout(linger, sub.next()).await {
                    Ok(m) => m,
                    Err(_) => break,
                },
            }
            .ok_or_else(|| anyhow!("subscription ended"))?;
            for r in tocsin_bus::envelope::records(&m.payload).unwrap_or_default() {
                let Ok(e) = serde_json::from_slice::<Seen>(&r.payload) else {
                    continue;
                };
                let (Some(id), Some(ms)) = (e.notification, e.latency_ms) else {
                    continue;
                };
                match e.kind {
                    EventKind::Routed => {
                        routed.insert(id.into_owned(), ms);
                    }
                    EventKind::Delivered if !delivered.contains_key(id.as_ref()) => {
                        if let Some(t) = sent.lock().expect("lock").get(id.as_ref()) {
                            hist.record(t.elapsed().as_micros().max(1) as u64)?;
                        }
                        delivered.insert(id.into_owned(), ms);
                    }
                    _ => {}
                }
            }
            if all_delivered.is_none() && delivered.len() >= n {
                all_delivered = Some(start.elapsed());
            }
        }
        let mut to_routed = Histogram::<u64>::new(3).expect("histogram");
        let mut onward = Histogram::<u64>::new(3).expect("histogram");
        let mut seen = 0;
        for (id, r) in &routed {
            if let Some(d) = delivered.get(id) {
                let _ = to_routed.record((*r).max(0) as u64);
                let _ = onward.record((d - r).max(0) as u64);
                seen += 1;
            }
        }
        let p = |h: &Histogram<u64>| {
            (
                h.value_at_quantile(0.5) as f64,
                h.value_at_quantile(0.99) as f64,
            )
        };
        let hops = Hops {
            routed: p(&to_routed),
            to_delivered: p(&onward),
            seen,
        };
        Ok((
            (all_delivered.unwrap_or_else(|| start.elapsed()), hist),
            hops,
        ))
    })
}

/// What the bench reads of an event (one, or each record of an envelope; unreadable ones left
/// out). The bench shares the process and its two cores with the services it measures, so it
/// reads only these fields: the rest is skipped without being allocated.
#[derive(Deserialize)]
struct Seen<'a> {
    kind: EventKind,
    #[serde(borrow, default)]
    notification: Option<Cow<'a, str>>,
    #[serde(default)]
    latency_ms: Option<i64>,
}

/// What the bench reads of history's live announcement of a stored notification: its id.
#[derive(Deserialize)]
struct Announced<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
}

/// A task that reads `n` distinct notification ids (`id_of` each message) from `sub` and
/// records each one's latency since it was sent; returns the time from `start` and the
/// histogram.
fn receive(
    mut sub: async_nats::Subscriber,
    n: usize,
    sent: Arc<Mutex<HashMap<String, Instant>>>,
    start: Instant,
    id_of: impl Fn(&bytes::Bytes) -> Vec<String> + Send + 'static,
) -> tokio::task::JoinHandle<Result<Arrival>> {
    tokio::spawn(async move {
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut seen = std::collections::HashSet::new();
        while seen.len() < n {
            let m = sub
                .next()
                .await
                .ok_or_else(|| anyhow!("subscription ended"))?;
            for id in id_of(&m.payload) {
                let at = sent.lock().expect("lock").get(&id).copied();
                if let Some(t) = at
                    && seen.insert(id)
                {
                    hist.record(t.elapsed().as_micros().max(1) as u64)?;
                }
            }
        }
        Ok((start.elapsed(), hist))
    })
}

/// Give each user a `sink` destination and wait until every avatar has confirmed.
async fn add_sinks(bus: &Bus, users: &[UserId], window: usize, timeout: Duration) -> Result<()> {
    command_each(bus, users, "sink", window, timeout, |_| {
        Command::AddDestination {
            destination: sink(),
        }
    })
    .await
}

/// The bench users' one destination: the `sink` channel, which does no I/O.
pub(crate) fn sink() -> Destination {
    destination("sink", Channel::Sink, "bench".into())
}
