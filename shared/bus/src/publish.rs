//! Publishing with `Nats-Msg-Id`, awaited PubAcks, retries, and a bounded window.

use crate::{Bus, BusConfig, BusError};
use async_nats::jetstream::{self, context::PublishErrorKind};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
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
///
/// The publishes are futures the window polls itself (no task each): [`PublishWindow::push`]
/// hands its message to the connection at once and keeps the wait for its PubAck (and any
/// retry) in the window, polled whenever the caller pushes into a full window or flushes.
pub struct PublishWindow {
    bus: Arc<Bus>,
    size: usize,
    in_flight: FuturesUnordered<BoxFuture<'static, Result<(), BusError>>>,
    first_error: Option<BusError>,
}

impl PublishWindow {
    pub(crate) fn new(bus: Bus, size: usize) -> Self {
        Self {
            bus: Arc::new(bus),
            size: size.max(1),
            in_flight: FuturesUnordered::new(),
            first_error: None,
        }
    }

    /// Start a publish, waiting first if the window is full.
    pub async fn push(&mut self, subject: String, msg_id: String, payload: bytes::Bytes) {
        // take what has finished, so a failure is seen early and the set stays small
        while let Some(Some(done)) = self.in_flight.next().now_or_never() {
            self.record(done);
        }
        while self.in_flight.len() >= self.size {
            match self.in_flight.next().await {
                Some(done) => self.record(done),
                None => break,
            }
        }
        let bus = self.bus.clone();
        let mut publish: BoxFuture<'static, Result<(), BusError>> =
            Box::pin(async move { bus.publish(subject, &msg_id, payload).await });
        // polled once here, so the message leaves now rather than when the window is next
        // polled; what is left is the wait for its PubAck
        match futures::poll!(publish.as_mut()) {
            std::task::Poll::Ready(done) => self.record(done),
            std::task::Poll::Pending => self.in_flight.push(publish),
        }
    }

    /// Wait for every publish; the first error, if any.
    pub async fn flush(mut self) -> Result<(), BusError> {
        while let Some(done) = self.in_flight.next().await {
            self.record(done);
        }
        match self.first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn record(&mut self, done: Result<(), BusError>) {
        if let Err(e) = done
            && self.first_error.is_none()
        {
            self.first_error = Some(e);
        }
    }
}
