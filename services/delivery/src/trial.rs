//! Test messages: a person checks a destination from the web app ("Send a test message"); the
//! instance serving its channel sends one message now, through the same code as every job
//! (the address guard, the provider, the breaker-free single attempt), and answers what
//! happened. Nothing is recorded: no history, no outcome, no event.

use crate::Ctx;
use crate::job;
use crate::webhook::SendResult;
use std::sync::Arc;
use tocsin_model::{
    Channel, DeliveryJob, DestinationTest, JobKind, Notification, NotificationId, Reply,
    TestResult, now_ms,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Answer test requests for `channel` until `shutdown`.
pub(crate) async fn serve(ctx: Arc<Ctx>, channel: Channel, shutdown: CancellationToken) {
    let subject = ctx.bus.subjects().delivery_test(channel.as_str());
    let bus = ctx.bus.clone();
    tocsin_bus::rpc::serve(
        bus,
        subject,
        "delivery",
        "test message",
        shutdown,
        move |t| {
            let ctx = ctx.clone();
            async move { Reply::Ok(send(&ctx, t).await) }
        },
    )
    .await
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
        notification: Notification::from_tocsin(
            NotificationId(id),
            t.user.clone(),
            "Test message from tocsin".into(),
            format!("This is how tocsin reaches you at {label}. Nothing to do."),
            at,
        ),
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
