//! Events: every state change as an immutable record, for the archive and analytics.
//!
//! One flat, versioned shape for every kind, so the archive is one table: the fields a kind
//! does not need are empty. An event's id is derived from what it records (never from the
//! time it was handled), so a service that handles the same input again after a crash
//! publishes the same id, and the bus's duplicate window keeps one copy.
//!
//! `docs/analytics.md` documents each kind and its fields.

use crate::{Channel, Millis, NotificationId, UserId};
use serde::{Deserialize, Serialize};

/// The version of [`Event`]'s shape. A new optional field keeps the version; a removed or
/// re-typed field raises it, and readers keep reading older versions.
pub const EVENT_SCHEMA_VERSION: u16 = 1;

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new item arrived from a source (a feed item, an e-mail, a publish): once per item,
    /// before it is matched to anyone. `source` names it; `user` is set when the source is
    /// one user's (e-mail, publish).
    Ingested,
    /// An item passed a subscriber's filter and became that user's notification.
    Matched,
    /// An item did not pass a subscriber's filter.
    FilteredOut,
    /// The user's avatar accepted the notification and started its escalation policy.
    Routed,
    /// A send of a delivery job that did not deliver: to be retried, or failed for good
    /// (`attempt` numbers it; `detail` gives the error). A send that delivers is recorded by
    /// its `delivered` event alone, so sends = `attempted` + `delivered`.
    Attempted,
    /// A delivery job reached its destination (`latency_ms`: since the notification was
    /// created).
    Delivered,
    /// A delivery job failed for good (`detail` says why).
    Failed,
    /// An escalation step after the first sent the notification on (one event per destination
    /// of the step).
    Escalated,
    /// The user acknowledged the notification (`channel`: where the ack came from, when it
    /// came through a channel; `latency_ms`: since the notification was created, when known).
    Acked,
    /// The notifications with a dedup key were resolved (their alert is over): their escalation
    /// stopped (`detail`: the key and how it was resolved).
    Resolved,
    /// A destination of the user's changed presence (`detail`: the new state).
    PresenceChanged,
    /// A user was created.
    UserCreated,
    /// A source was added, changed or removed (`detail` says which).
    SourceChanged,
    /// A destination was added, changed or removed.
    DestinationChanged,
    /// The escalation policy was set or reset.
    PolicyChanged,
    /// Input was refused: an e-mail from a sender not allowed, a malformed or hostile message,
    /// a rejected command (`detail` says why).
    Refused,
    /// A notification was kept in history without reaching anyone because a silence matched
    /// it, or its escalation stopped because a new silence did (`detail`: the silence).
    Silenced,
    /// A heartbeat source was not pinged in time: its owner is told (`notification`: the
    /// notification that says so; `detail`: since when).
    HeartbeatMissed,
    /// A notification was held in its source's open group (kept in history; told in the
    /// group's summary; `notification`: the one held, `detail`: the group).
    Grouped,
    /// A browser signed in to the web app or signed out (`detail` says which, and the
    /// browser; never the session's secret).
    SessionChanged,
    /// The user and everything of theirs were deleted: the archive's earlier events of this
    /// user can be filtered out by it.
    UserDeleted,
}

impl EventKind {
    pub const ALL: [EventKind; 21] = [
        EventKind::Ingested,
        EventKind::Matched,
        EventKind::FilteredOut,
        EventKind::Routed,
        EventKind::Attempted,
        EventKind::Delivered,
        EventKind::Failed,
        EventKind::Escalated,
        EventKind::Acked,
        EventKind::Resolved,
        EventKind::PresenceChanged,
        EventKind::UserCreated,
        EventKind::SourceChanged,
        EventKind::DestinationChanged,
        EventKind::PolicyChanged,
        EventKind::Refused,
        EventKind::Silenced,
        EventKind::HeartbeatMissed,
        EventKind::Grouped,
        EventKind::SessionChanged,
        EventKind::UserDeleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Ingested => "ingested",
            EventKind::Matched => "matched",
            EventKind::FilteredOut => "filtered_out",
            EventKind::Routed => "routed",
            EventKind::Attempted => "attempted",
            EventKind::Delivered => "delivered",
            EventKind::Failed => "failed",
            EventKind::Escalated => "escalated",
            EventKind::Acked => "acked",
            EventKind::Resolved => "resolved",
            EventKind::PresenceChanged => "presence_changed",
            EventKind::UserCreated => "user_created",
            EventKind::SourceChanged => "source_changed",
            EventKind::DestinationChanged => "destination_changed",
            EventKind::PolicyChanged => "policy_changed",
            EventKind::Refused => "refused",
            EventKind::Silenced => "silenced",
            EventKind::HeartbeatMissed => "heartbeat_missed",
            EventKind::Grouped => "grouped",
            EventKind::SessionChanged => "session_changed",
            EventKind::UserDeleted => "user_deleted",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One state change. Serialised as JSON on the bus (`<p>.events.<kind>`), one row in the
/// archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Schema version ([`EVENT_SCHEMA_VERSION`] when written).
    pub v: u16,
    /// Unique, derived from what the event records (see [`Event::new`]).
    pub id: String,
    /// When the change happened.
    pub at_ms: Millis,
    pub kind: EventKind,
    /// The service that saw the change: `ingestor`, `router`, `delivery`.
    #[serde(default)]
    pub service: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<UserId>,
    /// The silo of `user`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silo: Option<u32>,
    /// The source: the user's source id, or for a feed item before matching, the feed's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The destination id (attempts, deliveries, failures, escalations, presence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    /// For `delivered` and `acked`: milliseconds since the notification was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<i64>,
    /// For `attempted`: which send this was (1 for the first); for `escalated`: the step
    /// (1-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// What a person reading the audit log needs: why it failed, what changed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Event {
    /// An event of `kind` at `at_ms`, its id derived from `kind` and `key` (the parts that make
    /// this change unique: a notification id, a job id and its attempt, a command id…). The
    /// same change handled twice gets the same id.
    pub fn new(kind: EventKind, key: &[&str], at_ms: Millis) -> Event {
        let mut parts = Vec::with_capacity(key.len() + 1);
        parts.push(kind.as_str());
        parts.extend_from_slice(key);
        let hash = crate::digest(&parts);
        Event {
            v: EVENT_SCHEMA_VERSION,
            id: format!("e{}", &hash[..31]),
            at_ms,
            kind,
            service: String::new(),
            user: None,
            silo: None,
            source: None,
            notification: None,
            channel: None,
            destination: None,
            latency_ms: None,
            attempt: None,
            detail: String::new(),
        }
    }

    pub fn user(mut self, user: &UserId) -> Event {
        self.user = Some(user.clone());
        self
    }

    pub fn notification(mut self, id: &NotificationId) -> Event {
        self.notification = Some(id.clone());
        self
    }

    pub fn channel(mut self, channel: Option<Channel>) -> Event {
        self.channel = channel;
        self
    }

    pub fn destination(mut self, id: &str) -> Event {
        self.destination = Some(id.to_owned());
        self
    }

    pub fn source(mut self, source: Option<&str>) -> Event {
        self.source = source.map(str::to_owned);
        self
    }

    /// `latency_ms` from a creation time to `at_ms` (never negative: clocks of different
    /// machines can disagree a little).
    pub fn since(mut self, created_ms: Millis) -> Event {
        self.latency_ms = Some((self.at_ms - created_ms).max(0));
        self
    }

    pub fn attempt(mut self, n: i64) -> Event {
        self.attempt = Some(n);
        self
    }

    /// An item arrived from `source` (a feed's key, `mail`, `publish`), known there as
    /// `item_key`.
    pub fn ingested(source: &str, item_key: &str, at_ms: Millis) -> Event {
        Event::new(EventKind::Ingested, &[source, item_key], at_ms).source(Some(source))
    }

    /// `n` passed its user's filter (or had none to pass).
    pub fn matched(n: &crate::Notification) -> Event {
        Event::new(EventKind::Matched, &[n.id.as_str()], n.created_at_ms)
            .user(&n.user)
            .notification(&n.id)
            .source(n.source.id.as_deref())
    }

    /// An item (`item_key`) of `user`'s source did not pass its filter.
    pub fn filtered_out(user: &UserId, source_id: &str, item_key: &str, at_ms: Millis) -> Event {
        Event::new(
            EventKind::FilteredOut,
            &[user.as_str(), source_id, item_key],
            at_ms,
        )
        .user(user)
        .source(Some(source_id))
    }

    /// `detail`, on one line and at most 500 bytes.
    pub fn detail(mut self, detail: &str) -> Event {
        let line = crate::text::one_line(detail);
        self.detail = match line.len() {
            0..=500 => line,
            _ => crate::text::truncate(&line, 500),
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_depend_on_kind_and_key_only() {
        let a = Event::new(EventKind::Delivered, &["n1:d1"], 1);
        let b = Event::new(EventKind::Delivered, &["n1:d1"], 2);
        let c = Event::new(EventKind::Failed, &["n1:d1"], 1);
        let d = Event::new(EventKind::Delivered, &["n1", "d1"], 1);
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_ne!(a.id, d.id);
        assert_eq!(a.id.len(), 32);
    }

    #[test]
    fn kinds_round_trip_and_json_is_compact() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let e = Event::new(EventKind::Routed, &["n"], 5).detail("a\nb");
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains("latency_ms"), "{json}");
        assert!(json.contains("\"detail\":\"a b\""), "{json}");
        let back: Event = serde_json::from_str(&json).unwrap();
        assert_eq!(back, e);
        let lat = Event::new(EventKind::Delivered, &["n"], 5).since(10);
        assert_eq!(lat.latency_ms, Some(0));
    }

    #[test]
    fn a_detail_is_one_line_of_at_most_500_bytes() {
        let detail = |d: &str| Event::new(EventKind::Routed, &["n"], 5).detail(d).detail;
        assert_eq!(detail("  sent\tto\r\n sms  "), "sent to sms");
        assert_eq!(detail(""), "");
        assert_eq!(detail(&"x".repeat(500)), "x".repeat(500));
        let long = detail(&"é ".repeat(400));
        assert!(long.len() <= 500 && long.ends_with('…'), "{long}");
        assert!(long.starts_with("é é"));
    }
}
