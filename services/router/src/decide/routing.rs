//! Routing a new notification: drop duplicates and items of removed sources, record it in
//! history, and start its escalation.

use crate::decide::escalate::{self, Links};
use crate::decide::{Effects, Outcome};
use tocsin_model::{
    Event, EventKind, HistoryRecord, Millis, Notification, TimelineEntry, UserRecord,
};

pub(crate) fn route(
    record: &mut Option<UserRecord>,
    n: Notification,
    now: Millis,
    links: &Links,
) -> Effects {
    // the record keeps it while it escalates: cut to the bounds whoever produced it
    let n = n.bounded();
    let Some(r) = record else {
        return Effects {
            outcome: Outcome::NoUser,
            ..Default::default()
        };
    };
    if n.source.kind == tocsin_model::SourceKind::Feed
        && let Some(sid) = &n.source.id
        && !r.sources.iter().any(|s| &s.id == sid)
    {
        // the user removed this source while the item was on its way
        return Effects {
            outcome: Outcome::SourceRemoved,
            ..Default::default()
        };
    }
    if r.recent.contains(n.id.as_str()) {
        return Effects {
            outcome: Outcome::Duplicate,
            ..Default::default()
        };
    }
    let key = n.dedup_key.as_ref().map(|k| format!("k:{k}"));
    if let Some(k) = &key
        && r.recent.contains(k)
    {
        // the same content already reached this user through another source
        r.recent.insert(n.id.0.clone());
        return Effects {
            outcome: Outcome::DuplicateContent,
            dirty: true,
            ..Default::default()
        };
    }
    r.recent.insert(n.id.0.clone());
    if let Some(k) = key {
        r.recent.insert(k);
    }
    let (fired, detail) = escalate::start(r, &n, now, links);
    let user = n.user.clone();
    let routed = Event::new(EventKind::Routed, &[n.id.as_str()], now)
        .notification(&n.id)
        .source(n.source.id.as_deref())
        .since(n.created_at_ms)
        .detail(&detail);
    let mut fx = Effects {
        history: vec![HistoryRecord::Notification {
            notification: n,
            entry: TimelineEntry {
                at_ms: now,
                kind: "routed".into(),
                channel: None,
                detail,
            },
        }],
        events: vec![routed],
        outcome: Outcome::Routed,
        ..Default::default()
    };
    fx.take(&user, fired);
    fx
}
