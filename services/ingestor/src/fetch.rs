//! Fetching a feed politely and safely: conditional GET, gzip, a cap on the (decompressed)
//! body, timeouts, `Retry-After`, and no requests to private, loopback, link-local or
//! metadata addresses unless the operator allows them — checked on every resolved address
//! and on every redirect, so neither DNS nor a redirect can smuggle a request inside.

use futures::StreamExt;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// Which addresses feeds may point at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AddressPolicy {
    /// Loopback (127.0.0.0/8, ::1): for tests and the local demo.
    pub allow_loopback: bool,
    /// Private, link-local, CGNAT and unique-local ranges.
    pub allow_private: bool,
}

impl AddressPolicy {
    /// Why `ip` may not be fetched, if it may not.
    pub fn refuse(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = canonical(ip);
        if ip.is_loopback() {
            return (!self.allow_loopback).then_some("a loopback address");
        }
        if ip.is_unspecified() || ip.is_multicast() {
            return Some("an unspecified or multicast address");
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                if v4.is_broadcast() || o[0] == 0 || o[0] >= 240 {
                    return Some("a reserved address");
                }
                let private = v4.is_private()
                    || v4.is_link_local()
                    || (o[0] == 100 && (o[1] & 0xc0) == 64)
                    || (o[0] == 192 && o[1] == 0 && o[2] == 0);
                (private && !self.allow_private)
                    .then_some("a private, link-local or metadata address")
            }
            IpAddr::V6(v6) => {
                let private = v6.is_unique_local() || v6.is_unicast_link_local();
                (private && !self.allow_private).then_some("a private or link-local address")
            }
        }
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-compatible and NAT64 (`64:ff9b::/96`) addresses
/// judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            if s[..6] == [0, 0, 0, 0, 0, 0]
                && v6 != Ipv6Addr::LOCALHOST
                && v6 != Ipv6Addr::UNSPECIFIED
            {
                let o = v6.octets();
                return IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            IpAddr::V6(v6)
        }
        v4 => v4,
    }
}

/// Resolves names and drops every address the policy refuses; a name with nothing left
/// fails to resolve, with the reason.
struct GuardedResolver(AddressPolicy);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut reason = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.refuse(a.ip()) {
                    Some(r) => {
                        reason = Some(r);
                        false
                    }
                    None => true,
                })
                .collect();
            if allowed.is_empty() {
                let why = reason.unwrap_or("no address");
                return Err(format!("{host} resolves to {why}; refused").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Check a URL's literal host (an IP in the URL never goes through the resolver).
pub fn check_url(url: &reqwest::Url, policy: AddressPolicy) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Ipv4(v4)) => match policy.refuse(IpAddr::V4(v4)) {
            Some(why) => Err(format!("{url} points at {why}; refused")),
            None => Ok(()),
        },
        Some(url::Host::Ipv6(v6)) => match policy.refuse(IpAddr::V6(v6)) {
            Some(why) => Err(format!("{url} points at {why}; refused")),
            None => Ok(()),
        },
        Some(url::Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            if (d == "localhost" || d.ends_with(".localhost")) && !policy.allow_loopback {
                Err(format!("{url} points at a loopback address; refused"))
            } else {
                Ok(())
            }
        }
        None => Err(format!("{url} has no host")),
    }
}

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
    client: reqwest::Client,
    settings: Arc<FetchSettings>,
}

impl Fetcher {
    pub fn new(settings: FetchSettings) -> Result<Self, String> {
        let policy = settings.policy;
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= 5 {
                return attempt.error("more than 5 redirects");
            }
            if let Err(e) = check_url(attempt.url(), policy) {
                return attempt.error(format!("redirect refused: {e}"));
            }
            attempt.follow()
        });
        let client = reqwest::Client::builder()
            .user_agent(settings.user_agent.clone())
            .timeout(settings.timeout)
            .connect_timeout(settings.connect_timeout)
            .redirect(redirect)
            .dns_resolver(Arc::new(GuardedResolver(policy)))
            .gzip(true)
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            client,
            settings: Arc::new(settings),
        })
    }

    /// GET `url`, conditionally on the validators of the last fetch.
    pub async fn fetch(
        &self,
        url: &str,
        etag: Option<&str>,
        last_modified: Option<&str>,
    ) -> Result<Fetched, FetchError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| FetchError::Refused(format!("invalid URL {url}: {e}")))?;
        check_url(&parsed, self.settings.policy).map_err(FetchError::Refused)?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/rss+xml, application/rdf+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.5"),
        );
        if let Some(v) = etag.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(header::IF_NONE_MATCH, v);
        }
        if let Some(v) = last_modified.and_then(|e| HeaderValue::from_str(e).ok()) {
            headers.insert(header::IF_MODIFIED_SINCE, v);
        }
        let resp = self
            .client
            .get(parsed)
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
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if msg.contains("refused;") || msg.contains("redirect refused") {
        FetchError::Refused(tocsin_model::text::one_line(&msg))
    } else {
        FetchError::Network(tocsin_model::text::one_line(&msg))
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
    fn private_and_special_addresses_are_refused() {
        let p = AddressPolicy::default();
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "::127.0.0.1",
        ] {
            let ip: IpAddr = a.parse().unwrap();
            assert!(p.refuse(ip).is_some(), "{a} allowed");
        }
        for a in [
            "93.184.216.34",
            "2606:2800:220:1:248:1893:25c8:1946",
            "8.8.8.8",
        ] {
            assert!(p.refuse(a.parse().unwrap()).is_none(), "{a} refused");
        }
        let lo = AddressPolicy {
            allow_loopback: true,
            allow_private: false,
        };
        assert!(lo.refuse("127.0.0.1".parse().unwrap()).is_none());
        assert!(lo.refuse("10.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn literal_hosts_are_checked() {
        let p = AddressPolicy::default();
        for u in [
            "http://127.0.0.1/x",
            "http://[::1]/",
            "http://localhost:80/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let url = reqwest::Url::parse(u).unwrap();
            assert!(check_url(&url, p).is_err(), "{u}");
        }
        assert!(check_url(&reqwest::Url::parse("https://example.org/").unwrap(), p).is_ok());
    }

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
