//! The actor behind an avatar: one task per active user that handles the user's messages in
//! order with the pure decisions, hands each batch's outputs to its silo's outbox at once, and
//! checkpoints — address index, timer, the record with a revision check, then the acks of
//! every message handled since the last checkpoint — when a command waits for its reply, the
//! index or timer changed, `checkpoint_messages` are handled, or the oldest unacked message
//! is `checkpoint_ms` old. Until then the silo stream is the log: a crash replays what was
//! handled since the checkpoint, and its outputs come again with the same ids (ADR 0016).

use crate::silo::Loaded;
use crate::{Ctx, decide, outputs, timers};
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Handed;
use tocsin_bus::{BusError, Disposition};
use tocsin_model::{AvatarMessage, UserId, UserRecord, now_ms};
use tracing::{Instrument, debug, debug_span, warn};

pub(crate) struct Avatar {
    pub(crate) ctx: Arc<Ctx>,
    pub(crate) user: UserId,
    pub(crate) record: Option<UserRecord>,
    /// KV revision of `record` (0: no entry).
    pub(crate) revision: u64,
    pub(crate) loaded: bool,
    pub(crate) dirty: bool,
    /// Handled but not yet acked: kept in the boxes they came in. A `Handed` is 408 bytes and
    /// a vector's first room is for four, so unboxed, an avatar waiting for its checkpoint with
    /// one message held 1.6 KB (measured with heaptrack: a third of an active avatar).
    #[allow(
        clippy::vec_box,
        reason = "a Handed is 408 bytes; a vector's room is for four"
    )]
    pub(crate) pending: Vec<Box<Handed>>,
    /// The outputs of the messages handled so far, for the silo's outbox.
    pub(crate) outgoing: Vec<tocsin_bus::Outgoing>,
    pub(crate) outbox: tocsin_bus::Outbox,
    pub(crate) replies: Vec<(String, bytes::Bytes)>,
    /// Address index changes to write before the batch is acked.
    pub(crate) index: Vec<(String, Option<tocsin_model::AddressEntry>)>,
    pub(crate) silo: u32,
    /// After a failed batch: until when new messages are given back rather than handled.
    pub(crate) hold_until: Option<tokio::time::Instant>,
    /// When the oldest message in `pending` was handled.
    pub(crate) pending_since: Option<tokio::time::Instant>,
}

impl Avatar {
    /// The avatar's task. `self` comes boxed: an `async fn` keeps its arguments in its state
    /// twice (as passed and as bound), and an avatar's state is most of what an idle avatar
    /// costs.
    pub(crate) async fn run(mut self: Box<Self>, mut rx: crate::mailbox::Receiver<Box<Handed>>) {
        let idle = Duration::from_secs(self.ctx.cfg.avatar_idle_secs);
        let every = Duration::from_millis(self.ctx.cfg.checkpoint_ms);
        loop {
            // wait for the next message, or until the pending checkpoint is due
            let wait = match self.pending_since {
                Some(since) => {
                    (since + every).saturating_duration_since(tokio::time::Instant::now())
                }
                None => idle,
            };
            let msg = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(_) if self.pending_since.is_some() => {
                    Box::pin(self.flush()).await;
                    continue;
                }
                Err(_) => {
                    // evict: refuse new messages, finish the ones already queued
                    rx.close();
                    continue;
                }
            };
            // boxed: an idle avatar's task then holds only this loop's state, not the
            // (large) state of handling and flushing
            // at debug level: a span costs its formatting and registry entry even when nothing
            // is logged in it (3 % of a burst's CPU as an info span); the warnings below carry
            // what they need themselves, inside the avatar's span (user, silo)
            let span = debug_span!(
                "message",
                subject = %msg.subject(),
                kind = tracing::field::Empty,
                notification = tracing::field::Empty,
            );
            Box::pin(self.handle(msg).instrument(span)).await;
            if !self.pending.is_empty() && self.pending_since.is_none() {
                self.pending_since = Some(tokio::time::Instant::now());
            }
            if rx.is_empty() || self.outgoing.len() >= self.ctx.cfg.batch {
                if self.must_checkpoint(every) {
                    Box::pin(self.flush()).await;
                } else {
                    Box::pin(self.publish()).await;
                }
            }
        }
        Box::pin(self.flush()).await;
        debug!("avatar evicted");
    }

    async fn handle(&mut self, msg: Box<Handed>) {
        if let Some(until) = self.hold_until {
            let now = tokio::time::Instant::now();
            if now < until {
                // an earlier batch was given back: this message must not overtake it
                let wait = until - now + Duration::from_millis(50);
                Box::pin(msg.settle(&self.ctx.bus, Disposition::Retry(wait))).await;
                return;
            }
            self.hold_until = None;
        }
        if msg.exhausted(&self.ctx.bus) {
            // it has failed on every delivery: do not let it block this user any longer
            Box::pin(self.flush()).await;
            let reason = "handling failed on every delivery".to_owned();
            Box::pin(msg.settle(&self.ctx.bus, Disposition::Reject(reason))).await;
            return;
        }
        let parsed = match tocsin_bus::decode_with(
            msg.payload(),
            "avatar message",
            AvatarMessage::from_json,
        ) {
            Ok(m) => m,
            Err(e) => {
                Box::pin(self.flush()).await;
                Box::pin(msg.settle(&self.ctx.bus, Disposition::Reject(e.to_string()))).await;
                return;
            }
        };
        if !self.loaded
            && let Err(e) = Box::pin(self.load()).await
        {
            warn!(subject = %msg.subject(), error = %e, "cannot load the user's record; will retry");
            self.pending.push(msg);
            Box::pin(self.fail(Duration::from_secs(1))).await;
            return;
        }
        let kind = parsed.kind();
        // the message span exists at debug level only; otherwise the current span is the
        // avatar's, and looking it up per message would be work for nothing
        if tracing::level_enabled!(tracing::Level::DEBUG) {
            let span = tracing::Span::current();
            span.record("kind", kind);
            if let Some(id) = notification_of(&parsed) {
                span.record("notification", id.as_str());
            }
        }
        let cmd_id = match &parsed {
            AvatarMessage::Command { command_id, .. } => command_id.clone(),
            _ => String::new(),
        };
        let Some(mut fx) = Box::pin(self.decide(parsed, &msg)).await else {
            self.pending.push(msg);
            Box::pin(self.fail(Duration::from_secs(1))).await;
            return;
        };
        metrics::counter!(crate::telemetry::MESSAGES, "kind" => kind, "outcome" => fx.outcome.as_str())
            .increment(1);
        if fx.outcome == decide::Outcome::NoUser {
            debug!(subject = %msg.subject(), "message for a user that does not exist; dropped");
        }
        self.dirty |= fx.dirty;
        let silo = self.ctx.bus.silo_of(&self.user);
        let sent = outputs::outputs(&mut fx, &self.user, silo, self.ctx.bus.subjects(), &cmd_id)
            .map(|out| self.outgoing.extend(out));
        if let Err(e) = sent {
            warn!(subject = %msg.subject(), error = %e, "cannot encode a routed output; will retry");
            self.pending.push(msg);
            Box::pin(self.fail(Duration::from_secs(1))).await;
            return;
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
        let (value, revision) = stored(entry);
        Box::pin(self.adopt(Loaded {
            value,
            revision,
            base: None,
        }))
        .await
    }

    /// Take the record as read (by [`Avatar::load`] or in a batch for many avatars), with its
    /// base of recent keys merged in: read with it, or read here if the record names one.
    pub(crate) async fn adopt(&mut self, read: Loaded) -> Result<(), BusError> {
        let mut record: Option<UserRecord> = match &read.value {
            Some(bytes) => Some(tocsin_bus::decode(bytes, "user record")?),
            None => None,
        };
        if let Some(rec) = &mut record {
            let base = match read.base {
                Some(base) => Some(base),
                None if rec.recent.base_wanted() => Some(Box::pin(self.read_base()).await?),
                None => None,
            };
            if let Some((value, revision)) = base {
                merge_base(rec, value.as_deref(), revision);
            }
        }
        self.record = record;
        self.revision = read.revision;
        self.loaded = true;
        Ok(())
    }

    /// The decision on `parsed`, the message `msg` carries. While the record's base of recent
    /// keys is not merged (ADR 0033), the decision is taken without it when its filter rules
    /// out every key the decision looks at; when it does not, the decision is undone, the base
    /// read and merged, and the message decided on again. None if the base cannot be read.
    async fn decide(&mut self, parsed: AvatarMessage, msg: &Handed) -> Option<decide::Effects> {
        let now = now_ms();
        let Some(rec) = self.record.as_ref().filter(|r| r.recent.needs_base()) else {
            return Some(self.apply(parsed, now));
        };
        if rec.recent.base_wanted() {
            Box::pin(self.read_and_merge_base(msg)).await?;
            return Some(self.apply(parsed, now));
        }
        let before = self.record.clone();
        let fx = self.apply(parsed, now);
        if !self.record.as_ref().is_some_and(|r| r.recent.took_unsure()) {
            return Some(fx);
        }
        self.record = before;
        Box::pin(self.read_and_merge_base(msg)).await?;
        // it was decoded before, so it decodes again
        let parsed =
            tocsin_bus::decode_with(msg.payload(), "avatar message", AvatarMessage::from_json)
                .ok()?;
        Some(self.apply(parsed, now))
    }

    /// Read the user's base of recent keys and merge it into the record; None (and said) if
    /// it cannot be read.
    async fn read_and_merge_base(&mut self, msg: &Handed) -> Option<()> {
        match Box::pin(self.read_base()).await {
            Ok((value, revision)) => {
                if let Some(rec) = &mut self.record {
                    merge_base(rec, value.as_deref(), revision);
                }
                Some(())
            }
            Err(e) => {
                warn!(subject = %msg.subject(), error = %e, "cannot read the user's base of recent keys; will retry");
                None
            }
        }
    }

    fn apply(&mut self, parsed: AvatarMessage, now: tocsin_model::Millis) -> decide::Effects {
        decide::apply(&self.user, &mut self.record, parsed, &self.ctx.limits, now)
    }

    /// The user's base of recent keys: its bytes (None: no entry) and revision.
    async fn read_base(&self) -> Result<(Option<bytes::Bytes>, u64), BusError> {
        let entry = self
            .ctx
            .seen
            .entry(self.user.as_str())
            .await
            .map_err(|e| BusError::Kv {
                bucket: "seen".into(),
                key: self.user.to_string(),
                message: e.to_string(),
            })?;
        Ok(stored(entry))
    }

    /// Once the record carries more than [`tocsin_model::RecentSet::SPILL`] changes to its
    /// recent keys, write them all as the user's new base (ADR 0033). Called right after the
    /// record's revision-checked write, which fences it; if it fails, the change stays in the
    /// record until the next checkpoint.
    async fn write_base(&mut self) {
        let ctx = self.ctx.clone();
        let Some(rec) = &mut self.record else {
            return;
        };
        let value = bytes::Bytes::from(rec.recent.base_bytes());
        let key = self.user.as_str();
        let written = match rec.recent.base_revision() {
            0 => Box::pin(ctx.seen.put(key, value))
                .await
                .map_err(|e| e.to_string()),
            revision => Box::pin(ctx.seen.update(key, value, revision))
                .await
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(revision) => rec.recent.rebased(revision),
            Err(e) => warn!(
                error = %e,
                changes = rec.recent.changes(),
                "cannot write the user's base of recent keys; the record keeps the change and the next checkpoint tries again"
            ),
        }
    }

    fn kv_err(&self, e: impl std::fmt::Display) -> BusError {
        BusError::Kv {
            bucket: "avatars".into(),
            key: self.user.to_string(),
            message: e.to_string(),
        }
    }

    /// Whether what was handled must be made durable now rather than at a later checkpoint:
    /// a command waits for its reply, the address index or the escalation timer changes (other
    /// services read them), enough messages wait for their acks, or the oldest has waited long
    /// enough.
    fn must_checkpoint(&self, every: Duration) -> bool {
        !self.replies.is_empty()
            || !self.index.is_empty()
            || self.pending.len() >= self.ctx.cfg.checkpoint_messages
            || self.pending_since.is_some_and(|t| t.elapsed() >= every)
            || self
                .record
                .as_ref()
                .is_some_and(|r| r.reach.earliest_due() != r.reach.timer_due_ms)
    }

    /// Send the outputs handled so far through the silo's outbox and wait until they are
    /// durable; false (and everything given back) if they are not.
    async fn publish(&mut self) -> bool {
        if self.outgoing.is_empty() {
            return true;
        }
        let receipt = self.outbox.submit(std::mem::take(&mut self.outgoing));
        if let Err(e) = receipt.await {
            warn!(error = %e, "a routed output was not acknowledged by the bus; will retry");
            Box::pin(self.fail(Duration::from_secs(1))).await;
            return false;
        }
        true
    }

    /// Make everything handled so far durable (a checkpoint), then ack it and send the
    /// replies.
    async fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if !self.publish().await {
            return;
        }
        if !self.index.is_empty() && !Box::pin(self.write_index()).await {
            return;
        }
        // the timer is written before the record, so a crash between the two leaves an extra
        // wake-up (harmless: nothing is due) rather than an escalation nobody wakes
        let timer_key = timers::key(self.silo, &self.user);
        if self.dirty && self.record.is_none() && self.revision != 0 {
            // the user was deleted: everything their deletion caused is out (history's
            // forget, unsubscriptions, index deletes), now their timer and record go, leaving
            // no value behind (purge)
            let ctx = self.ctx.clone();
            for (bucket, key) in [
                (&ctx.timers, timer_key.clone()),
                (&ctx.seen, self.user.to_string()),
                (&ctx.kv, self.user.to_string()),
            ] {
                if let Err(e) = Box::pin(bucket.purge(key)).await {
                    warn!(error = %e, "cannot delete a deleted user's record or timer; will retry");
                    Box::pin(self.fail(Duration::from_secs(1))).await;
                    return;
                }
            }
            self.revision = 0;
            self.dirty = false;
        }
        let mut clear_timer = false;
        if let Some(rec) = &mut self.record {
            let due = rec.reach.earliest_due();
            if due != rec.reach.timer_due_ms {
                if let Some(t) = due
                    && let Err(e) =
                        Box::pin(self.ctx.timers.put(&timer_key, t.to_string().into())).await
                {
                    warn!(error = %e, "cannot set the escalation timer; will retry");
                    Box::pin(self.fail(Duration::from_secs(1))).await;
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
            // the write's state boxed, as every large await here: a fan-out's avatars all
            // hold their checkpoint's future at once, so it is kept small; and only so many
            // encode and write at once (the permit is held until the server answers)
            let ctx = self.ctx.clone();
            let _permit = ctx.writes.acquire().await.ok();
            let saved = match tocsin_bus::encode(rec) {
                Ok(bytes) if self.revision == 0 => {
                    Box::pin(self.ctx.kv.create(self.user.as_str(), bytes))
                        .await
                        .map_err(|e| self.kv_err(e))
                }
                Ok(bytes) => Box::pin(self.ctx.kv.update(self.user.as_str(), bytes, self.revision))
                    .await
                    .map_err(|e| self.kv_err(e)),
                Err(e) => Err(e),
            };
            match saved {
                Ok(rev) => {
                    self.revision = rev;
                    self.dirty = false;
                    if rec.recent.wants_base() {
                        Box::pin(self.write_base()).await;
                    }
                }
                Err(e) => {
                    // most likely another router wrote this user (silos moving): reload
                    warn!(error = %e, "cannot save the user's record; reloading and retrying");
                    Box::pin(self.fail(Duration::from_secs(1))).await;
                    return;
                }
            }
        }
        if clear_timer && let Err(e) = Box::pin(self.ctx.timers.delete(&timer_key)).await {
            // the scheduler wakes the avatar once more and finds nothing due
            debug!(error = %e, "cannot clear the escalation timer");
        }
        // taken, not drained: an idle avatar keeps no room for messages it no longer holds
        Box::pin(settle_all(
            &self.ctx.bus,
            std::mem::take(&mut self.pending),
            Disposition::Ack,
        ))
        .await;
        self.pending_since = None;
        for (to, payload) in std::mem::take(&mut self.replies) {
            if let Err(e) = Box::pin(self.ctx.bus.client().publish(to, payload)).await {
                debug!(error = %e, "could not send a command reply");
            }
        }
    }

    /// Write the address index's changes (rare: a destination added, confirmed or removed);
    /// false (and everything given back) if one cannot be written.
    async fn write_index(&mut self) -> bool {
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
                // only this user's entry: another user may have taken the address over from
                // an unconfirmed holder
                None => match self.ctx.addresses.get(&key).await {
                    Ok(Some(b))
                        if serde_json::from_slice::<tocsin_model::AddressEntry>(&b)
                            .is_ok_and(|e| e.user != self.user) =>
                    {
                        Ok(())
                    }
                    Ok(_) => self
                        .ctx
                        .addresses
                        .delete(&key)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                },
            };
            if let Err(e) = written {
                warn!(key, error = %e, "cannot update the address index; will retry");
                Box::pin(self.fail(Duration::from_secs(1))).await;
                return false;
            }
        }
        true
    }

    /// Give back everything not yet durable: nak it for redelivery and forget the in-memory
    /// state so the next message reloads it.
    async fn fail(&mut self, after: Duration) {
        self.outgoing = Vec::new();
        self.replies = Vec::new();
        self.index = Vec::new();
        let mut longest = after;
        self.pending_since = None;
        for msg in std::mem::take(&mut self.pending) {
            let delivered = msg.delivered();
            longest = longest.max(tocsin_bus::backoff(delivered, after));
            msg.settle(&self.ctx.bus, Disposition::Retry(after)).await;
        }
        // messages for this user already on their way are given back too until the batch is
        // redelivered, so that the user's messages keep their order
        self.hold_until = Some(tokio::time::Instant::now() + longest);
        self.loaded = false;
        self.dirty = false;
        self.record = None;
    }
}

/// Settle each of `msgs` alike, in order. Its own future, boxed where it is awaited: the state
/// of a settle (an ack on its way) would otherwise be part of every checkpoint's future, which
/// a fan-out's avatars all hold at once while their records are written.
#[allow(
    clippy::vec_box,
    reason = "the avatar's pending messages, boxed as they came"
)]
async fn settle_all(bus: &tocsin_bus::Bus, msgs: Vec<Box<Handed>>, disposition: Disposition) {
    for msg in msgs {
        msg.settle(bus, disposition.clone()).await;
    }
}

/// A KV entry as read: its value (None: deleted or never written) and revision (0: never
/// written).
fn stored(entry: Option<kv::Entry>) -> (Option<bytes::Bytes>, u64) {
    match entry {
        Some(e) => (
            (e.operation == kv::Operation::Put).then_some(e.value),
            e.revision,
        ),
        None => (None, 0),
    }
}

/// Merge the base read for `rec` into its recent keys. A damaged or lost base costs only the
/// keys it held: the avatar goes on with those in the record, and says so.
fn merge_base(rec: &mut UserRecord, value: Option<&[u8]>, revision: u64) {
    let named = rec.recent.base_revision();
    if value.is_none() && named != 0 {
        warn!(
            base = named,
            "the user's base of recent keys is gone; going on with the keys in the record (a notification seen before may be routed again)"
        );
    }
    if let Err(e) = rec.recent.adopt_base(value.map(|v| (v, revision))) {
        warn!(error = %e, "the user's base of recent keys does not read; going on with the keys in the record (a notification seen before may be routed again)");
        let _ = rec.recent.adopt_base(None);
    }
}

/// The notification a message is about, for its span.
fn notification_of(msg: &AvatarMessage) -> Option<&tocsin_model::NotificationId> {
    match msg {
        AvatarMessage::Notify { notification } => Some(&notification.id),
        AvatarMessage::Outcome { outcome } => Some(&outcome.notification_id),
        AvatarMessage::Ack {
            notification_id, ..
        } => Some(notification_id),
        _ => None,
    }
}
