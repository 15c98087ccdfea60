//! A channel's worker: pull its jobs (and its parked jobs) and run them in lanes, one per
//! (user, destination), in order within a lane and concurrently across lanes. Jobs come one
//! message each or many in an envelope (a router silo's jobs of one round); an envelope's jobs
//! go their ways as if they had come alone, and it is acked when all of them are settled.

use crate::Ctx;
use crate::fairness::{Admit, Fairness};
use crate::job::handle;
use crate::permits::Permits;
use async_nats::jetstream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::handed::{self, Handed, Progress};
use tocsin_bus::{Disposition, Inbound};
use tocsin_model::{Channel, DeliveryJob};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

/// A fixed start for the breaker's clock.
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn started() -> &'static std::time::Instant {
    START.get_or_init(std::time::Instant::now)
}

/// The jobs this instance holds (queued or in flight), by the stream sequence of the message
/// they came in (an envelope's jobs share theirs): that message, to keep it alive, and how
/// many of its jobs are held.
#[derive(Default)]
pub(crate) struct HeldJobs {
    messages: HashMap<u64, (jetstream::Message, usize)>,
    jobs: usize,
}

pub(crate) type Held = Arc<std::sync::Mutex<HeldJobs>>;

impl HeldJobs {
    fn hold(&mut self, seq: u64, msg: &jetstream::Message) {
        self.messages
            .entry(seq)
            .or_insert_with(|| (msg.clone(), 0))
            .1 += 1;
        self.jobs += 1;
    }

    fn release(&mut self, seq: u64) {
        if let Some(entry) = self.messages.get_mut(&seq) {
            entry.1 -= 1;
            if entry.1 == 0 {
                self.messages.remove(&seq);
            }
            self.jobs -= 1;
        }
    }
}

/// A job queued in a lane, boxed: a channel's queue is allocated 32 slots at a time, 856
/// bytes each unboxed, and every lane has one (27 KB for a lane that holds one job).
type LaneJob = Box<(Handed, DeliveryJob)>;

pub(crate) struct Lane {
    tx: mpsc::UnboundedSender<LaneJob>,
    join: AbortOnDropHandle<()>,
}

/// One lane per (user, destination): its jobs are sent strictly in order, one at a time; a
/// transient failure is retried in place (the job stays unacked, kept alive with progress
/// acks) so that later jobs for the same destination never overtake it. Different lanes run
/// concurrently, at most `concurrency` sends at once. Which jobs may wait here at all is
/// [`Fairness`]'s decision: the others are parked back in the stream, on the channel's parked
/// subject, whose own consumer feeds them back in as room frees up. At most
/// `delivery.max_ack_pending` jobs are held at once (an envelope carries many): beyond that
/// nothing more is pulled until lanes finish some.
pub(crate) async fn run_channel(
    ctx: Arc<Ctx>,
    channel: Channel,
    consumers: Consumers,
    shutdown: CancellationToken,
) {
    let what = channel.as_str();
    // a batch of envelopes may carry many jobs each: the worker stops pulling when it holds
    // `max_ack_pending` jobs, and what one pull brings in stays this small
    let mut messages = tocsin_bus::Pull::new(consumers.jobs, 64, format!("{what} jobs"));
    let mut parked = tocsin_bus::Pull::new(consumers.parked, 64, format!("{what} parked jobs"));
    let room = Arc::new(Notify::new());
    let mut w = Worker {
        permits: Arc::new(Permits::new(
            ctx.cfg.concurrency,
            ctx.cfg.max_sends_per_user,
        )),
        held: Arc::default(),
        fair: Arc::new(Mutex::new(Fairness::new(ctx.cfg.fairness()))),
        lanes: HashMap::new(),
        parked_again: 0,
        parked_resume: tokio::time::Instant::now(),
        room: room.clone(),
        ctx,
        channel,
    };
    let limit = usize::try_from(w.ctx.cfg.max_ack_pending)
        .unwrap_or(usize::MAX)
        .max(1);
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    // every job held here — queued in a lane or being sent — is kept alive, so JetStream
    // never redelivers it behind our back while it waits its turn
    let ack_wait = Duration::from_secs(w.ctx.bus.config().ack_wait_secs);
    let mut keep_alive =
        tokio::time::interval(ack_wait.mul_f64(0.4).max(Duration::from_millis(100)));
    loop {
        let full = tocsin_runtime::lock(&w.held).jobs >= limit;
        let resume = w.parked_resume;
        let (msg, from_parked) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                w.lanes.retain(|_, l| !l.join.is_finished());
                w.permits.sweep();
                continue;
            }
            _ = keep_alive.tick() => {
                let msgs: Vec<jetstream::Message> = tocsin_runtime::lock(&w.held)
                    .messages
                    .values()
                    .map(|(m, _)| m.clone())
                    .collect();
                for m in msgs {
                    if let Err(e) = m.ack_with(jetstream::AckKind::Progress).await {
                        debug!(error = %e, "cannot extend a job's ack deadline");
                    }
                }
                continue;
            }
            _ = room.notified(), if full => continue,
            m = messages.next(), if !full => (m, false),
            m = parked.next(), if !full && tokio::time::Instant::now() >= resume => (m, true),
            _ = tokio::time::sleep_until(resume), if tokio::time::Instant::now() < resume => continue,
        };
        let seq = msg.message().info().map(|i| i.stream_sequence).unwrap_or(0);
        if tocsin_runtime::lock(&w.held).messages.contains_key(&seq) {
            // a redelivery of a message whose jobs we still hold: they are queued or being
            // sent, and that delivery is settled when they are done
            msg.leave();
            continue;
        }
        if tocsin_bus::envelope::is_envelope(&msg.message().payload) {
            for part in w.split(msg).await {
                w.take(Handed::Part(part), from_parked).await;
            }
        } else {
            w.take(Handed::Own(msg), from_parked).await;
        }
    }
    drop(messages);
    drop(parked);
    let joins = w.lanes.into_values().map(|l| l.join);
    let grace = Duration::from_secs(w.ctx.cfg.shutdown_grace_secs);
    if !tocsin_runtime::finish_within(grace, joins).await {
        warn!(
            channel = channel.as_str(),
            "jobs did not finish within the grace period; they will be redelivered"
        );
    }
}

/// A channel's worker state: its lanes and what they hold.
struct Worker {
    ctx: Arc<Ctx>,
    channel: Channel,
    permits: Arc<Permits>,
    held: Held,
    fair: Arc<Mutex<Fairness>>,
    lanes: HashMap<String, Lane>,
    /// Parked jobs that are parked again (their user still full, their destination still
    /// failing) cycle through the stream: after a batch of them in a row, the parked consumer
    /// pauses a second rather than spin.
    parked_again: usize,
    parked_resume: tokio::time::Instant,
    /// Told when a lane lets a job go (room for more when the worker is full).
    room: Arc<Notify>,
}

impl Worker {
    /// The jobs of an envelope still to do: all of them on its first delivery; on a later one,
    /// those its progress does not list as settled.
    async fn split(&self, msg: Inbound) -> Vec<handed::Part> {
        let records = match tocsin_bus::envelope::records(&msg.message().payload) {
            Ok(r) => r,
            // the rare paths are boxed here and in `take`: their futures would otherwise be
            // part of every envelope's and every job's, and copied with them
            Err(e) => {
                Box::pin(msg.settle(&self.ctx.bus, Disposition::Reject(e.to_string()))).await;
                return Vec::new();
            }
        };
        let subject = msg.message().subject.to_string();
        let (seq, delivered) = msg
            .message()
            .info()
            .map(|i| (i.stream_sequence, i.delivered))
            .unwrap_or((0, 1));
        // delivered before: an earlier holder may have settled some of its jobs
        let done = match delivered > 1 {
            true => Box::pin(self.ctx.progress.earlier(seq)).await,
            false => Vec::new(),
        };
        let records = records
            .into_iter()
            .map(|r| (subject.clone(), r.id, r.payload))
            .collect();
        let progress = Progress {
            log: self.ctx.progress.clone(),
            done,
        };
        handed::split(&self.ctx.bus, msg, records, Some(progress))
            .await
            .unwrap_or_default()
    }

    /// One job: into its lane, or parked, or (unreadable) dead-lettered.
    async fn take(&mut self, msg: Handed, from_parked: bool) {
        let ctx = self.ctx.clone();
        let job: DeliveryJob = match tocsin_bus::decode(msg.payload(), "delivery job") {
            Ok(j) => j,
            Err(e) => {
                Box::pin(msg.settle(&ctx.bus, Disposition::Reject(e.to_string()))).await;
                return;
            }
        };
        let key = format!("{}:{}", job.notification.user, job.destination.id);
        let user = job.notification.user.to_string();
        let verdict =
            tocsin_runtime::lock(&self.fair).admit(&key, &user, from_parked, started().elapsed());
        if let Admit::Park(why) = verdict {
            if from_parked {
                self.parked_again += 1;
                if self.parked_again >= 64 {
                    self.parked_again = 0;
                    self.parked_resume = tokio::time::Instant::now() + Duration::from_secs(1);
                }
            }
            Box::pin(park(&ctx, self.channel, &self.fair, key, msg, &job, &why)).await;
            return;
        }
        if from_parked {
            self.parked_again = 0;
        }
        // a clone of the message it came in, only to extend its ack deadline while it waits
        if let Some(m) = msg.message_to_keep() {
            tocsin_runtime::lock(&self.held).hold(msg.stream_seq(), &m);
        }
        let mut item = Box::new((msg, job));
        loop {
            let lane = self.lanes.entry(key.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let kit = LaneKit {
                    ctx: ctx.clone(),
                    channel: self.channel,
                    permits: self.permits.clone(),
                    held: self.held.clone(),
                    fair: self.fair.clone(),
                    room: self.room.clone(),
                };
                let join = AbortOnDropHandle::new(tokio::spawn(run_lane(kit, rx)));
                Lane { tx, join }
            });
            match lane.tx.send(item) {
                Ok(()) => break,
                Err(mpsc::error::SendError(back)) => {
                    // the lane went idle and is finishing: wait, so one lane never runs twice
                    item = back;
                    if let Some(old) = self.lanes.remove(&key) {
                        let _ = old.join.await;
                    }
                }
            }
        }
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
    msg: Handed,
    job: &DeliveryJob,
    why: &str,
) {
    let seq = msg.stream_seq();
    let subject = ctx.bus.subjects().delivery_parked(channel.as_str());
    let id = tocsin_bus::msg_id::parked(&job.job_id, seq);
    debug!(user = %job.notification.user, destination = %job.destination.id, reason = why, "parking a job");
    let sent = ctx.bus.send(subject, &id, msg.payload().clone()).await;
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

/// What a lane's jobs are handled with.
pub(crate) struct LaneKit {
    ctx: Arc<Ctx>,
    channel: Channel,
    permits: Arc<Permits>,
    held: Held,
    fair: Arc<Mutex<Fairness>>,
    room: Arc<Notify>,
}

impl LaneKit {
    /// Handle one job, then let it go: its hold, its fairness share, room for more.
    async fn one(&self, msg: Handed, job: DeliveryJob) {
        let seq = msg.stream_seq();
        let key = format!("{}:{}", job.notification.user, job.destination.id);
        let user = job.notification.user.to_string();
        let breaker =
            |ok: bool| tocsin_runtime::lock(&self.fair).sent(&key, ok, started().elapsed());
        handle(&self.ctx, self.channel, &self.permits, msg, job, &breaker).await;
        tocsin_runtime::lock(&self.held).release(seq);
        tocsin_runtime::lock(&self.fair).release(&key, &user);
        self.room.notify_one();
    }
}

/// A lane: its jobs one at a time, until it has been idle for a minute.
pub(crate) async fn run_lane(kit: LaneKit, mut rx: mpsc::UnboundedReceiver<LaneJob>) {
    let idle = Duration::from_secs(60);
    loop {
        let (msg, job) = match tokio::time::timeout(idle, rx.recv()).await {
            Ok(Some(item)) => *item,
            Ok(None) => return,
            Err(_) => {
                rx.close();
                continue;
            }
        };
        // boxed: a lane waits idle between its jobs, and its task is as large as its largest
        // state, which would otherwise be a job's (9.6 KB against 0.3 KB idle; a fan-out to
        // 100,000 destinations leaves that many lanes for their idle minute)
        Box::pin(kit.one(msg, job)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future a function of two arguments returns.
    fn future_size<A, B, F: std::future::Future>(_: impl FnOnce(A, B) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_lane_holds_no_jobs_state() {
        // every lane's task is this large for its idle minute, whatever it sent: 9.6 KB when
        // a job's send was part of it (with 27 KB of queue), 0.3 KB now
        let lane = future_size(run_lane);
        assert!(lane <= 512, "a lane's task is {lane} bytes");
        // the queue is allocated 32 slots at a time: a slot is a pointer
        assert_eq!(std::mem::size_of::<LaneJob>(), 8);
    }
}
