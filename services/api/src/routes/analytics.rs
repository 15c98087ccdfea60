//! `/v1/analytics`: the user's own report over their last days (per day and channel: what
//! was routed, delivered, failed, acknowledged, how fast), computed by an archiver from the
//! archive.

use crate::auth::authenticate;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{AnalyticsRequest, AnalyticsRow, Reply, UserId};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Params {
    days: Option<u32>,
}

pub(crate) async fn analytics(
    State(state): St,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()), None)
    })?;
    let days = p.days.unwrap_or(14);
    let rows = report(&state, &u.id, days).await?;
    Ok(Json(json!({ "days": days, "rows": rows })))
}

/// `user`'s report over their last `days` (1 to [`AnalyticsRequest::MAX_DAYS`]), a few a
/// minute per user: each reads the archive's files of those days.
pub(crate) async fn report(
    state: &AppState,
    user: &UserId,
    days: u32,
) -> Result<Vec<AnalyticsRow>, ApiError> {
    if !(1..=AnalyticsRequest::MAX_DAYS).contains(&days) {
        return Err(ApiError::bad_request(
            format!("days: 1-{}", AnalyticsRequest::MAX_DAYS),
            Some("days".into()),
        ));
    }
    if let Err(wait) = state.reports.take(user) {
        return Err(ApiError::too_many(format!(
            "too many analytics reports; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let ask = AnalyticsRequest {
        user: user.clone(),
        days,
    };
    let reply: Reply<Vec<AnalyticsRow>> = state
        .bus
        .request_json(
            state.bus.subjects().archiver_rpc("report"),
            &ask,
            std::time::Duration::from_secs(state.cfg.query_timeout_secs),
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "no archiver answered (analytics come from the archive; is the archiver running?): {e}"
            ))
        })?;
    match reply {
        Reply::Ok(rows) => Ok(rows),
        Reply::Err(e) => Err(ApiError::unavailable(e)),
    }
}
