//! The avatar's decisions, as a pure function: given the user's record and one message, what
//! changes and what goes out. No I/O here; `lib.rs` persists and publishes the effects.

use crate::escalate::{self, Fired, Links};
use tocsin_model::{
    AddressEntry, AvatarMessage, Command, CommandReply, DeliveryJob, Destination, Event, EventKind,
    FeedSubscription, HistoryRecord, Millis, Notification, Source, SourceSpec, SubscriptionOp,
    TimelineEntry, UserId, UserRecord,
};

/// Limits an avatar enforces on its user's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sources: usize,
    pub max_destinations: usize,
    /// Where signed acknowledgement links point.
    pub links: Links,
}

/// What handling one message produced.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub history: Vec<HistoryRecord>,
    pub subscriptions: Vec<FeedSubscription>,
    /// IMAP sources to start, change or stop watching (with the password, when given).
    pub imap: Vec<tocsin_model::ImapSubscription>,
    pub jobs: Vec<DeliveryJob>,
    pub reply: Option<(String, CommandReply)>,
    /// Address index changes: the key and the new entry (None: delete).
    pub index: Vec<(String, Option<AddressEntry>)>,
    /// Events for the archive; `lib.rs` fills in the user and silo and publishes them with the
    /// other outputs.
    pub events: Vec<Event>,
    /// The record changed and must be saved before the message is acked.
    pub dirty: bool,
    /// A bounded label for metrics and logs: `routed`, `duplicate`, `no_user`, `applied`, …
    pub outcome: &'static str,
}

/// Apply `msg` for `user` to `record` (None: the user does not exist yet).
pub fn apply(
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
            let result = command_effects(user, record, command, limits, now, &mut fx);
            fx.outcome = if result.is_ok() { "applied" } else { "refused" };
            match &result {
                Ok(()) if fx.dirty => fx.events.push(change),
                Ok(()) => {}
                Err((code, message)) => fx.events.push(
                    Event::new(EventKind::Refused, &[&command_id], now)
                        .source(change.source.as_deref())
                        .detail(&format!("{} refused ({code}): {message}", change.detail)),
                ),
            }
            if let Some(to) = reply_to {
                let (code, message) = match result {
                    Ok(()) => (None, None),
                    Err((code, message)) => (Some(code.to_owned()), Some(message)),
                };
                fx.reply = Some((
                    to,
                    CommandReply {
                        command_id,
                        ok: code.is_none(),
                        code,
                        message,
                    },
                ));
            }
            fx
        }
        AvatarMessage::SourceStatus { source_id, status } => {
            let mut fx = Effects::labelled("status");
            if let Some(r) = record
                && r.sources.iter().any(|s| s.id == source_id)
                && r.source_status.get(&source_id) != Some(&status)
            {
                r.source_status.insert(source_id, status);
                fx.dirty = true;
            }
            fx
        }
        AvatarMessage::Outcome { outcome } => {
            let Some(r) = record.as_mut().filter(|_| outcome.user == *user) else {
                return Effects {
                    outcome: "no_user",
                    ..Default::default()
                };
            };
            let kind = if outcome.delivered {
                "delivered"
            } else {
                "failed"
            };
            // the `delivered` and `failed` events are the delivery service's, where they happen
            let mut fx = Effects {
                history: vec![HistoryRecord::Timeline {
                    user: user.clone(),
                    notification_id: outcome.notification_id.clone(),
                    entry: TimelineEntry {
                        at_ms: outcome.at_ms,
                        kind: kind.into(),
                        channel: Some(outcome.channel),
                        // the attempt when it took more than one (an outage, a crash)
                        detail: match outcome.attempts {
                            n if n > 1 => format!(
                                "{}: {} (attempt {n})",
                                outcome.destination_id, outcome.detail
                            ),
                            _ => format!("{}: {}", outcome.destination_id, outcome.detail),
                        },
                    },
                }],
                outcome: kind,
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
                return Effects::labelled("no_user");
            };
            let (changed, fired) = escalate::presence(r, address, show, at_ms, now, &limits.links);
            let mut fx = Effects {
                outcome: if changed { "presence" } else { "presence_same" },
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
                return Effects::labelled("no_user");
            };
            let mut fx = Effects::labelled("reply");
            match escalate::reply(r, channel, &address, &text, at_ms, now) {
                Some(fired) => fx.take(user, fired),
                None => fx.outcome = "reply_unknown_address",
            }
            fx
        }
        AvatarMessage::Ack {
            notification_id,
            via,
            at_ms: _,
        } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled("no_user");
            };
            let mut fx = Effects::labelled("ack");
            let mut events = Vec::new();
            let entries = escalate::ack(r, &notification_id, &via, None, now, &mut events)
                .into_iter()
                .collect();
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
        AvatarMessage::Refused {
            source,
            from,
            reason,
            at_ms,
        } => {
            if record.is_none() {
                return Effects {
                    outcome: "no_user",
                    ..Default::default()
                };
            }
            let from = tocsin_model::text::truncate(&tocsin_model::text::one_line(&from), 200);
            let id = tocsin_model::digest(&[
                "refused",
                user.as_str(),
                &from,
                &reason,
                &at_ms.to_string(),
            ]);
            let what = match source {
                tocsin_model::SourceKind::Email => "e-mail",
                _ => "message",
            };
            let notification = Notification {
                id: tocsin_model::NotificationId(format!("x{}", &id[..32])),
                user: user.clone(),
                source: tocsin_model::SourceRef {
                    kind: source,
                    id: None,
                    label: from.clone(),
                },
                title: format!(
                    "Refused an {what} from {}",
                    if from.is_empty() { "<>" } else { &from }
                ),
                body: reason.clone(),
                url: None,
                priority: tocsin_model::Priority::LOWEST,
                tags: vec!["refused".into()],
                created_at_ms: at_ms,
                published_at_ms: None,
                dedup_key: None,
            };
            let event = Event::new(EventKind::Refused, &[notification.id.as_str()], at_ms)
                .notification(&notification.id)
                .detail(&format!("{}: {reason}", notification.title));
            Effects {
                history: vec![HistoryRecord::Notification {
                    notification,
                    entry: TimelineEntry {
                        at_ms,
                        kind: "refused".into(),
                        channel: None,
                        detail: reason,
                    },
                }],
                events: vec![event],
                outcome: "refused",
                ..Default::default()
            }
        }
        AvatarMessage::Tick { .. } => {
            let Some(r) = record.as_mut() else {
                return Effects::labelled("no_user");
            };
            let fired = escalate::tick(r, now, &limits.links);
            let mut fx = Effects::labelled("tick");
            fx.take(user, fired);
            fx
        }
    }
}

impl Effects {
    /// No effects, only the outcome label.
    fn labelled(outcome: &'static str) -> Effects {
        Effects {
            outcome,
            ..Default::default()
        }
    }

    /// Add what an escalation rule produced; any change to the record makes it dirty.
    fn take(&mut self, user: &UserId, fired: Fired) {
        self.dirty = true;
        self.jobs.extend(fired.jobs);
        self.events.extend(fired.events);
        for (notification_id, entry) in fired.entries {
            self.history.push(HistoryRecord::Timeline {
                user: user.clone(),
                notification_id,
                entry,
            });
        }
    }
}

fn route(record: &mut Option<UserRecord>, n: Notification, now: Millis, links: &Links) -> Effects {
    let Some(r) = record else {
        return Effects {
            outcome: "no_user",
            ..Default::default()
        };
    };
    if n.source.kind == tocsin_model::SourceKind::Feed
        && let Some(sid) = &n.source.id
        && !r.sources.iter().any(|s| &s.id == sid)
    {
        // the user removed this source while the item was on its way
        return Effects {
            outcome: "source_removed",
            ..Default::default()
        };
    }
    if r.recent.contains(n.id.as_str()) {
        return Effects {
            outcome: "duplicate",
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
            outcome: "duplicate_content",
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
        outcome: "routed",
        ..Default::default()
    };
    fx.take(&user, fired);
    fx
}

type Refusal = (&'static str, String);

/// The event a command records when it changes something (its detail names the change).
fn command_event(command: &Command, command_id: &str, now: Millis) -> Event {
    let (kind, source, destination, channel, detail) = match command {
        Command::CreateUser { .. } => (
            EventKind::UserCreated,
            None,
            None,
            None,
            "user created".to_owned(),
        ),
        Command::AddSource { source } => (
            EventKind::SourceChanged,
            Some(source.id.as_str()),
            None,
            None,
            format!(
                "source {} set ({})",
                source.id,
                match source.spec {
                    SourceSpec::Feed { .. } => "feed",
                    SourceSpec::Imap { .. } => "imap",
                }
            ),
        ),
        Command::RemoveSource { source_id } => (
            EventKind::SourceChanged,
            Some(source_id.as_str()),
            None,
            None,
            format!("source {source_id} removed"),
        ),
        Command::SetAllowedSenders { senders, .. } => (
            EventKind::SourceChanged,
            None,
            None,
            None,
            format!("allowed e-mail senders set ({})", senders.len()),
        ),
        Command::AddDestination { destination } => (
            EventKind::DestinationChanged,
            None,
            Some(destination.id.as_str()),
            Some(destination.channel),
            format!("destination {} set", destination.id),
        ),
        Command::RemoveDestination { destination_id } => (
            EventKind::DestinationChanged,
            None,
            Some(destination_id.as_str()),
            None,
            format!("destination {destination_id} removed"),
        ),
        Command::SetPolicy { policy } => (
            EventKind::PolicyChanged,
            None,
            None,
            None,
            if policy.is_some() {
                "policy set"
            } else {
                "policy reset to the default"
            }
            .to_owned(),
        ),
    };
    let mut e = Event::new(kind, &[command_id], now)
        .source(source)
        .channel(channel)
        .detail(&detail);
    e.destination = destination.map(str::to_owned);
    e
}

fn command_effects(
    user: &UserId,
    record: &mut Option<UserRecord>,
    command: Command,
    limits: &Limits,
    now: Millis,
    fx: &mut Effects,
) -> Result<(), Refusal> {
    match command {
        Command::CreateUser {
            name,
            token_hash,
            feed_token_hash,
            inbound_token_hash,
        } => {
            if let Some(r) = record {
                // a retried create (same token) is the same user: answer ok again
                return if r.token_hash == token_hash {
                    Ok(())
                } else {
                    Err(("exists", format!("user {user} already exists")))
                };
            }
            *record = Some(UserRecord {
                id: user.clone(),
                name,
                created_at_ms: now,
                token_hash,
                feed_token_hash,
                inbound_token_hash,
                sources: vec![],
                destinations: vec![],
                allowed_senders: vec![],
                require_authenticated_mail: false,
                source_status: Default::default(),
                recent: Default::default(),
                reach: Default::default(),
            });
            fx.dirty = true;
            Ok(())
        }
        Command::AddSource { mut source } => {
            let r = existing(user, record)?;
            validate_source(&source)?;
            let upserted = subscription(user, &source, SubscriptionOp::Upsert);
            let known = r.sources.iter().any(|s| s.id == source.id);
            if let SourceSpec::Imap { password, .. } = &mut source.spec {
                if password.is_none() && !known {
                    return Err(("invalid", "password: needed for a new IMAP source".into()));
                }
                fx.imap.push(tocsin_model::ImapSubscription {
                    op: SubscriptionOp::Upsert,
                    user: user.clone(),
                    source_id: source.id.clone(),
                    label: source.label.clone(),
                    filter: source.filter.clone(),
                    spec: None,
                });
                // the password goes to the ingestor only, never into the record
                let spec_with_password = source.spec.clone();
                if let SourceSpec::Imap { password, .. } = &mut source.spec {
                    *password = None;
                }
                if let Some(s) = fx.imap.last_mut() {
                    s.spec = Some(spec_with_password);
                }
            }
            let id = source.id.clone();
            upsert(
                &mut r.sources,
                source,
                |s| s.id == id,
                limits.max_sources,
                "sources",
            )?;
            fx.subscriptions.extend(upserted);
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveSource { source_id } => {
            let r = existing(user, record)?;
            let source = take(&mut r.sources, |s| s.id == source_id, "source", &source_id)?;
            r.source_status.remove(&source_id);
            fx.subscriptions
                .extend(subscription(user, &source, SubscriptionOp::Remove));
            if matches!(source.spec, SourceSpec::Imap { .. }) {
                fx.imap.push(tocsin_model::ImapSubscription {
                    op: SubscriptionOp::Remove,
                    user: user.clone(),
                    source_id: source.id.clone(),
                    label: source.label.clone(),
                    filter: source.filter.clone(),
                    spec: None,
                });
            }
            fx.dirty = true;
            Ok(())
        }
        Command::AddDestination { destination } => {
            let r = existing(user, record)?;
            let address = Destination::validate_address(destination.channel, &destination.address)
                .map_err(|e| ("invalid", format!("address: {e}")))?;
            let id = destination.id.clone();
            let destination = Destination {
                address,
                ..destination
            };
            if let Some(old) = r.destinations.iter().find(|d| d.id == id)
                && AddressEntry::indexed(old.channel)
                && old.address_key() != destination.address_key()
            {
                fx.index
                    .push((AddressEntry::key(old.channel, &old.address), None));
                r.reach.presence.remove(&old.address_key());
            }
            if AddressEntry::indexed(destination.channel) {
                fx.index.push((
                    AddressEntry::key(destination.channel, &destination.address),
                    Some(AddressEntry {
                        user: user.clone(),
                        destination_id: id.clone(),
                        channel: destination.channel,
                        address: destination.address.clone(),
                    }),
                ));
            }
            let limit = limits.max_destinations;
            upsert(
                &mut r.destinations,
                destination,
                |d| d.id == id,
                limit,
                "destinations",
            )?;
            fx.dirty = true;
            Ok(())
        }
        Command::SetAllowedSenders {
            senders,
            require_authenticated,
        } => {
            let r = existing(user, record)?;
            r.require_authenticated_mail = require_authenticated;
            r.allowed_senders = tocsin_model::validate_allowed_senders(&senders)
                .map_err(|e| ("invalid", format!("allowed_senders: {e}")))?;
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveDestination { destination_id } => {
            let r = existing(user, record)?;
            if let Some(p) = &r.reach.policy
                && p.steps
                    .iter()
                    .chain(p.urgent_steps.iter().flatten())
                    .any(|s| s.destinations.contains(&destination_id))
            {
                return Err((
                    "invalid",
                    format!(
                        "the escalation policy names destination {destination_id}; change the policy first"
                    ),
                ));
            }
            let d = take(
                &mut r.destinations,
                |d| d.id == destination_id,
                "destination",
                &destination_id,
            )?;
            if AddressEntry::indexed(d.channel) {
                fx.index
                    .push((AddressEntry::key(d.channel, &d.address), None));
                r.reach.presence.remove(&d.address_key());
            }
            fx.dirty = true;
            Ok(())
        }
        Command::SetPolicy { policy } => {
            let r = existing(user, record)?;
            if let Some(p) = &policy {
                let problems = p.problems(&r.destinations);
                if !problems.is_empty() {
                    return Err(("invalid", problems.join("; ")));
                }
            }
            r.reach.policy = policy;
            fx.dirty = true;
            Ok(())
        }
    }
}

/// The user's record, or the refusal for a command to a user that does not exist.
fn existing<'a>(
    user: &UserId,
    record: &'a mut Option<UserRecord>,
) -> Result<&'a mut UserRecord, Refusal> {
    record
        .as_mut()
        .ok_or(("not_found", format!("user {user} does not exist")))
}

/// Replace the entry `same` finds, or add `item` if there is room for `limit` entries.
fn upsert<T>(
    list: &mut Vec<T>,
    item: T,
    same: impl Fn(&T) -> bool,
    limit: usize,
    what: &str,
) -> Result<(), Refusal> {
    match list.iter().position(same) {
        Some(i) => list[i] = item,
        None if list.len() >= limit => {
            return Err(("invalid", format!("at most {limit} {what} per user")));
        }
        None => list.push(item),
    }
    Ok(())
}

/// Remove and return the entry `same` finds.
fn take<T>(
    list: &mut Vec<T>,
    same: impl Fn(&T) -> bool,
    what: &str,
    id: &str,
) -> Result<T, Refusal> {
    let i = list
        .iter()
        .position(same)
        .ok_or(("not_found", format!("no {what} {id}")))?;
    Ok(list.remove(i))
}

fn validate_source(source: &Source) -> Result<(), Refusal> {
    if let Some(e) = source.filter.validate("filter.").into_iter().next() {
        return Err(("invalid", e.to_string()));
    }
    match &source.spec {
        SourceSpec::Feed { url, .. } => tocsin_model::validate_feed_url(url)
            .map(|_| ())
            .map_err(|e| ("invalid", format!("url: {e}"))),
        SourceSpec::Imap {
            host,
            port,
            username,
            mailbox,
            ..
        } => {
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                Err(("invalid", format!("host: {host:?} is not a host name")))
            } else if *port == 0 {
                Err(("invalid", "port: must be 1-65535".into()))
            } else if username.is_empty() || username.len() > 320 {
                Err((
                    "invalid",
                    "username: needed (at most 320 characters)".into(),
                ))
            } else if mailbox.is_empty()
                || mailbox.len() > 200
                || mailbox
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                Err((
                    "invalid",
                    format!("mailbox: {mailbox:?} is not a mailbox name"),
                ))
            } else {
                Ok(())
            }
        }
    }
}

fn subscription(user: &UserId, source: &Source, op: SubscriptionOp) -> Option<FeedSubscription> {
    let SourceSpec::Feed {
        url,
        deliver_existing,
    } = &source.spec
    else {
        return None;
    };
    Some(FeedSubscription {
        op,
        user: user.clone(),
        source_id: source.id.clone(),
        url: url.clone(),
        filter: source.filter.clone(),
        deliver_existing: *deliver_existing,
        label: source.label.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::*;

    fn user() -> UserId {
        UserId::parse("u1").unwrap()
    }

    fn create() -> AvatarMessage {
        AvatarMessage::Command {
            command_id: "c1".into(),
            command: Command::CreateUser {
                name: "Ann".into(),
                token_hash: "h".into(),
                feed_token_hash: "f".into(),
                inbound_token_hash: String::new(),
            },
            reply_to: Some("inbox.1".into()),
        }
    }

    fn notify(id: &str, key: Option<&str>) -> AvatarMessage {
        AvatarMessage::Notify {
            notification: Notification {
                id: NotificationId(id.into()),
                user: user(),
                source: SourceRef {
                    kind: SourceKind::Publish,
                    id: None,
                    label: String::new(),
                },
                title: "t".into(),
                body: String::new(),
                url: None,
                priority: Priority::DEFAULT,
                tags: vec![],
                created_at_ms: 0,
                published_at_ms: None,
                dedup_key: key.map(Into::into),
            },
        }
    }

    const LIMITS: Limits = Limits {
        max_sources: 2,
        max_destinations: 2,
        links: Links {
            base_url: String::new(),
        },
    };

    fn limits_with_links() -> Limits {
        Limits {
            max_sources: 5,
            max_destinations: 5,
            links: Links {
                base_url: "https://tocsin.example.org".into(),
            },
        }
    }

    fn command(c: Command) -> AvatarMessage {
        AvatarMessage::Command {
            command_id: "c".into(),
            command: c,
            reply_to: Some("i".into()),
        }
    }

    fn add_dest(id: &str, channel: Channel, address: &str) -> AvatarMessage {
        command(Command::AddDestination {
            destination: Destination {
                id: id.into(),
                channel,
                address: address.into(),
                secret: None,
                label: String::new(),
                push_format: None,
                created_at_ms: 0,
            },
        })
    }

    fn channels(fx: &Effects) -> Vec<&str> {
        fx.jobs
            .iter()
            .map(|j| j.destination.channel.as_str())
            .collect()
    }

    /// A user with IM, SMS and e-mail, and a policy: IM if present (wait 60 s), then SMS
    /// (wait 60 s), then e-mail.
    fn reachable(rec: &mut Option<UserRecord>, l: &Limits) {
        apply(&user(), rec, create(), l, 1);
        for (id, ch, a) in [
            ("im", Channel::Xmpp, "Ann@Example.org"),
            ("sms", Channel::Sms, "+1 555 000 1111"),
            ("mail", Channel::Email, "ann@example.org"),
        ] {
            let fx = apply(&user(), rec, add_dest(id, ch, a), l, 1);
            assert!(fx.reply.unwrap().1.ok, "{id}");
        }
        let step = |c: Channel, when: Condition, wait_secs: u64| Step {
            channels: vec![c],
            when,
            wait_secs,
            ..Default::default()
        };
        let policy = Policy {
            steps: vec![
                step(Channel::Xmpp, Condition::Present, 60),
                step(Channel::Sms, Condition::Always, 60),
                step(Channel::Email, Condition::Always, 0),
            ],
            urgent_steps: None,
            quiet_hours: None,
        };
        let fx = apply(
            &user(),
            rec,
            command(Command::SetPolicy {
                policy: Some(policy),
            }),
            l,
            1,
        );
        assert!(fx.reply.unwrap().1.ok);
    }

    /// The timer scheduler's wake-up, handled at `now`.
    fn tick(rec: &mut Option<UserRecord>, l: &Limits, now: Millis) -> Effects {
        apply(&user(), rec, AvatarMessage::Tick { at_ms: 0 }, l, now)
    }

    fn present(show: Show, at: i64) -> AvatarMessage {
        AvatarMessage::Presence {
            address: "xmpp:ann@example.org".into(),
            show,
            at_ms: at,
        }
    }

    #[test]
    fn escalation_follows_presence_and_stops_on_ack() {
        let l = limits_with_links();
        let mut rec = None;
        reachable(&mut rec, &l);
        let r = rec.as_ref().unwrap();
        assert_eq!(r.destinations[0].address, "ann@example.org");
        assert_eq!(r.destinations[1].address, "+15550001111");
        // present: IM first, SMS only after the wait
        let fx = apply(&user(), &mut rec, present(Show::Chat, 5), &l, 5);
        assert_eq!(fx.outcome, "presence");
        let fx = apply(&user(), &mut rec, notify("n1", None), &l, 1_000);
        assert_eq!(channels(&fx), ["xmpp"]);
        let job = &fx.jobs[0];
        assert_eq!(job.reference, Some(1));
        assert!(
            job.ack_url
                .as_deref()
                .unwrap()
                .starts_with("https://tocsin.example.org/v1/ack/u1/n1/")
        );
        assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(61_000));
        // a tick before it is due does nothing
        let fx = tick(&mut rec, &l, 60_999);
        assert!(fx.jobs.is_empty());
        let fx = tick(&mut rec, &l, 61_000);
        assert_eq!(channels(&fx), ["sms"]);
        // the same tick again (a redelivery): nothing more
        let fx = tick(&mut rec, &l, 61_001);
        assert!(fx.jobs.is_empty());
        // acked over IM: nothing further, and a second ack records nothing
        let reply = |text: &str| AvatarMessage::Reply {
            channel: Channel::Xmpp,
            address: "ann@example.org".into(),
            text: text.into(),
            at_ms: 70_000,
        };
        let fx = apply(&user(), &mut rec, reply("ack"), &l, 70_000);
        assert_eq!(fx.history.len(), 1);
        assert!(
            matches!(&fx.history[0], HistoryRecord::Timeline { entry, .. } if entry.kind == "acked")
        );
        assert_eq!(fx.jobs.len(), 1, "the IM answer");
        assert_eq!(fx.jobs[0].kind, JobKind::Reply);
        assert_eq!(fx.jobs[0].notification.title, "Acknowledged 1.");
        assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), None);
        let fx = tick(&mut rec, &l, 200_000);
        assert!(fx.jobs.is_empty());
        let fx = apply(&user(), &mut rec, reply("ack 1"), &l, 200_000);
        assert!(fx.history.is_empty());
        // away: the IM step is skipped, SMS goes out at once
        apply(&user(), &mut rec, present(Show::Away, 6), &l, 6);
        let fx = apply(&user(), &mut rec, notify("n2", None), &l, 300_000);
        assert_eq!(channels(&fx), ["sms"]);
        // the SMS fails for good: e-mail at once
        let outcome = AvatarMessage::Outcome {
            outcome: DeliveryOutcome {
                job_id: "n2:sms".into(),
                notification_id: NotificationId("n2".into()),
                user: user(),
                destination_id: "sms".into(),
                channel: Channel::Sms,
                delivered: false,
                detail: "21211 invalid number".into(),
                attempts: 1,
                at_ms: 300_100,
            },
        };
        let fx = apply(&user(), &mut rec, outcome, &l, 300_100);
        assert_eq!(channels(&fx), ["email"]);
        assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), None);
        // an ack through the API for a notification that is over is still recorded once
        let ack = AvatarMessage::Ack {
            notification_id: NotificationId("n2".into()),
            via: "link".into(),
            at_ms: 1,
        };
        assert_eq!(
            apply(&user(), &mut rec, ack.clone(), &l, 400_000)
                .history
                .len(),
            1
        );
        assert!(
            apply(&user(), &mut rec, ack, &l, 400_001)
                .history
                .is_empty()
        );
    }

    #[test]
    fn a_destination_named_again_in_a_later_step_is_sent_again() {
        let l = limits_with_links();
        let mut rec = None;
        reachable(&mut rec, &l);
        let reminder = Policy {
            steps: vec![
                Step {
                    channels: vec![Channel::Email],
                    wait_secs: 60,
                    ..Default::default()
                },
                Step {
                    channels: vec![Channel::Email],
                    ..Default::default()
                },
            ],
            urgent_steps: None,
            quiet_hours: None,
        };
        let set = command(Command::SetPolicy {
            policy: Some(reminder),
        });
        assert!(apply(&user(), &mut rec, set, &l, 1).reply.unwrap().1.ok);
        let first = apply(&user(), &mut rec, notify("n1", None), &l, 1_000);
        let again = tick(&mut rec, &l, 61_000);
        assert_eq!(channels(&first), ["email"]);
        assert_eq!(channels(&again), ["email"]);
        // distinct ids: the bus's duplicate window and delivery's memory of sent jobs must
        // not take the reminder for a repeat of the first
        assert_eq!(first.jobs[0].job_id, "n1:mail");
        assert_eq!(again.jobs[0].job_id, "n1:mail:s1");
    }

    #[test]
    fn low_priority_never_escalates_and_mute_holds_all_but_urgent() {
        let l = limits_with_links();
        let mut rec = None;
        reachable(&mut rec, &l);
        let mut low = notify("n1", None);
        if let AvatarMessage::Notify { notification } = &mut low {
            notification.priority = Priority::new(2).unwrap();
        }
        let fx = apply(&user(), &mut rec, low, &l, 1_000);
        assert_eq!(channels(&fx), ["sms"]);
        assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), None);
        let reply = AvatarMessage::Reply {
            channel: Channel::Xmpp,
            address: "ann@example.org".into(),
            text: "mute 1h".into(),
            at_ms: 2_000,
        };
        let fx = apply(&user(), &mut rec, reply, &l, 2_000);
        assert!(fx.jobs[0].notification.title.starts_with("Muted until"));
        assert!(
            apply(&user(), &mut rec, notify("n2", None), &l, 3_000)
                .jobs
                .is_empty()
        );
        let mut urgent = notify("n3", None);
        if let AvatarMessage::Notify { notification } = &mut urgent {
            notification.priority = Priority::URGENT;
        }
        assert_eq!(
            channels(&apply(&user(), &mut rec, urgent, &l, 3_000)),
            ["sms"]
        );
        // replies from an address nobody registered are dropped
        let stranger = AvatarMessage::Reply {
            channel: Channel::Xmpp,
            address: "eve@example.org".into(),
            text: "ack all".into(),
            at_ms: 4_000,
        };
        let fx = apply(&user(), &mut rec, stranger, &l, 4_000);
        assert_eq!(fx.outcome, "reply_unknown_address");
        assert!(fx.jobs.is_empty() && fx.history.is_empty());
    }

    #[test]
    fn quiet_hours_hold_until_they_end_or_the_user_is_present() {
        let l = limits_with_links();
        let mut rec = None;
        reachable(&mut rec, &l);
        let mut p = rec.as_ref().unwrap().reach.policy.clone().unwrap();
        p.quiet_hours = Some(QuietHours {
            start: "00:00".into(),
            end: "06:00".into(),
            tz: "UTC".into(),
        });
        apply(
            &user(),
            &mut rec,
            command(Command::SetPolicy { policy: Some(p) }),
            &l,
            1,
        );
        // 01:00 UTC on day 0
        let fx = apply(&user(), &mut rec, notify("n1", None), &l, 3_600_000);
        assert!(fx.jobs.is_empty());
        assert_eq!(
            rec.as_ref().unwrap().reach.earliest_due(),
            Some(6 * 3_600_000)
        );
        // the user shows up at 02:00: the IM step goes out
        let fx = apply(
            &user(),
            &mut rec,
            present(Show::Available, 7_200_000),
            &l,
            7_200_000,
        );
        assert_eq!(channels(&fx), ["xmpp"]);
        assert_eq!(
            rec.as_ref().unwrap().reach.earliest_due(),
            Some(7_200_000 + 60_000)
        );
    }

    #[test]
    fn address_index_follows_destinations() {
        let l = limits_with_links();
        let mut rec = None;
        apply(&user(), &mut rec, create(), &l, 1);
        let fx = apply(
            &user(),
            &mut rec,
            add_dest("im", Channel::Xmpp, "ann@example.org"),
            &l,
            1,
        );
        assert_eq!(fx.index.len(), 1);
        let (key, entry) = &fx.index[0];
        assert_eq!(key, &AddressEntry::key(Channel::Xmpp, "ann@example.org"));
        assert_eq!(entry.as_ref().unwrap().destination_id, "im");
        // moved to another address: the old key goes
        let fx = apply(
            &user(),
            &mut rec,
            add_dest("im", Channel::Xmpp, "ann@other.org"),
            &l,
            1,
        );
        assert_eq!(fx.index.len(), 2);
        assert!(fx.index[0].1.is_none());
        let fx = apply(
            &user(),
            &mut rec,
            command(Command::RemoveDestination {
                destination_id: "im".into(),
            }),
            &l,
            1,
        );
        assert_eq!(
            fx.index,
            vec![(AddressEntry::key(Channel::Xmpp, "ann@other.org"), None)]
        );
        let fx = apply(
            &user(),
            &mut rec,
            add_dest("hook", Channel::Webhook, "https://example.org/h"),
            &l,
            1,
        );
        assert!(fx.index.is_empty());
    }

    #[test]
    fn create_is_idempotent_for_the_same_token() {
        let mut rec = None;
        let fx = apply(&user(), &mut rec, create(), &LIMITS, 5);
        assert!(fx.dirty);
        assert!(fx.reply.as_ref().unwrap().1.ok);
        let fx = apply(&user(), &mut rec, create(), &LIMITS, 6);
        assert!(fx.reply.unwrap().1.ok);
        assert!(!fx.dirty);
        let other = AvatarMessage::Command {
            command_id: "c2".into(),
            command: Command::CreateUser {
                name: "X".into(),
                token_hash: "other".into(),
                feed_token_hash: "f".into(),
                inbound_token_hash: String::new(),
            },
            reply_to: Some("i".into()),
        };
        let fx = apply(&user(), &mut rec, other, &LIMITS, 7);
        assert_eq!(fx.reply.unwrap().1.code.as_deref(), Some("exists"));
    }

    #[test]
    fn notifications_route_once_and_dedup_by_content() {
        let mut rec = None;
        assert_eq!(
            apply(&user(), &mut rec, notify("n1", None), &LIMITS, 1).outcome,
            "no_user"
        );
        apply(&user(), &mut rec, create(), &LIMITS, 1);
        let fx = apply(&user(), &mut rec, notify("n1", Some("link")), &LIMITS, 2);
        assert_eq!(fx.outcome, "routed");
        assert_eq!(fx.history.len(), 1);
        let fx = apply(&user(), &mut rec, notify("n1", Some("link")), &LIMITS, 3);
        assert_eq!(fx.outcome, "duplicate");
        assert!(fx.history.is_empty());
        let fx = apply(&user(), &mut rec, notify("n2", Some("link")), &LIMITS, 3);
        assert_eq!(fx.outcome, "duplicate_content");
        assert!(fx.history.is_empty());
    }

    #[test]
    fn sources_are_validated_limited_and_subscribed() {
        let mut rec = None;
        apply(&user(), &mut rec, create(), &LIMITS, 1);
        let add = |id: &str, url: &str, regex: Option<&str>| AvatarMessage::Command {
            command_id: format!("add-{id}"),
            command: Command::AddSource {
                source: Source {
                    id: id.into(),
                    spec: SourceSpec::Feed {
                        url: url.into(),
                        deliver_existing: false,
                    },
                    filter: Filter {
                        regex: regex.map(Into::into),
                        ..Default::default()
                    },
                    label: String::new(),
                    created_at_ms: 1,
                },
            },
            reply_to: Some("i".into()),
        };
        let fx = apply(
            &user(),
            &mut rec,
            add("s1", "https://example.org/rss", None),
            &LIMITS,
            1,
        );
        assert_eq!(fx.subscriptions.len(), 1);
        assert_eq!(fx.subscriptions[0].op, SubscriptionOp::Upsert);
        let fx = apply(&user(), &mut rec, add("s2", "ftp://x/", None), &LIMITS, 1);
        let reply = fx.reply.unwrap().1;
        assert!(reply.message.unwrap().starts_with("url:"));
        let fx = apply(
            &user(),
            &mut rec,
            add("s2", "https://a.org/", Some("(")),
            &LIMITS,
            1,
        );
        assert!(
            fx.reply
                .unwrap()
                .1
                .message
                .unwrap()
                .starts_with("filter.regex")
        );
        apply(
            &user(),
            &mut rec,
            add("s2", "https://a.org/", None),
            &LIMITS,
            1,
        );
        let fx = apply(
            &user(),
            &mut rec,
            add("s3", "https://b.org/", None),
            &LIMITS,
            1,
        );
        assert!(fx.reply.unwrap().1.message.unwrap().contains("at most 2"));
        let rm = AvatarMessage::Command {
            command_id: "rm".into(),
            command: Command::RemoveSource {
                source_id: "s1".into(),
            },
            reply_to: None,
        };
        let fx = apply(&user(), &mut rec, rm, &LIMITS, 1);
        assert_eq!(fx.subscriptions[0].op, SubscriptionOp::Remove);
        assert_eq!(rec.unwrap().sources.len(), 1);
    }

    #[test]
    fn destinations_get_jobs_and_outcomes_become_timeline_entries() {
        let mut rec = None;
        apply(&user(), &mut rec, create(), &LIMITS, 1);
        let add = |id: &str, channel: Channel, address: &str| AvatarMessage::Command {
            command_id: format!("d-{id}"),
            command: Command::AddDestination {
                destination: Destination {
                    id: id.into(),
                    channel,
                    address: address.into(),
                    secret: None,
                    label: String::new(),
                    push_format: None,
                    created_at_ms: 1,
                },
            },
            reply_to: Some("i".into()),
        };
        let fx = apply(
            &user(),
            &mut rec,
            add("d1", Channel::Webhook, "https://hooks.example/x"),
            &LIMITS,
            1,
        );
        assert!(fx.reply.unwrap().1.ok);
        let fx = apply(
            &user(),
            &mut rec,
            add("d2", Channel::Webhook, "ftp://x"),
            &LIMITS,
            1,
        );
        assert!(fx.reply.unwrap().1.message.unwrap().starts_with("address:"));
        let fx = apply(
            &user(),
            &mut rec,
            add("d3", Channel::Sms, "555-0001"),
            &LIMITS,
            1,
        );
        assert!(
            fx.reply
                .unwrap()
                .1
                .message
                .unwrap()
                .contains("not an E.164 phone number")
        );
        let fx = apply(&user(), &mut rec, notify("n1", None), &LIMITS, 2);
        assert_eq!(fx.jobs.len(), 1);
        assert_eq!(fx.jobs[0].job_id, "n1:d1");
        let outcome = AvatarMessage::Outcome {
            outcome: DeliveryOutcome {
                job_id: "n1:d1".into(),
                notification_id: NotificationId("n1".into()),
                user: user(),
                destination_id: "d1".into(),
                channel: Channel::Webhook,
                delivered: true,
                detail: "HTTP 200".into(),
                attempts: 3,
                at_ms: 3,
            },
        };
        let fx = apply(&user(), &mut rec, outcome, &LIMITS, 3);
        assert_eq!(fx.outcome, "delivered");
        match &fx.history[0] {
            HistoryRecord::Timeline { entry, .. } => {
                assert_eq!(entry.kind, "delivered");
                assert_eq!(entry.channel, Some(Channel::Webhook));
                // it took three: the timeline says so
                assert_eq!(entry.detail, "d1: HTTP 200 (attempt 3)");
            }
            other => panic!("{other:?}"),
        }
    }
}
