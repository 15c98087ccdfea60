//! What the ingestor keeps about one feed URL (its `feeds` KV entry) and each subscriber of
//! it, and the KV keys of both.

use crate::config::IngestorConfig;
use crate::feeds::websub;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
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
    /// When this subscriber wants the feed polled; absent: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<tocsin_model::Window>,
}

/// A feed's subscribers by `<user>/<source>`, shared by the copies of its record a poll
/// takes (a feed may have 100,000 of them) and copied only when one of those copies is
/// changed while another is still held. Reads go through [`std::ops::Deref`]; the changes
/// below copy first if they must.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "BTreeMap<String, Subscriber>")]
pub struct Subscribers(Arc<BTreeMap<String, Subscriber>>);

impl From<BTreeMap<String, Subscriber>> for Subscribers {
    fn from(map: BTreeMap<String, Subscriber>) -> Self {
        Subscribers(Arc::new(map))
    }
}

impl FromIterator<(String, Subscriber)> for Subscribers {
    fn from_iter<I: IntoIterator<Item = (String, Subscriber)>>(iter: I) -> Self {
        Subscribers(Arc::new(iter.into_iter().collect()))
    }
}

impl std::ops::Deref for Subscribers {
    type Target = BTreeMap<String, Subscriber>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Subscribers {
    /// Whether both are the same map, not copies of it.
    #[cfg(test)]
    pub(crate) fn shares_with(&self, other: &Subscribers) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn edit(&mut self) -> &mut BTreeMap<String, Subscriber> {
        Arc::make_mut(&mut self.0)
    }

    pub fn insert(&mut self, key: String, sub: Subscriber) -> Option<Subscriber> {
        self.edit().insert(key, sub)
    }

    pub fn remove(&mut self, key: &str) -> Option<Subscriber> {
        self.edit().remove(key)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Subscriber> {
        self.edit().get_mut(key)
    }

    pub fn clear(&mut self) {
        self.edit().clear()
    }

    pub fn iter_mut(&mut self) -> std::collections::btree_map::IterMut<'_, String, Subscriber> {
        self.edit().iter_mut()
    }

    pub fn values_mut(&mut self) -> std::collections::btree_map::ValuesMut<'_, String, Subscriber> {
        self.edit().values_mut()
    }
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
    pub subscribers: Subscribers,
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
    /// Its source's own request headers, with the secret they name (kept here only: never
    /// in the user's record).
    #[serde(
        default,
        skip_serializing_if = "tocsin_model::SourceRequest::is_default"
    )]
    pub request: tocsin_model::SourceRequest,
    /// `<user>/<source>` of the one source whose secret it is requested with.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
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

    /// `at`, or — when no subscriber's active hours include it — when the first of them
    /// next begin. A subscriber without active hours is always active.
    pub fn active_from(&self, at: Millis) -> Millis {
        let mut earliest: Option<Millis> = None;
        for s in self.subscribers.values() {
            // (a window that cannot be read never holds a feed back)
            let Some(open) = s
                .active_hours
                .as_ref()
                .map_or(Some(at), |w| w.next_open(at))
            else {
                return at;
            };
            if open <= at {
                return at;
            }
            earliest = Some(earliest.map_or(open, |e| e.min(open)));
        }
        earliest.unwrap_or(at)
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

/// The key of the document at `url` read by `extract` and requested with `request`'s
/// headers: the same URL read or requested another way is another feed, with its own seen
/// items (a plain feed keeps [`feed_key`]). A source with a secret (`owner`, `<user>/<source>`)
/// has a feed of its own: what one account's key sees is not another's.
pub fn feed_key_for(
    url: &str,
    extract: Option<&tocsin_model::Extract>,
    request: &tocsin_model::SourceRequest,
    owner: &str,
) -> String {
    let extract = extract.and_then(|x| serde_json::to_string(x).ok());
    if request.headers.is_empty() && !request.is_keyed() {
        return match extract {
            None => feed_key(url),
            Some(x) => format!("f{}", &tocsin_model::digest(&["feed-url", url, &x])[..32]),
        };
    }
    let headers = serde_json::to_string(&request.headers).unwrap_or_default();
    let owner = if request.is_keyed() { owner } else { "" };
    let parts = [
        "feed-url",
        url,
        extract.as_deref().unwrap_or(""),
        &headers,
        owner,
    ];
    format!("f{}", &tocsin_model::digest(&parts)[..32])
}

impl FeedRecord {
    /// Its key in the `feeds` bucket.
    pub fn key(&self) -> String {
        feed_key_for(
            &self.url,
            self.extract.as_deref(),
            &self.request,
            &self.owner,
        )
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
            active_hours: None,
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
    fn a_feed_waits_for_the_first_subscribers_active_hours() {
        let office = |start: &str| tocsin_model::Window {
            days: vec![
                "mon".into(),
                "tue".into(),
                "wed".into(),
                "thu".into(),
                "fri".into(),
            ],
            start: start.into(),
            end: "18:00".into(),
            tz: "UTC".into(),
        };
        // Thursday 2026-12-03 20:00 UTC, and the same day at 10:00
        let evening = 1_796_256_000_000 + 20 * 3_600_000;
        let morning = 1_796_256_000_000 + 10 * 3_600_000;
        let mut rec = FeedRecord::default();
        let mut a = sub("u1", None);
        a.active_hours = Some(office("08:00"));
        rec.subscribers.insert("a".into(), a);
        assert_eq!(
            rec.active_from(morning),
            morning,
            "within the hours: as scheduled"
        );
        let friday_eight = 1_796_256_000_000 + 86_400_000 + 8 * 3_600_000;
        assert_eq!(rec.active_from(evening), friday_eight);
        let mut b = sub("u2", None);
        b.active_hours = Some(office("07:00"));
        rec.subscribers.insert("b".into(), b);
        assert_eq!(
            rec.active_from(evening),
            friday_eight - 3_600_000,
            "the earliest"
        );
        rec.subscribers.insert("c".into(), sub("u3", None));
        assert_eq!(
            rec.active_from(evening),
            evening,
            "one always active: as scheduled"
        );
        // Friday evening waits for Monday
        let mut weekend = FeedRecord::default();
        let mut a = sub("u1", None);
        a.active_hours = Some(office("08:00"));
        weekend.subscribers.insert("a".into(), a);
        let monday_eight = 1_796_256_000_000 + 4 * 86_400_000 + 8 * 3_600_000;
        assert_eq!(weekend.active_from(evening + 86_400_000), monday_eight);
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
