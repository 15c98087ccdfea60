//! `/v1/heartbeats/{user}/{source}/{secret}`: the ping URL of a heartbeat source, for a cron
//! job's `curl` (GET, HEAD or POST; no token: the secret in the URL is the credential).

use crate::auth::{hashes_equal, load_user};
use crate::{ApiError, AppState, St, bus_error};
use axum::extract::{Path, State};
use tocsin_model::{AvatarMessage, SourceSpec, UserId, hash_token, now_ms};

/// The ping URL of heartbeat `source_id` with `secret`.
pub(crate) fn ping_url(state: &AppState, user: &UserId, source_id: &str, secret: &str) -> String {
    format!(
        "{}/v1/heartbeats/{user}/{source_id}/{secret}",
        state.cfg.public_url.trim_end_matches('/')
    )
}

/// A ping: 200 `OK` once the user's avatar has it queued; 404 for anything that is not a
/// heartbeat with that secret (without saying which part was wrong).
pub(crate) async fn ping(
    State(state): St,
    Path((user, source_id, secret)): Path<(String, String, String)>,
) -> Result<&'static str, ApiError> {
    let missing = || ApiError::not_found("no such heartbeat");
    let user = UserId::parse(&user).map_err(|_| missing())?;
    let record = load_user(&state, &user).await?.ok_or_else(missing)?;
    let known = record.sources.iter().any(|s| {
        s.id == source_id
            && matches!(&s.spec, SourceSpec::Heartbeat { token_hash, .. }
                if hashes_equal(token_hash, &hash_token(&secret)))
    });
    if !known {
        return Err(missing());
    }
    if let Err(wait) = state.per_user.take(&record.id) {
        return Err(ApiError::too_many(format!(
            "too many requests for this user; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let at_ms = now_ms();
    let id = tocsin_bus::msg_id::ping(&user, &source_id, at_ms);
    let msg = AvatarMessage::Ping { source_id, at_ms };
    let subject = state
        .bus
        .subjects()
        .silo(state.bus.silo_of(&user), user.as_str(), msg.kind());
    state
        .bus
        .publish_json(subject, &id, &msg)
        .await
        .map_err(bus_error)?;
    Ok("OK\n")
}
