//! The delivery service: takes delivery jobs from the per-channel work queues, sends them,
//! and reports each outcome to the user's avatar (which records it in the notification's
//! timeline).
//!
//! One worker pool per enabled channel, each with its own durable consumer
//! (`delivery-<channel>`) and concurrency limit. Sending is kept apart from the retry
//! decision: a transient failure is nak'ed with backoff (the job stays in the queue, so a
//! provider outage loses nothing); a permanent failure, or the last allowed attempt, is
//! reported to the avatar as `failed`; an unreadable job is dead-lettered.
//!
//! Sending to the outside world is at-least-once: a crash after the provider accepted a job
//! but before the ack sends it again. Every request carries the job id so receivers can
//! deduplicate (webhooks: `X-Tocsin-Id`).
//!
//! Channels: `webhook` and `email` now; XMPP, SMS and push arrive with their issues.

pub mod email;
pub mod webhook;

use async_nats::jetstream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, StreamKind};
use tocsin_model::{AvatarMessage, Channel, DeliveryJob, DeliveryOutcome, now_ms};
use tocsin_netguard::AddressPolicy;
use tocsin_runtime::{ConfigDoc, Readiness};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span, warn};
use webhook::SendResult;

/// The `[delivery]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub ops_listen: String,
    /// The channels this instance serves (each can run in its own deployment).
    pub channels: Vec<Channel>,
    /// Jobs in flight per channel.
    pub concurrency: usize,
    pub webhook_timeout_secs: u64,
    /// Allow webhooks on loopback addresses (tests, local receivers).
    pub allow_loopback: bool,
    /// Allow webhooks on private and link-local addresses (an intranet).
    pub allow_private_addresses: bool,
    pub shutdown_grace_secs: u64,
    /// The SMTP relay for the `email` channel.
    pub smtp: email::SmtpConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ops_listen: "127.0.0.1:9104".into(),
            channels: vec![Channel::Webhook],
            concurrency: 32,
            webhook_timeout_secs: 10,
            allow_loopback: false,
            allow_private_addresses: false,
            shutdown_grace_secs: 20,
            smtp: email::SmtpConfig::default(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub bus: BusConfig,
    pub delivery: DeliveryConfig,
}

impl Config {
    pub fn load(doc: &ConfigDoc) -> Result<Self, Vec<String>> {
        let (bus, delivery) =
            doc.service_sections("delivery", |b: &BusConfig, s: &DeliveryConfig| {
                let mut p = b.problems();
                for c in &s.channels {
                    match c {
                        Channel::Webhook => {}
                        Channel::Email => p.extend(s.smtp.problems()),
                        other => p.push(format!(
                            "delivery.channels: the {} channel is not available yet; webhook and email are",
                            other.as_str()
                        )),
                    }
                }
                if s.concurrency == 0 || s.webhook_timeout_secs == 0 {
                    p.push(
                        "delivery.concurrency and webhook_timeout_secs: must be greater than 0"
                            .into(),
                    );
                }
                p
            })?;
        Ok(Config { bus, delivery })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Setup(String),
}

struct Ctx {
    bus: Bus,
    http: reqwest::Client,
    mailer: Option<email::Mailer>,
    cfg: DeliveryConfig,
}

/// Run until `shutdown`; jobs in flight finish and settle within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DeliveryError> {
    let policy = AddressPolicy {
        allow_loopback: config.delivery.allow_loopback,
        allow_private: config.delivery.allow_private_addresses,
    };
    let http = tocsin_netguard::client_builder(policy, 3)
        .timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .connect_timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION"), " (webhook)"))
        .build()
        .map_err(|e| DeliveryError::Setup(format!("cannot build the HTTP client: {e}")))?;
    let mailer = if config.delivery.channels.contains(&Channel::Email) {
        Some(email::Mailer::new(&config.delivery.smtp).map_err(DeliveryError::Setup)?)
    } else {
        None
    };
    let bus = Bus::connect(&config.bus, "delivery").await?;
    bus.ensure_streams().await?;
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    tocsin_runtime::serve_ops(&config.delivery.ops_listen, ready.clone(), shutdown.clone()).await?;
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        http,
        mailer,
        cfg: config.delivery.clone(),
    });
    let mut workers = Vec::new();
    for channel in &config.delivery.channels {
        let consumer = bus
            .pull_consumer(
                StreamKind::Delivery,
                &format!("delivery-{}", channel.as_str()),
                Some(bus.subjects().delivery(channel.as_str())),
                (config.delivery.concurrency * 4) as i64,
            )
            .await?;
        workers.push(tokio::spawn(run_channel(
            ctx.clone(),
            *channel,
            consumer,
            shutdown.clone(),
        )));
    }
    ready.set(true);
    info!(channels = ?config.delivery.channels, "delivery running");
    for w in workers {
        let _ = w.await;
    }
    ready.set(false);
    bus.drain().await;
    info!("delivery stopped");
    Ok(())
}

async fn run_channel(
    ctx: Arc<Ctx>,
    channel: Channel,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    shutdown: CancellationToken,
) {
    let mut messages = match consumer.messages().await {
        Ok(m) => m,
        Err(e) => {
            warn!(channel = channel.as_str(), error = %e, "cannot pull delivery jobs");
            return;
        }
    };
    let permits = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
        };
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            n = messages.next() => n,
        };
        let msg = match next {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                warn!(channel = channel.as_str(), error = %e, "pulling delivery jobs failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            None => break,
        };
        let ctx = ctx.clone();
        tracker.spawn(async move {
            handle(&ctx, channel, msg).await;
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(
        Duration::from_secs(ctx.cfg.shutdown_grace_secs),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        warn!(
            channel = channel.as_str(),
            "jobs did not finish within the grace period; they will be redelivered"
        );
    }
}

async fn handle(ctx: &Ctx, channel: Channel, msg: jetstream::Message) {
    let job: DeliveryJob = match tocsin_bus::decode(&msg.payload, "delivery job") {
        Ok(j) => j,
        Err(e) => {
            ctx.bus
                .settle(&msg, Disposition::Reject(e.to_string()))
                .await;
            return;
        }
    };
    let attempts = msg.info().map(|i| i.delivered).unwrap_or(1);
    let span = info_span!("deliver", notification = %job.notification.id, user = %job.notification.user, channel = channel.as_str());
    async {
        let result = match job.destination.channel {
            Channel::Webhook => webhook::send(&ctx.http, &job, now_ms()).await,
            Channel::Email => match &ctx.mailer {
                Some(m) => m.send(&job).await,
                // the job stays queued until an instance that serves e-mail takes it
                None => SendResult::Transient {
                    detail: "this delivery instance does not serve the email channel".into(),
                    after: None,
                },
            },
            other => SendResult::Permanent(format!("the {} channel is not available yet", other.as_str())),
        };
        let last_try = attempts >= ctx.bus.config().max_deliver;
        let (delivered, detail, retry) = match result {
            SendResult::Delivered(d) => (true, d, None),
            SendResult::Permanent(d) => (false, d, None),
            SendResult::Transient { detail, .. } if last_try => (false, format!("gave up after {attempts} attempts: {detail}"), None),
            SendResult::Transient { detail, after } => (false, detail, Some(after.unwrap_or_default())),
        };
        let label = match (delivered, retry.is_some()) {
            (true, _) => "delivered",
            (false, true) => "retry",
            (false, false) => "failed",
        };
        metrics::counter!("tocsin_delivery_attempts_total", "channel" => channel.as_str(), "outcome" => label).increment(1);
        if let Some(after) = retry {
            warn!(attempt = attempts, %detail, "delivery failed; will retry");
            ctx.bus.settle(&msg, Disposition::Retry(after)).await;
            return;
        }
        let outcome = DeliveryOutcome {
            job_id: job.job_id.clone(),
            notification_id: job.notification.id.clone(),
            user: job.notification.user.clone(),
            destination_id: job.destination.id.clone(),
            channel,
            delivered,
            detail,
            attempts,
            at_ms: now_ms(),
        };
        if !delivered {
            warn!(detail = %outcome.detail, "delivery failed for good");
        }
        let user = outcome.user.clone();
        let subject = ctx.bus.subjects().silo(ctx.bus.silo_of(&user), user.as_str(), "outcome");
        let id = format!("outcome:{}", outcome.job_id);
        match ctx.bus.publish_json(subject, &id, &AvatarMessage::Outcome { outcome }).await {
            Ok(()) => ctx.bus.settle(&msg, Disposition::Ack).await,
            // the job is redelivered and sent again: receivers deduplicate by job id
            Err(e) => {
                warn!(error = %e, "cannot report the outcome; the job will be redelivered");
                ctx.bus.settle(&msg, Disposition::Retry(Duration::from_secs(1))).await;
            }
        }
    }
    .instrument(span)
    .await
}
