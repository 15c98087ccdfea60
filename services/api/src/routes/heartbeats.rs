//! `/v1/heartbeats/{user}/{source}/{secret}`: the ping URL of a heartbeat source, for a cron
//! job's `curl` (GET, HEAD or POST; no token: the secret in the URL is the credential).

use crate::auth::source_by_secret;
use crate::{ApiError, St, bus_error};
use axum::extract::{Path, State};
use tocsin_model::{AvatarMessage, SourceSpec, now_ms};

/// A ping: 200 `OK` once the user's avatar has it queued; 404 for anything that is not a
/// heartbeat with that secret (without saying which part was wrong).
pub(crate) async fn ping(
    State(state): St,
    Path((user, source_id, secret)): Path<(String, String, String)>,
) -> Result<&'static str, ApiError> {
    let (record, source) = source_by_secret(&state, &user, &source_id, &secret).await?;
    if !matches!(source.spec, SourceSpec::Heartbeat { .. }) {
        return Err(ApiError::not_found("no such URL"));
    }
    let at_ms = now_ms();
    let user = record.id;
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
