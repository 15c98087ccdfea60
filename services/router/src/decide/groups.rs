//! Grouping a source's notifications (`group_secs`): the first reaches the user at once and
//! opens a window; the ones after it within the window are kept in history, and when it ends
//! one summary ("5 more from bikes") goes through the policy. A burst of listings is one page,
//! not thirty. A digest (a source's `digest`) holds every notification, the first too, until
//! its hour, its local time of day or its count comes, then lists them in one message.

use crate::decide::escalate::{Fired, Links};
use tocsin_model::{
    Digest, Event, EventKind, Group, Millis, Notification, NotificationId, TimelineEntry,
    UserRecord, text::utc_minute,
};

/// What grouping makes of `n` at `now`: None to route it as usual (it opened a group, or its
/// source does not group, or it is urgent enough to skip its digest), else held in the
/// source's open group or digest — the `routed` entry's summary and the `grouped` event.
pub(crate) fn hold(r: &mut UserRecord, n: &Notification, now: Millis) -> Option<(String, Fired)> {
    let source_id = n.source.id.as_deref()?;
    let settings = &r.sources.iter().find(|s| s.id == source_id)?.settings;
    if let Some(d) = settings.digest.clone() {
        return digest(r, source_id, &d, n, now);
    }
    let secs = settings.group_secs?;
    let full = r.reach.groups.len() >= tocsin_model::Reach::MAX_GROUPS;
    match r.reach.groups.get_mut(source_id) {
        Some(g) if g.closes_ms > now && !g.digest => {
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
            Some((
                detail,
                held(n, source_id, &format!("group of {}", g.first), now),
            ))
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
                    digest: false,
                },
            );
            None
        }
    }
}

/// `n` into its source's digest (opened by it when none is open), unless it is urgent and
/// the digest lets urgent ones through, or every slot for open groups is taken (it goes out
/// on its own). A digest whose count is reached closes at once.
fn digest(
    r: &mut UserRecord,
    source_id: &str,
    d: &Digest,
    n: &Notification,
    now: Millis,
) -> Option<(String, Fired)> {
    if d.bypassed_by(n.priority) {
        return None;
    }
    if !r.reach.groups.contains_key(source_id)
        && r.reach.groups.len() >= tocsin_model::Reach::MAX_GROUPS
    {
        return None;
    }
    let g = r
        .reach
        .groups
        .entry(source_id.to_owned())
        .or_insert_with(|| Group {
            first: n.id.clone(),
            closes_ms: d.due_after(now),
            held: 0,
            titles: vec![],
            priority: n.priority,
            source: tocsin_model::SourceRef {
                label: tocsin_model::text::truncate(&n.source.label, 100),
                ..n.source.clone()
            },
            digest: true,
        });
    g.held += 1;
    if g.titles.len() < Group::DIGEST_TITLES {
        g.titles.push(tocsin_model::text::truncate(&n.title, 100));
    }
    g.priority = g.priority.max(n.priority);
    if d.count.is_some_and(|c| g.held >= c) {
        g.closes_ms = now;
    }
    let detail = if g.closes_ms <= now {
        format!(
            "kept in history: the digest has its {}: it goes out now",
            g.held
        )
    } else {
        format!(
            "kept in history: in the digest due {} ({} so far)",
            utc_minute(g.closes_ms),
            g.held
        )
    };
    Some((
        detail,
        held(n, source_id, &format!("digest of {}", g.first), now),
    ))
}

/// The `grouped` event of `n`, held in `what`.
fn held(n: &Notification, source_id: &str, what: &str, now: Millis) -> Fired {
    let mut fired = Fired::default();
    fired.events.push(
        Event::new(EventKind::Grouped, &[n.id.as_str()], now)
            .notification(&n.id)
            .source(Some(source_id))
            .since(n.created_at_ms)
            .detail(what),
    );
    fired
}

/// Whether a digest of `r` is due at `now` (its count was reached).
pub(crate) fn digest_due(r: &UserRecord, now: Millis) -> bool {
    r.reach
        .groups
        .values()
        .any(|g| g.digest && g.closes_ms <= now)
}

/// The groups whose window has ended at `now`, closed: a summary for each that held
/// something, with a `grouped` entry on the notification that opened it. A digest's summary
/// lists what it held and links to the source's inbox.
pub(crate) fn close(
    r: &mut UserRecord,
    now: Millis,
    links: &Links,
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
        let label = if g.source.label.is_empty() {
            source_id.clone()
        } else {
            g.source.label.clone()
        };
        if g.digest {
            out.push(digest_summary(r, &source_id, g, &label, now, links));
            continue;
        }
        let n = Summary {
            id: NotificationId::for_source_notice(&r.id, &source_id, "group", g.closes_ms),
            source: g.source.clone(),
            title: format!("{} more from {label}", g.held),
            titles: &g.titles,
            bullet: "",
            held: g.held,
            url: None,
            priority: g.priority,
            tag: "group",
        }
        .notification(&r.id, now);
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

/// A closed digest's message: `Digest: 12 from Bikes`, a line per held title, how many more,
/// and where all of them are (the source's inbox, when the API's public URL is known).
fn digest_summary(
    r: &UserRecord,
    source_id: &str,
    g: Group,
    label: &str,
    now: Millis,
    links: &Links,
) -> (Notification, (NotificationId, TimelineEntry)) {
    let url = (!links.base_url.is_empty()).then(|| {
        format!(
            "{}/app/?source={source_id}",
            links.base_url.trim_end_matches('/')
        )
    });
    let n = Summary {
        // the first held item names the digest: a replayed close makes the same one
        id: NotificationId::for_source_notice(&r.id, source_id, &format!("digest {}", g.first), 0),
        source: g.source.clone(),
        title: format!("Digest: {} from {label}", g.held),
        titles: &g.titles,
        bullet: "• ",
        held: g.held,
        url,
        priority: g.priority,
        tag: "digest",
    }
    .notification(&r.id, now);
    let entry = TimelineEntry {
        at_ms: now,
        kind: "grouped".into(),
        channel: None,
        detail: format!("told with {} more in the digest {}", g.held - 1, n.id),
    };
    (n, (g.first, entry))
}

/// What a group's, a digest's or a throttle's message says: its title, the held titles a
/// line each, how many more, at the highest priority held.
pub(crate) struct Summary<'a> {
    pub(crate) id: NotificationId,
    pub(crate) source: tocsin_model::SourceRef,
    pub(crate) title: String,
    pub(crate) titles: &'a [String],
    pub(crate) bullet: &'a str,
    pub(crate) held: u32,
    pub(crate) url: Option<String>,
    pub(crate) priority: tocsin_model::Priority,
    pub(crate) tag: &'a str,
}

impl Summary<'_> {
    pub(crate) fn notification(self, user: &tocsin_model::UserId, now: Millis) -> Notification {
        let mut lines: Vec<String> = self
            .titles
            .iter()
            .map(|t| format!("{}{t}", self.bullet))
            .collect();
        let more = (self.held as usize).saturating_sub(self.titles.len());
        if more > 0 {
            lines.push(format!("… and {more} more"));
        }
        Notification {
            id: self.id,
            user: user.clone(),
            source: self.source,
            title: self.title,
            body: lines.join("\n"),
            url: self.url,
            priority: self.priority,
            tags: vec![self.tag.to_owned()],
            created_at_ms: now,
            published_at_ms: None,
            dedup_key: None,
        }
    }
}
