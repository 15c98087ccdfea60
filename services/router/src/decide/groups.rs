//! Grouping a source's notifications (`group_secs`): the first reaches the user at once and
//! opens a window; the ones after it within the window are kept in history, and when it ends
//! one summary ("5 more from bikes") goes through the policy. A burst of listings is one page,
//! not thirty.

use crate::decide::escalate::Fired;
use tocsin_model::{
    Event, EventKind, Group, Millis, Notification, NotificationId, TimelineEntry, UserRecord,
    text::utc_minute,
};

/// What grouping makes of `n` at `now`: None to route it as usual (it opened a group, or its
/// source does not group), else held in the source's open group — the `routed` entry's
/// summary and the `grouped` event.
pub(crate) fn hold(r: &mut UserRecord, n: &Notification, now: Millis) -> Option<(String, Fired)> {
    let source_id = n.source.id.as_deref()?;
    let secs = r
        .sources
        .iter()
        .find(|s| s.id == source_id)?
        .settings
        .group_secs?;
    let full = r.reach.groups.len() >= tocsin_model::Reach::MAX_GROUPS;
    match r.reach.groups.get_mut(source_id) {
        Some(g) if g.closes_ms > now => {
            g.held += 1;
            if g.titles.len() < Group::TITLES {
                g.titles.push(tocsin_model::text::truncate(&n.title, 100));
            }
            g.priority = g.priority.max(n.priority);
            let detail = format!(
                "kept in history: grouped with {} until {} (its summary tells it)",
                g.first,
                utc_minute(g.closes_ms)
            );
            let mut fired = Fired::default();
            fired.events.push(
                Event::new(EventKind::Grouped, &[n.id.as_str()], now)
                    .notification(&n.id)
                    .source(Some(source_id))
                    .since(n.created_at_ms)
                    .detail(&format!("group of {}", g.first)),
            );
            Some((detail, fired))
        }
        Some(_) => None,
        None if full => None,
        None => {
            // the first of a new window: it goes out, and the window opens
            r.reach.groups.insert(
                source_id.to_owned(),
                Group {
                    first: n.id.clone(),
                    closes_ms: now + secs as i64 * 1000,
                    held: 0,
                    titles: vec![],
                    priority: n.priority,
                    source: tocsin_model::SourceRef {
                        label: tocsin_model::text::truncate(&n.source.label, 100),
                        ..n.source.clone()
                    },
                },
            );
            None
        }
    }
}

/// The groups whose window has ended at `now`, closed: a summary for each that held
/// something, with a `grouped` entry on the notification that opened it.
pub(crate) fn close(
    r: &mut UserRecord,
    now: Millis,
) -> Vec<(Notification, (NotificationId, TimelineEntry))> {
    let due: Vec<String> = r
        .reach
        .groups
        .iter()
        .filter(|(_, g)| g.closes_ms <= now)
        .map(|(id, _)| id.clone())
        .collect();
    let mut out = Vec::new();
    for source_id in due {
        let Some(g) = r.reach.groups.remove(&source_id) else {
            continue;
        };
        if g.held == 0 {
            continue;
        }
        let more = g.held as usize - g.titles.len();
        let mut body = g.titles.join("\n");
        if more > 0 {
            body.push_str(&format!("\n… and {more} more"));
        }
        let label = if g.source.label.is_empty() {
            source_id.clone()
        } else {
            g.source.label.clone()
        };
        let n = Notification {
            id: NotificationId::for_source_notice(&r.id, &source_id, "group", g.closes_ms),
            user: r.id.clone(),
            source: g.source.clone(),
            title: format!("{} more from {label}", g.held),
            body,
            url: None,
            priority: g.priority,
            tags: vec!["group".to_owned()],
            created_at_ms: now,
            published_at_ms: None,
            dedup_key: None,
        };
        let entry = TimelineEntry {
            at_ms: now,
            kind: "grouped".into(),
            channel: None,
            detail: format!("{} more held with it, told in {}", g.held, n.id),
        };
        out.push((n, (g.first, entry)));
    }
    out
}
