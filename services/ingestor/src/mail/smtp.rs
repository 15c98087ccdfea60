//! The SMTP ingress: people forward alert e-mails to their tocsin address and each becomes a
//! notification in their silo.
//!
//! An inbound address is `<user id>.<secret>@<any domain>`: the secret's hash is in the user's
//! record (read from the `avatars` KV bucket), so unknown or forged recipients are refused at
//! RCPT and nothing is ever relayed. The server answers 250 to the data only after the
//! notification's PubAck — a crash before that makes the sending server retry, so nothing is
//! lost; the notification id comes from the Message-ID, so a retry is not a second
//! notification. Line length, message size (at MAIL via `SIZE=` and while reading), command
//! time and connection count are bounded.

use crate::mail::parse as mail;
use crate::mail::plan;
use crate::mail::wire::{Line, Replies, read_data, read_line};
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::Bus;
use tocsin_model::{AvatarMessage, InboundMail, SourceKind, UserId, hash_token, now_ms};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// Limits and identity of the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub hostname: String,
    pub max_message_bytes: usize,
    pub max_connections: usize,
    /// Sessions per client (an IPv4 address or an IPv6 /64).
    pub max_connections_per_client: usize,
    /// The longest a session may last.
    pub max_session: Duration,
    /// Message bytes all sessions may hold while receiving (at least `max_message_bytes`).
    pub max_buffered_bytes: usize,
    pub command_timeout: Duration,
    pub max_recipients: usize,
    /// Messages one inbound address accepts per minute (a burst of as many); 0: no limit.
    pub per_address_per_minute: u32,
    /// Offer STARTTLS with this server configuration.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Check SPF and DKIM of every message (`ingestor.smtp_verify_senders`).
    pub sender_check: Option<Arc<crate::mail::auth::SenderCheck>>,
}

/// A TLS server configuration from a PEM certificate chain and private key.
pub fn load_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<Arc<tokio_rustls::rustls::ServerConfig>, String> {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("ingestor.smtp_tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ingestor.smtp_tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ingestor.smtp_tls_cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("ingestor.smtp_tls_key {}: {e}", key.display()))?;
    let config = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("ingestor.smtp_tls_cert/key: {e}"))?;
    Ok(Arc::new(config))
}

/// When a refusal was last recorded per inbound address.
#[derive(Default)]
struct Reported(std::sync::Mutex<std::collections::HashMap<UserId, std::time::Instant>>);

impl Reported {
    /// Whether a refusal for `user` should be recorded now (one a minute per address).
    fn due(&self, user: &UserId) -> bool {
        let now = std::time::Instant::now();
        let mut map = self.0.lock().expect("report lock");
        if map.len() > 100_000 {
            map.retain(|_, at| now.duration_since(*at) < Duration::from_secs(60));
        }
        match map.get(user) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                map.insert(user.clone(), now);
                true
            }
        }
    }
}

struct Ctx {
    /// Ends sessions waiting for their next command.
    shutdown: CancellationToken,
    bus: Bus,
    avatars: kv::Store,
    cfg: SmtpSettings,
    connections: Semaphore,
    per_client: tocsin_runtime::clients::PerClient,
    /// Message buffers, in KiB: each DATA reserves `max_message_bytes` of it.
    buffers: Semaphore,
    /// Messages per inbound address and minute.
    limits: tocsin_runtime::rate::KeyedRateLimit<UserId>,
    reported: Reported,
}

/// Serve SMTP on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    bus: Bus,
    avatars: kv::Store,
    cfg: SmtpSettings,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let ctx = Arc::new(Ctx {
        shutdown: shutdown.clone(),
        connections: Semaphore::new(cfg.max_connections),
        per_client: tocsin_runtime::clients::PerClient::new(cfg.max_connections_per_client),
        buffers: Semaphore::new(cfg.max_buffered_bytes.div_ceil(1024)),
        limits: tocsin_runtime::rate::KeyedRateLimit::new(cfg.per_address_per_minute),
        reported: Reported::default(),
        bus,
        avatars,
        cfg,
    });
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "smtp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // replies are small writes: without this, Nagle and delayed ACKs cost ~40 ms a command
        let _ = stream.set_nodelay(true);
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let Some(_slot) = ctx.per_client.open(peer.ip()) else {
                let mut s = stream;
                let _ = s
                    .write_all(
                        b"421 4.7.0 too many connections from your network, try again later\r\n",
                    )
                    .await;
                return;
            };
            let Ok(_permit) = ctx.connections.try_acquire() else {
                let mut s = stream;
                let _ = s
                    .write_all(b"421 4.3.2 too many connections, try again later\r\n")
                    .await;
                return;
            };
            // the session says goodbye itself at its deadline; this is the hard stop should
            // a write or a DATA transfer still hold it
            let deadline = tokio::time::Instant::now() + ctx.cfg.max_session;
            let hard = ctx.cfg.max_session + ctx.cfg.command_timeout;
            match tokio::time::timeout(
                hard,
                session(&ctx, Box::new(stream), false, peer.ip(), deadline),
            )
            .await
            {
                Ok(Err(e)) => debug!(%peer, error = %e, "smtp session ended"),
                Ok(Ok(())) => {}
                Err(_) => debug!(%peer, "smtp session cut at its lifetime"),
            }
        });
    }
}

/// A connection, plain or TLS: boxed, so that the session after STARTTLS is the same code.
trait Io: AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// One SMTP session on `stream`; after STARTTLS it starts again on the TLS stream (RFC 3207:
/// the state is reset and the client greets again).
fn session<'a>(
    ctx: &'a Ctx,
    stream: Box<dyn Io + 'a>,
    secured: bool,
    peer: std::net::IpAddr,
    deadline: tokio::time::Instant,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>> + Send + 'a>> {
    Box::pin(async move {
        let host = ctx.cfg.hostname.clone();
        let timeout = ctx.cfg.command_timeout;
        let offer_tls = ctx.cfg.tls.is_some() && !secured;
        let (r, w) = tokio::io::split(stream);
        let mut r = BufReader::new(r);
        let mut w = Replies::new(w);
        if !secured {
            w.write_all(format!("220 {host} tocsin ESMTP ready\r\n").as_bytes())
                .await?;
        }
        let mut from: Option<String> = None;
        // each recipient, and whether they take only authenticated mail
        let mut rcpts: Vec<(UserId, bool)> = Vec::new();
        let mut helo = String::new();
        loop {
            // between commands a shutdown ends the session; a transaction under way finishes
            let next = tokio::select! {
                _ = ctx.shutdown.cancelled() => {
                    w.write_all(b"421 4.3.2 shutting down, try again later\r\n").await?;
                    return Ok(());
                }
                _ = tokio::time::sleep_until(deadline) => {
                    w.write_all(b"421 4.4.2 session lasted too long, closing\r\n").await?;
                    return Ok(());
                }
                l = read_line(&mut r, 1000, timeout) => l,
            };
            let line = match next {
                Ok(Line::Text(l)) => String::from_utf8_lossy(&l).into_owned(),
                Ok(Line::TooLong) => {
                    w.write_all(b"500 5.5.2 line too long\r\n").await?;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    w.write_all(b"421 4.4.2 timeout, closing\r\n").await?;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_owned()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            let reply: String = match verb.as_str() {
                "EHLO" | "HELO" if arg.is_empty() => "501 5.5.4 syntax: EHLO domain\r\n".into(),
                "EHLO" => {
                    helo = arg.chars().take(255).collect();
                    format!(
                        "250-{host} hello\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-PIPELINING\r\n{}250 ENHANCEDSTATUSCODES\r\n",
                        ctx.cfg.max_message_bytes,
                        if offer_tls { "250-STARTTLS\r\n" } else { "" }
                    )
                }
                "HELO" => {
                    helo = arg.chars().take(255).collect();
                    format!("250 {host} hello\r\n")
                }
                "MAIL" => match parse_path(&arg, "FROM:") {
                    None => "501 5.5.4 syntax: MAIL FROM:<address>\r\n".into(),
                    Some((path, params)) => {
                        let size = params.split_whitespace().find_map(|p| {
                            p.to_ascii_uppercase()
                                .strip_prefix("SIZE=")
                                .and_then(|n| n.parse::<usize>().ok())
                        });
                        if size.is_some_and(|s| s > ctx.cfg.max_message_bytes) {
                            format!(
                                "552 5.3.4 message size exceeds the limit of {} bytes\r\n",
                                ctx.cfg.max_message_bytes
                            )
                        } else {
                            from = Some(path);
                            rcpts.clear();
                            "250 2.1.0 OK\r\n".into()
                        }
                    }
                },
                "RCPT" => match (&from, parse_path(&arg, "TO:")) {
                    (None, _) => "503 5.5.1 MAIL first\r\n".into(),
                    (_, None) => "501 5.5.4 syntax: RCPT TO:<address>\r\n".into(),
                    (_, Some(_)) if rcpts.len() >= ctx.cfg.max_recipients => {
                        "452 4.5.3 too many recipients\r\n".into()
                    }
                    (Some(sender), Some((path, _))) => match recipient(ctx, &path, sender).await {
                        Ok(Recipient::SenderRefused(user)) => {
                            metrics::counter!(crate::telemetry::MAIL_REFUSED, "reason" => "sender")
                                .increment(1);
                            refused(
                                ctx,
                                &user,
                                sender,
                                "the sender is not on the address's allowed senders (550)",
                            )
                            .await;
                            "550 5.7.1 this sender may not mail this address\r\n".into()
                        }
                        Ok(Recipient::User(user, _)) if ctx.limits.take(&user).is_err() => {
                            metrics::counter!(crate::telemetry::MAIL_REFUSED, "reason" => "rate")
                                .increment(1);
                            warn!(%user, "inbound address over its rate; asking the sender to retry later");
                            refused(ctx, &user, sender, &format!("over the address's limit of {} messages a minute; the sender was asked to retry later (450)", ctx.cfg.per_address_per_minute)).await;
                            "450 4.7.1 too many messages for this address, try again later\r\n"
                                .into()
                        }
                        Ok(Recipient::User(user, strict)) => {
                            if !rcpts.iter().any(|(u, _)| *u == user) {
                                rcpts.push((user, strict));
                            }
                            "250 2.1.5 OK\r\n".into()
                        }
                        Ok(Recipient::Unknown) => "550 5.1.1 no such mailbox here\r\n".into(),
                        Err(e) => {
                            warn!(error = %e, "cannot look up a recipient");
                            "451 4.3.0 temporary failure, try again later\r\n".into()
                        }
                    },
                },
                "DATA" if rcpts.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
                "DATA" => {
                    // the buffer this message may need, reserved before any of it is read
                    let kib = ctx.cfg.max_message_bytes.div_ceil(1024) as u32;
                    let Ok(Ok(_buffer)) =
                        tokio::time::timeout(timeout, ctx.buffers.acquire_many(kib)).await
                    else {
                        w.write_all(
                            b"421 4.3.2 too busy receiving other messages, try again later\r\n",
                        )
                        .await?;
                        return Ok(());
                    };
                    w.write_all(b"354 end data with <CR><LF>.<CR><LF>\r\n")
                        .await?;
                    let data = match read_data(&mut r, ctx.cfg.max_message_bytes, timeout).await? {
                        Some(d) => d,
                        None => {
                            let reason = format!(
                                "larger than the limit of {} bytes (552)",
                                ctx.cfg.max_message_bytes
                            );
                            for (u, _) in &rcpts {
                                refused(ctx, u, from.as_deref().unwrap_or(""), &reason).await;
                            }
                            from = None;
                            rcpts.clear();
                            let msg = format!(
                                "552 5.3.4 message size exceeds the limit of {} bytes\r\n",
                                ctx.cfg.max_message_bytes
                            );
                            w.write_all(msg.as_bytes()).await?;
                            continue;
                        }
                    };
                    let envelope = Envelope {
                        peer,
                        helo: &helo,
                        sender: from.as_deref().unwrap_or(""),
                    };
                    let reply = deliver(ctx, &rcpts, &envelope, data.into()).await;
                    from = None;
                    rcpts.clear();
                    reply
                }
                "RSET" => {
                    from = None;
                    rcpts.clear();
                    "250 2.0.0 OK\r\n".into()
                }
                "NOOP" => "250 2.0.0 OK\r\n".into(),
                "VRFY" => "252 2.5.2 cannot verify, but will accept\r\n".into(),
                "QUIT" => {
                    w.write_all(b"221 2.0.0 bye\r\n").await?;
                    return Ok(());
                }
                "STARTTLS" if offer_tls => {
                    if !r.buffer().is_empty() {
                        // commands pipelined after STARTTLS would cross the TLS boundary
                        w.write_all(
                            b"501 5.5.4 no commands may follow STARTTLS in the same packet\r\n",
                        )
                        .await?;
                        return Ok(());
                    }
                    w.write_all(b"220 2.0.0 ready to start TLS\r\n").await?;
                    let stream = r.into_inner().unsplit(w.into_inner().await?);
                    let acceptor =
                        tokio_rustls::TlsAcceptor::from(ctx.cfg.tls.clone().expect("offered"));
                    let tls = tokio::time::timeout(timeout, acceptor.accept(stream))
                        .await
                        .map_err(|_| {
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "TLS handshake timeout",
                            )
                        })??;
                    return session(ctx, Box::new(tls), true, peer, deadline).await;
                }
                "STARTTLS" if secured => "503 5.5.1 TLS already active\r\n".into(),
                "STARTTLS" => {
                    "502 5.5.1 STARTTLS is not offered here (no certificate configured)\r\n".into()
                }
                _ => "500 5.5.2 command not recognized\r\n".into(),
            };
            // more commands already read: the client pipelined them (RFC 2920), so their
            // replies go out together once the batch is answered
            w.hold(reply.as_bytes(), !r.buffer().is_empty()).await?;
        }
    })
}

/// `FROM:<a@b> SIZE=10` → ("a@b", "SIZE=10").
fn parse_path(arg: &str, keyword: &str) -> Option<(String, String)> {
    let upper = arg.to_ascii_uppercase();
    let rest = arg[upper.find(keyword)? + keyword.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    let end = rest.find('>')?;
    Some((
        rest[..end].trim().to_owned(),
        rest[end + 1..].trim().to_owned(),
    ))
}

enum Recipient {
    /// A user, and whether they take only authenticated (SPF or DKIM) mail.
    User(UserId, bool),
    Unknown,
    /// The address exists, but its owner does not take mail from this sender.
    SenderRefused(UserId),
}

/// The user an inbound address belongs to: `<user>.<secret>@…`, secret checked against the
/// user's record, and the envelope sender against the user's allowed senders.
async fn recipient(ctx: &Ctx, address: &str, sender: &str) -> Result<Recipient, String> {
    let Some((local, _domain)) = address.rsplit_once('@') else {
        return Ok(Recipient::Unknown);
    };
    let Some((user, secret)) = local
        .to_ascii_lowercase()
        .split_once('.')
        .map(|(u, s)| (u.to_owned(), s.to_owned()))
    else {
        return Ok(Recipient::Unknown);
    };
    let Ok(user) = UserId::parse(&user) else {
        return Ok(Recipient::Unknown);
    };
    let Some(bytes) = ctx
        .avatars
        .get(user.as_str())
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(Recipient::Unknown);
    };
    let Ok(record) = serde_json::from_slice::<InboundMail>(&bytes) else {
        return Ok(Recipient::Unknown);
    };
    if record.inbound_token_hash.is_empty() || record.inbound_token_hash != hash_token(&secret) {
        return Ok(Recipient::Unknown);
    }
    if !tocsin_model::sender_allowed(&record.allowed_senders, sender) {
        return Ok(Recipient::SenderRefused(user));
    }
    Ok(Recipient::User(user, record.require_authenticated_mail))
}

/// Record in `user`'s history that something from `sender` was refused — at most once a
/// minute per address, so a flood of refusals cannot flood the history.
async fn refused(ctx: &Ctx, user: &UserId, sender: &str, reason: &str) {
    if !ctx.reported.due(user) {
        return;
    }
    let at_ms = now_ms();
    let msg = AvatarMessage::Refused {
        source: SourceKind::Email,
        from: sender.to_owned(),
        reason: reason.to_owned(),
        at_ms,
    };
    let subject = ctx
        .bus
        .subjects()
        .silo(ctx.bus.silo_of(user), user.as_str(), msg.kind());
    let id = tocsin_bus::msg_id::refused(user, at_ms);
    if let Err(e) = ctx.bus.publish_json(subject, &id, &msg).await {
        debug!(%user, error = %e, "cannot record a refusal in the user's history");
    }
}

/// Turn the message into a notification for every recipient; the reply to give.
/// Where a message came from.
struct Envelope<'a> {
    peer: std::net::IpAddr,
    helo: &'a str,
    sender: &'a str,
}

async fn deliver(
    ctx: &Ctx,
    rcpts: &[(UserId, bool)],
    env: &Envelope<'_>,
    data: std::sync::Arc<[u8]>,
) -> String {
    let sender = env.sender;
    let Some((parsed, key)) = mail::parse_keyed(data.clone()).await else {
        for (u, _) in rcpts {
            refused(ctx, u, sender, "not readable as an e-mail (554)").await;
        }
        return "554 5.6.0 the message could not be parsed as an e-mail\r\n".into();
    };
    let verdict = match &ctx.cfg.sender_check {
        Some(c) => Some(c.check(env.peer, env.helo, sender, &data).await),
        None => None,
    };
    let mut accepted: Vec<&UserId> = Vec::new();
    for (u, strict) in rcpts {
        match (&verdict, strict) {
            (_, false) => accepted.push(u),
            (Some(v), true) if v.authenticated => accepted.push(u),
            (Some(v), true) => {
                let reason = format!(
                    "not authenticated ({}) and the address takes only authenticated mail (550 5.7.26)",
                    v.describe()
                );
                refused(ctx, u, sender, &reason).await;
            }
            (None, true) => {
                let reason = "the address takes only authenticated mail, and this server does not check SPF/DKIM (ingestor.smtp_verify_senders is off) (550 5.7.26)";
                refused(ctx, u, sender, reason).await;
            }
        }
    }
    if accepted.is_empty() {
        metrics::counter!(crate::telemetry::MAIL_REFUSED, "reason" => "unauthenticated")
            .increment(1);
        return "550 5.7.26 this address takes only mail that passes SPF or DKIM\r\n".into();
    }
    let mut tags = vec!["email".to_owned()];
    if let Some(v) = &verdict {
        tags.extend(v.tags());
    }
    if parsed.automatic.is_none() {
        metrics::counter!(crate::telemetry::MAIL).increment(1);
    }
    let mut ids = Vec::new();
    for user in accepted.iter().copied() {
        let to = plan::Mailbox {
            user,
            source_id: None,
            filter: None,
            tags: tags.clone(),
        };
        let plan::MailPlan {
            notification,
            events,
        } = plan::plan(&parsed, &key, plan::Via::Smtp, to, tocsin_model::now_ms());
        let Some(n) = notification else {
            // (no filter: only tocsin's own mail and auto-replies are not taken) accepted, so
            // that no bounce answers it, and said in the user's history
            let reason = parsed.automatic.map(|a| a.reason()).unwrap_or_default();
            refused(ctx, user, sender, reason).await;
            if let Err(e) = ctx.bus.publish_events(events, "ingestor").await {
                debug!(error = %e, "cannot record a message not taken");
            }
            continue;
        };
        let id = n.id.to_string();
        if let Err(e) = ctx.bus.notify(n, events, "ingestor").await {
            // no 250: the sending server keeps the message and retries
            warn!(error = %e, "cannot queue an inbound e-mail; asking the sender to retry");
            return "451 4.3.0 temporary failure, try again later\r\n".into();
        }
        ids.push(id);
    }
    if let Some(a) = parsed.automatic {
        metrics::counter!(crate::telemetry::MAIL_REFUSED, "reason" => "automatic").increment(1);
        info!(from = %parsed.from, reason = a.reason(), "inbound e-mail accepted and dropped");
        return "250 2.0.0 OK, dropped: automatic mail is not taken\r\n".into();
    }
    info!(recipients = accepted.len(), from = %parsed.from, "inbound e-mail queued");
    format!("250 2.0.0 OK queued as {}\r\n", ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse() {
        assert_eq!(
            parse_path("FROM:<a@b.org> SIZE=100", "FROM:"),
            Some(("a@b.org".into(), "SIZE=100".into()))
        );
        assert_eq!(
            parse_path("to: <u1.s@x.org>", "TO:"),
            Some(("u1.s@x.org".into(), String::new()))
        );
        assert_eq!(
            parse_path("FROM:<>", "FROM:"),
            Some((String::new(), String::new()))
        );
        assert_eq!(parse_path("FROM:a@b.org", "FROM:"), None);
    }

    #[test]
    fn refusals_are_reported_once_a_minute_per_address() {
        let r = Reported::default();
        let u = UserId::parse("u1").unwrap();
        assert!(r.due(&u));
        assert!(!r.due(&u));
        assert!(r.due(&UserId::parse("u2").unwrap()));
    }
}
