//! `/v1/admin/dead-letters`: list dead letters and replay one (admin).

use crate::auth::require_admin;
use crate::{ApiError, St, bus_error};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::json;
use tocsin_bus::DeadLetter;
use tracing::warn;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeadLetterParams {
    from: Option<u64>,
    limit: Option<usize>,
}

pub(crate) async fn dead_letters(
    State(state): St,
    headers: HeaderMap,
    params: Result<Query<DeadLetterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()), None)
    })?;
    let list: Vec<DeadLetter> = state
        .bus
        .dead_letters(p.from.unwrap_or(0), p.limit.unwrap_or(100).min(1000))
        .await
        .map_err(bus_error)?;
    Ok(Json(json!({ "dead_letters": list })))
}

pub(crate) async fn replay_dead_letter(
    State(state): St,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let dl = state
        .bus
        .replay_dead_letter(seq)
        .await
        .map_err(|e| ApiError::not_found(format!("cannot replay dead letter {seq}: {e}")))?;
    warn!(seq, subject = %dl.original_subject, "dead letter replayed by an operator");
    Ok(Json(json!({ "replayed": dl })))
}
