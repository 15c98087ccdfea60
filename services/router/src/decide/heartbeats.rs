//! Heartbeats (dead-man's switches) in the avatar: a ping moves the deadline and resolves a
//! miss; the first tick past the deadline tells the owner, once, as an alert keyed
//! `hb:<source id>` that follows the source's policy like any other.

use crate::decide::escalate::{self, Fired, span};
use tocsin_model::{
    Beat, Event, EventKind, Millis, Notification, NotificationId, Priority, SourceKind, SourceRef,
    SourceSpec, UserRecord, text::utc_minute,
};

/// The period and grace of `source_id` if it is one of the user's heartbeats.
fn spec(r: &UserRecord, source_id: &str) -> Option<(u64, u64)> {
    r.sources
        .iter()
        .find(|s| s.id == source_id)
        .and_then(|s| match s.spec {
            SourceSpec::Heartbeat {
                period_secs,
                grace_secs,
                ..
            } => Some((period_secs, grace_secs)),
            _ => None,
        })
}

fn window_ms(period_secs: u64, grace_secs: u64) -> Millis {
    ((period_secs + grace_secs) * 1000) as Millis
}

/// A heartbeat source was added or changed: its clock starts now (a change keeps the last
/// ping and moves the deadline to the new period).
pub(crate) fn added(r: &mut UserRecord, source_id: &str, now: Millis) {
    let Some((period, grace)) = spec(r, source_id) else {
        return;
    };
    let beat = r.reach.beats.entry(source_id.to_owned()).or_insert(Beat {
        last_ping_ms: now,
        due_ms: now,
        missed: None,
    });
    beat.due_ms = beat.last_ping_ms + window_ms(period, grace);
}

/// A source was removed: its heartbeat goes, and a miss still open is resolved.
pub(crate) fn removed(r: &mut UserRecord, source_id: &str, now: Millis) -> Fired {
    match r.reach.beats.remove(source_id) {
        Some(b) if b.missed.is_some() => {
            escalate::resolve(r, &Beat::key(source_id), "the heartbeat was removed", now)
        }
        _ => Fired::default(),
    }
}

/// A ping at `at_ms`: None if `source_id` is no heartbeat of the user's or the ping is older
/// than the last one; else the deadline moves and a miss is resolved.
pub(crate) fn ping(
    r: &mut UserRecord,
    source_id: &str,
    at_ms: Millis,
    now: Millis,
) -> Option<Fired> {
    let (period, grace) = spec(r, source_id)?;
    let beat = r.reach.beats.get_mut(source_id)?;
    if at_ms < beat.last_ping_ms {
        return None;
    }
    beat.last_ping_ms = at_ms;
    beat.due_ms = at_ms + window_ms(period, grace);
    let was_missed = beat.missed.take().is_some();
    if was_missed {
        return Some(escalate::resolve(
            r,
            &Beat::key(source_id),
            "heartbeat ping",
            now,
        ));
    }
    Some(Fired::default())
}

/// The heartbeats overdue at `now` that have not been told: each marked missed, with the
/// notification that tells its owner and its `heartbeat_missed` event.
pub(crate) fn overdue(r: &mut UserRecord, now: Millis) -> Vec<(Notification, Event)> {
    let due: Vec<String> = r
        .reach
        .beats
        .iter()
        .filter(|(_, b)| b.missed.is_none() && b.due_ms <= now)
        .map(|(id, _)| id.clone())
        .collect();
    let mut out = Vec::new();
    for id in due {
        let Some(source) = r.sources.iter().find(|s| s.id == id) else {
            r.reach.beats.remove(&id);
            continue;
        };
        let Some((period, grace)) = spec(r, &id) else {
            continue;
        };
        let label = if source.label.is_empty() {
            format!("heartbeat {id}")
        } else {
            source.label.clone()
        };
        let Some(beat) = r.reach.beats.get_mut(&id) else {
            continue;
        };
        let n = Notification {
            id: NotificationId::for_source_notice(&r.id, &id, "missed", beat.due_ms),
            user: r.id.clone(),
            source: SourceRef {
                kind: SourceKind::Publish,
                id: Some(id.clone()),
                label: label.clone(),
            },
            title: format!("{label}: no heartbeat"),
            body: format!(
                "No ping since {}; it is expected every {}, with {} of grace. The next ping resolves this.",
                utc_minute(beat.last_ping_ms),
                span(period),
                span(grace)
            ),
            url: None,
            priority: Priority::new(4).unwrap_or_default(),
            tags: vec!["heartbeat".to_owned()],
            created_at_ms: now,
            published_at_ms: None,
            dedup_key: Some(Beat::key(&id)),
        };
        beat.missed = Some(n.id.clone());
        let event = Event::new(EventKind::HeartbeatMissed, &[n.id.as_str()], now)
            .notification(&n.id)
            .source(Some(&id))
            .detail(&format!("no ping since {}", utc_minute(beat.last_ping_ms)));
        out.push((n, event));
    }
    out
}
