//! What an avatar keeps to reach a person: presence, the escalations under way, open alerts,
//! heartbeats, groups, silences and resolution notices, each with its bound.

use crate::escalation::Policy;
use crate::references::References;
use crate::{Destination, Millis, Notification, NotificationId, Priority};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// XMPP presence, as the user's client last announced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Show {
    Available,
    Chat,
    Away,
    Xa,
    Dnd,
    Unavailable,
}

impl Show {
    /// Whether someone showing this is at their desk.
    pub fn is_present(self) -> bool {
        matches!(self, Show::Available | Show::Chat)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Show::Available => "available",
            Show::Chat => "chat",
            Show::Away => "away",
            Show::Xa => "xa",
            Show::Dnd => "dnd",
            Show::Unavailable => "unavailable",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PresenceState {
    pub show: Show,
    pub at_ms: Millis,
}

/// A notification still being escalated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Escalation {
    pub notification: Notification,
    /// The index of the next step to fire.
    pub next_step: usize,
    /// When it fires.
    pub due_ms: Millis,
    /// Destinations the last fired step sent to, and those of them that failed for good.
    #[serde(default)]
    pub step_destinations: Vec<String>,
    #[serde(default)]
    pub step_failed: Vec<String>,
    /// Held by quiet hours (fires early when the user becomes present).
    #[serde(default)]
    pub held: bool,
    /// The short number the user acknowledges with (`ack 12`).
    pub reference: u32,
    /// The name of the policy it follows (absent: `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Delivery jobs fired for it so far (bounded by [`crate::budget::MAX_JOBS_PER_NOTIFICATION`]).
    #[serde(default)]
    pub jobs: u32,
    /// How many times its policy's steps have started again (`repeat`, an expired ack).
    #[serde(default, skip_serializing_if = "crate::escalation::is_zero")]
    pub round: u32,
    /// An open alert whose policy lets acks expire, all steps fired: kept, not due, until it
    /// is acknowledged or resolved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub awaiting_ack: bool,
    /// Acknowledged while its alert fires: `due_ms` is when the ack expires.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acked: bool,
}

/// What an open alert's notification reached, to tell them when it is resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Told {
    pub notification: NotificationId,
    /// Its title (cut to 200 characters) and source, for the message.
    pub title: String,
    pub source: crate::SourceRef,
    /// Destination ids, each once (at most [`Told::MAX_DESTINATIONS`]).
    pub destinations: Vec<String>,
}

impl Told {
    /// The longest title and source label kept, and the most destinations told per alert.
    pub const MAX_TITLE: usize = 100;
    pub const MAX_DESTINATIONS: usize = 5;
}

/// A source's open group: its first notification went out; the ones after it until
/// `closes_ms` are held for one summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Group {
    /// The notification that opened it.
    pub first: NotificationId,
    pub closes_ms: Millis,
    /// How many were held.
    pub held: u32,
    /// The first held titles (at most [`Group::TITLES`], each cut to 100 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub titles: Vec<String>,
    /// The highest priority held (the summary's).
    pub priority: Priority,
    /// The held notifications' source, for the summary.
    pub source: crate::SourceRef,
    /// A digest (its source's `digest`): nothing went out when it opened; `first` was held too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub digest: bool,
}

impl Group {
    pub const TITLES: usize = 10;
    /// A digest lists more of what it held.
    pub const DIGEST_TITLES: usize = 20;
}

/// A throttled destination's hour: it began with the first notification sent in it; past
/// the destination's `per_hour`, the rest are held and go out as one digest when it ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Throttled {
    pub since_ms: Millis,
    pub sent: u32,
    #[serde(default)]
    pub held: u32,
    /// The first held notification (it names the digest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<NotificationId>,
    /// The first held titles (at most [`Throttled::TITLES`], each cut to 100 characters).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub titles: Vec<String>,
    /// The highest priority held (the digest's).
    #[serde(default)]
    pub priority: Priority,
}

impl Throttled {
    pub const TITLES: usize = 5;
    pub const HOUR_MS: Millis = 3_600_000;

    /// When its digest is due, if it holds anything.
    pub fn due_ms(&self) -> Option<Millis> {
        (self.held > 0).then_some(self.since_ms + Self::HOUR_MS)
    }
}

/// A heartbeat source's state in its owner's avatar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Beat {
    /// The last ping (the source's creation counts as one).
    pub last_ping_ms: Millis,
    /// When it is overdue: the last ping plus the period and the grace.
    pub due_ms: Millis,
    /// Overdue and told: the notification that said so, until the next ping resolves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missed: Option<NotificationId>,
}

impl Beat {
    /// The dedup key of a heartbeat's "missed" alert.
    pub fn key(source_id: &str) -> String {
        format!("hb:{source_id}")
    }
}

/// What an avatar keeps to escalate and to take acknowledgements.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reach {
    /// The `default` policy (absent: [`Policy::default_for`] the user's destinations). Boxed:
    /// most users have none, and an active avatar holds its record in memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Box<Policy>>,
    /// The user's other policies by name (at most [`Reach::MAX_POLICIES`]); a source names
    /// the one its notifications follow. `feeds`, when the user has not written one, is the
    /// default policy without SMS.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub policies: BTreeMap<String, Policy>,
    /// Last presence per address (`xmpp:ann@example.org`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub presence: BTreeMap<String, PresenceState>,
    /// Pending escalations by notification id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub escalations: BTreeMap<String, Escalation>,
    /// Recently sent notifications by short reference, newest last (stored packed as `refs`;
    /// a record from before keeps them, with titles, as `references`).
    #[serde(
        default,
        rename = "refs",
        alias = "references",
        skip_serializing_if = "References::is_empty"
    )]
    pub references: References,
    #[serde(default)]
    pub next_reference: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until_ms: Option<Millis>,
    /// Open alerts by dedup key: the notification that paged for the key and when, until the
    /// key is resolved (at most [`Reach::MAX_OPEN_KEYS`], the oldest forgotten first).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub open_keys: BTreeMap<String, (NotificationId, Millis)>,
    /// Heartbeat sources' state by source id: when each was last pinged and when it is
    /// overdue.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub beats: BTreeMap<String, Beat>,
    /// For open alerts whose policy tells resolutions: the destinations their notification
    /// reached, to tell when the alert is resolved (by dedup key, as `open_keys`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub told: BTreeMap<String, Told>,
    /// Open groups by source id (a source's `group_secs`, or its `digest`): what is held for
    /// its summary.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
    /// Throttled destinations' current hours by destination id: how many went out, and what
    /// was held for the hour's digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub throttled: BTreeMap<String, Throttled>,
    /// Silences, at most [`crate::silence::MAX_SILENCES`]; expired ones are dropped when one
    /// is added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silences: Vec<crate::Silence>,
    /// The wake-up time last written to the timers bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_due_ms: Option<Millis>,
}

impl Reach {
    /// How many short references are remembered.
    pub const REFERENCES: usize = References::CAPACITY;
    /// How many escalations may be pending for one user; the oldest is given up past it.
    pub const MAX_ESCALATIONS: usize = 200;
    /// How many open alerts (dedup keys) a user's record holds; the oldest is forgotten past it.
    pub const MAX_OPEN_KEYS: usize = 200;
    /// How many sources' groups may be open at once; past it, a source's items go out one by
    /// one until a group closes.
    pub const MAX_GROUPS: usize = 10;
    /// How many open alerts remember where they reached (`tell_resolved`); past it, the oldest
    /// is forgotten and will not be told.
    pub const MAX_TOLD: usize = 20;

    /// How many named policies a user keeps besides `default`.
    pub const MAX_POLICIES: usize = 10;
    /// The policy every notification follows unless its source names another.
    pub const DEFAULT_POLICY: &'static str = "default";
    /// The policy feed items follow unless their source names another.
    pub const FEEDS_POLICY: &'static str = "feeds";

    /// Every policy's name: `default` and `feeds` first (they always exist), then the user's.
    pub fn policy_names(&self) -> Vec<&str> {
        let mut names = vec![Self::DEFAULT_POLICY, Self::FEEDS_POLICY];
        names.extend(
            self.policies
                .keys()
                .map(String::as_str)
                .filter(|n| *n != Self::FEEDS_POLICY && *n != Self::DEFAULT_POLICY),
        );
        names
    }

    /// The policy called `name`, and whether the user wrote it (else it is built in):
    /// `default` and `feeds` always exist; any other name the user has not defined (a policy
    /// removed while an escalation followed it) falls back to `default`.
    pub fn policy_named(&self, name: &str, destinations: &[Destination]) -> (Policy, bool) {
        if name != Self::DEFAULT_POLICY
            && let Some(p) = self.policies.get(name)
        {
            return (p.clone(), true);
        }
        let default = || {
            self.policy
                .as_deref()
                .cloned()
                .unwrap_or_else(|| Policy::default_for(destinations))
        };
        if name == Self::FEEDS_POLICY {
            return (default().without_sms(destinations), false);
        }
        (default(), self.policy.is_some())
    }

    /// Whether a policy called `name` exists (built in or the user's).
    pub fn has_policy(&self, name: &str) -> bool {
        name == Self::DEFAULT_POLICY
            || name == Self::FEEDS_POLICY
            || self.policies.contains_key(name)
    }

    /// Every policy the user wrote, `default` first.
    pub fn written_policies(&self) -> impl Iterator<Item = &Policy> {
        self.policy
            .as_deref()
            .into_iter()
            .chain(self.policies.values())
    }

    /// `id` paged for dedup key `key` at `at_ms`: it is that key's open notification.
    pub fn open_key(&mut self, key: &str, id: &NotificationId, at_ms: Millis) {
        self.open_keys.insert(key.to_owned(), (id.clone(), at_ms));
        while self.open_keys.len() > Self::MAX_OPEN_KEYS {
            let oldest = self
                .open_keys
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => {
                    self.told.remove(&k);
                    self.open_keys.remove(&k)
                }
                None => break,
            };
        }
    }

    /// The silence that holds `n` at `now`, if one does.
    pub fn silence_for(&self, n: &Notification, now: Millis) -> Option<&crate::Silence> {
        self.silences
            .iter()
            .find(|s| s.active(now) && s.matcher.matches(n))
    }

    /// Whether the user is present on any IM address.
    pub fn present(&self) -> bool {
        self.presence.values().any(|p| p.show.is_present())
    }

    /// The earliest pending escalation's due time.
    pub fn earliest_due(&self) -> Option<Millis> {
        let beats = self
            .beats
            .values()
            .filter(|b| b.missed.is_none())
            .map(|b| b.due_ms);
        let groups = self.groups.values().map(|g| g.closes_ms);
        let throttled = self.throttled.values().filter_map(Throttled::due_ms);
        self.escalations
            .values()
            .filter(|e| !e.awaiting_ack)
            .map(|e| e.due_ms)
            .chain(beats)
            .chain(groups)
            .chain(throttled)
            .min()
    }

    /// A fresh short reference for `n` (its own if it has one already).
    pub fn reference(&mut self, n: &Notification) -> u32 {
        let next = &mut self.next_reference;
        self.references.number_or_give(&n.id, || {
            *next = *next % 999 + 1;
            *next
        })
    }

    pub fn by_reference(&self, r: u32) -> Option<NotificationId> {
        self.references.by_number(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_cycle_and_are_bounded() {
        let mut r = Reach::default();
        let mut n: Notification = serde_json::from_value(serde_json::json!({
            "id": "n0", "user": "u1", "source": {"kind": "publish"}, "title": "t",
            "created_at_ms": 0
        }))
        .unwrap();
        let first = r.reference(&n);
        assert_eq!(
            r.reference(&n),
            first,
            "the same notification keeps its number"
        );
        for i in 1..300 {
            n.id = NotificationId(format!("n{i}"));
            r.reference(&n);
        }
        assert_eq!(r.references.len(), Reach::REFERENCES);
        assert_eq!(r.by_reference(300), Some(NotificationId("n299".into())));
    }

    #[test]
    fn references_of_a_record_from_before_are_read_and_written_packed() {
        let id = format!("n{}", "0f".repeat(16));
        let old: Reach = serde_json::from_value(serde_json::json!({
            "references": [[12, id, "Disk full on db1"]], "next_reference": 12
        }))
        .unwrap();
        assert_eq!(old.by_reference(12), Some(NotificationId(id.clone())));
        let json = serde_json::to_value(&old).unwrap();
        assert!(json.get("references").is_none(), "{json}");
        let packed = json["refs"].as_str().expect("packed references");
        assert_eq!(packed.len(), 24, "18 bytes in base64: {packed}");
        let back: Reach = serde_json::from_value(json).unwrap();
        assert_eq!(back, old);
    }
}
