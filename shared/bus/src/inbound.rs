//! A message pulled from a stream, which its handler must settle exactly once: ack, retry
//! (nak with backoff) or reject (dead letter). Settling consumes it, so it cannot be settled
//! twice; one dropped unsettled is logged and counted (JetStream redelivers it after
//! `ack_wait`, so nothing is lost, only late).

use crate::{Bus, Disposition};
use async_nats::jetstream;

/// A pulled message that has not been settled yet.
#[must_use = "a pulled message must be settled: ack, retry or reject"]
pub struct Inbound {
    msg: Option<jetstream::Message>,
}

impl Inbound {
    pub(crate) fn new(msg: jetstream::Message) -> Inbound {
        Inbound { msg: Some(msg) }
    }

    /// The message: subject, headers, payload, delivery info.
    pub fn message(&self) -> &jetstream::Message {
        // `msg` is taken only by the methods that consume `self`
        self.msg
            .as_ref()
            .unwrap_or_else(|| unreachable!("an Inbound is settled only by consuming it"))
    }

    /// Settle it as the handler decided: ack, nak with backoff, or dead letter (one that has
    /// been delivered more than `max_deliver` times is dead-lettered instead of retried).
    pub async fn settle(mut self, bus: &Bus, disposition: Disposition) {
        if let Some(msg) = self.msg.take() {
            bus.settle_message(&msg, disposition).await;
        }
    }

    /// Ack it; the error is the caller's to handle (it is redelivered if the ack was lost).
    pub async fn ack(mut self) -> Result<(), async_nats::Error> {
        match self.msg.take() {
            Some(msg) => msg.ack().await,
            None => Ok(()),
        }
    }

    /// Give it back at once (nak, no delay): pulled, never handled, and the next holder of
    /// the stream should have it before anything newer.
    pub async fn give_back(mut self) {
        if let Some(msg) = self.msg.take() {
            let _ = msg.ack_with(jetstream::AckKind::Nak(None)).await;
        }
    }

    /// Tell the server it is still being worked on (resets `ack_wait`), without settling it.
    pub async fn in_progress(&self) -> Result<(), async_nats::Error> {
        self.message().ack_with(jetstream::AckKind::Progress).await
    }

    /// The message, to be settled by position: for a consumer acknowledged by position
    /// ([`Bus::positional_consumer`](crate::Bus::positional_consumer)), whose user acks a later
    /// message once this one is done, or leaves it for redelivery.
    pub fn into_positioned(mut self) -> jetstream::Message {
        self.msg
            .take()
            .unwrap_or_else(|| unreachable!("an Inbound is settled only by consuming it"))
    }

    /// Let it go unsettled on purpose, to be redelivered after `ack_wait`: a later delivery of
    /// the same message replaced it, or it is left on the bus for the next start.
    pub fn leave(mut self) {
        self.msg = None;
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if let Some(msg) = &self.msg {
            metrics::counter!("tocsin_bus_unsettled_total").increment(1);
            tracing::warn!(
                subject = %msg.subject,
                "a pulled message was dropped without being settled; it is redelivered after ack_wait"
            );
        }
    }
}
