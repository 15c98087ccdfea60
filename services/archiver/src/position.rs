//! How far the archiver's acknowledgement may go. Its consumer is acknowledged by position
//! (ADR 0031): one ack settles every event message up to it. So the archiver acks a message
//! only when every message before it that it was given is settled too — written to durable
//! files, found already written, or set aside as a dead letter — and never one that sits
//! in a roll not yet written.

use async_nats::jetstream;
use std::collections::{BTreeMap, BTreeSet};
use tracing::debug;

pub(crate) struct Position<M = jetstream::Message> {
    /// Messages taken and not settled yet (held in a roll or being written), by sequence.
    open: BTreeSet<u64>,
    /// Settled messages above the last ack, by sequence.
    settled: BTreeMap<u64, M>,
    /// The last position acked (0: none yet).
    acked: u64,
}

impl<M> Default for Position<M> {
    fn default() -> Self {
        Position {
            open: BTreeSet::new(),
            settled: BTreeMap::new(),
            acked: 0,
        }
    }
}

impl<M> Position<M> {
    /// `seq` was taken and is held until its file is durable.
    pub(crate) fn open(&mut self, seq: u64) {
        self.open.insert(seq);
    }

    /// `seq` is done with: its events are durable (or were already, or it is a dead letter).
    pub(crate) fn settle(&mut self, seq: u64, msg: M) {
        self.open.remove(&seq);
        if seq > self.acked {
            self.settled.insert(seq, msg);
        }
    }

    /// The message to ack now: the highest settled one below every open one.
    fn next(&self) -> Option<(u64, &M)> {
        let below = self.open.first().copied().unwrap_or(u64::MAX);
        self.settled
            .range(..below)
            .next_back()
            .map(|(seq, msg)| (*seq, msg))
    }

    /// The position an ack would reach now, if it moves at all.
    #[cfg(test)]
    pub(crate) fn ackable(&self) -> Option<u64> {
        self.next().map(|(seq, _)| seq)
    }

    /// The position was acked up to `seq`.
    fn acked(&mut self, seq: u64) {
        self.acked = seq;
        self.settled = self.settled.split_off(&(seq + 1));
    }

    /// Messages taken and not settled.
    #[cfg(test)]
    pub(crate) fn open_count(&self) -> usize {
        self.open.len()
    }
}

impl Position<jetstream::Message> {
    /// Ack as far as it may go (one message); a failed ack is tried again at the next call,
    /// and the messages it would have settled are redelivered meanwhile only after `ack_wait`.
    pub(crate) async fn ack(&mut self) {
        let Some((seq, msg)) = self.next() else {
            return;
        };
        if let Err(e) = msg.ack().await {
            debug!(seq, error = %e, "cannot ack the archive's position; trying again later");
            return;
        }
        self.acked(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::Position;

    #[test]
    fn the_position_never_passes_a_message_not_yet_settled() {
        let mut p: Position<()> = Position::default();
        assert_eq!(p.ackable(), None);
        for seq in 1..=6 {
            p.open(seq);
        }
        // a later roll written before an earlier one's redelivery: nothing may be acked
        p.settle(5, ());
        p.settle(6, ());
        assert_eq!(p.ackable(), None);
        p.settle(1, ());
        p.settle(2, ());
        assert_eq!(p.ackable(), Some(2));
        p.acked(2);
        // 3 is still held: 4 settles, the position stays below 3
        p.settle(4, ());
        assert_eq!(p.ackable(), None);
        p.settle(3, ());
        assert_eq!(p.ackable(), Some(6));
        p.acked(6);
        assert_eq!(p.ackable(), None);
        assert_eq!(p.open_count(), 0);
        // a message settled again below the position (a redelivery) moves nothing
        p.settle(4, ());
        assert_eq!(p.ackable(), None);
    }
}
