//! A feed server on loopback whose documents the test changes, and an RDF document builder.

use anyhow::{Result, anyhow};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An HTTP server of feed documents that a test sets per path; it counts requests and
/// honours `If-None-Match` for the ETag it hands out.
#[derive(Clone)]
pub struct FeedServer {
    pub base: String,
    state: Arc<Mutex<FeedState>>,
}

#[derive(Default)]
struct FeedState {
    docs: HashMap<String, (Vec<u8>, &'static str, u32)>,
    requests: HashMap<String, Vec<Instant>>,
    /// Per document: the header (name, value) a request must carry, else 401.
    required: HashMap<String, (String, String)>,
    /// Per document: the headers of its last request.
    last_headers: HashMap<String, HeaderMap>,
}

impl FeedServer {
    pub async fn start() -> Result<FeedServer> {
        let state: Arc<Mutex<FeedState>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(serve))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.map_err(|e| anyhow!(e)) });
        Ok(FeedServer { base, state })
    }

    /// Set the document at `/name`.
    pub fn set(&self, name: &str, body: impl Into<Vec<u8>>, content_type: &'static str) {
        let mut s = self.state.lock().unwrap();
        let version = s.docs.get(name).map(|d| d.2 + 1).unwrap_or(1);
        s.docs
            .insert(name.to_owned(), (body.into(), content_type, version));
    }

    /// Answer `/name` with 401 unless the request carries `header: value` (an API key).
    pub fn require_header(&self, name: &str, header: &str, value: &str) {
        self.state
            .lock()
            .unwrap()
            .required
            .insert(name.to_owned(), (header.to_owned(), value.to_owned()));
    }

    /// A header of the last request for `/name`.
    pub fn last_header(&self, name: &str, header: &str) -> Option<String> {
        self.state
            .lock()
            .unwrap()
            .last_headers
            .get(name)?
            .get(header)?
            .to_str()
            .ok()
            .map(str::to_owned)
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    pub fn requests(&self, name: &str) -> Vec<Instant> {
        self.state
            .lock()
            .unwrap()
            .requests
            .get(name)
            .cloned()
            .unwrap_or_default()
    }
}

async fn serve(
    State(state): State<Arc<Mutex<FeedState>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    s.requests
        .entry(name.clone())
        .or_default()
        .push(Instant::now());
    s.last_headers.insert(name.clone(), headers.clone());
    if let Some((header, value)) = s.required.get(&name)
        && headers.get(header.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str())
    {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let Some((body, ct, version)) = s.docs.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"v{version}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [(header::CONTENT_TYPE, ct.to_owned()), (header::ETAG, etag)],
        body,
    )
        .into_response()
}

/// An RSS 1.0 (RDF) document, Craigslist's shape, with `(id, title, description)` items.
pub fn rdf(items: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        r#"<?xml version="1.0" encoding="utf-8"?>
<rdf:RDF xmlns="http://purl.org/rss/1.0/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.test/search"><title>test listings</title><link>https://example.test/</link><description/></channel>
"#,
    );
    for (id, title, desc) in items {
        s.push_str(&format!(
            "<item rdf:about=\"https://example.test/l/{id}\"><title><![CDATA[{title}]]></title><link>https://example.test/l/{id}</link><description><![CDATA[{desc}]]></description></item>\n"
        ));
    }
    s.push_str("</rdf:RDF>\n");
    s
}
