//! The pure decisions of a poll: which items of a fetched document become notifications for
//! whom (new items, price changes on known listings, reposts as each subscriber's rules say),
//! what is remembered as seen, and when the feed is polled next.

use crate::config::IngestorConfig;
use crate::feeds::listings::{self, Listing, Memory};
use crate::feeds::normalize::FeedItem;
use crate::feeds::record::{FeedRecord, Subscriber};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;
use tocsin_model::{
    CompiledFilter, Event, Item, Millis, Notification, NotificationId, Priority, Reposts,
    SourceKind, SourceRef,
};

const DAY_MS: Millis = 86_400_000;

/// What one poll decided (pure).
#[derive(Debug, Default, PartialEq)]
pub struct PollPlan {
    pub notifications: Vec<Notification>,
    /// `ingested` for each new item, `matched` or `filtered_out` for each subscriber of it.
    pub events: Vec<Event>,
    /// Keys to remember.
    pub seen: VecDeque<String>,
    /// Priced listings to remember.
    pub listings: VecDeque<Listing>,
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
    let memory = Memory::new(&record.listings);
    // known listings whose price changed, and new items repeating a recent listing
    let repriced: Vec<(&FeedItem, &Listing)> = if record.polled {
        items
            .iter()
            .filter(|i| seen_before.contains(i.key.as_str()))
            .filter_map(|i| memory.repriced(i).map(|l| (i, l)))
            .collect()
    } else {
        Vec::new()
    };
    for (item, was) in &repriced {
        events.push(
            Event::ingested(&feed, &reprice_key(item, was), now).detail(&format!(
                "{}: {}",
                record.url,
                price_change(item, was)
            )),
        );
    }
    // what each new item repeats, looked up once per item (not once per subscriber)
    let reposts: HashMap<&str, &Listing> = fresh
        .iter()
        .filter_map(|i| memory.repost_of(i).map(|l| (i.key.as_str(), l)))
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
            let repost = reposts.get(item.key.as_str()).copied().filter(|original| {
                !sub.pending_existing
                    && now - original.first_ms <= i64::from(sub.listing.repost_days) * DAY_MS
            });
            let days = |l: &Listing| (now - l.first_ms) / DAY_MS;
            match (notification_for(sub, &filter, feed_title, item, now), repost) {
                (Some(_), Some(original)) if sub.listing.reposts == Reposts::Drop => events.push(
                    Event::filtered_out(&sub.user, &sub.source_id, &item.key, now).detail(
                        &format!(
                            "a repost: the same title and price as a listing first seen {} day(s) ago",
                            days(original)
                        ),
                    ),
                ),
                (Some(mut n), repost) => {
                    if let Some(original) = repost
                        && sub.listing.reposts == Reposts::Mark
                    {
                        n.title = format!("Repost: {}", n.title);
                        n.body = format!(
                            "The same title and price as a listing first seen {} day(s) ago.\n\n{}",
                            days(original),
                            n.body
                        );
                    }
                    events.push(Event::matched(&n));
                    notifications.push(n);
                }
                (None, _) => events.push(Event::filtered_out(
                    &sub.user,
                    &sub.source_id,
                    &item.key,
                    now,
                )),
            }
        }
        if sub.pending_existing {
            continue;
        }
        for (item, was) in &repriced {
            let (Some((_, from)), Some(to)) = (was.price(), &item.price) else {
                continue;
            };
            if !sub.listing.tells(from, to.minor) {
                continue;
            }
            if let Some(n) = notification_for(sub, &filter, feed_title, item, now) {
                let n = repriced_notification(n, item, was);
                events.push(Event::matched(&n));
                notifications.push(n);
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
        listings: listings::remember(&record.listings, items, now, seen_capacity),
    }
}

/// What a price change is keyed by: the item and the price it had since when, so a retried
/// poll repeats its id and a later change (even back to an old price) has another.
fn reprice_key(item: &FeedItem, was: &Listing) -> String {
    format!("{}#price:{}", item.key, reprice_suffix(item, was))
}

fn reprice_suffix(item: &FeedItem, was: &Listing) -> String {
    let (since, from) = was.price().unwrap_or_default();
    let to = item.price.as_ref().map_or(0, |p| p.minor);
    format!("{since}:{from}:{to}")
}

/// `$1,950 → $1,800`
fn price_change(item: &FeedItem, was: &Listing) -> String {
    let to = item.price.as_ref().map_or("", |p| p.shown.as_str());
    format!("{} → {to}", was.shown)
}

/// A listing's price change, told as its own notification: `Price drop: $1,950 → $1,800 ·
/// <title>`, its earlier prices in the body, its own id and dedup key.
fn repriced_notification(mut n: Notification, item: &FeedItem, was: &Listing) -> Notification {
    let (_, from) = was.price().unwrap_or_default();
    let down = item.price.as_ref().is_some_and(|p| p.minor < from);
    let change = price_change(item, was);
    let key = reprice_key(item, was);
    n.id = NotificationId::for_feed_item(&n.user, n.source.id.as_deref().unwrap_or(""), &key);
    n.title = format!(
        "{}: {change} · {}",
        if down { "Price drop" } else { "Price up" },
        n.title
    );
    n.body = format!("{change}\n\n{}", n.body);
    n.dedup_key = Some(match n.dedup_key {
        Some(k) => format!("{k}#price:{}", reprice_suffix(item, was)),
        None => key,
    });
    n
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
            price: None,
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
                            active_hours: None,
                            user: UserId::parse(u).unwrap(),
                            source_id: "s".into(),
                            filter: f.clone(),
                            label: String::new(),
                            pending_existing: *existing,
                            poll_interval_secs: None,
                            listing: Default::default(),
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

    fn priced(key: &str, title: &str) -> FeedItem {
        FeedItem {
            price: tocsin_model::listing::parse_price(title),
            ..item(key, title)
        }
    }

    #[test]
    fn a_price_drop_on_a_known_listing_is_its_own_notification_once() {
        let flats = Filter {
            any: vec!["flat".into()],
            ..Default::default()
        };
        let mut rec = record(&[("u1", flats, false), ("u2", Filter::default(), false)]);
        rec.subscribers.get_mut("u2/s").unwrap().listing.prices = tocsin_model::PriceAlerts::Off;
        let page1 = [
            priced("a", "Flat (Mission) $1,950"),
            priced("b", "Sofa $100"),
        ];
        let plan = plan_poll(&rec, "t", &page1, 100, 1);
        assert!(plan.notifications.is_empty(), "a baseline");
        rec.seen = plan.seen;
        rec.listings = plan.listings;
        rec.polled = true;
        let page2 = [
            priced("a", "Flat (Mission) $1,800"),
            priced("b", "Sofa $120"),
        ];
        let plan = plan_poll(&rec, "t", &page2, 100, 2);
        let got: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| (n.user.to_string(), n.title.clone()))
            .collect();
        // u1's filter takes flats, and a rise is not told by default; u2 turned prices off
        assert_eq!(
            got,
            [(
                "u1".into(),
                "Price drop: $1,950 → $1,800 · Flat (Mission) $1,800".into()
            )]
        );
        let n = &plan.notifications[0];
        assert!(n.body.starts_with("$1,950 → $1,800"));
        assert_ne!(
            n.dedup_key.as_deref(),
            Some("https://x.org/a"),
            "not deduplicated with the listing itself"
        );
        // a retried poll repeats the id; the next poll, with the price remembered, is quiet
        let again = plan_poll(&rec, "t", &page2, 100, 3);
        assert_eq!(again.notifications[0].id, n.id);
        rec.listings = plan.listings;
        assert!(
            plan_poll(&rec, "t", &page2, 100, 4)
                .notifications
                .is_empty()
        );
        // back to the old price and down again later: another change, another id
        let page3 = [priced("a", "Flat (Mission) $1,700")];
        let later = plan_poll(&rec, "t", &page3, 100, 5);
        assert_ne!(later.notifications[0].id, n.id);
    }

    #[test]
    fn a_repost_is_dropped_marked_or_kept_as_each_subscriber_asks() {
        let mut rec = record(&[
            ("u1", Filter::default(), false),
            ("u2", Filter::default(), false),
            ("u3", Filter::default(), false),
        ]);
        rec.subscribers.get_mut("u2/s").unwrap().listing.reposts = Reposts::Mark;
        rec.subscribers.get_mut("u3/s").unwrap().listing.reposts = Reposts::Keep;
        let plan = plan_poll(&rec, "t", &[priced("a", "Flat (Mission) $1,950")], 100, 0);
        rec.seen = plan.seen;
        rec.listings = plan.listings;
        rec.polled = true;
        let repost = [priced("z", "Flat (Mission) $1,950")];
        let plan = plan_poll(&rec, "t", &repost, 100, 2 * DAY_MS);
        let got: Vec<_> = plan
            .notifications
            .iter()
            .map(|n| (n.user.to_string(), n.title.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("u2".into(), "Repost: Flat (Mission) $1,950".into()),
                ("u3".into(), "Flat (Mission) $1,950".into())
            ]
        );
        assert!(plan.events.iter().any(|e| e.detail.contains("a repost")));
        // past the subscriber's repost_days it is a new listing again
        let plan = plan_poll(&rec, "t", &repost, 100, 8 * DAY_MS);
        assert_eq!(plan.notifications.len(), 3);
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
