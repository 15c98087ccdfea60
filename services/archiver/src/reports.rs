//! Reports for the web app: a user's analytics over their last days, computed here (the
//! only service that reads the archive) and answered on `<p>.rpc.archiver.report`, one
//! report at a time.

use crate::analytics::{self, Options};
use crate::store::Archive;
use futures::StreamExt;
use std::sync::Arc;
use tocsin_bus::Bus;
use tocsin_model::{AnalyticsRequest, AnalyticsRow, Reply};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Answer report requests until `shutdown`.
pub(crate) async fn serve(bus: Bus, archive: Archive, shutdown: CancellationToken) {
    let subject = bus.subjects().archiver_rpc("report");
    let mut requests = match bus
        .client()
        .queue_subscribe(subject.clone(), "archiver".into())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %e, %subject, "cannot answer analytics requests");
            return;
        }
    };
    // one report at a time: each reads every file of its days
    let one = Arc::new(tokio::sync::Semaphore::new(1));
    let archive = Arc::new(archive);
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = requests.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let (bus, archive, one) = (bus.clone(), archive.clone(), one.clone());
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<AnalyticsRequest>(&msg.payload) {
                Ok(req) => match one.acquire().await {
                    Ok(_turn) => report(&archive, &req).await,
                    Err(_) => Reply::Err("the archiver is stopping".into()),
                },
                Err(e) => Reply::Err(format!("invalid analytics request: {e}")),
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            if let Err(e) = bus.client().publish(reply_to, body.into()).await {
                debug!(error = %e, "analytics reply not sent");
            }
        });
    }
}

async fn report(archive: &Archive, req: &AnalyticsRequest) -> Reply<Vec<AnalyticsRow>> {
    let days = req.days.clamp(1, AnalyticsRequest::MAX_DAYS);
    let today = chrono::Utc::now().date_naive();
    let opts = Options {
        from: today.checked_sub_days(chrono::Days::new(u64::from(days) - 1)),
        to: Some(today),
        by_user: false,
        user: Some(req.user.as_str().to_owned()),
    };
    match analytics::report(archive, &opts).await {
        Ok(r) => Reply::Ok(r.rows),
        Err(e) => Reply::Err(format!("the archive cannot be read: {e}")),
    }
}
