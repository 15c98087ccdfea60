//! The history service: every notification of its silos' users, with its delivery timeline,
//! in one SQLite database per silo; queries and private feeds answered over the bus.
//!
//! For each owned silo it pulls `history-<silo>` from the history stream in batches, writes
//! a batch in one transaction (idempotent on the notification id; at most `writers` silos at
//! once), acks the batch after the commit, and announces each new notification on `live.<user>` for live streams. It answers
//! `rpc.history.<silo>.query` (a page of history) and `rpc.history.<silo>.feed` (the private
//! Atom/RSS document) in a queue group, so several replicas can serve reads.

pub mod feed;
mod reader;
mod retention;
pub mod store;
mod telemetry;

use async_nats::jetstream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::Store;
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, SiloSet, StreamKind};
use tocsin_model::{FeedRequest, HistoryPage, HistoryQuery, HistoryRecord, Reply, now_ms};
use tocsin_runtime::ServiceError;
use tocsin_runtime::background::Background;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, info_span, warn};

/// The `[history]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Where the per-silo databases live (`silo-<k>.db`).
    pub data_dir: PathBuf,
    /// Which silos this instance owns: `all`, or numbers and ranges like `0-7,12`.
    pub silos: String,
    pub replica_ordinal: Option<u32>,
    pub replica_count: u32,
    pub ops_listen: String,
    /// Notifications older than this are deleted (0 keeps everything).
    pub retention_days: u64,
    /// Records written per transaction at most.
    pub batch: usize,
    /// How many of this instance's silos write a batch at once. Each write is a transaction
    /// with its fsync; the silos waiting for their turn gather what arrives meanwhile, so under
    /// load the batches grow instead of every silo committing a few records at a time. What
    /// retention and the quota delete takes turns too, a few thousand rows at a time.
    pub writers: usize,
    /// The nice value (0 to 19) of the threads that write the stores: they run at a lower CPU
    /// priority than the pipeline, so on a machine it shares, writing history (which nothing
    /// waits for on the way to delivery) yields the cores to notifications being delivered.
    /// 0 runs them at the process's priority.
    pub writer_nice: i32,
    pub max_ack_pending: i64,
    /// How many entries a private feed shows.
    pub feed_items: u32,
    /// Notifications kept per user; past it the oldest go (checked hourly, with retention).
    pub max_items_per_user: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            data_dir: "./data/history".into(),
            silos: "all".into(),
            replica_ordinal: None,
            replica_count: 1,
            ops_listen: "127.0.0.1:9103".into(),
            retention_days: 90,
            batch: 256,
            writers: 2,
            writer_nice: 10,
            max_ack_pending: 20_000,
            feed_items: 50,
            max_items_per_user: 100_000,
        }
    }
}

tocsin_runtime::service_config!(history: HistoryConfig, ops: ops_listen);

impl HistoryConfig {
    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, bus: &BusConfig) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = self.silo_set(bus.silo_count) {
            p.push(format!("history.silos: {e}"));
        }
        if self.batch == 0 {
            p.push("history.batch: must be greater than 0".into());
        }
        if self.writers == 0 {
            p.push("history.writers: must be at least 1".into());
        }
        if !(0..=19).contains(&self.writer_nice) {
            p.push("history.writer_nice: must be 0-19 (0: the process's priority)".into());
        }
        if self.max_items_per_user == 0 {
            p.push("history.max_items_per_user: must be at least 1".into());
        }
        if !(1..=500).contains(&self.feed_items) {
            p.push("history.feed_items: must be 1-500".into());
        }
        p
    }
}

impl HistoryConfig {
    pub fn silo_set(&self, silo_count: u32) -> Result<SiloSet, String> {
        SiloSet::resolve(
            &self.silos,
            self.replica_ordinal,
            self.replica_count,
            silo_count,
        )
    }
}

type Shared = Arc<Mutex<Store>>;

/// The silo's store. A panic while it was held (a bug, never input: nothing from a
/// notification is handled under it) leaves SQLite consistent — a transaction not committed
/// is rolled back — so the store is used again rather than the silo refusing everything until
/// a restart.
fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    tocsin_runtime::lock(store)
}

/// Run until `shutdown`; in-flight batches are committed and acked before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    telemetry::describe();
    let silos = config
        .history
        .silo_set(config.bus.silo_count)
        .map_err(ServiceError::Config)?;
    std::fs::create_dir_all(&config.history.data_dir).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot create history.data_dir {}: {e}",
                config.history.data_dir.display()
            ),
        )
    })?;
    let (bus, ready) = config.connect(&shutdown).await?;
    let mut tasks = Vec::new();
    // per silo: whether its last write succeeded; /readyz is false while one cannot write
    let mut writable = Vec::new();
    let writers = Arc::new(tokio::sync::Semaphore::new(config.history.writers.max(1)));
    // the writes' threads, one for each turn, so a turn never waits for a thread; and one for
    // the silos' hourly quota scans (reads that take no turn, and may take seconds on a large
    // store), which wait for each other rather than for, or in front of, a write
    let start = |name: &str, threads: usize| {
        Background::start(name, threads, config.history.writer_nice).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start history's {name} threads: {e}"),
            )
        })
    };
    let threads = Arc::new(start("history-writer", config.history.writers.max(1))?);
    let scans = Arc::new(start("history-scan", 1)?);
    for silo in silos.iter() {
        let path = config.history.data_dir.join(format!("silo-{silo}.db"));
        let store: Shared = Arc::new(Mutex::new(
            tokio::task::spawn_blocking(move || Store::open(&path))
                .await
                .expect("open task")?,
        ));
        let consumer = bus
            .pull_consumer(
                StreamKind::History,
                &format!("history-{silo}"),
                Some(bus.subjects().history_silo(silo)),
                config.history.max_ack_pending,
            )
            .await?;
        let ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
        writable.push(ok.clone());
        tasks.push(AbortOnDropHandle::new(tokio::spawn(consume(
            bus.clone(),
            silo,
            consumer,
            (store.clone(), ok),
            (config.history.batch, writers.clone(), threads.clone()),
            shutdown.clone(),
        ))));
        let reader = lock(&store).reader();
        tasks.push(AbortOnDropHandle::new(tokio::spawn(serve_queries(
            bus.clone(),
            silo,
            reader,
            config.history.feed_items,
            shutdown.clone(),
        ))));
        tasks.push(AbortOnDropHandle::new(tokio::spawn(retention::run(
            store,
            (writers.clone(), threads.clone(), scans.clone()),
            (
                config.history.retention_days,
                config.history.max_items_per_user,
            ),
            shutdown.clone(),
        ))));
    }
    ready.add_check(move || {
        writable
            .iter()
            .all(|w| w.load(std::sync::atomic::Ordering::Relaxed))
    });
    ready.set(true);
    info!(silos = silos.len(), dir = %config.history.data_dir.display(), "history running");
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            warn!(error = %e, "history task stopped with an error");
        }
    }
    ready.set(false);
    bus.drain().await;
    info!("history stopped");
    Ok(())
}

/// Wait until a history instance answers queries for every silo (core NATS requests are not
/// queued: a query sent before history subscribes gets no answer). For `tocsin up` and tests,
/// to say "ready" only when the whole pipeline is.
pub async fn wait_serving(bus: &Bus, timeout: Duration) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let probe = HistoryQuery::newest(
        tocsin_model::UserId::parse("readiness-probe").expect("valid id"),
        1,
    );
    for silo in 0..bus.config().silo_count {
        loop {
            let subject = bus.subjects().history_rpc(silo, "query");
            let answer = bus
                .request_json::<_, Reply<HistoryPage>>(subject, &probe, Duration::from_millis(500))
                .await;
            match answer {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
    Ok(())
}

async fn consume(
    bus: Bus,
    silo: u32,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    (store, writable): (Shared, Arc<std::sync::atomic::AtomicBool>),
    (batch, writers, threads): (usize, Arc<tokio::sync::Semaphore>, Arc<Background>),
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let mut messages = tocsin_bus::Pull::new(consumer, batch, format!("history silo {silo}"));
    loop {
        let mut msgs = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = messages.next() => vec![m],
        };
        // this silo's turn to write (the semaphore is never closed; were it, the write goes
        // ahead without a turn); what arrives while it waits joins the batch below
        let _turn = writers.acquire().await.ok();
        // take whatever else is already here, without waiting: batching under load,
        // no added latency when idle
        while msgs.len() < batch {
            match messages.next_ready() {
                Some(m) => msgs.push(m),
                None => break,
            }
        }
        let span = info_span!("batch", silo, records = msgs.len());
        let written = write_batch(&bus, (&store, &threads), msgs)
            .instrument(span)
            .await;
        writable.store(written, std::sync::atomic::Ordering::Relaxed);
    }
    Ok(())
}

/// Write one batch; false when the store refused it (the batch is given back).
async fn write_batch(
    bus: &Bus,
    (store, threads): (&Shared, &Background),
    msgs: Vec<tocsin_bus::Inbound>,
) -> bool {
    let mut records = Vec::with_capacity(msgs.len());
    // each message with the records of it that could not be read, if any
    let mut good: Vec<(tocsin_bus::Inbound, Vec<String>)> = Vec::with_capacity(msgs.len());
    for m in msgs {
        if bus.exhausted(m.message()) {
            let reason = "writing it failed on every delivery".to_owned();
            m.settle(bus, Disposition::Reject(reason)).await;
            continue;
        }
        let (read, problems) = read_records(bus, m.message());
        if read.is_empty() {
            m.settle(bus, Disposition::Reject(summary(&problems))).await;
            continue;
        }
        records.extend(read);
        good.push((m, problems));
    }
    if good.is_empty() {
        return true;
    }
    let n = records.len();
    let s = store.clone();
    // a panic while writing (a bug) fails the batch like an error does: it is redelivered, and
    // after max_deliver it is dead-lettered rather than stopping the silo's history
    let result = match threads.run(move || lock(&s).apply(&records)).await {
        Ok(written) => written.map_err(|e| e.to_string()),
        Err(panicked) => Err(panicked.to_string()),
    };
    match result {
        Ok(fresh) => {
            for (m, problems) in good {
                // the records that could be read are written; the message is kept in the
                // dead-letter stream for the others (written again, they change nothing)
                let d = match problems.is_empty() {
                    true => Disposition::Ack,
                    false => Disposition::Reject(summary(&problems)),
                };
                m.settle(bus, d).await;
            }
            metrics::counter!(crate::telemetry::RECORDS).increment(n as u64);
            // the document as stored is the notification's JSON: announced as it is
            for f in fresh {
                let subject = bus.subjects().live(f.user.as_str());
                if let Err(e) = bus.client().publish(subject, f.doc.into()).await {
                    debug!(error = %e, "live announcement failed");
                }
            }
            true
        }
        Err(e) => {
            warn!(error = %e, records = n, "cannot write history; the batch will be redelivered");
            for (m, _) in good {
                m.settle(bus, Disposition::Retry(Duration::from_secs(1)))
                    .await;
            }
            false
        }
    }
}

/// The first few problems of a message, for its dead letter's reason.
fn summary(problems: &[String]) -> String {
    let mut s = problems
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if problems.len() > 5 {
        s.push_str(&format!("; and {} more", problems.len() - 5));
    }
    s
}

/// The records in a message (one record, or an envelope of them) that belong on its subject,
/// and what is wrong with the others, each naming its place in the message.
fn read_records(
    bus: &Bus,
    msg: &async_nats::jetstream::Message,
) -> (Vec<HistoryRecord>, Vec<String>) {
    let subject = msg.subject.as_str();
    let parts = match tocsin_bus::envelope::records(&msg.payload) {
        Ok(p) => p,
        Err(e) => return (Vec::new(), vec![e.to_string()]),
    };
    let enveloped = tocsin_bus::envelope::is_envelope(&msg.payload);
    let mut records = Vec::with_capacity(parts.len());
    let mut problems = Vec::new();
    // an envelope's records are all of one silo: its subject is made once, not per record
    let mut envelope_of: Option<(u32, String)> = None;
    for (i, part) in parts.iter().enumerate() {
        let place = || match enveloped {
            true => format!("record {i} ({}): ", part.id),
            false => String::new(),
        };
        match tocsin_bus::decode_with(&part.payload, "history record", HistoryRecord::from_json) {
            Ok(r) => {
                let silo = bus.silo_of(r.user());
                let on_its_subject = match enveloped {
                    true => {
                        if envelope_of.as_ref().is_none_or(|(k, _)| *k != silo) {
                            envelope_of = Some((silo, bus.subjects().history_envelope(silo)));
                        }
                        envelope_of.as_ref().is_some_and(|(_, e)| e == subject)
                    }
                    false => bus.subjects().history(silo, r.user().as_str()) == subject,
                };
                if on_its_subject {
                    records.push(r);
                } else {
                    problems.push(format!(
                        "{}record for user {} arrived on the wrong subject",
                        place(),
                        r.user()
                    ));
                }
            }
            Err(e) => problems.push(format!("{}{e}", place())),
        }
    }
    (records, problems)
}

async fn serve_queries(
    bus: Bus,
    silo: u32,
    store: Arc<store::Reader>,
    feed_items: u32,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let client = bus.client().clone();
    let subjects = bus.subjects();
    let sub_err =
        |e: &dyn std::fmt::Display| BusError::Other(format!("history silo {silo}: subscribe: {e}"));
    let mut queries = client
        .queue_subscribe(subjects.history_rpc(silo, "query"), "history".into())
        .await
        .map_err(|e| sub_err(&e))?;
    let mut feeds = client
        .queue_subscribe(subjects.history_rpc(silo, "feed"), "history".into())
        .await
        .map_err(|e| sub_err(&e))?;
    loop {
        let (msg, is_feed) = tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(m) = queries.next() => (m, false),
            Some(m) = feeds.next() => (m, true),
            else => break,
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let store = store.clone();
        let client = client.clone();
        tokio::spawn(async move {
            let body = tokio::task::spawn_blocking(move || {
                if is_feed {
                    answer_feed(&store, &msg.payload, feed_items)
                } else {
                    answer_query(&store, &msg.payload)
                }
            })
            .await
            .unwrap_or_else(|e| {
                serde_json::to_vec(&Reply::<()>::Err(format!("query failed: {e}")))
                    .unwrap_or_default()
            });
            let _ = client.publish(reply_to, body.into()).await;
        });
    }
    Ok(())
}

fn answer_query(store: &store::Reader, payload: &[u8]) -> Vec<u8> {
    let reply: Reply<HistoryPage> = match serde_json::from_slice::<HistoryQuery>(payload) {
        Err(e) => Reply::Err(format!("invalid query: {e}")),
        Ok(q) => match store.query(&q) {
            Ok(page) => Reply::Ok(page),
            Err(e) => Reply::Err(e.to_string()),
        },
    };
    within_payload(&reply)
}

/// `reply` encoded, or an error reply if it would not fit in one bus message (the bounds
/// above keep it from happening; a reply over the limit would be dropped and the API would
/// time out instead of saying why).
fn within_payload<T: Serialize>(reply: &Reply<T>) -> Vec<u8> {
    const LIMIT: usize = 1024 * 1024 - 16 * 1024;
    match serde_json::to_vec(reply) {
        Ok(v) if v.len() <= LIMIT => v,
        Ok(v) => serde_json::to_vec(&Reply::<()>::Err(format!(
            "the answer would take {} KiB, over what one bus message carries; ask for fewer items",
            v.len() / 1024
        )))
        .unwrap_or_default(),
        Err(e) => serde_json::to_vec(&Reply::<()>::Err(format!("cannot encode the answer: {e}")))
            .unwrap_or_default(),
    }
}

/// The most a rendered private feed may take: the reply travels in one bus message.
const FEED_BYTES: usize = 768 * 1024;

/// The feed of `items`, or of as many of the newest as fit in [`FEED_BYTES`]: a feed always
/// renders, however large its entries (escaping can make one several times its size).
fn render_within(r: &FeedRequest, items: &[tocsin_model::HistoryItem]) -> String {
    let mut n = items.len();
    loop {
        let doc = feed::render(r.format, &r.user, &r.self_url, &items[..n], now_ms());
        if doc.len() <= FEED_BYTES || n <= 1 {
            return doc;
        }
        n /= 2;
    }
}

fn answer_feed(store: &store::Reader, payload: &[u8], feed_items: u32) -> Vec<u8> {
    let reply: Reply<String> = match serde_json::from_slice::<FeedRequest>(payload) {
        Err(e) => Reply::Err(format!("invalid feed request: {e}")),
        Ok(r) => {
            let q = HistoryQuery::newest(r.user.clone(), r.limit.clamp(1, feed_items));
            match store.query(&q) {
                Ok(page) => Reply::Ok(render_within(&r, &page.items)),
                Err(e) => Reply::Err(e.to_string()),
            }
        }
    };
    within_payload(&reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_nice_outside_0_to_19_is_refused_naming_the_field() {
        let bus = BusConfig::default();
        let with = |writer_nice| HistoryConfig {
            writer_nice,
            ..Default::default()
        };
        assert!(with(0).check(&bus).is_empty());
        assert!(with(19).check(&bus).is_empty());
        for wrong in [-1, 20] {
            assert_eq!(
                with(wrong).check(&bus),
                ["history.writer_nice: must be 0-19 (0: the process's priority)"]
            );
        }
    }

    #[test]
    fn a_silo_whose_store_lock_was_poisoned_still_answers_and_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store: Shared = Arc::new(Mutex::new(
            Store::open(&dir.path().join("silo-0.sqlite")).unwrap(),
        ));
        let reader = lock(&store).reader();
        // a panic while the lock is held poisons it
        let s = store.clone();
        let _ = std::thread::spawn(move || {
            let _held = s.lock();
            panic!("a bug while the store was held");
        })
        .join();
        assert!(store.is_poisoned());
        let q = serde_json::json!({"user": "u1", "limit": 10});
        let reply: Reply<HistoryPage> =
            serde_json::from_slice(&answer_query(&reader, q.to_string().as_bytes())).unwrap();
        assert!(
            matches!(reply, Reply::Ok(ref p) if p.items.is_empty()),
            "{reply:?}"
        );
        assert_eq!(lock(&store).apply(&[]).unwrap(), vec![]);
    }

    /// The report: 25 large mails broke a user's private feed (the rendered document was
    /// over a bus message). It now renders as many of the newest entries as fit.
    #[test]
    fn a_private_feed_of_huge_entries_still_renders_within_a_bus_message() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("silo-0.sqlite")).unwrap();
        let records: Vec<HistoryRecord> = (0..50)
            .map(|i| HistoryRecord::Notification {
                notification: tocsin_model::Notification {
                    id: tocsin_model::NotificationId(format!("n{i}")),
                    user: tocsin_model::UserId::parse("u1").unwrap(),
                    source: tocsin_model::SourceRef {
                        kind: tocsin_model::SourceKind::Email,
                        id: None,
                        label: "x".into(),
                    },
                    title: "<&>".repeat(300),
                    body: "<&\"".repeat(5_000),
                    url: None,
                    priority: Default::default(),
                    tags: vec![],
                    created_at_ms: i,
                    published_at_ms: None,
                    dedup_key: None,
                },
                entry: tocsin_model::TimelineEntry {
                    at_ms: i,
                    kind: "routed".into(),
                    channel: None,
                    detail: String::new(),
                },
            })
            .collect();
        store.apply(&records).unwrap();
        let reader = store.reader();
        for format in ["atom", "rss"] {
            let req = serde_json::json!({"user": "u1", "format": format, "self_url": "https://t.example/f", "limit": 50});
            let answer = answer_feed(&reader, req.to_string().as_bytes(), 50);
            assert!(answer.len() < 1024 * 1024, "{} bytes", answer.len());
            let reply: Reply<String> = serde_json::from_slice(&answer).unwrap();
            let Reply::Ok(doc) = reply else {
                panic!("{reply:?}")
            };
            assert!(
                doc.len() <= FEED_BYTES && doc.contains("n49"),
                "the newest is in"
            );
        }
    }
}
