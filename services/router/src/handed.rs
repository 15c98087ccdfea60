//! What an avatar is handed: a message of its silo's stream, or one record of an envelope that
//! carries many avatars' messages (a feed item for many subscribers). Either is settled once;
//! an envelope is acked when every record in it is, retried (whole: the records already handled
//! are duplicates by id the second time) when any record asked to be, and a record rejected on
//! its own is dead-lettered alone, as the message it would have been.

use bytes::Bytes;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::{Bus, Disposition, Inbound, RecordOrigin};

// most messages are `Own`: boxing it would cost an allocation per message, and a `Handed`
// travels to its avatar boxed already
#[allow(clippy::large_enum_variant)]
pub(crate) enum Handed {
    Own(Inbound),
    Part(Part),
}

/// One record of an envelope, for one avatar.
pub(crate) struct Part {
    /// The subject the record would have had as a message of its own.
    subject: String,
    /// The record's id inside the envelope (its user's and its own).
    id: String,
    payload: Bytes,
    index: usize,
    envelope: Arc<Envelope>,
}

/// An envelope whose records are with their avatars.
struct Envelope {
    origin: RecordOrigin,
    exhausted: bool,
    state: Mutex<Settling>,
}

struct Settling {
    /// Taken to settle it once the last record is settled.
    msg: Option<Inbound>,
    unsettled: usize,
    /// The longest retry a record asked for.
    retry: Option<Duration>,
}

/// Hand out the records of `msg` (an envelope, already read into `records`: (subject, id,
/// payload) each), one [`Part`] each; None if the message has no stream origin (never for a
/// pulled message). An envelope with no records is acked at once.
pub(crate) async fn split(
    bus: &Bus,
    msg: Inbound,
    records: Vec<(String, String, Bytes)>,
) -> Option<Vec<Part>> {
    let Some(origin) = RecordOrigin::of(msg.message()) else {
        let reason = "an envelope that did not come from a stream".to_owned();
        msg.settle(bus, Disposition::Reject(reason)).await;
        return None;
    };
    if records.is_empty() {
        msg.settle(bus, Disposition::Ack).await;
        return Some(Vec::new());
    }
    let envelope = Arc::new(Envelope {
        exhausted: bus.exhausted(msg.message()),
        origin,
        state: Mutex::new(Settling {
            msg: Some(msg),
            unsettled: records.len(),
            retry: None,
        }),
    });
    let parts = records
        .into_iter()
        .enumerate()
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
    pub(crate) fn subject(&self) -> &str {
        match self {
            Handed::Own(m) => &m.message().subject,
            Handed::Part(p) => &p.subject,
        }
    }

    pub(crate) fn payload(&self) -> &Bytes {
        match self {
            Handed::Own(m) => &m.message().payload,
            Handed::Part(p) => &p.payload,
        }
    }

    /// How often it has been delivered (an envelope's record: as often as its envelope).
    pub(crate) fn delivered(&self) -> i64 {
        match self {
            Handed::Own(m) => m.message().info().map(|i| i.delivered).unwrap_or(1),
            Handed::Part(p) => p.envelope.origin.delivered,
        }
    }

    /// Whether it has failed on every delivery it may have ([`Bus::exhausted`]).
    pub(crate) fn exhausted(&self, bus: &Bus) -> bool {
        match self {
            Handed::Own(m) => bus.exhausted(m.message()),
            Handed::Part(p) => p.envelope.exhausted,
        }
    }

    pub(crate) async fn settle(self, bus: &Bus, disposition: Disposition) {
        match self {
            Handed::Own(m) => m.settle(bus, disposition).await,
            Handed::Part(p) => p.settle(bus, disposition).await,
        }
    }
}

impl Part {
    async fn settle(self, bus: &Bus, disposition: Disposition) {
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
        let last = {
            let mut s = tocsin_runtime::lock(&self.envelope.state);
            s.retry = s.retry.max(retry);
            s.unsettled -= 1;
            if s.unsettled == 0 {
                s.msg.take().map(|m| (m, s.retry))
            } else {
                None
            }
        };
        match last {
            Some((msg, None)) => msg.settle(bus, Disposition::Ack).await,
            Some((msg, Some(after))) => msg.settle(bus, Disposition::Retry(after)).await,
            None => {}
        }
    }
}
