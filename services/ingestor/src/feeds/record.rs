//! What the ingestor keeps about one feed URL (its `feeds` KV entry) and each subscriber of
//! it, and the KV keys of both.

use crate::config::IngestorConfig;
use crate::feeds::websub;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use tocsin_model::{Filter, Millis, UserId};

/// One subscriber of a feed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Subscriber {
    pub user: UserId,
    pub source_id: String,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub label: String,
    /// Deliver every item in the feed at the next poll (the subscriber asked for the
    /// existing items), then only new ones.
    #[serde(default)]
    pub pending_existing: bool,
    /// How often this subscriber wants the feed checked (none: the default interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    /// What a price change or a repost of a listing tells this subscriber.
    #[serde(
        default,
        skip_serializing_if = "tocsin_model::ListingRules::is_default"
    )]
    pub listing: tocsin_model::ListingRules,
}

/// Everything the ingestor keeps about one distinct feed URL (the `feeds` KV entry).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct FeedRecord {
    pub url: String,
    #[serde(default)]
    pub title: String,
    /// `<user>/<source>` → subscriber. Kept in KV as one entry per subscriber
    /// ([`subscriber_key`]), so a feed with many subscribers never outgrows a KV value and
    /// a poll rewrites only the feed's own state.
    #[serde(default, skip_serializing)]
    pub subscribers: BTreeMap<String, Subscriber>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub last_modified: Option<String>,
    /// Keys of the items seen, oldest first.
    #[serde(default)]
    pub seen: VecDeque<String>,
    /// Whether a baseline has been taken.
    #[serde(default)]
    pub polled: bool,
    #[serde(default)]
    pub failures: u32,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_checked_ms: Millis,
    #[serde(default)]
    pub next_poll_ms: Millis,
    /// The feed's WebSub subscription, when its hub is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub websub: Option<websub::WebSub>,
    /// How its document is read when it is not a feed (a JSON API's mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<Box<tocsin_model::Extract>>,
    /// A watched page's text at the last poll (at most 20 KB), what its next change is told
    /// against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_text: Option<String>,
    /// Its priced listings, least recently shown first (at most `seen_capacity`, or the
    /// document's): their prices and repost signatures.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub listings: VecDeque<crate::feeds::listings::Listing>,
}

impl FeedRecord {
    /// How often the feed is polled when healthy: the shortest interval among its
    /// subscribers — the default `poll_interval_secs` for those who asked for none, and for
    /// those who did, what they asked but never below `min_poll_interval_secs` (the floor
    /// bounds what tenants ask for, not the operator's own default).
    pub fn interval_secs(&self, cfg: &IngestorConfig) -> u64 {
        self.subscribers
            .values()
            .map(|s| match s.poll_interval_secs {
                Some(asked) => asked.max(cfg.min_poll_interval_secs),
                None => cfg.poll_interval_secs,
            })
            .min()
            .unwrap_or(cfg.poll_interval_secs)
    }

    /// A copy of the feed's own state, without its subscribers (they are kept in KV one by
    /// one, never in the record's value).
    pub fn without_subscribers(&mut self) -> FeedRecord {
        let subscribers = std::mem::take(&mut self.subscribers);
        let copy = self.clone();
        self.subscribers = subscribers;
        copy
    }
}

/// The KV key of a feed URL.
pub fn feed_key(url: &str) -> String {
    format!("f{}", &tocsin_model::digest(&["feed-url", url])[..32])
}

/// The key of the document at `url` read by `extract`: the same URL read another way is
/// another feed, with its own seen items (a plain feed keeps [`feed_key`]).
pub fn feed_key_for(url: &str, extract: Option<&tocsin_model::Extract>) -> String {
    match extract.and_then(|x| serde_json::to_string(x).ok()) {
        None => feed_key(url),
        Some(x) => format!("f{}", &tocsin_model::digest(&["feed-url", url, &x])[..32]),
    }
}

impl FeedRecord {
    /// Its key in the `feeds` bucket.
    pub fn key(&self) -> String {
        feed_key_for(&self.url, self.extract.as_deref())
    }
}

/// The KV key of one subscriber of the feed stored under `feed_key`:
/// `s<feed hash>.<user>.<source>`.
pub fn subscriber_key(feed_key: &str, sub: &Subscriber) -> String {
    format!("s{}.{}.{}", &feed_key[1..], sub.user, sub.source_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(user: &str, every: Option<u64>) -> Subscriber {
        Subscriber {
            user: UserId::parse(user).unwrap(),
            source_id: "s".into(),
            filter: Filter::default(),
            label: String::new(),
            pending_existing: false,
            poll_interval_secs: every,
            listing: Default::default(),
        }
    }

    #[test]
    fn a_feed_is_polled_as_often_as_its_keenest_subscriber_asks_within_the_floor() {
        let cfg = IngestorConfig {
            poll_interval_secs: 300,
            min_poll_interval_secs: 60,
            ..Default::default()
        };
        let mut rec = FeedRecord::default();
        assert_eq!(rec.interval_secs(&cfg), 300);
        rec.subscribers.insert("a".into(), sub("u1", None));
        assert_eq!(rec.interval_secs(&cfg), 300);
        rec.subscribers.insert("b".into(), sub("u2", Some(120)));
        assert_eq!(rec.interval_secs(&cfg), 120);
        rec.subscribers.insert("c".into(), sub("u3", Some(5)));
        assert_eq!(
            rec.interval_secs(&cfg),
            60,
            "never below the operator's floor"
        );
        rec.subscribers.clear();
        rec.subscribers.insert("d".into(), sub("u4", Some(3600)));
        assert_eq!(
            rec.interval_secs(&cfg),
            3600,
            "a patient subscriber may ask for less"
        );
        // the floor bounds what subscribers ask for, not the operator's own default
        let fast = IngestorConfig {
            poll_interval_secs: 1,
            ..cfg
        };
        rec.subscribers.insert("e".into(), sub("u5", None));
        assert_eq!(rec.interval_secs(&fast), 1);
    }
}
