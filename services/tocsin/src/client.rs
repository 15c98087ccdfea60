//! The CLI's HTTP client for the API.

use anyhow::{Context, Result, bail};
use serde_json::Value;

pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(base: &str) -> Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()
                .context("cannot build the HTTP client")?,
        })
    }

    /// Call the API with a JSON body (or none); the answer as JSON. An error response becomes
    /// an error with its message and field.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Value> {
        let text = self
            .send(method, path, token, |r| match body {
                Some(b) => r.json(b),
                None => r,
            })
            .await?;
        Ok(if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        })
    }

    /// Call the API with the body `with` sets; the answer's text.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        with: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method.clone(), &url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = with(req)
            .send()
            .await
            .with_context(|| format!("cannot reach the tocsin API at {} (is `tocsin up` running? set --api or TOCSIN_API_URL)", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let msg = json["error"]["message"].as_str().unwrap_or(text.as_str());
            match json["error"]["field"].as_str() {
                Some(f) => bail!("{method} {path}: HTTP {status}: {msg} (field: {f})"),
                None => bail!("{method} {path}: HTTP {status}: {msg}"),
            }
        }
        Ok(text)
    }
}
