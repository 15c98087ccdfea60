//! The bus contract of tocsin: every subject, stream, consumer and KV bucket name, and the one
//! way services publish and consume on NATS JetStream.
//!
//! Services never build a subject by hand; they ask [`Subjects`]. Everything lives under a
//! configurable prefix so that tests (and several installations) can share one server without
//! sharing streams. Users are partitioned into silos by [`silo_of`]; each silo has its own
//! stream, so each silo has its own raft group in a cluster.
//!
//! Publishing always carries `Nats-Msg-Id` and awaits the PubAck ([`Bus::publish`]);
//! high-volume publishers keep a bounded window of outstanding acks ([`PublishWindow`]).
//! Consumers are durable pull consumers with explicit ack; a handler's verdict
//! ([`Disposition`]) becomes ack, nak-with-backoff or dead-letter ([`Bus::settle`]).
//! `docs/bus.md` documents every subject and payload.

mod config;
mod dlq;
pub mod lease;
pub mod msg_id;
mod names;
mod publish;
mod pulling;
mod silo;

pub use config::{BusConfig, ConfigError};
pub use dlq::DeadLetter;
pub use lease::Leases;
pub use names::{StreamKind, Subjects};
pub use publish::PublishWindow;
pub use pulling::Pull;
pub use silo::{SiloSet, SiloSetError, jump_consistent_hash, silo_of};

use async_nats::jetstream::{self, consumer::pull, stream};
use serde::Serialize;
use std::time::Duration;
use tracing::{debug, warn};

/// How often a setup step (a stream, consumer or bucket) is tried before start-up fails.
const SETUP_ATTEMPTS: u32 = 5;

/// Run one idempotent setup step, retrying it: in a cluster, instances starting together
/// race to create the same stream or consumer, and the server leaves the losers' requests
/// unanswered until they time out (seen with nats-server 2.15 and R3 streams); the retry
/// then finds the winner's stream in place.
async fn setup<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, BusError>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < SETUP_ATTEMPTS => {
                warn!(
                    what,
                    attempt,
                    error = %e,
                    "jetstream setup did not succeed (another instance creating it at the same \
                     time, or a leader election); retrying"
                );
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(BusError::Setup {
                    what: what.to_owned(),
                    message: format!("{e} (after {attempt} attempts)"),
                });
            }
        }
    }
}

/// Whether an existing stream already has every setting tocsin specifies.
fn same_stream_spec(have: &stream::Config, want: &stream::Config) -> bool {
    have.subjects == want.subjects
        && have.retention == want.retention
        && have.storage == want.storage
        && have.num_replicas == want.num_replicas
        && have.duplicate_window == want.duplicate_window
        && have.max_age == want.max_age
        && have.max_bytes == want.max_bytes
        && have.description == want.description
}

/// Errors talking to the bus. `kind()` says whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to nats at {url}: {message} (is nats-server running with -js?)")]
    Connect { url: String, message: String },
    #[error("jetstream setup failed for {what}: {message}")]
    Setup { what: String, message: String },
    #[error("publish to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    #[error("request to {subject} failed: {message}")]
    Request { subject: String, message: String },
    #[error("key-value {bucket}/{key}: {message}")]
    Kv {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("key-value {bucket}/{key}: revision conflict (another writer owns this key?)")]
    KvConflict { bucket: String, key: String },
    #[error("cannot encode or decode {what}: {message}")]
    Codec { what: String, message: String },
    #[error("{0}")]
    Other(String),
}

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Transient,
    Permanent,
}

impl BusError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            BusError::Codec { .. } | BusError::KvConflict { .. } => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        }
    }
}

/// What a handler decided about one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Done: its effect is durable.
    Ack,
    /// A transient failure: deliver it again after (at least) this long.
    Retry(Duration),
    /// It can never succeed (malformed, refers to nothing): dead-letter it with this reason.
    Reject(String),
}

/// A connected bus: the client, the JetStream context and the names.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    subjects: Subjects,
    config: BusConfig,
}

impl Bus {
    /// Connect to the configured server. Fails if the server cannot be reached within
    /// `connect_timeout_secs`; reconnects by itself afterwards.
    pub async fn connect(config: &BusConfig, name: &str) -> Result<Bus, BusError> {
        let opts = async_nats::ConnectOptions::new()
            .name(format!("tocsin-{name}"))
            .connection_timeout(Duration::from_secs(config.connect_timeout_secs))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback(|e| async move {
                match e {
                    async_nats::Event::Disconnected => warn!("nats connection lost, reconnecting"),
                    async_nats::Event::Connected => debug!("nats connected"),
                    other => debug!(event = %other, "nats event"),
                }
            });
        let client = tokio::time::timeout(
            Duration::from_secs(config.connect_timeout_secs),
            opts.connect(config.server_urls()),
        )
        .await
        .map_err(|_| BusError::Connect {
            url: config.url.clone(),
            message: format!("no answer within {}s", config.connect_timeout_secs),
        })?
        .map_err(|e| BusError::Connect {
            url: config.url.clone(),
            message: e.to_string(),
        })?;
        // wait until the connection is really up (retry_on_initial_connect returns early)
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(config.connect_timeout_secs);
        while client.connection_state() != async_nats::connection::State::Connected {
            if tokio::time::Instant::now() > deadline {
                return Err(BusError::Connect {
                    url: config.url.clone(),
                    message: format!("not connected after {}s", config.connect_timeout_secs),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(config.request_timeout_secs))
            .max_ack_inflight(config.max_ack_inflight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Ok(Bus {
            client,
            js,
            subjects: Subjects::new(&config.prefix),
            config: config.clone(),
        })
    }

    /// Whether the connection to NATS is up right now (for readiness checks).
    pub fn connected_check(&self) -> impl Fn() -> bool + Send + Sync + 'static {
        let client = self.client.clone();
        move || client.connection_state() == async_nats::connection::State::Connected
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The silo that owns `user`.
    pub fn silo_of(&self, user: &tocsin_model::UserId) -> u32 {
        silo_of(user.as_str(), self.config.silo_count)
    }

    /// Create or update every stream of the contract. Idempotent; every service calls it at
    /// start-up, so the order services start in does not matter.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        for cfg in self.stream_configs() {
            let name = cfg.name.clone();
            setup(&format!("stream {name}"), || async {
                // as specified already (every start after the first): nothing to write
                if let Ok(stream) = self.js.get_stream(&name).await
                    && same_stream_spec(&stream.cached_info().config, &cfg)
                {
                    return Ok(());
                }
                self.js.create_or_update_stream(cfg.clone()).await.map(drop)
            })
            .await?;
        }
        Ok(())
    }

    /// The declarative specification of every stream.
    pub fn stream_configs(&self) -> Vec<stream::Config> {
        let s = &self.subjects;
        let dup = Duration::from_secs(self.config.duplicate_window_secs);
        let replicas = self.config.replicas;
        let work_queue = |name: String, subjects: Vec<String>, description: &str| stream::Config {
            name,
            subjects,
            description: Some(description.to_owned()),
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: dup,
            ..Default::default()
        };
        let mut out = Vec::new();
        for k in 0..self.config.silo_count {
            out.push(work_queue(
                s.stream(StreamKind::Silo(k)),
                vec![s.silo_all(k)],
                "everything addressed to the avatars of one silo",
            ));
        }
        out.push(work_queue(
            s.stream(StreamKind::History),
            vec![s.history_all()],
            "routed notifications and timeline entries for the history service",
        ));
        out.push(work_queue(
            s.stream(StreamKind::Ingest),
            vec![s.ingest_all()],
            "feed subscription changes for the ingestor",
        ));
        out.push(work_queue(
            s.stream(StreamKind::Delivery),
            vec![s.delivery_all()],
            "delivery jobs, one subject per channel",
        ));
        out.push(stream::Config {
            name: s.stream(StreamKind::DeadLetter),
            subjects: vec![s.dead_letter_all()],
            description: Some("messages that failed max_deliver times or were rejected".into()),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age: Duration::from_secs(self.config.dead_letter_max_age_days * 86_400),
            duplicate_window: dup,
            ..Default::default()
        });
        out.push(stream::Config {
            name: s.stream(StreamKind::Events),
            subjects: vec![s.events_all()],
            description: Some("every state change, for the archiver".into()),
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            max_age: Duration::from_secs(self.config.events_max_age_hours * 3_600),
            max_bytes: match self.config.events_max_bytes {
                0 => -1,
                b => i64::try_from(b).unwrap_or(i64::MAX),
            },
            duplicate_window: dup,
            ..Default::default()
        });
        out
    }

    /// A durable pull consumer with explicit ack, created if missing, updated if changed.
    pub async fn pull_consumer(
        &self,
        stream: StreamKind,
        durable: &str,
        filter_subject: Option<String>,
        max_ack_pending: i64,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
        let ack_wait = Duration::from_secs(self.config.ack_wait_secs);
        self.pull_consumer_with(stream, durable, filter_subject, max_ack_pending, ack_wait)
            .await
    }

    /// [`Bus::pull_consumer`] with its own `ack_wait`, for a consumer that holds messages
    /// longer than others before it settles them (the archiver, filling a file).
    pub async fn pull_consumer_with(
        &self,
        stream: StreamKind,
        durable: &str,
        filter_subject: Option<String>,
        max_ack_pending: i64,
        ack_wait: Duration,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
        let stream_name = self.subjects.stream(stream);
        let cfg = pull::Config {
            durable_name: Some(durable.to_owned()),
            filter_subject: filter_subject.unwrap_or_default(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait,
            // dead-lettering is ours (see `settle`), so the server never gives up on a message
            max_deliver: -1,
            max_ack_pending,
            ..Default::default()
        };
        setup(&format!("consumer {durable} on {stream_name}"), || {
            self.js
                .create_consumer_on_stream(cfg.clone(), stream_name.as_str())
        })
        .await
    }

    /// Publish `payload` under `msg_id` and wait for the PubAck, retrying transient failures
    /// (no responders during a leader election, timeouts) with backoff for up to
    /// `publish_retry_secs`. A retry with the same id is deduplicated by the server.
    pub async fn publish(
        &self,
        subject: String,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<(), BusError> {
        publish::publish_with_retry(&self.js, &self.config, subject, msg_id, payload, None).await
    }

    /// Send a publish now and return the PubAck future without waiting for it. Publishes sent
    /// this way leave in call order; the caller awaits the acks (all of them) before it
    /// treats the effect as durable. Used where order matters and a round trip per message
    /// would cost too much (an avatar's outputs).
    pub async fn send(
        &self,
        subject: String,
        msg_id: &str,
        payload: bytes::Bytes,
    ) -> Result<PendingAck, BusError> {
        let msg = jetstream::message::PublishMessage::build()
            .payload(payload)
            .message_id(msg_id);
        let ack = self
            .js
            .send_publish(subject.clone(), msg)
            .await
            .map_err(|e| BusError::Publish {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        Ok(PendingAck {
            subject,
            task: tokio::spawn(async move { ack.await.map(drop).map_err(|e| e.to_string()) }),
        })
    }

    /// [`Bus::publish`] of a JSON value.
    pub async fn publish_json<T: Serialize>(
        &self,
        subject: String,
        msg_id: &str,
        value: &T,
    ) -> Result<(), BusError> {
        self.publish(subject, msg_id, encode(value)?).await
    }

    /// The subject, message id and payload of an event, ready for [`Bus::send`] or a
    /// [`PublishWindow`] beside the change's other outputs: `service` and (from `user`) `silo`
    /// are filled in. Events travel with the outputs of the change they record and are
    /// settled with them, so a crash never keeps the change and loses its event; their ids
    /// make a repeat after a crash a duplicate the server drops.
    pub fn event_output(
        &self,
        mut event: tocsin_model::Event,
        service: &str,
    ) -> Result<(String, String, bytes::Bytes), BusError> {
        if event.service.is_empty() {
            event.service = service.to_owned();
        }
        if event.silo.is_none()
            && let Some(u) = &event.user
        {
            event.silo = Some(self.silo_of(u));
        }
        event_message(&self.subjects, event, service)
    }

    /// Queue notification `n` for its user's avatar, with the events of its ingestion, in one
    /// pipelined batch ([`Bus::publish_all`]).
    pub async fn notify(
        &self,
        n: tocsin_model::Notification,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<(), BusError> {
        let mut items = self.event_outputs(events, service)?;
        let subject = self
            .subjects
            .silo(self.silo_of(&n.user), n.user.as_str(), "notify");
        let id = n.id.to_string();
        let msg = tocsin_model::AvatarMessage::Notify { notification: n };
        items.push((subject, id, encode(&msg)?));
        self.publish_all(items).await
    }

    /// Publish events in one pipelined batch ([`Bus::publish_all`]).
    pub async fn publish_events(
        &self,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<(), BusError> {
        self.publish_all(self.event_outputs(events, service)?).await
    }

    /// [`Bus::event_output`] of each.
    pub fn event_outputs(
        &self,
        events: Vec<tocsin_model::Event>,
        service: &str,
    ) -> Result<Vec<(String, String, bytes::Bytes)>, BusError> {
        events
            .into_iter()
            .map(|e| self.event_output(e, service))
            .collect()
    }

    /// Publish `(subject, id, payload)` items pipelined — every one sent, then every PubAck
    /// awaited: one round trip for the batch — retrying the whole batch on a transient failure
    /// for up to `publish_retry_secs` (the ids make a repeat harmless).
    pub async fn publish_all(
        &self,
        items: Vec<(String, String, bytes::Bytes)>,
    ) -> Result<(), BusError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(self.config.publish_retry_secs);
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let mut acks = Vec::with_capacity(items.len());
            let mut result = Ok(());
            for (subject, id, payload) in &items {
                match self.send(subject.clone(), id, payload.clone()).await {
                    Ok(ack) => acks.push(ack),
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if result.is_ok() {
                result = await_acks(acks).await;
            }
            match result {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    debug!(attempt, error = %e, "batch publish failed, retrying");
                    tokio::time::sleep(publish::retry_delay(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A bounded window of outstanding publishes for high-volume publishers.
    pub fn window(&self, size: usize) -> PublishWindow {
        PublishWindow::new(self.clone(), size)
    }

    /// Turn a handler's verdict into ack, nak-with-delay or dead-letter. A message that has
    /// been delivered more than `max_deliver` times is dead-lettered instead of retried.
    pub async fn settle(&self, msg: &jetstream::Message, disposition: Disposition) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let result = match disposition {
            Disposition::Ack => msg.ack().await,
            Disposition::Retry(_) if self.out_of_retries(msg, delivered + 1) => {
                let reason = format!("still failing after {delivered} deliveries");
                self.dead_letter(msg, &reason).await
            }
            Disposition::Retry(after) => {
                let backoff = backoff(delivered, after);
                msg.ack_with(jetstream::AckKind::Nak(Some(backoff))).await
            }
            Disposition::Reject(reason) => self.dead_letter(msg, &reason).await,
        };
        if let Err(e) = result {
            // the server redelivers after ack_wait; handlers are idempotent, so that is safe
            warn!(subject = %msg.subject, error = %e, "could not settle message; it will be redelivered");
        }
    }

    /// Whether this message has already failed too often to be tried again.
    pub fn exhausted(&self, msg: &jetstream::Message) -> bool {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        self.out_of_retries(msg, delivered)
    }

    /// A message is given up on after more than `max_deliver` deliveries spread over at least
    /// `max_deliver × ack_wait`. The count alone would let an outage dead-letter good
    /// messages: while a stream's leader moves, or a consumer hands over, messages are
    /// redelivered in quick succession without any handler having failed on them.
    fn out_of_retries(&self, msg: &jetstream::Message, delivered: i64) -> bool {
        if delivered <= self.config.max_deliver {
            return false;
        }
        let min_age = Duration::from_secs(self.config.ack_wait_secs)
            .saturating_mul(self.config.max_deliver.clamp(1, 1_000) as u32);
        let age = msg
            .info()
            .map(|i| {
                let published: time::OffsetDateTime = i.published;
                (time::OffsetDateTime::now_utc() - published)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::MAX);
        age >= min_age
    }

    /// A JetStream KV bucket of the contract, created if missing.
    pub async fn kv(&self, bucket: &str) -> Result<jetstream::kv::Store, BusError> {
        self.kv_with(jetstream::kv::Config {
            bucket: self.subjects.bucket(bucket),
            history: 1,
            num_replicas: self.config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
    }

    /// A KV bucket as `cfg` says: opened if it exists with the same `max_age`, else created
    /// or updated.
    pub async fn kv_with(
        &self,
        cfg: jetstream::kv::Config,
    ) -> Result<jetstream::kv::Store, BusError> {
        let name = cfg.bucket.clone();
        setup(&format!("kv bucket {name}"), || async {
            if let Ok(store) = self.js.get_key_value(name.as_str()).await
                && let Ok(status) = store.status().await
                && status.max_age() == cfg.max_age
            {
                return Ok(store);
            }
            self.js
                .create_or_update_key_value(cfg.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// A request over core NATS with a JSON body and a JSON reply, bounded by `timeout`.
    pub async fn request_json<Q: Serialize, R: serde::de::DeserializeOwned>(
        &self,
        subject: String,
        body: &Q,
        timeout: Duration,
    ) -> Result<R, BusError> {
        let payload = encode(body)?;
        let reply = tokio::time::timeout(timeout, self.client.request(subject.clone(), payload))
            .await
            .map_err(|_| BusError::Request {
                subject: subject.clone(),
                message: format!("no reply within {}ms", timeout.as_millis()),
            })?
            .map_err(|e| BusError::Request {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        decode(&reply.payload, "reply")
    }

    /// Flush and close the connection after in-flight work has been settled.
    pub async fn drain(&self) {
        if let Err(e) = self.client.flush().await {
            debug!(error = %e, "flush on drain failed");
        }
        if let Err(e) = self.client.drain().await {
            debug!(error = %e, "drain failed");
        }
    }
}

/// A publish sent by [`Bus::send`] whose PubAck has not been awaited yet. A task of its own
/// receives the PubAck, so the client's in-flight permit (`max_ack_inflight`) is given back as
/// soon as the server answers. Holding the client's own PubAck futures instead deadlocks under
/// load: each holds a permit until awaited, and when every permit is held by senders that are
/// themselves waiting for a permit to send their next output, nobody awaits anything (seen
/// with 100k avatars routing one feed item at once).
pub struct PendingAck {
    subject: String,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl std::future::IntoFuture for PendingAck {
    type Output = Result<(), BusError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BusError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let message = match self.task.await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => e,
                Err(e) => format!("the PubAck task failed: {e}"),
            };
            Err(BusError::Publish {
                subject: self.subject,
                message,
            })
        })
    }
}

/// Wait for the PubAck of every publish sent with [`Bus::send`].
async fn await_acks(acks: Vec<PendingAck>) -> Result<(), BusError> {
    for ack in acks {
        ack.await?;
    }
    Ok(())
}

/// Exponential backoff from the number of deliveries so far, at least `min`, at most 60 s.
pub fn backoff(delivered: i64, min: Duration) -> Duration {
    let exp = (delivered.clamp(1, 16) - 1) as u32;
    let d = Duration::from_millis(250).saturating_mul(2u32.saturating_pow(exp));
    d.max(min).min(Duration::from_secs(60))
}

/// `event` as a message: its subject, its id as `Nats-Msg-Id`, its payload; `service` is
/// filled in when the event names none. (The silo is the caller's to fill: see
/// [`Bus::event_output`].)
pub fn event_message(
    subjects: &Subjects,
    mut event: tocsin_model::Event,
    service: &str,
) -> Result<(String, String, bytes::Bytes), BusError> {
    if event.service.is_empty() {
        event.service = service.to_owned();
    }
    let payload = encode(&event)?;
    Ok((subjects.events(event.kind), event.id, payload))
}

/// Encode a payload as JSON.
pub fn encode<T: Serialize>(value: &T) -> Result<bytes::Bytes, BusError> {
    serde_json::to_vec(value)
        .map(bytes::Bytes::from)
        .map_err(|e| BusError::Codec {
            what: std::any::type_name::<T>().to_owned(),
            message: e.to_string(),
        })
}

/// Decode a JSON payload.
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], what: &str) -> Result<T, BusError> {
    serde_json::from_slice(payload).map_err(|e| BusError::Codec {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, Duration::ZERO), Duration::from_millis(250));
        assert_eq!(backoff(3, Duration::ZERO), Duration::from_secs(1));
        assert_eq!(backoff(100, Duration::ZERO), Duration::from_secs(60));
        assert_eq!(backoff(1, Duration::from_secs(5)), Duration::from_secs(5));
    }
}
