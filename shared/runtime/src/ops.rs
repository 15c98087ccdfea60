//! `/healthz`, `/readyz` and `/metrics` for every service.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Whether a service is ready to take work (connected, streams ensured, consumers running).
#[derive(Clone, Default, Debug)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // another recorder may already be installed (several services in one process share
        // this one, so that only happens in odd embeddings); metrics then go there
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The ops routes, to mount on a service's own router (the API) or serve alone.
pub fn ops_router(ready: Readiness) -> Router {
    prometheus();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(r): State<Readiness>| async move {
                if r.is_ready() {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .route("/metrics", get(|| async { prometheus().render() }))
        .with_state(ready)
}

/// Serve the ops routes on `listen` until `shutdown`; returns the bound address (use port 0
/// in tests). An empty `listen` serves nothing.
pub async fn serve_ops(
    listen: &str,
    ready: Readiness,
    shutdown: CancellationToken,
) -> std::io::Result<Option<SocketAddr>> {
    if listen.is_empty() {
        return Ok(None);
    }
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {listen} for /healthz and /metrics: {e}"),
        )
    })?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, ops_router(ready))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(Some(addr))
}
