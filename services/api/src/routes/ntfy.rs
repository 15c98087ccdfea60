//! ntfy-compatible publishing: `PUT`/`POST /<topic>` with a plain-text body, and
//! `GET /<topic>/publish` (or `/send`, `/trigger`), taking ntfy's headers or query parameters
//! and its ways of authenticating, so a script written for ntfy publishes to tocsin unchanged.
//! The topic is the source's label; the notification goes to the caller's own user.

use crate::auth::{authenticate_token, bearer, token_of_authorization};
use crate::routes::publish::{Origin, Publish, publish_for};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tocsin_model::budget;

/// Names a topic may not take: the API's own first path segments.
const RESERVED: &[&str] = &["v1", "app", "feeds", "healthz", "readyz", "metrics"];

/// What a publish says, from headers first and then the query string, each under every name
/// ntfy accepts for it.
struct Params {
    query: Vec<(String, String)>,
}

impl Params {
    fn get<'a>(&'a self, headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
        for name in names {
            if let Some(v) = headers.get(*name).and_then(|v| v.to_str().ok()) {
                return Some(v.trim());
            }
        }
        names.iter().find_map(|name| {
            self.query
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
    }
}

const TITLE: &[&str] = &["x-title", "title", "ti", "t"];
const MESSAGE: &[&str] = &["x-message", "message", "m"];
const PRIORITY: &[&str] = &["x-priority", "priority", "prio", "p"];
const TAGS: &[&str] = &["x-tags", "tags", "tag", "ta"];
const CLICK: &[&str] = &["x-click", "click"];
/// ntfy features with an effect tocsin does not have: refused, never silently dropped (a
/// delayed message sent at once, or an e-mail to an address nobody verified, would surprise).
const REFUSED: &[(&str, &[&str], &str)] = &[
    (
        "delay",
        &["x-delay", "delay", "x-at", "at", "x-in", "in"],
        "scheduled delivery (Delay) is not supported; publish when it is due",
    ),
    (
        "email",
        &["x-email", "x-e-mail", "email", "e-mail", "mail", "e"],
        "Email is not supported; add an e-mail destination to your user instead",
    ),
    (
        "call",
        &["x-call", "call"],
        "Call is not supported; add an SMS destination to your user instead",
    ),
    (
        "attach",
        &[
            "x-attach",
            "attach",
            "a",
            "x-filename",
            "filename",
            "file",
            "f",
        ],
        "attachments are not supported; send text, or a Click link to the file",
    ),
];

/// `PUT`/`POST /<topic>`, where the body is the message; and `GET`/`PUT`/`POST
/// /<topic>/publish` (also `/send`, `/trigger`), for webhooks that can only make a GET, where
/// the message may come from `message=` instead.
pub(crate) async fn ntfy_publish(
    State(state): St,
    Path(topic): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    publish(&state, &topic, query, &headers, &body).await
}

async fn publish(
    state: &crate::AppState,
    topic: &str,
    query: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    check_topic(topic)?;
    let params = Params {
        query: serde_urlencoded::from_str(query.as_deref().unwrap_or(""))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {e}"), None))?,
    };
    let token = token(headers, &params)?;
    let user = authenticate_token(state, &token).await?;
    let req = request(topic, headers, &params, body)?;
    let origin = Origin {
        label: topic,
        source_id: None,
        via: "ntfy",
    };
    let n = publish_for(state, &user, req, &origin).await?;
    // ntfy's answer, so its clients read what they expect
    let mut answer = json!({
        "id": n.id,
        "time": n.created_at_ms / 1000,
        "event": "message",
        "topic": topic,
        "title": n.title,
        "message": n.body,
        "priority": n.priority.get(),
    });
    if !n.tags.is_empty() {
        answer["tags"] = json!(n.tags);
    }
    if let Some(u) = &n.url {
        answer["click"] = json!(u);
    }
    Ok(Json(answer).into_response())
}

/// A topic as ntfy allows it (1-64 of `A-Z a-z 0-9 _ -`), and not one of the API's own paths.
fn check_topic(topic: &str) -> Result<(), ApiError> {
    let bad = |msg: String| ApiError::bad_request(msg, Some("topic".into()));
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(format!(
            "topic {topic:?}: 1-64 letters, digits, '_' or '-'"
        )));
    }
    if RESERVED.contains(&topic) {
        return Err(bad(format!("topic {topic:?} is reserved; choose another")));
    }
    Ok(())
}

/// The caller's token: `Authorization` (Bearer, or Basic with the token as the password), or
/// ntfy's `auth=` parameter (that header's value, base64-encoded).
fn token(headers: &HeaderMap, params: &Params) -> Result<String, ApiError> {
    use base64::Engine;
    let missing = || {
        ApiError::unauthorized(
            "send 'Authorization: Bearer <token>' (or Basic with the token as the password, or ?auth=)",
        )
    };
    if let Some(t) = bearer(headers) {
        return Ok(t.to_owned());
    }
    if let Some(value) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return token_of_authorization(value).ok_or_else(missing);
    }
    let Some(auth) = params
        .query
        .iter()
        .find(|(k, _)| k == "auth")
        .map(|(_, v)| v.trim())
    else {
        return Err(missing());
    };
    let engines = [
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(auth).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|value| token_of_authorization(&value))
        .ok_or_else(|| ApiError::unauthorized("auth: not a base64-encoded Authorization value"))
}

/// The publish ntfy's parameters describe. The message is the body (UTF-8 text), else
/// `message=`, else "triggered" as ntfy has it; the title defaults to the topic.
fn request(
    topic: &str,
    headers: &HeaderMap,
    params: &Params,
    body: &[u8],
) -> Result<Publish, ApiError> {
    for (field, names, why) in REFUSED {
        if let Some(v) = params.get(headers, names)
            && !v.is_empty()
        {
            return Err(ApiError::bad_request(*why, Some((*field).into())));
        }
    }
    let message = if body.is_empty() {
        params
            .get(headers, MESSAGE)
            .unwrap_or("triggered")
            .to_owned()
    } else {
        if body.len() > budget::MAX_BODY {
            return Err(ApiError::bad_request(
                format!("message: at most {} bytes", budget::MAX_BODY),
                Some("message".into()),
            ));
        }
        String::from_utf8(body.to_vec()).map_err(|_| {
            ApiError::bad_request(
                "message: the body must be UTF-8 text (attachments are not supported)",
                Some("message".into()),
            )
        })?
    };
    let title = params
        .get(headers, TITLE)
        .filter(|t| !t.is_empty())
        .unwrap_or(topic)
        .to_owned();
    let priority = match params.get(headers, PRIORITY) {
        None | Some("") => None,
        Some(p) => Some(priority(p)?),
    };
    let tags = params
        .get(headers, TAGS)
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let click_url = params
        .get(headers, CLICK)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok(Publish {
        title,
        body: message,
        priority,
        tags,
        click_url,
        ..Default::default()
    })
}

/// ntfy's priorities: 1-5, or min, low, default, high, max (urgent).
fn priority(p: &str) -> Result<u8, ApiError> {
    let n = match p.to_ascii_lowercase().as_str() {
        "1" | "min" => 1,
        "2" | "low" => 2,
        "3" | "default" => 3,
        "4" | "high" => 4,
        "5" | "max" | "urgent" => 5,
        _ => {
            return Err(ApiError::bad_request(
                format!("priority: {p:?} is not 1-5, min, low, default, high, max or urgent"),
                Some("priority".into()),
            ));
        }
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn params(q: &str) -> Params {
        Params {
            query: serde_urlencoded::from_str(q).unwrap(),
        }
    }

    #[test]
    fn headers_and_query_parameters_make_the_publish_under_every_name_ntfy_takes() {
        let mut h = HeaderMap::new();
        h.insert("X-Title", HeaderValue::from_static("Disk full"));
        h.insert("Priority", HeaderValue::from_static("urgent"));
        h.insert("ta", HeaderValue::from_static("warning, skull ,"));
        let r = request(
            "backups",
            &h,
            &params("click=https://example.org/x"),
            b"90% used",
        )
        .unwrap();
        assert_eq!(r.title, "Disk full");
        assert_eq!(r.body, "90% used");
        assert_eq!(r.priority, Some(5));
        assert_eq!(r.tags, vec!["warning", "skull"]);
        assert_eq!(r.click_url.as_deref(), Some("https://example.org/x"));
        // a bare trigger: the topic as the title, ntfy's word as the message
        let r = request("cron", &HeaderMap::new(), &params("p=2"), b"").unwrap();
        assert_eq!(
            (r.title.as_str(), r.body.as_str(), r.priority),
            ("cron", "triggered", Some(2))
        );
        let r = request("cron", &HeaderMap::new(), &params("m=done&t=Job"), b"").unwrap();
        assert_eq!((r.title.as_str(), r.body.as_str()), ("Job", "done"));
    }

    #[test]
    fn what_tocsin_cannot_do_is_refused_by_name() {
        let field = |q: &str, body: &[u8]| {
            request("t", &HeaderMap::new(), &params(q), body)
                .unwrap_err()
                .field
        };
        assert_eq!(field("delay=30m", b"x"), Some("delay".into()));
        assert_eq!(field("email=a@example.org", b"x"), Some("email".into()));
        assert_eq!(
            field("attach=https://example.org/f.pdf", b"x"),
            Some("attach".into())
        );
        assert_eq!(field("p=9", b"x"), Some("priority".into()));
        assert_eq!(field("", &[0xff, 0xfe]), Some("message".into()));
        assert_eq!(
            field("", &vec![b'a'; budget::MAX_BODY + 1]),
            Some("message".into())
        );
    }

    #[test]
    fn topics_are_checked_and_the_apis_own_paths_are_not_topics() {
        assert!(check_topic("backups_2-x").is_ok());
        for bad in ["", "v1", "feeds", "a/b", "a b", &"x".repeat(65), "ü"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_token_comes_from_bearer_basic_or_the_auth_parameter() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_static("Bearer tk_ann_1"));
        assert_eq!(token(&h, &params("")).unwrap(), "tk_ann_1");
        let mut h = HeaderMap::new();
        let basic = format!("Basic {}", b64(":tk_ann_2"));
        h.insert("authorization", HeaderValue::from_str(&basic).unwrap());
        assert_eq!(token(&h, &params("")).unwrap(), "tk_ann_2");
        let basic = format!("Basic {}", b64("ann:tk_ann_3"));
        h.insert("authorization", HeaderValue::from_str(&basic).unwrap());
        assert_eq!(token(&h, &params("")).unwrap(), "tk_ann_3");
        let auth = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("Bearer tk_ann_4");
        assert_eq!(
            token(&HeaderMap::new(), &params(&format!("auth={auth}"))).unwrap(),
            "tk_ann_4"
        );
        assert!(token(&HeaderMap::new(), &params("")).is_err());
        assert!(token(&HeaderMap::new(), &params("auth=%%%")).is_err());
    }
}
