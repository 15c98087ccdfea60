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
//! Channels: `xmpp` (chat messages; presence and replies flow back to the avatars), `sms`
//! (Twilio or a Kannel gateway), `push` (ntfy, UnifiedPush), `email` and `webhook`.

pub mod compose;
pub mod email;
pub mod push;
pub mod sms;
pub mod webhook;
pub mod xmpp;

use async_nats::jetstream;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, StreamKind};
use tocsin_model::{
    AvatarMessage, Channel, DeliveryJob, DeliveryOutcome, Event, EventKind, JobKind, now_ms,
};
use tocsin_netguard::AddressPolicy;
use tocsin_runtime::{ConfigDoc, Readiness};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, info_span, warn};
use webhook::SendResult;

/// The `[delivery]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub ops_listen: String,
    /// The channels this instance serves (each can run in its own deployment). From the
    /// environment as a comma-separated list: `TOCSIN_DELIVERY__CHANNELS=xmpp,sms`.
    #[serde(deserialize_with = "channel_list")]
    pub channels: Vec<Channel>,
    /// Jobs in flight per channel.
    pub concurrency: usize,
    /// Jobs pulled but not yet settled per channel — queued in lanes behind a slow or failing
    /// destination, or being sent. The rest wait in the stream (backpressure), not in memory.
    pub max_ack_pending: i64,
    pub webhook_timeout_secs: u64,
    /// Allow webhooks on loopback addresses (tests, local receivers).
    pub allow_loopback: bool,
    /// Allow webhooks on private and link-local addresses (an intranet).
    pub allow_private_addresses: bool,
    pub shutdown_grace_secs: u64,
    /// The SMTP relay for the `email` channel.
    pub smtp: email::SmtpConfig,
    /// tocsin's XMPP account for the `xmpp` channel.
    pub xmpp: xmpp::XmppConfig,
    /// The SMS provider for the `sms` channel.
    pub sms: sms::SmsConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ops_listen: "127.0.0.1:9104".into(),
            channels: vec![Channel::Webhook],
            concurrency: 32,
            max_ack_pending: 10_000,
            webhook_timeout_secs: 10,
            allow_loopback: false,
            allow_private_addresses: false,
            shutdown_grace_secs: 20,
            smtp: email::SmtpConfig::default(),
            xmpp: xmpp::XmppConfig::default(),
            sms: sms::SmsConfig::default(),
        }
    }
}

/// A list of channels, or a comma-separated string of them (environment variables are strings).
fn channel_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Channel>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Channel>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(l) => Ok(l),
        Either::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                Channel::ALL
                    .into_iter()
                    .find(|x| x.as_str() == c)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "{c:?} is not a channel (xmpp, sms, email, push, webhook)"
                        ))
                    })
            })
            .collect(),
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
                        Channel::Webhook | Channel::Push | Channel::Sink => {}
                        Channel::Email => p.extend(s.smtp.problems()),
                        Channel::Xmpp => p.extend(s.xmpp.problems()),
                        Channel::Sms => p.extend(s.sms.problems()),
                    }
                }
                if s.concurrency == 0 || s.webhook_timeout_secs == 0 {
                    p.push(
                        "delivery.concurrency and webhook_timeout_secs: must be greater than 0"
                            .into(),
                    );
                }
                if s.max_ack_pending < 1 {
                    p.push(format!(
                        "delivery.max_ack_pending: must be at least 1, got {}",
                        s.max_ack_pending
                    ));
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
    /// For addresses users give (webhooks, push): behind the address guard.
    http: reqwest::Client,
    /// For the providers the operator configured (Twilio, the SMS gateway).
    providers: reqwest::Client,
    mailer: Option<email::Mailer>,
    xmpp: Option<Arc<xmpp::Xmpp>>,
    /// A provider rate limit per channel.
    rates: HashMap<Channel, Rate>,
    cfg: DeliveryConfig,
    /// What became of the jobs sent lately, by job id: a job redelivered after it was sent
    /// (its ack or outcome lost while the bus failed over), or published again after a
    /// server restart forgot its id, is reported, not sent again.
    sent: std::sync::Mutex<Sent>,
}

/// The last [`Sent::CAPACITY`] jobs' results, oldest forgotten first.
#[derive(Default)]
struct Sent {
    results: HashMap<String, (bool, String, i64)>,
    order: std::collections::VecDeque<String>,
}

impl Sent {
    const CAPACITY: usize = 65_536;

    fn get(&self, job: &str) -> Option<(bool, String, i64)> {
        self.results.get(job).cloned()
    }

    fn insert(&mut self, job: &str, result: (bool, String, i64)) {
        if self.results.insert(job.to_owned(), result).is_none() {
            self.order.push_back(job.to_owned());
            if self.order.len() > Self::CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.results.remove(&old);
            }
        }
    }
}

/// At most `per_sec` sends per second, spaced evenly.
struct Rate {
    gap: Duration,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl Rate {
    fn new(per_sec: f64) -> Option<Rate> {
        (per_sec > 0.0).then(|| Rate {
            gap: Duration::from_secs_f64(1.0 / per_sec),
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
        })
    }

    async fn wait(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.gap;
            at
        };
        tokio::time::sleep_until(at).await;
    }
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
    let providers = reqwest::Client::builder()
        .timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .connect_timeout(Duration::from_secs(config.delivery.webhook_timeout_secs))
        .user_agent(concat!("tocsin/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Setup(format!("cannot build the HTTP client: {e}")))?;
    let bus = Bus::connect(&config.bus, "delivery").await?;
    bus.ensure_streams().await?;
    let xmpp = if config.delivery.channels.contains(&Channel::Xmpp) {
        let addresses = bus.kv("addresses").await?;
        Some(
            xmpp::Xmpp::start(
                &config.delivery.xmpp,
                bus.clone(),
                addresses,
                shutdown.clone(),
            )
            .map_err(DeliveryError::Setup)?,
        )
    } else {
        None
    };
    let mut rates = HashMap::new();
    for (c, r) in [
        (Channel::Xmpp, config.delivery.xmpp.rate_per_sec),
        (Channel::Sms, config.delivery.sms.rate_per_sec),
    ] {
        if let Some(rate) = Rate::new(r) {
            rates.insert(c, rate);
        }
    }
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    tocsin_runtime::serve_ops(&config.delivery.ops_listen, ready.clone(), shutdown.clone()).await?;
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        http,
        providers,
        mailer,
        xmpp,
        rates,
        cfg: config.delivery.clone(),
        sent: Default::default(),
    });
    let mut workers = Vec::new();
    for channel in &config.delivery.channels {
        let consumer = bus
            .pull_consumer(
                StreamKind::Delivery,
                &format!("delivery-{}", channel.as_str()),
                Some(bus.subjects().delivery(channel.as_str())),
                // jobs held by lanes waiting behind a failing destination count here
                config.delivery.max_ack_pending,
            )
            .await?;
        // dropped (aborted) with this task, and the lanes with them
        workers.push(AbortOnDropHandle::new(tokio::spawn(run_channel(
            ctx.clone(),
            *channel,
            consumer,
            shutdown.clone(),
        ))));
    }
    ready.set(true);
    info!(channels = ?config.delivery.channels, "delivery running");
    for w in workers {
        let _ = w.await;
    }
    if let Some(x) = &ctx.xmpp {
        x.closed().await;
    }
    ready.set(false);
    bus.drain().await;
    info!("delivery stopped");
    Ok(())
}

/// One lane per (user, destination): its jobs are sent strictly in order, one at a time; a
/// transient failure is retried in place (the job stays unacked, kept alive with progress
/// acks) so that later jobs for the same destination never overtake it. Different lanes run
/// concurrently, at most `concurrency` sends at once.
/// The jobs this instance holds (queued or in flight), by stream sequence.
type Held = Arc<std::sync::Mutex<HashMap<u64, jetstream::Message>>>;

struct Lane {
    tx: mpsc::UnboundedSender<(jetstream::Message, DeliveryJob)>,
    join: AbortOnDropHandle<()>,
}

async fn run_channel(
    ctx: Arc<Ctx>,
    channel: Channel,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    shutdown: CancellationToken,
) {
    let mut messages = tocsin_bus::Pull::new(consumer, 256, format!("{} jobs", channel.as_str()));
    let permits = Arc::new(Semaphore::new(ctx.cfg.concurrency));
    let held: Held = Arc::default();
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    // every job held here — queued in a lane or being sent — is kept alive, so JetStream
    // never redelivers it behind our back while it waits its turn
    let ack_wait = Duration::from_secs(ctx.bus.config().ack_wait_secs);
    let mut keep_alive =
        tokio::time::interval(ack_wait.mul_f64(0.4).max(Duration::from_millis(100)));
    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                lanes.retain(|_, l| !l.join.is_finished());
                continue;
            }
            _ = keep_alive.tick() => {
                let msgs: Vec<jetstream::Message> = held.lock().expect("held lock").values().cloned().collect();
                for m in msgs {
                    if let Err(e) = m.ack_with(jetstream::AckKind::Progress).await {
                        debug!(error = %e, "cannot extend a job's ack deadline");
                    }
                }
                continue;
            }
            m = messages.next() => m,
        };
        let msg = next;
        let job: DeliveryJob = match tocsin_bus::decode(&msg.payload, "delivery job") {
            Ok(j) => j,
            Err(e) => {
                ctx.bus
                    .settle(&msg, Disposition::Reject(e.to_string()))
                    .await;
                continue;
            }
        };
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        {
            let mut h = held.lock().expect("held lock");
            if h.contains_key(&seq) {
                // a redelivery of a job we still hold: it is already queued or being sent
                continue;
            }
            h.insert(seq, msg.clone());
        }
        let key = format!("{}:{}", job.notification.user, job.destination.id);
        let mut item = (msg, job);
        loop {
            let lane = lanes.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let join = AbortOnDropHandle::new(tokio::spawn(run_lane(
                    ctx.clone(),
                    channel,
                    permits.clone(),
                    held.clone(),
                    rx,
                )));
                Lane { tx, join }
            });
            match lane.tx.send(item) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    // the lane went idle and is finishing: wait, so one lane never runs twice
                    item = back;
                    if let Some(old) = lanes.remove(&key) {
                        let _ = old.join.await;
                    }
                }
            }
        }
    }
    drop(messages);
    let joins: Vec<AbortOnDropHandle<()>> = lanes.into_values().map(|l| l.join).collect();
    if tokio::time::timeout(
        Duration::from_secs(ctx.cfg.shutdown_grace_secs),
        futures::future::join_all(joins),
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

async fn run_lane(
    ctx: Arc<Ctx>,
    channel: Channel,
    permits: Arc<Semaphore>,
    held: Held,
    mut rx: mpsc::UnboundedReceiver<(jetstream::Message, DeliveryJob)>,
) {
    let idle = Duration::from_secs(60);
    loop {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some((msg, job))) => {
                let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
                handle(&ctx, channel, &permits, msg, job).await;
                held.lock().expect("held lock").remove(&seq);
            }
            Ok(None) => return,
            Err(_) => rx.close(),
        }
    }
}

/// Send one job until it is delivered, fails for good, or has used its attempts.
async fn handle(
    ctx: &Ctx,
    channel: Channel,
    permits: &Semaphore,
    msg: jetstream::Message,
    job: DeliveryJob,
) {
    let span = info_span!("deliver", notification = %job.notification.id, user = %job.notification.user, channel = channel.as_str());
    async {
        let mut attempts = msg.info().map(|i| i.delivered).unwrap_or(1);
        let max = ctx.bus.config().max_deliver;
        let before = ctx.sent.lock().expect("sent lock").get(&job.job_id);
        // `attempted` events for sends that did not deliver, published with the outcome (and
        // settled with it); a send that delivers is the `delivered` event itself — one event,
        // not two, on the common path
        let mut events: Vec<Event> = Vec::new();
        let (delivered, detail) = if let Some((delivered, detail, tried)) = before {
            debug!("already sent; reporting it again instead of sending twice");
            attempts = tried;
            (delivered, detail)
        } else { loop {
            let result = {
                let _permit = permits.acquire().await.expect("semaphore open");
                if let Some(rate) = ctx.rates.get(&channel) {
                    rate.wait().await;
                }
                send(ctx, &job).await
            };
            let (label, how) = match &result {
                SendResult::Delivered(d) => ("delivered", d),
                SendResult::Permanent(d) => ("failed", d),
                SendResult::Transient { detail, .. } => ("retry", detail),
            };
            if !matches!(result, SendResult::Delivered(_)) {
                events.push(
                    job_event(EventKind::Attempted, &job, &[&job.job_id, &attempts.to_string()], now_ms())
                        .attempt(attempts)
                        .detail(&format!("{label}: {how}")),
                );
            }
            metrics::counter!("tocsin_delivery_attempts_total", "channel" => channel.as_str(), "outcome" => label).increment(1);
            match result {
                SendResult::Delivered(d) => break (true, d),
                SendResult::Permanent(d) => break (false, d),
                SendResult::Transient { detail, .. } if attempts >= max => {
                    break (false, format!("gave up after {attempts} attempts: {detail}"));
                }
                SendResult::Transient { detail, after } => {
                    let wait = tocsin_bus::backoff(attempts, after.unwrap_or_default());
                    warn!(attempt = attempts, %detail, retry_in_ms = wait.as_millis() as u64, "delivery failed; will retry");
                    // the channel loop keeps the job alive while it waits
                    tokio::time::sleep(wait).await;
                    attempts += 1;
                }
            }
        } };
        ctx.sent
            .lock()
            .expect("sent lock")
            .insert(&job.job_id, (delivered, detail.clone(), attempts));
        if job.kind == JobKind::Reply {
            // an answer to the user's own command: nothing to record
            ctx.bus.settle(&msg, Disposition::Ack).await;
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
        let kind = if delivered { EventKind::Delivered } else { EventKind::Failed };
        events.push(
            job_event(kind, &job, &[&job.job_id], outcome.at_ms)
                .since(job.notification.created_at_ms)
                .attempt(attempts)
                .detail(&outcome.detail),
        );
        let user = outcome.user.clone();
        let subject = ctx.bus.subjects().silo(ctx.bus.silo_of(&user), user.as_str(), "outcome");
        let id = tocsin_bus::msg_id::outcome(&outcome.job_id);
        // the events and the outcome in one pipelined batch: one round trip
        let reported = match (
            ctx.bus.event_outputs(events, "delivery"),
            tocsin_bus::encode(&AvatarMessage::Outcome { outcome }),
        ) {
            (Ok(mut items), Ok(payload)) => {
                items.push((subject, id, payload));
                ctx.bus.publish_all(items).await
            }
            (Err(e), _) | (_, Err(e)) => Err(e),
        };
        match reported {
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

/// An event about `job`, keyed by `key`.
fn job_event(
    kind: EventKind,
    job: &DeliveryJob,
    key: &[&str],
    at_ms: tocsin_model::Millis,
) -> Event {
    Event::new(kind, key, at_ms)
        .user(&job.notification.user)
        .notification(&job.notification.id)
        .source(job.notification.source.id.as_deref())
        .channel(Some(job.destination.channel))
        .destination(&job.destination.id)
}

/// One attempt at sending `job` on its channel.
async fn send(ctx: &Ctx, job: &DeliveryJob) -> SendResult {
    let not_served = |c: Channel| {
        SendResult::Permanent(format!(
            "this delivery instance does not serve the {} channel (delivery.channels)",
            c.as_str()
        ))
    };
    match job.destination.channel {
        Channel::Webhook => webhook::send(&ctx.http, job, now_ms()).await,
        Channel::Push => push::send(&ctx.http, job).await,
        Channel::Sms => sms::send(&ctx.providers, &ctx.cfg.sms, job).await,
        Channel::Email => match &ctx.mailer {
            Some(m) => m.send(job).await,
            None => not_served(Channel::Email),
        },
        Channel::Xmpp => match &ctx.xmpp {
            Some(x) => x.send(job).await,
            None => not_served(Channel::Xmpp),
        },
        Channel::Sink => SendResult::Delivered(format!("discarded ({})", job.destination.address)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_runtime::ConfigSource;

    #[test]
    fn channels_come_from_the_environment_as_a_comma_list() {
        let src = ConfigSource {
            file: None,
            env: [(
                "TOCSIN_DELIVERY__CHANNELS".to_string(),
                "webhook, push".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let cfg = Config::load(&src.load().unwrap()).unwrap();
        assert_eq!(cfg.delivery.channels, [Channel::Webhook, Channel::Push]);
        let src = ConfigSource {
            file: None,
            env: [(
                "TOCSIN_DELIVERY__CHANNELS".to_string(),
                "pigeon".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems[0].contains("\"pigeon\" is not a channel"),
            "{problems:?}"
        );
    }
}
