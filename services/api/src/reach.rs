//! Reaching the person: the escalation policy, acknowledgements (API and signed links) and
//! the inbound SMS webhooks (Twilio, Kannel) that carry replies to the user's avatar.

use crate::{
    ApiError, AppState, St, authenticate, bus_error, command, hashes_equal, parse_body, refusal,
};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use tocsin_model::{
    AddressEntry, AvatarMessage, Channel, Command, NotificationId, Policy, UserId,
    ack_signature_valid, now_ms, validate_e164,
};
use tracing::{info, warn};

/// Publish `msg` into `user`'s silo with `id` as its message id.
async fn to_avatar(
    state: &AppState,
    user: &UserId,
    id: &str,
    msg: &AvatarMessage,
) -> Result<(), ApiError> {
    let subject = state
        .bus
        .subjects()
        .silo(state.bus.silo_of(user), user.as_str(), msg.kind());
    state
        .bus
        .publish_json(subject, id, msg)
        .await
        .map_err(bus_error)
}

pub async fn get_policy(
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

pub async fn put_policy(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let policy: Policy = parse_body(&body)?;
    if let Some(p) = policy.problems(&u.destinations).into_iter().next() {
        let field = p.split_once(':').map(|(f, _)| f.to_owned());
        return Err(ApiError::bad_request(p, field));
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

pub async fn delete_policy(State(state): St, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let reply = command(&state, &u.id, Command::SetPolicy { policy: None }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn notification_id(id: &str) -> Result<NotificationId, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(NotificationId(id.to_owned()))
    } else {
        Err(ApiError::bad_request(
            format!("{id:?} is not a notification id"),
            Some("id".into()),
        ))
    }
}

/// `POST /v1/notifications/{id}/ack`: the user acknowledges through the API.
pub async fn ack(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let u = authenticate(&state, &headers).await?;
    let id = notification_id(&id)?;
    let msg = AvatarMessage::Ack {
        notification_id: id.clone(),
        via: "api".into(),
        at_ms: now_ms(),
    };
    to_avatar(&state, &u.id, &tocsin_bus::msg_id::ack(&id, "api"), &msg).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "acknowledged": id }))))
}

/// The user and notification of a signed link, once the signature checks out.
async fn signed(
    state: &AppState,
    user: &str,
    id: &str,
    sig: &str,
) -> Result<(UserId, NotificationId), ApiError> {
    let bad = || ApiError::not_found("this acknowledgement link is not valid");
    let user = UserId::parse(user).map_err(|_| bad())?;
    let id = notification_id(id).map_err(|_| bad())?;
    let record = crate::load_user(state, &user).await?.ok_or_else(bad)?;
    if ack_signature_valid(&record.token_hash, &id, sig) {
        Ok((user, id))
    } else {
        Err(bad())
    }
}

fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\"><title>{title}</title></head><body style=\"font-family:sans-serif;max-width:30em;margin:3em auto\"><h1>{title}</h1>{body}</body></html>"
    ))
}

/// `GET /v1/ack/{user}/{id}/{sig}`: a page with one button. A GET never acknowledges: mail
/// scanners and link previews fetch links nobody clicked.
pub async fn ack_link_page(
    State(state): St,
    Path((user, id, sig)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    signed(&state, &user, &id, &sig).await?;
    Ok(page(
        "Acknowledge this notification?",
        "<p>Acknowledging stops any further escalation of this notification on every channel.</p><form method=\"post\"><button type=\"submit\" style=\"font-size:1.3em;padding:.5em 1.5em\">Acknowledge</button></form>",
    )
    .into_response())
}

/// `POST /v1/ack/{user}/{id}/{sig}`: the button on that page (or an ntfy action).
pub async fn ack_link(
    State(state): St,
    Path((user, id, sig)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (user, id) = signed(&state, &user, &id, &sig).await?;
    let msg = AvatarMessage::Ack {
        notification_id: id.clone(),
        via: "link".into(),
        at_ms: now_ms(),
    };
    to_avatar(&state, &user, &tocsin_bus::msg_id::ack(&id, "link"), &msg).await?;
    Ok(page(
        "Acknowledged",
        "<p>No further escalation will be sent for this notification.</p>",
    )
    .into_response())
}

/// Look up who owns `address` on `channel`.
async fn owner(
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
pub async fn check_address_free(
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

/// Hand an SMS reply to the avatar of whoever owns `from`. Unknown senders are dropped (and
/// logged): a reply channel is no way into someone's account.
async fn sms_reply(
    state: &AppState,
    from: &str,
    text: &str,
    provider_id: &str,
) -> Result<(), ApiError> {
    let raw = from.trim();
    let number = if raw.starts_with('+') {
        raw.to_owned()
    } else {
        format!("+{raw}")
    };
    let Ok(number) = validate_e164(&number) else {
        warn!(
            from,
            "inbound SMS from something that is not a phone number; dropped"
        );
        return Ok(());
    };
    let Some(entry) = owner(state, Channel::Sms, &number).await? else {
        info!(from = %number, "inbound SMS from a number no user registered; dropped");
        return Ok(());
    };
    let msg = AvatarMessage::Reply {
        channel: Channel::Sms,
        address: entry.address.clone(),
        text: tocsin_model::text::truncate(text, 1000),
        at_ms: now_ms(),
    };
    let id = tocsin_bus::msg_id::sms_reply(&tocsin_model::digest(&[provider_id, &number, text]));
    to_avatar(state, &entry.user, &id, &msg).await
}

/// Twilio's request signature: base64 HMAC-SHA1, keyed by the auth token, over the full URL
/// followed by every POST parameter's name and value, sorted by name.
pub fn twilio_signature(auth_token: &str, url: &str, params: &BTreeMap<String, String>) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in params {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `POST /v1/sms/twilio`: Twilio's incoming-message webhook. The signature is checked against
/// `api.twilio_auth_token` and the URL Twilio was told (`api.public_url` + the path).
pub async fn twilio_inbound(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if state.cfg.twilio_auth_token.is_empty() {
        return Err(ApiError::forbidden(
            "inbound SMS from Twilio is off: set api.twilio_auth_token",
        ));
    }
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
            .map_err(|e| ApiError::bad_request(format!("not a form body: {e}"), None))?
            .into_iter()
            .collect();
    let url = format!(
        "{}/v1/sms/twilio",
        state.cfg.public_url.trim_end_matches('/')
    );
    let want = twilio_signature(&state.cfg.twilio_auth_token, &url, &params);
    let got = headers
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !hashes_equal(&want, got) {
        warn!(%url, "an inbound SMS webhook with a wrong X-Twilio-Signature was refused (check api.public_url and api.twilio_auth_token)");
        return Err(ApiError::forbidden("invalid X-Twilio-Signature"));
    }
    let from = params.get("From").map(String::as_str).unwrap_or("");
    let text = params.get("Body").map(String::as_str).unwrap_or("");
    let sid = params.get("MessageSid").map(String::as_str).unwrap_or("");
    sms_reply(&state, from, text, sid).await?;
    Ok((
        [(header::CONTENT_TYPE, "text/xml")],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct KannelInbound {
    #[serde(default)]
    token: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    text: String,
    /// Kannel's timestamp (`%t`), to tell repeated identical texts apart.
    #[serde(default)]
    time: String,
}

/// `GET /v1/sms/kannel?token=…&from=%p&text=%a&time=%t`: Kannel's `sms-service` get-url.
pub async fn kannel_inbound(
    State(state): St,
    Query(q): Query<KannelInbound>,
) -> Result<Response, ApiError> {
    if state.cfg.sms_inbound_token.is_empty() {
        return Err(ApiError::forbidden(
            "inbound SMS from a gateway is off: set api.sms_inbound_token",
        ));
    }
    if !hashes_equal(&q.token, &state.cfg.sms_inbound_token) {
        return Err(ApiError::forbidden("invalid token"));
    }
    sms_reply(&state, &q.from, &q.text, &q.time).await?;
    // Kannel sends a non-empty answer back to the phone; say nothing
    Ok(StatusCode::NO_CONTENT.into_response())
}
