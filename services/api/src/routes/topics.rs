//! `/v1/topics`: shared topics. The owner creates one and gets its publish and subscribe keys
//! (shown once, kept as hashes in the `topics` bucket); others subscribe with the subscribe key
//! (`POST /v1/sources {kind: "topic"}`); a publish with the publish key goes to the ingestor,
//! which fans it out to every subscriber as a shared feed's item.

use crate::auth::{authenticate, bearer, hashes_equal, random_hex};
use crate::client::{command, refusal};
use crate::routes::parse_body;
use crate::routes::publish::{Publish, validate_publish};
use crate::{ApiError, AppState, St, bus_error};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tocsin_model::{Command, TopicItem, TopicRecord, hash_token, now_ms};

/// The topic called `name`, if it exists.
pub(crate) async fn topic(state: &AppState, name: &str) -> Result<Option<TopicRecord>, ApiError> {
    if tocsin_model::topics::validate_name(name).is_err() {
        return Ok(None);
    }
    let entry = state
        .topics
        .get(TopicRecord::key(name))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot read topics: {e}")))?;
    Ok(entry.and_then(|v| serde_json::from_slice(&v).ok()))
}

/// `GET /v1/topics`: the topics the user created (their keys are not kept, so not shown).
pub(crate) async fn list_topics(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({ "topics": u.topics })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewTopic {
    name: String,
}

/// `POST /v1/topics {name}`: 201 with its keys (shown only here); 409 if the name is taken.
pub(crate) async fn create_topic(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: NewTopic = parse_body(&body)?;
    tocsin_model::topics::validate_name(&req.name)
        .map_err(|e| ApiError::bad_request(format!("name: {e}"), Some("name".into())))?;
    let publish_key = format!("tp_{}_{}", req.name, random_hex(16));
    let subscribe_key = format!("ts_{}_{}", req.name, random_hex(16));
    let record = TopicRecord {
        name: req.name.clone(),
        owner: u.id.clone(),
        publish_hash: hash_token(&publish_key),
        subscribe_hash: hash_token(&subscribe_key),
        created_at_ms: now_ms(),
    };
    let value = serde_json::to_vec(&record).map_err(|e| ApiError::internal(e.to_string()))?;
    // counted against the user's topics first (the avatar keeps the count), then the name is
    // claimed: `create` fails when it exists, so two owners racing for it cannot both win
    let count = |op: Command| command(&state, &u.id, op);
    let reply = count(Command::AddTopic {
        name: req.name.clone(),
    })
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    let claimed = state
        .topics
        .create(TopicRecord::key(&req.name), value.into())
        .await;
    if let Err(e) = claimed {
        if !u.topics.contains(&req.name) {
            // not theirs after all: give the slot back
            if let Err(undo) = count(Command::RemoveTopic {
                name: req.name.clone(),
            })
            .await
            {
                tracing::warn!(user = %u.id, topic = %req.name, error = %undo.message, "cannot give a topic slot back");
            }
        }
        return Err(
            if e.kind() == async_nats::jetstream::kv::CreateErrorKind::AlreadyExists {
                ApiError::conflict(format!("topic {} exists; choose another name", req.name))
            } else {
                ApiError::unavailable(format!("cannot write topics: {e}"))
            },
        );
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "topic": req.name,
            "publish_key": publish_key,
            "subscribe_key": subscribe_key,
        })),
    )
        .into_response())
}

/// `DELETE /v1/topics/{name}`: its owner removes it; publishing to it is refused from then on.
pub(crate) async fn delete_topic(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let t = topic(&state, &name)
        .await?
        .filter(|t| t.owner == u.id)
        .ok_or_else(|| ApiError::not_found(format!("you have no topic {name}")))?;
    state
        .topics
        .delete(TopicRecord::key(&t.name))
        .await
        .map_err(|e| ApiError::unavailable(format!("cannot write topics: {e}")))?;
    let reply = command(&state, &u.id, Command::RemoveTopic { name: t.name }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/topics/{name}` with `Authorization: Bearer <publish key>` and the body of
/// `/v1/publish`: 202 once the ingestor has it.
pub(crate) async fn publish_to_topic(
    State(state): St,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let key = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("send 'Authorization: Bearer <publish key>'"))?;
    let t = topic(&state, &name)
        .await?
        .filter(|t| hashes_equal(&t.publish_hash, &hash_token(key)))
        .ok_or_else(|| ApiError::unauthorized("no such topic, or not its publish key"))?;
    if let Err(wait) = state.per_user.take(&t.owner) {
        return Err(ApiError::too_many(format!(
            "too many requests for this topic's owner; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let req: Publish = parse_body(&body)?;
    if req.resolve || req.dedup_key.is_some() {
        return Err(ApiError::bad_request(
            "dedup_key: a topic's messages are not alerts; publish alerts to your own account",
            Some("dedup_key".into()),
        ));
    }
    let (priority, url) = validate_publish(&req)?;
    let id = match &req.idempotency_key {
        Some(k) => format!("i{}", &tocsin_model::digest(&["topic", &t.name, k])[..31]),
        None => format!("r{:032x}", rand::rng().random::<u128>()),
    };
    let item = TopicItem {
        topic: t.name.clone(),
        id: id.clone(),
        title: tocsin_model::text::one_line(&req.title),
        body: tocsin_model::text::fold_whitespace(&req.body),
        url,
        priority,
        tags: req.tags,
        published_at_ms: now_ms(),
    };
    state
        .bus
        .publish_json(
            state.bus.subjects().ingest_topic(&t.name),
            &tocsin_bus::msg_id::topic_item(&t.name, &id),
            &item,
        )
        .await
        .map_err(bus_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "topic": t.name })),
    )
        .into_response())
}
