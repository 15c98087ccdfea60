//! Times of day in a person's time zone: `HH:MM` and IANA zone names read with errors that
//! name the input, and the next such time after an instant (a time that falls in a DST gap is
//! taken an hour later). Quiet hours and digests use them.

use crate::Millis;
use chrono::{NaiveTime, TimeZone, Utc};

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
