//! Publishing with `Nats-Msg-Id`, awaited PubAcks, retries, and a bounded window.

use crate::{Bus, BusConfig, BusError};
use async_nats::jetstream::{self, context::PublishErrorKind};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

pub(crate) async fn publish_with_retry(
    js: &jetstream::Context,
    config: &BusConfig,
    subject: String,
    msg_id: &str,
    payload: bytes::Bytes,
    headers: Option<async_nats::HeaderMap>,
) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(config.publish_retry_secs);
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let mut msg = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(msg_id);
        if let Some(h) = &headers {
            for (name, values) in h.iter() {
                for v in values {
                    msg = msg.header(name.clone(), v.clone());
                }
            }
        }
        let result = match js.send_publish(subject.clone(), msg).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| (e.to_string(), true)),
            Err(e) => {
                let retry = !matches!(e.kind(), PublishErrorKind::MaxPayloadExceeded);
                Err((e.to_string(), retry))
            }
        };
        match result {
            Ok(()) => {
                metrics::counter!("tocsin_bus_published_total").increment(1);
                return Ok(());
            }
            Err((message, retry)) => {
                let now = tokio::time::Instant::now();
                if !retry || now >= deadline {
                    metrics::counter!("tocsin_bus_publish_failures_total").increment(1);
                    return Err(BusError::Publish { subject, message });
                }
                let wait = retry_delay(attempt).min(deadline - now);
                debug!(%subject, attempt, error = %message, "publish failed, retrying");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// How long a publish waits before its `attempt`+1-th try: 100 ms doubling to 3.2 s.
pub(crate) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_millis(50 * 2u64.pow(attempt.min(6)))
}

/// Up to `size` publishes in flight at once; [`PublishWindow::flush`] waits for all of them
/// and reports the first failure. A sequential publisher is bounded by one round trip per
/// message; a window keeps the server busy. Publishes run concurrently, so they may be stored
/// in any order: for messages whose order matters (one user's commands), use [`Bus::send`],
/// which pipelines in order.
pub struct PublishWindow {
    bus: Bus,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Result<(), BusError>>,
    first_error: Option<BusError>,
}

impl PublishWindow {
    pub(crate) fn new(bus: Bus, size: usize) -> Self {
        Self {
            bus,
            permits: Arc::new(Semaphore::new(size.max(1))),
            tasks: JoinSet::new(),
            first_error: None,
        }
    }

    /// Start a publish, waiting first if the window is full.
    pub async fn push(&mut self, subject: String, msg_id: String, payload: bytes::Bytes) {
        // reap finished publishes so the set stays small
        while let Some(done) = self.tasks.try_join_next() {
            self.record(done);
        }
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore never closed");
        let bus = self.bus.clone();
        self.tasks.spawn(async move {
            let r = bus.publish(subject, &msg_id, payload).await;
            drop(permit);
            r
        });
    }

    /// Wait for every publish; the first error, if any.
    pub async fn flush(mut self) -> Result<(), BusError> {
        while let Some(done) = self.tasks.join_next().await {
            self.record(done);
        }
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn record(&mut self, done: Result<Result<(), BusError>, tokio::task::JoinError>) {
        let err = match done {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) => BusError::Other(format!("publish task failed: {e}")),
        };
        if self.first_error.is_none() {
            self.first_error = Some(err);
        }
    }
}
