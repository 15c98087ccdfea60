//! Reading the latest entries of many keys of a KV bucket in one request: JetStream's batched
//! direct get (`multi_last`, NATS 2.11+). A router uses it to hand the avatars of a bulk
//! hand-over their records at once, instead of one request per avatar.
//!
//! The request goes to `$JS.API.DIRECT.GET.<stream>` with `{"multi_last": [subjects]}`; the
//! server answers with one message per subject that has an entry (its headers name the subject
//! and its sequence, the entry's revision), then an end-of-batch status (204, `Nats-Num-Pending:
//! 0`), or 404 when none of the subjects has one. At most [`MAX_KEYS`] keys go in one request
//! (the server's limit is 1,024 subjects).

use crate::{Bus, BusError};
use async_nats::jetstream::kv;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// Keys per request.
pub const MAX_KEYS: usize = 256;

/// A key's latest entry: its value (None: deleted or purged) and its revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    pub key: String,
    pub value: Option<Bytes>,
    pub revision: u64,
}

impl Bus {
    /// The latest entries of `keys` in `store`, in requests of at most [`MAX_KEYS`] keys sent
    /// together, each answered within `timeout`. A key that never had an entry is absent from
    /// the result. Keys must be valid KV keys (no wildcards): they are read as subjects.
    pub async fn kv_latest(
        &self,
        store: &kv::Store,
        keys: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Latest>, BusError> {
        let chunks = keys
            .chunks(MAX_KEYS)
            .map(|chunk| self.kv_latest_once(store, chunk, timeout));
        let mut out = Vec::with_capacity(keys.len());
        for part in futures::future::join_all(chunks).await {
            out.extend(part?);
        }
        Ok(out)
    }

    async fn kv_latest_once(
        &self,
        store: &kv::Store,
        keys: &[&str],
        timeout: Duration,
    ) -> Result<Vec<Latest>, BusError> {
        let subject = format!("$JS.API.DIRECT.GET.{}", store.stream_name);
        let err = |message: String| BusError::Kv {
            bucket: store.name.clone(),
            key: format!("{} keys from {}", keys.len(), keys.first().unwrap_or(&"")),
            message,
        };
        let subjects: Vec<String> = keys
            .iter()
            .map(|k| format!("{}{k}", store.prefix))
            .collect();
        let body = serde_json::json!({ "multi_last": subjects });
        let inbox = self.client.new_inbox();
        // subscribed before the request goes, so no answer arrives before anyone listens
        let mut answers = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| err(format!("cannot subscribe for the answers: {e}")))?;
        self.client
            .publish_with_reply(subject, inbox, body.to_string().into())
            .await
            .map_err(|e| err(format!("cannot send the request: {e}")))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::with_capacity(keys.len());
        loop {
            let msg = match tokio::time::timeout_at(deadline, answers.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(err("the answers ended before their end mark".into())),
                Err(_) => {
                    return Err(err(format!(
                        "no end of the answers within {} ms ({} entries read)",
                        timeout.as_millis(),
                        out.len()
                    )));
                }
            };
            let header = |name: &str| {
                msg.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_owned())
            };
            match msg.status.map(|s| s.as_u16()) {
                None => {
                    let Some(key) = header("Nats-Subject")
                        .and_then(|s| s.strip_prefix(store.prefix.as_str()).map(str::to_owned))
                    else {
                        return Err(err("an answer names no subject of the bucket".into()));
                    };
                    let revision = header("Nats-Sequence")
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| err(format!("the answer for {key} has no sequence")))?;
                    let deleted =
                        matches!(header("KV-Operation").as_deref(), Some("DEL" | "PURGE"))
                            || header("Nats-Marker-Reason").is_some();
                    out.push(Latest {
                        key,
                        value: (!deleted).then(|| msg.payload.clone()),
                        revision,
                    });
                }
                Some(204) => {
                    let pending = header("Nats-Num-Pending");
                    if pending.as_deref().is_some_and(|p| p != "0") {
                        return Err(err(format!(
                            "the server stopped with {} entries still to send",
                            pending.unwrap_or_default()
                        )));
                    }
                    return Ok(out);
                }
                Some(404) if out.is_empty() => return Ok(out),
                Some(code) => {
                    let why = msg.description.clone().unwrap_or_default();
                    return Err(err(format!("the server answered {code} {why}")));
                }
            }
        }
    }
}
