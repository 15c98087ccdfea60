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
use std::sync::Arc;
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
    /// Bounds a send: connecting, and the whole conversation after it.
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
    /// Replaced when a send overruns its time (see [`Mailer::send`]).
    transport: std::sync::Mutex<Arc<AsyncSmtpTransport<Tokio1Executor>>>,
    cfg: SmtpConfig,
    from: Mailbox,
}

impl Mailer {
    pub fn new(cfg: &SmtpConfig) -> Result<Mailer, String> {
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| format!("delivery.smtp.from: {e}"))?;
        Ok(Mailer {
            transport: std::sync::Mutex::new(Arc::new(transport(cfg)?)),
            cfg: cfg.clone(),
            from,
        })
    }

    /// Build and send the message for `job`: the whole conversation, from connecting to the
    /// relay's last reply, within `timeout_secs` (lettre's own timeout bounds only the connect).
    pub async fn send(&self, job: &DeliveryJob) -> SendResult {
        let msg = match build(&self.from, job) {
            Ok(m) => m,
            Err(e) => return SendResult::Permanent(e),
        };
        let transport = self.current().clone();
        let limit = Duration::from_secs(self.cfg.timeout_secs);
        match tokio::time::timeout(limit, transport.send(msg)).await {
            Ok(Ok(r)) => SendResult::Delivered(format!("SMTP {}", r.code())),
            Ok(Err(e)) if e.is_permanent() => SendResult::Permanent(format!(
                "the mail server refused it: {}",
                one_line(&e.to_string())
            )),
            Ok(Err(e)) => SendResult::Transient {
                detail: format!(
                    "cannot send through the mail server: {}",
                    one_line(&e.to_string())
                ),
                after: None,
            },
            Err(_) => {
                self.replace(&transport);
                SendResult::Transient {
                    detail: format!(
                        "the mail server {}:{} did not finish the conversation within {} s \
                         (delivery.smtp.timeout_secs); trying again later",
                        self.cfg.host, self.cfg.port, self.cfg.timeout_secs
                    ),
                    after: None,
                }
            }
        }
    }

    /// The transport in use. Its lock is held only to clone or swap an `Arc`; were it ever
    /// poisoned, the transport it guards is still whole, so sends go on rather than panic.
    fn current(&self) -> std::sync::MutexGuard<'_, Arc<AsyncSmtpTransport<Tokio1Executor>>> {
        self.transport
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A send that overran gave its connection back to the pool in the middle of a
    /// conversation; reused, its replies would be out of step with its commands. So the pool
    /// goes (closing its connections once the sends still using it are done) and the next
    /// send opens a new one — unless another overrun has replaced it already.
    fn replace(&self, stale: &Arc<AsyncSmtpTransport<Tokio1Executor>>) {
        let mut current = self.current();
        if Arc::ptr_eq(&current, stale) {
            match transport(&self.cfg) {
                Ok(t) => *current = Arc::new(t),
                // the same settings made a transport at start; kept as it is if not now
                Err(e) => tracing::warn!(error = %e, "cannot renew the mail server's connections"),
            }
        }
    }
}

/// A pooled transport to the relay `cfg` names.
fn transport(cfg: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let tls =
        || TlsParameters::new(cfg.host.clone()).map_err(|e| format!("TLS for {}: {e}", cfg.host));
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
    Ok(b.build())
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

    /// A relay on loopback: the first connection answers the greeting and EHLO, then never
    /// answers MAIL; every later one speaks SMTP to the end. Counts connections.
    async fn stalling_relay() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    w.write_all(b"220 relay.test ESMTP\r\n").await?;
                    let mut data = false;
                    while let Some(line) = lines.next_line().await? {
                        let reply: &[u8] = match line.get(..4).unwrap_or("").to_ascii_uppercase() {
                            _ if data && line == "." => {
                                data = false;
                                b"250 2.0.0 queued\r\n"
                            }
                            _ if data => continue,
                            c if c == "EHLO" => b"250 relay.test\r\n",
                            // the first connection goes silent here and holds on
                            c if c == "MAIL" && n == 0 => std::future::pending().await,
                            c if c == "DATA" => {
                                data = true;
                                b"354 go on\r\n"
                            }
                            c if c == "QUIT" => b"221 bye\r\n",
                            _ => b"250 ok\r\n",
                        };
                        w.write_all(reply).await?;
                    }
                    Ok::<_, std::io::Error>(())
                });
            }
        });
        (port, accepted)
    }

    #[tokio::test]
    async fn a_relay_that_stops_answering_fails_the_send_in_time_and_its_connection_is_not_reused()
    {
        let (port, accepted) = stalling_relay().await;
        let mailer = Mailer::new(&SmtpConfig {
            host: "127.0.0.1".into(),
            port,
            tls: SmtpTls::None,
            from: "tocsin <notify@tocsin.test>".into(),
            timeout_secs: 1,
            ..Default::default()
        })
        .unwrap();
        let job = job("Disk full", None);
        let bound = Duration::from_secs(10);
        let first = tokio::time::timeout(bound, mailer.send(&job))
            .await
            .expect("a stalled relay holds a send for timeout_secs, not for ever");
        match first {
            SendResult::Transient { detail, .. } => assert!(
                detail.contains(&format!("127.0.0.1:{port}"))
                    && detail.contains("delivery.smtp.timeout_secs"),
                "{detail}"
            ),
            other => panic!("{other:?}"),
        }
        // the overrun send's connection goes back to its pool from a task of its own: let it
        // run (this runtime has one thread), so the next send would find it there
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
        // the next send does not get the stalled connection back from the pool
        let second = tokio::time::timeout(bound, mailer.send(&job))
            .await
            .unwrap();
        assert!(
            matches!(&second, SendResult::Delivered(d) if d == "SMTP 250"),
            "{second:?}"
        );
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
