//! Shared topics in the ingestor. Their subscribers are kept as a feed's are — under the feed
//! key of `topic:<name>`, one KV entry each — but a topic is never polled: a message published
//! to it (`ingest.topic.<name>`) is planned and fanned out exactly as a new item of a shared
//! feed, each subscriber's filter applied.

use crate::feeds::Shared;
use crate::feeds::normalize::FeedItem;
use crate::feeds::plan::plan_poll;
use crate::feeds::poll::fan_out;
use crate::feeds::record::{FeedRecord, Subscriber, feed_key};
use crate::feeds::store::{save, save_subscriber};
use tocsin_bus::BusError;
use tocsin_model::{FeedSubscription, Millis, SubscriptionOp, TopicItem, now_ms};
use tracing::{debug, info};

/// Whether a subscription's URL names a shared topic.
pub(crate) fn is_topic(url: &str) -> bool {
    url.starts_with("topic:")
}

/// Record a subscription to a topic (its record is written with its first subscriber and
/// dropped with its last).
pub(crate) async fn apply(shared: &Shared, sub: FeedSubscription) -> Result<(), BusError> {
    let name = sub.url.trim_start_matches("topic:").to_owned();
    if tocsin_model::topics::validate_name(&name).is_err() {
        debug!(url = %sub.url, "a topic subscription with an invalid name ignored");
        return Ok(());
    }
    let key = feed_key(&sub.url);
    let sub_key = format!("{}/{}", sub.user, sub.source_id);
    let (fresh, subscriber, last) = {
        let mut feeds = shared.feeds.lock().expect("feeds lock");
        match sub.op {
            SubscriptionOp::Upsert => {
                let fresh = !feeds.contains_key(&key);
                let rec = feeds.entry(key.clone()).or_insert_with(|| FeedRecord {
                    url: sub.url.clone(),
                    title: name.clone(),
                    // a topic has no baseline to take: everything published after a
                    // subscription is new to it
                    polled: true,
                    next_poll_ms: Millis::MAX,
                    ..Default::default()
                });
                let subscriber = Subscriber {
                    active_hours: None,
                    user: sub.user,
                    source_id: sub.source_id,
                    filter: sub.filter,
                    label: sub.label,
                    pending_existing: false,
                    poll_interval_secs: None,
                    listing: Default::default(),
                };
                rec.subscribers.insert(sub_key, subscriber.clone());
                (fresh.then(|| rec.without_subscribers()), subscriber, false)
            }
            SubscriptionOp::Remove => {
                let Some(rec) = feeds.get_mut(&key) else {
                    return Ok(());
                };
                let Some(subscriber) = rec.subscribers.remove(&sub_key) else {
                    return Ok(());
                };
                let last = rec.subscribers.is_empty();
                if last {
                    feeds.remove(&key);
                }
                (None, subscriber, last)
            }
        }
    };
    if let Some(record) = &fresh {
        save(shared, &key, record).await?;
    }
    let removing = sub.op == SubscriptionOp::Remove;
    save_subscriber(shared, &key, &subscriber, removing).await?;
    if last {
        shared.kv.delete(&key).await.map_err(|e| BusError::Kv {
            bucket: "feeds".into(),
            key: key.clone(),
            message: e.to_string(),
        })?;
        info!(topic = %name, "last subscriber of the topic gone");
    }
    Ok(())
}

/// Fan `item` out to the topic's subscribers (none: nothing to do).
pub(crate) async fn publish(shared: &Shared, item: TopicItem) -> Result<(), BusError> {
    let key = feed_key(&tocsin_model::topics::subscription_url(&item.topic));
    let Some(record) = shared.feeds.lock().expect("feeds lock").get(&key).cloned() else {
        debug!(topic = %item.topic, "a message to a topic nobody subscribes to");
        return Ok(());
    };
    let dedup = format!("topic:{}:{}", item.topic, item.id);
    let feed_item = FeedItem {
        key: item.id,
        title: item.title,
        text: item.body,
        link: item.url,
        categories: item.tags,
        published_ms: Some(item.published_at_ms),
        priority: Some(item.priority),
        dedup_key: Some(dedup),
        price: None,
    };
    let plan = plan_poll(&record, &item.topic, &[feed_item], 0, now_ms());
    fan_out(shared, &plan.notifications, &plan.events).await?;
    debug!(topic = %item.topic, notifications = plan.notifications.len(), "topic message fanned out");
    Ok(())
}
