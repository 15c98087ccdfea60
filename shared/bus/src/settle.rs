//! Settling a consumed message: a handler's [`Disposition`](crate::Disposition) becomes ack,
//! nak with backoff, or a dead letter; a message out of retries is dead-lettered.

use crate::{Bus, Disposition, backoff};
use async_nats::jetstream;
use std::time::Duration;
use tracing::warn;

impl Bus {
    /// Turn a handler's verdict into ack, nak-with-delay or dead-letter. A message that has
    /// been delivered more than `max_deliver` times is dead-lettered instead of retried.
    /// Handlers settle through [`Inbound::settle`](crate::Inbound::settle), once.
    pub(crate) async fn settle_message(&self, msg: &jetstream::Message, disposition: Disposition) {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        let result = match disposition {
            Disposition::Ack => msg.ack().await,
            Disposition::Retry(_) if self.out_of_retries(msg, delivered + 1) => {
                let reason = format!("still failing after {delivered} deliveries");
                // boxed, here and below: the rare path's state would otherwise make every
                // settle's future (held by each task that settles) its size
                Box::pin(self.dead_letter(msg, &reason)).await
            }
            Disposition::Retry(after) => {
                let backoff = backoff(delivered, after);
                msg.ack_with(jetstream::AckKind::Nak(Some(backoff))).await
            }
            Disposition::Reject(reason) => Box::pin(self.dead_letter(msg, &reason)).await,
        };
        if let Err(e) = result {
            // the server redelivers after ack_wait; handlers are idempotent, so that is safe
            warn!(subject = %msg.subject, error = %e, "could not settle message; it will be redelivered");
        }
    }

    /// Whether this message has already failed too often to be tried again.
    pub fn exhausted(&self, msg: &jetstream::Message) -> bool {
        let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
        self.out_of_retries(msg, delivered)
    }

    /// A message is given up on after more than `max_deliver` deliveries spread over at least
    /// `max_deliver × ack_wait`. The count alone would let an outage dead-letter good
    /// messages: while a stream's leader moves, or a consumer hands over, messages are
    /// redelivered in quick succession without any handler having failed on them.
    fn out_of_retries(&self, msg: &jetstream::Message, delivered: i64) -> bool {
        if delivered <= self.config.max_deliver {
            return false;
        }
        let min_age = Duration::from_secs(self.config.ack_wait_secs)
            .saturating_mul(self.config.max_deliver.clamp(1, 1_000) as u32);
        let age = msg
            .info()
            .map(|i| {
                let published: time::OffsetDateTime = i.published;
                (time::OffsetDateTime::now_utc() - published)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            })
            .unwrap_or(Duration::MAX);
        age >= min_age
    }
}
