//! Silences: a user's "not now" for the notifications that match a source, a tag or an alert
//! key, for a while. A silenced notification is kept in history, marked as such, and reaches
//! no one; an escalation already under way that a new silence matches stops.

use crate::{Invalid, Millis, Notification, Window};
use serde::{Deserialize, Serialize};

/// What a silence matches; every field given must match (at least one is).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    /// A source: its id (`s1a2b3c`) or its label (`bikes`, an ntfy topic, Alertmanager's receiver),
    /// compared without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// A tag the notification carries, compared without case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// The notification's dedup key (an alert's): exact, or a prefix ending in `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// One silence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    pub id: String,
    #[serde(flatten)]
    pub matcher: Matcher,
    /// From when it holds (a maintenance window starts later; default: at once).
    pub starts_at_ms: Millis,
    /// Until when.
    pub ends_at_ms: Millis,
    /// Why, for the person reading the list later.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    pub created_at_ms: Millis,
    /// A recurring maintenance window: between its start and end the silence holds only
    /// within the window (`Sat, Sun 22:00-06:00 Europe/Berlin`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
}

/// How many silences a user keeps (expired ones are dropped first).
pub const MAX_SILENCES: usize = 50;
/// The longest a matcher field or a comment may be, in bytes.
pub const MAX_FIELD: usize = 200;
/// The furthest ahead a silence may end.
pub const MAX_AHEAD_MS: Millis = 366 * 86_400_000;

impl Matcher {
    pub fn matches(&self, n: &Notification) -> bool {
        let source = self.source.as_deref().is_none_or(|s| {
            n.source.id.as_deref() == Some(s) || n.source.label.eq_ignore_ascii_case(s)
        });
        let tag = self
            .tag
            .as_deref()
            .is_none_or(|t| n.tags.iter().any(|x| x.eq_ignore_ascii_case(t)));
        let key = self.key.as_deref().is_none_or(|k| {
            n.dedup_key
                .as_deref()
                .is_some_and(|have| match k.strip_suffix('*') {
                    Some(prefix) => have.starts_with(prefix),
                    None => have == k,
                })
        });
        source && tag && key
    }

    /// `source bikes, tag db`: for messages and timelines.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("source", &self.source),
            ("tag", &self.tag),
            ("key", &self.key),
        ]
        .into_iter()
        .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
        .collect();
        parts.join(", ")
    }
}

impl Silence {
    /// Whether it holds at `now`.
    pub fn active(&self, now: Millis) -> bool {
        self.starts_at_ms <= now
            && now < self.ends_at_ms
            && self.window.as_ref().is_none_or(|w| w.contains(now))
    }

    /// Check a new silence at `now`; the fields are trimmed, empty ones dropped.
    pub fn validate(mut self, now: Millis) -> Result<Silence, Invalid> {
        let clean = |v: Option<String>, field: &str| -> Result<Option<String>, Invalid> {
            let v = v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
            match &v {
                Some(s) if s.len() > MAX_FIELD || s.chars().any(char::is_control) => Err(
                    Invalid::new(field, format!("at most {MAX_FIELD} printable bytes")),
                ),
                _ => Ok(v),
            }
        };
        self.matcher.source = clean(self.matcher.source.take(), "source")?;
        self.matcher.tag = clean(self.matcher.tag.take(), "tag")?;
        self.matcher.key = clean(self.matcher.key.take(), "key")?;
        if self.matcher == Matcher::default() {
            return Err(Invalid::new(
                "source",
                "a silence needs a source, a tag or a key to match",
            ));
        }
        if self.comment.len() > MAX_FIELD {
            return Err(Invalid::new(
                "comment",
                format!("at most {MAX_FIELD} bytes"),
            ));
        }
        if let Some(w) = &self.window {
            w.validate().map_err(|e| Invalid::new("window", e))?;
        }
        if self.ends_at_ms <= now || self.ends_at_ms <= self.starts_at_ms {
            return Err(Invalid::new(
                "ends_at_ms",
                "must be in the future and after starts_at_ms",
            ));
        }
        if self.ends_at_ms > now + MAX_AHEAD_MS {
            return Err(Invalid::new(
                "ends_at_ms",
                "at most a year ahead; remove the source to stop it for good",
            ));
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NotificationId, Priority, SourceKind, SourceRef, UserId};

    fn n(source_id: Option<&str>, label: &str, tags: &[&str], key: Option<&str>) -> Notification {
        Notification {
            id: NotificationId("n1".into()),
            user: UserId::parse("u1").unwrap(),
            source: SourceRef {
                kind: SourceKind::Publish,
                id: source_id.map(Into::into),
                label: label.into(),
            },
            title: "t".into(),
            body: String::new(),
            url: None,
            priority: Priority::DEFAULT,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created_at_ms: 0,
            published_at_ms: None,
            dedup_key: key.map(Into::into),
        }
    }

    fn m(source: Option<&str>, tag: Option<&str>, key: Option<&str>) -> Matcher {
        Matcher {
            source: source.map(Into::into),
            tag: tag.map(Into::into),
            key: key.map(Into::into),
        }
    }

    #[test]
    fn a_matcher_needs_every_field_it_has() {
        let item = n(Some("s1"), "Bikes", &["db", "prod"], Some("am:disk:db1"));
        assert!(m(Some("s1"), None, None).matches(&item));
        assert!(m(Some("bikes"), None, None).matches(&item), "by label");
        assert!(m(None, Some("DB"), None).matches(&item));
        assert!(m(None, None, Some("am:disk:*")).matches(&item));
        assert!(m(None, None, Some("am:disk:db1")).matches(&item));
        assert!(!m(None, None, Some("am:disk")).matches(&item), "exact");
        assert!(!m(Some("s1"), Some("staging"), None).matches(&item));
        assert!(!m(None, None, Some("*")).matches(&n(None, "x", &[], None)));
        assert_eq!(
            m(Some("bikes"), Some("db"), None).describe(),
            "source bikes, tag db"
        );
    }

    #[test]
    fn a_weekly_window_spans_midnight_in_its_time_zone() {
        let w = Window {
            days: vec!["Sat".into(), "sun".into()],
            start: "22:00".into(),
            end: "06:00".into(),
            tz: "Europe/Berlin".into(),
        };
        let at = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        // Saturday 2026-12-05 23:00 in Berlin (22:00 UTC): in
        assert!(w.contains(at("2026-12-05T22:00:00Z")));
        // Sunday 05:00 Berlin, the window that began Saturday: in
        assert!(w.contains(at("2026-12-06T04:00:00Z")));
        // Monday 05:00 Berlin: the Sunday window, still in; Monday 22:00 Berlin: out
        assert!(w.contains(at("2026-12-07T04:00:00Z")));
        assert!(!w.contains(at("2026-12-07T21:00:00Z")));
        // Friday 23:00 Berlin: out
        assert!(!w.contains(at("2026-12-04T22:00:00Z")));
        let bad = Window {
            days: vec!["someday".into()],
            ..w.clone()
        };
        assert!(bad.validate().unwrap_err().starts_with("days"));
    }

    #[test]
    fn a_silence_is_checked() {
        let s = |matcher: Matcher, ends: Millis| Silence {
            id: "x1".into(),
            matcher,
            starts_at_ms: 100,
            ends_at_ms: ends,
            comment: String::new(),
            created_at_ms: 100,
            window: None,
        };
        let ok = s(m(Some(" bikes "), Some(" "), None), 200)
            .validate(100)
            .unwrap();
        assert_eq!(ok.matcher, m(Some("bikes"), None, None));
        assert!(ok.active(150) && !ok.active(200) && !ok.active(99));
        let field = |r: Result<Silence, Invalid>| r.unwrap_err().field;
        assert_eq!(
            field(s(m(None, Some(""), None), 200).validate(100)),
            "source"
        );
        assert_eq!(
            field(s(m(Some("a"), None, None), 50).validate(100)),
            "ends_at_ms"
        );
        assert_eq!(
            field(s(m(Some("a"), None, None), MAX_AHEAD_MS + 101).validate(100)),
            "ends_at_ms"
        );
        assert_eq!(
            field(s(m(Some(&"a".repeat(201)), None, None), 200).validate(100)),
            "source"
        );
    }
}
