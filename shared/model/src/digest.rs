//! Digests: a source's notifications gathered into one message instead of one each — every
//! hour, every day at a local time, or when enough have gathered — and a destination's
//! throttle, whose overflow becomes such a message. When each is due.

use crate::{Invalid, Millis, Priority, local_time};
use serde::{Deserialize, Serialize};

/// When a digest goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestEvery {
    /// At the next full hour (in `tz`) after its first item.
    Hour,
    /// Daily at `at` (local time in `tz`).
    Day,
    /// When `count` have gathered (or a day after the first, if fewer come).
    Count,
}

/// A source's digest (its `settings.digest`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub every: DigestEvery,
    /// `HH:MM`, local time: when a daily digest goes out (default 08:00).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// An IANA time zone (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tz: Option<String>,
    /// `count`: how many make a digest; `hour` and `day`: it goes out early when this many
    /// have gathered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Urgent notifications (priority 5) go out at once, outside the digest (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub urgent_bypass: bool,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Digest {
    /// The most a digest's `count` may be.
    pub const MAX_COUNT: u32 = 500;
    /// How long a `count` digest waits for its count at most.
    pub const COUNT_WAIT_MS: Millis = 86_400_000;

    pub fn validate(&self) -> Result<(), Invalid> {
        let err = |field: &str, msg: String| Invalid::new(&format!("digest.{field}"), msg);
        if let Some(at) = &self.at {
            local_time::time_of_day(at, "at").map_err(|e| err("at", e))?;
        }
        if let Some(tz) = &self.tz {
            local_time::zone(tz, "tz").map_err(|e| err("tz", e))?;
        }
        match self.count {
            Some(n) if !(2..=Self::MAX_COUNT).contains(&n) => {
                return Err(err("count", format!("2-{}", Self::MAX_COUNT)));
            }
            None if self.every == DigestEvery::Count => {
                return Err(err("count", "needed: how many make a digest".into()));
            }
            _ => {}
        }
        if self.at.is_some() && self.every != DigestEvery::Day {
            return Err(err("at", "only a daily digest has a time".into()));
        }
        Ok(())
    }

    /// Whether `priority` goes out at once rather than into the digest.
    pub fn bypassed_by(&self, priority: Priority) -> bool {
        self.urgent_bypass && priority >= Priority::URGENT
    }

    /// When a digest whose first item came at `now` goes out (unless its count fills first).
    pub fn due_after(&self, now: Millis) -> Millis {
        let tz = self
            .tz
            .as_deref()
            .and_then(|t| local_time::zone(t, "tz").ok())
            .unwrap_or(chrono_tz::UTC);
        let next = match self.every {
            DigestEvery::Hour => {
                // the next full hour in the zone (a zone may be offset by 30 or 45 minutes)
                local_time::local_time(now, tz).map(|t| {
                    use chrono::Timelike;
                    let into_hour = i64::from(t.minute()) * 60_000
                        + i64::from(t.second()) * 1000
                        + i64::from(t.nanosecond() / 1_000_000);
                    now - into_hour + 3_600_000
                })
            }
            DigestEvery::Day => {
                let at = self
                    .at
                    .as_deref()
                    .and_then(|a| local_time::time_of_day(a, "at").ok())
                    .unwrap_or(chrono::NaiveTime::from_hms_opt(8, 0, 0).expect("08:00"));
                local_time::next_at(now, at, tz)
            }
            DigestEvery::Count => Some(now + Self::COUNT_WAIT_MS),
        };
        next.unwrap_or(now + 3_600_000)
    }
}

/// A destination's throttle: at most `per_hour` notifications an hour; the rest of the hour
/// go out as one digest when it ends (urgent ones excepted, as the setting says).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Throttle {
    /// 0: everything to this destination is an hourly digest.
    pub per_hour: u32,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub urgent_bypass: bool,
}

impl Throttle {
    pub const MAX_PER_HOUR: u32 = 10_000;

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.per_hour > Self::MAX_PER_HOUR {
            return Err(Invalid::new(
                "throttle.per_hour",
                format!("0-{}", Self::MAX_PER_HOUR),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local_time::ms;

    fn digest(json: &str) -> Digest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_digest_is_due_at_the_next_hour_or_local_time() {
        let hourly = digest(r#"{"every": "hour"}"#);
        assert!(hourly.urgent_bypass && hourly.validate().is_ok());
        assert_eq!(
            hourly.due_after(ms("2026-12-03T10:17:05Z")),
            ms("2026-12-03T11:00:00Z")
        );
        // India is 5:30 ahead: its full hours fall at :30 UTC
        let india = digest(r#"{"every": "hour", "tz": "Asia/Kolkata"}"#);
        assert_eq!(
            india.due_after(ms("2026-12-03T10:17:05Z")),
            ms("2026-12-03T10:30:00Z")
        );
        let daily = digest(r#"{"every": "day", "at": "08:00", "tz": "America/New_York"}"#);
        assert_eq!(
            daily.due_after(ms("2026-12-03T14:00:00Z")),
            ms("2026-12-04T13:00:00Z")
        );
        let count = digest(r#"{"every": "count", "count": 5}"#);
        assert_eq!(count.due_after(0), Digest::COUNT_WAIT_MS);
        assert!(count.bypassed_by(Priority::URGENT));
        assert!(!count.bypassed_by(Priority::DEFAULT));
    }

    #[test]
    fn a_bad_digest_names_its_field() {
        for (json, field) in [
            (r#"{"every": "count"}"#, "digest.count"),
            (r#"{"every": "day", "at": "8 am"}"#, "digest.at"),
            (r#"{"every": "hour", "at": "08:00"}"#, "digest.at"),
            (r#"{"every": "day", "tz": "Mars/Olympus"}"#, "digest.tz"),
            (r#"{"every": "hour", "count": 1}"#, "digest.count"),
        ] {
            assert_eq!(digest(json).validate().unwrap_err().field, field, "{json}");
        }
        let t = Throttle {
            per_hour: 20_000,
            urgent_bypass: true,
        };
        assert_eq!(t.validate().unwrap_err().field, "throttle.per_hour");
    }
}
