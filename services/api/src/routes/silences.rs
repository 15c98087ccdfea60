//! `/v1/silences`: "not now" for a source, a tag or an alert key, for a duration or a window.

use crate::auth::{authenticate, random_hex};
use crate::client::{command, refusal};
use crate::routes::{parse_body, parse_body_strict};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{Command, Matcher, Millis, Silence, now_ms};

/// `GET /v1/silences`: those not yet over, each with whether it holds now.
pub(crate) async fn list_silences(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let now = now_ms();
    let silences: Vec<serde_json::Value> = u
        .reach
        .silences
        .iter()
        .filter(|s| s.ends_at_ms > now)
        .map(|s| {
            let mut v = json!(s);
            v["active"] = json!(s.active(now));
            v
        })
        .collect();
    Ok(Json(json!({ "silences": silences })))
}

/// The body of `POST /v1/silences` (its field names are checked by hand: serde's
/// `deny_unknown_fields` does not work with `flatten`).
#[derive(Deserialize)]
pub(crate) struct NewSilence {
    #[serde(flatten)]
    matcher: Matcher,
    /// How long from its start: `90m`, `2h`, `3d` (at most 30 days); or give `ends_at_ms`.
    #[serde(default, rename = "for")]
    duration: Option<String>,
    #[serde(default)]
    starts_at_ms: Option<Millis>,
    #[serde(default)]
    ends_at_ms: Option<Millis>,
    #[serde(default)]
    comment: String,
    /// A recurring window within which it holds (`{days, start, end, tz}`).
    #[serde(default)]
    window: Option<tocsin_model::Window>,
}

/// `POST /v1/silences`: 201 with the silence.
pub(crate) async fn add_silence(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    // `flatten` and `deny_unknown_fields` do not mix in serde: check the names here
    let raw: serde_json::Map<String, serde_json::Value> = parse_body(&body)?;
    const FIELDS: [&str; 8] = [
        "source",
        "tag",
        "key",
        "for",
        "starts_at_ms",
        "ends_at_ms",
        "comment",
        "window",
    ];
    if let Some(k) = raw.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::bad_request(
            format!("{k:?} is not a silence field ({})", FIELDS.join(", ")),
            Some(k.clone()),
        ));
    }
    let req: NewSilence = parse_body_strict(&body)?;
    let now = now_ms();
    let starts = req.starts_at_ms.unwrap_or(now).max(now);
    let ends = match (&req.duration, req.ends_at_ms) {
        (Some(d), None) => {
            let secs = tocsin_model::parse_duration(d).ok_or_else(|| {
                ApiError::bad_request(
                    format!("for: {d:?} is not a duration like 90m, 2h or 3d (at most 30 days)"),
                    Some("for".into()),
                )
            })?;
            starts.saturating_add(secs as i64 * 1000)
        }
        (None, Some(t)) => t,
        _ => {
            return Err(ApiError::bad_request(
                "give either for (a duration) or ends_at_ms",
                Some("for".into()),
            ));
        }
    };
    let silence = Silence {
        id: format!("x{}", random_hex(6)),
        matcher: req.matcher,
        starts_at_ms: starts,
        ends_at_ms: ends,
        comment: req.comment,
        created_at_ms: now,
        window: req.window,
    }
    .validate(now)
    .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let reply = command(
        &state,
        &u.id,
        Command::AddSilence {
            silence: silence.clone(),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok((StatusCode::CREATED, Json(json!({ "silence": silence }))).into_response())
}

/// `DELETE /v1/silences/{id}`.
pub(crate) async fn remove_silence(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let reply = command(&state, &u.id, Command::RemoveSilence { silence_id: id }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}
