//! A channel's worker: pull its jobs (and its parked jobs) and run them in lanes, one per
//! (user, destination), in order within a lane and concurrently across lanes.

use crate::Ctx;
use crate::fairness::{Admit, Fairness};
use crate::job::handle;
use crate::permits::Permits;
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::Disposition;
use tocsin_bus::Inbound;
use tocsin_model::{Channel, DeliveryJob};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

/// A fixed start for the breaker's clock.
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn started() -> &'static std::time::Instant {
    START.get_or_init(std::time::Instant::now)
}

/// The jobs this instance holds (queued or in flight), by stream sequence.
pub(crate) type Held = Arc<std::sync::Mutex<HashMap<u64, jetstream::Message>>>;

pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<(Inbound, DeliveryJob)>,
    join: AbortOnDropHandle<()>,
}

/// One lane per (user, destination): its jobs are sent strictly in order, one at a time; a
/// transient failure is retried in place (the job stays unacked, kept alive with progress
/// acks) so that later jobs for the same destination never overtake it. Different lanes run
/// concurrently, at most `concurrency` sends at once. Which jobs may wait here at all is
/// [`Fairness`]'s decision: the others are parked back in the stream, on the channel's parked
/// subject, whose own consumer feeds them back in as room frees up.
pub(crate) async fn run_channel(
    ctx: Arc<Ctx>,
    channel: Channel,
    consumers: Consumers,
    shutdown: CancellationToken,
) {
    let what = channel.as_str();
    let mut messages = tocsin_bus::Pull::new(consumers.jobs, 256, format!("{what} jobs"));
    let mut parked = tocsin_bus::Pull::new(consumers.parked, 64, format!("{what} parked jobs"));
    let permits = Arc::new(Permits::new(
        ctx.cfg.concurrency,
        ctx.cfg.max_sends_per_user,
    ));
    let held: Held = Arc::default();
    let fair = Arc::new(Mutex::new(Fairness::new(ctx.cfg.fairness())));
    let mut lanes: HashMap<String, Lane> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    // every job held here — queued in a lane or being sent — is kept alive, so JetStream
    // never redelivers it behind our back while it waits its turn
    let ack_wait = Duration::from_secs(ctx.bus.config().ack_wait_secs);
    let mut keep_alive =
        tokio::time::interval(ack_wait.mul_f64(0.4).max(Duration::from_millis(100)));
    // parked jobs that are parked again (their user still full, their destination still
    // failing) cycle through the stream: after a batch of them in a row, the parked
    // consumer pauses a second rather than spin
    let mut parked_again = 0;
    let mut parked_resume = tokio::time::Instant::now();
    loop {
        let (msg, from_parked) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                lanes.retain(|_, l| !l.join.is_finished());
                permits.sweep();
                continue;
            }
            _ = keep_alive.tick() => {
                let msgs: Vec<jetstream::Message> = tocsin_runtime::lock(&held).values().cloned().collect();
                for m in msgs {
                    if let Err(e) = m.ack_with(jetstream::AckKind::Progress).await {
                        debug!(error = %e, "cannot extend a job's ack deadline");
                    }
                }
                continue;
            }
            m = messages.next() => (m, false),
            m = parked.next(), if tokio::time::Instant::now() >= parked_resume => (m, true),
            _ = tokio::time::sleep_until(parked_resume), if tokio::time::Instant::now() < parked_resume => continue,
        };
        let job: DeliveryJob = match tocsin_bus::decode(&msg.message().payload, "delivery job") {
            Ok(j) => j,
            Err(e) => {
                msg.settle(&ctx.bus, Disposition::Reject(e.to_string()))
                    .await;
                continue;
            }
        };
        let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
        if tocsin_runtime::lock(&held).contains_key(&seq) {
            // a redelivery of a job we still hold: it is already queued or being sent, and
            // that delivery is settled when it is done
            msg.leave();
            continue;
        }
        let key = format!("{}:{}", job.notification.user, job.destination.id);
        let user = job.notification.user.to_string();
        let verdict =
            tocsin_runtime::lock(&fair).admit(&key, &user, from_parked, started().elapsed());
        if let Admit::Park(why) = verdict {
            if from_parked {
                parked_again += 1;
                if parked_again >= 64 {
                    parked_again = 0;
                    parked_resume = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
            park(&ctx, channel, &fair, key, msg, &job, &why).await;
            continue;
        }
        if from_parked {
            parked_again = 0;
        }
        // a clone of the message, only to extend its ack deadline while it waits
        tocsin_runtime::lock(&held).insert(seq, msg.message().clone());
        let mut item = (msg, job);
        loop {
            let lane = lanes.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let join = AbortOnDropHandle::new(tokio::spawn(run_lane(
                    ctx.clone(),
                    channel,
                    permits.clone(),
                    held.clone(),
                    fair.clone(),
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
    drop(parked);
    let joins = lanes.into_values().map(|l| l.join);
    let grace = Duration::from_secs(ctx.cfg.shutdown_grace_secs);
    if !tocsin_runtime::finish_within(grace, joins).await {
        warn!(
            channel = channel.as_str(),
            "jobs did not finish within the grace period; they will be redelivered"
        );
    }
}

/// A channel's two consumers: its jobs, and its parked jobs.
pub(crate) struct Consumers {
    pub(crate) jobs: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    pub(crate) parked: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
}

/// Park `msg`: publish its job on the channel's parked subject, then ack it. The parked copy's
/// id is the job's and the original's stream sequence, so a crash between the two parks it
/// once (the bus drops the repeat), and a job parked again gets a new copy. The publishes go
/// out in order here; their PubAcks are awaited (and the originals acked) off this loop, so a
/// flood of one tenant's jobs is parked at the bus's pace rather than one round trip each.
async fn park(
    ctx: &Arc<Ctx>,
    channel: Channel,
    fair: &Arc<Mutex<Fairness>>,
    key: String,
    msg: Inbound,
    job: &DeliveryJob,
    why: &str,
) {
    let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
    let subject = ctx.bus.subjects().delivery_parked(channel.as_str());
    let id = tocsin_bus::msg_id::parked(&job.job_id, seq);
    debug!(user = %job.notification.user, destination = %job.destination.id, reason = why, "parking a job");
    let sent = ctx
        .bus
        .send(subject, &id, msg.message().payload.clone())
        .await;
    let (ctx, fair) = (ctx.clone(), fair.clone());
    tokio::spawn(async move {
        let acked = match sent {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match acked {
            Ok(()) => {
                metrics::counter!(crate::telemetry::PARKED, "channel" => channel.as_str())
                    .increment(1);
                msg.settle(&ctx.bus, Disposition::Ack).await;
            }
            Err(e) => {
                tocsin_runtime::lock(&fair).park_failed(&key);
                warn!(error = %e, "cannot park a job; it is given back to the stream");
                msg.settle(&ctx.bus, Disposition::Retry(Duration::from_secs(1)))
                    .await;
            }
        }
    });
}

pub(crate) async fn run_lane(
    ctx: Arc<Ctx>,
    channel: Channel,
    permits: Arc<Permits>,
    held: Held,
    fair: Arc<Mutex<Fairness>>,
    mut rx: mpsc::UnboundedReceiver<(Inbound, DeliveryJob)>,
) {
    let idle = Duration::from_secs(60);
    loop {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some((msg, job))) => {
                let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
                let key = format!("{}:{}", job.notification.user, job.destination.id);
                let user = job.notification.user.to_string();
                let breaker =
                    |ok: bool| tocsin_runtime::lock(&fair).sent(&key, ok, started().elapsed());
                handle(&ctx, channel, &permits, msg, job, &breaker).await;
                tocsin_runtime::lock(&held).remove(&seq);
                tocsin_runtime::lock(&fair).release(&key, &user);
            }
            Ok(None) => return,
            Err(_) => rx.close(),
        }
    }
}
