//! One poll (or WebSub push) of a feed: fetch, parse, plan, fan the new items out to the
//! subscribers' silos, then record the feed's new state and tell subscribers about its health.

use crate::feeds::Shared;
use crate::feeds::fetch::{FetchError, Fetched};
use crate::feeds::normalize::{MAX_ITEMS, ParsedFeed};
use crate::feeds::plan::plan_poll;
use crate::feeds::record::{FeedRecord, Subscriber};
use crate::feeds::store::{save, save_subscriber};
use crate::feeds::transition::{AfterSuccess, Failure, Refreshed, after_failure, after_success};
use crate::feeds::websub;
use crate::status::report_source_status;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::BusError;
use tocsin_model::{Event, Millis, Notification, SourceStatus, now_ms};
use tracing::{info, warn};

/// Poll one feed, fan out what is new, record the outcome.
///
/// The feed's state is copied without its subscribers for the fetch: most polls are answered
/// 304. Only a document is planned against them, with a copy of the record taken when it has
/// arrived (one poll of a feed runs at a time, so only the subscribers can have changed
/// meanwhile, and the plan and the record's update see the same ones). That copy shares the
/// subscribers (100,000 of them in the fan-out benchmark) rather than copying them; a
/// subscription changed while the poll holds them copies them then ([`Subscribers`](crate::feeds::record::Subscribers)).
pub(crate) async fn poll(shared: &Shared, key: &str) {
    let (snapshot, pending_existing) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        let Some(rec) = feeds.get_mut(key) else {
            return;
        };
        let pending = rec.subscribers.values().any(|s| s.pending_existing);
        (rec.without_subscribers(), pending)
    };
    let started = std::time::Instant::now();
    // a subscriber waiting for the items already listed needs the document, not a 304; so
    // does a paged API, whose first page says nothing about the others
    let wants_document = pending_existing
        || snapshot
            .extract
            .as_deref()
            .is_some_and(tocsin_model::Extract::paged);
    let (etag, last_modified) = if wants_document {
        (None, None)
    } else {
        (snapshot.etag.as_deref(), snapshot.last_modified.as_deref())
    };
    let accept = snapshot.extract.as_deref().map_or(
        crate::feeds::fetch::FEED_TYPES,
        tocsin_model::Extract::accept,
    );
    let result = match snapshot.request.render(snapshot.request.secret.as_deref()) {
        Ok(extra) => {
            shared
                .fetcher
                .fetch_accepting(&snapshot.url, etag, last_modified, accept, &extra)
                .await
        }
        Err(e) => Err(FetchError::Refused(e)),
    };
    let now = now_ms();
    let mut snapshot = Arc::new(snapshot);
    let outcome: Result<Option<Refreshed>, (String, Option<Duration>)> = match result {
        Ok(Fetched::NotModified) => Ok(None),
        Ok(Fetched::Body {
            bytes,
            etag,
            last_modified,
        }) => {
            let Some(full) = shared.feeds.lock().expect("feeds lock").get(key).cloned() else {
                // the last subscriber left while it was fetched
                return;
            };
            snapshot = Arc::new(full);
            refresh(shared, &snapshot, bytes, etag, last_modified, now)
                .await
                .map(Some)
                .map_err(|e| (e, None))
        }
        Err(e) => {
            let retry_after = e.retry_after();
            let msg = match &e {
                FetchError::Status {
                    status: 404 | 410, ..
                } => format!("{e}: the feed is gone; check the URL"),
                _ => e.to_string(),
            };
            Err((msg, retry_after))
        }
    };
    let label = match &outcome {
        Ok(None) => "not_modified",
        Ok(Some(_)) => "ok",
        Err(_) => "error",
    };
    metrics::counter!(crate::telemetry::POLLS, "outcome" => label).increment(1);
    metrics::histogram!(crate::telemetry::POLL_SECONDS).record(started.elapsed().as_secs_f64());
    settle_document(shared, key, &snapshot, outcome, now).await;
}

/// Parse a document and decide what it means for `snapshot`, on a blocking thread: a
/// document of several MiB takes long enough to parse that it must not hold an async worker.
pub(crate) async fn refresh(
    shared: &Shared,
    snapshot: &Arc<FeedRecord>,
    bytes: Vec<u8>,
    etag: Option<String>,
    last_modified: Option<String>,
    now: Millis,
) -> Result<Refreshed, String> {
    let mut parsed =
        parse_off_thread(snapshot.extract.clone(), bytes, snapshot.url.clone()).await?;
    more_pages(shared, snapshot, &mut parsed).await?;
    // shared with the blocking task, not copied: it holds every subscriber
    let snapshot = Arc::clone(snapshot);
    let seen_capacity = shared.cfg.seen_capacity;
    let planned = tokio::task::spawn_blocking(move || {
        // a watched page: its change against the last poll's text
        let page_text = match snapshot.extract.as_deref() {
            Some(tocsin_model::Extract::Change { .. }) => {
                crate::feeds::extract::changed(&mut parsed, snapshot.page_text.as_deref())
            }
            _ => None,
        };
        let plan = plan_poll(&snapshot, &parsed.title, &parsed.items, seen_capacity, now);
        (parsed, plan, page_text)
    })
    .await
    .map_err(|e| format!("the document could not be processed ({e})"))?;
    let (parsed, plan, page_text) = planned;
    Ok(Refreshed {
        plan,
        title: parsed.title,
        etag,
        last_modified,
        hub: parsed.hub,
        topic: parsed.self_url,
        page_text,
    })
}

/// `bytes`, fetched from `page`, read by its extractor on a blocking thread.
async fn parse_off_thread(
    extract: Option<Box<tocsin_model::Extract>>,
    bytes: Vec<u8>,
    page: String,
) -> Result<ParsedFeed, String> {
    tokio::task::spawn_blocking(move || {
        crate::feeds::extract::parse(&bytes, extract.as_deref(), &page)
    })
    .await
    .map_err(|e| format!("the document could not be processed ({e})"))?
}

/// A paged JSON API's further pages: each answer's `next` URL fetched in turn (a plain GET
/// through the guarded fetcher) and its items appended, up to `MAX_PAGES` pages and the
/// items one document may have. A page that fails fails the poll, naming it.
async fn more_pages(
    shared: &Shared,
    snapshot: &FeedRecord,
    parsed: &mut ParsedFeed,
) -> Result<(), String> {
    let accept = snapshot.extract.as_deref().map_or(
        crate::feeds::fetch::FEED_TYPES,
        tocsin_model::Extract::accept,
    );
    let mut pages = 1;
    while let Some(next) = parsed.next_page.take() {
        if pages >= tocsin_model::extract::MAX_PAGES || parsed.items.len() >= MAX_ITEMS {
            break;
        }
        pages += 1;
        let extra = snapshot
            .request
            .render(snapshot.request.secret.as_deref())
            .map_err(|e| format!("page {pages} ({next}): {e}"))?;
        let bytes = match shared
            .fetcher
            .fetch_accepting(&next, None, None, accept, &extra)
            .await
        {
            Ok(Fetched::Body { bytes, .. }) => bytes,
            Ok(Fetched::NotModified) => break,
            Err(e) => return Err(format!("page {pages} ({next}): {e}")),
        };
        let more = parse_off_thread(snapshot.extract.clone(), bytes, next.clone())
            .await
            .map_err(|e| format!("page {pages} ({next}): {e}"))?;
        parsed.items.extend(more.items);
        parsed.items.truncate(MAX_ITEMS);
        parsed.next_page = more.next_page;
    }
    Ok(())
}

pub(crate) fn random_secret() -> String {
    let mut rng = rand::rng();
    (0..24)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// A document a WebSub hub pushed: processed like a polled one, keeping the validators.
pub(crate) async fn handle_push(shared: &Shared, key: &str, body: Vec<u8>) {
    // one poll or push per feed at a time
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.to_owned())
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            warn!(
                key,
                "a WebSub push waited too long for a poll of the same feed; dropped (the next poll covers it)"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = shared.feeds.lock().expect("feeds lock").get(key).cloned();
    if let Some(snapshot) = snapshot.map(Arc::new) {
        let now = now_ms();
        let outcome = refresh(
            shared,
            &snapshot,
            body,
            snapshot.etag.clone(),
            snapshot.last_modified.clone(),
            now,
        )
        .await
        .map(Some)
        .map_err(|e| (format!("pushed by the hub: {e}"), None));
        settle_document(shared, key, &snapshot, outcome, now).await;
    }
    shared.in_flight.lock().expect("in-flight lock").remove(key);
}

/// Fan out what a fetched or pushed document brought, then record the feed's new state.
pub(crate) async fn settle_document(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    outcome: Result<Option<Refreshed>, (String, Option<Duration>)>,
    now: Millis,
) {
    match outcome {
        Ok(plan) => {
            let mut published = 0;
            if let Some(r) = &plan
                && !(r.plan.notifications.is_empty() && r.plan.events.is_empty())
            {
                published = r.plan.notifications.len();
                if let Err(e) = fan_out(shared, &r.plan.notifications, &r.plan.events).await {
                    // nothing recorded as seen: the next poll (soon) publishes again, and the
                    // ids make the repeat harmless
                    warn!(error = %e, "fan-out failed; retrying shortly");
                    record_failure(
                        shared,
                        key,
                        snapshot,
                        format!("internal: {e}"),
                        Some(Duration::from_secs(5)),
                        now,
                        false,
                    )
                    .await;
                    return;
                }
            }
            record_success(shared, key, snapshot, plan, now).await;
            if published > 0 {
                info!(notifications = published, "new items fanned out");
            }
        }
        Err((msg, retry_after)) => {
            warn!(error = %msg, "feed poll failed");
            record_failure(shared, key, snapshot, msg, retry_after, now, true).await;
        }
    }
}

pub(crate) async fn fan_out(
    shared: &Shared,
    notifications: &[Notification],
    events: &[Event],
) -> Result<(), BusError> {
    let mut window = shared.bus.window(shared.cfg.publish_window);
    // an item's events (one per subscriber it matched or not) travel in envelopes
    for (subject, id, payload) in shared.bus.event_envelopes(events.to_vec(), "ingestor")? {
        window.push(subject, id, payload).await;
    }
    // many subscribers of a silo share its messages (envelopes): the avatars get them in bulk
    for (subject, id, payload) in shared.bus.notify_outputs(notifications)? {
        window.push(subject, id, payload).await;
    }
    window.flush().await?;
    metrics::counter!(crate::telemetry::NOTIFICATIONS).increment(notifications.len() as u64);
    Ok(())
}

pub(crate) async fn record_success(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    doc: Option<Refreshed>,
    now: Millis,
) {
    let (after, record) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        let Some(rec) = feeds.get_mut(key) else {
            return;
        };
        let rand01 = rand::rng().random();
        let after = after_success(rec, snapshot, doc, &shared.cfg, now, rand01, random_secret);
        shared.reschedule(key, rec.next_poll_ms);
        // the subscribers are needed only to tell them the feed is healthy again
        let record = if after.recovered {
            rec.clone()
        } else {
            rec.without_subscribers()
        };
        (after, record)
    };
    let AfterSuccess {
        subscribe,
        served,
        must_save,
        recovered,
    } = after;
    if let Some(ws) = subscribe {
        let client = shared.fetcher.client().clone();
        let (public, lease, k, url) = (
            shared.cfg.websub_public_url.clone(),
            shared.cfg.websub_lease_secs,
            key.to_owned(),
            record.url.clone(),
        );
        shared.tasks.spawn(async move {
            match websub::request(&client, &public, &k, "subscribe", &ws, lease).await {
                Ok(()) => info!(%url, hub = %ws.hub, "WebSub subscription requested"),
                Err(e) => {
                    warn!(%url, hub = %ws.hub, error = %e, "WebSub subscription failed; polling, asking again later")
                }
            }
        });
    }
    if must_save && let Err(e) = save(shared, key, &record).await {
        warn!(error = %e, "cannot save feed state; items may be announced again (deduplicated)");
    }
    for sub in &served {
        if let Err(e) = save_subscriber(shared, key, sub, false).await {
            warn!(error = %e, "cannot save a subscriber's state; existing items may be announced again (deduplicated)");
        }
    }
    if recovered {
        report_status(
            shared,
            &record,
            SourceStatus {
                ok: true,
                error: None,
                checked_at_ms: now,
                consecutive_failures: 0,
                broken: false,
            },
        )
        .await;
    }
}

pub(crate) async fn record_failure(
    shared: &Shared,
    key: &str,
    snapshot: &FeedRecord,
    msg: String,
    retry_after: Option<Duration>,
    now: Millis,
    count: bool,
) {
    let (tell, record) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        let Some(rec) = feeds.get_mut(key) else {
            return;
        };
        let rand01 = rand::rng().random();
        let failure = Failure {
            error: &msg,
            retry_after,
            feed_at_fault: count,
        };
        let tell = after_failure(rec, snapshot, failure, &shared.cfg, now, rand01);
        shared.reschedule(key, rec.next_poll_ms);
        (tell, rec.clone())
    };
    if let Err(e) = save(shared, key, &record).await {
        warn!(error = %e, "cannot save feed state");
    }
    if tell {
        let status = SourceStatus {
            ok: false,
            error: Some(msg),
            checked_at_ms: now,
            consecutive_failures: record.failures,
            broken: record.failures >= shared.cfg.source_broken_after,
        };
        report_status(shared, &record, status).await;
    }
}

/// Tell each subscriber's avatar how its source is doing (only on changes).
pub(crate) async fn report_status(shared: &Shared, record: &FeedRecord, status: SourceStatus) {
    for sub in record.subscribers.values() {
        report_status_to(shared, sub, status.clone()).await;
    }
}

pub(crate) async fn report_status_to(shared: &Shared, sub: &Subscriber, status: SourceStatus) {
    report_source_status(&shared.bus, &sub.user, &sub.source_id, status).await;
}
