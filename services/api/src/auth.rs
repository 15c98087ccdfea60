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

/// The authenticated user, or 401. The same answer for a wrong token and an unknown user.
pub(crate) async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<UserRecord, ApiError> {
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("send 'Authorization: Bearer <token>'"))?;
    let bad = || ApiError::unauthorized("invalid token");
    let rest = token.strip_prefix("tk_").ok_or_else(bad)?;
    let (user, _secret) = rest.rsplit_once('_').ok_or_else(bad)?;
    let user = UserId::parse(user).map_err(|_| bad())?;
    let record = load_user(state, &user).await?.ok_or_else(bad)?;
    if !hashes_equal(&record.token_hash, &hash_token(token)) {
        return Err(bad());
    }
    if let Err(wait) = state.per_user.take(&record.id) {
        return Err(ApiError::too_many(format!(
            "too many requests for this user; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    Ok(record)
}

pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.cfg.admin_token.is_empty() {
        return Err(ApiError::forbidden(
            "admin calls are disabled: set api.admin_token (TOCSIN_API__ADMIN_TOKEN)",
        ));
    }
    let token = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("send 'Authorization: Bearer <admin token>'"))?;
    if hashes_equal(&hash_token(token), &hash_token(&state.cfg.admin_token)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid admin token"))
    }
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
