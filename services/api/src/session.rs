//! Browser sessions for the web app: the `tocsin_session` cookie (`ws_<user>_<secret>`, only
//! its hash kept in the user's record), the CSRF token derived from it, and the guard that
//! drops the cookie from any changing request that does not carry that token.
//!
//! The JSON API takes the cookie wherever it takes a bearer token, so the web app changes
//! things through the same endpoints as every other client (ADR 0023).

use crate::auth::{hashes_equal, load_user, random_hex};
use crate::{ApiError, AppState};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use tocsin_model::{Millis, UserId, UserRecord, WebSession, hash_token, now_ms};

pub(crate) const COOKIE: &str = "tocsin_session";
/// The operator's session in the web app's admin screen (signed in with the admin token).
pub(crate) const ADMIN_COOKIE: &str = "tocsin_admin";
/// An admin session lasts this long (it cannot be ended early but by changing the token).
pub(crate) const ADMIN_SESSION_SECS: u64 = 12 * 3600;
/// The header a changing request authenticated by the cookie must carry.
pub(crate) const CSRF_HEADER: &str = "x-csrf-token";

/// A new session cookie value for `user`.
pub(crate) fn new_cookie_value(user: &UserId) -> String {
    format!("ws_{user}_{}", random_hex(16))
}

/// The session cookie's value in `headers`, if any.
pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    named_cookie(headers, COOKIE)
}

/// The value of cookie `name` in `headers`, if any.
pub(crate) fn named_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim())
        .filter(|v| !v.is_empty())
}

/// The admin session's signature over what it says (`<expiry ms>.<nonce>`), keyed by the
/// admin token: a new token ends every admin session.
fn admin_mac(admin_token: &str, body: &str) -> String {
    tocsin_model::digest(&["tocsin admin session", admin_token, body])
}

/// A new admin cookie value, valid until `now + ADMIN_SESSION_SECS`.
pub(crate) fn new_admin_value(admin_token: &str, now: Millis) -> String {
    let body = format!(
        "{}.{}",
        now.saturating_add(ADMIN_SESSION_SECS as i64 * 1000),
        random_hex(12)
    );
    format!("adm.{body}.{}", admin_mac(admin_token, &body))
}

/// Whether `value` is a live admin session for `admin_token` (empty: admin is off).
pub(crate) fn admin_valid(admin_token: &str, value: &str, now: Millis) -> bool {
    let Some(rest) = value.strip_prefix("adm.") else {
        return false;
    };
    let Some((body, mac)) = rest.rsplit_once('.') else {
        return false;
    };
    let live = body
        .split_once('.')
        .and_then(|(exp, _)| exp.parse::<Millis>().ok())
        .is_some_and(|exp| exp > now);
    !admin_token.is_empty() && live && hashes_equal(mac, &admin_mac(admin_token, body))
}

/// The CSRF token of a session: derived from its cookie, which scripts cannot read
/// (HttpOnly) and other sites cannot send with a custom header.
pub(crate) fn csrf_token(cookie_value: &str) -> String {
    tocsin_model::digest(&["tocsin csrf", cookie_value])[..32].to_owned()
}

/// The `Set-Cookie` value that holds the session `value` for `max_age_secs` (0: removes it).
pub(crate) fn set_cookie(state: &AppState, value: &str, max_age_secs: u64) -> HeaderValue {
    set_named_cookie(state, COOKIE, value, max_age_secs)
}

/// [`set_cookie`] for cookie `name`.
pub(crate) fn set_named_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age_secs: u64,
) -> HeaderValue {
    let secure = if state.cfg.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    let v =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&v)
        .unwrap_or_else(|_| HeaderValue::from_static("tocsin_session=; Max-Age=0"))
}

/// Whether a request with this method and these headers may use its session cookie: reads
/// always may; a change only with the session's CSRF token, and never from another site.
pub(crate) fn cookie_usable(method: &Method, headers: &HeaderMap, value: &str) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let cross_site = headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site");
    let token = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    !cross_site && hashes_equal(token, &csrf_token(value))
}

/// Middleware: a changing request whose session cookie comes without its CSRF token (a form
/// on another site posting here) loses the cookie, and with it any authority.
pub(crate) async fn csrf_guard(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let forged = [COOKIE, ADMIN_COOKIE].iter().any(|name| {
        named_cookie(req.headers(), name)
            .is_some_and(|value| !cookie_usable(req.method(), req.headers(), value))
    });
    if forged {
        tracing::debug!("session cookies ignored: a change without the session's CSRF token");
        req.headers_mut().remove(header::COOKIE);
    }
    next.run(req).await
}

/// The user whose live session cookie `value` is, or 401.
pub(crate) async fn authenticate_cookie(
    state: &AppState,
    value: &str,
) -> Result<UserRecord, ApiError> {
    let bad = || ApiError::unauthorized("not signed in, or the session ended: sign in again");
    let rest = value.strip_prefix("ws_").ok_or_else(bad)?;
    let (user, _secret) = rest.rsplit_once('_').ok_or_else(bad)?;
    let user = UserId::parse(user).map_err(|_| bad())?;
    let record = load_user(state, &user).await?.ok_or_else(bad)?;
    WebSession::live(&record.sessions, &hash_token(value), now_ms()).ok_or_else(bad)?;
    crate::auth::take_user_rate(state, &record)?;
    Ok(record)
}

/// The session a sign-in starts: its cookie value and what the record keeps of it.
pub(crate) fn start(
    state: &AppState,
    user: &UserId,
    agent: &str,
    now: Millis,
) -> (String, WebSession) {
    let value = new_cookie_value(user);
    let days = state.cfg.session_days as i64;
    let session = WebSession {
        id_hash: hash_token(&value),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(days * 86_400_000),
        label: agent.to_owned(),
    };
    (value, session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_needs_the_token_of_its_own_cookie() {
        let value = "ws_ann_0123456789abcdef0123456789abcdef";
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("a=b; {COOKIE}={value}; c=d")).unwrap(),
        );
        assert_eq!(cookie(&h), Some(value));
        assert!(
            cookie_usable(&Method::GET, &h, value),
            "reads need no token"
        );
        assert!(!cookie_usable(&Method::POST, &h, value));
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token("ws_bob_x")).unwrap(),
        );
        assert!(
            !cookie_usable(&Method::POST, &h, value),
            "another session's token"
        );
        h.insert(
            CSRF_HEADER,
            HeaderValue::from_str(&csrf_token(value)).unwrap(),
        );
        assert!(cookie_usable(&Method::DELETE, &h, value));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(
            !cookie_usable(&Method::POST, &h, value),
            "never from another site"
        );
        assert_ne!(csrf_token(value), csrf_token("ws_ann_other"));
    }

    #[test]
    fn an_admin_session_is_signed_by_the_admin_token_and_ends() {
        let v = new_admin_value("admin-token-0123456789", 1_000);
        assert!(admin_valid("admin-token-0123456789", &v, 2_000));
        assert!(
            !admin_valid("another-token-0123456789", &v, 2_000),
            "a new token ends it"
        );
        assert!(!admin_valid(
            "admin-token-0123456789",
            &v,
            1_000 + ADMIN_SESSION_SECS as i64 * 1000
        ));
        assert!(!admin_valid("", &v, 2_000), "admin off");
        let forged = v.replacen("adm.", "adm.9", 1);
        assert!(
            !admin_valid("admin-token-0123456789", &forged, 2_000),
            "a longer expiry"
        );
    }
}
