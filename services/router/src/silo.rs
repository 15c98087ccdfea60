//! Serving one silo: pull its stream and hand each message to its user's avatar (spawned on
//! the first message, gone when idle; envelopes of many users' messages are in `bulk.rs`),
//! then at the end return what was pulled but not handled.

use crate::Ctx;
use crate::actor::Avatar;
use crate::timers;
use async_nats::jetstream::{self};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Handed;
use tocsin_bus::{BusError, Disposition, StreamKind, envelope};
use tocsin_model::UserId;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info_span, warn};

/// Messages travel to an avatar boxed: a mailbox keeps the room a burst needed (up to
/// [`crate::mailbox`]'s `KEPT` slots), and unboxed messages are 408 bytes each.
pub(crate) struct AvatarHandle {
    tx: crate::mailbox::Sender<Box<Handed>>,
    /// Aborted when dropped: a silo worker that is itself dropped takes its avatars along.
    join: AbortOnDropHandle<()>,
}

/// Serve one silo until `stop` (shutdown, or the lease lost): its avatars and its timers.
pub(crate) async fn serve_silo(ctx: Arc<Ctx>, silo: u32, stop: CancellationToken) {
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
    // the avatars' outputs leave in rounds through one outbox per silo; it outlives them
    // (their handles are dropped before it) and goes with this worker
    let (outbox, _outbox_task) = tocsin_bus::Outbox::spawn(ctx.bus.clone(), format!("silo {silo}"));
    let mut worker = Worker {
        ctx,
        silo,
        outbox,
        avatars: HashMap::new(),
    };
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                worker.avatars.retain(|_, h| !h.join.is_finished());
                metrics::gauge!(crate::telemetry::ACTIVE_AVATARS, "silo" => silo.to_string())
                    .set(worker.avatars.len() as f64);
            }
            msg = messages.next() => worker.dispatch(msg).await,
        }
    }
    // stop pulling. What was pulled but not handed to an avatar goes back at once (nak), so
    // the silo's next holder gets it before anything newer instead of after `ack_wait`.
    let unhandled = messages.stop(256, Duration::from_millis(20)).await;
    let returned = unhandled.len();
    for msg in unhandled {
        msg.give_back().await;
    }
    if returned > 0 {
        debug!(silo, returned, "returned messages pulled but not handled");
    }
    // dropping the senders lets each avatar finish its queue, save and ack
    let joins = worker.avatars.into_values().map(|h| h.join);
    let grace = Duration::from_secs(worker.ctx.cfg.shutdown_grace_secs);
    if !tocsin_runtime::finish_within(grace, joins).await {
        warn!(
            silo,
            "avatars did not finish within the grace period; their messages will be redelivered"
        );
    }
    Ok(())
}

/// One silo's worker: its avatars, and the outbox their outputs leave through.
pub(crate) struct Worker {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) silo: u32,
    pub(crate) outbox: tocsin_bus::Outbox,
    pub(crate) avatars: HashMap<UserId, AvatarHandle>,
}

/// A user's record as read from the `avatars` bucket, not yet decoded: its bytes (None: the
/// key was deleted or never written) and its revision (0: never written).
pub(crate) struct Loaded {
    pub(crate) value: Option<bytes::Bytes>,
    pub(crate) revision: u64,
    /// The user's base of recent keys (ADR 0033), if it was read with the record: its bytes
    /// (None: no entry) and revision. None: not read; the avatar reads it if the record names
    /// one.
    pub(crate) base: Option<(Option<bytes::Bytes>, u64)>,
}

impl Worker {
    async fn dispatch(&mut self, msg: tocsin_bus::Inbound) {
        let addressed = self
            .ctx
            .bus
            .subjects()
            .user_of_silo_subject(&msg.message().subject);
        if addressed == Some(envelope::TOKEN) {
            return self.dispatch_envelope(msg).await;
        }
        let Some(user) = addressed.and_then(|u| UserId::parse(u).ok()) else {
            let reason = format!("subject {} names no valid user", msg.message().subject);
            msg.settle(&self.ctx.bus, Disposition::Reject(reason)).await;
            return;
        };
        self.hand(user, Handed::Own(msg)).await;
    }

    /// Hand `msg` to `user`'s avatar, activating it if it is not active.
    pub(crate) async fn hand(&mut self, user: UserId, msg: Handed) {
        let Worker {
            ctx,
            silo,
            outbox,
            avatars,
        } = self;
        let mut msg = msg;
        loop {
            let handle = avatars
                .entry(user.clone())
                .or_insert_with(|| spawn_avatar(ctx, *silo, outbox, user.clone(), None));
            match handle.tx.send(Box::new(msg)).await {
                Ok(()) => return,
                Err(back) => {
                    // the avatar went idle and is finishing; wait so two never run for one user
                    msg = *back;
                    if let Some(old) = avatars.remove(&user) {
                        let _ = old.join.await;
                    }
                }
            }
        }
    }
}

/// Start `user`'s avatar in `silo`, with its record if it was read already (decoded by the
/// avatar's own task, not the silo's).
pub(crate) fn spawn_avatar(
    ctx: &Arc<Ctx>,
    silo: u32,
    outbox: &tocsin_bus::Outbox,
    user: UserId,
    loaded: Option<Loaded>,
) -> AvatarHandle {
    let (tx, rx) = crate::mailbox::mailbox(ctx.cfg.avatar_queue);
    let span = info_span!("avatar", user = %user, silo);
    let mut avatar = Box::new(Avatar {
        ctx: ctx.clone(),
        user,
        record: None,
        revision: 0,
        loaded: false,
        dirty: false,
        pending: Vec::new(),
        outgoing: Vec::new(),
        outbox: outbox.clone(),
        replies: Vec::new(),
        index: Vec::new(),
        silo,
        hold_until: None,
        pending_since: None,
    });
    // boxed: what a task captures stays in its state for as long as it runs, and a record
    // read with its base is 88 bytes every active avatar would carry
    let loaded = loaded.map(Box::new);
    let task = async move {
        // a record that does not decode is left to the avatar's own load, which reports it
        if let Some(l) = loaded {
            let _ = Box::pin(avatar.adopt(*l)).await;
        }
        avatar.run(rx).await
    };
    let join = AbortOnDropHandle::new(tokio::spawn(task.instrument(span)));
    metrics::counter!(crate::telemetry::AVATAR_ACTIVATIONS).increment(1);
    AvatarHandle { tx, join }
}
