//! The webhook channel: a signed JSON POST to the destination's URL.
//!
//! Body: the notification as JSON. Headers: `X-Tocsin-Id` (the job id, stable across
//! retries, so receivers can deduplicate), `X-Tocsin-Timestamp` (seconds), and, when the
//! destination has a secret, `X-Tocsin-Signature: sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<body>">` — the scheme Stripe and GitHub receivers already know how to check.

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use std::time::Duration;
use tocsin_model::{DeliveryJob, Millis};

/// How a send ended, for the retry decision.
#[derive(Debug, Clone, PartialEq)]
pub enum SendResult {
    Delivered(String),
    /// Worth trying again (5xx, 408, 429, network, timeout), not before `after` if given.
    Transient {
        detail: String,
        after: Option<Duration>,
    },
    /// Will never work as it is (4xx, a refused address).
    Permanent(String),
}

/// The request body for a job.
pub fn body(job: &DeliveryJob) -> Vec<u8> {
    let n = &job.notification;
    serde_json::to_vec(&json!({
        "id": n.id,
        "job_id": job.job_id,
        "title": n.title,
        "body": n.body,
        "url": n.url,
        "priority": n.priority,
        "tags": n.tags,
        "source": n.source,
        "created_at_ms": n.created_at_ms,
        "published_at_ms": n.published_at_ms,
    }))
    .expect("json body")
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Classify an HTTP status.
pub fn classify(status: u16, retry_after: Option<Duration>) -> SendResult {
    match status {
        200..=299 => SendResult::Delivered(format!("HTTP {status}")),
        408 | 425 | 429 | 500..=599 => SendResult::Transient {
            detail: format!("HTTP {status} from the webhook"),
            after: retry_after,
        },
        _ => SendResult::Permanent(format!(
            "HTTP {status} from the webhook; check the destination URL"
        )),
    }
}

/// Send `job` with `client` (built with the address guard).
pub async fn send(client: &reqwest::Client, job: &DeliveryJob, now: Millis) -> SendResult {
    let body = body(job);
    let ts = now / 1000;
    let mut req = client
        .post(&job.destination.address)
        .header("content-type", "application/json")
        .header("x-tocsin-id", &job.job_id)
        .header("x-tocsin-timestamp", ts.to_string());
    if let Some(secret) = job.destination.secret.as_deref().filter(|s| !s.is_empty()) {
        req = req.header("x-tocsin-signature", signature(secret, ts, &body));
    }
    match req.body(body).send().await {
        Ok(resp) => {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(3600)));
            classify(resp.status().as_u16(), retry_after)
        }
        Err(e) if e.is_timeout() => SendResult::Transient {
            detail: "the webhook timed out".into(),
            after: None,
        },
        Err(e) => match tocsin_netguard::describe(&e) {
            (msg, true) => SendResult::Permanent(msg),
            (msg, false) => SendResult::Transient {
                detail: format!("cannot reach the webhook: {msg}"),
                after: None,
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_vector() {
        // python3 -c 'import hmac,hashlib;print(hmac.new(b"s3cret",b"1700000000.{}",hashlib.sha256).hexdigest())'
        assert_eq!(
            signature("s3cret", 1_700_000_000, b"{}"),
            "sha256=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(classify(204, None), SendResult::Delivered(_)));
        assert!(matches!(classify(503, None), SendResult::Transient { .. }));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3))),
            SendResult::Transient { after: Some(_), .. }
        ));
        assert!(matches!(classify(404, None), SendResult::Permanent(_)));
        assert!(matches!(classify(410, None), SendResult::Permanent(_)));
    }
}
