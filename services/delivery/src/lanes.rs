//! A channel's worker: pull its jobs and run them in lanes, one per (user, destination), in
//! order within a lane and concurrently across lanes.

use crate::Ctx;
use crate::job::handle;
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Disposition;
use tocsin_bus::Inbound;
use tocsin_model::{Channel, DeliveryJob};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

/// The jobs this instance holds (queued or in flight), by stream sequence.
pub(crate) type Held = Arc<std::sync::Mutex<HashMap<u64, jetstream::Message>>>;

pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<(Inbound, DeliveryJob)>,
    join: AbortOnDropHandle<()>,
}

/// One lane per (user, destination): its jobs are sent strictly in order, one at a time; a
/// transient failure is retried in place (the job stays unacked, kept alive with progress
/// acks) so that later jobs for the same destination never overtake it. Different lanes run
/// concurrently, at most `concurrency` sends at once.
pub(crate) async fn run_channel(
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
        let job: DeliveryJob = match tocsin_bus::decode(&msg.message().payload, "delivery job") {
            Ok(j) => j,
            Err(e) => {
                msg.settle(&ctx.bus, Disposition::Reject(e.to_string()))
                    .await;
                continue;
            }
        };
        let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
        let redelivered = {
            let mut h = held.lock().expect("held lock");
            let redelivered = h.contains_key(&seq);
            if !redelivered {
                // a clone of the message, only to extend its ack deadline while it waits
                h.insert(seq, msg.message().clone());
            }
            redelivered
        };
        if redelivered {
            // a redelivery of a job we still hold: it is already queued or being sent, and
            // that delivery is settled when it is done
            msg.leave();
            continue;
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
    let joins = lanes.into_values().map(|l| l.join);
    let grace = Duration::from_secs(ctx.cfg.shutdown_grace_secs);
    if !tocsin_runtime::finish_within(grace, joins).await {
        warn!(
            channel = channel.as_str(),
            "jobs did not finish within the grace period; they will be redelivered"
        );
    }
}

pub(crate) async fn run_lane(
    ctx: Arc<Ctx>,
    channel: Channel,
    permits: Arc<Semaphore>,
    held: Held,
    mut rx: mpsc::UnboundedReceiver<(Inbound, DeliveryJob)>,
) {
    let idle = Duration::from_secs(60);
    loop {
        match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some((msg, job))) => {
                let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
                handle(&ctx, channel, &permits, msg, job).await;
                held.lock().expect("held lock").remove(&seq);
            }
            Ok(None) => return,
            Err(_) => rx.close(),
        }
    }
}
