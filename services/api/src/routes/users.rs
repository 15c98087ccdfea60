//! `/v1/users` (admin: create a user) and `/v1/me`.

use crate::auth::{authenticate, new_token, random_hex, require_admin};
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{Command, UserId, hash_token};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateUser {
    #[serde(default)]
    name: String,
}

pub(crate) fn feed_urls(state: &AppState, user: &UserId, feed_token: &str) -> serde_json::Value {
    let base = state.cfg.public_url.trim_end_matches('/');
    json!({
        "atom": format!("{base}/feeds/{user}/{feed_token}.atom"),
        "rss": format!("{base}/feeds/{user}/{feed_token}.rss"),
    })
}

pub(crate) async fn create_user(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let req: CreateUser = parse_body(&body)?;
    let name = req.name.trim().to_owned();
    if name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "name: at most 100 characters",
            Some("name".into()),
        ));
    }
    let user = UserId::generate(rand::rng().random());
    let token = new_token(&user);
    let feed_token = random_hex(16);
    let inbound_token = inbound_secret();
    let reply = command(
        &state,
        &user,
        Command::CreateUser {
            name: name.clone(),
            token_hash: hash_token(&token),
            feed_token_hash: hash_token(&feed_token),
            inbound_token_hash: hash_token(&inbound_token),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    let body = json!({
        "user_id": user,
        "name": name,
        "token": token,
        "feed": feed_urls(&state, &user, &feed_token),
        "inbound_address": inbound_address(&state, &user, &inbound_token),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

pub(crate) async fn me(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({
        "user_id": u.id,
        "name": u.name,
        "created_at_ms": u.created_at_ms,
        "sources": u.sources.len(),
        "destinations": u.destinations.len(),
    })))
}

/// A new inbound address's secret: 128 random bits (32 hex digits; with a generated user id
/// the local part stays within SMTP's 64 characters).
pub(crate) fn inbound_secret() -> String {
    random_hex(16)
}

/// A user's inbound e-mail address: `<user>.<secret>@<api.inbound_domain>`.
pub(crate) fn inbound_address(
    state: &crate::AppState,
    user: &tocsin_model::UserId,
    secret: &str,
) -> String {
    format!("{user}.{secret}@{}", state.cfg.inbound_domain)
}
