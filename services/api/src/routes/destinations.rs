//! `/v1/destinations`: where a user is reached.

use crate::auth::{authenticate, random_hex};
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{AddressEntry, Channel, Command, Destination, UserId, now_ms};

/// A destination as the API shows it: the secret is never returned.
pub(crate) fn destination_view(d: &Destination) -> serde_json::Value {
    json!({
        "id": d.id,
        "channel": d.channel,
        "address": d.address,
        "label": d.label,
        "signed": d.secret.is_some(),
        "push_format": d.push_format,
        "created_at_ms": d.created_at_ms,
    })
}

pub(crate) async fn list_destinations(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    // with its status when delivery paused it (a destination that keeps failing)
    let list: Vec<_> = u
        .destinations
        .iter()
        .map(|d| {
            let mut v = destination_view(d);
            if let Some(s) = u.destination_status.get(&d.id) {
                v["status"] = json!(s);
            }
            v
        })
        .collect();
    Ok(Json(json!({ "destinations": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddDestination {
    channel: Channel,
    address: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    push_format: Option<tocsin_model::PushFormat>,
}

pub(crate) async fn add_destination(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: AddDestination = parse_body(&body)?;
    let destination = tocsin_model::validate_destination(Destination {
        id: format!("d{}", random_hex(6)),
        channel: req.channel,
        address: req.address,
        secret: req.secret,
        label: req.label.trim().to_owned(),
        push_format: req.push_format,
        created_at_ms: now_ms(),
    })
    .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    check_address_free(&state, &u.id, destination.channel, &destination.address).await?;
    let view = destination_view(&destination);
    let reply = command(&state, &u.id, Command::AddDestination { destination }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok((StatusCode::CREATED, Json(json!({ "destination": view }))).into_response())
}

pub(crate) async fn remove_destination(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    if !u.destinations.iter().any(|d| d.id == id) {
        return Err(ApiError::not_found(format!("no destination {id}")));
    }
    let reply = command(
        &state,
        &u.id,
        Command::RemoveDestination { destination_id: id },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Look up who owns `address` on `channel`.
pub(crate) async fn owner(
    state: &AppState,
    channel: Channel,
    address: &str,
) -> Result<Option<AddressEntry>, ApiError> {
    let key = AddressEntry::key(channel, address);
    let v = state
        .addresses
        .get(&key)
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read the address index: {e}")))?;
    Ok(v.filter(|b| !b.is_empty())
        .and_then(|b| serde_json::from_slice(&b).ok()))
}

/// Refuse an IM address or phone number another user has registered.
pub(crate) async fn check_address_free(
    state: &AppState,
    user: &UserId,
    channel: Channel,
    address: &str,
) -> Result<(), ApiError> {
    if !AddressEntry::indexed(channel) {
        return Ok(());
    }
    match owner(state, channel, address).await? {
        Some(e) if e.user != *user => Err(ApiError::conflict(format!(
            "{address} is already registered by another user; replies from it could not be told apart"
        ))),
        _ => Ok(()),
    }
}
