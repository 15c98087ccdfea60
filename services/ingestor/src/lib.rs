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

pub mod config;
pub mod feeds;
pub mod mail;
pub(crate) mod status;
mod telemetry;

pub use config::{Config, IngestorConfig};

use crate::feeds::Shared;
use crate::feeds::fetch::{FetchSettings, Fetcher};
use crate::feeds::scheduler::schedule_polls;
use crate::feeds::store::load_feeds;
use crate::feeds::subscriptions::consume_subscriptions;
use crate::mail::{auth, imap, smtp};
use rand::Rng;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::StreamKind;
use tocsin_model::{Millis, now_ms};
use tocsin_runtime::ServiceError;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Run until `shutdown`; what is under way (polls, pushes, SMTP transactions, IMAP watches)
/// finishes within the grace period before it returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    telemetry::describe();
    let cfg = config.ingestor.clone();
    let fetcher = Fetcher::new(FetchSettings {
        policy: cfg.policy(),
        timeout: Duration::from_secs(cfg.fetch_timeout_secs),
        connect_timeout: Duration::from_secs(cfg.connect_timeout_secs),
        max_body_bytes: cfg.max_body_bytes,
        user_agent: cfg.user_agent.clone(),
    })
    .map_err(ServiceError::Setup)?;
    let (bus, ready) = config.connect(&shutdown).await?;
    let kv = bus.kv("feeds").await?;
    let mut feeds = load_feeds(&kv).await?;
    info!(feeds = feeds.len(), "feed state loaded");
    let mut queue = crate::feeds::queue::PollQueue::default();
    let (now, interval_ms) = (now_ms(), cfg.poll_interval_secs as f64 * 1000.0);
    for (key, rec) in feeds.iter_mut() {
        // a shared topic's subscribers are kept here too, but a topic is never polled
        if !rec.subscribers.is_empty() && !crate::feeds::topics::is_topic(&rec.url) {
            // a record is written when the feed's state changes, not after each unchanged 304,
            // so a stored next poll may be long past: spread those over one interval rather
            // than polling them all at once (feeds never polled go first)
            if rec.polled && rec.next_poll_ms < now {
                rec.next_poll_ms = now + (interval_ms * rand::rng().random::<f64>()) as Millis;
            }
            queue.set(key, rec.next_poll_ms);
        }
    }
    let tasks = TaskTracker::new();
    let shared = Arc::new(Shared {
        tasks: tasks.clone(),
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
    let consumer = bus
        .pull_consumer(StreamKind::Ingest, "ingestor", None, 1000)
        .await?;
    let imap = imap::Watches::start(
        bus.clone(),
        imap::Limits {
            poll: Duration::from_secs(shared.cfg.imap_poll_secs.max(1)),
            max_bytes: shared.cfg.smtp_max_message_bytes,
            policy: shared.cfg.policy(),
            broken_after: shared.cfg.source_broken_after,
        },
        shutdown.clone(),
        tasks.clone(),
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
            max_connections_per_client: shared.cfg.smtp_max_connections_per_client,
            max_session: Duration::from_secs(shared.cfg.smtp_max_session_secs),
            max_buffered_bytes: shared
                .cfg
                .smtp_max_buffered_bytes
                .max(shared.cfg.smtp_max_message_bytes),
            command_timeout: Duration::from_secs(shared.cfg.smtp_timeout_secs),
            max_recipients: 50,
            per_address_per_minute: shared.cfg.smtp_per_address_per_minute,
            sender_check: if shared.cfg.smtp_verify_senders {
                Some(Arc::new(
                    auth::SenderCheck::new(&shared.cfg.smtp_dns_server)
                        .map_err(ServiceError::Setup)?,
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
                    .map_err(ServiceError::Setup)?,
                )
            },
        };
        let avatars = bus.kv("avatars").await?;
        background.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            smtp::serve(
                listener,
                bus.clone(),
                avatars,
                settings,
                shutdown.clone(),
                tasks.clone(),
            ),
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
        let app = crate::feeds::websub::router(shared.clone());
        let stop = shutdown.clone();
        background.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
            async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            },
        )));
    }
    background.push(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
        crate::feeds::preview::serve(shared.clone(), shutdown.clone()),
    )));
    ready.set(true);
    info!("ingestor running");
    schedule_polls(&shared, &tasks, &shutdown).await;
    // stop taking new work, then give what is under way (polls, pushes, SMTP transactions,
    // IMAP watches, hub requests) the grace period before the bus is drained
    let _ = subs.await;
    drop(background);
    tasks.close();
    if tokio::time::timeout(
        Duration::from_secs(shared.cfg.shutdown_grace_secs),
        tasks.wait(),
    )
    .await
    .is_err()
    {
        warn!(
            "work under way did not finish within the grace period; polls are repeated after restart, SMTP senders retry"
        );
    }
    ready.set(false);
    bus.drain().await;
    info!("ingestor stopped");
    Ok(())
}
