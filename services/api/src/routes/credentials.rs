//! Replacing a user's credentials, each stopping at once: `POST /v1/me/token` (a new API
//! token; the other web sessions end with the old one), `POST /v1/me/feed` (new private feed
//! addresses) and `DELETE /v1/sessions` (sign out everywhere else). The inbound address has
//! its own, `POST /v1/inbound/address`. And the PIN that SMS replies changing settings need:
//! `PUT`/`DELETE /v1/me/reply-pin`.

use crate::auth::{authenticate, bearer, new_token, random_hex};
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::routes::users::feed_urls;
use crate::{ApiError, St, session};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tocsin_model::{Command, UserRecord, hash_token};

/// The web session the caller signed in with (by its id's hash), kept when the others end;
/// none for a caller with a bearer token.
fn callers_session(headers: &HeaderMap) -> Option<String> {
    if bearer(headers).is_some() {
        return None;
    }
    session::cookie(headers).map(hash_token)
}

async fn replace(
    state: &crate::AppState,
    u: &UserRecord,
    replacement: Command,
) -> Result<(), ApiError> {
    let reply = command(state, &u.id, replacement).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(())
}

/// `POST /v1/me/token`: a new API token, shown this once; the old one stops working at once,
/// and so does every web session but the caller's (one signed in with the old token among
/// them).
pub(crate) async fn new_api_token(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let token = new_token(&u.id);
    let replacement = Command::ReplaceCredentials {
        token_hash: Some(hash_token(&token)),
        feed_token_hash: None,
        end_sessions: true,
        keep_session: callers_session(&headers),
    };
    replace(&state, &u, replacement).await?;
    Ok(Json(serde_json::json!({ "token": token })))
}

/// `POST /v1/me/feed`: new private feed addresses, shown this once; the old ones answer 404
/// at once.
pub(crate) async fn new_feed_secret(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let secret = random_hex(16);
    let replacement = Command::ReplaceCredentials {
        token_hash: None,
        feed_token_hash: Some(hash_token(&secret)),
        end_sessions: false,
        keep_session: None,
    };
    replace(&state, &u, replacement).await?;
    Ok(Json(
        serde_json::json!({ "feed": feed_urls(&state, &u.id, &secret) }),
    ))
}

/// `DELETE /v1/sessions`: every web session of the user ends but the caller's own.
pub(crate) async fn end_other_sessions(
    State(state): St,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let replacement = Command::ReplaceCredentials {
        token_hash: None,
        feed_token_hash: None,
        end_sessions: true,
        keep_session: callers_session(&headers),
    };
    replace(&state, &u, replacement).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplyPinBody {
    pin: String,
}

/// `PUT /v1/me/reply-pin {pin}`: the PIN (4 to 8 digits) an SMS reply that changes settings
/// must start with (`4821 mute 30d`); the record keeps only its hash.
pub(crate) async fn set_reply_pin(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: ReplyPinBody = parse_body(&body)?;
    if !tocsin_model::is_pin(&req.pin) {
        return Err(ApiError::bad_request(
            "a reply PIN is 4 to 8 digits",
            Some("pin".into()),
        ));
    }
    let pin_hash = Some(tocsin_model::reply_pin_hash(&u.id, &req.pin));
    replace(&state, &u, Command::SetReplyPin { pin_hash }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/me/reply-pin`: no PIN; SMS replies then change no settings.
pub(crate) async fn remove_reply_pin(
    State(state): St,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    replace(&state, &u, Command::SetReplyPin { pin_hash: None }).await?;
    Ok(StatusCode::NO_CONTENT)
}
