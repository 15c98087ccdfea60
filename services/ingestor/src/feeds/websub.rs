//! WebSub (PubSubHubbub): when a feed advertises a hub, subscribe to it and take the hub's
//! pushes instead of polling often.
//!
//! The ingestor asks the hub to subscribe its callback `<public_url>/websub/<feed key>` with a
//! fresh secret; the hub verifies the intent with a GET carrying a challenge, which we echo
//! only for a subscription we asked for; the hub then POSTs each new version of the feed,
//! signed with `X-Hub-Signature: sha256=…` (or `sha1=…`), which is processed exactly like a
//! polled document. While a verified lease is running the feed is polled only every
//! `websub_poll_interval_secs` as a safety net; the lease is renewed when a fifth of it is left.

use crate::feeds::store::save;
use crate::feeds::{FeedRecord, Shared};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use tocsin_model::Millis;
use tracing::{info, warn};

/// A feed's WebSub subscription, kept in its `FeedRecord`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct WebSub {
    pub hub: String,
    pub topic: String,
    pub secret: String,
    /// The hub confirmed the subscription (intent verified).
    pub verified: bool,
    pub lease_expires_ms: Millis,
    pub requested_at_ms: Millis,
}

/// What to do about a feed's hub after a successful fetch.
#[derive(Debug, PartialEq)]
pub enum Action {
    None,
    Subscribe { hub: String, topic: String },
}

/// Decide whether to (re)subscribe: a hub newly advertised or changed, a lease running out,
/// or a request that was never verified (asked again after an hour).
pub fn plan(
    current: Option<&WebSub>,
    hub: Option<&str>,
    topic: &str,
    lease_secs: u64,
    now: Millis,
) -> Action {
    let Some(hub) = hub else { return Action::None };
    let subscribe = Action::Subscribe {
        hub: hub.to_owned(),
        topic: topic.to_owned(),
    };
    match current {
        None => subscribe,
        Some(ws) if ws.hub != hub || ws.topic != topic => subscribe,
        Some(ws) if ws.verified => {
            let renew_at = ws.lease_expires_ms - (lease_secs as Millis * 1000) / 5;
            if now >= renew_at {
                subscribe
            } else {
                Action::None
            }
        }
        Some(ws) if now - ws.requested_at_ms > 3_600_000 => subscribe,
        Some(_) => Action::None,
    }
}

/// How long after our request a hub may still verify it.
const VERIFY_WITHIN_MS: Millis = 3_600_000;

/// A hub's verification of a subscription: accepted only for the topic we asked about, while
/// our request is recent (a verification nobody asked for, or a stale one, is refused), with
/// the lease it grants clamped to what we asked for and to at least a minute. True when
/// accepted (`ws` is then verified until the lease ends).
pub fn confirm(
    ws: &mut WebSub,
    topic: &str,
    granted_secs: i64,
    asked_secs: u64,
    now: Millis,
) -> bool {
    let asked = i64::try_from(asked_secs).unwrap_or(i64::MAX).max(60);
    let pending = now.saturating_sub(ws.requested_at_ms) < VERIFY_WITHIN_MS;
    if ws.topic != topic || !pending {
        return false;
    }
    ws.verified = true;
    ws.lease_expires_ms = now.saturating_add(granted_secs.clamp(60, asked).saturating_mul(1000));
    true
}

/// Whether pushes are flowing: a verified lease that has not expired.
pub fn active(ws: Option<&WebSub>, now: Millis) -> bool {
    ws.is_some_and(|w| w.verified && w.lease_expires_ms > now)
}

/// Check `X-Hub-Signature` (`sha1=<hex>` or `sha256=<hex>`) over `body`, in constant time.
pub fn signature_ok(secret: &str, header: Option<&str>, body: &[u8]) -> bool {
    let Some((algo, hex_sig)) = header.and_then(|h| h.trim().split_once('=')) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    match algo {
        "sha256" => {
            let mut mac =
                Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        }
        "sha1" => {
            let mut mac =
                Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
            mac.update(body);
            mac.verify_slice(&sig).is_ok()
        }
        _ => false,
    }
}

fn callback_url(public_url: &str, key: &str) -> String {
    format!("{}/websub/{key}", public_url.trim_end_matches('/'))
}

/// Ask `hub` to (un)subscribe our callback for `topic`.
pub async fn request(
    client: &tocsin_netguard::GuardedClient,
    public_url: &str,
    key: &str,
    mode: &str,
    ws: &WebSub,
    lease_secs: u64,
) -> Result<(), String> {
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("hub.mode", mode)
        .append_pair("hub.topic", &ws.topic)
        .append_pair("hub.callback", &callback_url(public_url, key))
        .append_pair("hub.secret", &ws.secret)
        .append_pair("hub.lease_seconds", &lease_secs.to_string())
        .finish();
    let resp = client
        .post(&ws.hub)?
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| tocsin_netguard::describe(&e).0)?;
    if resp.status().is_success() {
        Ok(())
    } else {
        Err(format!("the hub answered HTTP {}", resp.status().as_u16()))
    }
}

/// The callback routes, served on `ingestor.websub_listen`.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.cfg.max_body_bytes;
    Router::new()
        .route("/websub/{key}", get(verify).post(push))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

async fn verify(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mode = q.get("hub.mode").map(String::as_str).unwrap_or_default();
    let topic = q.get("hub.topic").cloned().unwrap_or_default();
    let challenge = q.get("hub.challenge").cloned().unwrap_or_default();
    let lease: i64 = q
        .get("hub.lease_seconds")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let now = tocsin_model::now_ms();
    let updated: Option<FeedRecord> = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        match (mode, feeds.get_mut(&key)) {
            ("subscribe", Some(rec)) => {
                let asked = shared.cfg.websub_lease_secs;
                let ok = !challenge.is_empty()
                    && rec
                        .websub
                        .as_mut()
                        .is_some_and(|ws| confirm(ws, &topic, lease, asked, now));
                ok.then(|| rec.clone())
            }
            // we only ever unsubscribe from feeds nobody watches any more
            ("unsubscribe", None) => return challenge.into_response(),
            ("unsubscribe", Some(rec)) if rec.websub.is_none() => return challenge.into_response(),
            ("denied", Some(rec)) if rec.websub.as_ref().is_some_and(|w| w.topic == topic) => {
                warn!(url = %rec.url, reason = ?q.get("hub.reason"), "the hub denied our subscription; polling instead");
                rec.websub = None;
                Some(rec.clone())
            }
            _ => None,
        }
    };
    match updated {
        Some(rec) => {
            if let Err(e) = save(&shared, &key, &rec).await {
                warn!(error = %e, "cannot save the WebSub state");
            }
            if mode == "subscribe" {
                info!(url = %rec.url, lease_secs = lease, "WebSub subscription verified; taking pushes");
                challenge.into_response()
            } else {
                StatusCode::OK.into_response()
            }
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn push(
    State(shared): State<Arc<Shared>>,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let secret = {
        let feeds = shared.feeds.lock().expect("feeds lock");
        feeds
            .get(&key)
            .and_then(|r| r.websub.as_ref())
            .map(|w| w.secret.clone())
    };
    let Some(secret) = secret else {
        // 410 tells the hub to stop: we hold no subscription for this callback
        return StatusCode::GONE;
    };
    let sig = headers.get("x-hub-signature").and_then(|v| v.to_str().ok());
    if !signature_ok(&secret, sig, &body) {
        // the spec asks for a 2xx so that a forger learns nothing; the content is dropped
        warn!(key, "WebSub push with a missing or wrong signature ignored");
        metrics::counter!(crate::telemetry::WEBSUB_PUSHES, "outcome" => "bad_signature")
            .increment(1);
        return StatusCode::ACCEPTED;
    }
    metrics::counter!(crate::telemetry::WEBSUB_PUSHES, "outcome" => "ok").increment(1);
    let tasks = shared.tasks.clone();
    tasks.spawn(async move { crate::feeds::poll::handle_push(&shared, &key, body.to_vec()).await });
    StatusCode::ACCEPTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_recent_request_is_verified_and_its_lease_is_clamped() {
        let topic = "https://t/";
        let mut w = ws(false, 0, 1_000);
        // another topic, or a request more than an hour old: refused
        assert!(!confirm(
            &mut w,
            "https://evil.example/",
            600,
            864_000,
            2_000
        ));
        assert!(!confirm(&mut w, topic, 600, 864_000, 1_000 + 3_600_001));
        assert!(!w.verified);
        // a hub granting i64::MAX seconds gets what we asked for, with no overflow
        assert!(confirm(&mut w, topic, i64::MAX, 864_000, 2_000));
        assert!(w.verified);
        assert_eq!(w.lease_expires_ms, 2_000 + 864_000 * 1000);
        // a negative or tiny lease is at least a minute
        let mut w = ws(false, 0, 1_000);
        assert!(confirm(&mut w, topic, -5, 864_000, 2_000));
        assert_eq!(w.lease_expires_ms, 2_000 + 60_000);
    }

    fn ws(verified: bool, lease_expires_ms: Millis, requested_at_ms: Millis) -> WebSub {
        WebSub {
            hub: "https://hub/".into(),
            topic: "https://t/".into(),
            secret: "s".into(),
            verified,
            lease_expires_ms,
            requested_at_ms,
        }
    }

    #[test]
    fn subscribe_renew_and_wait() {
        let sub = Action::Subscribe {
            hub: "https://hub/".into(),
            topic: "https://t/".into(),
        };
        assert_eq!(plan(None, None, "https://t/", 1000, 0), Action::None);
        assert_eq!(plan(None, Some("https://hub/"), "https://t/", 1000, 0), sub);
        // verified, lease 1000 s: renew in its last fifth
        let w = ws(true, 1_000_000, 0);
        assert_eq!(
            plan(Some(&w), Some("https://hub/"), "https://t/", 1000, 500_000),
            Action::None
        );
        assert_eq!(
            plan(Some(&w), Some("https://hub/"), "https://t/", 1000, 850_000),
            sub
        );
        // a changed hub re-subscribes; a pending request waits an hour
        assert!(matches!(
            plan(Some(&w), Some("https://hub2/"), "https://t/", 1000, 1),
            Action::Subscribe { .. }
        ));
        let p = ws(false, 0, 0);
        assert_eq!(
            plan(Some(&p), Some("https://hub/"), "https://t/", 1000, 60_000),
            Action::None
        );
        assert_eq!(
            plan(
                Some(&p),
                Some("https://hub/"),
                "https://t/",
                1000,
                3_700_000
            ),
            sub
        );
        assert!(active(Some(&w), 999_999));
        assert!(!active(Some(&w), 1_000_001));
        assert!(!active(Some(&p), 0));
    }

    #[test]
    fn signatures() {
        let body = b"<feed/>";
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"k").unwrap();
        mac.update(body);
        let good = format!(
            "sha256={}",
            tocsin_model::to_hex(&mac.finalize().into_bytes())
        );
        assert!(signature_ok("k", Some(&good), body));
        assert!(!signature_ok("other", Some(&good), body));
        assert!(!signature_ok("k", Some(&good), b"<feed>tampered</feed>"));
        assert!(!signature_ok("k", None, body));
        assert!(!signature_ok("k", Some("md5=00"), body));
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"k").unwrap();
        mac.update(body);
        assert!(signature_ok(
            "k",
            Some(&format!(
                "sha1={}",
                tocsin_model::to_hex(&mac.finalize().into_bytes())
            )),
            body
        ));
    }
}
