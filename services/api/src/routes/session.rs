//! `/v1/session`: a browser signs in with the user's API token and gets the session cookie;
//! `DELETE` signs it out (the session ends in the record, not only in the browser). Signed in
//! with the admin token, it gets the admin screen's session instead.

use crate::auth::{authenticate, authenticate_token, hashes_equal, require_admin};
use crate::client::{command, refusal};
use crate::routes::parse_body_strict;
use crate::session::{self, COOKIE};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{Command, hash_token, now_ms};

#[derive(Deserialize)]
pub(crate) struct SignIn {
    token: String,
}

/// `POST /v1/session` `{"token"}`: 201 with the cookie, the user and the CSRF token.
pub(crate) async fn sign_in(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // only JSON: a form on another site can post text/plain that parses as JSON, but cannot
    // send this content type without the browser asking first (and being refused)
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == "application/json");
    if !json {
        return Err(ApiError::unsupported_media_type(
            "send the token as JSON with 'Content-Type: application/json'",
        ));
    }
    let req: SignIn = parse_body_strict(&body)?;
    let token = req.token.trim();
    let admin = &state.cfg.admin_token;
    if !admin.is_empty() && hashes_equal(&hash_token(token), &hash_token(admin)) {
        // the operator: a session of the admin screen, signed with the admin token
        let value = session::new_admin_value(admin, now_ms());
        let cookie = session::set_named_cookie(
            &state,
            session::ADMIN_COOKIE,
            &value,
            session::ADMIN_SESSION_SECS,
        );
        return Ok((
            StatusCode::CREATED,
            [(header::SET_COOKIE, cookie)],
            Json(json!({ "admin": true, "csrf": session::csrf_token(&value) })),
        )
            .into_response());
    }
    let user = authenticate_token(&state, token).await?;
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser");
    let now = now_ms();
    let (value, web_session) = session::start(&state, &user.id, agent, now);
    let expires_at_ms = web_session.expires_at_ms;
    let reply = command(
        &state,
        &user.id,
        Command::StartSession {
            session: web_session,
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(signed_in(&state, &user.id, &value, expires_at_ms))
}

/// 201 with the session cookie `value` of `user`, its CSRF token and when it ends.
fn signed_in(
    state: &crate::AppState,
    user: &tocsin_model::UserId,
    value: &str,
    expires_at_ms: tocsin_model::Millis,
) -> Response {
    let cookie = session::set_cookie(state, value, state.cfg.session_days * 86_400);
    (
        StatusCode::CREATED,
        [(header::SET_COOKIE, cookie)],
        Json(json!({
            "user": user,
            "csrf": session::csrf_token(value),
            "expires_at_ms": expires_at_ms,
        })),
    )
        .into_response()
}

/// `DELETE /v1/session`: the session ends and the cookie is removed.
pub(crate) async fn sign_out(State(state): St, headers: HeaderMap) -> Result<Response, ApiError> {
    if session::cookie(&headers).is_none()
        && session::named_cookie(&headers, session::ADMIN_COOKIE).is_some()
    {
        require_admin(&state, &headers)?;
        return Ok((
            StatusCode::NO_CONTENT,
            [(
                header::SET_COOKIE,
                session::set_named_cookie(&state, session::ADMIN_COOKIE, "", 0),
            )],
        )
            .into_response());
    }
    let Some(value) = session::cookie(&headers) else {
        return Err(ApiError::unauthorized(format!(
            "not signed in (no {COOKIE} cookie, or a change without its CSRF token)"
        )));
    };
    let user = authenticate(&state, &headers).await?;
    let reply = command(
        &state,
        &user.id,
        Command::EndSession {
            id_hash: tocsin_model::hash_token(value),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::set_cookie(&state, "", 0))],
    )
        .into_response())
}

#[derive(Deserialize)]
pub(crate) struct LinkRequest {
    user: String,
}

/// `POST /v1/session/link` `{"user"}`: mail the user a one-time sign-in link at their e-mail
/// destinations (only where a delivery instance serves e-mail). 202 whether or not the user
/// exists, has an e-mail destination or has links waiting (the avatar refuses those, as a
/// `refused` event), so the answer tells nobody which ids are in use.
pub(crate) async fn mail_link(
    State(state): St,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: LinkRequest = parse_body_strict(&body)?;
    let mailed = || {
        (
            StatusCode::ACCEPTED,
            Json(json!({ "mailed": "if that user has an e-mail destination, a sign-in link is on its way" })),
        )
            .into_response()
    };
    let Ok(user) = tocsin_model::UserId::parse(req.user.trim()) else {
        return Ok(mailed());
    };
    // the same limit, the same answer and no wait for the avatar whether or not the user
    // exists or has an e-mail destination: nothing tells an outsider which ids are in use
    if let Err(wait) = state.previews.take(&user) {
        return Err(ApiError::too_many(format!(
            "too many sign-in links asked for; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    if crate::auth::load_user(&state, &user).await?.is_none() {
        return Ok(mailed());
    }
    let code = crate::auth::random_hex(16);
    let link = format!(
        "{}/app/sign-in/link/{user}/{code}",
        state.cfg.public_url.trim_end_matches('/')
    );
    let command_id = format!("c{}", crate::auth::random_hex(12));
    let msg = tocsin_model::AvatarMessage::Command {
        command_id: command_id.clone(),
        command: Command::MailSignInLink {
            code_hash: hash_token(&code),
            link,
        },
        reply_to: None,
    };
    crate::client::to_avatar(&state, &user, &command_id, &msg).await?;
    Ok(mailed())
}

/// `POST /v1/session/link/{user}/{code}`: sign in with a mailed link; it works once.
pub(crate) async fn use_link(
    State(state): St,
    headers: HeaderMap,
    axum::extract::Path((user, code)): axum::extract::Path<(String, String)>,
) -> Result<Response, ApiError> {
    let bad = || ApiError::not_found("this sign-in link is not valid: ask for a new one");
    let user = tocsin_model::UserId::parse(&user).map_err(|_| bad())?;
    if code.len() != 32 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown browser");
    let (value, web_session) = session::start(&state, &user, agent, now_ms());
    let expires_at_ms = web_session.expires_at_ms;
    let reply = command(
        &state,
        &user,
        Command::UseSignInLink {
            code_hash: hash_token(&code),
            session: web_session,
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(signed_in(&state, &user, &value, expires_at_ms))
}
