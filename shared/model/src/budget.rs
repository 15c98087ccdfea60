//! Bounds on what outside input may make a user's record hold: each notification field's
//! length, and byte budgets for the record's collections, so the record always fits in one
//! bus message (NATS refuses payloads over 1 MiB, and a record that cannot be saved would
//! stop its user's avatar for good).

use crate::text::truncate;
use crate::{Notification, UserRecord};

/// What one notification may carry, in bytes (the publish API answers 400 past these; other
/// producers are cut to them, marked with `…`).
pub const MAX_TITLE: usize = 1000;
pub const MAX_BODY: usize = 16_000;
/// A longer link is dropped, not cut: half a URL leads nowhere.
pub const MAX_URL: usize = 2048;
pub const MAX_TAGS: usize = 20;
pub const MAX_TAG: usize = 64;
/// The source's label on a notification (a sender's name, a feed's title).
pub const MAX_SOURCE_LABEL: usize = 200;
/// A longer dedup key is kept as its digest (keys are only compared).
pub const MAX_DEDUP_KEY: usize = 128;
/// A source's last error as kept in the record.
pub const MAX_STATUS_ERROR: usize = 500;

/// Delivery jobs one notification may cause over its whole escalation: a policy of many
/// zero-wait steps naming many destinations cannot turn one publish into hundreds of
/// requests against a third party.
pub const MAX_JOBS_PER_NOTIFICATION: u32 = 30;

/// The user's configuration (sources, destinations, allowed senders, policy) as encoded.
pub const CONFIG_BUDGET: usize = 512 * 1024;
/// The notifications held by pending escalations, counted with [`approx_bytes`].
pub const ESCALATION_BUDGET: usize = 240 * 1024;
/// What a whole record may take on the bus: below NATS's default 1 MiB payload limit with
/// room for the message's headers.
pub const RECORD_LIMIT: usize = 1024 * 1024 - 16 * 1024;

impl Notification {
    /// This notification with every field within its bound.
    pub fn bounded(mut self) -> Notification {
        if self.title.len() > MAX_TITLE {
            self.title = truncate(&self.title, MAX_TITLE);
        }
        if self.body.len() > MAX_BODY {
            self.body = truncate(&self.body, MAX_BODY);
        }
        if self.url.as_ref().is_some_and(|u| u.len() > MAX_URL) {
            self.url = None;
        }
        self.tags.truncate(MAX_TAGS);
        for t in &mut self.tags {
            if t.len() > MAX_TAG {
                *t = truncate(t, MAX_TAG);
            }
        }
        if self.source.label.len() > MAX_SOURCE_LABEL {
            self.source.label = truncate(&self.source.label, MAX_SOURCE_LABEL);
        }
        if let Some(k) = &mut self.dedup_key
            && k.len() > MAX_DEDUP_KEY
        {
            *k = format!("sha256:{}", crate::digest(&[k]));
        }
        self
    }
}

/// Roughly what `n` adds to an encoded record: its strings plus a fixed overhead for the
/// field names and numbers.
pub fn approx_bytes(n: &Notification) -> usize {
    300 + n.id.as_str().len()
        + n.user.as_str().len()
        + n.title.len()
        + n.body.len()
        + n.url.as_ref().map_or(0, String::len)
        + n.tags.iter().map(|t| t.len() + 3).sum::<usize>()
        + n.source.label.len()
        + n.source.id.as_ref().map_or(0, String::len)
        + n.dedup_key.as_ref().map_or(0, String::len)
}

/// The encoded size of `r`'s configuration, checked against [`CONFIG_BUDGET`] before a
/// change is accepted.
pub fn config_bytes(r: &UserRecord) -> usize {
    let len = |v: serde_json::Result<Vec<u8>>| v.map_or(usize::MAX / 4, |b| b.len());
    len(serde_json::to_vec(&r.sources))
        + len(serde_json::to_vec(&r.destinations))
        + len(serde_json::to_vec(&r.allowed_senders))
        + len(serde_json::to_vec(&r.reach.policy))
        + len(serde_json::to_vec(&r.reach.policies))
        + len(serde_json::to_vec(&r.reach.silences))
        + len(serde_json::to_vec(&r.mail_rules))
        + len(serde_json::to_vec(&r.topics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        Channel, Destination, Escalation, Filter, NotificationId, PresenceState, Priority, Show,
        Source, SourceKind, SourceRef, SourceSpec, SourceStatus, UserId,
    };

    fn encode_len<T: serde::Serialize>(v: &T) -> usize {
        serde_json::to_vec(v).unwrap().len()
    }

    fn huge(n: usize) -> String {
        "é".repeat(n)
    }

    fn notification(i: usize) -> Notification {
        Notification {
            id: NotificationId(format!("n{i:032}")),
            user: UserId::parse("u1").unwrap(),
            source: SourceRef {
                kind: SourceKind::Email,
                id: Some("s".repeat(64)),
                label: huge(10_000),
            },
            title: huge(10_000),
            body: huge(100_000),
            url: Some(format!("https://x.example/{}", "a".repeat(MAX_URL - 30))),
            priority: Priority::default(),
            tags: vec![huge(1000); 100],
            created_at_ms: i as i64,
            published_at_ms: None,
            dedup_key: Some(huge(600_000)),
        }
        .bounded()
    }

    #[test]
    fn a_notification_is_cut_to_its_bounds_on_character_boundaries() {
        let n = notification(1);
        assert!(n.title.len() <= MAX_TITLE && n.title.ends_with('…'));
        assert!(n.body.len() <= MAX_BODY);
        assert!(n.url.is_some(), "a link within the bound is kept");
        assert_eq!(n.tags.len(), MAX_TAGS);
        assert!(n.tags.iter().all(|t| t.len() <= MAX_TAG));
        assert!(n.source.label.len() <= MAX_SOURCE_LABEL);
        let key = n.dedup_key.as_deref().unwrap();
        assert!(key.starts_with("sha256:") && key.len() <= MAX_DEDUP_KEY);
        let long_link = Notification {
            url: Some(format!("https://x.example/{}", "a".repeat(MAX_URL))),
            ..n.clone()
        };
        assert_eq!(long_link.bounded().url, None);
        assert!(approx_bytes(&n) >= encode_len(&n));
    }

    /// Every collection of a record filled to its budget still fits in one bus message.
    #[test]
    fn a_record_full_to_every_budget_fits_in_one_bus_message() {
        let mut r = UserRecord {
            id: UserId::parse("u1").unwrap(),
            name: huge(100),
            created_at_ms: 0,
            token_hash: "a".repeat(64),
            feed_token_hash: "b".repeat(64),
            inbound_token_hash: "c".repeat(64),
            sources: vec![],
            destinations: vec![],
            allowed_senders: vec![],
            require_authenticated_mail: true,
            mail_rules: vec![],
            topics: vec![],
            source_status: Default::default(),
            destination_status: Default::default(),
            recent: Default::default(),
            reach: Default::default(),
            sessions: vec![],
            reply_pin: None,
            sign_in_links: vec![],
        };
        // configuration: sources until the budget says no
        let source = |i: usize| Source {
            id: format!("s{i:063}"),
            spec: SourceSpec::Feed {
                url: format!("https://x.example/{}", "q".repeat(2000)),
                deliver_existing: true,
                poll_interval_secs: Some(60),
                extract: None,
                listing: crate::ListingRules {
                    prices: crate::PriceAlerts::Changes,
                    reposts: crate::Reposts::Mark,
                    repost_days: crate::ListingRules::MAX_REPOST_DAYS,
                },
                request: Box::new(crate::SourceRequest {
                    headers: (0..crate::SourceRequest::MAX_HEADERS)
                        .map(|i| {
                            (
                                format!("X-Header-{i:054}"),
                                "v".repeat(crate::SourceRequest::MAX_VALUE),
                            )
                        })
                        .collect(),
                    secret: None,
                    keyed: true,
                }),
                active_hours: Some(Box::new(crate::Window {
                    days: crate::local_time::DAYS
                        .iter()
                        .map(|d| d.to_string())
                        .collect(),
                    start: "00:00".into(),
                    end: "23:59".into(),
                    tz: "America/Argentina/ComodRivadavia".into(),
                })),
            },
            filter: Filter {
                any: vec!["w".repeat(100); 50],
                all: vec!["v".repeat(100); 50],
                exclude: vec!["x".repeat(100); 50],
                ..Filter::default()
            },
            label: huge(100),
            created_at_ms: 0,
            // the largest settings a source can have
            settings: crate::SourceSettings {
                priority: Some(crate::Priority::URGENT),
                muted_until_ms: Some(i64::MAX),
                policy: Some("p".repeat(32)),
                group_secs: Some(crate::SourceSettings::MAX_GROUP_SECS),
                digest: Some(Box::new(crate::Digest {
                    every: crate::DigestEvery::Day,
                    at: Some("08:00".into()),
                    tz: Some("America/Argentina/ComodRivadavia".into()),
                    count: Some(crate::Digest::MAX_COUNT),
                    urgent_bypass: false,
                })),
                tags: vec![
                    "t".repeat(crate::SourceSettings::MAX_TAG);
                    crate::SourceSettings::MAX_TAGS
                ],
            },
        };
        for i in 0.. {
            r.sources.push(source(i));
            if config_bytes(&r) > CONFIG_BUDGET {
                r.sources.pop();
                break;
            }
        }
        for i in 0..20 {
            r.destinations.push(Destination {
                id: format!("d{i:063}"),
                channel: Channel::Webhook,
                address: format!("https://hook.example/{}", "p".repeat(2000)),
                secret: Some("s".repeat(256)),
                label: huge(100),
                push_format: None,
                throttle: Some(crate::Throttle {
                    per_hour: crate::Throttle::MAX_PER_HOUR,
                    urgent_bypass: false,
                }),
                verification: Some(Box::new(crate::Verification {
                    code_hash: "h".repeat(64),
                    sent_at_ms: crate::Millis::MAX,
                    expires_at_ms: crate::Millis::MAX,
                    attempts: u32::MAX,
                })),
                created_at_ms: 0,
            });
            r.reach.presence.insert(
                format!("xmpp:{}@example.org", "a".repeat(250)),
                PresenceState {
                    show: Show::Available,
                    at_ms: 0,
                },
            );
        }
        while config_bytes(&r) > CONFIG_BUDGET {
            r.sources.pop();
        }
        r.reach.policy = Some(Box::default());
        // a heartbeat's state per source, missed (the largest it gets)
        for s in &r.sources {
            r.reach.beats.insert(
                s.id.clone(),
                crate::Beat {
                    last_ping_ms: i64::MAX,
                    due_ms: i64::MAX,
                    missed: Some(NotificationId(format!("n{:032}", 0))),
                },
            );
        }
        for s in &r.sources {
            r.source_status.insert(
                s.id.clone(),
                SourceStatus {
                    ok: false,
                    error: Some("e".repeat(MAX_STATUS_ERROR)),
                    checked_at_ms: 0,
                    consecutive_failures: u32::MAX,
                    broken: true,
                },
            );
        }
        for d in &r.destinations {
            r.destination_status.insert(
                d.id.clone(),
                SourceStatus {
                    ok: false,
                    error: Some("e".repeat(MAX_STATUS_ERROR)),
                    checked_at_ms: 0,
                    consecutive_failures: u32::MAX,
                    broken: true,
                },
            );
        }
        // state: recent keys, references and escalations at their caps; the keys as the most
        // change to a base a record can carry (its base's writes failing since): every key of
        // the base forgotten, and as many added
        let key = |i: usize| format!("k:sha256:{}", crate::digest(&[&i.to_string()]));
        for i in 0..crate::RecentSet::CAPACITY {
            r.recent.insert(key(i));
        }
        r.recent.rebased(1);
        for i in 0..crate::RecentSet::CAPACITY {
            r.recent.remove(&key(i));
            r.recent.insert(key(i + crate::RecentSet::CAPACITY));
        }
        assert_eq!(r.recent.changes(), 2 * crate::RecentSet::CAPACITY);
        let mut held = 0;
        for i in 0..crate::Reach::MAX_ESCALATIONS {
            let n = notification(i);
            held += approx_bytes(&n);
            if held > ESCALATION_BUDGET {
                break;
            }
            r.reach.reference(&n);
            r.reach.escalations.insert(
                n.id.0.clone(),
                Escalation {
                    notification: n,
                    next_step: 9,
                    due_ms: i64::MAX,
                    step_destinations: (0..20).map(|i| format!("d{i:063}")).collect(),
                    step_failed: (0..20).map(|i| format!("d{i:063}")).collect(),
                    held: true,
                    reference: 999,
                    jobs: MAX_JOBS_PER_NOTIFICATION,
                    policy: Some("p".repeat(32)),
                    round: crate::escalation::MAX_REPEAT,
                    awaiting_ack: false,
                    acked: false,
                },
            );
        }
        // open alerts at their cap, with the longest keys the API takes
        for i in 0..crate::Reach::MAX_OPEN_KEYS {
            let n = notification(i);
            r.reach
                .open_key(&format!("{i:0200}"), &n.id, i64::MAX - i as i64);
        }
        // every open alert told where it reached, at the most destinations a user has
        let keys: Vec<String> = r.reach.open_keys.keys().cloned().collect();
        for k in keys.into_iter().take(crate::Reach::MAX_TOLD) {
            let n = notification(0);
            r.reach.told.insert(
                k,
                crate::Told {
                    notification: n.id.clone(),
                    title: crate::text::truncate(&huge(200), crate::Told::MAX_TITLE),
                    source: crate::SourceRef {
                        label: crate::text::truncate(&huge(200), crate::Told::MAX_TITLE),
                        ..n.source.clone()
                    },
                    destinations: (0..crate::Told::MAX_DESTINATIONS)
                        .map(|i| format!("d{i:063}"))
                        .collect(),
                },
            );
        }
        // signed-in browsers at their cap, each with the longest label
        for i in 0..crate::WebSession::MAX_PER_USER {
            crate::WebSession::admit(
                &mut r.sessions,
                crate::WebSession {
                    id_hash: format!("{i:064}"),
                    created_at_ms: i64::MAX - 1,
                    expires_at_ms: i64::MAX,
                    label: huge(200),
                },
                0,
            );
        }
        assert_eq!(r.sessions.len(), crate::WebSession::MAX_PER_USER);
        r.sign_in_links = vec![
            crate::SignInLink {
                code_hash: "c".repeat(64),
                expires_at_ms: i64::MAX,
            };
            crate::SignInLink::MAX_PENDING
        ];
        // every destination throttled, each hour holding its titles
        for d in &r.destinations {
            r.reach.throttled.insert(
                d.id.clone(),
                crate::Throttled {
                    since_ms: i64::MAX,
                    sent: u32::MAX,
                    held: u32::MAX,
                    first: Some(notification(0).id),
                    titles: vec![crate::text::truncate(&huge(100), 100); crate::Throttled::TITLES],
                    priority: crate::Priority::URGENT,
                },
            );
        }
        // groups at their cap, each a digest with all its titles
        for s in r.sources.iter().take(crate::Reach::MAX_GROUPS) {
            let n = notification(0);
            r.reach.groups.insert(
                s.id.clone(),
                crate::Group {
                    first: n.id.clone(),
                    closes_ms: i64::MAX,
                    held: u32::MAX,
                    titles: vec![
                        crate::text::truncate(&huge(100), 100);
                        crate::Group::DIGEST_TITLES
                    ],
                    priority: crate::Priority::URGENT,
                    source: crate::SourceRef {
                        label: crate::text::truncate(&huge(100), 100),
                        ..n.source.clone()
                    },
                    digest: true,
                },
            );
        }
        // silences at their cap, the largest each can be (also when added over IM, which the
        // configuration budget does not check)
        for i in 0..crate::silence::MAX_SILENCES {
            let field = || Some(huge(crate::silence::MAX_FIELD / 2));
            r.reach.silences.push(crate::Silence {
                id: format!("x{i:063}"),
                matcher: crate::Matcher {
                    source: field(),
                    tag: field(),
                    key: field(),
                },
                starts_at_ms: i64::MAX,
                ends_at_ms: i64::MAX,
                comment: huge(crate::silence::MAX_FIELD / 2),
                created_at_ms: i64::MAX,
                window: Some(crate::Window {
                    days: crate::local_time::DAYS
                        .iter()
                        .map(|d| d.to_string())
                        .collect(),
                    start: "00:00".into(),
                    end: "23:59".into(),
                    tz: "America/Argentina/ComodRivadavia".into(),
                }),
            });
        }
        let bytes = encode_len(&r);
        println!("a full record: {bytes} of {RECORD_LIMIT} bytes");
        assert!(
            bytes <= RECORD_LIMIT,
            "a full record takes {bytes} bytes, over {RECORD_LIMIT}"
        );
    }
}
