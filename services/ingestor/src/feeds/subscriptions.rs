//! Subscription changes from the avatars (`ingest.subscriptions`, `ingest.imap`): recorded in
//! the feed state and the poll queue, or handed to the IMAP watches; and messages published to
//! shared topics (`ingest.topic.<name>`), fanned out to their subscribers.

use crate::feeds::Shared;
use crate::feeds::poll::report_status_to;
use crate::feeds::record::{FeedRecord, Subscriber, feed_key_for};
use crate::feeds::store::{save, save_subscriber};
use crate::feeds::{topics, websub};
use crate::mail::imap;
use async_nats::jetstream::{self};
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{BusError, Disposition};
use tocsin_model::{FeedSubscription, SourceStatus, SubscriptionOp};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub(crate) async fn consume_subscriptions(
    shared: Arc<Shared>,
    imap: Arc<imap::Watches>,
    consumer: jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    shutdown: CancellationToken,
) {
    let mut messages = tocsin_bus::Pull::new(consumer, 256, "subscription changes");
    let topic_prefix = shared.bus.subjects().ingest_topic("");
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = messages.next() => m,
        };
        if msg.message().subject.as_str() == shared.bus.subjects().ingest_imap() {
            let disposition = match tocsin_bus::decode::<tocsin_model::ImapSubscription>(
                &msg.message().payload,
                "IMAP subscription",
            ) {
                _ if shared.bus.exhausted(msg.message()) => {
                    Disposition::Reject("recording it failed on every delivery".into())
                }
                Err(e) => Disposition::Reject(e.to_string()),
                Ok(sub) => match imap.apply(sub).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        warn!(error = %e, "cannot record an IMAP subscription; will retry");
                        Disposition::Retry(Duration::from_secs(1))
                    }
                },
            };
            msg.settle(&shared.bus, disposition).await;
            continue;
        }
        if let Some(topic) = msg.message().subject.as_str().strip_prefix(&topic_prefix) {
            let disposition = match tocsin_bus::decode::<tocsin_model::TopicItem>(
                &msg.message().payload,
                "topic message",
            ) {
                _ if shared.bus.exhausted(msg.message()) => {
                    Disposition::Reject("fanning it out failed on every delivery".into())
                }
                Err(e) => Disposition::Reject(e.to_string()),
                Ok(item) if item.topic != topic => Disposition::Reject(format!(
                    "a message for topic {} on {topic}'s subject",
                    item.topic
                )),
                Ok(item) => match topics::publish(&shared, item).await {
                    Ok(()) => Disposition::Ack,
                    Err(e) => {
                        warn!(error = %e, "cannot fan a topic message out; will retry");
                        Disposition::Retry(Duration::from_secs(1))
                    }
                },
            };
            msg.settle(&shared.bus, disposition).await;
            continue;
        }
        let disposition = match tocsin_bus::decode::<FeedSubscription>(
            &msg.message().payload,
            "feed subscription",
        ) {
            _ if shared.bus.exhausted(msg.message()) => {
                Disposition::Reject("recording it failed on every delivery".into())
            }
            Err(e) => Disposition::Reject(e.to_string()),
            Ok(sub) => match apply_subscription(&shared, sub).await {
                Ok(()) => Disposition::Ack,
                Err(e) => {
                    warn!(error = %e, "cannot record a subscription change; will retry");
                    Disposition::Retry(Duration::from_secs(1))
                }
            },
        };
        msg.settle(&shared.bus, disposition).await;
    }
}

pub(crate) async fn apply_subscription(
    shared: &Shared,
    sub: FeedSubscription,
) -> Result<(), BusError> {
    if topics::is_topic(&sub.url) {
        return topics::apply(shared, sub).await;
    }
    let url = match tocsin_model::validate_feed_url(&sub.url) {
        Ok(u) => u,
        Err(e) => {
            warn!(url = %sub.url, error = %e, "subscription with an invalid URL ignored");
            return Ok(());
        }
    };
    let sub_key = format!("{}/{}", sub.user, sub.source_id);
    let key = feed_key_for(&url, sub.extract.as_deref(), &sub.request, &sub_key);
    // (the feed's record when it is written or dropped, the subscriber, whether the record
    // must be written, whether the feed is no longer watched, the feed's health for a newcomer)
    let (record, subscriber, write_record, unwatched, health) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        match sub.op {
            SubscriptionOp::Upsert => {
                let fresh = !feeds.contains_key(&key);
                let rec = feeds.entry(key.clone()).or_insert_with(|| FeedRecord {
                    url: url.clone(),
                    next_poll_ms: 0,
                    extract: sub.extract.clone(),
                    request: sub.request.without_secret(),
                    owner: if sub.request.is_keyed() {
                        sub_key.clone()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                });
                let existing = rec.subscribers.contains_key(&sub_key);
                let mut write_record = fresh;
                // a new secret (a new source, or the owner rotated it) replaces the kept one
                if let Some(secret) = &sub.request.secret
                    && rec.request.secret.as_ref() != Some(secret)
                {
                    rec.request.secret = Some(secret.clone());
                    write_record = true;
                }
                if sub.deliver_existing && !existing && rec.polled {
                    // they asked for what is already listed: fetch it now, not next interval
                    rec.next_poll_ms = 0;
                    write_record = true;
                }
                let subscriber = Subscriber {
                    user: sub.user,
                    source_id: sub.source_id,
                    filter: sub.filter,
                    label: sub.label,
                    // an update (a new label, a rotated secret) before the first good
                    // poll keeps the existing items owed
                    pending_existing: sub.deliver_existing
                        && rec
                            .subscribers
                            .get(&sub_key)
                            .is_none_or(|s| s.pending_existing),
                    poll_interval_secs: sub.poll_interval_secs,
                    listing: sub.listing,
                    active_hours: sub.active_hours,
                };
                rec.subscribers.insert(sub_key, subscriber.clone());
                if rec.polled {
                    // a subscriber who wants it more often than it is checked: sooner
                    let sooner = tocsin_model::now_ms()
                        + rec.interval_secs(&shared.cfg) as tocsin_model::Millis * 1000;
                    rec.next_poll_ms = rec.next_poll_ms.min(sooner);
                }
                // (a feed being polled is not in the queue: its poll's end puts it back)
                shared.reschedule(&key, rec.next_poll_ms);
                // the record's own state, only when it is written (copying the subscribers
                // with it would make each subscription cost as much as the feed's audience)
                let record = write_record.then(|| rec.without_subscribers());
                let health = rec.polled.then(|| SourceStatus {
                    ok: rec.failures == 0,
                    error: rec.last_error.clone(),
                    checked_at_ms: rec.last_checked_ms,
                    consecutive_failures: rec.failures,
                    broken: rec.failures >= shared.cfg.source_broken_after,
                });
                let (url, count) = (rec.url.clone(), rec.subscribers.len());
                debug!(%url, subscribers = count, "subscription recorded");
                (record, subscriber, write_record, false, health)
            }
            SubscriptionOp::Remove => {
                let Some(rec) = feeds.get_mut(&key) else {
                    return Ok(());
                };
                let Some(subscriber) = rec.subscribers.remove(&sub_key) else {
                    return Ok(());
                };
                if rec.subscribers.is_empty() {
                    let r = feeds.remove(&key).expect("present");
                    shared.queue.lock().expect("queue lock").remove(&key);
                    (Some(r), subscriber, false, true, None)
                } else {
                    (None, subscriber, false, false, None)
                }
            }
        }
    };
    let removing = sub.op == SubscriptionOp::Remove;
    if write_record && let Some(record) = &record {
        save(shared, &key, record).await?;
    }
    save_subscriber(shared, &key, &subscriber, removing).await?;
    if unwatched && let Some(record) = record {
        if let Some(ws) = record.websub.clone()
            && !shared.cfg.websub_public_url.is_empty()
        {
            let client = shared.fetcher.client().clone();
            let (public, lease, k) = (
                shared.cfg.websub_public_url.clone(),
                shared.cfg.websub_lease_secs,
                key.clone(),
            );
            shared.tasks.spawn(async move {
                if let Err(e) =
                    websub::request(&client, &public, &k, "unsubscribe", &ws, lease).await
                {
                    debug!(error = %e, "WebSub unsubscribe failed; the lease will lapse");
                }
            });
        }
        shared.kv.delete(&key).await.map_err(|e| BusError::Kv {
            bucket: "feeds".into(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        info!(url = %record.url, "last subscriber gone; feed no longer watched");
    } else if let Some(status) = health {
        // a newcomer to a feed already watched learns its health now, not at its next change
        report_status_to(shared, &subscriber, status).await;
    }
    Ok(())
}
