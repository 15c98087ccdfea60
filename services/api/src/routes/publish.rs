//! `/v1/publish`: a notification from a program, straight into the user's silo.

use crate::auth::authenticate;
use crate::routes::parse_body;
use crate::{ApiError, St, bus_error};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{
    Notification, NotificationId, Priority, SourceKind, SourceRef, UserRecord, budget, now_ms,
};

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Publish {
    /// Needed to publish (checked then), not to resolve.
    #[serde(default)]
    pub(crate) title: String,
    #[serde(default)]
    pub(crate) body: String,
    #[serde(default)]
    pub(crate) priority: Option<u8>,
    #[serde(default)]
    pub(crate) tags: Vec<String>,
    #[serde(default)]
    pub(crate) click_url: Option<String>,
    #[serde(default)]
    pub(crate) idempotency_key: Option<String>,
    /// What the notification is about (an alert's identity): while one with the same key is
    /// open, another is not a new page but a `repeated` entry on it.
    #[serde(default)]
    pub(crate) dedup_key: Option<String>,
    /// Resolve `dedup_key` instead of publishing: its open notification stops escalating.
    #[serde(default)]
    pub(crate) resolve: bool,
}

/// A dedup key as it is kept and resolved: trimmed, 1-200 bytes; None if it is not one.
fn dedup_key(k: &str) -> Option<String> {
    let k = k.trim();
    (!k.is_empty() && k.len() <= 200).then(|| k.to_owned())
}

/// Check a publish request; every problem names its field.
pub(crate) fn validate_publish(p: &Publish) -> Result<(Priority, Option<String>), ApiError> {
    let bad = |field: &str, msg: String| {
        ApiError::bad_request(format!("{field}: {msg}"), Some(field.to_owned()))
    };
    if p.title.trim().is_empty() {
        return Err(bad("title", "must not be empty".into()));
    }
    if p.title.len() > budget::MAX_TITLE {
        return Err(bad("title", format!("at most {} bytes", budget::MAX_TITLE)));
    }
    if p.body.len() > budget::MAX_BODY {
        return Err(bad("body", format!("at most {} bytes", budget::MAX_BODY)));
    }
    let priority = Priority::new(p.priority.unwrap_or(3)).map_err(|e| bad("priority", e))?;
    if p.tags.len() > budget::MAX_TAGS
        || p.tags
            .iter()
            .any(|t| t.is_empty() || t.len() > budget::MAX_TAG)
    {
        let (n, len) = (budget::MAX_TAGS, budget::MAX_TAG);
        return Err(bad("tags", format!("at most {n} tags of 1-{len} bytes")));
    }
    if let Some(k) = &p.idempotency_key
        && (k.is_empty() || k.len() > 200)
    {
        return Err(bad("idempotency_key", "must be 1-200 bytes".into()));
    }
    if p.dedup_key
        .as_deref()
        .is_some_and(|k| dedup_key(k).is_none())
    {
        return Err(bad("dedup_key", "must be 1-200 bytes".into()));
    }
    let url = match &p.click_url {
        None => None,
        Some(u) if u.len() > budget::MAX_URL => {
            return Err(bad(
                "click_url",
                format!("at most {} bytes", budget::MAX_URL),
            ));
        }
        Some(u) => {
            let parsed =
                url::Url::parse(u).map_err(|e| bad("click_url", format!("not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(bad("click_url", "must be http or https".into()));
            }
            Some(parsed.to_string())
        }
    };
    Ok((priority, url))
}

pub(crate) async fn publish(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: Publish = parse_body(&body)?;
    if req.resolve {
        let Some(key) = req.dedup_key.as_deref().and_then(dedup_key) else {
            return Err(ApiError::bad_request(
                "dedup_key: needed (1-200 bytes) to resolve",
                Some("dedup_key".into()),
            ));
        };
        resolve_for(&state, &u.id, &key, "api").await?;
        return Ok((StatusCode::ACCEPTED, Json(json!({ "resolved": key }))).into_response());
    }
    let origin = Origin {
        label: "api",
        source_id: None,
        via: "publish",
    };
    let n = publish_for(&state, &u, req, &origin).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": n.id }))).into_response())
}

/// Resolve `key` for `user` (`via` names how): the open notification that carries it stops
/// escalating, and the key pages again when it comes back.
pub(crate) async fn resolve_for(
    state: &crate::AppState,
    user: &tocsin_model::UserId,
    key: &str,
    via: &str,
) -> Result<(), ApiError> {
    let at_ms = now_ms();
    let msg = tocsin_model::AvatarMessage::Resolve {
        key: key.to_owned(),
        via: via.to_owned(),
        at_ms,
    };
    let subject = state
        .bus
        .subjects()
        .silo(state.bus.silo_of(user), user.as_str(), msg.kind());
    let id = tocsin_bus::msg_id::resolve(user, key, at_ms);
    state
        .bus
        .publish_json(subject, &id, &msg)
        .await
        .map_err(bus_error)
}

/// Where a published notification comes from.
pub(crate) struct Origin<'a> {
    /// The source's label, shown with the notification (`api`, an ntfy topic, a receiver).
    pub(crate) label: &'a str,
    /// The user's source it belongs to (a hook), whose settings then apply to it.
    pub(crate) source_id: Option<&'a str>,
    /// What its `ingested` event names (`publish`, `ntfy`, `alertmanager`, `hook`).
    pub(crate) via: &'a str,
}

/// Check `req` and queue it as a notification for `u` from `origin`. Every way of publishing
/// goes through here.
pub(crate) async fn publish_for(
    state: &crate::AppState,
    u: &UserRecord,
    req: Publish,
    origin: &Origin<'_>,
) -> Result<Notification, ApiError> {
    let (label, via) = (origin.label, origin.via);
    let (priority, url) = validate_publish(&req)?;
    let id = match &req.idempotency_key {
        Some(k) => NotificationId::for_publish(&u.id, k),
        None => NotificationId::random(rand::rng().random()),
    };
    let n = Notification {
        id: id.clone(),
        user: u.id.clone(),
        source: SourceRef {
            kind: SourceKind::Publish,
            id: origin.source_id.map(str::to_owned),
            label: label.to_owned(),
        },
        title: tocsin_model::text::one_line(&req.title),
        body: tocsin_model::text::fold_whitespace(&req.body),
        url,
        priority,
        tags: req.tags,
        created_at_ms: now_ms(),
        published_at_ms: None,
        dedup_key: req.dedup_key.as_deref().and_then(dedup_key),
    };
    let events = vec![
        tocsin_model::Event::ingested(via, id.as_str(), n.created_at_ms).user(&u.id),
        tocsin_model::Event::matched(&n),
    ];
    state
        .bus
        .notify(n.clone(), events, "api")
        .await
        .map_err(bus_error)?;
    metrics::counter!(crate::telemetry::PUBLISHED).increment(1);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_validation_names_fields() {
        let p = |v: serde_json::Value| serde_json::from_value::<Publish>(v).unwrap();
        let field = |v| validate_publish(&p(v)).unwrap_err().field;
        assert_eq!(field(json!({"title": " "})), Some("title".into()));
        assert_eq!(
            field(json!({"title": "x", "priority": 9})),
            Some("priority".into())
        );
        assert_eq!(
            field(json!({"title": "x", "click_url": "javascript:alert(1)"})),
            Some("click_url".into())
        );
        assert_eq!(
            field(json!({"title": "x", "tags": [""]})),
            Some("tags".into())
        );
        assert!(
            validate_publish(&p(json!({"title": "x", "click_url": "https://e.org/a"}))).is_ok()
        );
        // a title is still needed to publish; a dedup key is kept (and resolved) trimmed
        assert_eq!(field(json!({"dedup_key": "k"})), Some("title".into()));
        assert_eq!(
            field(json!({"title": "x", "dedup_key": " ".repeat(3)})),
            Some("dedup_key".into())
        );
        assert_eq!(dedup_key(" disk:db1 ").as_deref(), Some("disk:db1"));
        assert!(dedup_key(&"k".repeat(201)).is_none());
    }
}
