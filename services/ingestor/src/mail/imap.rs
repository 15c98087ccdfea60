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

use crate::mail::capped::{Budget, Capped};
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
    limits: Limits,
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
        limits: Limits,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Result<Arc<Watches>, BusError> {
        let kv = bus.kv("imap").await?;
        let w = Arc::new(Watches {
            bus,
            kv: kv.clone(),
            limits,
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
        let limits = self.limits;
        let span = info_span!("imap", user = %sub.user, source = %sub.source_id);
        self.tasks
            .spawn(watch(self.bus.clone(), sub, limits, token).instrument(span));
    }
}

/// How every watch runs: the ingestor's settings for them.
#[derive(Clone, Copy)]
pub struct Limits {
    /// How often a mailbox without IDLE is polled.
    pub poll: Duration,
    /// Larger messages are skipped (marked seen, reported in the log): the SMTP ingress's limit.
    pub max_bytes: usize,
    /// Where a user's IMAP host may be (the ingestor's address guard).
    pub policy: tocsin_netguard::AddressPolicy,
    /// Failed connections in a row after which the source is broken (its owner is told).
    pub broken_after: u32,
}

/// How long any one exchange with the server may take (IDLE's wait excepted).
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// What the server may send in answer to a command other than a message fetch (a SEARCH of a
/// huge mailbox included).
const CONTROL_BYTES: usize = 16 * 1024 * 1024;

/// `fut` within [`IO_TIMEOUT`], its error described as `what`.
async fn within<T, E: std::fmt::Display>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    tokio::time::timeout(IO_TIMEOUT, fut)
        .await
        .map_err(|_| format!("{what}: no answer within {}s", IO_TIMEOUT.as_secs()))?
        .map_err(|e| format!("{what}: {e}"))
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
    // failed attempts since the mailbox was last watched
    let mut failures = 0u32;
    loop {
        let mut watched = false;
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = session(&bus, &sub, &filter, &host, port, tls, &username, &password, &mailbox, limits, &mut watched, &stop) => r,
        };
        let error = match result {
            Ok(()) => return,
            Err(e) => e,
        };
        if watched {
            failures = 0;
            backoff = Duration::from_secs(2);
        }
        failures = failures.saturating_add(1);
        warn!(%host, error = %error, failures, retry_in_s = backoff.as_secs(), "IMAP watch failed");
        report(
            &bus,
            &sub,
            SourceStatus {
                ok: false,
                error: Some(format!("IMAP {host}:{port} ({mailbox}): {error}")),
                checked_at_ms: now_ms(),
                consecutive_failures: failures,
                broken: failures >= limits.broken_after,
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
    watched: &mut bool,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (tcp, ip) =
        tocsin_netguard::connect(host, port, limits.policy, Duration::from_secs(20)).await?;
    let budget = Budget::default();
    budget.set(CONTROL_BYTES);
    match tls {
        ImapTls::None => {
            // a password in plain text goes to this machine or its own network, nowhere else
            if !tocsin_netguard::is_local(ip) {
                return Err(format!(
                    "{host} ({ip}) is not on this machine or its network, and tls is none: the password would cross the internet in plain text; use tls"
                ));
            }
            let tcp = Capped::new(tcp, budget.clone());
            login_and_watch(
                bus, sub, filter, tcp, &budget, username, password, mailbox, limits, watched, stop,
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
            let tcp = Capped::new(tcp, budget.clone());
            let stream = within(
                "TLS",
                tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
            )
            .await?;
            login_and_watch(
                bus, sub, filter, stream, &budget, username, password, mailbox, limits, watched,
                stop,
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
    budget: &Budget,
    username: &str,
    password: &str,
    mailbox: &str,
    limits: Limits,
    watched: &mut bool,
    stop: &CancellationToken,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    let mut client = async_imap::Client::new(stream);
    let greeting = within("no greeting", client.read_response()).await?;
    if greeting.is_none() {
        return Err("no greeting: the connection closed".into());
    }
    let mut session = within(&format!("login as {username} refused"), async {
        client.login(username, password).await.map_err(|(e, _)| e)
    })
    .await?;
    let idle = within("CAPABILITY", session.capabilities())
        .await
        .map(|c| c.has_str("IDLE"))
        .unwrap_or(false);
    within(
        &format!("cannot select {mailbox:?}"),
        session.select(mailbox),
    )
    .await?;
    info!(idle, "watching the mailbox");
    *watched = true;
    report(
        bus,
        sub,
        SourceStatus {
            ok: true,
            checked_at_ms: now_ms(),
            ..Default::default()
        },
    )
    .await;
    loop {
        take_unseen(bus, sub, filter, limits.max_bytes, budget, &mut session).await?;
        budget.set(CONTROL_BYTES);
        if idle {
            let mut handle = session.idle();
            within("IDLE", handle.init()).await?;
            let (wait, _interrupt) = handle.wait_with_timeout(Duration::from_secs(25 * 60));
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = wait => { r.map_err(|e| format!("IDLE: {e}"))?; }
            }
            session = within("IDLE", handle.done()).await?;
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
    budget: &Budget,
    session: &mut Session<T>,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    budget.set(CONTROL_BYTES);
    let mut uids: Vec<u32> = within("SEARCH", session.uid_search("UNSEEN"))
        .await?
        .into_iter()
        .collect();
    uids.sort_unstable();
    for uid in uids {
        if let Some(raw) = fetch_message(session, uid, max_bytes, budget).await? {
            publish(bus, sub, filter, raw).await?;
        }
        budget.set(CONTROL_BYTES);
        within("STORE", async {
            let mut stored = session
                .uid_store(uid.to_string(), "+FLAGS (\\Seen)")
                .await?;
            while let Some(r) = stored.next().await {
                r?;
            }
            Ok::<_, async_imap::error::Error>(())
        })
        .await?;
    }
    Ok(())
}

/// Message `uid`, unless it is over `max_bytes`: by the size the server reports (then it is
/// not fetched), or by what the server actually sends (the stream's budget cuts it off).
pub(crate) async fn fetch_message<T>(
    session: &mut Session<T>,
    uid: u32,
    max_bytes: usize,
    budget: &Budget,
) -> Result<Option<Vec<u8>>, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug,
{
    budget.set(CONTROL_BYTES);
    let size = within("FETCH", async {
        let mut fetches = session.uid_fetch(uid.to_string(), "RFC822.SIZE").await?;
        let mut size = 0;
        while let Some(f) = fetches.next().await {
            size = f?.size.unwrap_or(0);
        }
        Ok::<_, async_imap::error::Error>(size as usize)
    })
    .await?;
    if size > max_bytes {
        warn!(
            uid,
            size,
            max_bytes,
            "a message over the size limit (ingestor.smtp_max_message_bytes) is skipped and marked seen"
        );
        return Ok(None);
    }
    // what the answer may take: the message, and room for the FETCH response around it
    budget.set(max_bytes + 64 * 1024);
    within("FETCH", async {
        let mut fetches = session.uid_fetch(uid.to_string(), "BODY.PEEK[]").await?;
        let mut raw = None;
        while let Some(f) = fetches.next().await {
            if let Some(b) = f?.body() {
                raw = Some(b.to_vec());
            }
        }
        Ok::<_, async_imap::error::Error>(raw)
    })
    .await
    .map_err(|e| format!("{e} (message {uid} said it was {size} bytes)"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A scripted IMAP server on one end of a pipe: it accepts any login and answers a
    /// message's size with `says`, then sends `sends` bytes as the message.
    async fn lying_server(end: tokio::io::DuplexStream, says: usize, sends: usize) {
        let (r, mut w) = tokio::io::split(end);
        let mut r = BufReader::new(r);
        let _ = w.write_all(b"* OK fake IMAP ready\r\n").await;
        let mut line = String::new();
        while r.read_line(&mut line).await.is_ok_and(|n| n > 0) {
            let tag = line.split_whitespace().next().unwrap_or("*").to_owned();
            let answer = if line.contains("RFC822.SIZE") {
                format!("* 1 FETCH (UID 7 RFC822.SIZE {says})\r\n{tag} OK done\r\n")
            } else if line.contains("BODY.PEEK[]") {
                let _ = w
                    .write_all(format!("* 1 FETCH (UID 7 BODY[] {{{sends}}}\r\n").as_bytes())
                    .await;
                let chunk = vec![b'x'; 64 * 1024];
                let mut left = sends;
                while left > 0 {
                    let n = left.min(chunk.len());
                    if w.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n;
                }
                format!(")\r\n{tag} OK done\r\n")
            } else {
                format!("{tag} OK done\r\n")
            };
            if w.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            line.clear();
        }
    }

    async fn fetch_from(says: usize, sends: usize) -> Result<Option<Vec<u8>>, String> {
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(lying_server(theirs, says, sends));
        let budget = Budget::default();
        budget.set(CONTROL_BYTES);
        let mut client = async_imap::Client::new(Capped::new(ours, budget.clone()));
        client.read_response().await.unwrap();
        let mut session = client.login("u", "p").await.map_err(|(e, _)| e).unwrap();
        fetch_message(&mut session, 7, 10_000, &budget).await
    }

    /// The report: the server's reported size was trusted, so a server that says 100 bytes
    /// and sends 5 MB had all of it read into memory.
    #[tokio::test]
    async fn what_the_server_sends_is_bounded_not_what_it_says() {
        let honest = fetch_from(100, 100).await.unwrap().unwrap();
        assert_eq!(honest.len(), 100);
        assert_eq!(
            fetch_from(20_000, 20_000).await.unwrap(),
            None,
            "skipped by size"
        );
        let e = fetch_from(100, 5_000_000).await.unwrap_err();
        assert!(
            e.contains("size limit") && e.contains("said it was 100 bytes"),
            "{e}"
        );
    }
}
