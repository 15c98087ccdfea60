//! `/v1/policy` and `/v1/policies`: the user's escalation policies (steps, waits, presence
//! conditions, quiet hours) — `default`, the built-in `feeds` (the default without SMS) and any
//! the user names — and which sources follow which.

use crate::auth::authenticate;
use crate::client::{command, refusal};
use crate::routes::parse_body_strict;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use tocsin_model::{Command, Policy, Reach, UserRecord};

pub(crate) async fn get_policy(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let custom = u.reach.policy.is_some();
    let policy = u
        .reach
        .policy
        .as_deref()
        .cloned()
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
    let policy = write(&state, &u, &body, |policy| Command::SetPolicy {
        policy: Some(policy),
    })
    .await?;
    Ok(Json(json!({ "policy": policy, "custom": true })))
}

/// Check the policy in `body` against `u`'s destinations, and have the avatar save it with
/// the command `save` makes of it.
async fn write(
    state: &AppState,
    u: &UserRecord,
    body: &[u8],
    save: impl FnOnce(Policy) -> Command,
) -> Result<Policy, ApiError> {
    let policy: Policy = parse_body_strict(body)?;
    if let Some(p) = policy.problems(&u.destinations).into_iter().next() {
        return Err(ApiError::bad_request(p.to_string(), Some(p.field)));
    }
    let reply = command(state, &u.id, save(policy.clone())).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(policy)
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

/// One policy as the API shows it: its steps, whether the user wrote it, and who follows it.
fn view(u: &UserRecord, name: &str) -> serde_json::Value {
    let (policy, custom) = u.reach.policy_named(name, &u.destinations);
    let sources: Vec<&str> = u
        .sources
        .iter()
        .filter(|s| {
            let follows = s.settings.policy.as_deref().unwrap_or(match s.spec {
                tocsin_model::SourceSpec::Feed { .. } => Reach::FEEDS_POLICY,
                _ => Reach::DEFAULT_POLICY,
            });
            follows == name
        })
        .map(|s| s.id.as_str())
        .collect();
    json!({ "name": name, "policy": policy, "custom": custom, "sources": sources })
}

/// The user's policy `name`, or 404.
fn named(u: &UserRecord, name: &str) -> Result<serde_json::Value, ApiError> {
    if u.reach.has_policy(name) {
        Ok(view(u, name))
    } else {
        Err(ApiError::not_found(format!(
            "no policy {name}; GET /v1/policies lists them"
        )))
    }
}

/// `GET /v1/policies`: every policy, `default` and `feeds` first.
pub(crate) async fn list_policies(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let policies: Vec<serde_json::Value> =
        u.reach.policy_names().iter().map(|n| view(&u, n)).collect();
    Ok(Json(json!({ "policies": policies })))
}

pub(crate) async fn get_named_policy(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(named(&u, &name)?))
}

/// `PUT /v1/policies/{name}`: write a policy (`default` is the one `/v1/policy` holds).
pub(crate) async fn put_named_policy(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Policy::validate_name(&name).map_err(|e| ApiError::bad_request(e, Some("name".into())))?;
    let named = name.clone();
    let policy = write(&state, &u, &body, |policy| Command::SetNamedPolicy {
        name: named,
        policy: Some(policy),
    })
    .await?;
    Ok(Json(
        json!({ "name": name, "policy": policy, "custom": true }),
    ))
}

/// `DELETE /v1/policies/{name}`: `default` and `feeds` go back to the built-in ones; another
/// is removed unless a source still follows it.
pub(crate) async fn delete_named_policy(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    named(&u, &name)?;
    let builtin = name == Reach::DEFAULT_POLICY || name == Reach::FEEDS_POLICY;
    let written = name == Reach::DEFAULT_POLICY && u.reach.policy.is_some()
        || u.reach.policies.contains_key(&name);
    if builtin && !written {
        return Ok(StatusCode::NO_CONTENT);
    }
    let reply = command(
        &state,
        &u.id,
        Command::SetNamedPolicy { name, policy: None },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}
