//! The floor of tocsin's shape: its hops with none of its work, on the same server in the same
//! run — what any router, history and delivery that talk over JetStream as tocsin's do cost here.
//!
//! Notifications are published into per-silo work-queue streams, as the API does. Per silo, a
//! "router" pulls what is there (one round), publishes it as one envelope to the silo's history
//! stream and one to the jobs stream (both PubAcks awaited together) and then acks the round.
//! Per silo, a "history" pulls envelopes, writes their records into a SQLite file of its own
//! (WAL, `synchronous=FULL`, one transaction for what is there, a primary key making it
//! idempotent) and acks after the commit. One "delivery" pulls the jobs and takes them as
//! delivered. No decisions, no state, no events, no JSON: what is left is the bus, the round
//! trips and the durable commit, each batched as far as the load allows.

use crate::common::{Figures, Pacer, bench_bus, figures};
use crate::cpu::{CpuMeter, CpuPer};
use crate::pipeline::BenchOptions;
use crate::writes::{WritesPer, stored};
use anyhow::{Context, Result, anyhow};
use async_nats::jetstream::{self, consumer::pull, stream::RetentionPolicy};
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tocsin_bus::{Inbound, Pull};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// The most records one round or one commit takes, as tocsin's pulls.
const ROUND: usize = 512;

/// What the floor measured: to the commit and to the delivery, with its CPU and writes.
#[derive(Debug, Clone)]
pub struct Floor {
    pub stored: Figures,
    pub delivered: Figures,
    pub cpu: Option<CpuPer>,
    pub writes: WritesPer,
}

/// One measured path: its latencies (µs since the run's start), and how many have arrived.
struct Path {
    hist: Mutex<Histogram<u64>>,
    seen: AtomicUsize,
    done: Notify,
    want: usize,
}

impl Path {
    fn new(want: usize) -> Arc<Self> {
        Arc::new(Self {
            hist: Mutex::new(Histogram::new(3).expect("histogram")),
            seen: AtomicUsize::new(0),
            done: Notify::new(),
            want,
        })
    }

    /// Records of an envelope (`id sent_us` lines) arrived at `now_us`.
    fn arrived(&self, envelope: &[u8], now_us: u64) {
        let mut hist = self.hist.lock().expect("histogram lock");
        let mut n = 0;
        for sent in records(envelope).filter_map(|(_, sent)| sent.parse::<u64>().ok()) {
            let _ = hist.record(now_us.saturating_sub(sent).max(1));
            n += 1;
        }
        drop(hist);
        if self.seen.fetch_add(n, Ordering::Relaxed) + n >= self.want {
            self.done.notify_one();
        }
    }

    async fn wait(&self, timeout: Duration, what: &str) -> Result<()> {
        tokio::time::timeout(timeout, async {
            while self.seen.load(Ordering::Relaxed) < self.want {
                // notified only once every record has arrived; the check above covers a
                // notification given before this wait began (notify_one keeps a permit)
                self.done.notified().await;
            }
        })
        .await
        .with_context(|| format!("the shape's floor: {what} timed out"))
    }
}

/// An envelope's records, `(id, sent_us)`.
fn records(envelope: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    std::str::from_utf8(envelope)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
}

/// Run the floor against the server at `url`, once per server (its streams' names and its
/// message ids are the same every run); `store` holds its SQLite files.
pub(crate) async fn run(
    url: &str,
    opts: &BenchOptions,
    store: &std::path::Path,
    meter: CpuMeter,
) -> Result<Floor> {
    let bus = bench_bus(url, "benchfloor").await?;
    let js = bus.jetstream().clone();
    let silos = opts.silo_count.max(1) as usize;
    let work_queue = |name: String, subject: String| jetstream::stream::Config {
        name,
        subjects: vec![subject],
        retention: RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    let consumer = |stream: jetstream::stream::Stream| async move {
        stream
            .create_consumer(pull::Config {
                durable_name: Some("c".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow!(e))
    };
    let start = Instant::now();
    let stop = CancellationToken::new();
    let stored_path = Path::new(opts.notifications);
    let delivered_path = Path::new(opts.notifications);
    let mut tasks = Vec::new();
    for silo in 0..silos {
        let input = js
            .create_stream(work_queue(
                format!("BENCH_FLOOR_SILO_{silo}"),
                format!("benchfloor.silo.{silo}.*"),
            ))
            .await?;
        let history = js
            .create_stream(work_queue(
                format!("BENCH_FLOOR_HISTORY_{silo}"),
                format!("benchfloor.history.{silo}"),
            ))
            .await?;
        let pull = Pull::new(consumer(input).await?, ROUND, "the floor's router");
        tasks.push(tokio::spawn(route(pull, js.clone(), silo, stop.clone())));
        let pull = Pull::new(consumer(history).await?, ROUND, "the floor's history");
        let db = store.join(format!("floor-{silo}.db"));
        let path = stored_path.clone();
        tasks.push(tokio::spawn(write(pull, db, path, start, stop.clone())));
    }
    let jobs = js
        .create_stream(work_queue(
            "BENCH_FLOOR_JOBS".into(),
            "benchfloor.jobs.*".into(),
        ))
        .await?;
    let pull = Pull::new(consumer(jobs).await?, ROUND, "the floor's delivery");
    tasks.push(tokio::spawn(deliver(
        pull,
        delivered_path.clone(),
        start,
        stop.clone(),
    )));

    let cpu_before = meter.read();
    let written = stored(&js).await?;
    let began = Instant::now();
    let mut window = bus.window(opts.window);
    let pacer = Pacer::new(opts.rate);
    for i in 0..opts.notifications {
        pacer.wait(i).await;
        let user = i % opts.users;
        let id = format!("f{i}");
        let payload = format!("{id} {}", start.elapsed().as_micros());
        window
            .push(
                format!("benchfloor.silo.{}.u{user}", user % silos),
                id,
                payload.into(),
            )
            .await;
    }
    window.flush().await?;
    delivered_path.wait(opts.timeout, "delivery").await?;
    let delivered_in = began.elapsed();
    stored_path.wait(opts.timeout, "history").await?;
    let stored_in = began.elapsed();
    let cpu = cpu_before
        .zip(meter.read())
        .map(|(a, b)| a.per(b, opts.notifications));
    crate::writes::settled(&js, opts.timeout).await?;
    let writes = written.per(&stored(&js).await?, opts.notifications);
    stop.cancel();
    for t in tasks {
        t.await.context("a floor task")??;
    }
    bus.client().flush().await?;
    let n = opts.notifications;
    let of = |p: &Path| p.hist.lock().expect("histogram lock").clone();
    Ok(Floor {
        stored: figures(
            "the shape's floor → stored",
            n,
            stored_in,
            &of(&stored_path),
        ),
        delivered: figures(
            "the shape's floor → delivered",
            n,
            delivered_in,
            &of(&delivered_path),
        ),
        cpu,
        writes,
    })
}

/// The next round: what one wait brings and what is already here besides, up to [`ROUND`];
/// None once `stop` is cancelled.
async fn round(pull: &mut Pull, stop: &CancellationToken) -> Option<Vec<Inbound>> {
    let first = tokio::select! {
        m = pull.next() => m,
        () = stop.cancelled() => return None,
    };
    let mut round = vec![first];
    while round.len() < ROUND
        && let Some(m) = pull.next_ready()
    {
        round.push(m);
    }
    Some(round)
}

/// The router: each round as one envelope to history and one to delivery, then acked.
async fn route(
    mut pull: Pull,
    js: jetstream::Context,
    silo: usize,
    stop: CancellationToken,
) -> Result<()> {
    let mut seq = 0u64;
    while let Some(round) = round(&mut pull, &stop).await {
        let mut envelope = Vec::with_capacity(round.len() * 24);
        for m in &round {
            envelope.extend_from_slice(&m.message().payload);
            envelope.push(b'\n');
        }
        let envelope = bytes::Bytes::from(envelope);
        seq += 1;
        let id = format!("{silo}.{seq}");
        let to_history = publish(&js, format!("benchfloor.history.{silo}"), &id, &envelope);
        let to_jobs = publish(&js, format!("benchfloor.jobs.{silo}"), &id, &envelope);
        let (h, j) = tokio::join!(to_history, to_jobs);
        h?;
        j?;
        for m in round {
            m.ack().await.map_err(|e| anyhow!(e))?;
        }
    }
    Ok(())
}

/// Publish with a message id (the server's duplicate window, as tocsin's outputs) and await
/// the PubAck.
async fn publish(
    js: &jetstream::Context,
    subject: String,
    id: &str,
    payload: &bytes::Bytes,
) -> Result<()> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subject, headers, payload.clone())
        .await?
        .await?;
    Ok(())
}

/// History: what is there, in one transaction of its SQLite file, acked after the commit.
async fn write(
    mut pull: Pull,
    db: std::path::PathBuf,
    path: Arc<Path>,
    start: Instant,
    stop: CancellationToken,
) -> Result<()> {
    let mut conn = tokio::task::spawn_blocking(move || open(&db)).await??;
    while let Some(round) = round(&mut pull, &stop).await {
        let envelopes: Vec<bytes::Bytes> =
            round.iter().map(|m| m.message().payload.clone()).collect();
        conn = tokio::task::spawn_blocking(move || {
            commit(&mut conn, &envelopes)?;
            Ok::<_, anyhow::Error>(conn)
        })
        .await??;
        let now = start.elapsed().as_micros() as u64;
        for m in round {
            path.arrived(&m.message().payload, now);
            m.ack().await.map_err(|e| anyhow!(e))?;
        }
    }
    Ok(())
}

fn open(db: &std::path::Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(db)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS records (id TEXT PRIMARY KEY, sent INTEGER) WITHOUT ROWID",
    )?;
    Ok(conn)
}

fn commit(conn: &mut rusqlite::Connection, envelopes: &[bytes::Bytes]) -> Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached("INSERT OR IGNORE INTO records VALUES (?1, ?2)")?;
        for e in envelopes {
            for (id, sent) in records(e) {
                insert.execute(rusqlite::params![id, sent.parse::<i64>().unwrap_or(0)])?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// Delivery: each job taken as delivered and acked.
async fn deliver(
    mut pull: Pull,
    path: Arc<Path>,
    start: Instant,
    stop: CancellationToken,
) -> Result<()> {
    while let Some(round) = round(&mut pull, &stop).await {
        let now = start.elapsed().as_micros() as u64;
        for m in round {
            path.arrived(&m.message().payload, now);
            m.ack().await.map_err(|e| anyhow!(e))?;
        }
    }
    Ok(())
}
