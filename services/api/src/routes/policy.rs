//! `/v1/policy`: the user's escalation policy (steps, waits, presence conditions, quiet hours).

use crate::auth::authenticate;
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::{ApiError, St};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use tocsin_model::{Command, Policy};

pub(crate) async fn get_policy(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let custom = u.reach.policy.is_some();
    let policy = u
        .reach
        .policy
        .clone()
        .unwrap_or_else(|| Policy::default_for(&u.destinations));
    Ok(Json(json!({
        "policy": policy,
        "custom": custom,
        "pending_escalations": u.reach.escalations.len(),
        "present": u.reach.present(),
        "muted_until_ms": u.reach.muted_until_ms,
    })))
}

pub(crate) async fn put_policy(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let policy: Policy = parse_body(&body)?;
    if let Some(p) = policy.problems(&u.destinations).into_iter().next() {
        return Err(ApiError::bad_request(p.to_string(), Some(p.field)));
    }
    let reply = command(
        &state,
        &u.id,
        Command::SetPolicy {
            policy: Some(policy.clone()),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(json!({ "policy": policy, "custom": true })))
}

pub(crate) async fn delete_policy(
    State(state): St,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let reply = command(&state, &u.id, Command::SetPolicy { policy: None }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}
