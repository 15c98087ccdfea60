//! `tocsin-bench feeds`: how fast the ingestor polls. N feeds (distinct URLs on a local HTTP
//! server that hands out an ETag and answers `304 Not Modified` to a matching
//! `If-None-Match`) are subscribed as the router would subscribe them, with a poll interval
//! short enough that the ingestor can never keep up; the figure is the fetch rate it
//! sustains. The baseline, in the same run against the same server: plain conditional GETs
//! from one HTTP client with the same concurrency.
//!
//! With `--fanout N`, also: N users subscribed to one feed; a new item appears; the time from
//! the ingestor fetching it to the router having routed it to all N (their history records
//! published), beside a raw JetStream burst of N messages in the same run.

use crate::common::BenchNats;
use anyhow::{Context, Result};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tocsin_bus::{Bus, BusConfig};
use tocsin_model::{FeedSubscription, SubscriptionOp, UserId};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct FeedBenchOptions {
    pub feeds: usize,
    /// Concurrent fetches (the ingestor's `max_concurrent_fetches`, and the baseline's).
    pub concurrency: usize,
    /// How long each rate is measured.
    pub seconds: u64,
    /// Subscribers of the one feed whose new item is fanned out (0: skip).
    pub fanout: usize,
    /// Recent keys written into each subscriber's record before the item appears, as a
    /// long-lived user's record holds (512 at most are kept). Not 0: the router is restarted
    /// first, so the item wakes every subscriber's avatar from its record.
    pub aged_keys: usize,
    pub timeout: Duration,
}

/// One item fanned out to every subscriber of a feed.
#[derive(Debug, Clone)]
pub struct Fanout {
    pub subscribers: usize,
    /// Recent keys in each subscriber's record (0: the records as created, avatars warm).
    pub aged_keys: usize,
    /// From the fetch that found the item to the last subscriber's notification routed.
    pub secs: f64,
    /// From the same fetch until every silo's stream is empty: each avatar has also written
    /// its record and acked what it was handed (the fan-out's whole work, not only what a
    /// user sees).
    pub settled_secs: f64,
    /// The same number of messages through raw JetStream (publish → consumed), for scale.
    pub baseline: crate::common::Figures,
    /// JetStream writes per subscriber, from the item's appearance until the silos' streams
    /// were empty (the records written, every input acked).
    pub writes: crate::writes::WritesPer,
}

pub struct FeedReport {
    pub options: FeedBenchOptions,
    /// Plain conditional GETs per second (one client, same concurrency).
    pub baseline_per_sec: f64,
    /// The ingestor's fetches per second with every feed due.
    pub ingestor_per_sec: f64,
    /// Share of the ingestor's fetches answered 304.
    pub not_modified: f64,
    /// How long until every feed had been fetched once.
    pub first_round_secs: f64,
    pub fanout: Option<Fanout>,
}

impl FeedReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin-bench feeds: {} feeds on one local server, {} concurrent fetches, {} s per figure\n\
             {:<46} {:>10}\n\
             {:<46} {:>10.0}\n\
             {:<46} {:>10.0}\n\
             {:<46} {:>10.3}\n\
             {:<46} {:>10.1}\n\
             {:<46} {:>10.1}\n",
            o.feeds,
            o.concurrency,
            o.seconds,
            "path",
            "fetches/s",
            "raw HTTP conditional GET (baseline)",
            self.baseline_per_sec,
            "tocsin ingestor polling (every feed due)",
            self.ingestor_per_sec,
            "ratio ingestor/baseline",
            self.ingestor_per_sec / self.baseline_per_sec.max(1.0),
            "answered 304 Not Modified (%)",
            self.not_modified * 100.0,
            "first fetch of every feed took (s)",
            self.first_round_secs,
        );
        if let Some(f) = &self.fanout {
            if f.aged_keys > 0 {
                s.push_str(&format!(
                    "(the subscribers' records aged with {} recent keys, the router restarted: every avatar wakes cold)\n",
                    f.aged_keys
                ));
            }
            s.push_str(&format!(
                "{:<46} {:>10.2}\n{:<46} {:>10.0}\n{:<46} {:>10.2}\n{:<46} {:>10.2}\n{:<46} {:>10.3}\n",
                format!(
                    "one item to {} subscribers: routed to all in (s)",
                    f.subscribers
                ),
                f.secs,
                "  notifications routed per second",
                f.subscribers as f64 / f.secs.max(0.001),
                "  records written, every input acked, in (s)",
                f.settled_secs,
                format!("raw jetstream burst of {} (s)", f.baseline.count),
                f.baseline.count as f64 / f.baseline.per_sec.max(0.001),
                "ratio fan-out/baseline (rate)",
                (f.subscribers as f64 / f.secs.max(0.001)) / f.baseline.per_sec.max(0.001),
            ));
            s.push_str(&format!(
                "jetstream writes per subscriber (stored, KV included): {}\n",
                f.writes
            ));
        }
        s
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    not_modified: AtomicU64,
    /// The version of `/fan` (its items), and when a fetch first saw each new version.
    fan_version: AtomicU64,
    fan_fetches: AtomicU64,
    fan_seen: std::sync::Mutex<Option<(u64, Instant)>>,
}

/// A feed server: every `/f/<n>` is the same small RSS document with ETag `"v1"`.
async fn feed_server() -> Result<(String, Arc<Counters>)> {
    let counters: Arc<Counters> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .route(
            "/f/{n}",
            axum::routing::get(
                |State(c): State<Arc<Counters>>, Path(n): Path<u64>, headers: HeaderMap| async move {
                    c.requests.fetch_add(1, Ordering::Relaxed);
                    if headers
                        .get(header::IF_NONE_MATCH)
                        .is_some_and(|v| v.as_bytes() == b"\"v1\"")
                    {
                        c.not_modified.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    (
                        [
                            (header::CONTENT_TYPE, "application/rss+xml"),
                            (header::ETAG, "\"v1\""),
                        ],
                        format!(
                            "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>feed {n}</title>\
                             <item><guid>{n}-1</guid><title>listing {n}</title></item></channel></rss>"
                        ),
                    )
                        .into_response()
                },
            ),
        )
        .route(
            "/fan",
            axum::routing::get(|State(c): State<Arc<Counters>>| async move {
                c.fan_fetches.fetch_add(1, Ordering::SeqCst);
                let v = c.fan_version.load(Ordering::SeqCst);
                {
                    let mut seen = c.fan_seen.lock().expect("lock");
                    if seen.is_none_or(|(sv, _)| sv != v) {
                        *seen = Some((v, Instant::now()));
                    }
                }
                let items: String = (0..=v)
                    .map(|i| format!("<item><guid>fan-{i}</guid><title>fan item {i}</title></item>"))
                    .collect();
                (
                    [(header::CONTENT_TYPE, "application/rss+xml")],
                    format!(
                        "<?xml version=\"1.0\"?><rss version=\"2.0\"><channel><title>fan</title>{items}</channel></rss>"
                    ),
                )
            }),
        )
        .with_state(counters.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, counters))
}

pub async fn run(opts: FeedBenchOptions) -> Result<FeedReport> {
    let nats = BenchNats::start()?;
    let url = nats.url.clone();
    let (base, counters) = feed_server().await?;
    let window = Duration::from_secs(opts.seconds);

    // baseline: conditional GETs as fast as `concurrency` clients can make them
    let baseline_per_sec = {
        let client = reqwest::Client::new();
        let stop = Instant::now() + window;
        let done = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for w in 0..opts.concurrency {
            let (client, base, done) = (client.clone(), base.clone(), done.clone());
            let feeds = opts.feeds.max(1);
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < stop {
                    let r = client
                        .get(format!("{base}/f/{}", i % feeds))
                        .header(header::IF_NONE_MATCH, "\"v1\"")
                        .send()
                        .await;
                    if r.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += opts.concurrency;
                }
            }));
        }
        for t in tasks {
            t.await?;
        }
        done.load(Ordering::Relaxed) as f64 / window.as_secs_f64()
    };

    // the ingestor, subscribed to every feed; a 1 s interval keeps every feed due
    let bus_cfg = BusConfig {
        url: url.clone(),
        prefix: "benchfeeds".into(),
        ..Default::default()
    };
    let shutdown = CancellationToken::new();
    let ing = tokio::spawn(tocsin_ingestor::run(
        ingestor_config(&bus_cfg, opts.concurrency),
        shutdown.clone(),
    ));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let user = UserId::parse("benchfeeds").expect("valid");
    let start_requests = counters.requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut w = bus.window(512);
    for i in 0..opts.feeds {
        let sub = FeedSubscription {
            active_hours: None,
            request: Default::default(),
            op: SubscriptionOp::Upsert,
            user: user.clone(),
            source_id: format!("s{i}"),
            url: format!("{base}/f/{i}"),
            filter: Default::default(),
            deliver_existing: false,
            poll_interval_secs: None,
            listing: Default::default(),
            label: String::new(),
            extract: None,
        };
        w.push(
            bus.subjects().ingest_subscriptions(),
            format!("sub-{i}"),
            tocsin_bus::encode(&sub)?,
        )
        .await;
    }
    w.flush().await?;
    // every feed fetched once (200, its ETag noted), then every one due again and again
    let deadline = Instant::now() + opts.timeout;
    while counters.requests.load(Ordering::Relaxed) - start_requests < opts.feeds as u64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} feeds fetched in {:?}",
            counters.requests.load(Ordering::Relaxed) - start_requests,
            opts.feeds,
            opts.timeout
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_round_secs = started.elapsed().as_secs_f64();
    let (r0, n0) = (
        counters.requests.load(Ordering::Relaxed),
        counters.not_modified.load(Ordering::Relaxed),
    );
    tokio::time::sleep(window).await;
    let (r1, n1) = (
        counters.requests.load(Ordering::Relaxed),
        counters.not_modified.load(Ordering::Relaxed),
    );
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), ing).await;
    bus.drain().await;
    let fanout = if opts.fanout > 0 {
        Some(fanout(&url, &base, &counters, &opts).await?)
    } else {
        None
    };
    let fetched = (r1 - r0) as f64;
    Ok(FeedReport {
        options: opts,
        baseline_per_sec,
        ingestor_per_sec: fetched / window.as_secs_f64(),
        not_modified: if fetched > 0.0 {
            (n1 - n0) as f64 / fetched
        } else {
            0.0
        },
        first_round_secs,
        fanout,
    })
}

/// The ingestor in-process, polling every feed each second (always due), with `concurrency`
/// fetches at once, all allowed on one loopback host.
fn ingestor_config(bus: &BusConfig, concurrency: usize) -> tocsin_ingestor::Config {
    tocsin_ingestor::Config {
        bus: bus.clone(),
        ingestor: tocsin_ingestor::IngestorConfig {
            ops_listen: String::new(),
            poll_interval_secs: 1,
            jitter: 0.0,
            host_min_interval_ms: 0,
            per_host_concurrency: concurrency,
            max_concurrent_fetches: concurrency,
            allow_loopback: true,
            ..Default::default()
        },
    }
}

/// N users subscribed to `/fan`; once every subscription is in and the feed has been polled
/// (its current items are the baseline), a new item appears: the time from the fetch that sees
/// it until the router has routed it to every subscriber.
async fn fanout(
    url: &str,
    base: &str,
    counters: &Counters,
    opts: &FeedBenchOptions,
) -> Result<Fanout> {
    let n = opts.fanout;
    let baseline = crate::common::baseline(
        url,
        &crate::pipeline::BenchOptions {
            notifications: n,
            users: n.clamp(1, 1000),
            silo_count: 16,
            window: 512,
            rate: 0,
            timeout: opts.timeout,
            warm: 0,
        },
    )
    .await?;
    let silos = 16;
    let (bus_cfg, router) = crate::common::bench_router(url, "benchfan", silos);
    let shutdown = CancellationToken::new();
    let router_stop = CancellationToken::new();
    let mut r = tokio::spawn(tocsin_router::run(router.clone(), router_stop.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..n)
        .map(|i| UserId::parse(&format!("fan{i}")).expect("valid"))
        .collect();
    crate::common::create_users(&bus, &users, |_| String::new(), 512, opts.timeout).await?;
    let ing = tokio::spawn(tocsin_ingestor::run(
        ingestor_config(&bus_cfg, opts.concurrency),
        shutdown.clone(),
    ));
    // each user adds the feed as a source, as through the API: the avatar records it and
    // subscribes the ingestor
    let add = users
        .iter()
        .map(|u| {
            let source = tocsin_model::Source {
                id: "fan".into(),
                spec: tocsin_model::SourceSpec::Feed {
                    active_hours: None,
                    request: Default::default(),
                    url: format!("{base}/fan"),
                    deliver_existing: false,
                    poll_interval_secs: None,
                    listing: Default::default(),
                    extract: None,
                },
                filter: Default::default(),
                label: String::new(),
                created_at_ms: tocsin_model::now_ms(),
                settings: Default::default(),
            };
            (u.clone(), tocsin_model::Command::AddSource { source })
        })
        .collect();
    let intake = Instant::now();
    crate::reach::commands(&bus, add, opts.timeout).await?;
    // every subscription taken in (the work queue is empty), then two polls for the baseline
    let deadline = Instant::now() + opts.timeout;
    crate::common::emptied(
        &bus,
        [tocsin_bus::StreamKind::Ingest],
        opts.timeout,
        "subscriptions taken in",
    )
    .await?;
    // two more fetches of the feed: the newcomers' baseline is taken
    let fetched = counters.fan_fetches.load(Ordering::SeqCst);
    while counters.fan_fetches.load(Ordering::SeqCst) < fetched + 2 {
        anyhow::ensure!(Instant::now() < deadline, "the feed was not polled in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "bench-feeds: {n} subscriptions taken in and the feed polled after {:.1} s",
        intake.elapsed().as_secs_f64()
    );
    let router_stop = if opts.aged_keys > 0 {
        // long-lived subscribers: their records aged while no router runs, then a router
        // whose avatars all wake from those records when the item reaches them
        router_stop.cancel();
        let _ = r.await;
        crate::common::age_records(&bus, &users, opts.aged_keys).await?;
        let stop = CancellationToken::new();
        r = tokio::spawn(tocsin_router::run(router, stop.clone()));
        stop
    } else {
        router_stop
    };
    // routed = the avatar's history record is stored in the history stream (nobody consumes
    // it here); counted from the stream (records in the silos' envelopes), read by an ordered
    // consumer from where it stood, as a core subscription would drop messages when 100k
    // arrive at once
    let history = bus.subjects().stream(tocsin_bus::StreamKind::History);
    let mut stream = bus.jetstream().get_stream(&history).await?;
    let earlier = stream.info().await?.state.messages;
    let reader = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await?;
    let mut messages = reader.messages().await?;
    let deadline = tokio::time::Instant::now() + opts.timeout;
    // what the stream held before the new item is not counted (a work queue: read it all)
    for _ in 0..earlier {
        let next = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut messages)).await;
        let Ok(Some(Ok(m))) = next else {
            anyhow::bail!("cannot read the history stream's earlier messages");
        };
        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    }
    let written = crate::writes::stored(bus.jetstream()).await?;
    counters.fan_version.fetch_add(1, Ordering::SeqCst);
    let mut routed = 0usize;
    let done = loop {
        if routed >= n {
            break Instant::now();
        }
        let next = tokio::time::timeout_at(deadline, futures::StreamExt::next(&mut messages)).await;
        let Ok(Some(Ok(m))) = next else {
            anyhow::bail!("the item was routed to {routed} of {n} subscribers in time");
        };
        routed += tocsin_bus::envelope::records(&m.payload)?.len();
        m.ack().await.map_err(|e| anyhow::anyhow!("ack: {e}"))?;
    };
    let done_unix = tocsin_model::now_ms();
    // then until the avatars have written their records and acked the item (the silos'
    // work queues empty), read every 10 ms
    let settled = loop {
        let mut pending = 0;
        for silo in 0..silos {
            let name = bus.subjects().stream(tocsin_bus::StreamKind::Silo(silo));
            pending += bus
                .jetstream()
                .get_stream(&name)
                .await?
                .info()
                .await?
                .state
                .messages;
        }
        if pending == 0 {
            break Instant::now();
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{pending} messages still in the silos' streams"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let writes = written.per(&crate::writes::stored(bus.jetstream()).await?, n);
    let seen = counters
        .fan_seen
        .lock()
        .expect("lock")
        .filter(|(v, _)| *v >= 1)
        .map(|(_, at)| at)
        .context("the new item was never fetched")?;
    // the window to profile (`perf record -k CLOCK_REALTIME`, then `perf report --time`)
    let took = done.duration_since(seen);
    eprintln!(
        "bench-feeds: the new item was fetched at {} ms and routed to all by {done_unix} ms (Unix time)",
        done_unix.saturating_sub(took.as_millis() as i64)
    );
    shutdown.cancel();
    router_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(30), ing).await;
    let _ = r.await;
    bus.drain().await;
    Ok(Fanout {
        subscribers: n,
        aged_keys: opts.aged_keys,
        secs: took.as_secs_f64(),
        settled_secs: settled.duration_since(seen).as_secs_f64(),
        baseline,
        writes,
    })
}
