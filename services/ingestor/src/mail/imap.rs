//! IMAP watching: instead of forwarding, a user points tocsin at a mailbox. Each watched
//! mailbox has a task that logs in (implicit TLS, or plain text for a server on the same
//! machine), selects the mailbox and takes every unseen message: parsed like forwarded mail,
//! filtered by the source's filter, published to the user's silo, and only after the PubAck
//! marked `\Seen` — a crash in between takes the message again, and its Message-ID makes it
//! the same notification. Then it waits with IDLE (RFC 2177) where the server offers it,
//! else polls every `imap_poll_secs`. Errors back off (2 s doubling to 5 min) and are
//! reported as the source's status.
//!
//! Subscriptions (with the password) arrive on `<p>.ingest.imap` from the user's avatar and
//! are kept in the ingestor's `imap` bucket (key `<user>.<source>`), so a restart resumes
//! every watch. The password never enters the user's record.

use crate::mail::parse as mail;
use crate::mail::plan;
use async_imap::Session;
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tocsin_bus::{Bus, BusError};
use tocsin_model::{
    CompiledFilter, ImapSubscription, ImapTls, SourceSpec, SourceStatus, SubscriptionOp, UserId,
    now_ms,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

/// The watches this ingestor runs.
pub struct Watches {
    bus: Bus,
    kv: kv::Store,
    poll: Duration,
    /// Larger messages are skipped (marked seen, reported in the log): the SMTP ingress's limit.
    max_bytes: usize,
    running: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
    /// The ingestor's tasks: it waits for every watch before draining the bus.
    tasks: TaskTracker,
}

fn key(user: &UserId, source: &str) -> String {
    format!("{user}.{source}")
}

impl Drop for Watches {
    /// The watches end with the ingestor that runs them (also when it is aborted).
    fn drop(&mut self) {
        for t in self.running.lock().expect("lock").values() {
            t.cancel();
        }
    }
}

impl Watches {
    /// Start every watch stored in the bucket.
    pub async fn start(
        bus: Bus,
        poll: Duration,
        max_bytes: usize,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Watches>, BusError> {
        let kv = bus.kv("imap").await?;
        let w = Arc::new(Watches {
            bus,
            kv: kv.clone(),
            poll,
            max_bytes,
            running: Mutex::default(),
            shutdown,
            tasks,
        });
        let mut keys = kv.keys().await.map_err(|e| BusError::Kv {
            bucket: "imap".into(),
            key: "*".into(),
            message: e.to_string(),
        })?;
        while let Some(Ok(k)) = keys.next().await {
            if let Ok(Some(v)) = kv.get(&k).await
                && let Ok(sub) = serde_json::from_slice::<ImapSubscription>(&v)
            {
                w.run(sub);
            }
        }
        Ok(w)
    }

    /// Apply a subscription change from an avatar: store it, then (re)start or stop the watch.
    pub async fn apply(&self, mut sub: ImapSubscription) -> Result<(), BusError> {
        let k = key(&sub.user, &sub.source_id);
        let kv_err = |e: String| BusError::Kv {
            bucket: "imap".into(),
            key: k.clone(),
            message: e,
        };
        match sub.op {
            SubscriptionOp::Remove => {
                self.kv
                    .delete(&k)
                    .await
                    .map_err(|e| kv_err(e.to_string()))?;
                if let Some(t) = self.running.lock().expect("lock").remove(&k) {
                    t.cancel();
                }
            }
            SubscriptionOp::Upsert => {
                // an update without a new password keeps the one we have
                if let Some(SourceSpec::Imap { password, .. }) = &mut sub.spec
                    && password.is_none()
                    && let Ok(Some(old)) = self.kv.get(&k).await
                    && let Ok(ImapSubscription {
                        spec: Some(SourceSpec::Imap { password: old, .. }),
                        ..
                    }) = serde_json::from_slice(&old)
                {
                    *password = old;
                }
                let bytes = tocsin_bus::encode(&sub)?;
                self.kv
                    .put(&k, bytes)
                    .await
                    .map_err(|e| kv_err(e.to_string()))?;
                self.run(sub);
            }
        }
        Ok(())
    }

    /// Start (or restart) the watch for `sub`.
    fn run(&self, sub: ImapSubscription) {
        let k = key(&sub.user, &sub.source_id);
        let token = self.shutdown.child_token();
        if let Some(old) = self
            .running
            .lock()
            .expect("lock")
            .insert(k.clone(), token.clone())
        {
            old.cancel();
        }
        let limits = Limits {
            poll: self.poll,
            max_bytes: self.max_bytes,
        };
        let span = info_span!("imap", user = %sub.user, source = %sub.source_id);
        self.tasks
            .spawn(watch(self.bus.clone(), sub, limits, token).instrument(span));
    }
}

#[derive(Clone, Copy)]
struct Limits {
    poll: Duration,
    max_bytes: usize,
}

/// Keep watching until cancelled, reconnecting with backoff.
async fn watch(bus: Bus, sub: ImapSubscription, limits: Limits, stop: CancellationToken) {
    let Some(SourceSpec::Imap {
        host,
        port,
        tls,
        username,
        password: Some(password),
        mailbox,
    }) = sub.spec.clone()
    else {
        warn!("an IMAP subscription without its settings or password; not watched");
        return;
    };
    let filter = match sub.filter.compile() {
        Ok(f) => f,
        Err(e) => {
            warn!(errors = ?e, "the source's filter does not compile; not watched");
            return;
        }
    };
    let mut backoff = Duration::from_secs(2);
    loop {
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session(&bus, &sub, &filter, &host, port, tls, &username, &password, &mailbox, limits, &stop) => r,
        };
        let error = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        warn!(%host, error = %error, retry_in_s = backoff.as_secs(), "IMAP watch failed");
        report(
            &bus,
            &sub,
            SourceStatus {
                ok: false,
                error: Some(format!("IMAP {host}:{port} ({mailbox}): {error}")),
                checked_at_ms: now_ms(),
                consecutive_failures: 0,
            },
        )
        .await;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

async fn report(bus: &Bus, sub: &ImapSubscription, status: SourceStatus) {
    crate::status::report_source_status(bus, &sub.user, &sub.source_id, status).await;
}

/// One connection: log in, then take unseen messages and wait, until an error or `stop`.
#[allow(clippy::too_many_arguments)]
async fn session(
    bus: &Bus,
    sub: &ImapSubscription,
    filter: &CompiledFilter,
    host: &str,
    port: u16,
    tls: ImapTls,
    username: &str,
    password: &str,
    mailbox: &str,
    limits: Limits,
    stop: &CancellationToken,
) -> Result<(), String> {
    let tcp = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| "connecting timed out".to_owned())?
    .map_err(|e| format!("cannot connect: {e}"))?;
    match tls {
        ImapTls::None => {
            login_and_watch(
                bus, sub, filter, tcp, username, password, mailbox, limits, stop,
            )
            .await
        }
        ImapTls::Tls => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let config = tokio_rustls::rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host:?} is not a server name: {e}"))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            login_and_watch(
                bus, sub, filter, stream, username, password, mailbox, limits, stop,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn login_and_watch<T>(
    bus: &Bus,
    sub: &ImapSubscription,
    filter: &CompiledFilter,
    stream: T,
    username: &str,
    password: &str,
    mailbox: &str,
    limits: Limits,
    stop: &CancellationToken,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let mut client = async_imap::Client::new(stream);
    client
        .read_response()
        .await
        .map_err(|e| format!("no greeting: {e}"))?;
    let mut session = client
        .login(username, password)
        .await
        .map_err(|(e, _)| format!("login as {username} refused: {e}"))?;
    let idle = session
        .capabilities()
        .await
        .map(|c| c.has_str("IDLE"))
        .unwrap_or(false);
    session
        .select(mailbox)
        .await
        .map_err(|e| format!("cannot select {mailbox:?}: {e}"))?;
    info!(idle, "watching the mailbox");
    report(
        bus,
        sub,
        SourceStatus {
            ok: true,
            error: None,
            checked_at_ms: now_ms(),
            consecutive_failures: 0,
        },
    )
    .await;
    loop {
        take_unseen(bus, sub, filter, limits.max_bytes, &mut session).await?;
        if idle {
            let mut handle = session.idle();
            handle.init().await.map_err(|e| format!("IDLE: {e}"))?;
            let (wait, _interrupt) = handle.wait_with_timeout(Duration::from_secs(25 * 60));
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = wait => { r.map_err(|e| format!("IDLE: {e}"))?; }
            }
            session = handle.done().await.map_err(|e| format!("IDLE: {e}"))?;
        } else {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(limits.poll) => {}
            }
        }
    }
}

/// Publish every unseen message, then mark it seen.
async fn take_unseen<T>(
    bus: &Bus,
    sub: &ImapSubscription,
    filter: &CompiledFilter,
    max_bytes: usize,
    session: &mut Session<T>,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let mut uids: Vec<u32> = session
        .uid_search("UNSEEN")
        .await
        .map_err(|e| format!("SEARCH: {e}"))?
        .into_iter()
        .collect();
    uids.sort_unstable();
    for uid in uids {
        // the size first: a huge message is never read into memory
        let size = {
            let mut fetches = session
                .uid_fetch(uid.to_string(), "RFC822.SIZE")
                .await
                .map_err(|e| format!("FETCH: {e}"))?;
            let mut size = 0;
            while let Some(f) = fetches.next().await {
                size = f.map_err(|e| format!("FETCH: {e}"))?.size.unwrap_or(0);
            }
            size as usize
        };
        let raw = if size > max_bytes {
            warn!(
                uid,
                size,
                max_bytes,
                "a message over the size limit (ingestor.smtp_max_message_bytes) is skipped and marked seen"
            );
            None
        } else {
            let mut fetches = session
                .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                .await
                .map_err(|e| format!("FETCH: {e}"))?;
            let mut raw = None;
            while let Some(f) = fetches.next().await {
                let f = f.map_err(|e| format!("FETCH: {e}"))?;
                if let Some(b) = f.body() {
                    raw = Some(b.to_vec());
                }
            }
            raw
        };
        if let Some(raw) = raw {
            publish(bus, sub, filter, raw).await?;
        }
        let mut stored = session
            .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
            .await
            .map_err(|e| format!("STORE: {e}"))?;
        while let Some(r) = stored.next().await {
            r.map_err(|e| format!("STORE: {e}"))?;
        }
    }
    Ok(())
}

async fn publish(
    bus: &Bus,
    sub: &ImapSubscription,
    filter: &CompiledFilter,
    raw: Vec<u8>,
) -> Result<(), String> {
    let Some((parsed, key)) = mail::parse_keyed(raw.into()).await else {
        warn!("a message in the mailbox is not readable as an e-mail; skipped");
        return Ok(());
    };
    let mut tags = vec!["email".to_owned(), "imap".to_owned()];
    if !sub.label.is_empty() {
        tags.push(sub.label.clone());
    }
    let to = plan::Mailbox {
        user: &sub.user,
        source_id: Some(&sub.source_id),
        filter: Some(filter),
        tags,
    };
    let plan::MailPlan {
        notification,
        events,
    } = plan::plan(&parsed, &key, plan::Via::Imap, to, tocsin_model::now_ms());
    let Some(n) = notification else {
        debug!(subject = %parsed.subject, "filtered out");
        return bus
            .publish_events(events, "ingestor")
            .await
            .map_err(|e| format!("cannot record the message: {e}"));
    };
    bus.notify(n, events, "ingestor")
        .await
        .map_err(|e| format!("cannot queue the notification: {e}"))
}
