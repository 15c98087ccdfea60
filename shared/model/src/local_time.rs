//! Times of day in a person's time zone: `HH:MM` and IANA zone names read with errors that
//! name the input, the next such time after an instant (a time that falls in a DST gap is
//! taken an hour later), and weekly windows. Quiet hours, digests, silences' windows and
//! sources' active hours use them.

use crate::Millis;
use chrono::{NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// `22:00` (or `22:00:30`) → the time of day; `what` names the field in the error.
pub fn time_of_day(s: &str, what: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s.trim(), "%H:%M")
        .or_else(|_| NaiveTime::parse_from_str(s.trim(), "%H:%M:%S"))
        .map_err(|_| format!("{what}: {s:?} is not a time like 22:00"))
}

/// `Europe/Berlin` → the zone; `what` names the field in the error.
pub fn zone(s: &str, what: &str) -> Result<chrono_tz::Tz, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what}: {s:?} is not an IANA time zone"))
}

/// The local time of day at `now` in `tz`.
pub fn local_time(now: Millis, tz: chrono_tz::Tz) -> Option<NaiveTime> {
    Some(
        Utc.timestamp_millis_opt(now)
            .single()?
            .with_timezone(&tz)
            .time(),
    )
}

/// The first instant after `now` (strictly) whose local time in `tz` is `at`.
pub fn next_at(now: Millis, at: NaiveTime, tz: chrono_tz::Tz) -> Option<Millis> {
    let local = Utc.timestamp_millis_opt(now).single()?.with_timezone(&tz);
    let mut day = local.date_naive();
    if local.time() >= at {
        day = day.succ_opt()?;
    }
    let wanted = day.and_time(at);
    let instant = tz
        .from_local_datetime(&wanted)
        .earliest()
        // the time falls in a DST gap: an hour later exists
        .or_else(|| {
            tz.from_local_datetime(&(wanted + chrono::Duration::hours(1)))
                .earliest()
        })?;
    Some(instant.timestamp_millis())
}

/// A weekly window in a time zone; it may span midnight (then it starts on the days named).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// `mon` … `sun`; empty: every day.
    #[serde(default)]
    pub days: Vec<String>,
    /// `HH:MM`, local time.
    pub start: String,
    /// `HH:MM`, local time; before `start`: the window ends the next day.
    pub end: String,
    /// An IANA time zone: `Europe/Berlin`, `UTC`.
    pub tz: String,
}

pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    fn parse(
        &self,
    ) -> Result<
        (
            Vec<u32>,
            chrono::NaiveTime,
            chrono::NaiveTime,
            chrono_tz::Tz,
        ),
        String,
    > {
        let start = time_of_day(&self.start, "start")?;
        let end = time_of_day(&self.end, "end")?;
        if start == end {
            return Err("start and end are the same time".into());
        }
        let tz = zone(&self.tz, "tz")?;
        let days = self
            .days
            .iter()
            .map(|d| {
                let d = d.trim().to_ascii_lowercase();
                DAYS.iter()
                    .position(|x| d.len() <= 9 && d.starts_with(x))
                    .map(|i| i as u32)
                    .ok_or_else(|| format!("days: {d:?} is not a day (mon … sun)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if days.len() > 7 || self.tz.len() > 64 || self.start.len() > 8 || self.end.len() > 8 {
            return Err("days: at most seven; tz at most 64 bytes".into());
        }
        Ok((days, start, end, tz))
    }

    /// What is wrong with it, for a person (`days: "funday" is not a day (mon … sun)`).
    pub fn validate(&self) -> Result<(), String> {
        self.parse().map(|_| ())
    }

    /// When it is next open at or after `now` (now, when it is open), within a week.
    pub fn next_open(&self, now: Millis) -> Option<Millis> {
        use chrono::{Datelike, TimeZone};
        if self.contains(now) {
            return Some(now);
        }
        let (days, start, _, tz) = self.parse().ok()?;
        let today = chrono::Utc
            .timestamp_millis_opt(now)
            .single()?
            .with_timezone(&tz)
            .date_naive();
        (0..8)
            .filter_map(|d| today.checked_add_days(chrono::Days::new(d)))
            .filter(|day| days.is_empty() || days.contains(&day.weekday().num_days_from_monday()))
            .filter_map(|day| {
                let at = day.and_time(start);
                tz.from_local_datetime(&at).earliest().or_else(|| {
                    tz.from_local_datetime(&(at + chrono::Duration::hours(1)))
                        .earliest()
                })
            })
            .map(|t| t.timestamp_millis())
            .find(|t| *t > now)
    }

    /// Whether `now` falls in the window.
    pub fn contains(&self, now: Millis) -> bool {
        use chrono::{Datelike, TimeZone};
        let Ok((days, start, end, tz)) = self.parse() else {
            return false;
        };
        let Some(local) = chrono::Utc.timestamp_millis_opt(now).single() else {
            return false;
        };
        let local = local.with_timezone(&tz);
        let t = local.time();
        let today = local.weekday().num_days_from_monday();
        let yesterday = (today + 6) % 7;
        let on = |d: u32| days.is_empty() || days.contains(&d);
        if start < end {
            on(today) && t >= start && t < end
        } else {
            (on(today) && t >= start) || (on(yesterday) && t < end)
        }
    }
}

/// `2026-12-03T07:00:00Z` in ms (tests).
#[cfg(test)]
pub(crate) fn ms(s: &str) -> Millis {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_local_time_is_today_or_tomorrow_and_survives_dst() {
        let berlin = zone("Europe/Berlin", "tz").unwrap();
        let eight = time_of_day("08:00", "at").unwrap();
        // 06:30 UTC is 07:30 in Berlin in winter: today at 08:00 local
        assert_eq!(
            next_at(ms("2026-12-03T06:30:00Z"), eight, berlin),
            Some(ms("2026-12-03T07:00:00Z"))
        );
        // exactly 08:00 local: the next day's
        assert_eq!(
            next_at(ms("2026-12-03T07:00:00Z"), eight, berlin),
            Some(ms("2026-12-04T07:00:00Z"))
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: 03:30 is taken
        let half_two = time_of_day("02:30", "at").unwrap();
        assert_eq!(
            next_at(ms("2026-03-28T12:00:00Z"), half_two, berlin),
            Some(ms("2026-03-29T01:30:00Z"))
        );
        assert_eq!(
            time_of_day("08:00:30", "at").unwrap(),
            NaiveTime::from_hms_opt(8, 0, 30).unwrap()
        );
        assert_eq!(
            time_of_day("25:00", "at").unwrap_err(),
            "at: \"25:00\" is not a time like 22:00"
        );
        assert!(zone("Mars/Olympus", "tz").unwrap_err().contains("IANA"));
    }
}
