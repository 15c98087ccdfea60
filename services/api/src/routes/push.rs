//! `/v1/push/key`: the server's VAPID public key, which a browser subscribes to Web Push with
//! (the web app does, then adds the subscription as a `push` destination of format
//! `web_push`). Delivery publishes it when it has a key.

use crate::{ApiError, St};
use axum::Json;
use axum::extract::State;
use serde_json::json;

pub(crate) async fn key(State(state): St) -> Result<Json<serde_json::Value>, ApiError> {
    let entry = state
        .keys
        .get("vapid")
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the published keys: {e}")))?;
    let key = entry
        .filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["public_key"].as_str().map(str::to_owned))
        .ok_or_else(|| {
            ApiError::not_found(
                "web push is not set up on this server: its operator sets delivery.web_push.vapid_private_key and subject",
            )
        })?;
    Ok(Json(json!({ "public_key": key })))
}
