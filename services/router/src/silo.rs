//! Serving one silo: pull its stream and hand each message — or each record of an envelope —
//! to its user's avatar (spawned on the first message, gone when idle), then at the end return
//! what was pulled but not handled.

use crate::Ctx;
use crate::actor::Avatar;
use crate::handed::{self, Handed};
use crate::timers;
use async_nats::jetstream::{self};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{BusError, Disposition, StreamKind, envelope};
use tocsin_model::UserId;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{Instrument, debug, info_span, warn};

/// Messages travel to an avatar boxed: a channel allocates its slots 32 at a time, and 32
/// unboxed messages (408 bytes each) would cost every active avatar 13 KB.
pub(crate) struct AvatarHandle {
    tx: mpsc::Sender<Box<Handed>>,
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
    let mut avatars: HashMap<UserId, AvatarHandle> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                avatars.retain(|_, h| !h.join.is_finished());
                metrics::gauge!(crate::telemetry::ACTIVE_AVATARS, "silo" => silo.to_string())
                    .set(avatars.len() as f64);
            }
            msg = messages.next() => dispatch(&ctx, silo, &outbox, &mut avatars, msg).await,
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
    let joins = avatars.into_values().map(|h| h.join);
    let grace = Duration::from_secs(ctx.cfg.shutdown_grace_secs);
    if !tocsin_runtime::finish_within(grace, joins).await {
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
    outbox: &tocsin_bus::Outbox,
    avatars: &mut HashMap<UserId, AvatarHandle>,
    msg: tocsin_bus::Inbound,
) {
    let addressed = ctx
        .bus
        .subjects()
        .user_of_silo_subject(&msg.message().subject);
    if addressed == Some(envelope::TOKEN) {
        return dispatch_envelope(ctx, silo, outbox, avatars, msg).await;
    }
    let Some(user) = addressed.and_then(|u| UserId::parse(u).ok()) else {
        let reason = format!("subject {} names no valid user", msg.message().subject);
        msg.settle(&ctx.bus, Disposition::Reject(reason)).await;
        return;
    };
    hand(ctx, silo, outbox, avatars, user, Handed::Own(msg)).await;
}

/// Hand each record of an envelope to its user's avatar, in order. A record that names no
/// user of this silo is dead-lettered alone; a damaged envelope is dead-lettered whole.
async fn dispatch_envelope(
    ctx: &Arc<Ctx>,
    silo: u32,
    outbox: &tocsin_bus::Outbox,
    avatars: &mut HashMap<UserId, AvatarHandle>,
    msg: tocsin_bus::Inbound,
) {
    let kind = msg
        .message()
        .subject
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let records = match envelope::records(&msg.message().payload) {
        Ok(r) => r,
        Err(e) => {
            msg.settle(&ctx.bus, Disposition::Reject(e.to_string()))
                .await;
            return;
        }
    };
    // each record as the message it would have been on its own
    let subjects = ctx.bus.subjects();
    let records: Vec<_> = records
        .into_iter()
        .map(|r| {
            let user = envelope::addressee(&r.id)
                .map(|(u, _)| u)
                .filter(|u| UserId::parse(u).is_ok())
                .unwrap_or("-");
            (subjects.silo(silo, user, &kind), r.id, r.payload)
        })
        .collect();
    preload(ctx, silo, outbox, avatars, &records).await;
    let Some(parts) = handed::split(&ctx.bus, msg, records).await else {
        return;
    };
    for part in parts {
        let part = Handed::Part(part);
        let user = subjects
            .user_of_silo_subject(part.subject())
            .and_then(|u| UserId::parse(u).ok())
            .filter(|u| ctx.bus.silo_of(u) == silo);
        match user {
            Some(user) => hand(ctx, silo, outbox, avatars, user, part).await,
            None => {
                let reason = format!(
                    "record {} of an envelope names no user of silo {silo}",
                    part.subject()
                );
                part.settle(&ctx.bus, Disposition::Reject(reason)).await;
            }
        }
    }
}

/// Activate the avatars of an envelope's records that are not active with their records read
/// in one batched request, rather than one request per avatar as each would on its own. What
/// cannot be read that way (an error, a record that does not decode) is left to the avatar.
async fn preload(
    ctx: &Arc<Ctx>,
    silo: u32,
    outbox: &tocsin_bus::Outbox,
    avatars: &mut HashMap<UserId, AvatarHandle>,
    records: &[(String, String, bytes::Bytes)],
) {
    let subjects = ctx.bus.subjects();
    let mut users: Vec<UserId> = records
        .iter()
        .filter_map(|(subject, _, _)| subjects.user_of_silo_subject(subject))
        .filter_map(|u| UserId::parse(u).ok())
        .filter(|u| !avatars.contains_key(u) && ctx.bus.silo_of(u) == silo)
        .collect();
    users.sort_unstable();
    users.dedup();
    if users.is_empty() {
        return;
    }
    let keys: Vec<&str> = users.iter().map(UserId::as_str).collect();
    let latest = match ctx.bus.kv_latest(&ctx.kv, &keys, PRELOAD_TIMEOUT).await {
        Ok(l) => l,
        Err(e) => {
            debug!(silo, error = %e, "cannot read the avatars' records in one request; each reads its own");
            return;
        }
    };
    let mut found: HashMap<String, tocsin_bus::Latest> =
        latest.into_iter().map(|l| (l.key.clone(), l)).collect();
    for user in &users {
        let loaded = match found.remove(user.as_str()) {
            None => Loaded {
                record: None,
                revision: 0,
            },
            Some(l) => match l.value {
                None => Loaded {
                    record: None,
                    revision: l.revision,
                },
                Some(bytes) => match tocsin_bus::decode(&bytes, "user record") {
                    Ok(r) => Loaded {
                        record: Some(r),
                        revision: l.revision,
                    },
                    Err(_) => continue,
                },
            },
        };
        let handle = spawn_avatar(
            ctx.clone(),
            silo,
            outbox.clone(),
            user.clone(),
            Some(loaded),
        );
        avatars.insert(user.clone(), handle);
    }
}

/// A user's record as read for an avatar before it starts (None: no such user).
pub(crate) struct Loaded {
    pub(crate) record: Option<tocsin_model::UserRecord>,
    pub(crate) revision: u64,
}

/// How long a batched read of avatars' records may take before they read their own.
const PRELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Hand `msg` to `user`'s avatar, activating it if it is not active.
async fn hand(
    ctx: &Arc<Ctx>,
    silo: u32,
    outbox: &tocsin_bus::Outbox,
    avatars: &mut HashMap<UserId, AvatarHandle>,
    user: UserId,
    msg: Handed,
) {
    let mut msg = msg;
    loop {
        let handle = avatars
            .entry(user.clone())
            .or_insert_with(|| spawn_avatar(ctx.clone(), silo, outbox.clone(), user.clone(), None));
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

/// Start `user`'s avatar, with its record if it was read already.
fn spawn_avatar(
    ctx: Arc<Ctx>,
    silo: u32,
    outbox: tocsin_bus::Outbox,
    user: UserId,
    loaded: Option<Loaded>,
) -> AvatarHandle {
    let (tx, rx) = mpsc::channel(ctx.cfg.avatar_queue);
    let span = info_span!("avatar", user = %user, silo);
    let join = tokio::spawn(
        Box::new(Avatar {
            ctx,
            user,
            loaded: loaded.is_some(),
            revision: loaded.as_ref().map_or(0, |l| l.revision),
            record: loaded.and_then(|l| l.record),
            dirty: false,
            pending: Vec::new(),
            outgoing: Vec::new(),
            outbox,
            replies: Vec::new(),
            index: Vec::new(),
            silo,
            hold_until: None,
            pending_since: None,
        })
        .run(rx)
        .instrument(span),
    );
    let join = AbortOnDropHandle::new(join);
    metrics::counter!(crate::telemetry::AVATAR_ACTIVATIONS).increment(1);
    AvatarHandle { tx, join }
}
