//! A demo feed for the five-minute walkthrough: an RSS 1.0 (RDF) document in Craigslist's
//! shape that gains a listing every few seconds, with ETag support.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const LISTINGS: &[(&str, &str)] = &[
    (
        "Trek road bike 56cm - $1,250 (oakland)",
        "Carbon frame, Shimano 105, barely ridden.",
    ),
    (
        "Mid-century sofa - $400 (berkeley)",
        "Walnut legs, new cushions.",
    ),
    (
        "Specialized Allez road bike - $650 (sf)",
        "Aluminium frame, 54cm, new tyres.",
    ),
    (
        "Kids bike 20in - $80 (mission district)",
        "Good condition, training wheels included.",
    ),
    (
        "Cannondale CAAD12 road bike - $900 (san jose)",
        "Ultegra groupset, 56cm.",
    ),
    ("Standing desk - $150 (palo alto)", "Electric, 120x60."),
    (
        "Vintage Peugeot road bike - $300 (alameda)",
        "Steel frame, recently serviced.",
    ),
];

struct Demo {
    started: Instant,
    every: Duration,
}

impl Demo {
    fn count(&self) -> usize {
        1 + (self.started.elapsed().as_secs_f64() / self.every.as_secs_f64()) as usize
    }
}

/// The document with the first `n` listings, newest first.
pub fn document(n: usize, base: &str) -> String {
    let items: Vec<(usize, &(&str, &str))> = (0..n)
        .map(|i| (i, &LISTINGS[i % LISTINGS.len()]))
        .rev()
        .collect();
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rdf:RDF xmlns=\"http://purl.org/rss/1.0/\" xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n",
    );
    s.push_str(&format!("<channel rdf:about=\"{base}/search.rdf\"><title>demo listings</title><link>{base}/</link><description>tocsin demo feed</description><items><rdf:Seq>"));
    for (i, _) in &items {
        s.push_str(&format!("<rdf:li rdf:resource=\"{base}/listing/{i}\"/>"));
    }
    s.push_str("</rdf:Seq></items></channel>\n");
    for (i, (title, desc)) in items {
        s.push_str(&format!(
            "<item rdf:about=\"{base}/listing/{i}\"><title><![CDATA[{title}]]></title><link>{base}/listing/{i}</link><description><![CDATA[{desc}]]></description></item>\n"
        ));
    }
    s.push_str("</rdf:RDF>\n");
    s
}

async fn feed(State(d): State<Arc<Demo>>, headers: HeaderMap) -> Response {
    let n = d.count();
    let etag = format!("\"n{n}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let body = document(n, &format!("http://{host}"));
    (
        [
            (header::CONTENT_TYPE, "application/rdf+xml".to_owned()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

/// Serve the demo feed at `/search.rdf` until `shutdown`; a new listing every `every`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    every: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(Demo {
        started: Instant::now(),
        every,
    });
    let app = Router::new()
        .route("/search.rdf", get(feed))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
