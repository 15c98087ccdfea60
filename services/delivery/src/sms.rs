//! The SMS channel: Twilio's Messages REST API, or an HTTP gateway speaking Kannel's
//! `sendsms` interface. The text is fitted to `max_segments` (see `compose::sms_text`).
//!
//! Twilio: `POST <base>/2010-04-01/Accounts/<sid>/Messages.json` with `To`, `From` (or
//! `MessagingServiceSid`) and `Body`, HTTP basic auth `<sid>:<auth token>`; 201 with the
//! message `sid`. Errors carry Twilio's numeric `code`: a bad number (21211, 21614, …) fails
//! for good, 429 and 5xx are retried, bad credentials are retried too (an operator can fix
//! them without losing what is queued).
//!
//! Kannel: `GET <url>?username&password&from&to&text&charset=UTF-8&coding=<0|2>`; "0: Accepted
//! for delivery" and "3: Queued for later delivery" (202) both mean the gateway has it.

use crate::compose;
use crate::webhook::{SendResult, classify, exchange};
use serde::{Deserialize, Serialize};
use tocsin_model::DeliveryJob;

/// The `[delivery.sms]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmsConfig {
    /// `twilio` or `kannel`.
    pub provider: SmsProvider,
    /// Segments one notification may use (the text is cut to fit; the ack link is kept).
    pub max_segments: usize,
    /// Sends per second to the provider (0: no limit).
    pub rate_per_sec: f64,
    /// Twilio's API root; a Twilio-compatible server can stand in.
    pub twilio_base_url: String,
    pub twilio_account_sid: String,
    /// Give it through `TOCSIN_DELIVERY__SMS__TWILIO_AUTH_TOKEN`.
    pub twilio_auth_token: String,
    /// The sending number (E.164), or leave empty and set a messaging service.
    pub twilio_from: String,
    pub twilio_messaging_service_sid: String,
    /// Kannel's sendsms URL: `http://127.0.0.1:13013/cgi-bin/sendsms`.
    pub kannel_url: String,
    pub kannel_username: String,
    /// Give it through `TOCSIN_DELIVERY__SMS__KANNEL_PASSWORD`.
    pub kannel_password: String,
    pub kannel_from: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SmsProvider {
    Twilio,
    Kannel,
}

impl Default for SmsConfig {
    fn default() -> Self {
        Self {
            provider: SmsProvider::Twilio,
            max_segments: 3,
            rate_per_sec: 1.0,
            twilio_base_url: "https://api.twilio.com".into(),
            twilio_account_sid: String::new(),
            twilio_auth_token: String::new(),
            twilio_from: String::new(),
            twilio_messaging_service_sid: String::new(),
            kannel_url: String::new(),
            kannel_username: String::new(),
            kannel_password: String::new(),
            kannel_from: String::new(),
        }
    }
}

impl SmsConfig {
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(1..=10).contains(&self.max_segments) {
            p.push("delivery.sms.max_segments: 1 to 10".into());
        }
        if self.rate_per_sec < 0.0 || !self.rate_per_sec.is_finite() {
            p.push("delivery.sms.rate_per_sec: 0 (no limit) or more".into());
        }
        match self.provider {
            SmsProvider::Twilio => {
                if self.twilio_account_sid.is_empty() || self.twilio_auth_token.is_empty() {
                    p.push(
                        "delivery.sms.twilio_account_sid and twilio_auth_token: needed for Twilio"
                            .into(),
                    );
                }
                if self.twilio_from.is_empty() && self.twilio_messaging_service_sid.is_empty() {
                    p.push("delivery.sms.twilio_from or twilio_messaging_service_sid: needed for Twilio".into());
                }
                if url::Url::parse(&self.twilio_base_url).is_err() {
                    p.push(format!(
                        "delivery.sms.twilio_base_url: {:?} is not a URL",
                        self.twilio_base_url
                    ));
                }
            }
            SmsProvider::Kannel => {
                if url::Url::parse(&self.kannel_url).is_err() {
                    p.push(format!(
                        "delivery.sms.kannel_url: {:?} is not a URL (e.g. http://127.0.0.1:13013/cgi-bin/sendsms)",
                        self.kannel_url
                    ));
                }
            }
        }
        p
    }
}

#[derive(Deserialize)]
struct TwilioError {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct TwilioMessage {
    sid: String,
    #[serde(default)]
    status: String,
}

/// Twilio error codes that mean the number will never take this message.
fn twilio_permanent(code: i64) -> bool {
    matches!(
        code,
        21211 // invalid 'To' number
        | 21214 // 'To' cannot be reached
        | 21217 // not a valid phone number
        | 21408 // region not enabled
        | 21610 // the recipient replied STOP
        | 21612 // cannot route to this number
        | 21614 // not a mobile number
        | 21617 // body too long
    )
}

/// Send `job` over SMS with `cfg`.
pub async fn send(http: &reqwest::Client, cfg: &SmsConfig, job: &DeliveryJob) -> SendResult {
    let text = compose::sms_text(job, cfg.max_segments);
    let to = &job.destination.address;
    match cfg.provider {
        SmsProvider::Twilio => twilio(http, cfg, to, &text).await,
        SmsProvider::Kannel => kannel(http, cfg, to, &text).await,
    }
}

async fn twilio(http: &reqwest::Client, cfg: &SmsConfig, to: &str, text: &str) -> SendResult {
    let url = format!(
        "{}/2010-04-01/Accounts/{}/Messages.json",
        cfg.twilio_base_url.trim_end_matches('/'),
        cfg.twilio_account_sid
    );
    let mut form = vec![("To", to), ("Body", text)];
    if cfg.twilio_messaging_service_sid.is_empty() {
        form.push(("From", &cfg.twilio_from));
    } else {
        form.push(("MessagingServiceSid", &cfg.twilio_messaging_service_sid));
    }
    let body = serde_urlencoded::to_string(&form).expect("form encoding");
    let req = http
        .post(url)
        .basic_auth(&cfg.twilio_account_sid, Some(&cfg.twilio_auth_token))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    let (status, retry_after, body) = match exchange(req, "Twilio").await {
        Ok(r) => r,
        Err(e) => return e,
    };
    match status {
        200..=299 => match serde_json::from_str::<TwilioMessage>(&body) {
            Ok(m) => SendResult::Delivered(format!("Twilio message {} ({})", m.sid, m.status)),
            Err(_) => SendResult::Delivered(format!("HTTP {status} from Twilio")),
        },
        401 | 403 => SendResult::Transient {
            detail: format!(
                "Twilio refused the credentials (HTTP {status}); check delivery.sms.twilio_account_sid and twilio_auth_token"
            ),
            after: None,
        },
        _ => {
            let err: Option<TwilioError> = serde_json::from_str(&body).ok();
            let what = match &err {
                Some(e) => format!("Twilio error {}: {}", e.code.unwrap_or(0), e.message),
                None => "Twilio".to_owned(),
            };
            match (status, err.and_then(|e| e.code)) {
                (400 | 404, Some(code)) if twilio_permanent(code) => SendResult::Permanent(what),
                (400, _) => SendResult::Permanent(format!("HTTP 400: {what}")),
                _ => classify(status, retry_after, &what),
            }
        }
    }
}

async fn kannel(http: &reqwest::Client, cfg: &SmsConfig, to: &str, text: &str) -> SendResult {
    let coding = match compose::sms_encoding(text) {
        compose::SmsEncoding::Gsm7 => "0",
        compose::SmsEncoding::Ucs2 => "2",
    };
    let mut query = vec![
        ("username", cfg.kannel_username.as_str()),
        ("password", cfg.kannel_password.as_str()),
        ("to", to),
        ("text", text),
        ("charset", "UTF-8"),
        ("coding", coding),
    ];
    if !cfg.kannel_from.is_empty() {
        query.push(("from", &cfg.kannel_from));
    }
    let req = http.get(&cfg.kannel_url).query(&query);
    let (status, retry_after, body) = match exchange(req, "the SMS gateway").await {
        Ok(r) => r,
        Err(e) => return e,
    };
    let answer = body.trim().chars().take(200).collect::<String>();
    match status {
        200..=299 => SendResult::Delivered(format!("gateway: {answer}")),
        401 | 403 => SendResult::Transient {
            detail: format!(
                "the SMS gateway refused the credentials ({answer}); check delivery.sms.kannel_username and kannel_password"
            ),
            after: None,
        },
        400 => SendResult::Permanent(format!("the SMS gateway refused the message: {answer}")),
        _ => classify(status, retry_after, &format!("the SMS gateway ({answer})")),
    }
}

#[cfg(test)]
mod redaction_tests {
    use super::*;

    #[tokio::test]
    async fn a_gateway_that_cannot_be_reached_does_not_leak_its_credentials() {
        tocsin_runtime::install_crypto();
        // a port nobody listens on
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = SmsConfig {
            kannel_url: format!("http://127.0.0.1:{port}/cgi-bin/sendsms"),
            kannel_username: "tocsin".into(),
            kannel_password: "gateway-s3cret".into(),
            ..Default::default()
        };
        let http = reqwest::Client::new();
        let detail = match kannel(&http, &cfg, "+15550001111", "hello").await {
            SendResult::Transient { detail, .. } => detail,
            other => panic!("{other:?}"),
        };
        assert!(detail.contains("cannot reach the SMS gateway"), "{detail}");
        assert!(!detail.contains("gateway-s3cret"), "{detail}");
        assert!(!detail.contains("password"), "{detail}");
    }
}
