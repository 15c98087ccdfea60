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
//!
//! Web Push (a browser, the web app installed on a phone): the same JSON document, encrypted
//! to the subscription's keys and signed with the server's VAPID key (`webpush.rs`); the
//! service worker shows it with an "Acknowledge" action that posts the signed link.

use crate::webhook::{SendResult, classify, exchange};
use crate::webpush::{self, Vapid};
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

/// The UnifiedPush and Web Push message for a job (the service worker reads the same
/// fields), within `max` bytes: the body is cut until it fits.
pub fn push_body(job: &DeliveryJob, max: usize) -> Vec<u8> {
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
        if bytes.len() <= max || body_len == 0 {
            return bytes;
        }
        body_len /= 2;
    }
}

fn urgency(job: &DeliveryJob) -> &'static str {
    match job.notification.priority.get() {
        1 => "very-low",
        2 => "low",
        5 => "high",
        _ => "normal",
    }
}

/// Send `job` to its push endpoint (`vapid`: the server's Web Push identity, if configured).
pub async fn send(
    http: &tocsin_netguard::GuardedClient,
    vapid: Option<&Vapid>,
    job: &DeliveryJob,
) -> SendResult {
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
            let req = match http.post(&d.address) {
                Ok(r) => r,
                Err(refused) => return SendResult::Permanent(refused),
            };
            let req = req
                .header("content-type", "application/json")
                .header("ttl", "86400")
                .header("urgency", urgency(job))
                .body(push_body(job, UNIFIEDPUSH_MAX));
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
        PushFormat::WebPush => {
            let req = match http.post(&d.address) {
                Ok(r) => r,
                Err(refused) => return SendResult::Permanent(refused),
            };
            let Some(vapid) = vapid else {
                return SendResult::Permanent(
                    "web push is not configured on this server: set delivery.web_push.vapid_private_key and subject".into(),
                );
            };
            let sealed = webpush::Subscription::parse(d.secret.as_deref().unwrap_or_default())
                .and_then(|to| webpush::encrypt(&to, &push_body(job, webpush::MAX_PLAINTEXT)));
            let body = match sealed {
                Ok(b) => b,
                Err(e) => return SendResult::Permanent(format!("the browser's subscription: {e}")),
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let authorization = match vapid.authorization(&d.address, now) {
                Ok(a) => a,
                Err(e) => return SendResult::Permanent(e.to_string()),
            };
            let req = req
                .header("content-type", "application/octet-stream")
                .header("content-encoding", "aes128gcm")
                .header("ttl", "86400")
                .header("urgency", urgency(job))
                .header("authorization", authorization)
                .body(body);
            match exchange(req, "the browser's push service").await {
                Ok((404 | 410, _, _)) => SendResult::Permanent(
                    "the browser's push subscription is gone (unsubscribed, or the site's data cleared): turn push on again in the web app"
                        .into(),
                ),
                Ok((403, _, _)) => SendResult::Permanent(
                    "the push service refused this server's VAPID key: the subscription was made with another key (was delivery.web_push.vapid_private_key changed?); turn push on again in the web app"
                        .into(),
                ),
                Ok((413, _, _)) => SendResult::Permanent(
                    "the push service refused the message as too large".into(),
                ),
                Ok((status, retry_after, _)) => {
                    classify(status, retry_after, "the browser's push service")
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
