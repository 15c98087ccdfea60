//! A polled source's own request headers (a `User-Agent`, an `Accept`, an API key) and the
//! secret they may name as `{{secret}}`: checked here, filled in only by the ingestor, which
//! alone keeps the secret (the rule ADR 0012 set for IMAP passwords).

use crate::Invalid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a source's requests carry beyond the fetcher's own headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRequest {
    /// Header name → value; a value may hold `{{secret}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// What `{{secret}}` stands for: only on its way to the ingestor (in a command, a
    /// subscription or a preview), never in the user's record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The ingestor keeps a secret for this source: its feed is its own, never shared.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keyed: bool,
}

/// What `{{secret}}` in a header value is replaced by.
pub const SECRET: &str = "{{secret}}";

/// Headers a source may not set: the fetcher's own (validators, framing, the host).
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "te",
    "upgrade",
    "if-none-match",
    "if-modified-since",
    "keep-alive",
];

impl SourceRequest {
    pub const MAX_HEADERS: usize = 10;
    pub const MAX_VALUE: usize = 1024;
    pub const MAX_SECRET: usize = 1024;

    pub fn is_default(&self) -> bool {
        *self == SourceRequest::default()
    }

    /// Whether a secret is kept for it (or on its way): its feed is then its own.
    pub fn is_keyed(&self) -> bool {
        self.keyed || self.secret.is_some()
    }

    /// Whether a header names the secret.
    pub fn uses_secret(&self) -> bool {
        self.headers.values().any(|v| v.contains(SECRET))
    }

    /// What is wrong with it, naming the field (`headers.X-Api-Key`, `secret`).
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.headers.len() > Self::MAX_HEADERS {
            return Err(Invalid::new(
                "headers",
                format!("at most {} headers", Self::MAX_HEADERS),
            ));
        }
        for (name, value) in &self.headers {
            let token = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(Invalid::new(
                    "headers",
                    format!("{name:?} is not a header name"),
                ));
            }
            let lower = name.to_ascii_lowercase();
            if RESERVED.contains(&lower.as_str()) || lower.starts_with("proxy-") {
                return Err(Invalid::new(
                    &format!("headers.{name}"),
                    "set by tocsin's fetcher, not by a source",
                ));
            }
            if value.len() > Self::MAX_VALUE || value.chars().any(|c| c.is_control()) {
                return Err(Invalid::new(
                    &format!("headers.{name}"),
                    format!(
                        "a value of at most {} bytes without control characters",
                        Self::MAX_VALUE
                    ),
                ));
            }
        }
        if let Some(secret) = &self.secret
            && (secret.is_empty()
                || secret.len() > Self::MAX_SECRET
                || secret.chars().any(|c| c.is_control()))
        {
            return Err(Invalid::new(
                "secret",
                format!("1-{} bytes without control characters", Self::MAX_SECRET),
            ));
        }
        match (self.uses_secret(), self.is_keyed()) {
            (true, false) => Err(Invalid::new(
                "secret",
                format!("needed: a header names {SECRET}"),
            )),
            (false, true) => Err(Invalid::new(
                "secret",
                format!("no header names it: put {SECRET} in the header that carries it"),
            )),
            _ => Ok(()),
        }
    }

    /// What the user's record keeps: the headers, and that a secret is kept elsewhere.
    pub fn without_secret(&self) -> SourceRequest {
        SourceRequest {
            headers: self.headers.clone(),
            secret: None,
            keyed: self.is_keyed(),
        }
    }

    /// The headers to send, `{{secret}}` replaced by `secret`.
    pub fn render(&self, secret: Option<&str>) -> Result<Vec<(String, String)>, String> {
        self.headers
            .iter()
            .map(|(name, value)| {
                if !value.contains(SECRET) {
                    return Ok((name.clone(), value.clone()));
                }
                let secret = secret.ok_or_else(|| {
                    format!(
                        "the ingestor holds no secret for header {name}: set the source's secret again"
                    )
                })?;
                Ok((name.clone(), value.replace(SECRET, secret)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)], secret: Option<&str>) -> SourceRequest {
        SourceRequest {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret: secret.map(Into::into),
            keyed: false,
        }
    }

    #[test]
    fn headers_are_checked_and_the_secret_goes_where_it_is_named() {
        let r = request(
            &[
                ("X-Api-Key", "{{secret}}"),
                ("User-Agent", "my-watcher/1.0"),
            ],
            Some("k1"),
        );
        assert!(r.validate().is_ok());
        let sent = r.render(r.secret.as_deref()).unwrap();
        assert!(sent.contains(&("X-Api-Key".into(), "k1".into())));
        let kept = r.without_secret();
        assert!(kept.keyed && kept.secret.is_none());
        assert!(
            kept.validate().is_ok(),
            "a kept source names a secret held elsewhere"
        );
        assert!(kept.render(None).unwrap_err().contains("X-Api-Key"));
        for (bad, field) in [
            (request(&[("Host", "x")], None), "headers.Host"),
            (
                request(&[("Proxy-Authorization", "x")], None),
                "headers.Proxy-Authorization",
            ),
            (request(&[("X-A", "a\r\nX-B: b")], None), "headers.X-A"),
            (request(&[("bad name", "x")], None), "headers"),
            (request(&[("X-Api-Key", "{{secret}}")], None), "secret"),
            (request(&[("Accept", "text/html")], Some("k")), "secret"),
        ] {
            assert_eq!(bad.validate().unwrap_err().field, field, "{bad:?}");
        }
    }
}
