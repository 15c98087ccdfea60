//! `/healthz`, `/readyz` and `/metrics` for every service.

use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

type Check = Box<dyn Fn() -> bool + Send + Sync>;

/// Whether a service is ready to take work: it has started (streams ensured, consumers
/// running) and every registered check passes (e.g. the NATS connection is up).
#[derive(Clone, Default)]
pub struct Readiness(Arc<(AtomicBool, std::sync::Mutex<Vec<Check>>)>);

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Readiness").field(&self.is_ready()).finish()
    }
}

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.0.store(ready, Ordering::Relaxed);
    }

    /// Add a condition that must hold for the service to be ready.
    pub fn add_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        self.0
            .1
            .lock()
            .expect("readiness lock")
            .push(Box::new(check));
    }

    pub fn is_ready(&self) -> bool {
        self.0.0.load(Ordering::Relaxed)
            && self.0.1.lock().expect("readiness lock").iter().all(|c| c())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn endpoints_answer_and_readiness_follows_checks() {
        let ready = Readiness::default();
        let up = Arc::new(AtomicBool::new(true));
        let u = up.clone();
        ready.add_check(move || u.load(Ordering::Relaxed));
        let token = CancellationToken::new();
        let addr = serve_ops("127.0.0.1:0", ready.clone(), token.clone())
            .await
            .unwrap()
            .unwrap();
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(
            get("/readyz").await.starts_with("HTTP/1.1 503"),
            "not started yet"
        );
        ready.set(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        up.store(false, Ordering::Relaxed);
        assert!(
            get("/readyz").await.starts_with("HTTP/1.1 503"),
            "a failing check"
        );
        metrics::counter!("tocsin_ops_test_total").increment(1);
        assert!(get("/metrics").await.contains("tocsin_ops_test_total"));
        token.cancel();
    }
}
