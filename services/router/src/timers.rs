//! Durable escalation timers.
//!
//! An avatar with escalations pending (or heartbeats to watch) writes the earliest due time to the `timers` bucket
//! under `s<silo>.<user>` (before it saves its record, so no escalation is ever left without a
//! wake-up). For each silo it owns, the router watches that silo's keys — the bucket's current
//! contents first, then every change — and holds one entry per user in memory. When an entry
//! comes due it publishes a `tick` into the user's silo stream (the ticks of many users due at
//! once in the silo's envelopes, published together); the avatar handles it in order with
//! everything else, fires the due steps and rewrites (or deletes) its key.
//!
//! Nothing is lost in a crash: the key outlives the router, and whoever owns the silo next
//! reads it and ticks at once if the time has passed. Nothing fires twice: the avatar advances
//! its escalation and saves it before acking the tick, and a repeated tick finds nothing due.
//! If a tick changes nothing (a clock running behind), the entry ticks again after
//! [`RETICK`].

use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tocsin_bus::Bus;
use tocsin_model::{AvatarMessage, Millis, UserId, now_ms};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long after a tick the same unchanged entry ticks again.
pub const RETICK: Duration = Duration::from_secs(5);

/// The timer key of a user.
pub fn key(silo: u32, user: &UserId) -> String {
    format!("s{silo}.{user}")
}

/// The pending wake-ups of one silo, one per user.
#[derive(Default)]
pub struct Schedule {
    /// (fire at, user) in time order.
    queue: BTreeSet<(Millis, String)>,
    /// user → (fire at, due written by the avatar, key revision, ticks sent for it)
    entries: HashMap<String, (Millis, Millis, u64, u32)>,
}

impl Schedule {
    /// The avatar wrote `due` (revision `rev`) for `user`, or removed it (`None`).
    pub fn set(&mut self, user: &str, due: Option<(Millis, u64)>) {
        if let Some((at, _, _, _)) = self.entries.remove(user) {
            self.queue.remove(&(at, user.to_owned()));
        }
        if let Some((due, rev)) = due {
            self.entries.insert(user.to_owned(), (due, due, rev, 0));
            self.queue.insert((due, user.to_owned()));
        }
    }

    pub fn next_at(&self) -> Option<Millis> {
        self.queue.first().map(|(at, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Users whose time has come, with the message id of their tick; each is rescheduled
    /// [`RETICK`] later in case the tick changes nothing.
    pub fn take_due(&mut self, now: Millis) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some((at, user)) = self.queue.first().cloned() {
            if at > now {
                break;
            }
            self.queue.pop_first();
            if let Some(e) = self.entries.get_mut(&user) {
                let (_, due, rev, n) = *e;
                out.push((user.clone(), tocsin_bus::msg_id::tick(&user, due, rev, n)));
                let again = now + RETICK.as_millis() as i64;
                *e = (again, due, rev, n + 1);
                self.queue.insert((again, user));
            }
        }
        out
    }
}

/// Watch silo `silo`'s timers and tick its avatars when they are due, until `shutdown`.
pub async fn run(bus: Bus, timers: kv::Store, silo: u32, shutdown: CancellationToken) {
    let prefix = format!("s{silo}.");
    loop {
        let mut watch = match timers.watch_with_history(format!("{prefix}*")).await {
            Ok(w) => w,
            Err(e) => {
                warn!(silo, error = %e, "cannot watch the escalation timers; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let mut schedule = Schedule::default();
        loop {
            let wait = schedule
                .next_at()
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {
                    let due = schedule.take_due(now_ms());
                    if let Err(e) = tick(&bus, silo, &due).await {
                        // they stay scheduled and tick again after RETICK
                        warn!(silo, users = due.len(), error = %e, "cannot publish escalation ticks");
                    }
                    metrics::gauge!(crate::telemetry::TIMERS, "silo" => silo.to_string())
                        .set(schedule.len() as f64);
                }
                next = watch.next() => match next {
                    Some(Ok(entry)) => {
                        let Some(user) = entry.key.strip_prefix(&prefix) else { continue };
                        let due = match entry.operation {
                            kv::Operation::Put => std::str::from_utf8(&entry.value)
                                .ok()
                                .and_then(|s| s.parse::<Millis>().ok())
                                .map(|d| (d, entry.revision)),
                            _ => None,
                        };
                        debug!(silo, user, ?due, "escalation timer");
                        schedule.set(user, due);
                    }
                    Some(Err(e)) => {
                        warn!(silo, error = %e, "the escalation timer watch failed; restarting it");
                        break;
                    }
                    None => {
                        warn!(silo, "the escalation timer watch ended; restarting it");
                        break;
                    }
                },
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Tick the avatars of `due` (user, tick id): many at once travel in the silo's envelopes,
/// published together.
async fn tick(bus: &Bus, silo: u32, due: &[(String, String)]) -> Result<(), tocsin_bus::BusError> {
    if due.is_empty() {
        return Ok(());
    }
    let payload = tocsin_bus::encode(&AvatarMessage::Tick { at_ms: now_ms() })?;
    let records: Vec<(&str, String, bytes::Bytes)> = due
        .iter()
        .filter(|(user, _)| UserId::parse(user).is_ok())
        .map(|(user, id)| (user.as_str(), id.clone(), payload.clone()))
        .collect();
    bus.publish_all(bus.silo_outputs(silo, "tick", &records))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_fires_in_order_and_reticks_until_changed() {
        let mut s = Schedule::default();
        s.set("b", Some((200, 1)));
        s.set("a", Some((100, 2)));
        assert_eq!(s.next_at(), Some(100));
        assert!(s.take_due(99).is_empty());
        let due = s.take_due(150);
        assert_eq!(due, vec![("a".to_owned(), "tick:a:100:2:0".to_owned())]);
        // not changed by the avatar: ticks again later, with a new id
        assert_eq!(s.next_at(), Some(200));
        let later = 150 + RETICK.as_millis() as i64;
        let due = s.take_due(later);
        assert_eq!(due.len(), 2);
        assert!(due.contains(&("a".to_owned(), "tick:a:100:2:1".to_owned())));
        // the avatar moved a's timer, then removed b's
        s.set("a", Some((10_000, 3)));
        s.set("b", None);
        assert_eq!(s.len(), 1);
        assert_eq!(s.next_at(), Some(10_000));
        s.set("a", None);
        assert!(s.is_empty());
        assert_eq!(s.next_at(), None);
    }
}
