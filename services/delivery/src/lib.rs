//! The delivery service: takes delivery jobs from the per-channel work queues, sends them,
//! and reports each outcome: a delivered job as an entry of the notification's timeline,
//! straight to history; a failed one to the user's avatar, which records it and may escalate.
//! Reports leave through one outbox in rounds (records in envelopes), and a job is acked once
//! its report is durable. Jobs arrive one message each or in envelopes (a router round's jobs
//! for a channel), split into their jobs (`tocsin_bus::handed`); an envelope is acked when all
//! of its jobs are, and what is settled of it is kept in the `progress` bucket meanwhile, so a
//! crash repeats only the jobs in hand.
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
//! Channels: `xmpp` (chat messages; presence and replies flow back to the avatars), `sms`
//! (Twilio or a Kannel gateway), `push` (ntfy, UnifiedPush), `email` and `webhook`.

pub mod compose;
pub mod config;
pub mod email;
pub mod fairness;
mod job;
mod lanes;
mod moved;
mod permits;
pub mod push;
pub mod retry;
pub mod sms;
mod telemetry;
mod trial;
pub mod webhook;
pub mod webpush;
pub mod xmpp;

pub use config::{Config, DeliveryConfig};

use crate::job::{Rate, Sent};
use crate::lanes::{Consumers, run_channel};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, StreamKind};
use tocsin_model::Channel;
use tocsin_netguard::AddressPolicy;
use tocsin_runtime::ServiceError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

pub(crate) struct Ctx {
    pub(crate) bus: Bus,
    /// For addresses users give (webhooks, push): behind the address guard.
    pub(crate) http: tocsin_netguard::GuardedClient,
    /// For the providers the operator configured (Twilio, the SMS gateway).
    pub(crate) providers: reqwest::Client,
    pub(crate) mailer: Option<email::Mailer>,
    pub(crate) xmpp: Option<Arc<xmpp::Xmpp>>,
    /// The address index (`addresses`): whether a number or IM address still leads to the
    /// destination a job was made for.
    pub(crate) addresses: async_nats::jetstream::kv::Store,
    /// The VAPID identity Web Push is sent with, when configured.
    pub(crate) vapid: Option<webpush::Vapid>,
    /// A provider rate limit per channel.
    pub(crate) rates: HashMap<Channel, Rate>,
    pub(crate) cfg: DeliveryConfig,
    /// What became of the jobs sent lately, by job id: a job redelivered after it was sent
    /// (its ack or outcome lost while the bus failed over), or published again after a
    /// server restart forgot its id, is reported, not sent again.
    pub(crate) sent: std::sync::Mutex<Sent>,
    /// The jobs any instance sent within the duplicate window (the `sent` bucket): a job
    /// repeated in another envelope after the instance that sent it crashed is settled, not
    /// sent again.
    pub(crate) done: Arc<tocsin_bus::DoneLog>,
    /// Where the lanes' reports go: published in rounds, each job acked after its report.
    pub(crate) outbox: tocsin_bus::Outbox,
    /// What is settled of the job envelopes in hand ([`tocsin_bus::ProgressLog`]).
    pub(crate) progress: Arc<tocsin_bus::ProgressLog>,
}

/// Run until `shutdown`; jobs in flight finish and settle within the grace period.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    telemetry::describe();
    let policy = AddressPolicy {
        allow_loopback: config.delivery.allow_loopback,
        allow_private: config.delivery.allow_private_addresses,
    };
    let timeout = Duration::from_secs(config.delivery.webhook_timeout_secs);
    let http = tocsin_netguard::GuardedClient::build(policy, 3, |b| {
        b.timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION"), " (webhook)"))
    })
    .map_err(ServiceError::Setup)?;
    let mailer = if config.delivery.channels.contains(&Channel::Email) {
        if let Some(w) = config.delivery.smtp.warning() {
            warn!("{w}");
        }
        Some(email::Mailer::new(&config.delivery.smtp).map_err(ServiceError::Setup)?)
    } else {
        None
    };
    let providers = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .connect_timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            ServiceError::Setup(format!(
                "cannot build the HTTP client: {}",
                tocsin_netguard::with_causes(&e)
            ))
        })?;
    let (bus, ready) = config.connect(&shutdown).await?;
    // the address index: IM presence and replies find their user in it, and a send to a
    // number or IM address checks it first (`moved`)
    let addresses = bus.kv("addresses").await?;
    let xmpp = if config.delivery.channels.contains(&Channel::Xmpp) {
        Some(
            xmpp::Xmpp::start(
                &config.delivery.xmpp,
                bus.clone(),
                addresses.clone(),
                shutdown.clone(),
            )
            .map_err(ServiceError::Setup)?,
        )
    } else {
        None
    };
    let vapid = config
        .delivery
        .web_push
        .vapid()
        .map_err(ServiceError::Setup)?;
    let keys = bus.kv("keys").await?;
    // the API offers what needs a channel only when some instance serves it (a sign-in link
    // by e-mail)
    for c in &config.delivery.channels {
        bus.kv_put_setup(&keys, &format!("channel.{}", c.as_str()), "served".into())
            .await?;
    }
    // the addresses this instance sends from: the API refuses them as destinations (a
    // notification to tocsin's own address would come back as a new one)
    for c in &config.delivery.channels {
        let Some(own) = config.delivery.own_address(*c) else {
            continue;
        };
        bus.kv_put_setup(&keys, &tocsin_model::own::key(*c), own.into())
            .await?;
    }
    if let Some(v) = &vapid {
        // the API hands browsers this key to subscribe with
        let published = webpush::PublishedKey {
            public_key: v.public_key(),
        };
        bus.kv_put_setup(
            &keys,
            "vapid",
            serde_json::to_vec(&published).unwrap_or_default().into(),
        )
        .await?;
        info!(public_key = %published.public_key, "web push ready");
    }
    let mut rates = HashMap::new();
    for (c, r) in [
        (Channel::Xmpp, config.delivery.xmpp.rate_per_sec),
        (Channel::Sms, config.delivery.sms.rate_per_sec),
    ] {
        if let Some(rate) = Rate::new(r) {
            rates.insert(c, rate);
        }
    }
    let progress = bus
        .kv_expiring(
            "progress",
            "per delivery instance, which jobs of the job envelopes it holds are settled",
            // a crashed instance's table expires
            Duration::from_secs(86_400),
        )
        .await?;
    let progress = Arc::new(tocsin_bus::ProgressLog::open(progress).await);
    let sent_log = bus
        .kv_expiring(
            "sent",
            "the jobs the delivery instances sent lately, per outbox round",
            // as long as the server drops a message published again
            Duration::from_secs(bus.config().duplicate_window_secs.max(1)),
        )
        .await?;
    let done = Arc::new(tocsin_bus::DoneLog::open(sent_log).await);
    let (outbox, outbox_task) =
        tocsin_bus::Outbox::spawn_with(bus.clone(), "delivery".into(), Some(done.clone()));
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        http,
        providers,
        mailer,
        xmpp,
        addresses,
        vapid,
        rates,
        cfg: config.delivery.clone(),
        sent: Default::default(),
        done,
        outbox,
        progress,
    });
    let mut workers = Vec::new();
    for channel in &config.delivery.channels {
        let name = channel.as_str();
        let consumers = Consumers {
            jobs: bus
                .pull_consumer(
                    StreamKind::Delivery,
                    &format!("delivery-{name}"),
                    Some(bus.subjects().delivery(name)),
                    // jobs held by lanes waiting behind a slow destination count here
                    config.delivery.max_ack_pending,
                )
                .await?,
            parked: bus
                .pull_consumer(
                    StreamKind::Delivery,
                    &format!("delivery-{name}-parked"),
                    Some(bus.subjects().delivery_parked(name)),
                    config.delivery.parked_max_ack_pending,
                )
                .await?,
        };
        workers.push(AbortOnDropHandle::new(tokio::spawn(trial::serve(
            ctx.clone(),
            *channel,
            shutdown.clone(),
        ))));
        // dropped (aborted) with this task, and the lanes with them
        workers.push(AbortOnDropHandle::new(tokio::spawn(run_channel(
            ctx.clone(),
            *channel,
            consumers,
            shutdown.clone(),
        ))));
    }
    ready.set(true);
    info!(channels = ?config.delivery.channels, "delivery running");
    for w in workers {
        let _ = w.await;
    }
    // the last reports: an empty submission is answered once everything before it is done
    let grace = Duration::from_secs(config.delivery.shutdown_grace_secs);
    if tokio::time::timeout(grace, ctx.outbox.submit(Vec::new()))
        .await
        .is_err()
    {
        tracing::warn!(
            "the last outcomes were not reported within the grace period; their jobs will be redelivered and reported then"
        );
    }
    drop(outbox_task);
    ctx.progress.close().await;
    if let Some(x) = &ctx.xmpp {
        x.closed().await;
    }
    ready.set(false);
    bus.drain().await;
    info!("delivery stopped");
    Ok(())
}
