//! The API: a stateless HTTP front door to tocsin.
//!
//! It holds no state of its own. Configuration changes are commands sent to the user's
//! avatar over the bus (the avatar is the only writer of its user's data) and the API waits
//! for the avatar's answer on a reply subject; history and private feeds are requests to the
//! history service owning the user's silo; publishes go straight into the user's silo. To
//! check a token it reads the user's record from the `avatars` KV bucket (read-only).
//!
//! Every error is JSON `{"error": {"code", "message", "field"?}}` with a 4xx/5xx status.

mod auth;
mod client;
pub mod config;
mod error;
pub mod listener;
mod openapi;
mod routes;
mod session;
mod sms_numbers;
mod telemetry;
mod web;

pub use config::{ApiConfig, Config};
pub use error::ApiError;

use crate::routes::acks::{ack, ack_link, ack_link_page};
use crate::routes::admin::{dead_letters, replay_dead_letter};
use crate::routes::alert_hooks::{alertmanager, grafana};
use crate::routes::destinations::{
    add_destination, edit_destination, list_destinations, remove_destination,
};
use crate::routes::history::{history, private_feed};
use crate::routes::inbound::{get_inbound, get_mail_rules, put_inbound, put_mail_rules};
use crate::routes::ntfy::ntfy_publish;
use crate::routes::policy::{
    delete_named_policy, delete_policy, get_named_policy, get_policy, list_policies,
    put_named_policy, put_policy,
};
use crate::routes::publish::publish;
use crate::routes::silences::{add_silence, list_silences, remove_silence};
use crate::routes::sms::{kannel_inbound, twilio_inbound};
use crate::routes::sources::{add_source, list_sources, remove_source, set_source_settings};
use crate::routes::stream::stream;
use crate::routes::users::{create_user, me};
use crate::routes::{heartbeats, hooks, topics};
use async_nats::jetstream::kv;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, BusError};
use tocsin_model::UserId;
use tocsin_runtime::Readiness;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

pub(crate) struct AppState {
    /// Live streams open per user (`api.max_streams_per_user`).
    pub(crate) streams: std::sync::Mutex<std::collections::HashMap<UserId, usize>>,
    /// Cancelled when the API shuts down: live streams end.
    pub(crate) shutdown: CancellationToken,
    pub(crate) per_ip: tocsin_runtime::rate::KeyedRateLimit<std::net::IpAddr>,
    pub(crate) per_user: tocsin_runtime::rate::KeyedRateLimit<UserId>,
    /// Costly actions a minute per user, counted together: feed previews and test messages
    /// (each a request to an address the user chose), OPML imports (up to 200 commands each)
    /// and sign-in links asked for them.
    pub(crate) previews: tocsin_runtime::rate::KeyedRateLimit<UserId>,
    /// Analytics reports a minute per user: each reads the archive.
    pub(crate) reports: tocsin_runtime::rate::KeyedRateLimit<UserId>,
    pub(crate) bus: Bus,
    pub(crate) avatars: kv::Store,
    pub(crate) addresses: kv::Store,
    /// Shared topics (`routes/topics.rs`).
    pub(crate) topics: kv::Store,
    /// Keys other services publish (the VAPID public key, `routes/push.rs`).
    pub(crate) keys: kv::Store,
    pub(crate) cfg: ApiConfig,
}

impl AppState {
    /// Whether some delivery instance serves `channel`: each says so in `keys` at its start
    /// (`channel.<channel>`), and the key stays when it stops.
    pub(crate) async fn served(&self, channel: tocsin_model::Channel) -> bool {
        let key = format!("channel.{}", channel.as_str());
        matches!(self.keys.get(key).await, Ok(Some(v)) if !v.is_empty())
    }
}

pub(crate) type St = State<Arc<AppState>>;

/// Costly actions one user may ask for a minute (see `AppState::previews`).
const PREVIEWS_PER_MINUTE: u32 = 12;
/// Analytics reports one user may ask for a minute (each reads the archive).
const REPORTS_PER_MINUTE: u32 = 12;

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
    telemetry::describe();
    let bus = Bus::connect(&config.bus, "api").await.map_err(bus_error)?;
    bus.ensure_streams().await.map_err(bus_error)?;
    let avatars = bus.kv("avatars").await.map_err(bus_error)?;
    let addresses = bus.kv("addresses").await.map_err(bus_error)?;
    let topics = bus.kv("topics").await.map_err(bus_error)?;
    let keys = bus.kv("keys").await.map_err(bus_error)?;
    let ready = Readiness::default();
    ready.add_check(bus.connected_check());
    let grace = Duration::from_secs(config.api.shutdown_grace_secs);
    let state = Arc::new(AppState {
        streams: Default::default(),
        shutdown: shutdown.clone(),
        per_ip: tocsin_runtime::rate::KeyedRateLimit::new(config.api.rate_per_ip_per_minute),
        per_user: tocsin_runtime::rate::KeyedRateLimit::new(config.api.rate_per_user_per_minute),
        previews: tocsin_runtime::rate::KeyedRateLimit::new(PREVIEWS_PER_MINUTE),
        reports: tocsin_runtime::rate::KeyedRateLimit::new(REPORTS_PER_MINUTE),
        bus: bus.clone(),
        avatars,
        addresses,
        topics,
        keys,
        cfg: config.api.clone(),
    });
    // the ops routes on their own address when one is given, else beside the API's
    let ops = tocsin_runtime::serve_ops(&config.api.ops_listen, ready.clone(), shutdown.clone())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let app = router(state, ops.is_none().then(|| ready.clone()));
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    ready.set(true);
    info!(addr = ?addr, "api listening");
    let listener = listener::Guarded::new(listener, config.api.listener_limits());
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned());
    // after shutdown, requests in flight get the grace period; live streams end at once (they
    // watch the same token), so an open stream never holds the process up
    let overdue = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(|e| ApiError::internal(format!("server error: {e}")))?,
        () = overdue => warn!(grace_secs = grace.as_secs(), "requests still open after the grace period; closing them"),
    }
    ready.set(false);
    bus.drain().await;
    info!("api stopped");
    Ok(())
}

/// The API's routes, with the ops routes when `ops` is given (no separate ops listener).
fn router(state: Arc<AppState>, ops: Option<Readiness>) -> Router {
    let max = state.cfg.max_body_bytes;
    let app = Router::new()
        .route(
            "/v1/users",
            post(create_user).get(routes::users::list_users),
        )
        .route("/v1/users/{id}", delete(routes::users::delete_user))
        .route("/v1/me", get(me).delete(routes::users::delete_me))
        .route("/v1/me/token", post(routes::credentials::new_api_token))
        .route("/v1/me/feed", post(routes::credentials::new_feed_secret))
        .route(
            "/v1/me/reply-pin",
            put(routes::credentials::set_reply_pin).delete(routes::credentials::remove_reply_pin),
        )
        .route(
            "/v1/sessions",
            delete(routes::credentials::end_other_sessions),
        )
        .route("/v1/sources", get(list_sources).post(add_source))
        .route(
            "/v1/sources/preview",
            post(crate::routes::sources::preview_source),
        )
        .route(
            "/v1/sources/opml",
            get(routes::opml::export).post(routes::opml::import),
        )
        .route(
            "/v1/sources/{id}",
            put(crate::routes::sources::edit_source).delete(remove_source),
        )
        .route("/v1/sources/{id}/settings", put(set_source_settings))
        .route(
            "/v1/destinations",
            get(list_destinations).post(add_destination),
        )
        .route(
            "/v1/destinations/{id}",
            delete(remove_destination).put(edit_destination),
        )
        .route(
            "/v1/destinations/{id}/test",
            post(routes::destinations::test_destination),
        )
        .route(
            "/v1/destinations/{id}/verify",
            post(routes::destinations::verify_destination),
        )
        .route("/v1/inbound", get(get_inbound).put(put_inbound))
        .route("/v1/inbound/rules", get(get_mail_rules).put(put_mail_rules))
        .route("/v1/inbound/address", post(routes::inbound::new_address))
        .route(
            "/v1/policy",
            get(get_policy).put(put_policy).delete(delete_policy),
        )
        .route("/v1/policies", get(list_policies))
        .route(
            "/v1/policies/{name}",
            get(get_named_policy)
                .put(put_named_policy)
                .delete(delete_named_policy),
        )
        .route("/v1/silences", get(list_silences).post(add_silence))
        .route("/v1/silences/{id}", delete(remove_silence))
        .route("/v1/hooks/{user}/{source}/{secret}", post(hooks::receive))
        .route(
            "/v1/topics",
            get(topics::list_topics).post(topics::create_topic),
        )
        .route(
            "/v1/topics/{name}",
            post(topics::publish_to_topic).delete(topics::delete_topic),
        )
        .route(
            "/v1/heartbeats/{user}/{source}/{secret}",
            get(heartbeats::ping).post(heartbeats::ping),
        )
        .route("/v1/notifications/{id}/ack", post(ack))
        .route(
            "/v1/ack/{user}/{id}/{sig}",
            get(ack_link_page).post(ack_link),
        )
        .route("/v1/sms/twilio", post(twilio_inbound))
        .route("/v1/sms/kannel", get(kannel_inbound))
        .route("/v1/history", get(history))
        .route("/v1/analytics", get(routes::analytics::analytics))
        .route("/v1/push/key", get(routes::push::key))
        .route("/v1/publish", post(publish))
        .route("/v1/alertmanager", post(alertmanager))
        .route("/v1/grafana", post(grafana))
        .route("/v1/stream", get(stream))
        .route("/v1/admin/dead-letters", get(dead_letters))
        .route(
            "/v1/admin/dead-letters/{seq}/replay",
            post(replay_dead_letter),
        )
        .route(
            "/v1/session",
            post(routes::session::sign_in).delete(routes::session::sign_out),
        )
        .route("/v1/session/link", post(routes::session::mail_link))
        .route(
            "/v1/session/link/{user}/{code}",
            post(routes::session::use_link),
        )
        .route("/v1/openapi.json", get(openapi::document))
        .route("/feeds/{user}/{file}", get(private_feed))
        .merge(web::router())
        // ntfy-compatible publishing; the API's own first segments are never topics
        .route("/{topic}", put(ntfy_publish).post(ntfy_publish))
        .route(
            "/{topic}/publish",
            get(ntfy_publish).put(ntfy_publish).post(ntfy_publish),
        )
        .route(
            "/{topic}/send",
            get(ntfy_publish).put(ntfy_publish).post(ntfy_publish),
        )
        .route(
            "/{topic}/trigger",
            get(ntfy_publish).put(ntfy_publish).post(ntfy_publish),
        )
        .fallback(|| async { ApiError::not_found("no such endpoint; see /v1/openapi.json") })
        .layer(DefaultBodyLimit::max(max))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limit_per_ip,
        ))
        .layer(axum::middleware::from_fn(session::csrf_guard))
        .layer(axum::middleware::from_fn(web::secure_headers))
        .layer(axum::middleware::from_fn(request_span))
        .layer(axum::middleware::from_fn(close_after_refused_body))
        .with_state(state);
    match ops {
        Some(ready) => app.merge(tocsin_runtime::ops::ops_router(ready)),
        None => app,
    }
}

/// One span per request, named by its route (`/feeds/{user}/{file}`), never by the path it
/// was called with: paths carry feed secrets and ack signatures.
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "(no route)".to_owned());
    let span = tracing::info_span!("request", method = %req.method(), route = %route);
    let response = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| tracing::debug!(status = response.status().as_u16(), "answered"));
    response
}

/// A body refused for its size (413) was not read, so the connection cannot carry another
/// request: say so (`Connection: close`), or the client may send its next request on a
/// connection the server is closing and see it fail ("connection closed before message
/// completed").
async fn close_after_refused_body(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(req).await;
    if response.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// 429 for a client address over `api.rate_per_ip_per_minute`.
async fn limit_per_ip(
    State(state): St,
    axum::extract::ConnectInfo(listener::Peer(peer)): axum::extract::ConnectInfo<listener::Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match state
        .per_ip
        .take(&tocsin_runtime::clients::client_key(peer.ip()))
    {
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

pub(crate) fn bus_error(e: BusError) -> ApiError {
    ApiError::unavailable(format!("the bus is unavailable: {e}"))
}
