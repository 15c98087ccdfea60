//! Core NATS request/reply served by a queue group (one instance of the group answers each
//! request): a request is decoded and answered by the handler on a task of its own, the reply
//! encoded; a request that does not decode is answered with the reason. The ingestor's feed
//! previews, the archiver's reports and delivery's test messages are served this way.

use crate::Bus;
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tocsin_model::Reply;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Answer requests on `subject` (queue group `queue`) with `handle` until `shutdown`; `what`
/// names them in errors (`feed preview`).
pub async fn serve<Req, Resp, F, Fut>(
    bus: Bus,
    subject: String,
    queue: &str,
    what: &'static str,
    shutdown: CancellationToken,
    handle: F,
) where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    F: Fn(Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Reply<Resp>> + Send + 'static,
{
    let mut requests = match bus
        .client()
        .queue_subscribe(subject.clone(), queue.to_owned())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, %subject, "cannot take {what} requests");
            return;
        }
    };
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let (bus, handle) = (bus.clone(), handle.clone());
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Req>(&msg.payload) {
                Ok(req) => handle(req).await,
                Err(e) => Reply::Err(format!("invalid {what} request: {e}")),
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = bus.client().publish(reply_to, body.into()).await {
                debug!(error = %e, "{what} reply not sent");
            }
        });
    }
}
