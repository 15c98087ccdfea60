//! What the instances of a service have done with records that can come again in another
//! envelope — delivery: the jobs it sent — kept on the bus for the server's duplicate window,
//! so that any instance recognises such a record, including one started after the crash of the
//! instance that did it.
//!
//! The server's duplicate window drops a message published again with the same id; an envelope
//! has its own id, so a record repeated in a *different* envelope (a router round handed over
//! again after a crash, its records batched anew) reaches the consumer. An instance's memory
//! of what it did (delivery's `sent`) catches that while it lives; this log is the same memory
//! shared and kept across crashes.
//!
//! Each outbox round that did records appends one entry to a KV bucket whose entries expire
//! with the duplicate window: the records' fingerprints (the first 8 bytes of the id's SHA-256,
//! packed), under a key of its own (`<instance>.<round>`), written once the round's outputs are
//! durable and before its submitters go on. Every instance follows the bucket from its start —
//! it reads what is there before it hands anything out — and keeps the last [`CAPACITY`]
//! fingerprints in memory.

use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::task::AbortOnDropHandle;
use tracing::{debug, warn};

/// How many records' fingerprints an instance keeps (8 MiB of them, about 24 MiB with the
/// set): more than the duplicate window holds at 5,000 records a second.
pub const CAPACITY: usize = 1 << 20;

/// How long opening waits for what is in the bucket before it goes on without the rest.
const CATCH_UP: Duration = Duration::from_secs(10);

pub struct DoneLog {
    store: kv::Store,
    instance: String,
    round: AtomicU64,
    seen: Arc<Mutex<Seen>>,
    _follow: AbortOnDropHandle<()>,
}

/// Fingerprints, oldest first, at most [`CAPACITY`].
#[derive(Default)]
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
}

impl Seen {
    fn insert(&mut self, f: u64) {
        if self.set.insert(f) {
            self.order.push_back(f);
            if self.order.len() > CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    /// Fold an entry's packed fingerprints in (a trailing partial one is ignored).
    fn fold(&mut self, packed: &[u8]) {
        for chunk in packed.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            self.insert(u64::from_le_bytes(b));
        }
    }
}

fn lock(m: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DoneLog {
    /// This instance's log in `store`, once what the bucket holds is read (or [`CATCH_UP`] has
    /// passed: then the rest is folded in as it arrives).
    pub async fn open(store: kv::Store) -> DoneLog {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (caught_up, wait) = oneshot::channel();
        let follow = tokio::spawn(follow(store.clone(), seen.clone(), caught_up));
        if tokio::time::timeout(CATCH_UP, wait).await.is_err() {
            warn!(
                bucket = store.name,
                "the records done lately are not all read after {}s; going on, and a record \
                 repeated in another envelope meanwhile may be done again",
                CATCH_UP.as_secs()
            );
        }
        DoneLog {
            store,
            instance: format!("i{}", uuid::Uuid::new_v4().simple()),
            round: AtomicU64::new(0),
            seen,
            _follow: AbortOnDropHandle::new(follow),
        }
    }

    /// Whether a record with this id was done lately, by this instance or another.
    pub fn contains(&self, id: &str) -> bool {
        lock(&self.seen)
            .set
            .contains(&tocsin_model::recent::fingerprint(id))
    }

    /// Record that the records `ids` are done (their outputs durable). One entry, written
    /// before this returns; a failed write is logged and leaves them recognised by this
    /// instance only. Says whether it was written.
    pub async fn write(&self, ids: &[String]) -> bool {
        if ids.is_empty() {
            return false;
        }
        let mut packed = Vec::with_capacity(ids.len() * 8);
        {
            let mut seen = lock(&self.seen);
            for id in ids {
                let f = tocsin_model::recent::fingerprint(id);
                seen.insert(f);
                packed.extend_from_slice(&f.to_le_bytes());
            }
        }
        let key = format!(
            "{}.{}",
            self.instance,
            self.round.fetch_add(1, Ordering::Relaxed)
        );
        match self.store.put(&key, packed.into()).await {
            Ok(_) => true,
            Err(e) => {
                metrics::counter!("tocsin_bus_dedup_unwritten_total", "log" => "sent").increment(1);
                debug!(bucket = self.store.name, records = ids.len(), error = %e,
                    "cannot log the records done in a round; only this instance will know them");
                false
            }
        }
    }
}

/// Fold every entry of the bucket into `seen`: what is there now (then say so on `caught_up`),
/// then each new one. A watch that fails or ends is started again a second later (its entries
/// fold in again, which changes nothing).
async fn follow(store: kv::Store, seen: Arc<Mutex<Seen>>, caught_up: oneshot::Sender<()>) {
    let mut caught_up = Some(caught_up);
    loop {
        // asked of the server (the store's status is what it was when the store was opened)
        let empty = store
            .stream
            .clone()
            .info()
            .await
            .map(|i| i.state.messages == 0)
            .unwrap_or(false);
        if empty && let Some(tx) = caught_up.take() {
            let _ = tx.send(());
        }
        match store.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    match entry {
                        Ok(e) => {
                            if e.operation == kv::Operation::Put {
                                lock(&seen).fold(&e.value);
                            }
                            if e.delta == 0
                                && let Some(tx) = caught_up.take()
                            {
                                let _ = tx.send(());
                            }
                        }
                        Err(e) => {
                            debug!(bucket = store.name, error = %e, "the watch on the records done stopped");
                            break;
                        }
                    }
                }
            }
            Err(e) => debug!(bucket = store.name, error = %e, "cannot watch the records done"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_keeps_the_newest_fingerprints_and_ignores_a_torn_tail() {
        let mut s = Seen::default();
        let mut packed = Vec::new();
        for f in [1u64, 2, 3] {
            packed.extend_from_slice(&f.to_le_bytes());
        }
        packed.extend_from_slice(&[9, 9, 9]);
        s.fold(&packed);
        assert_eq!(s.order, [1, 2, 3]);
        s.fold(&2u64.to_le_bytes());
        assert_eq!(
            s.order.len(),
            3,
            "a fingerprint already there is not added again"
        );
        for f in 10..(10 + CAPACITY as u64) {
            s.insert(f);
        }
        assert_eq!(s.order.len(), CAPACITY);
        assert!(!s.set.contains(&1) && !s.set.contains(&3));
        assert!(s.set.contains(&10) && s.set.contains(&(9 + CAPACITY as u64)));
    }
}
