//! The API: a stateless HTTP front door to tocsin.
//!
//! It holds no state of its own. Configuration changes are commands sent to the user's
//! avatar over the bus (the avatar is the only writer of its user's data) and the API waits
//! for the avatar's answer on a reply subject; history and private feeds are requests to the
//! history service owning the user's silo; publishes go straight into the user's silo. To
//! check a token it reads the user's record from the `avatars` KV bucket (read-only).
//!
//! Every error is JSON `{"error": {"code", "message", "field"?}}` with a 4xx/5xx status.

mod error;
mod openapi;
mod reach;

pub use error::ApiError;

use async_nats::jetstream::kv;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tocsin_bus::{Bus, BusConfig, BusError, DeadLetter};
use tocsin_model::{
    AvatarMessage, Channel, Command, CommandReply, Destination, FeedFormat, FeedRequest, Filter,
    HistoryPage, HistoryQuery, Notification, NotificationId, Priority, Reply, Source, SourceKind,
    SourceRef, SourceSpec, UserId, UserRecord, hash_token, now_ms,
};
use tocsin_runtime::{ConfigDoc, Readiness};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The `[api]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API (and its /healthz, /readyz, /metrics) listens.
    pub listen: String,
    /// The URL people reach the API at; private feed URLs are built from it.
    pub public_url: String,
    /// The token that may create users and handle dead letters. Empty: admin calls refused.
    /// Give it through `TOCSIN_API__ADMIN_TOKEN`, never in a file under version control.
    pub admin_token: String,
    /// How long to wait for an avatar to answer a command.
    pub command_timeout_secs: u64,
    /// How long to wait for the history service.
    pub query_timeout_secs: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// The domain of users' inbound e-mail addresses (`<user>.<secret>@<domain>`): the one
    /// whose MX points at the ingestor's SMTP listener.
    pub inbound_domain: String,
    /// Twilio's auth token, to check `X-Twilio-Signature` on inbound SMS
    /// (`POST /v1/sms/twilio`). Give it through `TOCSIN_API__TWILIO_AUTH_TOKEN`. Empty: off.
    pub twilio_auth_token: String,
    /// The `token` an SMS gateway (Kannel) passes on `GET /v1/sms/kannel`. Empty: off.
    pub sms_inbound_token: String,
    /// Requests a minute per client address (a burst of as many; 0: no limit). Behind a proxy
    /// every client has the proxy's address: raise it, or limit at the proxy.
    pub rate_per_ip_per_minute: u32,
    /// Requests a minute per authenticated user (0: no limit).
    pub rate_per_user_per_minute: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            admin_token: String::new(),
            command_timeout_secs: 10,
            query_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            inbound_domain: "tocsin.localhost".into(),
            twilio_auth_token: String::new(),
            sms_inbound_token: String::new(),
            rate_per_ip_per_minute: 1200,
            rate_per_user_per_minute: 600,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub bus: BusConfig,
    pub api: ApiConfig,
}

impl Config {
    pub fn load(doc: &ConfigDoc) -> Result<Self, Vec<String>> {
        let (bus, api) = doc.service_sections("api", |b: &BusConfig, s: &ApiConfig| {
            let mut p = b.problems();
            if url::Url::parse(&s.public_url).is_err() {
                p.push(format!("api.public_url: {:?} is not a URL", s.public_url));
            }
            if !s.admin_token.is_empty() && s.admin_token.len() < 16 {
                p.push("api.admin_token: use at least 16 characters".into());
            }
            if s.max_body_bytes < 1024 {
                p.push("api.max_body_bytes: must be at least 1024".into());
            }
            p
        })?;
        Ok(Config { bus, api })
    }
}

struct AppState {
    per_ip: tocsin_runtime::rate::KeyedRateLimit<std::net::IpAddr>,
    per_user: tocsin_runtime::rate::KeyedRateLimit<UserId>,
    bus: Bus,
    avatars: kv::Store,
    addresses: kv::Store,
    cfg: ApiConfig,
}

type St = State<Arc<AppState>>;

/// Run the API until `shutdown`. Returns once the listener is closed and in-flight requests
/// have finished.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|e| {
            ApiError::internal(format!(
                "cannot listen on api.listen {}: {e}",
                config.api.listen
            ))
        })?;
    serve(config, listener, shutdown).await
}

/// [`run`] on a listener the caller bound (tests bind port 0).
pub async fn serve(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ApiError> {
    let bus = Bus::connect(&config.bus, "api").await.map_err(bus_error)?;
    bus.ensure_streams().await.map_err(bus_error)?;
    let avatars = bus.kv("avatars").await.map_err(bus_error)?;
    let addresses = bus.kv("addresses").await.map_err(bus_error)?;
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    let state = Arc::new(AppState {
        per_ip: tocsin_runtime::rate::KeyedRateLimit::new(config.api.rate_per_ip_per_minute),
        per_user: tocsin_runtime::rate::KeyedRateLimit::new(config.api.rate_per_user_per_minute),
        bus: bus.clone(),
        avatars,
        addresses,
        cfg: config.api.clone(),
    });
    let app = router(state, ready.clone());
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    ready.set(true);
    info!(addr = ?addr, "api listening");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
    .map_err(|e| ApiError::internal(format!("server error: {e}")))?;
    bus.drain().await;
    info!("api stopped");
    Ok(())
}

fn router(state: Arc<AppState>, ready: Readiness) -> Router {
    let max = state.cfg.max_body_bytes;
    Router::new()
        .route("/v1/users", post(create_user))
        .route("/v1/me", get(me))
        .route("/v1/sources", get(list_sources).post(add_source))
        .route("/v1/sources/{id}", delete(remove_source))
        .route(
            "/v1/destinations",
            get(list_destinations).post(add_destination),
        )
        .route("/v1/destinations/{id}", delete(remove_destination))
        .route("/v1/inbound", get(get_inbound).put(put_inbound))
        .route(
            "/v1/policy",
            get(reach::get_policy)
                .put(reach::put_policy)
                .delete(reach::delete_policy),
        )
        .route("/v1/notifications/{id}/ack", post(reach::ack))
        .route(
            "/v1/ack/{user}/{id}/{sig}",
            get(reach::ack_link_page).post(reach::ack_link),
        )
        .route("/v1/sms/twilio", post(reach::twilio_inbound))
        .route("/v1/sms/kannel", get(reach::kannel_inbound))
        .route("/v1/history", get(history))
        .route("/v1/publish", post(publish))
        .route("/v1/stream", get(stream))
        .route("/v1/admin/dead-letters", get(dead_letters))
        .route(
            "/v1/admin/dead-letters/{seq}/replay",
            post(replay_dead_letter),
        )
        .route("/v1/openapi.json", get(openapi::document))
        .route("/feeds/{user}/{file}", get(private_feed))
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_per_ip,
        ))
        .with_state(state)
        .merge(tocsin_runtime::ops::ops_router(ready))
}

/// 429 for a client address over `api.rate_per_ip_per_minute`.
async fn limit_per_ip(
    State(state): St,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state.per_ip.take(&peer.ip()) {
        Ok(()) => next.run(req).await,
        Err(wait) => rate_limited(wait, "from this address"),
    }
}

fn rate_limited(wait: Duration, whose: &str) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r =
        ApiError::too_many(format!("too many requests {whose}; retry in {secs}s")).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    r
}

fn bus_error(e: BusError) -> ApiError {
    ApiError::unavailable(format!("the bus is unavailable: {e}"))
}

// ---------- authentication

/// An API token is `tk_<user id>_<secret>`; only its hash is stored.
fn new_token(user: &UserId) -> String {
    format!("tk_{user}_{}", random_hex(16))
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

async fn load_user(state: &AppState, user: &UserId) -> Result<Option<UserRecord>, ApiError> {
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
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<UserRecord, ApiError> {
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

fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
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

// ---------- request bodies

/// Parse a JSON body, naming the offending field on error.
fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body", None));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ApiError::bad_request(format!("invalid JSON body: {}", e.inner()), field)
    })
}

// ---------- commands to avatars

async fn command(
    state: &AppState,
    user: &UserId,
    command: Command,
) -> Result<CommandReply, ApiError> {
    let command_id = format!("c{}", random_hex(12));
    let inbox = state.bus.client().new_inbox();
    let mut sub = state
        .bus
        .client()
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus is unavailable: {e}")))?;
    let silo = state.bus.silo_of(user);
    let msg = AvatarMessage::Command {
        command_id: command_id.clone(),
        command,
        reply_to: Some(inbox),
    };
    let subject = state.bus.subjects().silo(silo, user.as_str(), msg.kind());
    state
        .bus
        .publish_json(subject, &command_id, &msg)
        .await
        .map_err(bus_error)?;
    let wait = Duration::from_secs(state.cfg.command_timeout_secs);
    let reply = tokio::time::timeout(wait, sub.next()).await.ok().flatten().ok_or_else(|| {
        ApiError::timeout(format!(
            "the router did not confirm command {command_id} within {}s; it is queued and will still be applied",
            wait.as_secs()
        ))
    })?;
    tocsin_bus::decode::<CommandReply>(&reply.payload, "command reply")
        .map_err(|e| ApiError::internal(e.to_string()))
}

fn refusal(reply: CommandReply) -> ApiError {
    let message = reply.message.unwrap_or_else(|| "refused".into());
    match reply.code.as_deref() {
        Some("not_found") => ApiError::not_found(message),
        Some("exists") => ApiError::conflict(message),
        _ => {
            let field = message.split_once(':').map(|(f, _)| f.trim().to_owned());
            ApiError::bad_request(message, field)
        }
    }
}

// ---------- handlers

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    #[serde(default)]
    name: String,
}

fn feed_urls(state: &AppState, user: &UserId, feed_token: &str) -> serde_json::Value {
    let base = state.cfg.public_url.trim_end_matches('/');
    json!({
        "atom": format!("{base}/feeds/{user}/{feed_token}.atom"),
        "rss": format!("{base}/feeds/{user}/{feed_token}.rss"),
    })
}

async fn create_user(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    require_admin(&state, &headers)?;
    let req: CreateUser = parse_body(&body)?;
    let name = req.name.trim().to_owned();
    if name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "name: at most 100 characters",
            Some("name".into()),
        ));
    }
    let user = UserId::generate(rand::rng().random());
    let token = new_token(&user);
    let feed_token = random_hex(16);
    let inbound_token = random_hex(8);
    let reply = command(
        &state,
        &user,
        Command::CreateUser {
            name: name.clone(),
            token_hash: hash_token(&token),
            feed_token_hash: hash_token(&feed_token),
            inbound_token_hash: hash_token(&inbound_token),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    let body = json!({
        "user_id": user,
        "name": name,
        "token": token,
        "feed": feed_urls(&state, &user, &feed_token),
        "inbound_address": format!("{user}.{inbound_token}@{}", state.cfg.inbound_domain),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn me(State(state): St, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({
        "user_id": u.id,
        "name": u.name,
        "created_at_ms": u.created_at_ms,
        "sources": u.sources.len(),
        "destinations": u.destinations.len(),
    })))
}

#[derive(Serialize)]
struct SourceView<'a> {
    #[serde(flatten)]
    source: &'a Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a tocsin_model::SourceStatus>,
}

async fn list_sources(
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
        })
        .collect();
    Ok(Json(json!({ "sources": sources })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddSource {
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
}

async fn add_source(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: AddSource = parse_body(&body)?;
    let spec = match req.kind.as_deref().unwrap_or("feed") {
        "feed" => SourceSpec::Feed {
            url: tocsin_model::validate_feed_url(&req.url)
                .map_err(|e| ApiError::bad_request(format!("url: {e}"), Some("url".into())))?,
            deliver_existing: req.deliver_existing,
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
        other => {
            return Err(ApiError::bad_request(
                format!("kind: {other:?} is not a source kind (feed, imap)"),
                Some("kind".into()),
            ));
        }
    };
    if let Some(e) = req.filter.validate("filter.").into_iter().next() {
        return Err(ApiError::bad_request(e.to_string(), Some(e.field)));
    }
    if req.label.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "label: at most 100 characters",
            Some("label".into()),
        ));
    }
    let source = Source {
        id: format!("s{}", random_hex(6)),
        spec,
        filter: req.filter,
        label: req.label.trim().to_owned(),
        created_at_ms: now_ms(),
    };
    let reply = command(
        &state,
        &u.id,
        Command::AddSource {
            source: source.clone(),
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    let mut source = source;
    if let SourceSpec::Imap { password, .. } = &mut source.spec {
        *password = None;
    }
    Ok((StatusCode::CREATED, Json(json!({ "source": source }))).into_response())
}

async fn remove_source(
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

/// A destination as the API shows it: the secret is never returned.
fn destination_view(d: &Destination) -> serde_json::Value {
    json!({
        "id": d.id,
        "channel": d.channel,
        "address": d.address,
        "label": d.label,
        "signed": d.secret.is_some(),
        "push_format": d.push_format,
        "created_at_ms": d.created_at_ms,
    })
}

async fn list_destinations(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let list: Vec<_> = u.destinations.iter().map(destination_view).collect();
    Ok(Json(json!({ "destinations": list })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDestination {
    channel: Channel,
    address: String,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    label: String,
    #[serde(default)]
    push_format: Option<tocsin_model::PushFormat>,
}

async fn add_destination(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: AddDestination = parse_body(&body)?;
    let address = Destination::validate_address(req.channel, &req.address)
        .map_err(|e| ApiError::bad_request(format!("address: {e}"), Some("address".into())))?;
    if req
        .secret
        .as_ref()
        .is_some_and(|s| s.len() < 16 || s.len() > 256)
    {
        return Err(ApiError::bad_request(
            "secret: use 16-256 characters",
            Some("secret".into()),
        ));
    }
    if req.label.chars().count() > 100 {
        return Err(ApiError::bad_request(
            "label: at most 100 characters",
            Some("label".into()),
        ));
    }
    if req.push_format.is_some() && req.channel != Channel::Push {
        return Err(ApiError::bad_request(
            "push_format: only for the push channel",
            Some("push_format".into()),
        ));
    }
    reach::check_address_free(&state, &u.id, req.channel, &address).await?;
    let destination = Destination {
        id: format!("d{}", random_hex(6)),
        channel: req.channel,
        address,
        secret: req.secret,
        label: req.label.trim().to_owned(),
        push_format: req.push_format,
        created_at_ms: now_ms(),
    };
    let view = destination_view(&destination);
    let reply = command(&state, &u.id, Command::AddDestination { destination }).await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok((StatusCode::CREATED, Json(json!({ "destination": view }))).into_response())
}

async fn remove_destination(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let u = authenticate(&state, &headers).await?;
    if !u.destinations.iter().any(|d| d.id == id) {
        return Err(ApiError::not_found(format!("no destination {id}")));
    }
    let reply = command(
        &state,
        &u.id,
        Command::RemoveDestination { destination_id: id },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn get_inbound(
    State(state): St,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok(Json(json!({
        "domain": state.cfg.inbound_domain,
        "enabled": !u.inbound_token_hash.is_empty(),
        "allowed_senders": u.allowed_senders,
        "require_authenticated": u.require_authenticated_mail,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutInbound {
    allowed_senders: Vec<String>,
    /// Take only mail that passes SPF or DKIM.
    #[serde(default)]
    require_authenticated: bool,
}

async fn put_inbound(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: PutInbound = parse_body(&body)?;
    let senders = tocsin_model::validate_allowed_senders(&req.allowed_senders).map_err(|e| {
        ApiError::bad_request(
            format!("allowed_senders: {e}"),
            Some("allowed_senders".into()),
        )
    })?;
    let reply = command(
        &state,
        &u.id,
        Command::SetAllowedSenders {
            senders: senders.clone(),
            require_authenticated: req.require_authenticated,
        },
    )
    .await?;
    if !reply.ok {
        return Err(refusal(reply));
    }
    Ok(Json(
        json!({ "allowed_senders": senders, "require_authenticated": req.require_authenticated }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    limit: Option<u32>,
    cursor: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    q: Option<String>,
}

async fn history(
    State(state): St,
    headers: HeaderMap,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()), None)
    })?;
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
    let q = HistoryQuery {
        user: u.id.clone(),
        limit,
        cursor: p.cursor,
        since_ms: p.since_ms,
        until_ms: p.until_ms,
        q: p.q,
    };
    let silo = state.bus.silo_of(&u.id);
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
        Reply::Ok(page) => Ok(Json(page)),
        Reply::Err(e) if e.contains("cursor") => {
            Err(ApiError::bad_request(e, Some("cursor".into())))
        }
        Reply::Err(e) => Err(ApiError::internal(e)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    title: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    priority: Option<u8>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    click_url: Option<String>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Check a publish request; every problem names its field.
fn validate_publish(p: &Publish) -> Result<(Priority, Option<String>), ApiError> {
    let bad = |field: &str, msg: String| {
        ApiError::bad_request(format!("{field}: {msg}"), Some(field.to_owned()))
    };
    if p.title.trim().is_empty() {
        return Err(bad("title", "must not be empty".into()));
    }
    if p.title.len() > 1000 {
        return Err(bad("title", "at most 1000 bytes".into()));
    }
    if p.body.len() > 16_000 {
        return Err(bad("body", "at most 16000 bytes".into()));
    }
    let priority = Priority::new(p.priority.unwrap_or(3)).map_err(|e| bad("priority", e))?;
    if p.tags.len() > 20 || p.tags.iter().any(|t| t.is_empty() || t.len() > 64) {
        return Err(bad("tags", "at most 20 tags of 1-64 bytes".into()));
    }
    if let Some(k) = &p.idempotency_key
        && (k.is_empty() || k.len() > 200)
    {
        return Err(bad("idempotency_key", "must be 1-200 bytes".into()));
    }
    let url = match &p.click_url {
        None => None,
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

async fn publish(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let req: Publish = parse_body(&body)?;
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
            id: None,
            label: "api".into(),
        },
        title: tocsin_model::text::one_line(&req.title),
        body: tocsin_model::text::fold_whitespace(&req.body),
        url,
        priority,
        tags: req.tags,
        created_at_ms: now_ms(),
        published_at_ms: None,
        dedup_key: None,
    };
    let events = vec![
        tocsin_model::Event::ingested("publish", id.as_str(), n.created_at_ms).user(&u.id),
        tocsin_model::Event::matched(&n),
    ];
    state
        .bus
        .notify(n, events, "api")
        .await
        .map_err(bus_error)?;
    metrics::counter!("tocsin_api_published_total").increment(1);
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response())
}

async fn stream(State(state): St, headers: HeaderMap) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let sub = state
        .bus
        .client()
        .subscribe(state.bus.subjects().live(u.id.as_str()))
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus is unavailable: {e}")))?;
    let events = sub.map(|m| {
        Ok::<_, std::convert::Infallible>(
            Event::default()
                .event("notification")
                .data(String::from_utf8_lossy(&m.payload)),
        )
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterParams {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn dead_letters(
    State(state): St,
    headers: HeaderMap,
    params: Result<Query<DeadLetterParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let Query(p) = params.map_err(|e| {
        ApiError::bad_request(format!("invalid query string: {}", e.body_text()), None)
    })?;
    let list: Vec<DeadLetter> = state
        .bus
        .dead_letters(p.from.unwrap_or(0), p.limit.unwrap_or(100).min(1000))
        .await
        .map_err(bus_error)?;
    Ok(Json(json!({ "dead_letters": list })))
}

async fn replay_dead_letter(
    State(state): St,
    headers: HeaderMap,
    Path(seq): Path<u64>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &headers)?;
    let dl = state
        .bus
        .replay_dead_letter(seq)
        .await
        .map_err(|e| ApiError::not_found(format!("cannot replay dead letter {seq}: {e}")))?;
    warn!(seq, subject = %dl.original_subject, "dead letter replayed by an operator");
    Ok(Json(json!({ "replayed": dl })))
}

async fn private_feed(
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
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_body::<Publish>(br#"{"title": "x", "priority": "high"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("priority"));
        let e = parse_body::<Publish>(br#"{"title": "x", "colour": 1}"#).unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse_body::<Publish>(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }

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
