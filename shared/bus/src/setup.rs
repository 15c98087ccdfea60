//! Setting the bus up, idempotently and with retries: streams, durable pull consumers and KV
//! buckets, created or brought to their declared settings at start-up.

use crate::{Bus, BusError, StreamKind};
use async_nats::jetstream::{self, consumer::pull, stream};
use std::time::Duration;
use tracing::warn;

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

/// The key of a silo stream's metadata that records how many silos the installation was
/// made with: users are placed in silos by that number, so every service must use it.
pub(crate) const SILO_COUNT_KEY: &str = "tocsin_silo_count";

/// The number of silos an existing silo stream was made for, when it records one that is not
/// the one specified. (A stream made before the number was recorded records none; its owner
/// records the configured one at its next start.)
fn other_silo_count(have: &stream::Config, want: &stream::Config) -> Option<String> {
    let wanted = want.metadata.get(SILO_COUNT_KEY)?;
    have.metadata
        .get(SILO_COUNT_KEY)
        .filter(|n| *n != wanted)
        .cloned()
}

/// Whether an existing stream already has every setting tocsin specifies.
fn same_stream_spec(have: &stream::Config, want: &stream::Config) -> bool {
    have.metadata.get(SILO_COUNT_KEY) == want.metadata.get(SILO_COUNT_KEY)
        && have.subjects == want.subjects
        && have.retention == want.retention
        && have.storage == want.storage
        && have.num_replicas == want.num_replicas
        && have.duplicate_window == want.duplicate_window
        && have.max_age == want.max_age
        && have.max_bytes == want.max_bytes
        && have.description == want.description
}

impl Bus {
    /// Make every stream of the contract exist, and bring the streams this service owns to
    /// their specification ([`Role::manages_stream`](crate::Role::manages_stream): a stream's
    /// settings are its owner's, whatever another service's configuration says). Idempotent;
    /// every service calls it at start-up, so the order services start in does not matter.
    ///
    /// A silo stream made for another number of silos than `bus.silo_count` (recorded in its
    /// metadata, [`SILO_COUNT_KEY`]) fails the start, naming the number it was made for.
    pub async fn ensure_streams(&self) -> Result<(), BusError> {
        for (kind, cfg) in self.stream_specs() {
            let name = cfg.name.clone();
            let what = format!("stream {name}");
            let owner = self.role.manages_stream(kind);
            // Some(n): the stream exists, made for n silos, not this configuration's number
            let made_for = setup(&what, || async {
                match self.js.get_stream(&name).await {
                    Ok(stream) => {
                        let have = &stream.cached_info().config;
                        if let Some(n) = other_silo_count(have, &cfg) {
                            return Ok(Some(n));
                        }
                        match same_stream_spec(have, &cfg) || !owner {
                            // as specified already (every start after the first), or not
                            // this service's to configure: nothing to write
                            true => Ok(None),
                            false => self
                                .js
                                .create_or_update_stream(cfg.clone())
                                .await
                                .map(|_| None),
                        }
                    }
                    Err(_) if owner => self
                        .js
                        .create_or_update_stream(cfg.clone())
                        .await
                        .map(|_| None),
                    Err(_) => self.js.create_stream(cfg.clone()).await.map(|_| None),
                }
            })
            .await?;
            if let Some(n) = made_for {
                return Err(BusError::Setup {
                    what,
                    message: format!(
                        "bus.silo_count is {}, but this installation was made with {n} silos \
                         (the stream says so): every user is placed in a silo by that number, so \
                         it cannot change once the streams exist (users' messages and history \
                         would be looked for in other silos). Set bus.silo_count = {n} in every \
                         service's configuration.",
                        self.config.silo_count
                    ),
                });
            }
        }
        Ok(())
    }

    /// The declarative specification of every stream.
    pub fn stream_configs(&self) -> Vec<stream::Config> {
        self.stream_specs().into_iter().map(|(_, c)| c).collect()
    }

    fn stream_specs(&self) -> Vec<(StreamKind, stream::Config)> {
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
            let mut silo = work_queue(
                s.stream(StreamKind::Silo(k)),
                vec![s.silo_all(k)],
                "everything addressed to the avatars of one silo",
            );
            silo.metadata = [(
                SILO_COUNT_KEY.to_owned(),
                self.config.silo_count.to_string(),
            )]
            .into_iter()
            .collect();
            out.push((StreamKind::Silo(k), silo));
        }
        out.push((
            StreamKind::History,
            work_queue(
                s.stream(StreamKind::History),
                vec![s.history_all()],
                "routed notifications and timeline entries for the history service",
            ),
        ));
        out.push((
            StreamKind::Ingest,
            work_queue(
                s.stream(StreamKind::Ingest),
                vec![s.ingest_all()],
                "feed subscription changes and shared topics' messages for the ingestor",
            ),
        ));
        out.push((
            StreamKind::Delivery,
            work_queue(
                s.stream(StreamKind::Delivery),
                vec![s.delivery_all()],
                "delivery jobs, one subject per channel",
            ),
        ));
        out.push((
            StreamKind::DeadLetter,
            stream::Config {
                name: s.stream(StreamKind::DeadLetter),
                subjects: vec![s.dead_letter_all()],
                description: Some("messages that failed max_deliver times or were rejected".into()),
                retention: stream::RetentionPolicy::Limits,
                storage: stream::StorageType::File,
                num_replicas: replicas,
                max_age: Duration::from_secs(self.config.dead_letter_max_age_days * 86_400),
                duplicate_window: dup,
                ..Default::default()
            },
        ));
        out.push((
            StreamKind::Events,
            stream::Config {
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
            },
        ));
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

    /// A durable consumer acknowledged by position (`AckPolicy::All`): one ack settles every
    /// message up to it, so a consumer that makes many messages durable at once (the
    /// archiver's rolls) acks them with one message instead of one each. Its one user must
    /// ack only up to a position below which every message it was given is settled.
    ///
    /// A consumer left with messages delivered and not acknowledged (a crash, a stop with a
    /// pull in flight), or made before with per-message acks, is made again from its ack
    /// floor: otherwise the messages it still holds for the last run would come back only
    /// after `ack_wait`, behind newer ones a position ack would settle unseen. Only for a
    /// consumer one process reads (two would take each other's messages over).
    pub async fn positional_consumer(
        &self,
        stream: StreamKind,
        durable: &str,
        max_ack_pending: i64,
        ack_wait: Duration,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>, BusError> {
        let stream_name = self.subjects.stream(stream);
        let what = format!("consumer {durable} on {stream_name}");
        let handle = setup(&what, || self.js.get_stream(stream_name.as_str())).await?;
        // the consumer as it was left (None: there is none yet); any other failure to read it
        // is retried, then fails the start, rather than being taken for its absence
        let existing = setup(&what, || async {
            match handle.consumer_info(durable).await {
                Ok(info) => Ok(Some(info)),
                Err(e) if e.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await?;
        let mut start = 0;
        if let Some(info) = existing {
            let positional = info.config.ack_policy == jetstream::consumer::AckPolicy::All;
            let floor = info.ack_floor.stream_sequence;
            if !positional || info.delivered.stream_sequence > floor {
                tracing::info!(
                    consumer = durable,
                    stream = %stream_name,
                    from = floor + 1,
                    "making the consumer again from its ack floor (it held messages of the last run, or acked each message)"
                );
                setup(&what, || handle.delete_consumer(durable)).await?;
                start = floor + 1;
            }
        }
        let cfg = pull::Config {
            durable_name: Some(durable.to_owned()),
            ack_policy: jetstream::consumer::AckPolicy::All,
            ack_wait,
            max_deliver: -1,
            max_ack_pending,
            deliver_policy: match start {
                0 | 1 => jetstream::consumer::DeliverPolicy::All,
                s => jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: s },
            },
            ..Default::default()
        };
        setup(&what, || {
            self.js
                .create_consumer_on_stream(cfg.clone(), stream_name.as_str())
        })
        .await
    }

    /// A JetStream KV bucket of the contract, created if missing.
    pub async fn kv(&self, bucket: &str) -> Result<jetstream::kv::Store, BusError> {
        self.kv_expiring(bucket, "", Duration::ZERO).await
    }

    /// [`Bus::kv`] for a bucket whose entries expire `max_age` after they are written
    /// (`Duration::ZERO`: never), described for whoever lists the server's streams.
    pub async fn kv_expiring(
        &self,
        bucket: &str,
        description: &str,
        max_age: Duration,
    ) -> Result<jetstream::kv::Store, BusError> {
        self.kv_with(jetstream::kv::Config {
            bucket: self.subjects.bucket(bucket),
            description: description.to_owned(),
            history: 1,
            max_age,
            num_replicas: self.config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
    }

    /// Write `value` under `key` as a setup step (what an instance serves, its public keys),
    /// retried like the rest of setup: a bucket just created on a cluster that is still
    /// forming may refuse writes for a moment ("no stream found for given subject").
    pub async fn kv_put_setup(
        &self,
        store: &jetstream::kv::Store,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<(), BusError> {
        setup(&format!("key {key} in kv bucket {}", store.name), || {
            store.put(key, value.clone())
        })
        .await
        .map(|_| ())
    }

    /// A bucket of the contract as it is, to read (None: nobody created it yet). Unlike
    /// [`Bus::kv`] it never creates or changes a bucket, so it can open one whose settings
    /// belong to another service (the leases' `max_age`).
    pub async fn kv_existing(&self, bucket: &str) -> Option<jetstream::kv::Store> {
        self.js
            .get_key_value(self.subjects.bucket(bucket))
            .await
            .ok()
    }

    /// A KV bucket as `cfg` says: opened if it exists with the same `max_age`, else created
    /// or updated — updated only by the service that owns the bucket
    /// ([`Role::manages_bucket`](crate::Role::manages_bucket)); another opens it as it is, or
    /// creates it when it is missing.
    pub async fn kv_with(
        &self,
        cfg: jetstream::kv::Config,
    ) -> Result<jetstream::kv::Store, BusError> {
        let name = cfg.bucket.clone();
        let short = name
            .strip_prefix(&self.subjects.bucket(""))
            .unwrap_or(&name)
            .to_ascii_lowercase();
        let owner = self.role.manages_bucket(&short);
        setup(&format!("kv bucket {name}"), || async {
            match self.js.get_key_value(name.as_str()).await {
                Ok(store) if !owner => return Ok(store),
                Ok(store) => {
                    if let Ok(status) = store.status().await
                        && status.max_age() == cfg.max_age
                    {
                        return Ok(store);
                    }
                }
                Err(_) if !owner => {
                    return self
                        .js
                        .create_key_value(cfg.clone())
                        .await
                        .map_err(|e| e.to_string());
                }
                Err(_) => {}
            }
            self.js
                .create_or_update_key_value(cfg.clone())
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }
}
