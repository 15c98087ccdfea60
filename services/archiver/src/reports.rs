//! Reports for the web app: a user's analytics over their last days, computed here (the
//! only service that reads the archive) and answered on `<p>.rpc.archiver.report`, one
//! report at a time.

use crate::analytics::{self, Options};
use crate::store::Archive;
use std::sync::Arc;
use tocsin_bus::Bus;
use tocsin_model::{AnalyticsRequest, AnalyticsRow, Reply};
use tokio_util::sync::CancellationToken;

/// Answer report requests until `shutdown`.
pub(crate) async fn serve(bus: Bus, archive: Archive, shutdown: CancellationToken) {
    let subject = bus.subjects().archiver_rpc("report");
    // one report at a time: each reads every file of its days
    let one = Arc::new(tokio::sync::Semaphore::new(1));
    let archive = Arc::new(archive);
    tocsin_bus::rpc::serve(
        bus,
        subject,
        "archiver",
        "analytics",
        shutdown,
        move |req| {
            let (archive, one) = (archive.clone(), one.clone());
            async move {
                match one.acquire().await {
                    Ok(_turn) => report(&archive, &req).await,
                    Err(_) => Reply::Err("the archiver is stopping".into()),
                }
            }
        },
    )
    .await
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
