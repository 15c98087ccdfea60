//! What a person writes back over IM or SMS (`ack 12`, `list`, `mute 1h`, `silence 2h bikes`,
//! `status`): each command applied to the record, and for IM the answer sent back.

use crate::decide::escalate::{Fired, ack, clock};
use tocsin_model::{
    AckTarget, Channel, DeliveryJob, Escalation, JobKind, Millis, Notification, NotificationId,
    Reach, ReplyCommand, ReplyPin, UserRecord,
};

/// The user wrote `text` from `address` on `channel`. Returns what to record and, for IM, the
/// answer to send back; why not, for an SMS reply that would change settings without the
/// user's reply PIN (it changes nothing but the count of wrong PINs); nothing for an address
/// its owner has not confirmed (whoever typed it in may not be whoever writes from it).
pub fn reply(
    r: &mut UserRecord,
    channel: Channel,
    address: &str,
    text: &str,
    at_ms: Millis,
    now: Millis,
) -> Option<Result<Fired, String>> {
    let key = format!("{}:{address}", channel.as_str());
    let dest = r
        .destinations
        .iter()
        .find(|d| d.address_key() == key && d.verified())?
        .clone();
    let via = format!("{} ({address})", channel.as_str());
    let mut fired = Fired::default();
    let (pin, text) = tocsin_model::split_pin(text);
    let command = ReplyCommand::parse(text);
    // a text's sender can be forged: over SMS, only the PIN lets a reply change settings
    if channel == Channel::Sms
        && command.changes_settings()
        && let Err(why) = check_pin(r, pin, now)
    {
        return Some(Err(why));
    }
    let answer = match command {
        ReplyCommand::Ack(target) => {
            let ids: Vec<NotificationId> = match target {
                AckTarget::Latest => latest_pending(&r.reach).into_iter().collect(),
                AckTarget::Reference(n) => r.reach.by_reference(n).into_iter().collect(),
                AckTarget::All => r
                    .reach
                    .escalations
                    .values()
                    .filter(|e| !e.acked)
                    .map(|e| e.notification.id.clone())
                    .collect(),
            };
            let refs: Vec<String> = ids
                .iter()
                .filter_map(|id| r.reach.references.number_of(id).map(|n| n.to_string()))
                .collect();
            let mut acked = 0;
            for id in &ids {
                if let Some(e) = ack(r, id, &via, Some(channel), now, &mut fired.events) {
                    fired.entries.push(e);
                    acked += 1;
                }
            }
            match (acked, &target) {
                (0, AckTarget::Reference(n)) => format!("Nothing to acknowledge as {n}."),
                (0, _) => "Nothing is waiting for an acknowledgement.".to_owned(),
                _ => format!("Acknowledged {}.", refs.join(", ")),
            }
        }
        ReplyCommand::Help => ReplyCommand::HELP.to_owned(),
        ReplyCommand::List => {
            let mut pending: Vec<&Escalation> =
                r.reach.escalations.values().filter(|e| !e.acked).collect();
            pending.sort_by_key(|e| e.notification.created_at_ms);
            if pending.is_empty() {
                "Nothing is waiting for an acknowledgement.".to_owned()
            } else {
                let lines: Vec<String> = pending
                    .iter()
                    .rev()
                    .take(10)
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.reference,
                            tocsin_model::text::truncate(&e.notification.title, 80)
                        )
                    })
                    .collect();
                format!("Waiting for an acknowledgement:\n{}", lines.join("\n"))
            }
        }
        ReplyCommand::Mute(secs) => {
            let until = now + secs as i64 * 1000;
            r.reach.muted_until_ms = Some(until);
            format!(
                "Muted until {} UTC: only urgent notifications reach you. Send unmute to end it.",
                clock(until)
            )
        }
        ReplyCommand::Unmute => {
            r.reach.muted_until_ms = None;
            "Unmuted.".to_owned()
        }
        ReplyCommand::Silence { secs, source } => {
            let silence = tocsin_model::Silence {
                id: format!(
                    "x{}",
                    &tocsin_model::digest(&["silence", r.id.as_str(), &at_ms.to_string(), text])
                        [..10]
                ),
                matcher: tocsin_model::Matcher {
                    source: Some(source_named(r, &source).unwrap_or(source.clone())),
                    ..Default::default()
                },
                starts_at_ms: now,
                ends_at_ms: now + secs as i64 * 1000,
                comment: format!("from {via}"),
                created_at_ms: now,
                window: None,
            };
            let until = tocsin_model::text::utc_minute(silence.ends_at_ms);
            match crate::decide::silences::add(r, silence, now) {
                Ok(stopped) => {
                    let n = stopped.entries.len();
                    fired.entries.extend(stopped.entries);
                    fired.events.extend(stopped.events);
                    let also = match n {
                        0 => String::new(),
                        n => format!(" ({n} escalation(s) stopped)"),
                    };
                    format!(
                        "Silenced {source} until {until}{also}. Send unsilence {source} to end it."
                    )
                }
                Err(e) => format!("Not silenced: {}", e.message),
            }
        }
        ReplyCommand::Unsilence(target) => {
            let before = r.reach.silences.len();
            match &target {
                None => r.reach.silences.clear(),
                Some(t) => {
                    let id = source_named(r, t);
                    r.reach.silences.retain(|s| {
                        s.id != *t
                            && !s.matcher.source.as_deref().is_some_and(|src| {
                                src.eq_ignore_ascii_case(t) || Some(src) == id.as_deref()
                            })
                    });
                }
            }
            match before - r.reach.silences.len() {
                0 => "No silence to end.".to_owned(),
                n => format!("Ended {n} silence(s)."),
            }
        }
        ReplyCommand::Status => {
            let presence = if r.reach.present() { "present" } else { "away" };
            let muted = match r.reach.muted_until_ms {
                Some(u) if u > now => format!("muted until {} UTC", clock(u)),
                _ => "not muted".to_owned(),
            };
            let silences = r.reach.silences.iter().filter(|s| s.active(now)).count();
            format!(
                "You are {presence}, {muted}; {} notification(s) waiting for an acknowledgement; {} destination(s); {silences} silence(s) in force.",
                r.reach.escalations.values().filter(|e| !e.acked).count(),
                r.destinations.len()
            )
        }
        ReplyCommand::Unknown(t) => format!(
            "I did not understand {:?}. {}",
            tocsin_model::text::truncate(&t, 40),
            ReplyCommand::HELP
        ),
    };
    // only IM gets an answer: an SMS answer costs the user money and says little
    if channel == Channel::Xmpp {
        fired.jobs.push(DeliveryJob {
            job_id: tocsin_bus::msg_id::command_answer(&dest.id, at_ms, text),
            notification: Notification::from_tocsin(
                NotificationId(format!("r{at_ms}")),
                r.id.clone(),
                answer,
                String::new(),
                now,
            ),
            destination: dest,
            kind: JobKind::Reply,
            reference: None,
            ack_url: None,
        });
    }
    Some(Ok(fired))
}

/// Whether `pin` is the user's reply PIN. A wrong or missing one counts; after
/// [`ReplyPin::MAX_FAILURES`] in a row, SMS replies change nothing for an hour.
fn check_pin(r: &mut UserRecord, pin: Option<&str>, now: Millis) -> Result<(), String> {
    let given = pin.map(|p| tocsin_model::reply_pin_hash(&r.id, p));
    let Some(saved) = r.reply_pin.as_mut() else {
        return Err(
            "it would change settings, which an SMS reply does only when it starts with \
                    the reply PIN: set one (PUT /v1/me/reply-pin), then write e.g. \
                    \"4821 mute 1h\""
                .to_owned(),
        );
    };
    if let Some(until) = saved.locked_until_ms.filter(|u| *u > now) {
        return Err(format!(
            "{} wrong PINs in a row: SMS replies change no settings until {} UTC",
            ReplyPin::MAX_FAILURES,
            clock(until)
        ));
    }
    if given.as_deref().is_some_and(|h| {
        crate::decide::verify::constant_time_eq(h.as_bytes(), saved.hash.as_bytes())
    }) {
        saved.failures = 0;
        saved.locked_until_ms = None;
        return Ok(());
    }
    saved.failures += 1;
    if saved.failures >= ReplyPin::MAX_FAILURES {
        saved.failures = 0;
        saved.locked_until_ms = Some(now + ReplyPin::LOCK_MS);
    }
    Err(match pin {
        None => {
            "it would change settings and did not start with the reply PIN (write e.g. \
                 \"4821 mute 1h\")"
        }
        Some(_) => "the reply PIN was wrong",
    }
    .to_owned())
}

/// The id of the user's source called `name` (by id or label, without case), if one is.
fn source_named(r: &UserRecord, name: &str) -> Option<String> {
    r.sources
        .iter()
        .find(|s| s.id == name || s.label.eq_ignore_ascii_case(name))
        .map(|s| s.id.clone())
}

/// The most recently sent notification still escalating, else the most recently sent one.
fn latest_pending(reach: &Reach) -> Option<NotificationId> {
    reach
        .escalations
        .values()
        .filter(|e| !e.acked)
        .max_by_key(|e| (e.notification.created_at_ms, e.reference))
        .map(|e| e.notification.id.clone())
        .or_else(|| reach.references.latest())
}
