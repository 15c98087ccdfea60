//! What a consumer hands its handlers: a message of a stream, or one record of an envelope
//! that carries many (a feed item for many subscribers, a silo's delivery jobs). Either is
//! settled once; an envelope is acked when every record in it is, retried (whole: the records
//! already handled are duplicates by id the second time) when any record asked to be, and a
//! record rejected on its own is dead-lettered alone, as the message it would have been.
//!
//! An envelope may keep its progress in a [`ProgressLog`]: which of its records are settled,
//! so that after a crash its next delivery hands out only what was not done.

use crate::progress::ProgressLog;
use crate::{Bus, Disposition, Inbound, RecordOrigin};
use async_nats::jetstream;
use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;

// most messages are `Own`: boxing it would cost an allocation per message, and a `Handed`
// travels to its handler boxed already where that matters
#[allow(clippy::large_enum_variant)]
pub enum Handed {
    Own(Inbound),
    Part(Part),
}

impl From<Inbound> for Handed {
    fn from(msg: Inbound) -> Handed {
        Handed::Own(msg)
    }
}

/// One record of an envelope.
pub struct Part {
    /// The subject the record would have had as a message of its own.
    subject: String,
    /// The record's id inside the envelope.
    id: String,
    payload: Bytes,
    index: usize,
    envelope: Arc<Envelope>,
}

/// An envelope whose records are with their handlers.
pub struct Envelope {
    origin: RecordOrigin,
    exhausted: bool,
    /// Where its progress is kept, for an envelope that keeps it.
    progress: Option<Arc<ProgressLog>>,
    state: Mutex<Settling>,
}

struct Settling {
    /// Taken to settle it once the last record is settled.
    msg: Option<Inbound>,
    unsettled: usize,
    /// The longest retry a record asked for.
    retry: Option<Duration>,
}

/// Where an envelope's progress is kept, and the records an earlier delivery of it settled
/// ([`ProgressLog::earlier`]): those are not handed out again.
pub struct Progress {
    pub log: Arc<ProgressLog>,
    pub done: Vec<usize>,
}

/// Hand out the records of `msg` (an envelope, already read into `records`: (subject, id,
/// payload) each), one [`Part`] each, but for those `progress` says are done; None if the
/// message has no stream origin (never for a pulled message). An envelope with nothing left
/// to do is acked at once.
pub async fn split(
    bus: &Bus,
    msg: Inbound,
    records: Vec<(String, String, Bytes)>,
    progress: Option<Progress>,
) -> Option<Vec<Part>> {
    let Some(origin) = RecordOrigin::of(msg.message()) else {
        let reason = "an envelope that did not come from a stream".to_owned();
        msg.settle(bus, Disposition::Reject(reason)).await;
        return None;
    };
    let mut done = vec![false; records.len()];
    let log = progress.map(|p| {
        for i in &p.done {
            if let Some(d) = done.get_mut(*i) {
                *d = true;
            }
        }
        p.log.begin(origin.seq, records.len(), &p.done);
        p.log
    });
    let unsettled = done.iter().filter(|d| !**d).count();
    if unsettled == 0 {
        msg.settle(bus, Disposition::Ack).await;
        if let Some(log) = &log {
            log.finished(origin.seq);
        }
        return Some(Vec::new());
    }
    let envelope = Arc::new(Envelope {
        exhausted: bus.exhausted(msg.message()),
        origin,
        progress: log,
        state: Mutex::new(Settling {
            msg: Some(msg),
            unsettled,
            retry: None,
        }),
    });
    let parts = records
        .into_iter()
        .enumerate()
        .filter(|(index, _)| !done[*index])
        .map(|(index, (subject, id, payload))| Part {
            subject,
            id,
            payload,
            index,
            envelope: envelope.clone(),
        })
        .collect();
    Some(parts)
}

impl Handed {
    pub fn subject(&self) -> &str {
        match self {
            Handed::Own(m) => &m.message().subject,
            Handed::Part(p) => &p.subject,
        }
    }

    pub fn payload(&self) -> &Bytes {
        match self {
            Handed::Own(m) => &m.message().payload,
            Handed::Part(p) => &p.payload,
        }
    }

    /// How often it has been delivered (an envelope's record: as often as its envelope).
    pub fn delivered(&self) -> i64 {
        match self {
            Handed::Own(m) => m.message().info().map(|i| i.delivered).unwrap_or(1),
            Handed::Part(p) => p.envelope.origin.delivered,
        }
    }

    /// The stream sequence of the message it came in (an envelope's record: its envelope's).
    pub fn stream_seq(&self) -> u64 {
        match self {
            Handed::Own(m) => m.message().info().map(|i| i.stream_sequence).unwrap_or(0),
            Handed::Part(p) => p.envelope.origin.seq,
        }
    }

    /// A copy of the message it came in (an envelope's record: its envelope's, while that is
    /// not settled), to extend its ack deadline with.
    pub fn message_to_keep(&self) -> Option<jetstream::Message> {
        match self {
            Handed::Own(m) => Some(m.message().clone()),
            Handed::Part(p) => lock(&p.envelope.state)
                .msg
                .as_ref()
                .map(|m| m.message().clone()),
        }
    }

    /// Whether it has failed on every delivery it may have ([`Bus::exhausted`]).
    pub fn exhausted(&self, bus: &Bus) -> bool {
        match self {
            Handed::Own(m) => bus.exhausted(m.message()),
            Handed::Part(p) => p.envelope.exhausted,
        }
    }

    pub async fn settle(self, bus: &Bus, disposition: Disposition) {
        match self {
            Handed::Own(m) => m.settle(bus, disposition).await,
            Handed::Part(p) => {
                p.settle(bus, disposition).await;
            }
        }
    }

    /// [`Handed::settle`] in an outbox round: the progress log of an envelope that keeps one,
    /// to be written ([`ProgressLog::write`]) once the round's settles are done.
    pub(crate) async fn settle_in_round(
        self,
        bus: &Bus,
        disposition: Disposition,
    ) -> Option<Arc<ProgressLog>> {
        match self {
            Handed::Own(m) => {
                m.settle(bus, disposition).await;
                None
            }
            Handed::Part(p) => p.settle(bus, disposition).await,
        }
    }
}

impl Part {
    /// Settle this record; its envelope's progress log, if it keeps one.
    async fn settle(self, bus: &Bus, disposition: Disposition) -> Option<Arc<ProgressLog>> {
        let retry = match disposition {
            Disposition::Ack => None,
            Disposition::Retry(after) => Some(after),
            Disposition::Reject(reason) => {
                let record = (
                    self.subject.as_str(),
                    self.id.as_str(),
                    self.payload.clone(),
                );
                let origin = &self.envelope.origin;
                // boxed: the rare path's state would otherwise be in every settle's future
                match Box::pin(bus.dead_letter_record(origin, self.index, record, &reason)).await {
                    Ok(()) => None,
                    // kept with its envelope, which is retried for it
                    Err(_) => Some(Duration::from_secs(1)),
                }
            }
        };
        let seq = self.envelope.origin.seq;
        let log = self.envelope.progress.clone();
        if let (Some(log), None) = (&log, retry) {
            log.settled(seq, self.index);
        }
        let last = {
            let mut s = lock(&self.envelope.state);
            s.retry = s.retry.max(retry);
            s.unsettled -= 1;
            if s.unsettled == 0 {
                s.msg.take().map(|m| (m, s.retry))
            } else {
                None
            }
        };
        if let Some((msg, retry)) = last {
            let d = match retry {
                None => Disposition::Ack,
                Some(after) => Disposition::Retry(after),
            };
            msg.settle(bus, d).await;
            if let Some(log) = &log {
                log.finished(seq);
            }
        }
        log
    }
}

/// The lock, whether or not a holder panicked (the state stays consistent: each change is
/// one assignment).
fn lock(state: &Mutex<Settling>) -> std::sync::MutexGuard<'_, Settling> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Write each of `logs` once (it is listed once per record settled in the round); says whether
/// any was written.
pub(crate) async fn record_progress(logs: Vec<Arc<ProgressLog>>) -> bool {
    let mut seen: Vec<Arc<ProgressLog>> = Vec::new();
    for log in logs {
        if !seen.iter().any(|l| Arc::ptr_eq(l, &log)) {
            seen.push(log);
        }
    }
    futures::future::join_all(seen.iter().map(|l| l.write()))
        .await
        .contains(&true)
}
