//! `/v1/destinations`: where a user is reached.

use crate::auth::{authenticate, random_hex};
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{AddressEntry, Channel, Command, Destination, UserId, Verification, now_ms};

/// A destination as the API shows it: the secret is never returned.
pub(crate) fn destination_view(d: &Destination) -> serde_json::Value {
    json!({
        "id": d.id,
        "channel": d.channel,
        "address": d.address,
        "label": d.label,
        "signed": d.secret.is_some(),
        "push_format": d.push_format,
        "throttle": d.throttle,
        "verified": d.verified(),
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
    /// At most so many notifications an hour; the rest of the hour as one digest.
    #[serde(default)]
    throttle: Option<tocsin_model::Throttle>,
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
        throttle: req.throttle,
        // unconfirmed until the code sent below comes back
        verification: (state.cfg.verify_destinations && Verification::needed(req.channel)).then(
            || {
                Box::new(Verification {
                    code_hash: String::new(),
                    sent_at_ms: 0,
                    expires_at_ms: 0,
                    attempts: 0,
                })
            },
        ),
        created_at_ms: now_ms(),
    })
    .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    check_address_usable(&state, &u.id, destination.channel, &destination.address).await?;
    let view = destination_view(&destination);
    let (id, unconfirmed) = (destination.id.clone(), !destination.verified());
    let channel = destination.channel;
    let reply = command(&state, &u.id, Command::AddDestination { destination }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    let mut body = json!({ "destination": view });
    if unconfirmed && !state.served(channel).await {
        // the code would wait, unsent, for a delivery instance that may never come
        body["verification"] = json!(format!(
            "no code was sent: this server does not deliver by {} yet (its operator adds it to delivery.channels, docs/channels.md); once it does, ask for a code with POST /v1/destinations/{id}/verify {{}}",
            channel.as_str()
        ));
    } else if unconfirmed {
        body["verification"] = json!(match send_code(&state, &u.id, &id).await {
            Ok(()) => format!(
                "a code was sent to it: give it back with POST /v1/destinations/{id}/verify {{\"code\": \"…\"}} within {} minutes; until then it gets nothing",
                Verification::LIFETIME_MS / 60_000
            ),
            Err(e) => format!(
                "no code could be sent yet ({}): ask for one with POST /v1/destinations/{id}/verify {{}}",
                e.message
            ),
        });
    }
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Send a new confirmation code to `user`'s destination `id` (the avatar sends it, at most
/// once a minute).
async fn send_code(state: &AppState, user: &UserId, id: &str) -> Result<(), ApiError> {
    let code = format!("{:06}", rand::rng().random_range(0..1_000_000u32));
    let send = Command::SendVerificationCode {
        destination_id: id.to_owned(),
        code,
    };
    let reply = command(state, user, send).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Verify {
    #[serde(default)]
    code: Option<String>,
}

/// `POST /v1/destinations/{id}/verify` `{code}`: confirm a destination with the code sent to
/// it; `{}`: send a new code (at most once a minute; counted with previews and test messages,
/// each being a message to an address the user typed).
pub(crate) async fn verify_destination(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: Verify = parse_body(&body)?;
    let Some(d) = u.destinations.iter().find(|d| d.id == id) else {
        return Err(ApiError::not_found(format!("no destination {id}")));
    };
    let Some(code) = req.code else {
        if !state.served(d.channel).await {
            return Err(ApiError::conflict(format!(
                "no code can be sent: this server does not deliver by {} yet (its operator adds it to delivery.channels, docs/channels.md)",
                d.channel.as_str()
            )));
        }
        if let Err(wait) = state.previews.take(&u.id) {
            return Err(ApiError::too_many(format!(
                "too many previews, test messages and codes; retry in {}s",
                wait.as_secs().max(1)
            )));
        }
        send_code(&state, &u.id, &id).await?;
        return Ok(Json(json!({ "sent_to": d.address })));
    };
    let verify = Command::VerifyDestination {
        destination_id: id.clone(),
        code_hash: tocsin_model::hash_token(code.trim()),
    };
    let reply = command(&state, &u.id, verify).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(json!({ "destination": id, "verified": true })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditDestination {
    #[serde(default)]
    label: Option<String>,
    /// A throttle, or `null` to lift it.
    #[serde(default, deserialize_with = "crate::routes::sources::present")]
    throttle: Option<Option<tocsin_model::Throttle>>,
}

/// `PUT /v1/destinations/{id}` `{label?, throttle?}`: rename a destination, or set (`null`:
/// lift) its throttle; its channel and address are kept (add a new destination for those).
pub(crate) async fn edit_destination(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let edit: EditDestination = parse_body(&body)?;
    let Some(mut destination) = u.destinations.iter().find(|d| d.id == id).cloned() else {
        return Err(ApiError::not_found(format!("no destination {id}")));
    };
    if let Some(label) = edit.label {
        destination.label = label.trim().to_owned();
    }
    if let Some(throttle) = edit.throttle {
        destination.throttle = throttle;
    }
    let destination = tocsin_model::validate_destination(destination)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let view = destination_view(&destination);
    let reply = command(&state, &u.id, Command::AddDestination { destination }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(json!({ "destination": view })).into_response())
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

/// Refuse an address that leads back into tocsin (its own sending address, an inbound
/// address, its own API), a phone number the operator does not text, and an IM address or
/// phone number another user has registered.
async fn check_address_usable(
    state: &AppState,
    user: &UserId,
    channel: Channel,
    address: &str,
) -> Result<(), ApiError> {
    let sender = state
        .keys
        .get(tocsin_model::own::key(channel))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read tocsin's own addresses: {e}")))?;
    let own = tocsin_model::own::OwnAddresses {
        sender: sender.as_deref().and_then(|b| std::str::from_utf8(b).ok()),
        inbound_domain: &state.cfg.inbound_domain,
        public_url: &state.cfg.public_url,
    };
    if let Some(why) = tocsin_model::own::loops_back(channel, address, &own) {
        return Err(ApiError::bad_request(why, Some("address".into())));
    }
    if channel == Channel::Sms {
        crate::sms_numbers::allowed(
            address,
            &state.cfg.sms_allowed_prefixes,
            &state.cfg.sms_blocked_prefixes,
        )
        .map_err(|why| ApiError::bad_request(why, Some("address".into())))?;
    }
    if !AddressEntry::indexed(channel) {
        return Ok(());
    }
    let claim_after_ms = state.cfg.claim_unconfirmed_after_secs.saturating_mul(1000) as i64;
    match owner(state, channel, address)
        .await?
        .and_then(|e| e.held_against(user, now_ms(), claim_after_ms))
    {
        Some(why) => Err(ApiError::conflict(why)),
        None => Ok(()),
    }
}

/// `POST /v1/destinations/{id}/test`: one test message to the destination now, sent by a
/// delivery instance serving its channel; answers whether it was delivered and the channel's
/// words (a webhook's status, the SMTP relay's answer). Counted with feed previews: each is
/// a request to an address the user chose.
pub(crate) async fn test_destination(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<tocsin_model::TestResult>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let Some(destination) = u.destinations.iter().find(|d| d.id == id).cloned() else {
        return Err(ApiError::not_found(format!("no destination {id}")));
    };
    if !destination.verified() {
        return Err(ApiError::conflict(format!(
            "destination {id} is not confirmed yet: give back the code sent to it (POST /v1/destinations/{id}/verify)"
        )));
    }
    if let Err(wait) = state.previews.take(&u.id) {
        return Err(ApiError::too_many(format!(
            "too many test messages and previews; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let channel = destination.channel;
    let ask = tocsin_model::DestinationTest {
        user: u.id.clone(),
        destination,
    };
    let reply: tocsin_model::Reply<tocsin_model::TestResult> = state
        .bus
        .request_json(
            state.bus.subjects().delivery_test(channel.as_str()),
            &ask,
            std::time::Duration::from_secs(state.cfg.query_timeout_secs),
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "no delivery instance serving the {} channel answered (delivery.channels): {e}",
                channel.as_str()
            ))
        })?;
    match reply {
        tocsin_model::Reply::Ok(r) => Ok(Json(r)),
        tocsin_model::Reply::Err(e) => Err(ApiError::internal(e)),
    }
}
