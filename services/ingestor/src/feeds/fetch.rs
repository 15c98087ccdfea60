//! Fetching a feed politely and safely: conditional GET, gzip, a cap on the (decompressed)
//! body, timeouts, `Retry-After`, and no requests to private, loopback, link-local or
//! metadata addresses unless the operator allows them — checked on every resolved address
//! and on every redirect, so neither DNS nor a redirect can smuggle a request inside.

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use std::sync::Arc;
use std::time::Duration;
pub use tocsin_netguard::AddressPolicy;

/// What a feed's fetch accepts.
pub const FEED_TYPES: &str = "application/rss+xml, application/rdf+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5";

/// Settings for the client.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub policy: AddressPolicy,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_body_bytes: usize,
    pub user_agent: String,
}

/// The result of one fetch.
#[derive(Debug)]
pub enum Fetched {
    NotModified,
    Body {
        bytes: Vec<u8>,
        etag: Option<String>,
        last_modified: Option<String>,
    },
}

/// Why a fetch failed, with what a person can do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("HTTP {status} from the feed server{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("the feed is larger than {limit} bytes; refusing it")]
    TooLarge { limit: usize },
    #[error("the request timed out")]
    Timeout,
    #[error("cannot reach the feed: {0}")]
    Network(String),
}

impl FetchError {
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            FetchError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A feed fetcher (cheap to clone).
#[derive(Clone)]
pub struct Fetcher {
    client: tocsin_netguard::GuardedClient,
    settings: Arc<FetchSettings>,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, String> {
        let policy = settings.policy;
        let client = tocsin_netguard::GuardedClient::build(policy, 5, |b| {
            b.user_agent(settings.user_agent.clone())
                .timeout(settings.timeout)
                .connect_timeout(settings.connect_timeout)
                .gzip(true)
        })?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    /// The guarded client, for other requests to user-supplied URLs (WebSub hubs).
    pub fn client(&self) -> &tocsin_netguard::GuardedClient {
        &self.client
    }

    /// GET the feed at `url`, conditionally on the validators of the last fetch.
    pub async fn fetch(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        self.fetch_accepting(url, etag, last_modified, FEED_TYPES, &[])
            .await
    }

    /// [`Fetcher::fetch`] asking for `accept` (a JSON API's `application/json`), with the
    /// source's own headers (`extra`, which may replace `Accept` and `User-Agent`).
    pub async fn fetch_accepting(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
        accept: &'static str,
        extra: &[(String, String)],
    ) -> Result<Fetched, FetchError> {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        for (name, value) in extra {
            // checked when the source was added; one that still does not parse is left out
            if let (Ok(n), Ok(v)) = (
                header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        if let Some(v) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(v) = last_modified.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(header::IF_MODIFIED_SINCE, v);
        }
        let resp = self
            .client
            .get(url)
            .map_err(FetchError::Refused)?
            .headers(headers)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status();
        if status == StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_retry_after);
            return Err(FetchError::Status {
                status: status.as_u16(),
                retry_after,
            });
        }
        let limit = self.settings.max_body_bytes;
        if resp.content_length().is_some_and(|l| l as usize > limit) {
            return Err(FetchError::TooLarge { limit });
        }
        let header_str = |name| {
            resp.headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let etag = header_str(header::ETAG);
        let last_modified = header_str(header::LAST_MODIFIED);
        // count decompressed bytes as they arrive: a gzip bomb stops at the limit
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify)?;
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched::Body {
            bytes: body,
            etag,
            last_modified,
        })
    }
}

fn classify(e: reqwest::Error) -> FetchError {
    if e.is_timeout() {
        return FetchError::Timeout;
    }
    // the full chain says which address was refused or what failed
    match tocsin_netguard::describe(&e) {
        (msg, true) => FetchError::Refused(msg),
        (msg, false) => FetchError::Network(msg),
    }
}

/// `Retry-After` as seconds or an HTTP date, capped at a day.
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    let secs = if let Ok(s) = v.parse::<u64>() {
        s
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
        let delta = when.timestamp() - chrono::Utc::now().timestamp();
        delta.max(0) as u64
    };
    Some(Duration::from_secs(secs.min(86_400)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("99999999"),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
