//! What an instance has settled of the envelopes it holds, kept on the bus so that an envelope
//! delivered again after a crash hands out only the records not done (delivery jobs: without
//! it, a crash would send again every job of the envelope sent before it).
//!
//! Each instance writes one key of a KV bucket: the table of its open envelopes (stream
//! sequence, record count, a bitmap of the settled records), rewritten at the end of each
//! outbox round in which it changed, before the round's submitters take their next record, so
//! that a crash repeats at most the record each has in hand, as with a message per record. One
//! write per round, whatever the number of envelopes, and none when the table reads as it did:
//! an envelope taken, settled and acked within one round (at low load, each one) never
//! appears in it. An instance reads every key when it
//! starts, and again (at most once a second) when an envelope comes back that it knows nothing
//! of (another instance held it). A clean stop deletes the instance's key; a crashed instance's
//! key expires with the bucket's `max_age`.

use async_nats::jetstream::kv;
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tracing::{debug, warn};

/// A table larger than this is not written (a bus message must carry it); the envelopes of a
/// crash are then handed out whole.
const MAX_TABLE: usize = 900 * 1024;

pub struct ProgressLog {
    store: kv::Store,
    key: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// This instance's open envelopes: which records are settled.
    open: BTreeMap<u64, Vec<bool>>,
    changed: bool,
    /// The table as it was last written (empty before the first write).
    written: Bytes,
    /// What other (earlier) instances had settled, by stream sequence.
    earlier: HashMap<u64, Vec<usize>>,
    read_at: Option<Instant>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ProgressLog {
    /// This instance's log in `store`, with what earlier instances left there.
    pub async fn open(store: kv::Store) -> ProgressLog {
        let log = ProgressLog {
            store,
            key: format!("i{}", uuid::Uuid::new_v4().simple()),
            state: Mutex::default(),
        };
        log.read_others().await;
        log
    }

    /// The records of the envelope at `seq` that an earlier holder settled (none if it is
    /// not known, or the bucket cannot be read: then all of them are handed out again).
    pub async fn earlier(&self, seq: u64) -> Vec<usize> {
        let stale = {
            let s = lock(&self.state);
            if let Some(done) = s.earlier.get(&seq) {
                return done.clone();
            }
            s.read_at
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        };
        if stale {
            self.read_others().await;
        }
        lock(&self.state)
            .earlier
            .get(&seq)
            .cloned()
            .unwrap_or_default()
    }

    async fn read_others(&self) {
        let mut found = HashMap::new();
        match self.store.keys().await {
            Ok(mut keys) => {
                while let Some(Ok(key)) = keys.next().await {
                    if key == self.key {
                        continue;
                    }
                    match self.store.get(&key).await {
                        Ok(Some(table)) => found.extend(decode(&table)),
                        Ok(None) => {}
                        Err(e) => debug!(key, error = %e, "cannot read an instance's progress"),
                    }
                }
            }
            Err(e) => debug!(error = %e, "cannot list the instances' progress"),
        }
        let mut s = lock(&self.state);
        s.earlier = found;
        s.read_at = Some(Instant::now());
    }

    /// An envelope of `len` records arrived, of which `done` were settled before.
    pub(crate) fn begin(&self, seq: u64, len: usize, done: &[usize]) {
        let mut bits = vec![false; len];
        for i in done {
            if let Some(b) = bits.get_mut(*i) {
                *b = true;
            }
        }
        let mut s = lock(&self.state);
        s.earlier.remove(&seq);
        s.changed |= !done.is_empty();
        s.open.insert(seq, bits);
    }

    /// Record `index` of the envelope at `seq` is settled.
    pub(crate) fn settled(&self, seq: u64, index: usize) {
        let mut s = lock(&self.state);
        if let Some(b) = s.open.get_mut(&seq).and_then(|bits| bits.get_mut(index)) {
            *b = true;
            s.changed = true;
        }
    }

    /// The envelope at `seq` is settled as a whole (acked, or given back to be retried whole).
    pub(crate) fn finished(&self, seq: u64) {
        let mut s = lock(&self.state);
        if s.open.remove(&seq).is_some() {
            s.changed = true;
        }
    }

    /// Write the table if it changed since it was last written. A table that reads as the
    /// one written last is not written again: an envelope taken, settled and acked within
    /// one round (at low load, each one) never appears in the stored table, so its round
    /// writes nothing. Says whether it wrote (the server stored the table).
    pub(crate) async fn write(&self) -> bool {
        let table = {
            let mut s = lock(&self.state);
            if !s.changed {
                return false;
            }
            s.changed = false;
            let table = encode(&s.open);
            if table == s.written {
                return false;
            }
            table
        };
        if table.len() > MAX_TABLE {
            warn!(
                bytes = table.len(),
                "the table of envelopes in hand is too large to keep; after a crash their jobs are handed out whole"
            );
            return false;
        }
        match self.store.put(&self.key, table.clone()).await {
            Ok(_) => {
                lock(&self.state).written = table;
                true
            }
            Err(e) => {
                // the next round writes it again
                lock(&self.state).changed = true;
                metrics::counter!("tocsin_bus_dedup_unwritten_total", "log" => "progress")
                    .increment(1);
                debug!(error = %e, "cannot write the progress of the envelopes in hand");
                false
            }
        }
    }

    /// At a stop: with nothing in hand the key goes; with envelopes still in hand (the grace
    /// period ran out) their table is kept for whoever takes them next.
    pub async fn close(&self) {
        if !lock(&self.state).open.is_empty() {
            let _ = self.write().await;
            return;
        }
        if let Err(e) = self.store.purge(&self.key).await {
            debug!(error = %e, "cannot delete this instance's progress (it expires)");
        }
    }
}

/// The table: per envelope with something settled, its sequence (8 bytes), its record count (4)
/// and a bitmap of the settled ones (bit `i % 8` of byte `i / 8`).
fn encode(open: &BTreeMap<u64, Vec<bool>>) -> Bytes {
    let mut out = BytesMut::new();
    for (seq, bits) in open {
        if !bits.iter().any(|b| *b) {
            continue;
        }
        out.put_u64(*seq);
        out.put_u32(bits.len() as u32);
        let mut map = vec![0u8; bits.len().div_ceil(8)];
        for (i, b) in bits.iter().enumerate() {
            if *b {
                map[i / 8] |= 1 << (i % 8);
            }
        }
        out.put_slice(&map);
    }
    out.freeze()
}

/// The settled records of each envelope in a table; a damaged table yields what it holds
/// before the damage.
fn decode(table: &[u8]) -> Vec<(u64, Vec<usize>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(head) = table.get(at..at + 12) {
        let seq = u64::from_be_bytes(head[..8].try_into().unwrap_or_default());
        let len = u32::from_be_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        let Some(map) = table.get(at + 12..(at + 12).saturating_add(len.div_ceil(8))) else {
            break;
        };
        let done = (0..len)
            .filter(|i| map[i / 8] & (1 << (i % 8)) != 0)
            .collect();
        out.push((seq, done));
        at += 12 + map.len();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_names_the_settled_records_of_each_envelope() {
        let mut open = BTreeMap::new();
        open.insert(
            7,
            vec![true, false, false, true, false, false, false, false, true],
        );
        open.insert(9, vec![false, false]);
        open.insert(12, vec![false, true]);
        let table = encode(&open);
        assert_eq!(decode(&table), vec![(7, vec![0, 3, 8]), (12, vec![1])]);
        // damaged: what comes before the damage
        assert_eq!(decode(&table[..table.len() - 1]), vec![(7, vec![0, 3, 8])]);
        assert_eq!(decode(&[]), vec![]);
        assert_eq!(decode(&[1, 2, 3]), vec![]);
    }
}
