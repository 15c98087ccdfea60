//! The router: one avatar per user, the single authority over that user's data and routing.
//!
//! A router instance owns a set of silos. For each it pulls the silo's stream (everything
//! addressed to that silo's avatars) and hands each message to its user's avatar: a task
//! that processes that user's messages strictly in order, while different users run
//! concurrently. An avatar is activated on its first message (its record loaded from the
//! `avatars` KV bucket) and evicted after `avatar_idle_secs` without one, so a router holds
//! millions of registered users but only the active ones in memory.
//!
//! An avatar decides with [`avatar::apply`] (pure), publishes the effects (history records,
//! subscription changes) in order without waiting per message, and then — once every PubAck
//! is in and the record is saved with a revision check — acks the batch. A crash anywhere
//! before that leaves the messages unacked; they are redelivered and the deterministic ids
//! make the repeat a no-op downstream.

pub mod avatar;
pub mod escalate;
pub mod timers;

use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, BusConfig, BusError, Disposition, Leases, SiloSet, StreamKind};
use tocsin_model::{AvatarMessage, UserId, UserRecord, now_ms};
use tocsin_runtime::{ConfigDoc, Readiness};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info, info_span, warn};

/// The `[router]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Which silos this instance owns: `all`, or numbers and ranges like `0-7,12`.
    /// Ignored when `replica_ordinal` is set.
    pub silos: String,
    /// This instance's StatefulSet ordinal; with `replica_count` it decides the silos
    /// (silo k belongs to ordinal k mod replica_count).
    pub replica_ordinal: Option<u32>,
    pub replica_count: u32,
    /// Where `/healthz`, `/readyz` and `/metrics` listen; empty for none.
    pub ops_listen: String,
    /// An avatar with no message for this long is evicted from memory.
    pub avatar_idle_secs: u64,
    /// Messages queued per avatar before the silo's puller waits.
    pub avatar_queue: usize,
    /// Unacked messages per silo consumer (backpressure on the whole silo).
    pub max_ack_pending: i64,
    /// Messages an avatar handles before it saves and acks.
    pub batch: usize,
    pub max_sources_per_user: usize,
    pub max_destinations_per_user: usize,
    /// How long shutdown waits for avatars to finish and settle.
    pub shutdown_grace_secs: u64,
    /// A silo is served only by the holder of its lease, renewed every quarter of this; a
    /// router that dies without releasing its silos holds them this long.
    pub silo_lease_secs: u64,
    /// The API's public URL, for the signed acknowledgement links in notifications
    /// (`<url>/v1/ack/…`); empty: no links.
    pub ack_link_base_url: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            silos: "all".into(),
            replica_ordinal: None,
            replica_count: 1,
            ops_listen: "127.0.0.1:9102".into(),
            avatar_idle_secs: 300,
            avatar_queue: 256,
            max_ack_pending: 20_000,
            batch: 64,
            max_sources_per_user: 100,
            max_destinations_per_user: 20,
            shutdown_grace_secs: 20,
            silo_lease_secs: 15,
            ack_link_base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

/// Everything the router needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub bus: BusConfig,
    pub router: RouterConfig,
}

impl Config {
    /// Read and validate; every problem is reported.
    pub fn load(doc: &ConfigDoc) -> Result<Self, Vec<String>> {
        let (bus, router) = doc.service_sections("router", |b: &BusConfig, s: &RouterConfig| {
            let mut p = b.problems();
            if let Err(e) = s.silo_set(b.silo_count) {
                p.push(format!("router.silos: {e}"));
            }
            if s.silo_lease_secs < 2 {
                p.push("router.silo_lease_secs: must be at least 2".into());
            }
            if s.avatar_queue == 0 || s.batch == 0 {
                p.push("router.avatar_queue and router.batch: must be greater than 0".into());
            }
            p
        })?;
        Ok(Config { bus, router })
    }
}

impl RouterConfig {
    pub fn silo_set(&self, silo_count: u32) -> Result<SiloSet, String> {
        SiloSet::resolve(
            &self.silos,
            self.replica_ordinal,
            self.replica_count,
            silo_count,
        )
    }
}

/// Errors that stop the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
}

struct Ctx {
    bus: Bus,
    kv: kv::Store,
    /// Who owns an IM address or phone number (`AddressEntry`).
    addresses: kv::Store,
    /// One key per user with escalations pending: `s<silo>.<user>` → the earliest due time.
    timers: kv::Store,
    cfg: RouterConfig,
    limits: avatar::Limits,
}

/// Run the router until `shutdown`, then drain: stop pulling, let every avatar finish and
/// settle what it holds (within `shutdown_grace_secs`), close the connection.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RouterError> {
    let silos = config
        .router
        .silo_set(config.bus.silo_count)
        .map_err(RouterError::Config)?;
    let bus = Bus::connect(&config.bus, "router").await?;
    bus.ensure_streams().await?;
    let kv = bus.kv("avatars").await?;
    let addresses = bus.kv("addresses").await?;
    let timers = bus.kv("timers").await?;
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    tocsin_runtime::serve_ops(&config.router.ops_listen, ready.clone(), shutdown.clone()).await?;
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        kv,
        addresses,
        timers,
        limits: avatar::Limits {
            max_sources: config.router.max_sources_per_user,
            max_destinations: config.router.max_destinations_per_user,
            links: escalate::Links {
                base_url: config.router.ack_link_base_url.clone(),
            },
        },
        cfg: config.router.clone(),
    });
    // a silo is served only while this instance holds its lease (see tocsin_bus::lease)
    let leases = Leases::open(
        &bus,
        "router",
        Duration::from_secs(config.router.silo_lease_secs),
    )
    .await?;
    info!(holder = leases.holder(), "router instance");
    let mut workers = Vec::new();
    for silo in silos.iter() {
        let (ctx, leases, shutdown) = (ctx.clone(), leases.clone(), shutdown.clone());
        // if this task is dropped (aborted), its workers go with it, and theirs with them
        workers.push(AbortOnDropHandle::new(tokio::spawn(async move {
            leases
                .serve_silo(silo, shutdown, |stop| serve_silo(ctx.clone(), silo, stop))
                .await;
            Ok::<(), BusError>(())
        })));
    }
    ready.set(true);
    info!(silos = silos.len(), "router running");
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "silo worker stopped with an error"),
            Err(e) => warn!(error = %e, "silo worker panicked"),
        }
    }
    ready.set(false);
    bus.drain().await;
    info!("router stopped");
    Ok(())
}

/// Messages travel to an avatar boxed: a channel allocates its slots 32 at a time, and 32
/// unboxed messages (408 bytes each) would cost every active avatar 13 KB.
struct AvatarHandle {
    tx: mpsc::Sender<Box<jetstream::Message>>,
    /// Aborted when dropped: a silo worker that is itself dropped takes its avatars along.
    join: AbortOnDropHandle<()>,
}

/// Serve one silo until `stop` (shutdown, or the lease lost): its avatars and its timers.
async fn serve_silo(ctx: Arc<Ctx>, silo: u32, stop: CancellationToken) {
    let open = ctx.bus.pull_consumer(
        StreamKind::Silo(silo),
        "router",
        None,
        ctx.cfg.max_ack_pending,
    );
    let consumer = tokio::select! {
        _ = stop.cancelled() => return,
        c = open => match c {
            Ok(c) => c,
            Err(e) => {
                warn!(silo, error = %e, "cannot open the silo's consumer; trying again");
                return;
            }
        },
    };
    let (b, t, s) = (ctx.bus.clone(), ctx.timers.clone(), stop.clone());
    // ticks are idempotent: the scheduler is simply dropped (aborted) with the silo
    let _timers = AbortOnDropHandle::new(tokio::spawn(timers::run(b, t, silo, s)));
    if let Err(e) = run_silo(ctx, silo, consumer, stop).await {
        warn!(silo, error = %e, "silo worker stopped with an error");
    }
}

async fn run_silo(
    ctx: Arc<Ctx>,
    silo: u32,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    shutdown: CancellationToken,
) -> Result<(), BusError> {
    let mut messages = tocsin_bus::Pull::new(consumer, 256, format!("silo {silo}"));
    let mut avatars: HashMap<UserId, AvatarHandle> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                avatars.retain(|_, h| !h.join.is_finished());
                metrics::gauge!("tocsin_router_active_avatars", "silo" => silo.to_string())
                    .set(avatars.len() as f64);
            }
            msg = messages.next() => dispatch(&ctx, silo, &mut avatars, msg).await,
        }
    }
    // stop pulling. What was pulled but not handed to an avatar goes back at once (nak), so
    // the silo's next holder gets it before anything newer instead of after `ack_wait`.
    let unhandled = messages.stop(256, Duration::from_millis(20)).await;
    for msg in &unhandled {
        let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
    }
    if !unhandled.is_empty() {
        debug!(
            silo,
            returned = unhandled.len(),
            "returned messages pulled but not handled"
        );
    }
    // dropping the senders lets each avatar finish its queue, save and ack
    let joins: Vec<AbortOnDropHandle<()>> = avatars.into_values().map(|h| h.join).collect();
    if tokio::time::timeout(
        Duration::from_secs(ctx.cfg.shutdown_grace_secs),
        futures::future::join_all(joins),
    )
    .await
    .is_err()
    {
        warn!(
            silo,
            "avatars did not finish within the grace period; their messages will be redelivered"
        );
    }
    Ok(())
}

async fn dispatch(
    ctx: &Arc<Ctx>,
    silo: u32,
    avatars: &mut HashMap<UserId, AvatarHandle>,
    msg: jetstream::Message,
) {
    let Some(user) = ctx
        .bus
        .subjects()
        .user_of_silo_subject(&msg.subject)
        .and_then(|u| UserId::parse(u).ok())
    else {
        let reason = format!("subject {} names no valid user", msg.subject);
        ctx.bus.settle(&msg, Disposition::Reject(reason)).await;
        return;
    };
    let mut msg = msg;
    loop {
        let handle = avatars
            .entry(user.clone())
            .or_insert_with(|| spawn_avatar(ctx.clone(), silo, user.clone()));
        match handle.tx.send(Box::new(msg)).await {
            Ok(()) => return,
            Err(mpsc::error::SendError(back)) => {
                // the avatar went idle and is finishing; wait so two never run for one user
                msg = *back;
                if let Some(old) = avatars.remove(&user) {
                    let _ = old.join.await;
                }
            }
        }
    }
}

fn spawn_avatar(ctx: Arc<Ctx>, silo: u32, user: UserId) -> AvatarHandle {
    let (tx, rx) = mpsc::channel(ctx.cfg.avatar_queue);
    let span = info_span!("avatar", user = %user, silo);
    let join = tokio::spawn(
        Avatar {
            ctx,
            user,
            record: None,
            revision: 0,
            loaded: false,
            dirty: false,
            pending: Vec::new(),
            acks: Vec::new(),
            replies: Vec::new(),
            index: Vec::new(),
            silo,
            hold_until: None,
        }
        .run(rx)
        .instrument(span),
    );
    let join = AbortOnDropHandle::new(join);
    metrics::counter!("tocsin_router_avatar_activations_total").increment(1);
    AvatarHandle { tx, join }
}

struct Avatar {
    ctx: Arc<Ctx>,
    user: UserId,
    record: Option<UserRecord>,
    /// KV revision of `record` (0: no entry).
    revision: u64,
    loaded: bool,
    dirty: bool,
    /// Handled but not yet acked.
    pending: Vec<jetstream::Message>,
    acks: Vec<tocsin_bus::PendingAck>,
    replies: Vec<(String, bytes::Bytes)>,
    /// Address index changes to write before the batch is acked.
    index: Vec<(String, Option<tocsin_model::AddressEntry>)>,
    silo: u32,
    /// After a failed batch: until when new messages are given back rather than handled.
    hold_until: Option<tokio::time::Instant>,
}

impl Avatar {
    async fn run(mut self, mut rx: mpsc::Receiver<Box<jetstream::Message>>) {
        let idle = Duration::from_secs(self.ctx.cfg.avatar_idle_secs);
        loop {
            let msg = match tokio::time::timeout(idle, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) => {
                    // evict: refuse new messages, finish the ones already queued
                    rx.close();
                    continue;
                }
            };
            // boxed: an idle avatar's task then holds only this loop's state, not the
            // (large) state of handling and flushing
            Box::pin(self.handle(*msg)).await;
            if rx.is_empty() || self.pending.len() >= self.ctx.cfg.batch {
                Box::pin(self.flush()).await;
            }
        }
        Box::pin(self.flush()).await;
        debug!("avatar evicted");
    }

    async fn handle(&mut self, msg: jetstream::Message) {
        if let Some(until) = self.hold_until {
            let now = tokio::time::Instant::now();
            if now < until {
                // an earlier batch was given back: this message must not overtake it
                let wait = until - now + Duration::from_millis(50);
                self.ctx.bus.settle(&msg, Disposition::Retry(wait)).await;
                return;
            }
            self.hold_until = None;
        }
        if self.ctx.bus.exhausted(&msg) {
            // it has failed on every delivery: do not let it block this user any longer
            self.flush().await;
            let reason = "handling failed on every delivery".to_owned();
            self.ctx.bus.settle(&msg, Disposition::Reject(reason)).await;
            return;
        }
        let parsed: AvatarMessage = match tocsin_bus::decode(&msg.payload, "avatar message") {
            Ok(m) => m,
            Err(e) => {
                self.flush().await;
                self.ctx
                    .bus
                    .settle(&msg, Disposition::Reject(e.to_string()))
                    .await;
                return;
            }
        };
        if !self.loaded
            && let Err(e) = self.load().await
        {
            warn!(error = %e, "cannot load the user's record; will retry");
            self.pending.push(msg);
            self.fail(Duration::from_secs(1)).await;
            return;
        }
        let kind = parsed.kind();
        let cmd_id = match &parsed {
            AvatarMessage::Command { command_id, .. } => command_id.clone(),
            _ => String::new(),
        };
        let fx = avatar::apply(
            &self.user,
            &mut self.record,
            parsed,
            &self.ctx.limits,
            now_ms(),
        );
        metrics::counter!("tocsin_router_messages_total", "kind" => kind, "outcome" => fx.outcome)
            .increment(1);
        if fx.outcome == "no_user" {
            debug!(subject = %msg.subject, "message for a user that does not exist; dropped");
        }
        self.dirty |= fx.dirty;
        let subjects = self.ctx.bus.subjects().clone();
        let silo = self.ctx.bus.silo_of(&self.user);
        let mut outputs = Vec::new();
        for rec in &fx.history {
            let id = match rec {
                tocsin_model::HistoryRecord::Notification { notification, .. } => {
                    notification.id.to_string()
                }
                tocsin_model::HistoryRecord::Timeline {
                    notification_id,
                    entry,
                    ..
                } => format!(
                    "{notification_id}:{}:{}:{}",
                    entry.kind,
                    entry.channel.map(|c| c.as_str()).unwrap_or(""),
                    entry.at_ms
                ),
            };
            outputs.push((
                subjects.history(silo, self.user.as_str()),
                id,
                tocsin_bus::encode(rec),
            ));
        }
        for job in &fx.jobs {
            outputs.push((
                subjects.delivery(job.destination.channel.as_str()),
                job.job_id.clone(),
                tocsin_bus::encode(job),
            ));
        }
        for (i, sub) in fx.imap.iter().enumerate() {
            outputs.push((
                subjects.ingest_imap(),
                format!("imap:{}:{}:{cmd_id}:{i}", self.user, sub.source_id),
                tocsin_bus::encode(sub),
            ));
        }
        for mut event in fx.events {
            event.user = Some(self.user.clone());
            event.silo = Some(silo);
            match self.ctx.bus.event_output(event, "router") {
                Ok((subject, id, payload)) => outputs.push((subject, id, Ok(payload))),
                Err(e) => outputs.push((String::new(), String::new(), Err(e))),
            }
        }
        for (i, sub) in fx.subscriptions.iter().enumerate() {
            outputs.push((
                subjects.ingest_subscriptions(),
                format!("sub:{}:{}:{cmd_id}:{i}", self.user, sub.source_id),
                tocsin_bus::encode(sub),
            ));
        }
        for (subject, id, payload) in outputs {
            let sent = match payload {
                Ok(p) => self.ctx.bus.send(subject, &id, p).await,
                Err(e) => Err(e),
            };
            match sent {
                Ok(ack) => self.acks.push(ack),
                Err(e) => {
                    warn!(error = %e, "cannot publish a routed output; will retry");
                    self.pending.push(msg);
                    self.fail(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
        if let Some((to, reply)) = fx.reply
            && let Ok(p) = tocsin_bus::encode(&reply)
        {
            self.replies.push((to, p));
        }
        self.index.extend(fx.index);
        self.pending.push(msg);
    }

    async fn load(&mut self) -> Result<(), BusError> {
        let entry = self
            .ctx
            .kv
            .entry(self.user.as_str())
            .await
            .map_err(|e| self.kv_err(e))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                self.record = Some(tocsin_bus::decode(&e.value, "user record")?);
                self.revision = e.revision;
            }
            Some(e) => {
                self.record = None;
                self.revision = e.revision;
            }
            None => {
                self.record = None;
                self.revision = 0;
            }
        }
        self.loaded = true;
        Ok(())
    }

    fn kv_err(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Kv {
            bucket: "avatars".into(),
            key: self.user.to_string(),
            message: e.to_string(),
        }
    }

    /// Make everything handled so far durable, then ack it and send the replies.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for ack in std::mem::take(&mut self.acks) {
            if let Err(e) = ack.await {
                warn!(error = %e, "a routed output was not acknowledged by the bus; will retry");
                self.fail(Duration::from_secs(1)).await;
                return;
            }
        }
        for (key, entry) in std::mem::take(&mut self.index) {
            let written = match entry {
                Some(e) => match tocsin_bus::encode(&e) {
                    Ok(b) => self
                        .ctx
                        .addresses
                        .put(&key, b)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
                None => self
                    .ctx
                    .addresses
                    .delete(&key)
                    .await
                    .map_err(|e| e.to_string()),
            };
            if let Err(e) = written {
                warn!(key, error = %e, "cannot update the address index; will retry");
                self.fail(Duration::from_secs(1)).await;
                return;
            }
        }
        // the timer is written before the record, so a crash between the two leaves an extra
        // wake-up (harmless: nothing is due) rather than an escalation nobody wakes
        let timer_key = timers::key(self.silo, &self.user);
        let mut clear_timer = false;
        if let Some(rec) = &mut self.record {
            let due = rec.reach.earliest_due();
            if due != rec.reach.timer_due_ms {
                if let Some(t) = due
                    && let Err(e) = self.ctx.timers.put(&timer_key, t.to_string().into()).await
                {
                    warn!(error = %e, "cannot set the escalation timer; will retry");
                    self.fail(Duration::from_secs(1)).await;
                    return;
                }
                clear_timer = due.is_none();
                rec.reach.timer_due_ms = due;
                self.dirty = true;
            }
        }
        if self.dirty
            && let Some(rec) = &self.record
        {
            let saved = match tocsin_bus::encode(rec) {
                Ok(bytes) if self.revision == 0 => self
                    .ctx
                    .kv
                    .create(self.user.as_str(), bytes)
                    .await
                    .map_err(|e| self.kv_err(e)),
                Ok(bytes) => self
                    .ctx
                    .kv
                    .update(self.user.as_str(), bytes, self.revision)
                    .await
                    .map_err(|e| self.kv_err(e)),
                Err(e) => Err(e),
            };
            match saved {
                Ok(rev) => {
                    self.revision = rev;
                    self.dirty = false;
                }
                Err(e) => {
                    // most likely another router wrote this user (silos moving): reload
                    warn!(error = %e, "cannot save the user's record; reloading and retrying");
                    self.fail(Duration::from_secs(1)).await;
                    return;
                }
            }
        }
        if clear_timer && let Err(e) = self.ctx.timers.delete(&timer_key).await {
            // the scheduler wakes the avatar once more and finds nothing due
            debug!(error = %e, "cannot clear the escalation timer");
        }
        for msg in self.pending.drain(..) {
            self.ctx.bus.settle(&msg, Disposition::Ack).await;
        }
        for (to, payload) in self.replies.drain(..) {
            if let Err(e) = self.ctx.bus.client().publish(to, payload).await {
                debug!(error = %e, "could not send a command reply");
            }
        }
    }

    /// Give back everything not yet durable: nak it for redelivery and forget the in-memory
    /// state so the next message reloads it.
    async fn fail(&mut self, after: Duration) {
        self.acks.clear();
        self.replies.clear();
        self.index.clear();
        let mut longest = after;
        for msg in self.pending.drain(..) {
            let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
            longest = longest.max(tocsin_bus::backoff(delivered, after));
            self.ctx.bus.settle(&msg, Disposition::Retry(after)).await;
        }
        // messages for this user already on their way are given back too until the batch is
        // redelivered, so that the user's messages keep their order
        self.hold_until = Some(tokio::time::Instant::now() + longest);
        self.loaded = false;
        self.dirty = false;
        self.record = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_runtime::ConfigSource;

    #[test]
    fn config_problems_are_all_reported() {
        let src = ConfigSource {
            file: None,
            env: [
                ("TOCSIN_BUS__SILO_COUNT".to_string(), "0".to_string()),
                ("TOCSIN_ROUTER__SILOS".to_string(), "9-2".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with("bus.silo_count")),
            "{problems:?}"
        );
        let src = ConfigSource {
            file: None,
            env: [("TOCSIN_ROUTER__SILOS".to_string(), "0-99".to_string())].into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with("router.silos")),
            "{problems:?}"
        );
        assert!(Config::load(&ConfigDoc::empty()).is_ok());
    }
}
