//! Telling the destinations an alert reached that it is over (a policy's `tell_resolved`):
//! which destinations each open alert's notification was sent to, and, when it is resolved,
//! one short "Resolved" message to each.

use crate::decide::escalate::policy_choice;
use tocsin_model::{
    DeliveryJob, JobKind, Millis, Notification, NotificationId, Priority, Told, UserRecord,
};

/// Remember the destinations `jobs` send open alerts to, for alerts whose policy tells
/// resolutions. Returns whether anything was added.
pub(crate) fn note(r: &mut UserRecord, jobs: &[DeliveryJob]) -> bool {
    let mut changed = false;
    for job in jobs.iter().filter(|j| j.kind == JobKind::Notification) {
        let n = &job.notification;
        let Some(key) = n.dedup_key.as_deref() else {
            continue;
        };
        if r.reach.open_keys.get(key).is_none_or(|(id, _)| *id != n.id) {
            continue;
        }
        let (name, _) = policy_choice(r, n);
        if !r.reach.policy_named(&name, &r.destinations).0.tell_resolved {
            continue;
        }
        let told = r.reach.told.entry(key.to_owned()).or_insert_with(|| Told {
            notification: n.id.clone(),
            title: tocsin_model::text::truncate(&n.title, Told::MAX_TITLE),
            source: tocsin_model::SourceRef {
                label: tocsin_model::text::truncate(&n.source.label, Told::MAX_TITLE),
                ..n.source.clone()
            },
            destinations: vec![],
        });
        if !told.destinations.contains(&job.destination.id)
            && told.destinations.len() < Told::MAX_DESTINATIONS
        {
            told.destinations.push(job.destination.id.clone());
            changed = true;
        }
    }
    // bounded: the alerts that opened longest ago are forgotten first
    while r.reach.told.len() > tocsin_model::Reach::MAX_TOLD {
        let oldest = r
            .reach
            .told
            .keys()
            .min_by_key(|k| r.reach.open_keys.get(*k).map_or(i64::MIN, |(_, at)| *at))
            .cloned();
        match oldest {
            Some(k) => r.reach.told.remove(&k),
            None => break,
        };
    }
    changed
}

/// Alert `key` (notification `id`) was resolved `via` something: a message to each destination
/// it reached, when its policy tells resolutions.
pub(crate) fn on_resolve(
    r: &mut UserRecord,
    key: &str,
    id: &NotificationId,
    via: &str,
    now: Millis,
) -> Vec<DeliveryJob> {
    let Some(told) = r.reach.told.remove(key) else {
        return vec![];
    };
    if told.notification != *id {
        return vec![];
    }
    let n = Notification {
        id: id.clone(),
        user: r.id.clone(),
        source: told.source,
        title: format!("Resolved: {}", told.title),
        body: format!("Resolved {via}."),
        url: None,
        priority: Priority::new(2).unwrap_or_default(),
        tags: vec!["resolved".to_owned()],
        created_at_ms: now,
        published_at_ms: None,
        dedup_key: None,
    };
    told.destinations
        .iter()
        .filter_map(|d| r.destinations.iter().find(|x| x.id == *d))
        .map(|d| DeliveryJob {
            job_id: tocsin_bus::msg_id::resolved_job(id, &d.id),
            notification: n.clone(),
            destination: d.clone(),
            kind: JobKind::Notification,
            reference: None,
            ack_url: None,
        })
        .collect()
}
