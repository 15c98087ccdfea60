//! The e-mail channel: a multipart (text + HTML) message over SMTP with lettre.
//!
//! The `Message-ID` is derived from the job (`<notification>.<destination>@<from domain>`), so a
//! retried send is recognisably the same message. Titles are folded to one line before they
//! become a subject, and lettre encodes every header, so no title can add a header. The HTML
//! part is built from escaped plain text; only http(s) links are emitted. Every message says it
//! is automatic (`Auto-Submitted: auto-generated`) and carries tocsin's loop mark, which the
//! e-mail ingress refuses.

use crate::webhook::SendResult;
use lettre::message::{Mailbox, MultiPart, header};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tocsin_model::DeliveryJob;
use tocsin_model::text::{one_line, truncate};

/// How to reach the SMTP relay.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    /// `none` (plain, for a relay on localhost), `starttls` (required), or `tls` (implicit).
    pub tls: SmtpTls,
    pub username: String,
    /// Give it through `TOCSIN_DELIVERY__SMTP__PASSWORD`.
    pub password: String,
    /// The sender: `tocsin <notify@example.org>`.
    pub from: String,
    pub timeout_secs: u64,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: 587,
            tls: SmtpTls::Starttls,
            username: String::new(),
            password: String::new(),
            from: String::new(),
            timeout_secs: 30,
        }
    }
}

impl SmtpConfig {
    /// What is allowed but unwise, said once at start: plain SMTP to a relay on another
    /// machine sends every message, and the relay password, across the network in clear.
    pub fn warning(&self) -> Option<String> {
        let local = self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
        (self.tls == SmtpTls::None && !local).then(|| {
            format!(
                "delivery.smtp.tls = \"none\" to {}, not this machine: messages{} cross the network in clear; set tls = \"starttls\" or \"tls\"",
                self.host,
                if self.username.is_empty() { "" } else { " and the relay password" }
            )
        })
    }

    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.host.is_empty() {
            p.push("delivery.smtp.host: needed for the email channel".into());
        }
        if self.from.parse::<Mailbox>().is_err() {
            p.push(format!(
                "delivery.smtp.from: {:?} is not a mailbox like \"tocsin <notify@example.org>\"",
                self.from
            ));
        }
        if self.timeout_secs == 0 {
            p.push("delivery.smtp.timeout_secs: must be greater than 0".into());
        }
        p
    }
}

/// A connection pool to the relay, and the sender.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("delivery.smtp.from: {e}"))?;
        let tls = || {
            TlsParameters::new(cfg.host.clone()).map_err(|e| format!("TLS for {}: {e}", cfg.host))
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.as_str())
            .port(cfg.port)
            .timeout(Some(Duration::from_secs(cfg.timeout_secs)));
        b = match cfg.tls {
            SmtpTls::None => b.tls(Tls::None),
            SmtpTls::Starttls => b.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => b.tls(Tls::Wrapper(tls()?)),
        };
        if !cfg.username.is_empty() {
            b = b.credentials(Credentials::new(cfg.username.clone(), cfg.password.clone()));
        }
        Ok(Mailer {
            transport: b.build(),
            from,
        })
    }

    /// Build and send the message for `job`.
    pub async fn send(&self, job: &DeliveryJob) -> SendResult {
        let msg = match build(&self.from, job) {
            Ok(m) => m,
            Err(e) => return SendResult::Permanent(e),
        };
        match self.transport.send(msg).await {
            Ok(r) => SendResult::Delivered(format!("SMTP {}", r.code())),
            Err(e) if e.is_permanent() => SendResult::Permanent(format!(
                "the mail server refused it: {}",
                one_line(&e.to_string())
            )),
            Err(e) => SendResult::Transient {
                detail: format!(
                    "cannot send through the mail server: {}",
                    one_line(&e.to_string())
                ),
                after: None,
            },
        }
    }
}

/// The message for a job (pure).
pub fn build(from: &Mailbox, job: &DeliveryJob) -> Result<Message, String> {
    let n = &job.notification;
    let to: Mailbox = job.destination.address.parse().map_err(|e| {
        format!(
            "{:?} is not an e-mail address: {e}",
            job.destination.address
        )
    })?;
    let domain = from.email.domain().to_owned();
    let subject = truncate(&one_line(&n.title), 200);
    let link = n
        .url
        .as_deref()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    let mut text = format!("{}\n\n", one_line(&n.title));
    if !n.body.is_empty() {
        text.push_str(&n.body);
        text.push_str("\n\n");
    }
    if let Some(u) = link {
        text.push_str(&format!("{u}\n\n"));
    }
    if let Some(a) = &job.ack_url {
        text.push_str(&format!(
            "Acknowledge (stops any further escalation): {a}\n\n"
        ));
    }
    text.push_str(&format!(
        "-- \ntocsin · {} · priority {}\n",
        n.source.label,
        n.priority.get()
    ));
    let mut html = format!("<h2>{}</h2>", escape(&one_line(&n.title)));
    if !n.body.is_empty() {
        html.push_str(&format!("<p>{}</p>", escape(&n.body).replace('\n', "<br>")));
    }
    if let Some(u) = link {
        html.push_str(&format!(
            "<p><a href=\"{}\">{}</a></p>",
            escape(u),
            escape(u)
        ));
    }
    if let Some(a) = &job.ack_url {
        html.push_str(&format!(
            "<p><a href=\"{}\">Acknowledge</a> (stops any further escalation)</p>",
            escape(a)
        ));
    }
    html.push_str(&format!(
        "<p style=\"color:#777\">tocsin · {} · priority {}</p>",
        escape(&n.source.label),
        n.priority.get()
    ));
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(subject)
        .message_id(Some(format!("<{}.{}@{domain}>", n.id, job.destination.id)))
        .header(header::MIME_VERSION_1_0)
        // RFC 3834: no auto-responder answers it; and tocsin's own mark, so that its mail
        // forwarded back to any tocsin inbound address is not taken in again
        .raw_header(header::HeaderValue::new(
            header::HeaderName::new_from_ascii_str("Auto-Submitted"),
            "auto-generated".into(),
        ))
        .raw_header(header::HeaderValue::new(
            header::HeaderName::new_from_ascii_str(tocsin_model::own::LOOP_HEADER),
            domain.clone(),
        ))
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| format!("cannot build the message: {e}"))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::*;

    fn job(title: &str, url: Option<&str>) -> DeliveryJob {
        DeliveryJob {
            job_id: "n1:d1".into(),
            notification: Notification {
                id: NotificationId("n1".into()),
                user: UserId::parse("u1").unwrap(),
                source: SourceRef {
                    kind: SourceKind::Publish,
                    id: None,
                    label: "api".into(),
                },
                title: title.into(),
                body: "line one\n<script>x</script>".into(),
                url: url.map(Into::into),
                priority: Priority::DEFAULT,
                tags: vec![],
                created_at_ms: 0,
                published_at_ms: None,
                dedup_key: None,
            },
            destination: Destination {
                id: "d1".into(),
                channel: Channel::Email,
                address: "ann@example.org".into(),
                secret: None,
                label: String::new(),
                push_format: None,
                throttle: None,
                verification: None,
                created_at_ms: 0,
            },
            kind: JobKind::Notification,
            reference: Some(3),
            ack_url: Some("https://t.example/v1/ack/u1/n1/sig".into()),
        }
    }

    #[test]
    fn plain_smtp_to_another_machine_is_a_warning() {
        let cfg = |host: &str, tls| SmtpConfig {
            host: host.into(),
            tls,
            username: "relay".into(),
            ..Default::default()
        };
        for local in ["localhost", "127.0.0.1", "::1", "[::1]"] {
            assert_eq!(cfg(local, SmtpTls::None).warning(), None, "{local}");
        }
        let w = cfg("smtp.example.org", SmtpTls::None).warning().unwrap();
        assert!(
            w.contains("smtp.example.org") && w.contains("relay password"),
            "{w}"
        );
        assert_eq!(cfg("smtp.example.org", SmtpTls::Starttls).warning(), None);
    }

    #[test]
    fn titles_cannot_inject_headers_and_html_is_escaped() {
        let from: Mailbox = "tocsin <notify@tocsin.test>".parse().unwrap();
        let m = build(
            &from,
            &job(
                "Disk full\r\nBcc: evil@example.org",
                Some("javascript:alert(1)"),
            ),
        )
        .unwrap();
        let raw = String::from_utf8(m.formatted()).unwrap();
        assert!(
            !raw.lines()
                .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
            "{raw}"
        );
        assert!(raw.contains("Message-ID: <n1.d1@tocsin.test>"), "{raw}");
        assert!(raw.contains("Auto-Submitted: auto-generated\r\n"), "{raw}");
        assert!(raw.contains("X-Tocsin-Loop: tocsin.test\r\n"), "{raw}");
        let html = raw.split("text/html").nth(1).expect("an html part");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(!raw.contains("javascript:"), "{raw}");
        assert!(raw.contains("multipart/alternative"));
        assert!(raw.contains("https://t.example/v1/ack/u1/n1/sig"), "{raw}");
    }
}
