//! A pull subscription that survives the bus moving under it.
//!
//! When a consumer's leader moves (a cluster node dies, a new stream elects its first
//! leader) a JetStream pull reports "no responders" or a missed heartbeat — and may then
//! stay silent although messages are waiting. [`Pull`] logs such an error and pulls afresh,
//! so every consuming loop recovers the same way.

use crate::Inbound;
use async_nats::jetstream::{self, consumer::pull};
use futures::{FutureExt, StreamExt};
use std::time::Duration;
use tracing::warn;

/// The most one pull request asks the server for, in bytes, whatever its count of messages:
/// 256 envelopes of half a megabyte each (a backlog of a fan-out's hand-over) would otherwise
/// sit in the client at once for each silo. The client asks again once half of it has
/// arrived, so a pull holds at most about one and a half times this. Eight times the largest
/// message tocsin publishes ([`tocsin_model::budget::RECORD_LIMIT`]): a request never asks
/// for less than the next message takes (the server would refuse it, every time).
pub const PULL_BYTES: usize = 8 * 1024 * 1024;

// a record limit raised past an eighth of this would make pulls of its largest messages
// smaller than the rule above says; past all of it, a pull that can never be answered
const _: () = assert!(PULL_BYTES >= 8 * tocsin_model::budget::RECORD_LIMIT);

/// A renewing pull from one durable consumer.
pub struct Pull {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    batch: usize,
    what: String,
    messages: Option<pull::Stream>,
}

impl Pull {
    /// Pull from `consumer` in batches of `batch` messages and at most [`PULL_BYTES`];
    /// `what` names it in logs.
    pub fn new(
        consumer: jetstream::consumer::Consumer<pull::Config>,
        batch: usize,
        what: impl Into<String>,
    ) -> Pull {
        Pull {
            consumer,
            batch: batch.max(1),
            what: what.into(),
            messages: None,
        }
    }

    /// The next message, waiting as long as it takes. Errors are logged and the pull is
    /// renewed. Cancel-safe: dropping the future loses no message.
    pub async fn next(&mut self) -> Inbound {
        loop {
            let messages = match &mut self.messages {
                Some(m) => m,
                None => match self
                    .consumer
                    .stream()
                    .max_messages_per_batch(self.batch)
                    .max_bytes_per_batch(PULL_BYTES)
                    .heartbeat(Duration::from_secs(5))
                    .expires(Duration::from_secs(30))
                    .messages()
                    .await
                {
                    Ok(m) => self.messages.insert(m),
                    Err(e) => {
                        warn!(what = %self.what, error = %e, "cannot pull; trying again");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(m)) => return Inbound::new(m),
                Some(Err(e)) => {
                    warn!(what = %self.what, error = %e, "pulling failed; pulling afresh");
                }
                None => warn!(what = %self.what, "the pull ended; pulling afresh"),
            }
            self.messages = None;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A message that is already here, without waiting.
    pub fn next_ready(&mut self) -> Option<Inbound> {
        match self.messages.as_mut()?.next().now_or_never() {
            Some(Some(Ok(m))) => Some(Inbound::new(m)),
            _ => None,
        }
    }

    /// Stop pulling and return what had arrived but was not taken (at most `limit`,
    /// waiting `linger` for each), for the caller to give back. Given back while still
    /// subscribed, they would come straight back here.
    pub async fn stop(mut self, limit: usize, linger: Duration) -> Vec<Inbound> {
        let mut out = Vec::new();
        if let Some(messages) = self.messages.as_mut() {
            while out.len() < limit
                && let Ok(Some(Ok(m))) = tokio::time::timeout(linger, messages.next()).await
            {
                out.push(Inbound::new(m));
            }
        }
        self.messages = None;
        out
    }
}
