//! What the ingestor keeps about one feed URL (its `feeds` KV entry) and each subscriber of
//! it, and the KV keys of both.

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
}

impl FeedRecord {
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

/// The KV key of one subscriber of the feed stored under `feed_key`:
/// `s<feed hash>.<user>.<source>`.
pub fn subscriber_key(feed_key: &str, sub: &Subscriber) -> String {
    format!("s{}.{}.{}", &feed_key[1..], sub.user, sub.source_id)
}
