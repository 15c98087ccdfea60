//! The avatar's decisions, as pure functions: given the user's record and one message, what
//! changes and what goes out. No I/O here; the actor (`actor.rs`) persists the record and
//! publishes the effects (`outputs.rs` maps them to bus messages).

#[cfg(test)]
mod account_tests;
#[cfg(test)]
mod budget_tests;
pub mod command_events;
pub mod commands;
#[cfg(test)]
mod digest_tests;
pub mod effects;
pub mod escalate;
#[cfg(test)]
mod group_tests;
mod groups;
mod health;
#[cfg(test)]
mod heartbeat_tests;
mod heartbeats;
#[cfg(test)]
mod pin_tests;
#[cfg(test)]
mod policy_tests;
mod refusals;
mod replies;
pub mod routing;
mod sessions;
#[cfg(test)]
mod silence_tests;
mod silences;
#[cfg(test)]
pub(crate) mod tests;
mod throttle;
mod told;
mod verify;

pub use effects::{Effects, Outcome};

use crate::decide::command_events::command_event;
use crate::decide::commands::command_effects;
use crate::decide::escalate::{Fired, Links};
use crate::decide::routing::route;
use tocsin_model::{
    AvatarMessage, CommandReply, Event, EventKind, Millis, RefusalCode, TimelineEntry, UserId,
    UserRecord, budget,
};

/// Limits an avatar enforces on its user's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sources: usize,
    pub max_destinations: usize,
    /// Where signed acknowledgement links point.
    pub links: Links,
}

/// Why a command was refused: a stable code, the field at fault when there is one, and a
/// message for the person.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) code: RefusalCode,
    pub(crate) field: Option<String>,
    pub(crate) message: String,
}

impl Refusal {
    /// Something not acceptable, with no one field to blame.
    pub(crate) fn invalid(message: impl Into<String>) -> Refusal {
        Refusal {
            code: RefusalCode::Invalid,
            field: None,
            message: message.into(),
        }
    }

    /// `field` is not acceptable; the message starts with the field's name.
    pub(crate) fn field(field: &str, why: impl std::fmt::Display) -> Refusal {
        Refusal {
            code: RefusalCode::Invalid,
            field: Some(field.to_owned()),
            message: format!("{field}: {why}"),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Refusal {
        Refusal {
            code: RefusalCode::NotFound,
            field: None,
            message: message.into(),
        }
    }

    pub(crate) fn exists(message: impl Into<String>) -> Refusal {
        Refusal {
            code: RefusalCode::Exists,
            field: None,
            message: message.into(),
        }
    }
}

impl From<tocsin_model::Invalid> for Refusal {
    fn from(e: tocsin_model::Invalid) -> Refusal {
        Refusal::field(&e.field, e.message)
    }
}

/// Keep `status` for `id` (a source or destination the record still has) in the map `keep`
/// picks, its error cut to the budget.
fn set_status(
    record: &mut Option<UserRecord>,
    id: &str,
    mut status: tocsin_model::SourceStatus,
    known: impl Fn(&UserRecord) -> bool,
    keep: impl Fn(
        &mut UserRecord,
    ) -> &mut std::collections::BTreeMap<String, tocsin_model::SourceStatus>,
) -> Effects {
    let mut fx = Effects::labelled(Outcome::Status);
    status.error = status
        .error
        .map(|e| tocsin_model::text::truncate(&e, budget::MAX_STATUS_ERROR));
    if let Some(r) = record.as_mut().filter(|r| known(r)) {
        let map = keep(r);
        if map.get(id) != Some(&status) {
            map.insert(id.to_owned(), status);
            fx.dirty = true;
        }
    }
    fx
}

/// The effects of a change that only adds timeline entries and events (an ack, a resolve).
fn entries_only(
    user: &UserId,
    record: &mut Option<UserRecord>,
    outcome: Outcome,
    change: impl FnOnce(
        &mut UserRecord,
        &mut Vec<Event>,
    ) -> Vec<(tocsin_model::NotificationId, TimelineEntry)>,
) -> Effects {
    let Some(r) = record.as_mut() else {
        return Effects::labelled(Outcome::NoUser);
    };
    let mut fx = Effects::labelled(outcome);
    let mut events = Vec::new();
    let entries = change(r, &mut events);
    fx.take(
        user,
        Fired {
            jobs: vec![],
            entries,
            events,
        },
    );
    fx
}

/// Apply `msg` for `user` to `record` (None: the user does not exist yet).
pub fn apply(
    user: &UserId,
    record: &mut Option<UserRecord>,
    msg: AvatarMessage,
    limits: &Limits,
    now: Millis,
) -> Effects {
    let mut fx = decide(user, record, msg, limits, now);
    // whatever sent an open alert somewhere, its policy may want that place told when it ends
    if !fx.jobs.is_empty()
        && let Some(r) = record.as_mut()
    {
        fx.dirty |= told::note(r, &fx.jobs);
    }
    fx
}

fn decide(
    user: &UserId,
    record: &mut Option<UserRecord>,
    msg: AvatarMessage,
    limits: &Limits,
    now: Millis,
) -> Effects {
    match msg {
        AvatarMessage::Notify { notification } => route(record, notification, now, &limits.links),
        AvatarMessage::Command {
            command_id,
            command,
            reply_to,
        } => {
            let mut fx = Effects::default();
            let change = command_event(&command, &command_id, now);
            // commands are rare: a copy lets a change that outgrows the budget be undone whole
            let before = record.clone();
            let mut result = command_effects(user, record, command, limits, now, &mut fx);
            if result.is_ok()
                && let Some(r) = record
                && let bytes = budget::config_bytes(r)
                && bytes > budget::CONFIG_BUDGET
                && bytes > before.as_ref().map_or(0, budget::config_bytes)
            {
                *record = before;
                fx = Effects::default();
                result = Err(Refusal::invalid(format!(
                    "the configuration would take {} KiB, over the budget of {} KiB per user; remove a source or destination, or shorten filters and labels",
                    bytes.div_ceil(1024),
                    budget::CONFIG_BUDGET / 1024
                )));
            }
            fx.outcome = if result.is_ok() {
                Outcome::Applied
            } else {
                Outcome::Refused
            };
            match &result {
                Ok(()) if fx.dirty => fx.events.push(change),
                Ok(()) => {}
                Err(refusal) => fx.events.push(
                    Event::new(EventKind::Refused, &[&command_id], now)
                        .source(change.source.as_deref())
                        .detail(&format!(
                            "{} refused ({}): {}",
                            change.detail,
                            refusal.code.as_str(),
                            refusal.message
                        )),
                ),
            }
            if let Some(to) = reply_to {
                let reply = match result {
                    Ok(()) => CommandReply {
                        command_id,
                        ok: true,
                        code: None,
                        field: None,
                        message: None,
                    },
                    Err(r) => CommandReply {
                        command_id,
                        ok: false,
                        code: Some(r.code),
                        field: r.field,
                        message: Some(r.message),
                    },
                };
                fx.reply = Some((to, reply));
            }
            fx
        }
        AvatarMessage::SourceStatus { source_id, status } => {
            // told once when it breaks and once when it works again, as a notification of
            // the source (decided against the status kept before this one)
            let notice = health::notice(user, record.as_ref(), &source_id, &status, now);
            let kept = set_status(
                record,
                &source_id,
                status,
                |r| r.sources.iter().any(|s| s.id == source_id),
                |r| &mut r.source_status,
            );
            match notice {
                Some(n) => {
                    let mut fx = route(record, n, now, &limits.links);
                    fx.dirty |= kept.dirty;
                    fx
                }
                None => kept,
            }
        }
        AvatarMessage::DestinationStatus {
            destination_id,
            status,
        } => set_status(
            record,
            &destination_id,
            status,
            |r| r.destinations.iter().any(|d| d.id == destination_id),
            |r| &mut r.destination_status,
        ),
        AvatarMessage::Outcome { outcome } => {
            let Some(r) = record.as_mut().filter(|_| outcome.user == *user) else {
                return Effects {
                    outcome: Outcome::NoUser,
                    ..Default::default()
                };
            };
            // the `delivered` and `failed` events are the delivery service's, where they happen;
            // a delivered outcome goes straight to history, and one that comes here anyway (from
            // an older delivery service) is recorded the same way
            let mut fx = Effects {
                history: vec![outcome.timeline_record()],
                outcome: if outcome.delivered {
                    Outcome::Delivered
                } else {
                    Outcome::Failed
                },
                ..Default::default()
            };
            if !outcome.delivered {
                let fired = escalate::failed(
                    r,
                    &outcome.notification_id,
                    &outcome.destination_id,
                    now,
                    &limits.links,
                );
                fx.take(user, fired);
            }
            fx
        }
        AvatarMessage::Presence {
            address,
            show,
            at_ms,
        } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled(Outcome::NoUser);
            };
            let (changed, fired) = escalate::presence(r, address, show, at_ms, now, &limits.links);
            let mut fx = Effects {
                outcome: if changed {
                    Outcome::Presence
                } else {
                    Outcome::PresenceSame
                },
                ..Default::default()
            };
            fx.take(user, fired);
            fx
        }
        AvatarMessage::Reply {
            channel,
            address,
            text,
            at_ms,
        } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled(Outcome::NoUser);
            };
            let mut fx = Effects::labelled(Outcome::Reply);
            match replies::reply(r, channel, &address, &text, at_ms, now) {
                Some(Ok(fired)) => fx.take(user, fired),
                Some(Err(reason)) => {
                    fx = refusals::refused(
                        user,
                        tocsin_model::SourceKind::Publish,
                        "an SMS reply",
                        &address,
                        reason,
                        at_ms,
                    );
                    // the wrong PINs are counted in the record
                    fx.dirty = true;
                }
                None => fx.outcome = Outcome::ReplyUnknownAddress,
            }
            fx
        }
        AvatarMessage::Ack {
            notification_id,
            via,
            at_ms: _,
        } => entries_only(user, record, Outcome::Ack, |r, events| {
            escalate::ack(r, &notification_id, &via, None, now, events)
                .into_iter()
                .collect()
        }),
        AvatarMessage::Resolve { key, via, at_ms: _ } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled(Outcome::NoUser);
            };
            let mut fx = Effects::labelled(Outcome::Resolved);
            fx.take(user, escalate::resolve(r, &key, &via, now));
            fx
        }
        AvatarMessage::Refused {
            source,
            from,
            reason,
            at_ms,
        } => {
            if record.is_none() {
                return Effects::labelled(Outcome::NoUser);
            }
            let what = match source {
                tocsin_model::SourceKind::Email => "an e-mail",
                _ => "a message",
            };
            refusals::refused(user, source, what, &from, reason, at_ms)
        }
        AvatarMessage::Ping { source_id, at_ms } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled(Outcome::NoUser);
            };
            match heartbeats::ping(r, &source_id, at_ms, now) {
                Some(fired) => {
                    let mut fx = Effects::labelled(Outcome::Ping);
                    fx.take(user, fired);
                    fx
                }
                None => Effects::labelled(Outcome::Duplicate),
            }
        }
        AvatarMessage::Tick { .. } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled(Outcome::NoUser);
            };
            let fired = escalate::tick(r, now, &limits.links);
            let missed = heartbeats::overdue(r, now);
            let summaries = groups::close(r, now, &limits.links);
            let (throttled, digests) = throttle::close(r, now, &limits.links);
            let mut fx = Effects::labelled(Outcome::Tick);
            fx.take(user, fired);
            fx.history.extend(throttled);
            fx.jobs.extend(digests);
            for (n, event) in missed {
                // told like any alert of the source: its policy, mute and silences apply
                let routed = route(record, n, now, &limits.links);
                fx.absorb(routed);
                fx.events.push(event);
            }
            fx.absorb(routing::route_summaries(
                record,
                summaries,
                now,
                &limits.links,
            ));
            fx
        }
    }
}
