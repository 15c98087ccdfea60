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
//! ([`Disposition`]) becomes ack, nak-with-backoff or dead-letter, once ([`Inbound::settle`]).
//! `docs/bus.md` documents every subject and payload.

mod config;
pub mod credentials;
mod dlq;
pub mod done_log;
pub mod envelope;
pub mod handed;
mod inbound;
mod kv_many;
pub mod lease;
pub mod msg_id;
mod names;
mod outbox;
pub mod permissions;
pub mod progress;
mod publish;
mod pulling;
pub mod rpc;
mod send;
mod settle;
mod setup;
mod silo;

pub use config::{BusConfig, ConfigError};
pub use dlq::{DeadLetter, RecordOrigin};
pub use done_log::DoneLog;
pub use handed::Handed;
pub use inbound::Inbound;
pub use kv_many::{Latest, MAX_KEYS as KV_LATEST_MAX_KEYS};
pub use lease::{LeaseValue, Leases};
pub use names::{StreamKind, Subjects};
pub use outbox::{Outbox, Outgoing, Receipt};
pub use permissions::{Permissions, Role};
pub use progress::ProgressLog;
pub use publish::PublishWindow;
pub use pulling::{PULL_BYTES, Pull};
pub use send::PendingAck;
pub use silo::{SiloSet, SiloSetError, jump_consistent_hash, silo_of};

use async_nats::jetstream::{self};
use serde::Serialize;
use std::time::Duration;
use tracing::{debug, error, warn};

/// Errors talking to the bus. `kind()` says whether a retry can help.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to nats at {url}: {message}")]
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
    role: Role,
}

impl Bus {
    /// Connect to the configured server as service `name` (its identity and its own reply
    /// subjects: [`Role::of`]). Fails at once if the server refuses the credentials, and if it
    /// cannot be reached within `connect_timeout_secs`; reconnects by itself afterwards.
    pub async fn connect(config: &BusConfig, name: &str) -> Result<Bus, BusError> {
        let role = Role::of(name);
        let seed = match config.nkey_seed_file.as_str() {
            "" => None,
            f => Some(credentials::read_seed(std::path::Path::new(f))?),
        };
        let options = || {
            let mut opts = async_nats::ConnectOptions::new()
                .name(format!("tocsin-{name}"))
                .custom_inbox_prefix(role.inbox_prefix())
                .connection_timeout(Duration::from_secs(config.connect_timeout_secs))
                .max_reconnects(None)
                .event_callback(move |e| async move {
                    match e {
                        async_nats::Event::Disconnected => {
                            warn!("nats connection lost, reconnecting")
                        }
                        async_nats::Event::Connected => debug!("nats connected"),
                        async_nats::Event::ServerError(e) => error!(
                            error = %e,
                            identity = role.name(),
                            "nats-server refused something this service did: if it is a \
                             permissions violation, the server's authorization block is older \
                             than this version (run `tocsin nats-auth` again and reload \
                             nats-server)"
                        ),
                        other => debug!(event = %other, "nats event"),
                    }
                });
            if let Some(pair) = &seed
                && let Ok(s) = pair.seed()
            {
                opts = opts.nkey(s);
            }
            if !config.tls_ca_file.is_empty() {
                opts = opts
                    .add_root_certificates(config.tls_ca_file.clone().into())
                    .require_tls(true);
            } else if config.tls_required {
                opts = opts.require_tls(true);
            }
            opts
        };
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(config.connect_timeout_secs);
        let mut last = None;
        let client = loop {
            let attempt =
                tokio::time::timeout_at(deadline, options().connect(config.server_urls())).await;
            match attempt {
                Ok(Ok(client)) => break client,
                Ok(Err(e))
                    if matches!(
                        e.kind(),
                        async_nats::ConnectErrorKind::AuthorizationViolation
                            | async_nats::ConnectErrorKind::Authentication
                    ) =>
                {
                    let who = match &seed {
                        Some(p) => format!(
                            "the identity {} (bus.nkey_seed_file {})",
                            p.public_key(),
                            config.nkey_seed_file
                        ),
                        None => "no credentials (bus.nkey_seed_file is empty)".to_owned(),
                    };
                    return Err(BusError::Connect {
                        url: config.url.clone(),
                        message: format!(
                            "nats-server refused tocsin-{name} with {who}: {e}. Give this \
                             service the seed `tocsin nats-auth` made for it, and the server \
                             the authorization block made with it"
                        ),
                    });
                }
                Ok(Err(e)) if tokio::time::Instant::now() < deadline => {
                    debug!(error = %e, "nats not reachable yet, retrying");
                    last = Some(e.to_string());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(Err(e)) => {
                    return Err(BusError::Connect {
                        url: config.url.clone(),
                        message: format!(
                            "{e} (is nats-server running with -js, and do bus.tls_ca_file and \
                             the server's TLS agree?)"
                        ),
                    });
                }
                Err(_) => {
                    return Err(BusError::Connect {
                        url: config.url.clone(),
                        message: match last {
                            Some(e) => format!(
                                "not connected within {}s; the last attempt: {e}",
                                config.connect_timeout_secs
                            ),
                            None => format!(
                                "no answer within {}s (is nats-server running with -js?)",
                                config.connect_timeout_secs
                            ),
                        },
                    });
                }
            }
        };
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
            role,
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

    /// The identity this bus was connected as.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The silo that owns `user`.
    pub fn silo_of(&self, user: &tocsin_model::UserId) -> u32 {
        silo_of(user.as_str(), self.config.silo_count)
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
    let payload = event_payload(&mut event, service)?;
    Ok((subjects.events(event.kind), event.id, payload))
}

/// `event`'s payload, with `service` filled in when it names none (for an event that travels
/// as a record of an envelope, whose subject is the envelope's).
pub fn event_payload(
    event: &mut tocsin_model::Event,
    service: &str,
) -> Result<bytes::Bytes, BusError> {
    if event.service.is_empty() {
        event.service = service.to_owned();
    }
    encode(event)
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

/// Decode a JSON payload. The payload is checked to be UTF-8 once, as a whole, and parsed as
/// text: parsed from bytes, serde_json checks every string it reads on its own, which cost a
/// sixth of a cold avatar's record decode (docs/performance.md).
pub fn decode<T: serde::de::DeserializeOwned>(payload: &[u8], what: &str) -> Result<T, BusError> {
    decode_with(payload, what, |text| serde_json::from_str(text))
}

/// [`decode`] with a decoder of its own for the text (`AvatarMessage::from_json`, which reads
/// the busiest messages in one pass).
pub fn decode_with<T>(
    payload: &[u8],
    what: &str,
    from_json: impl FnOnce(&str) -> serde_json::Result<T>,
) -> Result<T, BusError> {
    let codec = |message: String| BusError::Codec {
        what: what.to_owned(),
        message,
    };
    let text = std::str::from_utf8(payload)
        .map_err(|e| codec(format!("not UTF-8 (JSON must be): {e}")))?;
    from_json(text).map_err(|e| codec(e.to_string()))
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

    #[test]
    fn decode_names_what_is_wrong() {
        let ok: Vec<String> = decode("[\"caf\\u00e9\", \"café\"]".as_bytes(), "list").unwrap();
        assert_eq!(ok, ["café", "café"]);
        let e = decode::<Vec<String>>(b"[\"a\xff\"]", "list")
            .unwrap_err()
            .to_string();
        assert!(e.contains("list") && e.contains("not UTF-8"), "{e}");
        let e = decode::<Vec<String>>(b"[1]", "list")
            .unwrap_err()
            .to_string();
        assert!(e.contains("list") && e.contains("expected a string"), "{e}");
    }
}
