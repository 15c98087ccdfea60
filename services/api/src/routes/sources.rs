//! `/v1/sources`: what a user watches (feeds, IMAP mailboxes) with each source's health.

use crate::auth::{authenticate, random_hex};
use crate::client::{command, refusal};
use crate::routes::parse_body_strict;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tocsin_model::{Command, Filter, Source, SourceSettings, SourceSpec, now_ms};

#[derive(Serialize)]
pub(crate) struct SourceView<'a> {
    #[serde(flatten)]
    source: &'a Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a tocsin_model::SourceStatus>,
    /// A heartbeat's last ping, when it is due, and the notification of a miss still open.
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat: Option<&'a tocsin_model::Beat>,
}

pub(crate) async fn list_sources(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let sources: Vec<SourceView<'_>> = u
        .sources
        .iter()
        .map(|s| SourceView {
            source: s,
            status: u.source_status.get(&s.id),
            heartbeat: u.reach.beats.get(&s.id),
        })
        .collect();
    Ok(Json(json!({ "sources": sources })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddSource {
    /// `feed` (the default) or `imap`.
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    url: String,
    #[serde(default)]
    host: String,
    #[serde(default)]
    port: Option<u16>,
    #[serde(default)]
    tls: Option<tocsin_model::ImapTls>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    mailbox: Option<String>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    filter: Filter,
    #[serde(default)]
    deliver_existing: bool,
    /// Check the feed this often (seconds; default: the ingestor's interval).
    #[serde(default)]
    poll_interval_secs: Option<u64>,
    /// Priority and mute for its notifications.
    #[serde(default)]
    settings: SourceSettings,
    /// A heartbeat: how often it is pinged at least (seconds).
    #[serde(default)]
    period_secs: Option<u64>,
    /// A heartbeat: how late a ping may be before its owner is told (seconds; default 300).
    #[serde(default)]
    grace_secs: Option<u64>,
    /// A hook: what it takes (`alertmanager`, `grafana`, `json`).
    #[serde(default)]
    format: Option<tocsin_model::HookFormat>,
    /// A json hook: how its payload becomes notifications.
    #[serde(default)]
    mapping: Option<tocsin_model::JsonMapping>,
    /// A json source: a pointer to the next page's URL in each answer (`/next`).
    #[serde(default)]
    next: Option<String>,
    /// A feed, json or html source: what a price change or a repost of a listing tells.
    #[serde(default)]
    listing: tocsin_model::ListingRules,
    /// A polled source's own request headers; a value may name `secret` as `{{secret}}`.
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    /// What `{{secret}}` stands for (an API key): kept by the ingestor only, never shown.
    #[serde(default)]
    secret: Option<String>,
    /// A polled source: checked only within this weekly window (local time).
    #[serde(default)]
    active_hours: Option<tocsin_model::Window>,
    /// An alertmanager or grafana hook: one notification per alert group.
    #[serde(default)]
    per_group: bool,
    /// An HTML source: the CSS selectors of its listings and their fields.
    #[serde(default)]
    selectors: Option<HtmlSelectors>,
    /// A watched page: the CSS selector of the region watched (default: the whole page).
    #[serde(default)]
    selector: Option<String>,
    /// A shared topic to subscribe to, and its subscribe key (checked, never kept).
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

/// The CSS selectors of an HTML source: each listing (`item`) and, within it, its fields.
#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct HtmlSelectors {
    item: String,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    link: Option<String>,
    #[serde(default)]
    price: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

/// The extractor of a `json` or `html` source (none for a feed), or why there is none.
fn extractor(req: &AddSource) -> Result<Option<tocsin_model::Extract>, ApiError> {
    match req.kind.as_deref().unwrap_or("feed") {
        "json" => json_extract(req).map(Some),
        "html" => {
            let s = req.selectors.clone().ok_or_else(|| {
                ApiError::bad_request(
                    "selectors: needed (item, and optionally title, link, price, text)",
                    Some("selectors".into()),
                )
            })?;
            let some = |v: Option<String>| v.filter(|v| !v.trim().is_empty());
            Ok(Some(tocsin_model::Extract::Html {
                item: s.item,
                title: some(s.title),
                link: some(s.link),
                price: some(s.price),
                text: some(s.text),
            }))
        }
        "change" => Ok(Some(tocsin_model::Extract::Change {
            selector: req.selector.clone().filter(|s| !s.trim().is_empty()),
        })),
        _ => Ok(None),
    }
}

/// A polled source's own headers and secret, as asked.
fn source_request(req: &AddSource) -> tocsin_model::SourceRequest {
    tocsin_model::SourceRequest {
        headers: req.headers.clone(),
        secret: req.secret.clone(),
        keyed: false,
    }
}

/// Check `source` and have `user`'s avatar save it (a new one, or the one of its id
/// replaced): a 400 naming the field, or the avatar's refusal.
pub(crate) async fn save(
    state: &AppState,
    user: &tocsin_model::UserId,
    source: &Source,
) -> Result<(), ApiError> {
    tocsin_model::validate_source(source)
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let reply = command(
        state,
        user,
        Command::AddSource {
            source: source.clone(),
        },
    )
    .await?;
    if reply.ok {
        Ok(())
    } else {
        Err(refusal(reply))
    }
}

/// A JSON API source's extractor: its `mapping`, needed.
fn json_extract(req: &AddSource) -> Result<tocsin_model::Extract, ApiError> {
    let mapping = req.mapping.clone().ok_or_else(|| {
        ApiError::bad_request(
            "mapping: needed (how the API's answer becomes listings: items, title, url, key)",
            Some("mapping".into()),
        )
    })?;
    Ok(tocsin_model::Extract::Json {
        mapping,
        next: req.next.clone(),
    })
}

/// A heartbeat's grace when none is given.
const DEFAULT_GRACE_SECS: u64 = 300;

pub(crate) async fn add_source(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: AddSource = parse_body_strict(&body)?;
    let mut ping_secret = None;
    let mut hook_secret = None;
    let spec = match req.kind.as_deref().unwrap_or("feed") {
        "feed" | "json" | "html" | "change" => SourceSpec::Feed {
            url: tocsin_model::validate_feed_url(&req.url)
                .map_err(|e| ApiError::bad_request(format!("url: {e}"), Some("url".into())))?,
            deliver_existing: req.deliver_existing,
            poll_interval_secs: req.poll_interval_secs,
            extract: extractor(&req)?.map(Box::new),
            listing: req.listing,
            request: Box::new(source_request(&req)),
            active_hours: req.active_hours.clone().map(Box::new),
        },
        "imap" => {
            let tls = req.tls.unwrap_or(tocsin_model::ImapTls::Tls);
            SourceSpec::Imap {
                host: req.host.trim().to_owned(),
                port: req.port.unwrap_or(match tls {
                    tocsin_model::ImapTls::Tls => 993,
                    tocsin_model::ImapTls::None => 143,
                }),
                tls,
                username: req.username.clone(),
                password: Some(req.password.clone().filter(|p| !p.is_empty()).ok_or_else(
                    || ApiError::bad_request("password: needed", Some("password".into())),
                )?),
                mailbox: req.mailbox.clone().unwrap_or_else(|| "INBOX".into()),
            }
        }
        "heartbeat" => {
            let secret = random_hex(16);
            ping_secret = Some(secret.clone());
            SourceSpec::Heartbeat {
                period_secs: req.period_secs.ok_or_else(|| {
                    ApiError::bad_request(
                        "period_secs: needed (how often it is pinged at least)",
                        Some("period_secs".into()),
                    )
                })?,
                grace_secs: req.grace_secs.unwrap_or(DEFAULT_GRACE_SECS),
                token_hash: tocsin_model::hash_token(&secret),
            }
        }
        "topic" => {
            let name = req.topic.clone().unwrap_or_default();
            let key = req.key.as_deref().unwrap_or_default();
            let known = crate::routes::topics::topic(&state, &name)
                .await?
                .is_some_and(|t| {
                    crate::auth::hashes_equal(&t.subscribe_hash, &tocsin_model::hash_token(key))
                });
            if !known {
                return Err(ApiError::bad_request(
                    "topic: no such topic, or not its subscribe key (ask its owner for it)",
                    Some("key".into()),
                ));
            }
            SourceSpec::Topic { topic: name }
        }
        "hook" => {
            let secret = random_hex(16);
            hook_secret = Some(secret.clone());
            SourceSpec::Hook {
                format: req.format.ok_or_else(|| {
                    ApiError::bad_request(
                        "format: needed (alertmanager, grafana or json)",
                        Some("format".into()),
                    )
                })?,
                token_hash: tocsin_model::hash_token(&secret),
                mapping: req.mapping.clone().map(Box::new),
                per_group: req.per_group,
            }
        }
        other => {
            return Err(ApiError::bad_request(
                format!(
                    "kind: {other:?} is not a source kind (feed, json, html, change, imap, heartbeat, hook, topic)"
                ),
                Some("kind".into()),
            ));
        }
    };
    let source = Source {
        id: format!("s{}", random_hex(6)),
        spec,
        filter: req.filter,
        label: req.label.trim().to_owned(),
        created_at_ms: now_ms(),
        settings: req.settings,
    };
    save(&state, &u.id, &source).await?;
    let mut source = source;
    if let SourceSpec::Imap { password, .. } = &mut source.spec {
        *password = None;
    }
    let mut answer = json!({ "source": source });
    // a hook's or a heartbeat's own URL, shown once: only its secret's hash is kept
    for (field, segment, secret) in [
        ("hook_url", "hooks", hook_secret),
        ("ping_url", "heartbeats", ping_secret),
    ] {
        if let Some(secret) = secret {
            answer[field] = json!(crate::auth::source_url(
                &state, segment, &u.id, &source.id, &secret
            ));
        }
    }
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `POST /v1/sources/preview`: a feed source as it would be added (the same body as
/// `POST /v1/sources`), fetched now by an ingestor; answers its items, each with whether the
/// filter lets it through and why not. Nothing is kept.
pub(crate) async fn preview_source(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<tocsin_model::FeedPreview>, ApiError> {
    let user = authenticate(&state, &headers).await?;
    if let Err(wait) = state.previews.take(&user.id) {
        return Err(ApiError::too_many(format!(
            "too many feed previews; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let req: AddSource = parse_body_strict(&body)?;
    if !matches!(
        req.kind.as_deref().unwrap_or("feed"),
        "feed" | "json" | "html"
    ) {
        return Err(ApiError::bad_request(
            "kind: only a feed, a JSON API or a web page can be previewed",
            Some("kind".into()),
        ));
    }
    let extract = extractor(&req)?.map(Box::new);
    if let Some(x) = &extract {
        x.validate()
            .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    }
    let url = tocsin_model::validate_feed_url(&req.url)
        .map_err(|e| ApiError::bad_request(format!("url: {e}"), Some("url".into())))?;
    if let Some(e) = req.filter.validate("filter").into_iter().next() {
        return Err(ApiError::bad_request(e.to_string(), Some(e.field)));
    }
    let request = source_request(&req);
    request
        .validate()
        .map_err(|e| ApiError::bad_request(e.to_string(), Some(e.field)))?;
    let ask = tocsin_model::FeedPreviewRequest {
        url,
        filter: req.filter,
        extract,
        request,
    };
    let reply: tocsin_model::Reply<tocsin_model::FeedPreview> = state
        .bus
        .request_json(
            state.bus.subjects().ingest_rpc("preview"),
            &ask,
            std::time::Duration::from_secs(state.cfg.query_timeout_secs),
        )
        .await
        .map_err(|e| ApiError::unavailable(format!("no ingestor answered the preview: {e}")))?;
    match reply {
        tocsin_model::Reply::Ok(p) => Ok(Json(p)),
        tocsin_model::Reply::Err(e) => Err(ApiError::bad_request(e, Some("url".into()))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EditSource {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    filter: Option<Filter>,
    /// A feed: check it this often (seconds; 0: the ingestor's interval).
    #[serde(default)]
    poll_interval_secs: Option<u64>,
    /// A feed: what a price change or a repost of a listing tells.
    #[serde(default)]
    listing: Option<tocsin_model::ListingRules>,
    /// A new secret for a source whose headers name one (the old one stops at once).
    #[serde(default)]
    secret: Option<String>,
    /// A polled source: its active hours (`null`: always).
    #[serde(default, deserialize_with = "present")]
    active_hours: Option<Option<tocsin_model::Window>>,
}

/// A field given, even as `null` (`Some(None)`), apart from one left out (`None`).
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// `PUT /v1/sources/{id}` `{label?, filter?, poll_interval_secs?, listing?, secret?,
/// active_hours?}`: change a source's name, its filter, or (a polled source) how often and when
/// it is checked, what its listings' price changes and reposts tell, and its secret; what is
/// left out stays. A feed's URL, and what
/// makes the other kinds (their secret URLs, a mailbox), are kept: add a new source for those.
pub(crate) async fn edit_source(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let edit: EditSource = parse_body_strict(&body)?;
    let Some(mut source) = u.sources.iter().find(|s| s.id == id).cloned() else {
        return Err(ApiError::not_found(format!("no source {id}")));
    };
    if let Some(label) = edit.label {
        source.label = label.trim().to_owned();
    }
    if let Some(filter) = edit.filter {
        source.filter = filter;
    }
    if let Some(every) = edit.poll_interval_secs {
        match &mut source.spec {
            SourceSpec::Feed {
                poll_interval_secs, ..
            } => *poll_interval_secs = (every > 0).then_some(every),
            _ => {
                return Err(ApiError::bad_request(
                    "poll_interval_secs: only a feed is polled",
                    Some("poll_interval_secs".into()),
                ));
            }
        }
    }
    let feed_only = |field: &str| {
        ApiError::bad_request(
            format!("{field}: only a feed, json, html or change source has it"),
            Some(field.into()),
        )
    };
    if let Some(rules) = edit.listing {
        match &mut source.spec {
            SourceSpec::Feed { listing, .. } => *listing = rules,
            _ => return Err(feed_only("listing")),
        }
    }
    if let Some(secret) = edit.secret {
        match &mut source.spec {
            SourceSpec::Feed { request, .. } if request.keyed => request.secret = Some(secret),
            SourceSpec::Feed { .. } => {
                return Err(ApiError::bad_request(
                    "secret: this source's headers name none (add a source with {{secret}} in a header)",
                    Some("secret".into()),
                ));
            }
            _ => return Err(feed_only("secret")),
        }
    }
    if let Some(hours) = edit.active_hours {
        match &mut source.spec {
            SourceSpec::Feed { active_hours, .. } => *active_hours = hours.map(Box::new),
            _ => return Err(feed_only("active_hours")),
        }
    }
    save(&state, &u.id, &source).await?;
    Ok(Json(json!({ "source": source })).into_response())
}

pub(crate) async fn remove_source(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    if !u.sources.iter().any(|s| s.id == id) {
        return Err(ApiError::not_found(format!("no source {id}")));
    }
    let reply = command(&state, &u.id, Command::RemoveSource { source_id: id }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /v1/sources/{id}/settings`: replace a source's settings (`{priority?, muted_until_ms?}`;
/// what is left out goes back to its default). Answers the source as it now is.
pub(crate) async fn set_source_settings(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let settings: SourceSettings = parse_body_strict(&body)?;
    let Some(mut source) = u.sources.iter().find(|s| s.id == id).cloned() else {
        return Err(ApiError::not_found(format!("no source {id}")));
    };
    let reply = command(
        &state,
        &u.id,
        Command::SetSourceSettings {
            source_id: id,
            settings: settings.clone(),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    source.settings = settings;
    Ok(Json(json!({ "source": source })).into_response())
}
