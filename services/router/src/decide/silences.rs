//! Silences in the avatar: adding one (expired ones dropped first, the count bounded, the
//! escalations it matches stopped), removing them, and what routing a silenced notification
//! records.

use crate::decide::Refusal;
use crate::decide::escalate::Fired;
use tocsin_model::{
    Event, EventKind, Millis, Notification, NotificationId, Silence, TimelineEntry, UserRecord,
    silence::MAX_SILENCES,
};

/// Add `silence` (checked at `now`): escalations under way that it matches stop, each with a
/// `silenced` entry and event.
pub(crate) fn add(r: &mut UserRecord, silence: Silence, now: Millis) -> Result<Fired, Refusal> {
    let silence = silence.validate(now).map_err(Refusal::from)?;
    r.reach
        .silences
        .retain(|s| s.ends_at_ms > now && s.id != silence.id);
    if r.reach.silences.len() >= MAX_SILENCES {
        return Err(Refusal::invalid(format!(
            "at most {MAX_SILENCES} silences per user; remove one first"
        )));
    }
    let mut fired = Fired::default();
    if silence.active(now) {
        let stopped: Vec<String> = r
            .reach
            .escalations
            .iter()
            .filter(|(_, e)| silence.matcher.matches(&e.notification))
            .map(|(id, _)| id.clone())
            .collect();
        for id in stopped {
            if let Some(esc) = r.reach.escalations.remove(&id) {
                let detail = format!(
                    "escalation stopped by silence {} ({})",
                    silence.id,
                    silence.matcher.describe()
                );
                record(&mut fired, &esc.notification, &detail, now);
            }
        }
    }
    r.reach.silences.push(silence);
    Ok(fired)
}

/// Remove silence `id`.
pub(crate) fn remove(r: &mut UserRecord, id: &str) -> Result<(), Refusal> {
    let before = r.reach.silences.len();
    r.reach.silences.retain(|s| s.id != id);
    if r.reach.silences.len() == before {
        return Err(Refusal::not_found(format!("no silence {id}")));
    }
    Ok(())
}

/// `n` was kept in history because `silence` held it: the routed entry's summary, and its
/// event.
pub(crate) fn held(n: &Notification, silence: &Silence, now: Millis, fired: &mut Fired) -> String {
    let detail = format!(
        "kept in history: silenced by {} ({}) until {}",
        silence.id,
        silence.matcher.describe(),
        tocsin_model::text::utc_minute(silence.ends_at_ms)
    );
    fired.events.push(event(n, &detail, now));
    detail
}

fn record(fired: &mut Fired, n: &Notification, detail: &str, now: Millis) {
    fired.events.push(event(n, detail, now));
    fired.entries.push((
        n.id.clone(),
        TimelineEntry {
            at_ms: now,
            kind: "silenced".into(),
            channel: None,
            detail: detail.to_owned(),
        },
    ));
}

fn event(n: &Notification, detail: &str, now: Millis) -> Event {
    let id: &NotificationId = &n.id;
    Event::new(EventKind::Silenced, &[id.as_str()], now)
        .notification(id)
        .source(n.source.id.as_deref())
        .since(n.created_at_ms)
        .detail(detail)
}
