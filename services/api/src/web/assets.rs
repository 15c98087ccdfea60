//! The web app's files, built into the binary (no CDN: people run tocsin on closed
//! networks): style, script, service worker, manifest and icons.

use crate::AppState;
use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;

/// (path, content type, bytes).
const FILES: [(&str, &str, &[u8]); 7] = [
    (
        "/app/static/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "/app/static/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/app/sw.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/sw.js"),
    ),
    (
        "/app/manifest.webmanifest",
        "application/manifest+json",
        include_bytes!("../../web/manifest.webmanifest"),
    ),
    (
        "/app/static/icon.svg",
        "image/svg+xml",
        include_bytes!("../../web/icon.svg"),
    ),
    (
        "/app/static/icon-192.png",
        "image/png",
        include_bytes!("../../web/icon-192.png"),
    ),
    (
        "/app/static/icon-512.png",
        "image/png",
        include_bytes!("../../web/icon-512.png"),
    ),
];

pub(crate) fn router() -> Router<Arc<AppState>> {
    let mut r = Router::new();
    for (path, content_type, bytes) in FILES {
        r = r.route(path, get(move || async move { file(content_type, bytes) }));
    }
    r
}

fn file(content_type: &'static str, bytes: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // short: a new version is picked up within minutes without any cache busting
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        bytes,
    )
        .into_response()
}
