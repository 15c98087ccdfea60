//! Who is calling: API tokens (`tk_<user>_<secret>`, only the hash stored) checked in
//! constant time against the user's record, and the admin token.

use crate::{ApiError, AppState};
use axum::http::{HeaderMap, header};
use rand::Rng;
use subtle::ConstantTimeEq;
use tocsin_model::{UserId, UserRecord, hash_token};

/// An API token is `tk_<user id>_<secret>`; only its hash is stored.
pub(crate) fn new_token(user: &UserId) -> String {
    format!("tk_{user}_{}", random_hex(16))
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The token in an `Authorization` value as ntfy's clients send it: `Bearer <token>`, or
/// `Basic <base64 of user:password>` with the token as the password (or as the user when the
/// password is empty).
pub(crate) fn token_of_authorization(value: &str) -> Option<String> {
    use base64::Engine;
    if let Some(t) = value.strip_prefix("Bearer ") {
        return Some(t.trim().to_owned()).filter(|t| !t.is_empty());
    }
    let encoded = value.strip_prefix("Basic ")?.trim();
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let pair = String::from_utf8(decoded).ok()?;
    let (user, password) = pair.split_once(':')?;
    let token = if password.is_empty() { user } else { password };
    Some(token.to_owned()).filter(|t| !t.is_empty())
}

pub(crate) fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

pub(crate) async fn load_user(
    state: &AppState,
    user: &UserId,
) -> Result<Option<UserRecord>, ApiError> {
    let entry = state
        .avatars
        .get(user.as_str())
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read user records: {e}")))?;
    match entry {
        None => Ok(None),
        Some(b) if b.is_empty() => Ok(None),
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| ApiError::internal(format!("user record for {user} is unreadable: {e}"))),
    }
}

/// The authenticated user, or 401: by the bearer token, or else by the web app's session
/// cookie. The same answer for a wrong token and an unknown user.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<UserRecord, ApiError> {
    if let Some(token) = bearer(headers) {
        return authenticate_token(state, token).await;
    }
    match crate::session::cookie(headers) {
        Some(value) => crate::session::authenticate_cookie(state, value).await,
        None => Err(ApiError::unauthorized(
            "send 'Authorization: Bearer <token>'",
        )),
    }
}

/// 429 when `user` is over `api.rate_per_user_per_minute`.
pub(crate) fn take_user_rate(state: &AppState, user: &UserRecord) -> Result<(), ApiError> {
    state.per_user.take(&user.id).map_err(|wait| {
        ApiError::too_many(format!(
            "too many requests for this user; retry in {}s",
            wait.as_secs().max(1)
        ))
    })
}

/// The user whose API token `token` is, or 401; then the user's request rate is checked.
pub(crate) async fn authenticate_token(
    state: &AppState,
    token: &str,
) -> Result<UserRecord, ApiError> {
    let bad = || ApiError::unauthorized("invalid token");
    let rest = token.strip_prefix("tk_").ok_or_else(bad)?;
    let (user, _secret) = rest.rsplit_once('_').ok_or_else(bad)?;
    let user = UserId::parse(user).map_err(|_| bad())?;
    let record = load_user(state, &user).await?.ok_or_else(bad)?;
    if !hashes_equal(&record.token_hash, &hash_token(token)) {
        return Err(bad());
    }
    take_user_rate(state, &record)?;
    Ok(record)
}

/// The caller is the operator: the admin token as a bearer token, or the web app's admin
/// session (which a sign-in with the admin token starts).
pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.cfg.admin_token.is_empty() {
        return Err(ApiError::forbidden(
            "admin calls are disabled: set api.admin_token (TOCSIN_API__ADMIN_TOKEN)",
        ));
    }
    if bearer(headers).is_none()
        && let Some(v) = crate::session::named_cookie(headers, crate::session::ADMIN_COOKIE)
    {
        return if crate::session::admin_valid(&state.cfg.admin_token, v, tocsin_model::now_ms()) {
            Ok(())
        } else {
            Err(ApiError::unauthorized(
                "the admin session ended: sign in again with the admin token",
            ))
        };
    }
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("send 'Authorization: Bearer <admin token>'"))?;
    if hashes_equal(&hash_token(token), &hash_token(&state.cfg.admin_token)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin token"))
    }
}

/// The URL of a source with its own secret: `<public url>/v1/<segment>/<user>/<source>/<secret>`
/// (`hooks`, `heartbeats`).
pub(crate) fn source_url(
    state: &AppState,
    segment: &str,
    user: &UserId,
    source_id: &str,
    secret: &str,
) -> String {
    format!(
        "{}/v1/{segment}/{user}/{source_id}/{secret}",
        state.cfg.public_url.trim_end_matches('/')
    )
}

/// The user `user` and their source `source_id` whose own secret (a heartbeat's ping URL, a
/// hook's URL) is `secret`; then the user's request rate is checked. Anything else is the
/// same 404, so a URL tells nothing about which users or sources exist.
pub(crate) async fn source_by_secret(
    state: &AppState,
    user: &str,
    source_id: &str,
    secret: &str,
) -> Result<(UserRecord, tocsin_model::Source), ApiError> {
    use tocsin_model::SourceSpec;
    let missing = || ApiError::not_found("no such URL");
    let user = UserId::parse(user).map_err(|_| missing())?;
    let record = load_user(state, &user).await?.ok_or_else(missing)?;
    let source = record
        .sources
        .iter()
        .find(|s| s.id == source_id)
        .ok_or_else(missing)?;
    let stored = match &source.spec {
        SourceSpec::Heartbeat { token_hash, .. } | SourceSpec::Hook { token_hash, .. } => {
            token_hash
        }
        _ => return Err(missing()),
    };
    if !hashes_equal(stored, &hash_token(secret)) {
        return Err(missing());
    }
    take_user_rate(state, &record)?;
    let source = source.clone();
    Ok((record, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_in_constant_time_and_exactly() {
        assert!(hashes_equal("abc", "abc"));
        assert!(!hashes_equal("abc", "abd"));
        assert!(!hashes_equal("abc", "ab"));
        let u = UserId::parse("u1").unwrap();
        let t = new_token(&u);
        assert!(t.starts_with("tk_u1_") && t.len() == 6 + 32);
    }
}
