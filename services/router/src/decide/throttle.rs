//! Throttled destinations (`throttle.per_hour`): within an hour of the first notification sent
//! to one, at most so many go out; the rest are held (kept in history, their step counted as
//! done) and go out to it as one digest when the hour ends. Urgent ones pass unless the
//! setting says otherwise.

use crate::decide::escalate::Links;
use crate::decide::groups::Summary;
use tocsin_model::{
    DeliveryJob, Destination, HistoryRecord, JobKind, Millis, Notification, NotificationId,
    Priority, Throttled, TimelineEntry, UserRecord, text::utc_minute,
};

/// Whether `n` may go to `d` now; None: yes (counted), else why it is held.
pub(crate) fn admit(
    r: &mut UserRecord,
    d: &Destination,
    n: &Notification,
    now: Millis,
) -> Option<String> {
    let t = d.throttle.as_ref()?;
    let hour = r
        .reach
        .throttled
        .entry(d.id.clone())
        .or_insert_with(|| fresh(now));
    if hour.held == 0 && now >= hour.since_ms + Throttled::HOUR_MS {
        *hour = fresh(now);
    }
    if hour.sent < t.per_hour || (t.urgent_bypass && n.priority >= Priority::URGENT) {
        hour.sent += 1;
        return None;
    }
    hour.held += 1;
    hour.first.get_or_insert_with(|| n.id.clone());
    if hour.titles.len() < Throttled::TITLES {
        hour.titles
            .push(tocsin_model::text::truncate(&n.title, 100));
    }
    hour.priority = hour.priority.max(n.priority);
    Some(format!(
        "held for {} {}: {} sent this hour, its throttle's most; in its digest at {}",
        d.channel.as_str(),
        d.id,
        hour.sent,
        utc_minute(hour.since_ms + Throttled::HOUR_MS)
    ))
}

fn fresh(now: Millis) -> Throttled {
    Throttled {
        since_ms: now,
        sent: 0,
        held: 0,
        first: None,
        titles: vec![],
        priority: Priority::new(1).unwrap_or_default(),
    }
}

/// The hours that have ended at `now`: each one that held something becomes a digest sent to
/// its destination alone (in history like any notification), and is forgotten.
pub(crate) fn close(
    r: &mut UserRecord,
    now: Millis,
    links: &Links,
) -> (Vec<HistoryRecord>, Vec<DeliveryJob>) {
    let ended: Vec<String> = r
        .reach
        .throttled
        .iter()
        .filter(|(_, h)| h.since_ms + Throttled::HOUR_MS <= now)
        .map(|(id, _)| id.clone())
        .collect();
    let (mut history, mut jobs) = (Vec::new(), Vec::new());
    for id in ended {
        let Some(hour) = r.reach.throttled.remove(&id) else {
            continue;
        };
        let (Some(first), Some(d)) = (
            hour.first.clone(),
            r.destinations.iter().find(|d| d.id == id),
        ) else {
            continue;
        };
        let n = digest(r, d, &hour, first, now, links);
        jobs.push(DeliveryJob {
            job_id: tocsin_bus::msg_id::delivery_job(&n.id, &d.id, 0),
            notification: n.clone(),
            destination: d.clone(),
            kind: JobKind::Notification,
            reference: None,
            ack_url: None,
        });
        history.push(HistoryRecord::Notification {
            entry: TimelineEntry {
                at_ms: now,
                kind: "routed".into(),
                channel: None,
                detail: format!(
                    "the throttle's digest of {} held for {} {}: to it alone",
                    hour.held,
                    d.channel.as_str(),
                    d.id
                ),
            },
            notification: n,
        });
    }
    (history, jobs)
}

/// `12 more held back (at most 10 an hour to this destination)`, the first titles, and where
/// the rest are.
fn digest(
    r: &UserRecord,
    d: &Destination,
    hour: &Throttled,
    first: NotificationId,
    now: Millis,
    links: &Links,
) -> Notification {
    let per_hour = d.throttle.as_ref().map_or(0, |t| t.per_hour);
    Summary {
        id: NotificationId::for_source_notice(&r.id, &d.id, &format!("throttle {first}"), 0),
        source: tocsin_model::SourceRef {
            kind: tocsin_model::SourceKind::Publish,
            id: None,
            label: "tocsin".into(),
        },
        title: format!(
            "{} more held back (at most {per_hour} an hour to this destination)",
            hour.held
        ),
        titles: &hour.titles,
        bullet: "• ",
        held: hour.held,
        url: (!links.base_url.is_empty())
            .then(|| format!("{}/app/", links.base_url.trim_end_matches('/'))),
        priority: hour.priority,
        tag: "digest",
    }
    .notification(&r.id, now)
}
