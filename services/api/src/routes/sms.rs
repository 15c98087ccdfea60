//! Inbound SMS webhooks (Twilio's signed form POST, Kannel's get-url): a reply from a phone
//! number goes to the avatar of the user who registered it.

use crate::auth::hashes_equal;
use crate::client::to_avatar;
use crate::routes::destinations::owner;
use crate::{ApiError, AppState, St};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::collections::BTreeMap;
use tocsin_model::{AvatarMessage, Channel, now_ms, validate_e164};
use tracing::{info, warn};

/// Hand an SMS reply to the avatar of whoever owns `from`. Unknown senders are dropped (and
/// logged): a reply channel is no way into someone's account.
pub(crate) async fn sms_reply(
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
pub(crate) fn twilio_signature(
    auth_token: &str,
    url: &str,
    params: &BTreeMap<String, String>,
) -> String {
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
pub(crate) async fn twilio_inbound(
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
pub(crate) async fn kannel_inbound(
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
