//! `POST /v1/hooks/{user}/{source}/{secret}`: a hook source's own URL. The secret in it is the
//! credential (it can only send to that source), so an Alertmanager or Grafana configuration or
//! a script holds no API token. What arrives is read by the source's format — Alertmanager's or
//! Grafana's webhook, or any JSON through the source's mapping — and its notifications are the
//! source's: its priority, policy, mute and silences apply. The last failure is kept as the
//! source's status, so its owner sees why a sender's calls are refused.

use crate::auth::source_by_secret;
use crate::routes::alert_hooks::{Action, Sender, deliver, run};
use crate::routes::publish::{Origin, Publish};
use crate::{ApiError, AppState, St, bus_error};
use axum::extract::{Path, State};
use axum::response::Response;
use tocsin_model::{
    AvatarMessage, HookFormat, JsonMapping, Source, SourceSpec, SourceStatus, UserRecord, budget,
    now_ms,
};

pub(crate) async fn receive(
    State(state): St,
    Path((user, source_id, secret)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let (u, source) = source_by_secret(&state, &user, &source_id, &secret).await?;
    let SourceSpec::Hook {
        format,
        mapping,
        per_group,
        ..
    } = &source.spec
    else {
        return Err(ApiError::not_found("no such URL"));
    };
    let result = match (format, mapping) {
        (HookFormat::Alertmanager, _) => {
            let sender = Sender::Alertmanager;
            deliver(&state, &u, &body, sender, Some(&source), *per_group).await
        }
        (HookFormat::Grafana, _) => {
            let sender = Sender::Grafana;
            deliver(&state, &u, &body, sender, Some(&source), *per_group).await
        }
        (HookFormat::Json, Some(m)) => json(&state, &u, &source, m, &body).await,
        (HookFormat::Json, None) => Err(ApiError::bad_request(
            "this json hook has no mapping; set one on the source",
            Some("mapping".into()),
        )),
    };
    let outcome = match &result {
        Ok(_) => Some(None),
        // the sender's mistakes; a server-side failure says nothing about the sender
        Err(e) if e.status.is_client_error() => Some(Some(e.message.clone())),
        Err(_) => None,
    };
    if let Some(error) = outcome {
        keep_status(&state, &u, &source, error).await;
    }
    result
}

/// Any JSON through `mapping`: every item is mapped before any is sent.
async fn json(
    state: &AppState,
    u: &UserRecord,
    source: &Source,
    mapping: &JsonMapping,
    body: &[u8],
) -> Result<Response, ApiError> {
    // serde_json refuses nesting deeper than 128 levels with an error, never a stack overflow
    let payload: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}"), None))?;
    // up to 500 items of up to six bounded fields: tens of milliseconds at worst, so off the
    // async workers that serve everyone else's requests
    let mapping = mapping.clone();
    let mapped = tokio::task::spawn_blocking(move || mapping.apply(&payload))
        .await
        .map_err(|e| ApiError::internal(format!("mapping the payload failed: {e}")))?
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let mut actions = Vec::with_capacity(mapped.len());
    for m in mapped {
        if m.resolve {
            // a key is required when `resolve` is set (the mapping is checked when saved)
            if let Some(k) = m.key {
                actions.push(Action::Resolve(tocsin_model::text::truncate(&k, 200)));
            }
            continue;
        }
        let publish = Publish {
            title: tocsin_model::text::truncate(&m.title, budget::MAX_TITLE),
            body: tocsin_model::text::truncate(&m.body, budget::MAX_BODY),
            priority: m.priority.map(|p| p.get()),
            click_url: m.url.filter(|u| {
                url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
            }),
            dedup_key: m.key.map(|k| tocsin_model::text::truncate(&k, 200)),
            ..Default::default()
        };
        crate::routes::publish::validate_publish(&publish)?;
        actions.push(Action::Notify(Box::new(publish)));
    }
    let label = if source.label.is_empty() {
        "hook"
    } else {
        &source.label
    };
    let origin = Origin {
        label,
        source_id: Some(&source.id),
        via: "hook",
    };
    run(state, u, actions, &origin).await
}

/// Keep the call's outcome (`error`: the refusal's reason) as the source's status when it
/// changed (refused for another reason, or working again), so its owner sees it in `GET /v1/sources`. One record write per change,
/// not per call.
async fn keep_status(state: &AppState, u: &UserRecord, source: &Source, error: Option<String>) {
    let was = u.source_status.get(&source.id);
    let same = match (&error, was) {
        (None, None) => true,
        (None, Some(s)) => s.ok,
        (Some(e), Some(s)) => !s.ok && s.error.as_deref() == Some(e.as_str()),
        (Some(_), None) => false,
    };
    if same {
        return;
    }
    let checked_at_ms = now_ms();
    let status = SourceStatus {
        ok: error.is_none(),
        error: error.map(|e| tocsin_model::text::truncate(&e, budget::MAX_STATUS_ERROR)),
        checked_at_ms,
        consecutive_failures: 0,
        broken: false,
    };
    let msg = AvatarMessage::SourceStatus {
        source_id: source.id.clone(),
        status,
    };
    let subject = state
        .bus
        .subjects()
        .silo(state.bus.silo_of(&u.id), u.id.as_str(), msg.kind());
    let id = tocsin_bus::msg_id::source_status(&u.id, &source.id, checked_at_ms);
    if let Err(e) = state
        .bus
        .publish_json(subject, &id, &msg)
        .await
        .map_err(bus_error)
    {
        tracing::debug!(user = %u.id, source = %source.id, error = %e.message, "cannot keep a hook's status");
    }
}
