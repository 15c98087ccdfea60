//! The pure decisions of a poll: which items of a fetched document become notifications for
//! whom, what is remembered as seen, and when the feed is polled next.

use crate::config::IngestorConfig;
use crate::feeds::normalize::FeedItem;
use crate::feeds::record::{FeedRecord, Subscriber};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tocsin_model::{
    CompiledFilter, Event, Item, Millis, Notification, NotificationId, Priority, SourceKind,
    SourceRef,
};

/// What one poll decided (pure).
#[derive(Debug, Default, PartialEq)]
pub struct PollPlan {
    pub notifications: Vec<Notification>,
    /// `ingested` for each new item, `matched` or `filtered_out` for each subscriber of it.
    pub events: Vec<Event>,
    /// Keys to remember.
    pub seen: VecDeque<String>,
}

/// Decide what a fetched document means for `record`: which notifications go to whom, and
/// what is seen afterwards. The first poll is a baseline (only subscribers who asked for
/// existing items get them); later polls notify only unseen items.
pub fn plan_poll(
    record: &FeedRecord,
    feed_title: &str,
    items: &[FeedItem],
    seen_capacity: usize,
    now: Millis,
) -> PollPlan {
    let seen_before: HashSet<&str> = record.seen.iter().map(String::as_str).collect();
    let fresh: Vec<&FeedItem> = if record.polled {
        items
            .iter()
            .filter(|i| !seen_before.contains(i.key.as_str()))
            .collect()
    } else {
        Vec::new()
    };
    let mut notifications = Vec::new();
    let feed = record.key();
    let mut events: Vec<Event> = fresh
        .iter()
        .map(|i| Event::ingested(&feed, &i.key, now).detail(&record.url))
        .collect();
    for sub in record.subscribers.values() {
        let Ok(filter) = sub.filter.compile() else {
            continue;
        };
        let candidates: Vec<&FeedItem> = if sub.pending_existing {
            items.iter().collect()
        } else {
            fresh.clone()
        };
        for item in candidates {
            match notification_for(sub, &filter, feed_title, item, now) {
                Some(n) => {
                    events.push(Event::matched(&n));
                    notifications.push(n);
                }
                None => events.push(Event::filtered_out(
                    &sub.user,
                    &sub.source_id,
                    &item.key,
                    now,
                )),
            }
        }
    }
    // remember the document's keys plus older ones, up to capacity (at least the document)
    let mut seen: VecDeque<String> = record.seen.clone();
    for i in items {
        if !seen_before.contains(i.key.as_str()) {
            seen.push_back(i.key.clone());
        }
    }
    let cap = seen_capacity.max(items.len() * 2);
    while seen.len() > cap {
        seen.pop_front();
    }
    PollPlan {
        notifications,
        events,
        seen,
    }
}

fn notification_for(
    sub: &Subscriber,
    filter: &CompiledFilter,
    feed_title: &str,
    item: &FeedItem,
    now: Millis,
) -> Option<Notification> {
    let matched = filter.matches(&Item {
        title: &item.title,
        text: &item.text,
        categories: &item.categories,
    });
    if !matched {
        return None;
    }
    Some(Notification {
        id: NotificationId::for_feed_item(&sub.user, &sub.source_id, &item.key),
        user: sub.user.clone(),
        source: SourceRef {
            kind: SourceKind::Feed,
            id: Some(sub.source_id.clone()),
            label: if sub.label.is_empty() {
                feed_title.to_owned()
            } else {
                sub.label.clone()
            },
        },
        title: if item.title.is_empty() {
            "(untitled)".into()
        } else {
            item.title.clone()
        },
        body: item.text.clone(),
        url: item.link.clone(),
        priority: item.priority.unwrap_or(Priority::DEFAULT),
        tags: item.categories.clone(),
        created_at_ms: now,
        published_at_ms: item.published_ms,
        // the item's key for the avatar's dedup: its canonical link (set once per item when the
        // document was read), else its link, else its id
        dedup_key: Some(
            item.dedup_key
                .clone()
                .or_else(|| item.link.clone())
                .unwrap_or_else(|| item.key.clone()),
        ),
    })
}

/// When to poll next: the feed's interval (see [`FeedRecord::interval_secs`]) with jitter
/// when healthy; exponential backoff from the interval when failing (capped), and never
/// before the server's `Retry-After`.
pub fn next_poll(
    now: Millis,
    interval_secs: u64,
    cfg: &IngestorConfig,
    failures: u32,
    retry_after: Option<Duration>,
    rand01: f64,
) -> Millis {
    let base = interval_secs as f64 * 1000.0;
    let wait = if failures == 0 {
        base
    } else {
        (base * 2f64.powi(failures.min(20) as i32 - 1)).min(cfg.max_backoff_secs as f64 * 1000.0)
    };
    let jittered = wait * (1.0 + cfg.jitter * (2.0 * rand01 - 1.0));
    let floor = retry_after.map(|d| d.as_millis() as f64).unwrap_or(0.0);
    now + jittered.max(floor).max(1.0) as Millis
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::{Filter, UserId};

    fn item(key: &str, title: &str) -> FeedItem {
        FeedItem {
            key: key.into(),
            title: title.into(),
            text: String::new(),
            link: Some(format!("https://x.org/{key}")),
            categories: vec![],
            published_ms: None,
            priority: None,
            dedup_key: None,
        }
    }

    fn record(subs: &[(&str, Filter, bool)]) -> FeedRecord {
        FeedRecord {
            url: "https://x.org/rss".into(),
            subscribers: subs
                .iter()
                .map(|(u, f, existing)| {
                    (
                        format!("{u}/s"),
                        Subscriber {
                            user: UserId::parse(u).unwrap(),
                            source_id: "s".into(),
                            filter: f.clone(),
                            label: String::new(),
                            pending_existing: *existing,
                            poll_interval_secs: None,
                        },
                    )
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn first_poll_is_a_baseline_then_only_new_matching_items() {
        let bikes = Filter {
            any: vec!["bike".into()],
            ..Default::default()
        };
        let mut rec = record(&[("u1", bikes, false), ("u2", Filter::default(), true)]);
        let page1 = [item("a", "road bike"), item("b", "sofa")];
        let plan = plan_poll(&rec, "t", &page1, 100, 1);
        // u1 gets nothing (baseline), u2 asked for the existing items and gets both
        let users: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| n.user.to_string())
            .collect();
        assert_eq!(users, ["u2", "u2"]);
        rec.seen = plan.seen;
        rec.polled = true;
        for s in rec.subscribers.values_mut() {
            s.pending_existing = false;
        }
        let page2 = [
            item("c", "kids bike"),
            item("d", "lamp"),
            item("a", "road bike"),
        ];
        let plan = plan_poll(&rec, "t", &page2, 100, 2);
        let got: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| (n.user.to_string(), n.title.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("u1".into(), "kids bike".into()),
                ("u2".into(), "kids bike".into()),
                ("u2".into(), "lamp".into())
            ]
        );
        assert_eq!(plan.seen, ["a", "b", "c", "d"]);
        // same ids on a repeat: a retried poll is deduplicated downstream
        let again = plan_poll(&rec, "t", &page2, 100, 3);
        assert_eq!(again.notifications[0].id, plan.notifications[0].id);
    }

    #[test]
    fn seen_is_bounded_but_keeps_the_current_document() {
        let mut rec = record(&[("u1", Filter::default(), false)]);
        rec.polled = true;
        rec.seen = (0..10).map(|i| format!("old{i}")).collect();
        let page: Vec<_> = (0..4).map(|i| item(&format!("k{i}"), "x")).collect();
        let plan = plan_poll(&rec, "t", &page, 5, 1);
        assert_eq!(plan.seen.len(), 8);
        assert!(plan.seen.iter().rev().take(4).all(|k| k.starts_with('k')));
    }

    #[test]
    fn backoff_and_retry_after() {
        let cfg = IngestorConfig {
            poll_interval_secs: 60,
            jitter: 0.0,
            max_backoff_secs: 600,
            ..Default::default()
        };
        assert_eq!(next_poll(0, 60, &cfg, 0, None, 0.5), 60_000);
        assert_eq!(next_poll(0, 60, &cfg, 1, None, 0.5), 60_000);
        assert_eq!(next_poll(0, 60, &cfg, 3, None, 0.5), 240_000);
        assert_eq!(next_poll(0, 60, &cfg, 10, None, 0.5), 600_000);
        assert_eq!(
            next_poll(0, 60, &cfg, 1, Some(Duration::from_secs(3600)), 0.5),
            3_600_000
        );
        // a feed's own interval is the base of both
        assert_eq!(next_poll(0, 10, &cfg, 0, None, 0.5), 10_000);
        assert_eq!(next_poll(0, 10, &cfg, 2, None, 0.5), 20_000);
        let j = IngestorConfig { jitter: 0.1, ..cfg };
        assert_eq!(next_poll(0, 60, &j, 0, None, 0.0), 54_000);
        assert_eq!(next_poll(0, 60, &j, 0, None, 1.0), 66_000);
    }
}
