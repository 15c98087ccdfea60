//! `/v1/users` (admin: create, list and delete users) and `/v1/me` (a user's own summary, and
//! deleting their own account).

use crate::auth::{authenticate, load_user, new_token, random_hex, require_admin};
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
use tocsin_model::{Command, UserId, UserRecord, hash_token};

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

/// A user as `/v1/me` and the admin's list show them.
fn user_view(u: &UserRecord) -> serde_json::Value {
    json!({
        "user_id": u.id,
        "name": u.name,
        "created_at_ms": u.created_at_ms,
        "sources": u.sources.len(),
        "destinations": u.destinations.len(),
        "reply_pin": u.reply_pin.is_some(),
    })
}

pub(crate) async fn me(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(user_view(&u)))
}

/// The operator's list is at most this long.
pub(crate) const USERS_LISTED: usize = 1000;

/// The first `limit` users, in the order of their records' keys.
pub(crate) async fn first_users(
    state: &AppState,
    limit: usize,
) -> Result<Vec<UserRecord>, ApiError> {
    use futures::StreamExt;
    let keys = state
        .avatars
        .keys()
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot list the users: {e}")))?;
    let mut keys = keys.take(limit);
    let mut users = Vec::new();
    while let Some(k) = keys.next().await {
        if let Ok(k) = k
            && let Ok(id) = UserId::parse(&k)
            && let Some(u) = load_user(state, &id).await?
        {
            users.push(u);
        }
    }
    Ok(users)
}

/// `GET /v1/users` (admin): the first 1,000 users.
pub(crate) async fn list_users(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let users = first_users(&state, USERS_LISTED).await?;
    let listed: Vec<_> = users.iter().map(user_view).collect();
    Ok(Json(json!({ "users": listed })))
}

/// Delete `u` and everything of theirs: the topics they made (kept by the API), then, by their
/// avatar, their record, sources, addresses, history and timers.
async fn delete(state: &AppState, u: &UserRecord) -> Result<StatusCode, ApiError> {
    for name in &u.topics {
        state
            .topics
            .delete(tocsin_model::TopicRecord::key(name))
            .await
            .map_err(|e| ApiError::unavailable(format!("cannot write topics: {e}")))?;
    }
    let reply = command(state, &u.id, Command::DeleteUser {}).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/users/{id}` (admin): the user and everything of theirs, at once; 404 for a user
/// who does not exist.
pub(crate) async fn delete_user(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    let no_user = || ApiError::not_found(format!("no user {id}"));
    let user = UserId::parse(&id).map_err(|_| no_user())?;
    let u = load_user(&state, &user).await?.ok_or_else(no_user)?;
    delete(&state, &u).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteMe {
    /// The user's own id, as a confirmation.
    confirm: String,
}

/// `DELETE /v1/me` `{"confirm": "<user id>"}`: a user deletes their own account.
pub(crate) async fn delete_me(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: DeleteMe = parse_body(&body)?;
    if req.confirm != u.id.as_str() {
        return Err(ApiError::bad_request(
            format!(
                "to delete your account and everything of it, send {{\"confirm\": \"{}\"}}",
                u.id
            ),
            Some("confirm".into()),
        ));
    }
    delete(&state, &u).await
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
