//! `/v1/history` and the private feeds (`/feeds/<user>/<secret>.atom|.rss`), answered by the
//! history service owning the user's silo.

use crate::auth::{authenticate, hashes_equal, load_user};
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Duration;
use tocsin_model::{
    FeedFormat, FeedRequest, HistoryPage, HistoryQuery, HistoryState, Priority, Reply, UserId,
    hash_token,
};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct HistoryParams {
    pub(crate) limit: Option<u32>,
    pub(crate) cursor: Option<String>,
    pub(crate) since_ms: Option<i64>,
    pub(crate) until_ms: Option<i64>,
    pub(crate) q: Option<String>,
    pub(crate) source: Option<String>,
    pub(crate) min_priority: Option<u8>,
    pub(crate) state: Option<HistoryState>,
}

pub(crate) async fn history(
    State(state): St,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()), None)
    })?;
    Ok(Json(query(&state, &u.id, p).await?))
}

/// One page of `user`'s history, as `params` asks (the API's and the web app's inbox).
pub(crate) async fn query(
    state: &AppState,
    user: &UserId,
    p: HistoryParams,
) -> Result<HistoryPage, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit: must be 1-500",
            Some("limit".into()),
        ));
    }
    if p.q.as_ref().is_some_and(|q| q.len() > 200) {
        return Err(ApiError::bad_request(
            "q: at most 200 bytes",
            Some("q".into()),
        ));
    }
    if p.source.as_ref().is_some_and(|s| s.len() > 64) {
        return Err(ApiError::bad_request(
            "source: at most 64 bytes (a source id)",
            Some("source".into()),
        ));
    }
    let min_priority = p.min_priority.map(Priority::new).transpose().map_err(|e| {
        ApiError::bad_request(format!("min_priority: {e}"), Some("min_priority".into()))
    })?;
    let q = HistoryQuery {
        cursor: p.cursor,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        q: p.q.filter(|q| !q.trim().is_empty()),
        source: p.source.filter(|s| !s.is_empty()),
        min_priority,
        state: p.state,
        ..HistoryQuery::newest(user.clone(), limit)
    };
    let silo = state.bus.silo_of(user);
    let reply: Reply<HistoryPage> = state
        .bus
        .request_json(
            state.bus.subjects().history_rpc(silo, "query"),
            &q,
            Duration::from_secs(state.cfg.query_timeout_secs),
        )
        .await
        .map_err(|e| ApiError::unavailable(format!("history is unavailable: {e}")))?;
    match reply {
        Reply::Ok(page) => Ok(page),
        Reply::Err(e) if e.contains("cursor") => {
            Err(ApiError::bad_request(e, Some("cursor".into())))
        }
        Reply::Err(e) => Err(ApiError::internal(e)),
    }
}

pub(crate) async fn private_feed(
    State(state): St,
    Path((user, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::not_found("no such feed");
    let (token, format) = if let Some(t) = file.strip_suffix(".atom") {
        (t, FeedFormat::Atom)
    } else if let Some(t) = file.strip_suffix(".rss") {
        (t, FeedFormat::Rss)
    } else {
        return Err(not_found());
    };
    let user = UserId::parse(&user).map_err(|_| not_found())?;
    let record = load_user(&state, &user).await?.ok_or_else(not_found)?;
    if !hashes_equal(&record.feed_token_hash, &hash_token(token)) {
        return Err(not_found());
    }
    let base = state.cfg.public_url.trim_end_matches('/');
    let req = FeedRequest {
        user: user.clone(),
        format,
        self_url: format!("{base}/feeds/{user}/{file}"),
        limit: 50,
    };
    let silo = state.bus.silo_of(&user);
    let reply: Reply<String> = state
        .bus
        .request_json(
            state.bus.subjects().history_rpc(silo, "feed"),
            &req,
            Duration::from_secs(state.cfg.query_timeout_secs),
        )
        .await
        .map_err(|e| ApiError::unavailable(format!("history is unavailable: {e}")))?;
    match reply {
        Reply::Ok(xml) => {
            let ct = match format {
                FeedFormat::Atom => "application/atom+xml; charset=utf-8",
                FeedFormat::Rss => "application/rss+xml; charset=utf-8",
            };
            Ok((
                [
                    (header::CONTENT_TYPE, ct),
                    (header::CACHE_CONTROL, "private, max-age=60"),
                ],
                xml,
            )
                .into_response())
        }
        Reply::Err(e) => Err(ApiError::internal(e)),
    }
}
