//! The fetcher against a real HTTP server on loopback: conditional GET, gzip, a gzip bomb,
//! a slow server, an endless chunked body, a 100 MB body, Retry-After, and redirects to
//! forbidden addresses.

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::io::Write;
use std::time::Duration;
use tocsin_ingestor::feeds::fetch::{AddressPolicy, FetchError, FetchSettings, Fetched, Fetcher};

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

async fn server() -> String {
    let app = Router::new()
        .route(
            "/etag",
            get(|h: HeaderMap| async move {
                if h.get(header::IF_NONE_MATCH).is_some_and(|v| v == "\"v1\"") {
                    return StatusCode::NOT_MODIFIED.into_response();
                }
                (
                    [
                        (header::ETAG, "\"v1\""),
                        (header::LAST_MODIFIED, "Sat, 21 Nov 2026 10:00:00 GMT"),
                    ],
                    "<rss/>",
                )
                    .into_response()
            }),
        )
        .route(
            "/gzip",
            get(|| async {
                (
                    [(header::CONTENT_ENCODING, "gzip")],
                    gzip(b"<rss>compressed</rss>"),
                )
                    .into_response()
            }),
        )
        .route(
            "/bomb",
            get(|| async {
                (
                    [(header::CONTENT_ENCODING, "gzip")],
                    gzip(&vec![b' '; 20 * 1024 * 1024]),
                )
                    .into_response()
            }),
        )
        .route(
            "/endless",
            // a chunked response that never ends, as fast as the client reads
            get(|| async {
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                let body =
                    futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                axum::body::Body::from_stream(body)
            }),
        )
        .route(
            "/huge",
            // 100 MB announced and sent
            get(|| async {
                let chunk = bytes::Bytes::from(vec![b' '; 1024 * 1024]);
                let body = futures::stream::iter(
                    (0..100).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                );
                (
                    [(header::CONTENT_LENGTH, (100 * 1024 * 1024).to_string())],
                    axum::body::Body::from_stream(body),
                )
                    .into_response()
            }),
        )
        .route(
            "/slow",
            get(|| async {
                let body = futures::stream::unfold(0, |n| async move {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    (n < 100).then_some((
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b" ")),
                        n + 1,
                    ))
                });
                axum::body::Body::from_stream(body)
            }),
        )
        .route(
            "/busy",
            get(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "120")],
                    "busy",
                )
                    .into_response()
            }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "http://169.254.169.254/latest/meta-data/")],
                )
                    .into_response()
            }),
        )
        .route(
            "/to-private",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "http://10.0.0.1/feed")],
                )
                    .into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

fn fetcher(allow_loopback: bool) -> Fetcher {
    tocsin_runtime::install_crypto();
    Fetcher::new(FetchSettings {
        policy: AddressPolicy {
            allow_loopback,
            allow_private: false,
        },
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_secs(2),
        max_body_bytes: 1024 * 1024,
        user_agent: "tocsin-test".into(),
    })
    .unwrap()
}

#[tokio::test]
async fn conditional_get_and_gzip() {
    let base = server().await;
    let f = fetcher(true);
    let Fetched::Body {
        etag,
        last_modified,
        ..
    } = f.fetch(&format!("{base}/etag"), None, None).await.unwrap()
    else {
        panic!("expected a body")
    };
    assert_eq!(etag.as_deref(), Some("\"v1\""));
    assert!(last_modified.is_some());
    assert!(matches!(
        f.fetch(&format!("{base}/etag"), etag.as_deref(), None)
            .await
            .unwrap(),
        Fetched::NotModified
    ));
    match f.fetch(&format!("{base}/gzip"), None, None).await.unwrap() {
        Fetched::Body { bytes, .. } => assert_eq!(bytes, b"<rss>compressed</rss>"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn bombs_slow_servers_and_busy_servers_get_clear_errors() {
    let base = server().await;
    let f = fetcher(true);
    assert_eq!(
        f.fetch(&format!("{base}/bomb"), None, None)
            .await
            .unwrap_err(),
        FetchError::TooLarge { limit: 1024 * 1024 }
    );
    let started = std::time::Instant::now();
    assert_eq!(
        f.fetch(&format!("{base}/slow"), None, None)
            .await
            .unwrap_err(),
        FetchError::Timeout
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    // an endless chunked body and a 100 MB one stop at the limit, without reading on
    for path in ["/endless", "/huge"] {
        let started = std::time::Instant::now();
        assert_eq!(
            f.fetch(&format!("{base}{path}"), None, None)
                .await
                .unwrap_err(),
            FetchError::TooLarge { limit: 1024 * 1024 },
            "{path}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{path}");
    }
    let e = f
        .fetch(&format!("{base}/busy"), None, None)
        .await
        .unwrap_err();
    assert_eq!(e.retry_after(), Some(Duration::from_secs(120)));
    assert!(e.to_string().contains("HTTP 503"), "{e}");
}

#[tokio::test]
async fn forbidden_addresses_are_refused_directly_and_through_redirects() {
    let base = server().await;
    // loopback itself, when not allowed
    let e = fetcher(false)
        .fetch(&format!("{base}/etag"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Refused(_)), "{e}");
    // an allowed server redirecting to the metadata address or a private one
    let f = fetcher(true);
    for path in ["/to-metadata", "/to-private"] {
        let e = f
            .fetch(&format!("{base}{path}"), None, None)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::Refused(_)), "{path}: {e}");
        assert!(e.to_string().contains("refused"), "{path}: {e}");
    }
    // a name that resolves to loopback
    let e = fetcher(false)
        .fetch(&base.replace("127.0.0.1", "localhost"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Refused(_)), "{e}");
}
