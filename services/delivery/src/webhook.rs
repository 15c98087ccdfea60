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
    format!(
        "sha256={}",
        tocsin_model::to_hex(&mac.finalize().into_bytes())
    )
}

/// Classify an HTTP status from `what` (`the webhook`, `ntfy`, …).
pub fn classify(status: u16, retry_after: Option<Duration>, what: &str) -> SendResult {
    match status {
        200..=299 => SendResult::Delivered(format!("HTTP {status}")),
        408 | 425 | 429 | 500..=599 => SendResult::Transient {
            detail: format!("HTTP {status} from {what}"),
            after: retry_after,
        },
        _ => SendResult::Permanent(format!(
            "HTTP {status} from {what}; check the destination address"
        )),
    }
}

/// Send a request; the status, its `Retry-After` and up to 64 KiB of the body — or how the
/// exchange failed, classified (a refused address is permanent, the rest transient). A failure
/// never names the URL: a provider's carries its credentials (Kannel's `sendsms?password=…`),
/// a webhook's may carry a token, and the detail reaches the user's timeline and the logs.
pub async fn exchange(
    req: reqwest::RequestBuilder,
    what: &str,
) -> Result<(u16, Option<Duration>, String), SendResult> {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s.min(3600)));
            let mut body = Vec::new();
            let mut resp = resp;
            while let Ok(Some(chunk)) = resp.chunk().await {
                body.extend_from_slice(&chunk);
                if body.len() > 64 * 1024 {
                    break;
                }
            }
            Ok((
                status,
                retry_after,
                String::from_utf8_lossy(&body).into_owned(),
            ))
        }
        Err(e) if e.is_timeout() => Err(SendResult::Transient {
            detail: format!("{what} timed out"),
            after: None,
        }),
        Err(e) => Err(match tocsin_netguard::describe(&e.without_url()) {
            (msg, true) => SendResult::Permanent(msg),
            (msg, false) => SendResult::Transient {
                detail: format!("cannot reach {what}: {msg}"),
                after: None,
            },
        }),
    }
}

/// Send `job` through the address guard.
pub async fn send(
    client: &tocsin_netguard::GuardedClient,
    job: &DeliveryJob,
    now: Millis,
) -> SendResult {
    let body = body(job);
    let ts = now / 1000;
    let req = match client.post(&job.destination.address) {
        Ok(r) => r,
        Err(refused) => return SendResult::Permanent(refused),
    };
    let mut req = req
        .header("content-type", "application/json")
        .header("x-tocsin-id", &job.job_id)
        .header("x-tocsin-timestamp", ts.to_string());
    if let Some(secret) = job.destination.secret.as_deref().filter(|s| !s.is_empty()) {
        req = req.header("x-tocsin-signature", signature(secret, ts, &body));
    }
    match exchange(req.body(body), "the webhook").await {
        Ok((status, retry_after, _)) => classify(status, retry_after, "the webhook"),
        Err(r) => r,
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

    /// A guard that refuses loopback and private addresses, as in production.
    fn guarded() -> tocsin_netguard::GuardedClient {
        tocsin_runtime::install_crypto();
        let policy = tocsin_netguard::AddressPolicy::default();
        tocsin_netguard::GuardedClient::build(policy, 3, |b| b.timeout(Duration::from_secs(2)))
            .unwrap()
    }

    #[tokio::test]
    async fn webhooks_and_push_endpoints_at_refused_ip_literals_are_never_contacted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let http = guarded();
        for address in [
            format!("http://127.0.0.1:{port}/hook"),
            format!("http://[::ffff:127.0.0.1]:{port}/hook"),
            format!("http://2130706433:{port}/hook"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "http://10.0.0.1/internal".to_owned(),
        ] {
            let mut j = crate::compose::tests::job("t", "b", false);
            j.destination.channel = tocsin_model::Channel::Webhook;
            j.destination.address = address.clone();
            match send(&http, &j, 0).await {
                SendResult::Permanent(why) => assert!(why.contains("refused"), "{address}: {why}"),
                other => panic!("{address} was not refused: {other:?}"),
            }
            j.destination.channel = tocsin_model::Channel::Push;
            for format in [
                tocsin_model::PushFormat::Ntfy,
                tocsin_model::PushFormat::Unifiedpush,
                tocsin_model::PushFormat::WebPush,
            ] {
                j.destination.push_format = Some(format);
                match crate::push::send(&http, None, &j).await {
                    SendResult::Permanent(why) => {
                        assert!(why.contains("refused"), "{address}: {why}")
                    }
                    other => panic!("push to {address} was not refused: {other:?}"),
                }
            }
        }
        assert!(
            listener.accept().is_err(),
            "a refused address was contacted anyway"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(classify(204, None, "w"), SendResult::Delivered(_)));
        assert!(matches!(
            classify(503, None, "w"),
            SendResult::Transient { .. }
        ));
        assert!(matches!(
            classify(429, Some(Duration::from_secs(3)), "w"),
            SendResult::Transient { after: Some(_), .. }
        ));
        assert!(matches!(classify(404, None, "w"), SendResult::Permanent(_)));
        assert!(matches!(classify(410, None, "w"), SendResult::Permanent(_)));
    }
}
