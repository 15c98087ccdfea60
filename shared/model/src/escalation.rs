//! Escalation policies, presence and acknowledgement: the data an avatar keeps to reach a
//! person on the right channel at the right time, and the pure rules over it.
//!
//! A policy is an ordered list of steps. A step sends to some of the user's destinations
//! (chosen by id or by channel), optionally only when the user is present (or away), and then
//! waits `wait_secs` for an acknowledgement before the next step. A step that has nothing to
//! send — its condition does not hold, or the user has no such destination — ends at once, so
//! an away user is not kept waiting on the IM step.

use crate::{Channel, Destination, Millis, Notification, NotificationId, Priority};
use chrono::{NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};

/// When a step applies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    #[default]
    Always,
    /// Only while the user is present on IM (available or free for chat).
    Present,
    /// Only while the user is not present (away, extended away, do not disturb, offline).
    Away,
}

/// One step of an escalation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Destination ids to send to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
    /// Or every destination on these channels. Both empty: every destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub when: Condition,
    /// How long to wait for an acknowledgement before the next step.
    #[serde(default)]
    pub wait_secs: u64,
}

/// Quiet hours in the user's time zone: only urgent notifications escalate; the rest wait
/// until the quiet hours end or the user is next present.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuietHours {
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM`, local time; may be before `start` (the quiet hours span midnight).
    pub end: String,
    /// An IANA time zone: `Europe/Berlin`, `America/New_York`, `UTC`.
    pub tz: String,
}

/// A user's escalation policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub steps: Vec<Step>,
    /// Steps for urgent (priority 5) notifications; `steps` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urgent_steps: Option<Vec<Step>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_hours: Option<QuietHours>,
    /// Run the steps again this many times while nobody acknowledges (at most
    /// [`MAX_REPEAT`]; the last step's `wait_secs` is the pause before each round).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repeat: u32,
    /// When an alert this policy paged for is resolved, tell every destination it reached.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tell_resolved: bool,
    /// An acknowledgement of an alert this policy paged for lasts this long: if the alert is
    /// still open then, its steps start again (60 s to a week).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_expires_secs: Option<u64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Limits on a policy.
pub const MAX_STEPS: usize = 10;
pub const MAX_REPEAT: u32 = 5;
pub const MAX_WAIT_SECS: u64 = 7 * 24 * 3600;

impl Policy {
    /// The policy a user without one gets: every destination but SMS at once (IM only while
    /// present); SMS after five minutes without an acknowledgement.
    pub fn default_for(destinations: &[Destination]) -> Policy {
        let non_sms: Vec<Channel> = [
            Channel::Email,
            Channel::Push,
            Channel::Webhook,
            Channel::Sink,
        ]
        .into_iter()
        .filter(|c| destinations.iter().any(|d| d.channel == *c))
        .collect();
        let has = |c: Channel| destinations.iter().any(|d| d.channel == c);
        let mut steps = Vec::new();
        if has(Channel::Xmpp) {
            steps.push(Step {
                channels: vec![Channel::Xmpp],
                when: Condition::Present,
                ..Default::default()
            });
        }
        if !non_sms.is_empty() {
            steps.push(Step {
                channels: non_sms,
                ..Default::default()
            });
        }
        if has(Channel::Sms) {
            if let Some(last) = steps.last_mut() {
                last.wait_secs = 300;
            }
            steps.push(Step {
                channels: vec![Channel::Sms],
                ..Default::default()
            });
        }
        Policy {
            steps,
            ..Default::default()
        }
    }

    /// This policy with every SMS destination taken out: steps that send only SMS are
    /// dropped, a step that sends to every destination sends to every one but SMS. What the
    /// built-in `feeds` policy is made of, so a listing never pages anyone by text message.
    pub fn without_sms(&self, destinations: &[Destination]) -> Policy {
        let strip = |steps: &[Step]| -> Vec<Step> {
            steps
                .iter()
                .filter_map(|s| {
                    let every = s.destinations.is_empty() && s.channels.is_empty();
                    let channels: Vec<Channel> = if every {
                        Channel::ALL
                            .into_iter()
                            .filter(|c| *c != Channel::Sms)
                            .collect()
                    } else {
                        s.channels
                            .iter()
                            .copied()
                            .filter(|c| *c != Channel::Sms)
                            .collect()
                    };
                    let ids: Vec<String> = s
                        .destinations
                        .iter()
                        .filter(|id| {
                            destinations
                                .iter()
                                .any(|d| &d.id == *id && d.channel != Channel::Sms)
                        })
                        .cloned()
                        .collect();
                    (!channels.is_empty() || !ids.is_empty()).then_some(Step {
                        destinations: ids,
                        channels,
                        when: s.when,
                        wait_secs: s.wait_secs,
                    })
                })
                .collect()
        };
        Policy {
            repeat: self.repeat,
            tell_resolved: self.tell_resolved,
            ack_expires_secs: self.ack_expires_secs,
            steps: strip(&self.steps),
            urgent_steps: self
                .urgent_steps
                .as_deref()
                .map(strip)
                .filter(|s| !s.is_empty()),
            quiet_hours: self.quiet_hours.clone(),
        }
    }

    /// Whether any step names destination `id`.
    pub fn names_destination(&self, id: &str) -> bool {
        self.steps
            .iter()
            .chain(self.urgent_steps.iter().flatten())
            .any(|s| s.destinations.iter().any(|d| d == id))
    }

    /// Check a policy's name: 1-32 of `a-z 0-9 - _`, starting with a letter or digit.
    pub fn validate_name(name: &str) -> Result<(), String> {
        let ok = (1..=32).contains(&name.len())
            && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{name:?} is not a policy name: 1-32 of a-z, 0-9, - and _"
            ))
        }
    }

    /// The steps for a notification of `priority`.
    pub fn steps_for(&self, priority: Priority) -> &[Step] {
        match &self.urgent_steps {
            Some(s) if priority >= Priority::URGENT => s,
            _ => &self.steps,
        }
    }

    /// Check a policy against the user's destinations; every problem is listed, each naming
    /// its field (`steps[0].destinations`).
    pub fn problems(&self, destinations: &[Destination]) -> Vec<crate::Invalid> {
        use crate::Invalid;
        let mut p = Vec::new();
        let mut check = |name: &str, steps: &[Step]| {
            if steps.is_empty() {
                p.push(Invalid::new(name, "at least one step is needed"));
            }
            if steps.len() > MAX_STEPS {
                p.push(Invalid::new(name, format!("at most {MAX_STEPS} steps")));
            }
            for (i, s) in steps.iter().enumerate() {
                for d in &s.destinations {
                    if !destinations.iter().any(|x| &x.id == d) {
                        p.push(Invalid::new(
                            &format!("{name}[{i}].destinations"),
                            format!("no destination {d}"),
                        ));
                    }
                }
                if s.wait_secs > MAX_WAIT_SECS {
                    p.push(Invalid::new(
                        &format!("{name}[{i}].wait_secs"),
                        format!("at most {MAX_WAIT_SECS} (a week)"),
                    ));
                }
            }
        };
        check("steps", &self.steps);
        if let Some(u) = &self.urgent_steps {
            check("urgent_steps", u);
        }
        if let Some(t) = self.ack_expires_secs
            && !(60..=MAX_WAIT_SECS).contains(&t)
        {
            p.push(Invalid::new(
                "ack_expires_secs",
                format!("60-{MAX_WAIT_SECS} seconds (a minute to a week)"),
            ));
        }
        if self.repeat > MAX_REPEAT {
            p.push(Invalid::new("repeat", format!("at most {MAX_REPEAT}")));
        }
        if self.repeat > 0 && self.steps.last().is_none_or(|s| s.wait_secs == 0) {
            p.push(Invalid::new(
                "repeat",
                "the last step needs a wait_secs: the pause before the steps run again",
            ));
        }
        if let Some(q) = &self.quiet_hours
            && let Err(e) = q.parse()
        {
            p.push(Invalid::new("quiet_hours", e));
        }
        p
    }
}

impl Step {
    /// The destinations this step names, in the user's order.
    pub fn targets<'a>(&self, destinations: &'a [Destination]) -> Vec<&'a Destination> {
        destinations
            .iter()
            .filter(|d| {
                (self.destinations.is_empty() && self.channels.is_empty())
                    || self.destinations.contains(&d.id)
                    || self.channels.contains(&d.channel)
            })
            .collect()
    }
}

impl QuietHours {
    fn parse(&self) -> Result<(NaiveTime, NaiveTime, chrono_tz::Tz), String> {
        let t = |s: &str, what: &str| {
            NaiveTime::parse_from_str(s.trim(), "%H:%M")
                .map_err(|_| format!("{what}: {s:?} is not a time like 22:00"))
        };
        let start = t(&self.start, "start")?;
        let end = t(&self.end, "end")?;
        let tz: chrono_tz::Tz = self
            .tz
            .trim()
            .parse()
            .map_err(|_| format!("tz: {:?} is not an IANA time zone", self.tz))?;
        if start == end {
            return Err("start and end are the same time".into());
        }
        Ok((start, end, tz))
    }

    /// If `now` falls in the quiet hours, when they end.
    pub fn ends_at(&self, now: Millis) -> Option<Millis> {
        let (start, end, tz) = self.parse().ok()?;
        let local = Utc.timestamp_millis_opt(now).single()?.with_timezone(&tz);
        let t = local.time();
        let quiet = if start < end {
            t >= start && t < end
        } else {
            t >= start || t < end
        };
        if !quiet {
            return None;
        }
        // the next local `end` after now
        let mut day = local.date_naive();
        if t >= end {
            day = day.succ_opt()?;
        }
        let end_local = day.and_time(end);
        let at = tz
            .from_local_datetime(&end_local)
            .earliest()
            // the end falls in a DST gap: an hour later exists
            .or_else(|| {
                tz.from_local_datetime(&(end_local + chrono::Duration::hours(1)))
                    .earliest()
            })?;
        Some(at.timestamp_millis())
    }
}

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
    #[serde(default, skip_serializing_if = "is_zero")]
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
}

impl Group {
    pub const TITLES: usize = 10;
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
    /// The `default` policy (absent: [`Policy::default_for`] the user's destinations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Policy>,
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
    /// Recently sent notifications by short reference, newest last.
    #[serde(default, skip_serializing_if = "VecDeque::is_empty")]
    pub references: VecDeque<(u32, NotificationId, String)>,
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
    /// Open groups by source id (a source's `group_secs`): what is held for its summary.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, Group>,
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
    pub const REFERENCES: usize = 100;
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
                .clone()
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
        self.policy.iter().chain(self.policies.values())
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
        self.escalations
            .values()
            .filter(|e| !e.awaiting_ack)
            .map(|e| e.due_ms)
            .chain(beats)
            .chain(groups)
            .min()
    }

    /// A fresh short reference for `n`, remembered with its title.
    pub fn reference(&mut self, n: &Notification) -> u32 {
        if let Some((r, _, _)) = self.references.iter().find(|(_, id, _)| *id == n.id) {
            return *r;
        }
        self.next_reference = self.next_reference % 999 + 1;
        let r = self.next_reference;
        self.references.retain(|(x, _, _)| *x != r);
        self.references
            .push_back((r, n.id.clone(), crate::text::truncate(&n.title, 80)));
        while self.references.len() > Self::REFERENCES {
            self.references.pop_front();
        }
        r
    }

    pub fn by_reference(&self, r: u32) -> Option<&NotificationId> {
        self.references
            .iter()
            .find(|(x, _, _)| *x == r)
            .map(|(_, id, _)| id)
    }
}

/// What a person may write back over IM or SMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyCommand {
    /// `ack`/`ok` (the latest), `ack 12`, `ack all`.
    Ack(AckTarget),
    Help,
    List,
    /// `mute 1h`, `mute 30m`, `mute 2d`.
    Mute(u64),
    Unmute,
    /// `silence 2h bikes`, `silence bikes` (an hour): the source (id or label) for a while.
    Silence {
        secs: u64,
        source: String,
    },
    /// `unsilence bikes`, `unsilence` (every silence).
    Unsilence(Option<String>),
    Status,
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckTarget {
    Latest,
    Reference(u32),
    All,
}

impl ReplyCommand {
    pub const HELP: &'static str = "Commands: ack (the latest), ack 12, ack all, list, mute 1h, unmute, silence 2h <source>, unsilence <source>, status, help";

    pub fn parse(text: &str) -> ReplyCommand {
        let t = text.trim().to_ascii_lowercase();
        let mut words = t.split_whitespace();
        let first = words.next().unwrap_or("");
        if first == "silence" || first == "unsilence" {
            let rest: Vec<&str> = words.collect();
            if first == "unsilence" {
                return ReplyCommand::Unsilence((!rest.is_empty()).then(|| rest.join(" ")));
            }
            let (secs, source) = match rest.split_first() {
                Some((d, tail)) if d.starts_with(|c: char| c.is_ascii_digit()) => {
                    (parse_duration(d), tail.join(" "))
                }
                _ => (Some(3600), rest.join(" ")),
            };
            return match secs {
                Some(secs) if !source.is_empty() => ReplyCommand::Silence { secs, source },
                _ => ReplyCommand::Unknown(text.trim().to_owned()),
            };
        }
        let second = words.next();
        let rest = words.next();
        match (first, second, rest) {
            ("ack" | "ok" | "k" | "👍", None, _) => ReplyCommand::Ack(AckTarget::Latest),
            ("ack" | "ok", Some("all"), None) => ReplyCommand::Ack(AckTarget::All),
            ("ack" | "ok", Some(n), None) => match n.trim_start_matches('#').parse() {
                Ok(r) => ReplyCommand::Ack(AckTarget::Reference(r)),
                Err(_) => ReplyCommand::Unknown(text.trim().to_owned()),
            },
            ("help" | "?", None, _) => ReplyCommand::Help,
            ("list", None, _) => ReplyCommand::List,
            ("unmute", None, _) => ReplyCommand::Unmute,
            ("status", None, _) => ReplyCommand::Status,
            ("mute", Some(d), None) => match parse_duration(d) {
                Some(s) => ReplyCommand::Mute(s),
                None => ReplyCommand::Unknown(text.trim().to_owned()),
            },
            ("mute", None, _) => ReplyCommand::Mute(3600),
            _ => ReplyCommand::Unknown(text.trim().to_owned()),
        }
    }
}

/// `90s`, `30m`, `1h`, `2d` (at most 30 days) in seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (secs > 0 && secs <= 30 * 86400).then_some(secs)
}

/// The signature in an acknowledgement link: HMAC-SHA256 keyed by a secret derived from the
/// user's token hash, over the notification id (32 hex characters). Only the avatar and the
/// API, which both read the user's record, can make or check one.
pub fn ack_signature(token_hash: &str, notification: &NotificationId) -> String {
    use hmac::{Hmac, Mac};
    let key = crate::digest(&["ack-link-key", token_hash]);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(b"ack\0");
    mac.update(notification.as_str().as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..16])
}

/// Constant-time check of a link signature.
pub fn ack_signature_valid(token_hash: &str, notification: &NotificationId, sig: &str) -> bool {
    let want = ack_signature(token_hash, notification);
    want.len() == sig.len()
        && want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(id: &str, channel: Channel) -> Destination {
        Destination {
            id: id.into(),
            channel,
            address: String::new(),
            secret: None,
            label: String::new(),
            push_format: None,
            created_at_ms: 0,
        }
    }

    #[test]
    fn default_policy_sends_im_and_the_rest_then_sms() {
        let ds = [
            dest("x", Channel::Xmpp),
            dest("s", Channel::Sms),
            dest("e", Channel::Email),
        ];
        let p = Policy::default_for(&ds);
        assert_eq!(p.steps.len(), 3);
        assert_eq!(p.steps[0].when, Condition::Present);
        assert_eq!(p.steps[0].wait_secs, 0);
        assert_eq!(p.steps[1].channels, [Channel::Email]);
        assert_eq!(p.steps[1].wait_secs, 300);
        assert_eq!(p.steps[2].channels, [Channel::Sms]);
        // webhooks only: one step, everything at once
        let p = Policy::default_for(&[dest("w", Channel::Webhook)]);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].targets(&[dest("w", Channel::Webhook)]).len(), 1);
        assert!(p.problems(&[]).is_empty());
    }

    #[test]
    fn the_feeds_policy_is_the_default_without_sms() {
        let ds = [
            dest("x", Channel::Xmpp),
            dest("s", Channel::Sms),
            dest("e", Channel::Email),
        ];
        let every = Step {
            wait_secs: 60,
            ..Default::default()
        };
        let by_id = Step {
            destinations: vec!["s".into(), "e".into()],
            ..Default::default()
        };
        let sms_only = Step {
            channels: vec![Channel::Sms],
            ..Default::default()
        };
        let p = Policy {
            steps: vec![every, sms_only.clone(), by_id],
            urgent_steps: Some(vec![sms_only]),
            ..Default::default()
        };
        let f = p.without_sms(&ds);
        assert_eq!(f.steps.len(), 2, "the SMS-only step is gone: {f:?}");
        let names =
            |s: &Step| -> Vec<String> { s.targets(&ds).iter().map(|d| d.id.clone()).collect() };
        assert_eq!(names(&f.steps[0]), ["x", "e"]);
        assert_eq!(f.steps[0].wait_secs, 60);
        assert_eq!(names(&f.steps[1]), ["e"]);
        assert_eq!(
            f.urgent_steps, None,
            "urgent ones fall back to the steps left"
        );
        // and the built-in `feeds` is made of the user's default
        let reach = Reach {
            policy: Some(p.clone()),
            ..Default::default()
        };
        assert_eq!(reach.policy_named("feeds", &ds), (f, false));
        assert_eq!(reach.policy_named("default", &ds), (p.clone(), true));
        assert_eq!(reach.policy_named("gone", &ds), (p, true));
        assert!(reach.has_policy("feeds") && !reach.has_policy("gone"));
    }

    #[test]
    fn policy_problems_name_the_field() {
        let p = Policy {
            steps: vec![Step {
                destinations: vec!["nope".into()],
                wait_secs: MAX_WAIT_SECS + 1,
                ..Default::default()
            }],
            urgent_steps: Some(vec![]),
            quiet_hours: Some(QuietHours {
                start: "25:00".into(),
                end: "07:00".into(),
                tz: "Mars/Olympus".into(),
            }),
            ..Default::default()
        };
        let problems = p.problems(&[]);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].to_string().starts_with("steps[0].destinations"));
        assert!(problems[2].to_string().starts_with("urgent_steps"));
        assert!(problems[3].to_string().starts_with("quiet_hours: start"));
    }

    #[test]
    fn quiet_hours_across_midnight_in_a_time_zone() {
        let q = QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
            tz: "Europe/Berlin".into(),
        };
        // 2026-01-15 21:30 UTC = 22:30 in Berlin (CET, +1): quiet until 06:00 UTC next day
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            q.ends_at(at("2026-01-15T21:30:00Z")),
            Some(at("2026-01-16T06:00:00Z"))
        );
        // 05:00 Berlin the same night
        assert_eq!(
            q.ends_at(at("2026-01-16T04:00:00Z")),
            Some(at("2026-01-16T06:00:00Z"))
        );
        assert_eq!(q.ends_at(at("2026-01-16T12:00:00Z")), None);
        // summer time (+2)
        assert_eq!(
            q.ends_at(at("2026-07-15T21:00:00Z")),
            Some(at("2026-07-16T05:00:00Z"))
        );
    }

    #[test]
    fn replies_parse() {
        use AckTarget::*;
        assert_eq!(ReplyCommand::parse(" OK "), ReplyCommand::Ack(Latest));
        assert_eq!(
            ReplyCommand::parse("ack 12"),
            ReplyCommand::Ack(Reference(12))
        );
        assert_eq!(
            ReplyCommand::parse("ack #7"),
            ReplyCommand::Ack(Reference(7))
        );
        assert_eq!(ReplyCommand::parse("ack all"), ReplyCommand::Ack(All));
        assert_eq!(ReplyCommand::parse("mute 1h"), ReplyCommand::Mute(3600));
        assert_eq!(ReplyCommand::parse("mute 30m"), ReplyCommand::Mute(1800));
        assert!(matches!(
            ReplyCommand::parse("mute forever"),
            ReplyCommand::Unknown(_)
        ));
        assert_eq!(ReplyCommand::parse("status"), ReplyCommand::Status);
        assert_eq!(
            ReplyCommand::parse("Silence 2h Road Bikes"),
            ReplyCommand::Silence {
                secs: 7200,
                source: "road bikes".into()
            }
        );
        assert_eq!(
            ReplyCommand::parse("silence bikes"),
            ReplyCommand::Silence {
                secs: 3600,
                source: "bikes".into()
            }
        );
        for bad in ["silence", "silence 2h", "silence 99y bikes"] {
            assert!(
                matches!(ReplyCommand::parse(bad), ReplyCommand::Unknown(_)),
                "{bad}"
            );
        }
        assert_eq!(
            ReplyCommand::parse("unsilence bikes"),
            ReplyCommand::Unsilence(Some("bikes".into()))
        );
        assert_eq!(
            ReplyCommand::parse("unsilence"),
            ReplyCommand::Unsilence(None)
        );
        assert!(matches!(
            ReplyCommand::parse("ack 12 please"),
            ReplyCommand::Unknown(_)
        ));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("31d"), None);
    }

    #[test]
    fn ack_links_are_signed_per_user() {
        let n = NotificationId("n1".into());
        let s = ack_signature("hash-a", &n);
        assert_eq!(s.len(), 32);
        assert!(ack_signature_valid("hash-a", &n, &s));
        assert!(!ack_signature_valid("hash-b", &n, &s));
        assert!(!ack_signature_valid(
            "hash-a",
            &NotificationId("n2".into()),
            &s
        ));
        assert!(!ack_signature_valid("hash-a", &n, &s[..31]));
    }

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
        assert_eq!(r.by_reference(300), Some(&NotificationId("n299".into())));
    }
}
