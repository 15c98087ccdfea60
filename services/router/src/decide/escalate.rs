//! Escalation, presence, acknowledgement and resolution: the avatar's rules for reaching a
//! person, pure like the rest of the avatar's decisions (what a person writes back is in
//! `replies.rs`). The earliest pending due time becomes a durable timer (`timers.rs`).

use tocsin_model::{
    Channel, DeliveryJob, Destination, Escalation, Event, EventKind, JobKind, Millis, Notification,
    NotificationId, Policy, PresenceState, Priority, Reach, Show, SourceKind, Step, TimelineEntry,
    UserRecord, ack_signature, budget,
};

/// What an escalation step (or a reply) produced.
#[derive(Debug, Default, PartialEq)]
pub struct Fired {
    pub jobs: Vec<DeliveryJob>,
    /// Timeline entries, each for its notification.
    pub entries: Vec<(NotificationId, TimelineEntry)>,
    /// Events for the archive (`escalated`, `acked`, `presence_changed`).
    pub events: Vec<Event>,
}

/// Where signed acknowledgement links point (the API's public URL; empty: no links).
#[derive(Clone, Debug, Default)]
pub struct Links {
    pub base_url: String,
}

pub(crate) fn entry(
    at_ms: Millis,
    kind: &str,
    channel: Option<Channel>,
    detail: String,
) -> TimelineEntry {
    TimelineEntry {
        at_ms,
        kind: kind.into(),
        channel,
        detail,
    }
}

/// The name of the policy `n` follows, and why: its source's choice, else `feeds` for a feed
/// item, else `default`.
pub(crate) fn policy_choice(r: &UserRecord, n: &Notification) -> (String, &'static str) {
    if let Some(p) = source_of(r, n).and_then(|s| s.settings.policy.clone()) {
        return (p, " (the source's setting)");
    }
    if n.source.kind == SourceKind::Feed {
        (Reach::FEEDS_POLICY.to_owned(), " (what feeds follow)")
    } else {
        (Reach::DEFAULT_POLICY.to_owned(), "")
    }
}

/// The policy an escalation follows.
fn policy_of(r: &UserRecord, esc: &Escalation) -> Policy {
    let name = esc.policy.as_deref().unwrap_or(Reach::DEFAULT_POLICY);
    r.reach.policy_named(name, &r.destinations).0
}

/// The user's source that `n` came from, if it came from one they still have.
pub(crate) fn source_of<'a>(
    r: &'a UserRecord,
    n: &Notification,
) -> Option<&'a tocsin_model::Source> {
    let id = n.source.id.as_deref()?;
    r.sources.iter().find(|s| s.id == id)
}

fn urgent(n: &Notification) -> bool {
    n.priority >= Priority::URGENT
}

/// Start reaching the user about a freshly routed notification. Returns the jobs of the
/// first step(s) and a human summary for the `routed` entry.
pub fn start(r: &mut UserRecord, n: &Notification, now: Millis, links: &Links) -> (Fired, String) {
    let mut fired = Fired::default();
    if r.destinations.is_empty() {
        return (fired, "kept in history (no destinations)".into());
    }
    if let Some(s) = r.reach.silence_for(n, now).cloned() {
        // a silence is asked for by name: it holds urgent notifications too
        let detail = crate::decide::silences::held(n, &s, now, &mut fired);
        return (fired, detail);
    }
    if let Some(until) = r.reach.muted_until_ms
        && until > now
        && !urgent(n)
    {
        return (
            fired,
            format!("kept in history: muted until {}", clock(until)),
        );
    }
    if let Some(until) = source_of(r, n).and_then(|s| s.settings.muted_until_ms)
        && until > now
        && !urgent(n)
    {
        return (
            fired,
            format!(
                "kept in history: this source is muted until {}",
                clock(until)
            ),
        );
    }
    let (name, why) = policy_choice(r, n);
    let reference = r.reach.reference(n);
    let mut esc = Escalation {
        notification: n.clone(),
        next_step: 0,
        due_ms: now,
        step_destinations: vec![],
        step_failed: vec![],
        held: false,
        reference,
        jobs: 0,
        policy: (name != Reach::DEFAULT_POLICY).then(|| name.clone()),
        round: 0,
        awaiting_ack: false,
        acked: false,
    };
    let policy = policy_of(r, &esc);
    let named = format!("policy {name}{why}");
    if let Some(q) = &policy.quiet_hours
        && !urgent(n)
        && let Some(end) = q.ends_at(now)
    {
        esc.due_ms = end;
        esc.held = true;
        keep(&mut r.reach, esc, &mut fired, now);
        return (
            fired,
            format!(
                "{named}: held for quiet hours until {} (or until you are present)",
                clock(end)
            ),
        );
    }
    let done = fire(r, &mut esc, &policy, now, links, &mut fired);
    let throttled = fired.entries.iter().any(|(_, e)| e.kind == "throttled");
    let summary = if fired.jobs.is_empty() && throttled {
        format!("{named}: held for the digest of a throttled destination")
    } else if fired.jobs.is_empty() {
        format!("{named}: kept in history (no step of the policy applies)")
    } else {
        let to: Vec<String> = fired
            .jobs
            .iter()
            .map(|j| format!("{} {}", j.destination.channel.as_str(), j.destination.id))
            .collect();
        let mut s = format!("{named}: to {}", to.join(", "));
        if !done {
            s.push_str(&format!(
                "; escalating in {}s unless acknowledged (ref {reference})",
                (esc.due_ms - now) / 1000
            ));
        }
        s
    };
    if !done {
        keep(&mut r.reach, esc, &mut fired, now);
    }
    (fired, summary)
}

/// Remember a pending escalation, giving up the oldest past the count or byte budget.
fn keep(reach: &mut Reach, esc: Escalation, fired: &mut Fired, now: Millis) {
    reach.escalations.insert(esc.notification.id.0.clone(), esc);
    let mut held: usize = reach
        .escalations
        .values()
        .map(|e| budget::approx_bytes(&e.notification))
        .sum();
    while reach.escalations.len() > Reach::MAX_ESCALATIONS
        || (reach.escalations.len() > 1 && held > budget::ESCALATION_BUDGET)
    {
        let oldest = reach
            .escalations
            .values()
            .min_by_key(|e| (e.notification.created_at_ms, e.reference))
            .map(|e| e.notification.id.clone());
        let Some(id) = oldest else { break };
        if let Some(gone) = reach.escalations.remove(id.as_str()) {
            held -= budget::approx_bytes(&gone.notification);
        }
        fired.entries.push((
            id,
            entry(
                now,
                "escalation_dropped",
                None,
                format!(
                    "more than {} escalations or {} KiB of them pending; the oldest was given up",
                    Reach::MAX_ESCALATIONS,
                    budget::ESCALATION_BUDGET / 1024
                ),
            ),
        ));
    }
}

/// Fire steps from `esc.next_step` until one has to wait. Returns true when the escalation is
/// over (no step left, or the notification does not escalate).
fn fire(
    r: &mut UserRecord,
    esc: &mut Escalation,
    policy: &Policy,
    now: Millis,
    links: &Links,
    fired: &mut Fired,
) -> bool {
    let steps: &[Step] = policy.steps_for(esc.notification.priority);
    let present = r.reach.present();
    let low = esc.notification.priority.get() <= 2;
    esc.held = false;
    loop {
        let Some(step) = steps.get(esc.next_step) else {
            return over(r, esc, policy);
        };
        let index = esc.next_step;
        // a step's number across rounds (`repeat`): its jobs and events are new each round
        let number = esc.round as usize * tocsin_model::escalation::MAX_STEPS + index;
        esc.next_step += 1;
        let targets: Vec<Destination> = step
            .targets_now(&r.destinations, present)
            .into_iter()
            .cloned()
            .collect();
        if targets.is_empty() {
            continue;
        }
        let room = budget::MAX_JOBS_PER_NOTIFICATION.saturating_sub(esc.jobs) as usize;
        if targets.len() > room {
            fired.entries.push((
                esc.notification.id.clone(),
                entry(
                    now,
                    "escalation_capped",
                    None,
                    format!(
                        "at most {} deliveries per notification: step {} sent to {room} of {} destinations and the policy stops here",
                        budget::MAX_JOBS_PER_NOTIFICATION,
                        index + 1,
                        targets.len()
                    ),
                ),
            ));
        }
        let capped = targets.len() > room;
        let targets: Vec<Destination> = targets.into_iter().take(room).collect();
        esc.jobs += targets.len() as u32;
        if targets.is_empty() {
            return true;
        }
        esc.step_destinations = targets.iter().map(|d| d.id.clone()).collect();
        esc.step_failed.clear();
        for d in &targets {
            // a throttled destination past its hour's count holds it for the hour's digest
            match crate::decide::throttle::admit(r, d, &esc.notification, now) {
                None => fired
                    .jobs
                    .push(job(r, &esc.notification, d, number, esc.reference, links)),
                Some(held) => fired.entries.push((
                    esc.notification.id.clone(),
                    entry(now, "throttled", Some(d.channel), held),
                )),
            }
        }
        let round = match esc.round {
            0 => String::new(),
            n => format!(" (round {})", n + 1),
        };
        if number > 0 {
            for d in &targets {
                fired.events.push(
                    Event::new(
                        EventKind::Escalated,
                        &[esc.notification.id.as_str(), &number.to_string(), &d.id],
                        now,
                    )
                    .notification(&esc.notification.id)
                    .source(esc.notification.source.id.as_deref())
                    .channel(Some(d.channel))
                    .destination(&d.id)
                    .attempt(number as i64 + 1)
                    .detail(&format!("step {}{round}", index + 1)),
                );
            }
            let to: Vec<String> = targets
                .iter()
                .map(|d| format!("{} {}", d.channel.as_str(), d.id))
                .collect();
            fired.entries.push((
                esc.notification.id.clone(),
                entry(
                    now,
                    "escalated",
                    None,
                    format!("step {}{round}: to {}", index + 1, to.join(", ")),
                ),
            ));
        }
        if low || capped {
            return true;
        }
        if esc.next_step >= steps.len() {
            // the last step: over, unless the policy runs its steps again after its wait
            if esc.round >= policy.repeat || step.wait_secs == 0 {
                return over(r, esc, policy);
            }
            esc.round += 1;
            esc.next_step = 0;
            esc.due_ms = now + step.wait_secs as i64 * 1000;
            return false;
        }
        if step.wait_secs > 0 {
            esc.due_ms = now + step.wait_secs as i64 * 1000;
            return false;
        }
    }
}

/// Every step has fired. An open alert whose policy lets acks expire stays, awaiting its
/// acknowledgement (not due: no timer); anything else is over.
fn over(r: &UserRecord, esc: &mut Escalation, policy: &Policy) -> bool {
    if policy.ack_expires_secs.is_some() && open_alert(r, &esc.notification) {
        esc.awaiting_ack = true;
        return false;
    }
    true
}

/// Whether `n` is the open notification of its dedup key (an alert still firing).
fn open_alert(r: &UserRecord, n: &Notification) -> bool {
    n.dedup_key
        .as_deref()
        .and_then(|k| r.reach.open_keys.get(k))
        .is_some_and(|(id, _)| *id == n.id)
}

/// `90s`, `5m`, `2h`, `3d` (the largest whole unit), for people.
pub(crate) fn span(secs: u64) -> String {
    match secs {
        0 => "no time".to_owned(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The job for destination `d` at step `step`. Its id is the notification's and the
/// destination's — with the step from the second step on, so a policy that names a
/// destination again later (a reminder) sends it again rather than being taken for a repeat.
fn job(
    r: &UserRecord,
    n: &Notification,
    d: &Destination,
    step: usize,
    reference: u32,
    links: &Links,
) -> DeliveryJob {
    let ack_url = (!links.base_url.is_empty()).then(|| {
        format!(
            "{}/v1/ack/{}/{}/{}",
            links.base_url.trim_end_matches('/'),
            r.id,
            n.id,
            ack_signature(&r.token_hash, &n.id)
        )
    });
    DeliveryJob {
        job_id: tocsin_bus::msg_id::delivery_job(&n.id, &d.id, step),
        notification: n.clone(),
        destination: d.clone(),
        kind: JobKind::Notification,
        reference: Some(reference),
        ack_url,
    }
}

/// Fire every escalation that is due. Quiet hours hold non-urgent ones until they end.
pub fn tick(r: &mut UserRecord, now: Millis, links: &Links) -> Fired {
    let mut fired = Fired::default();
    let due: Vec<String> = r
        .reach
        .escalations
        .iter()
        .filter(|(_, e)| e.due_ms <= now && !e.awaiting_ack)
        .map(|(k, _)| k.clone())
        .collect();
    for id in due {
        let Some(mut esc) = r.reach.escalations.remove(&id) else {
            continue;
        };
        let policy = policy_of(r, &esc);
        advance(r, &mut esc, &policy, now, links, &mut fired);
    }
    fired
}

/// Fire `esc`'s next steps now, unless quiet hours hold it; keep it if it is not over.
fn advance(
    r: &mut UserRecord,
    esc: &mut Escalation,
    policy: &Policy,
    now: Millis,
    links: &Links,
    fired: &mut Fired,
) {
    if esc.acked {
        // the acknowledgement has expired: while the alert still fires, its steps start again
        if !open_alert(r, &esc.notification) {
            return;
        }
        esc.acked = false;
        esc.round += 1;
        esc.next_step = 0;
        r.recent.remove(&format!("ack:{}", esc.notification.id));
        let after = policy
            .ack_expires_secs
            .map_or(String::new(), |t| format!(" {}", span(t)));
        fired.entries.push((
            esc.notification.id.clone(),
            entry(
                now,
                "ack_expired",
                None,
                format!("still firing{after} after the acknowledgement: the steps start again"),
            ),
        ));
    }
    if let Some(q) = &policy.quiet_hours
        && !urgent(&esc.notification)
        && let Some(end) = q.ends_at(now)
        && !r.reach.present()
    {
        esc.due_ms = end;
        esc.held = true;
        r.reach
            .escalations
            .insert(esc.notification.id.0.clone(), esc.clone());
        return;
    }
    if !fire(r, esc, policy, now, links, fired) {
        keep(&mut r.reach, esc.clone(), fired, now);
    }
}

/// The user's presence on `address` changed. Escalations held by quiet hours go out now if
/// the user became present.
pub fn presence(
    r: &mut UserRecord,
    address: String,
    show: Show,
    at_ms: Millis,
    now: Millis,
    links: &Links,
) -> (bool, Fired) {
    let mut fired = Fired::default();
    let Some(dest) = r.destinations.iter().find(|d| d.address_key() == address) else {
        return (false, fired);
    };
    let event = Event::new(
        EventKind::PresenceChanged,
        &[&address, show.as_str(), &at_ms.to_string()],
        at_ms,
    )
    .channel(Some(dest.channel))
    .destination(&dest.id)
    .detail(show.as_str());
    let was = r.reach.present();
    match r.reach.presence.get(&address) {
        Some(p) if p.at_ms > at_ms => return (false, fired), // older news
        Some(p) if p.show == show => return (false, fired),
        _ => {}
    }
    r.reach
        .presence
        .insert(address, PresenceState { show, at_ms });
    fired.events.push(event);
    if !was && r.reach.present() {
        let held: Vec<String> = r
            .reach
            .escalations
            .iter()
            .filter(|(_, e)| e.held)
            .map(|(k, _)| k.clone())
            .collect();
        for id in held {
            if let Some(mut esc) = r.reach.escalations.remove(&id) {
                let policy = policy_of(r, &esc);
                fire_now(r, &mut esc, &policy, now, links, &mut fired);
            }
        }
    }
    (true, fired)
}

/// Fire ignoring quiet hours (the user is here).
fn fire_now(
    r: &mut UserRecord,
    esc: &mut Escalation,
    policy: &Policy,
    now: Millis,
    links: &Links,
    fired: &mut Fired,
) {
    if !fire(r, esc, policy, now, links, fired) {
        keep(&mut r.reach, esc.clone(), fired, now);
    }
}

/// A delivery failed for good: when every destination of the step failed, move on at once.
pub fn failed(
    r: &mut UserRecord,
    notification: &NotificationId,
    destination: &str,
    now: Millis,
    links: &Links,
) -> Fired {
    let mut fired = Fired::default();
    let Some(esc) = r.reach.escalations.get_mut(notification.as_str()) else {
        return fired;
    };
    if esc.acked || !esc.step_destinations.iter().any(|d| d == destination) {
        return fired;
    }
    if !esc.step_failed.iter().any(|d| d == destination) {
        esc.step_failed.push(destination.to_owned());
    }
    if esc.step_failed.len() < esc.step_destinations.len() {
        return fired;
    }
    let Some(mut esc) = r.reach.escalations.remove(notification.as_str()) else {
        return fired;
    };
    let policy = policy_of(r, &esc);
    fire_now(r, &mut esc, &policy, now, links, &mut fired);
    fired
}

/// Acknowledge `id`: pending escalation stops. Returns the timeline entry, or None if it was
/// already acknowledged.
pub fn ack(
    r: &mut UserRecord,
    id: &NotificationId,
    via: &str,
    channel: Option<Channel>,
    now: Millis,
    events: &mut Vec<Event>,
) -> Option<(NotificationId, TimelineEntry)> {
    if !r.recent.insert(format!("ack:{id}")) {
        return None;
    }
    let stopped = r.reach.escalations.remove(id.as_str());
    // an alert whose policy lets acks expire: quiet until then, paged again if still firing
    let expires = stopped.as_ref().and_then(|esc| {
        policy_of(r, esc)
            .ack_expires_secs
            .filter(|_| open_alert(r, &esc.notification))
    });
    let detail = match (&stopped, expires) {
        (Some(_), Some(t)) => format!(
            "via {via}; escalation stopped; it starts again in {} if the alert still fires",
            span(t)
        ),
        (Some(_), None) => format!("via {via}; escalation stopped"),
        (None, _) => format!("via {via}"),
    };
    let mut event = Event::new(EventKind::Acked, &[id.as_str()], now)
        .notification(id)
        .channel(channel)
        .detail(&detail);
    if let Some(esc) = &stopped {
        event = event
            .since(esc.notification.created_at_ms)
            .source(esc.notification.source.id.as_deref());
    }
    events.push(event);
    if let (Some(mut esc), Some(t)) = (stopped, expires) {
        esc.acked = true;
        esc.awaiting_ack = false;
        esc.held = false;
        esc.due_ms = now + t as i64 * 1000;
        r.reach.escalations.insert(id.0.clone(), esc);
    }
    Some((id.clone(), entry(now, "acked", channel, detail)))
}

/// What carried dedup key `key` is over: its open notification gets a `resolved` timeline entry
/// and event, its escalation (if still going) stops, the destinations it reached are told when
/// its policy says so, and the key is forgotten so that it pages again when it comes back.
/// Resolving a key with nothing open changes nothing else.
pub fn resolve(r: &mut UserRecord, key: &str, via: &str, now: Millis) -> Fired {
    let mut fired = Fired::default();
    r.recent.remove(&format!("k:{key}"));
    let Some((id, since)) = r.reach.open_keys.remove(key) else {
        r.reach.told.remove(key);
        return fired;
    };
    fired.jobs = crate::decide::told::on_resolve(r, key, &id, via, now);
    let stopped = r.reach.escalations.remove(id.as_str());
    let detail = match &stopped {
        Some(_) => format!("via {via}; escalation stopped"),
        None => format!("via {via}"),
    };
    let mut event = Event::new(EventKind::Resolved, &[id.as_str()], now)
        .notification(&id)
        .since(since)
        .detail(&detail);
    if let Some(esc) = &stopped {
        event = event.source(esc.notification.source.id.as_deref());
    }
    fired.events.push(event);
    let detail = match fired.jobs.len() {
        0 => detail,
        n => format!("{detail}; told the {n} destination(s) it reached"),
    };
    fired
        .entries
        .push((id, entry(now, "resolved", None, detail)));
    fired
}

/// `HH:MM` UTC of a time, for messages.
pub(crate) fn clock(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let day = secs.rem_euclid(86400);
    format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
}
