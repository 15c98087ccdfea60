//! The harness as an API client: calls as a user or an admin would make them, with the
//! waits and checks the tests share (history exactly as published, a title arriving, sources
//! checked).

use crate::{ADMIN, Harness};
use anyhow::{Context, Result};
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

impl Harness {
    /// Call the API; returns (status, JSON body or Null).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.http.request(method, format!("{}{path}", self.api_url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = StatusCode::from_u16(resp.status().as_u16())?;
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// Create a user; returns (user id, token, atom feed URL).
    /// Create a user; the API's whole answer (id, token, feed URLs, inbound address).
    pub async fn create_user_json(&self, name: &str) -> Result<Value> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/users",
                Some(ADMIN),
                Some(json!({ "name": name })),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::CREATED, "create user: {status} {v}");
        Ok(v)
    }

    /// Create a user; returns (user id, token, atom feed URL).
    pub async fn create_user(&self, name: &str) -> Result<(String, String, String)> {
        let v = self.create_user_json(name).await?;
        Ok((
            v["user_id"].as_str().context("user_id")?.to_owned(),
            v["token"].as_str().context("token")?.to_owned(),
            v["feed"]["atom"].as_str().context("feed")?.to_owned(),
        ))
    }

    /// Add a source for the user of `token` (201 expected); returns its id.
    pub async fn add_source(&self, token: &str, body: Value) -> Result<String> {
        self.post_for_id(token, "/v1/sources", body, StatusCode::CREATED, "source")
            .await
    }

    /// Publish a notification as the user of `token` (202 expected); returns its id.
    pub async fn publish(&self, token: &str, body: Value) -> Result<String> {
        self.post_for_id(token, "/v1/publish", body, StatusCode::ACCEPTED, "")
            .await
    }

    /// Add a destination for the user of `token` (201 expected); returns its id.
    pub async fn add_destination(&self, token: &str, body: Value) -> Result<String> {
        self.post_for_id(
            token,
            "/v1/destinations",
            body,
            StatusCode::CREATED,
            "destination",
        )
        .await
    }

    /// POST `body` to `path` as the user of `token`, expect `status`, and return the `id` of
    /// the answer's `object` (or of the answer itself when `object` is empty).
    async fn post_for_id(
        &self,
        token: &str,
        path: &str,
        body: Value,
        status: StatusCode,
        object: &str,
    ) -> Result<String> {
        let (got, v) = self
            .call(reqwest::Method::POST, path, Some(token), Some(body))
            .await?;
        anyhow::ensure!(got == status, "POST {path}: {got} {v}");
        let it = if object.is_empty() { &v } else { &v[object] };
        Ok(it["id"].as_str().context("id")?.to_owned())
    }

    /// Every notification in a user's history (all pages), newest first.
    pub async fn history(&self, token: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                None => "/v1/history?limit=500".to_owned(),
                Some(c) => format!("/v1/history?limit=500&cursor={c}"),
            };
            let (status, v) = self
                .call(reqwest::Method::GET, &path, Some(token), None)
                .await?;
            anyhow::ensure!(status == StatusCode::OK, "history: {status} {v}");
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// The notifications of a user's history (all pages), newest first, without their
    /// timelines.
    pub async fn notifications(&self, token: &str) -> Result<Vec<Value>> {
        Ok(self
            .history(token)
            .await?
            .into_iter()
            .map(|item| item["notification"].clone())
            .collect())
    }

    /// The notifications of a user's history once it holds at least `n`: history stores them
    /// on its own path, so a delivery (a webhook's request) can come before it.
    pub async fn notifications_at_least(&self, token: &str, n: usize) -> Result<Vec<Value>> {
        tocsin_testkit::wait_for(
            std::time::Duration::from_secs(20),
            &format!("{n} notifications in history"),
            || async {
                let got = self.notifications(token).await.ok()?;
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }

    /// Wait (20 s at most) until notification `id` of the user of `token` has a timeline
    /// entry of `kind` (`resolved`, `failed`, …); returns that entry.
    pub async fn timeline_entry(&self, token: &str, id: &str, kind: &str) -> Result<Value> {
        tocsin_testkit::wait_for(
            Duration::from_secs(20),
            &format!("a {kind} entry in {id}'s timeline"),
            || async {
                let item = self
                    .history(token)
                    .await
                    .ok()?
                    .into_iter()
                    .find(|i| i["notification"]["id"] == id)?;
                item["timeline"]
                    .as_array()?
                    .iter()
                    .find(|e| e["kind"] == kind)
                    .cloned()
            },
        )
        .await
    }

    /// Set the user's default escalation policy (200 expected).
    pub async fn set_policy(&self, token: &str, policy: Value) -> Result<()> {
        let (status, v) = self
            .call(
                reqwest::Method::PUT,
                "/v1/policy",
                Some(token),
                Some(policy),
            )
            .await?;
        anyhow::ensure!(status == StatusCode::OK, "PUT /v1/policy: {status} {v}");
        Ok(())
    }

    /// Wait (20 s at most) until the user of `token` has no escalation under way.
    pub async fn escalations_over(&self, token: &str) -> Result<()> {
        tocsin_testkit::wait_for(
            Duration::from_secs(20),
            "no escalation under way",
            || async {
                let (_, v) = self
                    .call(reqwest::Method::GET, "/v1/policy", Some(token), None)
                    .await
                    .ok()?;
                (v["pending_escalations"] == 0).then_some(())
            },
        )
        .await
    }

    /// Wait until the user's history holds `ids.len()` notifications, then check it holds
    /// exactly `ids`, each once — also a moment later, once redeliveries have settled.
    pub async fn assert_history_is_exactly(
        &self,
        token: &str,
        ids: &std::collections::HashSet<String>,
    ) -> Result<()> {
        let ids_of = |items: Vec<Value>| -> Vec<String> {
            items
                .iter()
                .map(|i| {
                    i["notification"]["id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        };
        let got = tocsin_testkit::wait_for(
            Duration::from_secs(60),
            "every notification in history",
            || async {
                let items = self.history(token).await.ok()?;
                (items.len() >= ids.len()).then_some(items)
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        for got in [ids_of(got), ids_of(self.history(token).await?)] {
            let unique: std::collections::HashSet<String> = got.iter().cloned().collect();
            anyhow::ensure!(
                got.len() == unique.len(),
                "a notification is in history twice"
            );
            anyhow::ensure!(&unique == ids, "history differs from what was published");
        }
        Ok(())
    }

    /// Wait until a notification titled `title` is in the user's history.
    pub async fn wait_for_title(&self, token: &str, title: &str) -> Result<()> {
        tocsin_testkit::wait_for(
            Duration::from_secs(20),
            &format!("{title:?} in history"),
            || async {
                self.history_titles(token)
                    .await
                    .ok()?
                    .iter()
                    .any(|t| t == title)
                    .then_some(())
            },
        )
        .await
    }

    pub async fn history_titles(&self, token: &str) -> Result<Vec<String>> {
        Ok(self
            .history(token)
            .await?
            .iter()
            .map(|i| {
                i["notification"]["title"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect())
    }

    /// Add destination `body` for the user of `token`, expecting 400 naming its address;
    /// returns the refusal's message.
    pub async fn destination_refused(&self, token: &str, body: Value) -> Result<String> {
        let (status, v) = self
            .call(
                reqwest::Method::POST,
                "/v1/destinations",
                Some(token),
                Some(body),
            )
            .await?;
        anyhow::ensure!(
            status == StatusCode::BAD_REQUEST && v["error"]["field"] == "address",
            "expected 400 on the address: {status} {v}"
        );
        Ok(v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// Wait until source `id` of the user of `token` reports an error; returns it.
    pub async fn source_error(&self, token: &str, id: &str) -> Result<String> {
        tocsin_testkit::wait_for(
            Duration::from_secs(20),
            &format!("source {id}'s error"),
            || async {
                let (_, v) = self
                    .call(reqwest::Method::GET, "/v1/sources", Some(token), None)
                    .await
                    .ok()?;
                v["sources"].as_array()?.iter().find(|s| s["id"] == id)?["status"]["error"]
                    .as_str()
                    .map(str::to_owned)
            },
        )
        .await
    }

    /// Wait until a user's sources all report a status; returns the sources.
    pub async fn wait_sources_checked(&self, token: &str, n: usize) -> Result<Vec<Value>> {
        tocsin_testkit::wait_for(
            Duration::from_secs(30),
            "every source to report a status",
            || async {
                let (_, v) = self
                    .call(reqwest::Method::GET, "/v1/sources", Some(token), None)
                    .await
                    .ok()?;
                let s = v["sources"].as_array()?.clone();
                (s.len() == n && s.iter().all(|x| x.get("status").is_some())).then_some(s)
            },
        )
        .await
    }
}
