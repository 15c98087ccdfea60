//! Test messages: a person checks a destination from the web app ("Send a test message"); the
//! instance serving its channel sends one message now, through the same code as every job
//! (the address guard, the provider, the breaker-free single attempt), and answers what
//! happened. Nothing is recorded: no history, no outcome, no event.

use crate::Ctx;
use crate::job;
use crate::webhook::SendResult;
use futures::StreamExt;
use std::sync::Arc;
use tocsin_model::{
    Channel, DeliveryJob, DestinationTest, JobKind, Notification, NotificationId, Priority, Reply,
    SourceKind, SourceRef, TestResult, now_ms,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Answer test requests for `channel` until `shutdown`.
pub(crate) async fn serve(ctx: Arc<Ctx>, channel: Channel, shutdown: CancellationToken) {
    let subject = ctx.bus.subjects().delivery_test(channel.as_str());
    let mut requests = match ctx
        .bus
        .client()
        .queue_subscribe(subject.clone(), "delivery".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, %subject, "cannot take test messages");
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
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<DestinationTest>(&msg.payload) {
                Ok(t) => Reply::Ok(send(&ctx, t).await),
                Err(e) => Reply::Err(format!("invalid test request: {e}")),
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = ctx.bus.client().publish(reply_to, body.into()).await {
                debug!(error = %e, "test result not sent");
            }
        });
    }
}

async fn send(ctx: &Ctx, t: DestinationTest) -> TestResult {
    let at = now_ms();
    let id = format!("test-{at:x}");
    let label = if t.destination.label.is_empty() {
        t.destination.address.clone()
    } else {
        t.destination.label.clone()
    };
    let job = DeliveryJob {
        job_id: format!("{id}:{}", t.destination.id),
        notification: Notification {
            id: NotificationId(id),
            user: t.user.clone(),
            source: SourceRef {
                kind: SourceKind::Publish,
                id: None,
                label: "tocsin".into(),
            },
            title: "Test message from tocsin".into(),
            body: format!("This is how tocsin reaches you at {label}. Nothing to do."),
            url: None,
            priority: Priority::DEFAULT,
            tags: vec![],
            created_at_ms: at,
            published_at_ms: None,
            dedup_key: None,
        },
        destination: t.destination,
        kind: JobKind::Notification,
        reference: None,
        ack_url: None,
    };
    let result = job::send(ctx, &job).await;
    let (delivered, detail) = match result {
        SendResult::Delivered(d) => (true, d),
        SendResult::Transient { detail, .. } => (false, format!("{detail} (a retry might work)")),
        SendResult::Permanent(d) => (false, d),
    };
    info!(user = %t.user, destination = %job.destination.id, channel = job.destination.channel.as_str(), delivered, "test message");
    TestResult { delivered, detail }
}
