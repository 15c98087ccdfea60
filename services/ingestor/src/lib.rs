//! The ingestor: watches feeds and turns their new items into notifications in the
//! subscribers' silos.
//!
//! It owns the feed state (validators, seen item keys, health, schedule) and the
//! feed → subscribers index, one KV entry per distinct URL in the `feeds` bucket. It learns
//! subscriptions from the router (the `ingest.subscriptions` stream) and polls each distinct
//! URL once per interval however many people subscribe, with conditional GET, per-host
//! politeness, exponential backoff with jitter and `Retry-After`. The first poll of a feed
//! sets a baseline; after that only items it has not seen become notifications, for the
//! subscribers whose filter matches. Notification ids are derived from (user, source, item),
//! so a repeat after a crash is deduplicated by JetStream and by the avatar.

pub mod auth;
pub mod fetch;
pub mod imap;
pub mod mail;
pub mod normalize;
pub mod schedule;
pub mod smtp;
pub mod websub;

use async_nats::jetstream::{self, kv};
use fetch::{AddressPolicy, FetchError, FetchSettings, Fetched, Fetcher};
use futures::StreamExt;
use normalize::{FeedItem, normalize};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, StreamKind};
use tocsin_model::{
    AvatarMessage, CompiledFilter, Event, FeedSubscription, Filter, Item, Millis, Notification,
    NotificationId, Priority, SourceKind, SourceRef, SourceStatus, SubscriptionOp, UserId, now_ms,
};
use tocsin_runtime::{ConfigDoc, Readiness};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// The `[ingestor]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestorConfig {
    pub ops_listen: String,
    /// How often each feed is polled when healthy.
    pub poll_interval_secs: u64,
    /// Random spread added to each interval, as a fraction of it (0.1 = ±10%).
    pub jitter: f64,
    /// The longest wait between polls of a failing feed.
    pub max_backoff_secs: u64,
    /// The shortest time between two requests to one host.
    pub host_min_interval_ms: u64,
    /// Requests to one host at the same time.
    pub per_host_concurrency: usize,
    /// Requests in flight overall.
    pub max_concurrent_fetches: usize,
    pub fetch_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Feeds larger than this (after decompression) are refused.
    pub max_body_bytes: usize,
    /// Allow feeds on loopback addresses (tests, the local demo).
    pub allow_loopback: bool,
    /// Allow feeds on private, link-local and unique-local addresses (an intranet).
    pub allow_private_addresses: bool,
    pub user_agent: String,
    /// Item keys remembered per feed.
    pub seen_capacity: usize,
    /// Outstanding publishes while fanning out.
    pub publish_window: usize,
    pub shutdown_grace_secs: u64,
    /// The public base URL hubs reach the ingestor at (WebSub callbacks are
    /// `<url>/websub/<feed key>`). Empty: WebSub off, every feed is polled.
    pub websub_public_url: String,
    /// Where the WebSub callback listens (put it behind the public URL).
    pub websub_listen: String,
    /// The lease asked of hubs.
    pub websub_lease_secs: u64,
    /// How often a feed with an active WebSub lease is still polled, as a safety net.
    pub websub_poll_interval_secs: u64,
    /// Where the SMTP ingress for forwarded e-mail listens (port 25 behind your MX, or a
    /// relay); empty: no e-mail ingress.
    pub smtp_listen: String,
    /// The name the SMTP server greets with.
    pub smtp_hostname: String,
    pub smtp_max_message_bytes: usize,
    pub smtp_max_connections: usize,
    pub smtp_timeout_secs: u64,
    /// Messages one inbound address accepts per minute; 0: no limit.
    pub smtp_per_address_per_minute: u32,
    /// PEM certificate chain and key: when both are set the SMTP ingress offers STARTTLS.
    pub smtp_tls_cert: String,
    pub smtp_tls_key: String,
    /// Check SPF and DKIM of inbound mail (results become tags; users may require a pass).
    pub smtp_verify_senders: bool,
    /// How often a watched IMAP mailbox is checked when its server offers no IDLE.
    pub imap_poll_secs: u64,
    /// The DNS server for those checks (`ip:port`); empty: the system's resolvers.
    pub smtp_dns_server: String,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        Self {
            ops_listen: "127.0.0.1:9101".into(),
            poll_interval_secs: 300,
            jitter: 0.1,
            max_backoff_secs: 6 * 3600,
            host_min_interval_ms: 2000,
            per_host_concurrency: 1,
            max_concurrent_fetches: 32,
            fetch_timeout_secs: 20,
            connect_timeout_secs: 10,
            max_body_bytes: 5 * 1024 * 1024,
            allow_loopback: false,
            allow_private_addresses: false,
            user_agent: concat!("tocsin/", env!("CARGO_PKG_VERSION"), " (feed watcher)").into(),
            seen_capacity: 1000,
            publish_window: 512,
            shutdown_grace_secs: 20,
            websub_public_url: String::new(),
            websub_listen: "127.0.0.1:8081".into(),
            websub_lease_secs: 10 * 86_400,
            websub_poll_interval_secs: 3600,
            smtp_listen: String::new(),
            smtp_hostname: "tocsin.localhost".into(),
            smtp_max_message_bytes: 10 * 1024 * 1024,
            smtp_max_connections: 64,
            smtp_timeout_secs: 60,
            smtp_per_address_per_minute: 60,
            smtp_tls_cert: String::new(),
            smtp_tls_key: String::new(),
            smtp_verify_senders: false,
            imap_poll_secs: 60,
            smtp_dns_server: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub bus: BusConfig,
    pub ingestor: IngestorConfig,
}

impl Config {
    pub fn load(doc: &ConfigDoc) -> Result<Self, Vec<String>> {
        let (bus, ingestor) =
            doc.service_sections("ingestor", |b: &BusConfig, s: &IngestorConfig| {
                let mut p = b.problems();
                p.extend(s.validate());
                p
            })?;
        Ok(Config { bus, ingestor })
    }
}

impl IngestorConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.poll_interval_secs == 0 {
            p.push("ingestor.poll_interval_secs: must be greater than 0".into());
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            p.push(format!(
                "ingestor.jitter: must be 0-0.5, got {}",
                self.jitter
            ));
        }
        for (f, v) in [
            ("per_host_concurrency", self.per_host_concurrency),
            ("max_concurrent_fetches", self.max_concurrent_fetches),
            ("max_body_bytes", self.max_body_bytes),
            ("seen_capacity", self.seen_capacity),
            ("publish_window", self.publish_window),
        ] {
            if v == 0 {
                p.push(format!("ingestor.{f}: must be greater than 0"));
            }
        }
        if !self.websub_public_url.is_empty() {
            if url::Url::parse(&self.websub_public_url).is_err() {
                p.push(format!(
                    "ingestor.websub_public_url: {:?} is not a URL",
                    self.websub_public_url
                ));
            }
            if self.websub_listen.is_empty() {
                p.push("ingestor.websub_listen: needed when websub_public_url is set".into());
            }
            if self.websub_lease_secs < 60 {
                p.push("ingestor.websub_lease_secs: at least 60".into());
            }
        }
        if !self.smtp_listen.is_empty()
            && (self.smtp_max_message_bytes == 0
                || self.smtp_max_connections == 0
                || self.smtp_timeout_secs == 0)
        {
            p.push("ingestor.smtp_max_message_bytes, smtp_max_connections and smtp_timeout_secs: must be greater than 0".into());
        }
        if !self.smtp_dns_server.is_empty()
            && self
                .smtp_dns_server
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            p.push(format!(
                "ingestor.smtp_dns_server: {:?} is not ip:port (e.g. 127.0.0.1:53)",
                self.smtp_dns_server
            ));
        }
        if self.smtp_tls_cert.is_empty() != self.smtp_tls_key.is_empty() {
            p.push("ingestor.smtp_tls_cert and smtp_tls_key: set both or neither".into());
        }
        if self.fetch_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            p.push(
                "ingestor.fetch_timeout_secs and connect_timeout_secs: must be greater than 0"
                    .into(),
            );
        }
        p
    }

    fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private_addresses,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestorError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

/// One subscriber of a feed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Subscriber {
    pub user: UserId,
    pub source_id: String,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub label: String,
    /// Deliver every item in the feed at the next poll (the subscriber asked for the
    /// existing items), then only new ones.
    #[serde(default)]
    pub pending_existing: bool,
}

/// Everything the ingestor keeps about one distinct feed URL (the `feeds` KV entry).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct FeedRecord {
    pub url: String,
    #[serde(default)]
    pub title: String,
    /// `<user>/<source>` → subscriber. Kept in KV as one entry per subscriber
    /// ([`subscriber_key`]), so a feed with many subscribers never outgrows a KV value and
    /// a poll rewrites only the feed's own state.
    #[serde(default, skip_serializing)]
    pub subscribers: BTreeMap<String, Subscriber>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Keys of the items seen, oldest first.
    #[serde(default)]
    pub seen: VecDeque<String>,
    /// Whether a baseline has been taken.
    #[serde(default)]
    pub polled: bool,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_checked_ms: Millis,
    #[serde(default)]
    pub next_poll_ms: Millis,
    /// The feed's WebSub subscription, when its hub is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websub: Option<websub::WebSub>,
}

/// The KV key of a feed URL.
impl FeedRecord {
    /// A copy of the feed's own state, without its subscribers (they are kept in KV one by
    /// one, never in the record's value).
    pub fn without_subscribers(&mut self) -> FeedRecord {
        let subscribers = std::mem::take(&mut self.subscribers);
        let copy = self.clone();
        self.subscribers = subscribers;
        copy
    }
}

pub fn feed_key(url: &str) -> String {
    format!("f{}", &tocsin_model::digest(&["feed-url", url])[..32])
}

/// The KV key of one subscriber of the feed stored under `feed_key`:
/// `s<feed hash>.<user>.<source>`.
pub fn subscriber_key(feed_key: &str, sub: &Subscriber) -> String {
    format!("s{}.{}.{}", &feed_key[1..], sub.user, sub.source_id)
}

/// What one poll decided (pure).
#[derive(Debug, Default, PartialEq)]
pub struct PollPlan {
    pub notifications: Vec<Notification>,
    /// `ingested` for each new item, `matched` or `filtered_out` for each subscriber of it.
    pub events: Vec<Event>,
    /// Keys to remember.
    pub seen: VecDeque<String>,
}

/// Decide what a fetched document means for `record`: which notifications go to whom, and
/// what is seen afterwards. The first poll is a baseline (only subscribers who asked for
/// existing items get them); later polls notify only unseen items.
pub fn plan_poll(
    record: &FeedRecord,
    feed_title: &str,
    items: &[FeedItem],
    seen_capacity: usize,
    now: Millis,
) -> PollPlan {
    let seen_before: HashSet<&str> = record.seen.iter().map(String::as_str).collect();
    let fresh: Vec<&FeedItem> = if record.polled {
        items
            .iter()
            .filter(|i| !seen_before.contains(i.key.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    let mut notifications = Vec::new();
    let feed = feed_key(&record.url);
    let mut events: Vec<Event> = fresh
        .iter()
        .map(|i| Event::ingested(&feed, &i.key, now).detail(&record.url))
        .collect();
    for sub in record.subscribers.values() {
        let Ok(filter) = sub.filter.compile() else {
            continue;
        };
        let candidates: Vec<&FeedItem> = if sub.pending_existing {
            items.iter().collect()
        } else {
            fresh.clone()
        };
        for item in candidates {
            match notification_for(sub, &filter, feed_title, item, now) {
                Some(n) => {
                    events.push(Event::matched(&n));
                    notifications.push(n);
                }
                None => events.push(Event::filtered_out(
                    &sub.user,
                    &sub.source_id,
                    &item.key,
                    now,
                )),
            }
        }
    }
    // remember the document's keys plus older ones, up to capacity (at least the document)
    let mut seen: VecDeque<String> = record.seen.clone();
    for i in items {
        if !seen_before.contains(i.key.as_str()) {
            seen.push_back(i.key.clone());
        }
    }
    let cap = seen_capacity.max(items.len() * 2);
    while seen.len() > cap {
        seen.pop_front();
    }
    PollPlan {
        notifications,
        events,
        seen,
    }
}

fn notification_for(
    sub: &Subscriber,
    filter: &CompiledFilter,
    feed_title: &str,
    item: &FeedItem,
    now: Millis,
) -> Option<Notification> {
    let matched = filter.matches(&Item {
        title: &item.title,
        text: &item.text,
        categories: &item.categories,
    });
    if !matched {
        return None;
    }
    Some(Notification {
        id: NotificationId::for_feed_item(&sub.user, &sub.source_id, &item.key),
        user: sub.user.clone(),
        source: SourceRef {
            kind: SourceKind::Feed,
            id: Some(sub.source_id.clone()),
            label: if sub.label.is_empty() {
                feed_title.to_owned()
            } else {
                sub.label.clone()
            },
        },
        title: if item.title.is_empty() {
            "(untitled)".into()
        } else {
            item.title.clone()
        },
        body: item.text.clone(),
        url: item.link.clone(),
        priority: Priority::DEFAULT,
        tags: item.categories.clone(),
        created_at_ms: now,
        published_at_ms: item.published_ms,
        dedup_key: Some(item.link.clone().unwrap_or_else(|| item.key.clone())),
    })
}

/// When to poll next: the interval with jitter when healthy; exponential backoff from the
/// interval when failing (capped), and never before the server's `Retry-After`.
pub fn next_poll(
    now: Millis,
    cfg: &IngestorConfig,
    failures: u32,
    retry_after: Option<Duration>,
    rand01: f64,
) -> Millis {
    let base = cfg.poll_interval_secs as f64 * 1000.0;
    let wait = if failures == 0 {
        base
    } else {
        (base * 2f64.powi(failures.min(20) as i32 - 1)).min(cfg.max_backoff_secs as f64 * 1000.0)
    };
    let jittered = wait * (1.0 + cfg.jitter * (2.0 * rand01 - 1.0));
    let floor = retry_after.map(|d| d.as_millis() as f64).unwrap_or(0.0);
    now + jittered.max(floor).max(1.0) as Millis
}

pub(crate) struct Shared {
    bus: Bus,
    kv: kv::Store,
    cfg: IngestorConfig,
    fetcher: Fetcher,
    feeds: Mutex<HashMap<String, FeedRecord>>,
    in_flight: Mutex<HashSet<String>>,
    hosts: Mutex<HashMap<String, HostState>>,
    fetch_permits: Arc<Semaphore>,
    /// When each watched feed is next due (lock after `feeds`, never before).
    queue: Mutex<schedule::PollQueue>,
    /// Woken when an entry becomes the earliest.
    wake: Notify,
}

impl Shared {
    /// Poll `key` at `at` (its record's `next_poll_ms`).
    fn reschedule(&self, key: &str, at: Millis) {
        if self.queue.lock().expect("queue lock").set(key, at) {
            self.wake.notify_one();
        }
    }
}

#[derive(Default)]
struct HostState {
    in_flight: usize,
    next_allowed_ms: Millis,
}

/// Run until `shutdown`; polls in flight finish (within the grace period) before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), IngestorError> {
    let cfg = config.ingestor.clone();
    let fetcher = Fetcher::new(FetchSettings {
        policy: cfg.policy(),
        timeout: Duration::from_secs(cfg.fetch_timeout_secs),
        connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
        max_body_bytes: cfg.max_body_bytes,
        user_agent: cfg.user_agent.clone(),
    })
    .map_err(IngestorError::Setup)?;
    let bus = Bus::connect(&config.bus, "ingestor").await?;
    bus.ensure_streams().await?;
    let kv = bus.kv("feeds").await?;
    let mut feeds = load_feeds(&kv).await?;
    info!(feeds = feeds.len(), "feed state loaded");
    let mut queue = schedule::PollQueue::default();
    let (now, interval_ms) = (now_ms(), cfg.poll_interval_secs as f64 * 1000.0);
    for (key, rec) in feeds.iter_mut() {
        if !rec.subscribers.is_empty() {
            // a record is written when the feed's state changes, not after each unchanged 304,
            // so a stored next poll may be long past: spread those over one interval rather
            // than polling them all at once (feeds never polled go first)
            if rec.polled && rec.next_poll_ms < now {
                rec.next_poll_ms = now + (interval_ms * rand::rng().random::<f64>()) as Millis;
            }
            queue.set(key, rec.next_poll_ms);
        }
    }
    let shared = Arc::new(Shared {
        bus: bus.clone(),
        kv,
        fetch_permits: Arc::new(Semaphore::new(cfg.max_concurrent_fetches)),
        queue: Mutex::new(queue),
        wake: Notify::new(),
        cfg,
        fetcher,
        feeds: Mutex::new(feeds),
        in_flight: Mutex::new(HashSet::new()),
        hosts: Mutex::new(HashMap::new()),
    });
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    tocsin_runtime::serve_ops(&config.ingestor.ops_listen, ready.clone(), shutdown.clone()).await?;
    let consumer = bus
        .pull_consumer(StreamKind::Ingest, "ingestor", None, 1000)
        .await?;
    let imap = imap::Watches::start(
        bus.clone(),
        Duration::from_secs(shared.cfg.imap_poll_secs.max(1)),
        shared.cfg.smtp_max_message_bytes,
        shutdown.clone(),
    )
    .await?;
    // the long-lived tasks end with this one (also when it is aborted)
    let mut background = Vec::new();
    let subs = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(consume_subscriptions(
        shared.clone(),
        imap,
        consumer,
        shutdown.clone(),
    )));
    if !shared.cfg.smtp_listen.is_empty() {
        let listen = &shared.cfg.smtp_listen;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on ingestor.smtp_listen {listen}: {e}"),
            )
        })?;
        info!(listen = %listener.local_addr()?, "SMTP ingress listening");
        let settings = smtp::SmtpSettings {
            hostname: shared.cfg.smtp_hostname.clone(),
            max_message_bytes: shared.cfg.smtp_max_message_bytes,
            max_connections: shared.cfg.smtp_max_connections,
            command_timeout: Duration::from_secs(shared.cfg.smtp_timeout_secs),
            max_recipients: 50,
            per_address_per_minute: shared.cfg.smtp_per_address_per_minute,
            sender_check: if shared.cfg.smtp_verify_senders {
                Some(Arc::new(
                    auth::SenderCheck::new(&shared.cfg.smtp_dns_server)
                        .map_err(IngestorError::Setup)?,
                ))
            } else {
                None
            },
            tls: if shared.cfg.smtp_tls_cert.is_empty() {
                None
            } else {
                Some(
                    smtp::load_tls(
                        shared.cfg.smtp_tls_cert.as_ref(),
                        shared.cfg.smtp_tls_key.as_ref(),
                    )
                    .map_err(IngestorError::Setup)?,
                )
            },
        };
        let avatars = bus.kv("avatars").await?;
        background.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            smtp::serve(listener, bus.clone(), avatars, settings, shutdown.clone()),
        )));
    }
    if !shared.cfg.websub_public_url.is_empty() {
        let listen = &shared.cfg.websub_listen;
        let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot listen on ingestor.websub_listen {listen}: {e}"),
            )
        })?;
        info!(listen = %listener.local_addr()?, public = %shared.cfg.websub_public_url, "WebSub callback listening");
        let app = websub::router(shared.clone());
        let stop = shutdown.clone();
        background.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            },
        )));
    }
    ready.set(true);
    info!("ingestor running");
    let tracker = TaskTracker::new();
    schedule_polls(&shared, &tracker, &shutdown).await;
    tracker.close();
    if tokio::time::timeout(
        Duration::from_secs(shared.cfg.shutdown_grace_secs),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        warn!("polls did not finish within the grace period; they will be repeated after restart");
    }
    let _ = subs.await;
    ready.set(false);
    bus.drain().await;
    info!("ingestor stopped");
    Ok(())
}

async fn load_feeds(kv: &kv::Store) -> Result<HashMap<String, FeedRecord>, BusError> {
    let kv_err = |e: &dyn std::fmt::Display| BusError::Kv {
        bucket: "feeds".into(),
        key: "*".into(),
        message: e.to_string(),
    };
    let mut out: HashMap<String, FeedRecord> = HashMap::new();
    let mut subscribers = Vec::new();
    let mut keys = kv.keys().await.map_err(|e| kv_err(&e))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(|e| kv_err(&e))?);
    }
    for k in names {
        let Some(v) = kv.get(&k).await.map_err(|e| kv_err(&e))? else {
            continue;
        };
        if k.starts_with('f') {
            match serde_json::from_slice::<FeedRecord>(&v) {
                Ok(r) => {
                    out.insert(k, r);
                }
                Err(e) => warn!(key = %k, error = %e, "unreadable feed record skipped"),
            }
        } else if let Some(feed) = k.strip_prefix('s').and_then(|r| r.split('.').next()) {
            match serde_json::from_slice::<Subscriber>(&v) {
                Ok(sub) => subscribers.push((format!("f{feed}"), sub)),
                Err(e) => warn!(key = %k, error = %e, "unreadable subscriber skipped"),
            }
        }
    }
    for (feed, sub) in subscribers {
        match out.get_mut(&feed) {
            Some(r) => {
                r.subscribers
                    .insert(format!("{}/{}", sub.user, sub.source_id), sub);
            }
            None => warn!(feed = %feed, user = %sub.user, "subscriber of an unknown feed skipped"),
        }
    }
    Ok(out)
}

/// Store or delete one subscriber's entry.
async fn save_subscriber(
    shared: &Shared,
    feed_key: &str,
    sub: &Subscriber,
    delete: bool,
) -> Result<(), BusError> {
    let key = subscriber_key(feed_key, sub);
    let result = if delete {
        shared.kv.delete(&key).await.map_err(|e| e.to_string())
    } else {
        let bytes = tocsin_bus::encode(sub)?;
        shared
            .kv
            .put(&key, bytes)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    result.map_err(|message| BusError::Kv {
        bucket: "feeds".into(),
        key,
        message,
    })
}

pub(crate) async fn save(shared: &Shared, key: &str, record: &FeedRecord) -> Result<(), BusError> {
    let bytes = tocsin_bus::encode(record)?;
    shared
        .kv
        .put(key, bytes)
        .await
        .map(|_| ())
        .map_err(|e| BusError::Kv {
            bucket: "feeds".into(),
            key: key.to_owned(),
            message: e.to_string(),
        })
}

async fn consume_subscriptions(
    shared: Arc<Shared>,
    imap: Arc<imap::Watches>,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    shutdown: CancellationToken,
) {
    let mut messages = tocsin_bus::Pull::new(consumer, 256, "subscription changes");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = messages.next() => m,
        };
        if msg.subject.as_str() == shared.bus.subjects().ingest_imap() {
            let disposition = match tocsin_bus::decode::<tocsin_model::ImapSubscription>(
                &msg.payload,
                "IMAP subscription",
            ) {
                _ if shared.bus.exhausted(&msg) => {
                    Disposition::Reject("recording it failed on every delivery".into())
                }
                Err(e) => Disposition::Reject(e.to_string()),
                Ok(sub) => match imap.apply(sub).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        warn!(error = %e, "cannot record an IMAP subscription; will retry");
                        Disposition::Retry(Duration::from_secs(1))
                    }
                },
            };
            shared.bus.settle(&msg, disposition).await;
            continue;
        }
        let disposition =
            match tocsin_bus::decode::<FeedSubscription>(&msg.payload, "feed subscription") {
                _ if shared.bus.exhausted(&msg) => {
                    Disposition::Reject("recording it failed on every delivery".into())
                }
                Err(e) => Disposition::Reject(e.to_string()),
                Ok(sub) => match apply_subscription(&shared, sub).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        warn!(error = %e, "cannot record a subscription change; will retry");
                        Disposition::Retry(Duration::from_secs(1))
                    }
                },
            };
        shared.bus.settle(&msg, disposition).await;
    }
}

async fn apply_subscription(shared: &Shared, sub: FeedSubscription) -> Result<(), BusError> {
    let url = match tocsin_model::validate_feed_url(&sub.url) {
        Ok(u) => u,
        Err(e) => {
            warn!(url = %sub.url, error = %e, "subscription with an invalid URL ignored");
            return Ok(());
        }
    };
    let key = feed_key(&url);
    let sub_key = format!("{}/{}", sub.user, sub.source_id);
    // (the feed's record when it is written or dropped, the subscriber, whether the record
    // must be written, whether the feed is no longer watched, the feed's health for a newcomer)
    let (record, subscriber, write_record, unwatched, health) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        match sub.op {
            SubscriptionOp::Upsert => {
                let fresh = !feeds.contains_key(&key);
                let rec = feeds.entry(key.clone()).or_insert_with(|| FeedRecord {
                    url: url.clone(),
                    next_poll_ms: 0,
                    ..Default::default()
                });
                let existing = rec.subscribers.contains_key(&sub_key);
                let mut write_record = fresh;
                if sub.deliver_existing && !existing && rec.polled {
                    // they asked for what is already listed: fetch it now, not next interval
                    rec.next_poll_ms = 0;
                    write_record = true;
                }
                let subscriber = Subscriber {
                    user: sub.user,
                    source_id: sub.source_id,
                    filter: sub.filter,
                    label: sub.label,
                    pending_existing: sub.deliver_existing && !existing,
                };
                rec.subscribers.insert(sub_key, subscriber.clone());
                // (a feed being polled is not in the queue: its poll's end puts it back)
                shared.reschedule(&key, rec.next_poll_ms);
                // the record's own state, only when it is written (copying the subscribers
                // with it would make each subscription cost as much as the feed's audience)
                let record = write_record.then(|| rec.without_subscribers());
                let health = rec.polled.then(|| SourceStatus {
                    ok: rec.failures == 0,
                    error: rec.last_error.clone(),
                    checked_at_ms: rec.last_checked_ms,
                    consecutive_failures: rec.failures,
                });
                let (url, count) = (rec.url.clone(), rec.subscribers.len());
                debug!(%url, subscribers = count, "subscription recorded");
                (record, subscriber, write_record, false, health)
            }
            SubscriptionOp::Remove => {
                let Some(rec) = feeds.get_mut(&key) else {
                    return Ok(());
                };
                let Some(subscriber) = rec.subscribers.remove(&sub_key) else {
                    return Ok(());
                };
                if rec.subscribers.is_empty() {
                    let r = feeds.remove(&key).expect("present");
                    shared.queue.lock().expect("queue lock").remove(&key);
                    (Some(r), subscriber, false, true, None)
                } else {
                    (None, subscriber, false, false, None)
                }
            }
        }
    };
    let removing = sub.op == SubscriptionOp::Remove;
    if write_record && let Some(record) = &record {
        save(shared, &key, record).await?;
    }
    save_subscriber(shared, &key, &subscriber, removing).await?;
    if unwatched && let Some(record) = record {
        if let Some(ws) = record.websub.clone()
            && !shared.cfg.websub_public_url.is_empty()
        {
            let client = shared.fetcher.client().clone();
            let (public, lease, k) = (
                shared.cfg.websub_public_url.clone(),
                shared.cfg.websub_lease_secs,
                key.clone(),
            );
            tokio::spawn(async move {
                if let Err(e) =
                    websub::request(&client, &public, &k, "unsubscribe", &ws, lease).await
                {
                    debug!(error = %e, "WebSub unsubscribe failed; the lease will lapse");
                }
            });
        }
        shared.kv.delete(&key).await.map_err(|e| BusError::Kv {
            bucket: "feeds".into(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        info!(url = %record.url, "last subscriber gone; feed no longer watched");
    } else if let Some(status) = health {
        // a newcomer to a feed already watched learns its health now, not at its next change
        report_status_to(shared, &subscriber, status).await;
    }
    Ok(())
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Start each feed's poll when it is due, a fetch permit is free and its host allows it;
/// returns at `shutdown`. A finished fetch frees its permit and the next due feed starts at
/// once; with nothing due the loop sleeps until the earliest entry (or an earlier one arrives).
async fn schedule_polls(shared: &Arc<Shared>, tracker: &TaskTracker, shutdown: &CancellationToken) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = shared.fetch_permits.clone().acquire_owned() => p.expect("the permits are never closed"),
        };
        let Some((key, url, host)) = next_due(shared, shutdown).await else {
            return;
        };
        let s = shared.clone();
        let span = info_span!("poll", url = %url);
        tracker.spawn(
            async move {
                poll(&s, &key).await;
                s.in_flight.lock().expect("in-flight lock").remove(&key);
                let mut hosts = s.hosts.lock().expect("hosts lock");
                if let Some(h) = hosts.get_mut(&host) {
                    h.in_flight = h.in_flight.saturating_sub(1);
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Wait for the next feed that is due and allowed by its host's limits, and mark it in
/// flight: (key, url, host). `None` at shutdown.
async fn next_due(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Option<(String, String, String)> {
    loop {
        let now = now_ms();
        let popped = {
            let mut queue = shared.queue.lock().expect("queue lock");
            queue.pop_due(now).ok_or(queue.next_at())
        };
        let key = match popped {
            Ok(key) => key,
            Err(next_at) => {
                // nothing due: sleep until the earliest entry, or until woken by an earlier one
                let wait = next_at.map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now).max(1) as u64)
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let url = {
            let feeds = shared.feeds.lock().expect("feeds lock");
            match feeds.get(&key) {
                // no longer watched: its entry goes with it
                None => continue,
                Some(r) if r.subscribers.is_empty() => continue,
                Some(r) if r.next_poll_ms > now => {
                    // a stale entry: the record was rescheduled later
                    shared.reschedule(&key, r.next_poll_ms);
                    continue;
                }
                Some(r) => r.url.clone(),
            }
        };
        // being polled (or pushed by a hub): that poll's end schedules it again
        if shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .contains(&key)
        {
            continue;
        }
        let host = host_of(&url);
        {
            let mut hosts = shared.hosts.lock().expect("hosts lock");
            let h = hosts.entry(host.clone()).or_default();
            if h.in_flight >= shared.cfg.per_host_concurrency || h.next_allowed_ms > now {
                // the host's turn comes later; its other feeds wait with this one
                let later = h.next_allowed_ms.max(now + 100);
                drop(hosts);
                shared.reschedule(&key, later);
                continue;
            }
            h.in_flight += 1;
            h.next_allowed_ms = now + shared.cfg.host_min_interval_ms as Millis;
        }
        shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.clone());
        return Some((key, url, host));
    }
}

/// Poll one feed, fan out what is new, record the outcome.
async fn poll(shared: &Shared, key: &str) {
    let Some(snapshot) = shared.feeds.lock().expect("feeds lock").get(key).cloned() else {
        return;
    };
    let started = std::time::Instant::now();
    // a subscriber waiting for the items already listed needs the document, not a 304
    let wants_document = snapshot.subscribers.values().any(|s| s.pending_existing);
    let (etag, last_modified) = if wants_document {
        (None, None)
    } else {
        (snapshot.etag.as_deref(), snapshot.last_modified.as_deref())
    };
    let result = shared
        .fetcher
        .fetch(&snapshot.url, etag, last_modified)
        .await;
    let now = now_ms();
    let outcome: Result<Option<Refreshed>, (String, Option<Duration>)> = match result {
        Ok(Fetched::NotModified) => Ok(None),
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
        }) => refresh(shared, &snapshot, &bytes, etag, last_modified, now)
            .map(Some)
            .map_err(|e| (e, None)),
        Err(e) => {
            let retry_after = e.retry_after();
            let msg = match &e {
                FetchError::Status {
                    status: 404 | 410, ..
                } => format!("{e}: the feed is gone; check the URL"),
                _ => e.to_string(),
            };
            Err((msg, retry_after))
        }
    };
    let label = match &outcome {
        Ok(None) => "not_modified",
        Ok(Some(_)) => "ok",
        Err(_) => "error",
    };
    metrics::counter!("tocsin_ingestor_polls_total", "outcome" => label).increment(1);
    metrics::histogram!("tocsin_ingestor_poll_seconds").record(started.elapsed().as_secs_f64());
    settle_document(shared, key, &snapshot, outcome, now).await;
}

/// Parse a document and decide what it means for `snapshot`.
fn refresh(
    shared: &Shared,
    snapshot: &FeedRecord,
    bytes: &[u8],
    etag: Option<String>,
    last_modified: Option<String>,
    now: Millis,
) -> Result<Refreshed, String> {
    let parsed = normalize(bytes).map_err(|e| e.to_string())?;
    let plan = plan_poll(
        snapshot,
        &parsed.title,
        &parsed.items,
        shared.cfg.seen_capacity,
        now,
    );
    Ok(Refreshed {
        plan,
        title: parsed.title,
        etag,
        last_modified,
        hub: parsed.hub,
        topic: parsed.self_url,
    })
}

fn random_secret() -> String {
    let mut rng = rand::rng();
    (0..24)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A document a WebSub hub pushed: processed like a polled one, keeping the validators.
pub(crate) async fn handle_push(shared: &Shared, key: &str, body: Vec<u8>) {
    // one poll or push per feed at a time
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_owned())
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            warn!(
                key,
                "a WebSub push waited too long for a poll of the same feed; dropped (the next poll covers it)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = shared.feeds.lock().expect("feeds lock").get(key).cloned();
    if let Some(snapshot) = snapshot {
        let now = now_ms();
        let outcome = refresh(
            shared,
            &snapshot,
            &body,
            snapshot.etag.clone(),
            snapshot.last_modified.clone(),
            now,
        )
        .map(Some)
        .map_err(|e| (format!("pushed by the hub: {e}"), None));
        settle_document(shared, key, &snapshot, outcome, now).await;
    }
    shared.in_flight.lock().expect("in-flight lock").remove(key);
}

/// Fan out what a fetched or pushed document brought, then record the feed's new state.
async fn settle_document(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    outcome: Result<Option<Refreshed>, (String, Option<Duration>)>,
    now: Millis,
) {
    match outcome {
        Ok(plan) => {
            let mut published = 0;
            if let Some(r) = &plan
                && !(r.plan.notifications.is_empty() && r.plan.events.is_empty())
            {
                published = r.plan.notifications.len();
                if let Err(e) = fan_out(shared, &r.plan.notifications, &r.plan.events).await {
                    // nothing recorded as seen: the next poll (soon) publishes again, and the
                    // ids make the repeat harmless
                    warn!(error = %e, "fan-out failed; retrying shortly");
                    record_failure(
                        shared,
                        key,
                        snapshot,
                        format!("internal: {e}"),
                        Some(Duration::from_secs(5)),
                        now,
                        false,
                    )
                    .await;
                    return;
                }
            }
            record_success(shared, key, snapshot, plan, now).await;
            if published > 0 {
                info!(notifications = published, "new items fanned out");
            }
        }
        Err((msg, retry_after)) => {
            warn!(error = %msg, "feed poll failed");
            record_failure(shared, key, snapshot, msg, retry_after, now, true).await;
        }
    }
}

async fn fan_out(
    shared: &Shared,
    notifications: &[Notification],
    events: &[Event],
) -> Result<(), BusError> {
    let mut window = shared.bus.window(shared.cfg.publish_window);
    for e in events {
        let (subject, id, payload) = shared.bus.event_output(e.clone(), "ingestor")?;
        window.push(subject, id, payload).await;
    }
    for n in notifications {
        let silo = shared.bus.silo_of(&n.user);
        let subject = shared.bus.subjects().silo(silo, n.user.as_str(), "notify");
        let payload = tocsin_bus::encode(&AvatarMessage::Notify {
            notification: n.clone(),
        })?;
        window.push(subject, n.id.to_string(), payload).await;
    }
    window.flush().await?;
    metrics::counter!("tocsin_ingestor_notifications_total").increment(notifications.len() as u64);
    Ok(())
}

/// A document that was fetched and parsed, with what it means.
struct Refreshed {
    plan: PollPlan,
    title: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// The WebSub hub and topic the document advertises.
    hub: Option<String>,
    topic: Option<String>,
}

async fn record_success(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    plan: Option<Refreshed>,
    now: Millis,
) {
    let was_failing = snapshot.failures > 0 || !snapshot.polled;
    let had_document = plan.is_some();
    let hub_topic = plan
        .as_ref()
        .filter(|_| !shared.cfg.websub_public_url.is_empty())
        .map(|r| {
            (
                r.hub.clone(),
                r.topic.clone().unwrap_or_else(|| snapshot.url.clone()),
            )
        });
    let mut subscribe = None;
    let mut served = Vec::new();
    let must_save;
    let record = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        let Some(rec) = feeds.get_mut(key) else {
            return;
        };
        if let Some(r) = plan {
            rec.seen = r.plan.seen;
            rec.title = r.title;
            rec.etag = r.etag;
            rec.last_modified = r.last_modified;
            rec.polled = true;
            // subscribers that got the existing items (those present in the snapshot) are done
            for (k, s) in rec.subscribers.iter_mut() {
                if s.pending_existing
                    && snapshot
                        .subscribers
                        .get(k)
                        .is_some_and(|o| o.pending_existing)
                {
                    s.pending_existing = false;
                    served.push(s.clone());
                }
            }
        }
        let failing_before = rec.failures > 0 || rec.last_error.is_some();
        rec.failures = 0;
        rec.last_error = None;
        rec.last_checked_ms = now;
        if let Some((hub, topic)) = &hub_topic {
            let action = websub::plan(
                rec.websub.as_ref(),
                hub.as_deref(),
                topic,
                shared.cfg.websub_lease_secs,
                now,
            );
            if let websub::Action::Subscribe { hub, topic } = action {
                let ws = websub::WebSub {
                    hub,
                    topic,
                    secret: random_secret(),
                    verified: false,
                    lease_expires_ms: 0,
                    requested_at_ms: now,
                };
                rec.websub = Some(ws.clone());
                subscribe = Some(ws);
            }
        }
        let mut cfg = shared.cfg.clone();
        if websub::active(rec.websub.as_ref(), now) {
            cfg.poll_interval_secs = cfg.poll_interval_secs.max(cfg.websub_poll_interval_secs);
        }
        rec.next_poll_ms = next_poll(now, &cfg, 0, None, rand::rng().random());
        if had_document && rec.subscribers.values().any(|s| s.pending_existing) {
            // subscribed while this poll was under way, asking for the existing items: again now
            rec.next_poll_ms = now;
        }
        shared.reschedule(key, rec.next_poll_ms);
        // an unchanged 304 changes only the times, which a restart can do without (it spreads
        // overdue feeds over an interval): not worth a write to the bus on every poll
        must_save = had_document
            || failing_before
            || was_failing
            || subscribe.is_some()
            || !served.is_empty();
        // the subscribers are needed only to tell them the feed is healthy again
        if was_failing {
            rec.clone()
        } else {
            rec.without_subscribers()
        }
    };
    if let Some(ws) = subscribe {
        let client = shared.fetcher.client().clone();
        let (public, lease, k, url) = (
            shared.cfg.websub_public_url.clone(),
            shared.cfg.websub_lease_secs,
            key.to_owned(),
            record.url.clone(),
        );
        tokio::spawn(async move {
            match websub::request(&client, &public, &k, "subscribe", &ws, lease).await {
                Ok(()) => info!(%url, hub = %ws.hub, "WebSub subscription requested"),
                Err(e) => {
                    warn!(%url, hub = %ws.hub, error = %e, "WebSub subscription failed; polling, asking again later")
                }
            }
        });
    }
    if must_save && let Err(e) = save(shared, key, &record).await {
        warn!(error = %e, "cannot save feed state; items may be announced again (deduplicated)");
    }
    for sub in &served {
        if let Err(e) = save_subscriber(shared, key, sub, false).await {
            warn!(error = %e, "cannot save a subscriber's state; existing items may be announced again (deduplicated)");
        }
    }
    if was_failing {
        report_status(
            shared,
            &record,
            SourceStatus {
                ok: true,
                error: None,
                checked_at_ms: now,
                consecutive_failures: 0,
            },
        )
        .await;
    }
}

async fn record_failure(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    msg: String,
    retry_after: Option<Duration>,
    now: Millis,
    count: bool,
) {
    let record = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        let Some(rec) = feeds.get_mut(key) else {
            return;
        };
        if count {
            rec.failures += 1;
            rec.last_error = Some(msg.clone());
        }
        rec.last_checked_ms = now;
        rec.next_poll_ms = match (count, retry_after) {
            (false, Some(d)) => now + d.as_millis() as Millis,
            _ => next_poll(
                now,
                &shared.cfg,
                rec.failures,
                retry_after,
                rand::rng().random(),
            ),
        };
        shared.reschedule(key, rec.next_poll_ms);
        rec.clone()
    };
    if let Err(e) = save(shared, key, &record).await {
        warn!(error = %e, "cannot save feed state");
    }
    if count && snapshot.last_error.as_deref() != Some(msg.as_str()) {
        let status = SourceStatus {
            ok: false,
            error: Some(msg),
            checked_at_ms: now,
            consecutive_failures: record.failures,
        };
        report_status(shared, &record, status).await;
    }
}

/// Tell each subscriber's avatar how its source is doing (only on changes).
async fn report_status(shared: &Shared, record: &FeedRecord, status: SourceStatus) {
    for sub in record.subscribers.values() {
        report_status_to(shared, sub, status.clone()).await;
    }
}

async fn report_status_to(shared: &Shared, sub: &Subscriber, status: SourceStatus) {
    report_source_status(&shared.bus, &sub.user, &sub.source_id, status).await;
}

/// Tell `user`'s avatar how their source is doing (feeds and IMAP mailboxes alike).
pub(crate) async fn report_source_status(
    bus: &Bus,
    user: &tocsin_model::UserId,
    source_id: &str,
    status: SourceStatus,
) {
    let subject = bus
        .subjects()
        .silo(bus.silo_of(user), user.as_str(), "status");
    let id = format!("status:{user}:{source_id}:{}", status.checked_at_ms);
    let msg = AvatarMessage::SourceStatus {
        source_id: source_id.to_owned(),
        status,
    };
    if let Err(e) = bus.publish_json(subject, &id, &msg).await {
        warn!(error = %e, "cannot report source status");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, title: &str) -> FeedItem {
        FeedItem {
            key: key.into(),
            title: title.into(),
            text: String::new(),
            link: Some(format!("https://x.org/{key}")),
            categories: vec![],
            published_ms: None,
        }
    }

    fn record(subs: &[(&str, Filter, bool)]) -> FeedRecord {
        FeedRecord {
            url: "https://x.org/rss".into(),
            subscribers: subs
                .iter()
                .map(|(u, f, existing)| {
                    (
                        format!("{u}/s"),
                        Subscriber {
                            user: UserId::parse(u).unwrap(),
                            source_id: "s".into(),
                            filter: f.clone(),
                            label: String::new(),
                            pending_existing: *existing,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn first_poll_is_a_baseline_then_only_new_matching_items() {
        let bikes = Filter {
            any: vec!["bike".into()],
            ..Default::default()
        };
        let mut rec = record(&[("u1", bikes, false), ("u2", Filter::default(), true)]);
        let page1 = [item("a", "road bike"), item("b", "sofa")];
        let plan = plan_poll(&rec, "t", &page1, 100, 1);
        // u1 gets nothing (baseline), u2 asked for the existing items and gets both
        let users: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| n.user.to_string())
            .collect();
        assert_eq!(users, ["u2", "u2"]);
        rec.seen = plan.seen;
        rec.polled = true;
        for s in rec.subscribers.values_mut() {
            s.pending_existing = false;
        }
        let page2 = [
            item("c", "kids bike"),
            item("d", "lamp"),
            item("a", "road bike"),
        ];
        let plan = plan_poll(&rec, "t", &page2, 100, 2);
        let got: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| (n.user.to_string(), n.title.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("u1".into(), "kids bike".into()),
                ("u2".into(), "kids bike".into()),
                ("u2".into(), "lamp".into())
            ]
        );
        assert_eq!(plan.seen, ["a", "b", "c", "d"]);
        // same ids on a repeat: a retried poll is deduplicated downstream
        let again = plan_poll(&rec, "t", &page2, 100, 3);
        assert_eq!(again.notifications[0].id, plan.notifications[0].id);
    }

    #[test]
    fn seen_is_bounded_but_keeps_the_current_document() {
        let mut rec = record(&[("u1", Filter::default(), false)]);
        rec.polled = true;
        rec.seen = (0..10).map(|i| format!("old{i}")).collect();
        let page: Vec<_> = (0..4).map(|i| item(&format!("k{i}"), "x")).collect();
        let plan = plan_poll(&rec, "t", &page, 5, 1);
        assert_eq!(plan.seen.len(), 8);
        assert!(plan.seen.iter().rev().take(4).all(|k| k.starts_with('k')));
    }

    #[test]
    fn backoff_and_retry_after() {
        let cfg = IngestorConfig {
            poll_interval_secs: 60,
            jitter: 0.0,
            max_backoff_secs: 600,
            ..Default::default()
        };
        assert_eq!(next_poll(0, &cfg, 0, None, 0.5), 60_000);
        assert_eq!(next_poll(0, &cfg, 1, None, 0.5), 60_000);
        assert_eq!(next_poll(0, &cfg, 3, None, 0.5), 240_000);
        assert_eq!(next_poll(0, &cfg, 10, None, 0.5), 600_000);
        assert_eq!(
            next_poll(0, &cfg, 1, Some(Duration::from_secs(3600)), 0.5),
            3_600_000
        );
        let j = IngestorConfig { jitter: 0.1, ..cfg };
        assert_eq!(next_poll(0, &j, 0, None, 0.0), 54_000);
        assert_eq!(next_poll(0, &j, 0, None, 1.0), 66_000);
    }
}
