//! A publisher many tasks share (a router silo's avatars, a delivery instance's lanes): it
//! gathers what they submit while its previous round is in flight and publishes it as one
//! round — records for the same subject in envelopes, the rest as messages of their own — then
//! tells each submitter, or settles its input message, once the round is durable.
//!
//! Nothing waits on a timer: an idle outbox publishes a submission at once; under load, what
//! arrives during one round's PubAcks becomes the next round, so the batches grow with the
//! load (group commit). See ADR 0016. An outbox may also log the ids of the records its
//! rounds finish ([`DoneLog`]: delivery's jobs sent), once per round.

use crate::done_log::DoneLog;
use crate::envelope;
use crate::handed::{self, Handed};
use crate::{Bus, BusError, Disposition, PendingAck};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;
use tracing::debug;

/// One message to publish through an [`Outbox`].
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// The subject: of the message, or of the envelope a record travels in.
    pub subject: String,
    /// The `Nats-Msg-Id` of a message; a record's own id inside its envelope.
    pub id: String,
    pub payload: Bytes,
    /// A record that travels in an envelope with the round's other records for its subject.
    pub enveloped: bool,
    /// Published and acknowledged before the round's other messages (history records before
    /// the jobs whose outcomes add to them).
    pub first: bool,
}

impl Outgoing {
    /// A message of its own.
    pub fn alone(subject: String, id: String, payload: Bytes) -> Outgoing {
        Outgoing {
            subject,
            id,
            payload,
            enveloped: false,
            first: false,
        }
    }

    /// A record for the envelopes on `subject`.
    pub fn record(subject: String, id: String, payload: Bytes) -> Outgoing {
        Outgoing {
            enveloped: true,
            ..Outgoing::alone(subject, id, payload)
        }
    }

    /// Published and acknowledged before the rest of its round.
    pub fn first(mut self) -> Outgoing {
        self.first = true;
        self
    }
}

/// What to do once a submission's round is durable (or has failed).
enum Then {
    Tell(oneshot::Sender<RoundResult>),
    /// Ack the message the outputs answer (on failure, give it back for a retry), then say so.
    Settle(Box<Handed>, oneshot::Sender<()>),
}

struct Submission {
    items: Vec<Outgoing>,
    then: Then,
    /// The id of the record this submission finishes, for the outbox's [`DoneLog`].
    done: Option<String>,
}

/// The answer to [`Outbox::submit`]: await it for the round's result.
pub struct Receipt(oneshot::Receiver<RoundResult>);

impl std::future::IntoFuture for Receipt {
    type Output = Result<(), BusError>;
    type IntoFuture =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BusError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            match self.0.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(BusError::Other(e)),
                Err(_) => Err(BusError::Other("the outbox stopped".into())),
            }
        })
    }
}

/// A handle on a running outbox; clones share it. The outbox stops when every handle is gone
/// and what was submitted is published, or when its task handle is dropped.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Submission>,
}

/// At most this many submissions make one round.
const ROUND: usize = 4096;

impl Outbox {
    /// Start an outbox publishing on `bus`; `name` is for its logs.
    pub fn spawn(bus: Bus, name: String) -> (Outbox, AbortOnDropHandle<()>) {
        Self::spawn_with(bus, name, None)
    }

    /// An outbox that writes the ids of the records its rounds finish
    /// ([`Outbox::submit_done_then_ack`]) to `log`, once per round.
    pub fn spawn_with(
        bus: Bus,
        name: String,
        log: Option<Arc<DoneLog>>,
    ) -> (Outbox, AbortOnDropHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = AbortOnDropHandle::new(tokio::spawn(run(bus, name, log, rx)));
        (Outbox { tx }, task)
    }

    /// Publish `items` (in order, within the rules of a round) and say when they are durable.
    /// Items that could never be published (over what one bus message carries) are refused
    /// here, so that they fail only their submitter and never a round shared with others.
    pub fn submit(&self, items: Vec<Outgoing>) -> Receipt {
        let (tx, rx) = oneshot::channel();
        if let Some(e) = oversized(&items) {
            let _ = tx.send(Err(e));
            return Receipt(rx);
        }
        // a send fails only when the outbox is gone: the receipt then says so
        let _ = self.tx.send(Submission {
            items,
            then: Then::Tell(tx),
            done: None,
        });
        Receipt(rx)
    }

    /// Publish `items` and then ack `msg`, the message they answer; if the round fails (or the
    /// outbox is gone), `msg` is given back (retried) so that its handler runs again. Returns
    /// once `msg` is settled and the server has the ack, so a caller that handles its messages
    /// one at a time never has more than one of them done but not yet acked (what a crash
    /// would make it do again). A record of an envelope that keeps its progress counts as
    /// acked once that progress is written ([`handed`]).
    pub async fn submit_then_ack(&self, bus: &Bus, items: Vec<Outgoing>, msg: impl Into<Handed>) {
        self.settle_after(bus, items, msg.into(), None).await
    }

    /// [`Outbox::submit_then_ack`] for the message that brought record `done`, which the
    /// outputs finish: its id goes to the outbox's [`DoneLog`] with the round, after the
    /// outputs are durable and before the submitter is answered.
    pub async fn submit_done_then_ack(
        &self,
        bus: &Bus,
        items: Vec<Outgoing>,
        msg: impl Into<Handed>,
        done: String,
    ) {
        self.settle_after(bus, items, msg.into(), Some(done)).await
    }

    async fn settle_after(
        &self,
        bus: &Bus,
        items: Vec<Outgoing>,
        msg: Handed,
        done: Option<String>,
    ) {
        if let Some(e) = oversized(&items) {
            // it would fail every time: dead-lettered with the reason, not retried (boxed, as
            // below: the rare paths' settle would otherwise be in every submitter's future,
            // copied with it for every job a delivery lane handles)
            Box::pin(msg.settle(bus, Disposition::Reject(e))).await;
            return;
        }
        let (settled, wait) = oneshot::channel();
        let sent = self.tx.send(Submission {
            items,
            then: Then::Settle(Box::new(msg), settled),
            done,
        });
        match sent {
            Err(mpsc::error::SendError(Submission {
                then: Then::Settle(msg, _),
                ..
            })) => Box::pin(msg.settle(bus, Disposition::Retry(Duration::from_secs(1)))).await,
            // an error here means the outbox stopped: the message is then redelivered
            _ => {
                let _ = wait.await;
            }
        }
    }
}

/// What is wrong with `items` if one of them can never be published: larger than a bus
/// message may be (with an envelope's framing).
fn oversized(items: &[Outgoing]) -> Option<String> {
    let limit = tocsin_model::budget::RECORD_LIMIT;
    items
        .iter()
        .find(|i| envelope::framed_len(&i.id, &i.payload) + envelope::MAGIC.len() > limit)
        .map(|i| {
            format!(
                "an output for {} ({}) takes {} bytes, over the {limit} one bus message may carry",
                i.subject,
                i.id,
                i.payload.len()
            )
        })
}

async fn run(
    bus: Bus,
    name: String,
    log: Option<Arc<DoneLog>>,
    mut rx: mpsc::UnboundedReceiver<Submission>,
) {
    // what follows a round's PubAcks runs on a task of its own, round after round in order,
    // while the next round is already publishing: a submitter's answer still waits for all of
    // it, but the rounds follow each other one round trip apart, not three
    let (after, finishing) = mpsc::unbounded_channel();
    let finisher = AbortOnDropHandle::new(tokio::spawn(finish(
        bus.clone(),
        name.clone(),
        log,
        finishing,
    )));
    let mut round = Vec::new();
    while let Some(first) = rx.recv().await {
        round.push(first);
        while round.len() < ROUND {
            match rx.try_recv() {
                Ok(s) => round.push(s),
                Err(_) => break,
            }
        }
        let result = publish_round(&bus, &round).await;
        metrics::histogram!("tocsin_bus_outbox_round_submissions").record(round.len() as f64);
        if let Err(e) = &result {
            debug!(outbox = %name, error = %e, "an outbox round failed; its submitters retry");
        }
        let mut published = Published::default();
        for s in round.drain(..) {
            if result.is_ok() {
                published.done.extend(s.done);
            }
            match s.then {
                Then::Tell(tx) => published
                    .tell
                    .push((tx, result.as_ref().map(|_| ()).map_err(|e| e.to_string()))),
                Then::Settle(msg, settled) => {
                    let d = match &result {
                        Ok(()) => Disposition::Ack,
                        Err(_) => Disposition::Retry(Duration::from_secs(1)),
                    };
                    published.open.extend(msg.settle_in_round(&bus, d).await);
                    published.settled.push(settled);
                }
            }
        }
        // the finisher lives as long as this loop: it is gone only if it panicked
        let _ = after.send(published);
    }
    drop(after);
    let _ = finisher.await;
}

/// What a round's submitters are told: done, or why not.
type RoundResult = Result<(), String>;

/// A round whose outputs are durable and whose input messages are settled, and what is left
/// to do for it.
#[derive(Default)]
struct Published {
    /// Submitters to answer, with the round's result.
    tell: Vec<(oneshot::Sender<RoundResult>, RoundResult)>,
    /// Submitters whose message was settled, to tell once the server has the settles.
    settled: Vec<oneshot::Sender<()>>,
    /// Envelopes with records still out: their progress, to write.
    open: Vec<Arc<crate::progress::ProgressLog>>,
    /// The records the round finished, for the [`DoneLog`].
    done: Vec<String>,
}

/// Finish each round in the order they were published: write what is settled of the
/// envelopes with records still out and the records the round finished, both before anyone
/// goes on; then make sure the server has the round's acks, and answer its submitters.
async fn finish(
    bus: Bus,
    name: String,
    log: Option<Arc<DoneLog>>,
    mut rounds: mpsc::UnboundedReceiver<Published>,
) {
    while let Some(round) = rounds.recv().await {
        let log_done = async {
            match &log {
                Some(log) => log.write(&round.done).await,
                None => false,
            }
        };
        let (progress, logged) = tokio::join!(handed::record_progress(round.open), log_done);
        if !round.settled.is_empty() {
            // an ack is a message like any other: until the server has read it, a crash of
            // this process loses it and the job comes back. Its submitter takes its next job
            // only once the server has the ack, so a crash repeats at most the one job each
            // submitter has in hand. A write acknowledged after the acks were sent on the
            // same connection says the server has read them (it reads a connection in
            // order); without one, a flush's round trip does.
            if !(progress || logged)
                && let Err(e) = bus.client().flush().await
            {
                debug!(outbox = %name, error = %e, "cannot confirm the round's acks reached the server");
            }
            for settled in round.settled {
                let _ = settled.send(());
            }
        }
        for (tx, result) in round.tell {
            let _ = tx.send(result);
        }
    }
}

/// A subject's records in a round: (id, payload).
type Records<'a> = Vec<(&'a str, &'a [u8])>;

/// Publish a round: the `first` items, acknowledged, then the rest; in each part the messages
/// of their own in submission order, then the envelopes, each subject's records in submission
/// order.
async fn publish_round(bus: &Bus, round: &[Submission]) -> Result<(), BusError> {
    for first in [true, false] {
        let mut acks: Vec<PendingAck> = Vec::new();
        // subjects in the order of their first record, with their records
        let mut groups: Vec<(&str, Records)> = Vec::new();
        for item in round
            .iter()
            .flat_map(|s| &s.items)
            .filter(|i| i.first == first)
        {
            if item.enveloped {
                let rec = (item.id.as_str(), item.payload.as_ref());
                match groups.iter_mut().find(|(s, _)| *s == item.subject) {
                    Some((_, recs)) => recs.push(rec),
                    None => groups.push((item.subject.as_str(), vec![rec])),
                }
            } else {
                acks.push(
                    bus.send(item.subject.clone(), &item.id, item.payload.clone())
                        .await?,
                );
            }
        }
        for (subject, recs) in &groups {
            for (id, payload) in envelope::sealed(recs) {
                acks.push(bus.send((*subject).to_owned(), &id, payload).await?);
            }
            metrics::histogram!("tocsin_bus_envelope_records").record(recs.len() as f64);
        }
        for ack in acks {
            ack.await?;
        }
    }
    Ok(())
}
