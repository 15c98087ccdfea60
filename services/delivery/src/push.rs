//! The push channel: ntfy (so the ntfy phone apps are a mobile client) and UnifiedPush.
//!
//! ntfy: the destination address is a topic URL (`https://ntfy.sh/my-topic`); we use ntfy's
//! JSON publishing (`POST <server>/` with `{topic, title, message, priority, tags, click,
//! actions}`), so titles need no header encoding. Priority maps one to one (1–5). The signed
//! acknowledgement link becomes an `http` action (a POST, no browser needed). A destination
//! secret is sent as the access token (`Authorization: Bearer`).
//!
//! UnifiedPush: the address is the endpoint the distributor gave the app; the message is a
//! small JSON document as the POST body (at most 4 KiB), with `TTL` and `Urgency` headers
//! as in Web Push. 404/410 mean the app unregistered: a permanent failure.

use crate::webhook::{SendResult, classify, exchange};
use serde_json::json;
use tocsin_model::text::truncate;
use tocsin_model::{DeliveryJob, PushFormat};

/// The largest UnifiedPush message.
pub const UNIFIEDPUSH_MAX: usize = 4096;

/// Split an ntfy topic URL into the server root and the topic.
pub fn ntfy_topic(address: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(address).map_err(|e| format!("{address:?} is not a URL ({e})"))?;
    let mut segs: Vec<&str> = u.path_segments().map(|s| s.collect()).unwrap_or_default();
    segs.retain(|s| !s.is_empty());
    let topic = segs
        .pop()
        .ok_or_else(|| format!("{address:?} names no topic (https://ntfy.sh/<topic>)"))?
        .to_owned();
    let mut root = u.clone();
    root.set_path(&format!("{}/", segs.join("/")));
    root.set_query(None);
    Ok((root.to_string(), topic))
}

/// The ntfy JSON message for a job.
pub fn ntfy_message(job: &DeliveryJob, topic: &str) -> serde_json::Value {
    let n = &job.notification;
    let mut m = json!({
        "topic": topic,
        "title": tocsin_model::text::one_line(&n.title),
        "message": if n.body.trim().is_empty() { n.title.clone() } else { truncate(n.body.trim(), 3000) },
        "priority": n.priority.get(),
        "tags": n.tags.iter().take(5).collect::<Vec<_>>(),
    });
    if let Some(u) = &n.url {
        m["click"] = json!(u);
    }
    if let Some(a) = &job.ack_url {
        m["actions"] = json!([{
            "action": "http",
            "label": "Acknowledge",
            "url": a,
            "method": "POST",
            "clear": true
        }]);
    }
    m
}

/// The UnifiedPush body for a job, within [`UNIFIEDPUSH_MAX`].
pub fn unifiedpush_body(job: &DeliveryJob) -> Vec<u8> {
    let n = &job.notification;
    let mut body_len = 2000;
    loop {
        let v = json!({
            "id": n.id,
            "title": truncate(&n.title, 200),
            "body": truncate(n.body.trim(), body_len),
            "url": n.url,
            "priority": n.priority.get(),
            "reference": job.reference,
            "ack_url": job.ack_url,
        });
        let bytes = serde_json::to_vec(&v).expect("json");
        if bytes.len() <= UNIFIEDPUSH_MAX || body_len == 0 {
            return bytes;
        }
        body_len /= 2;
    }
}

/// Send `job` to its push endpoint.
pub async fn send(http: &tocsin_netguard::GuardedClient, job: &DeliveryJob) -> SendResult {
    let d = &job.destination;
    match d.push_format.unwrap_or_default() {
        PushFormat::Ntfy => {
            let (root, topic) = match ntfy_topic(&d.address) {
                Ok(x) => x,
                Err(e) => return SendResult::Permanent(e),
            };
            let req = match http.post(&root) {
                Ok(r) => r,
                Err(refused) => return SendResult::Permanent(refused),
            };
            let mut req = req
                .header("content-type", "application/json")
                .body(ntfy_message(job, &topic).to_string());
            if let Some(token) = d.secret.as_deref().filter(|s| !s.is_empty()) {
                req = req.bearer_auth(token);
            }
            match exchange(req, "the ntfy server").await {
                Ok((status, retry_after, _)) => classify(status, retry_after, "the ntfy server"),
                Err(e) => e,
            }
        }
        PushFormat::Unifiedpush => {
            let urgency = match job.notification.priority.get() {
                1 => "very-low",
                2 => "low",
                5 => "high",
                _ => "normal",
            };
            let req = match http.post(&d.address) {
                Ok(r) => r,
                Err(refused) => return SendResult::Permanent(refused),
            };
            let req = req
                .header("content-type", "application/json")
                .header("ttl", "86400")
                .header("urgency", urgency)
                .body(unifiedpush_body(job));
            match exchange(req, "the UnifiedPush endpoint").await {
                Ok((404 | 410, _, _)) => SendResult::Permanent(
                    "the UnifiedPush endpoint is gone (the app unregistered); add the new endpoint"
                        .into(),
                ),
                Ok((status, retry_after, _)) => {
                    classify(status, retry_after, "the UnifiedPush endpoint")
                }
                Err(e) => e,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntfy_topics_split() {
        assert_eq!(
            ntfy_topic("https://ntfy.sh/alerts-ann").unwrap(),
            ("https://ntfy.sh/".to_owned(), "alerts-ann".to_owned())
        );
        assert_eq!(
            ntfy_topic("http://127.0.0.1:8090/ntfy/t1/").unwrap(),
            ("http://127.0.0.1:8090/ntfy/".to_owned(), "t1".to_owned())
        );
        assert!(ntfy_topic("https://ntfy.sh/").is_err());
    }
}
