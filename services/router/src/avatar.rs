//! The avatar's decisions, as a pure function: given the user's record and one message, what
//! changes and what goes out. No I/O here; `lib.rs` persists and publishes the effects.

use tocsin_model::{
    AvatarMessage, Command, CommandReply, DeliveryJob, Destination, FeedSubscription,
    HistoryRecord, Millis, Notification, Source, SourceSpec, SubscriptionOp, TimelineEntry, UserId,
    UserRecord,
};

/// Limits an avatar enforces on its user's configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_sources: usize,
    pub max_destinations: usize,
}

/// What handling one message produced.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub history: Vec<HistoryRecord>,
    pub subscriptions: Vec<FeedSubscription>,
    pub jobs: Vec<DeliveryJob>,
    pub reply: Option<(String, CommandReply)>,
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
        AvatarMessage::Notify { notification } => route(record, notification, now),
        AvatarMessage::Command {
            command_id,
            command,
            reply_to,
        } => {
            let mut fx = Effects::default();
            let result = command_effects(user, record, command, limits, now, &mut fx);
            fx.outcome = if result.is_ok() { "applied" } else { "refused" };
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
            let mut fx = Effects {
                outcome: "status",
                ..Default::default()
            };
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
            let known = record.as_ref().is_some_and(|_| outcome.user == *user);
            if !known {
                return Effects {
                    outcome: "no_user",
                    ..Default::default()
                };
            }
            let kind = if outcome.delivered {
                "delivered"
            } else {
                "failed"
            };
            Effects {
                history: vec![HistoryRecord::Timeline {
                    user: user.clone(),
                    notification_id: outcome.notification_id,
                    entry: TimelineEntry {
                        at_ms: outcome.at_ms,
                        kind: kind.into(),
                        channel: Some(outcome.channel),
                        detail: format!("{}: {}", outcome.destination_id, outcome.detail),
                    },
                }],
                outcome: kind,
                ..Default::default()
            }
        }
    }
}

fn route(record: &mut Option<UserRecord>, n: Notification, now: Millis) -> Effects {
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
    let jobs: Vec<DeliveryJob> = r
        .destinations
        .iter()
        .map(|d| DeliveryJob {
            job_id: format!("{}:{}", n.id, d.id),
            notification: n.clone(),
            destination: d.clone(),
        })
        .collect();
    let detail = if jobs.is_empty() {
        "kept in history (no destinations)".to_owned()
    } else {
        let to: Vec<String> = jobs
            .iter()
            .map(|j| format!("{} {}", j.destination.channel.as_str(), j.destination.id))
            .collect();
        format!("to {}", to.join(", "))
    };
    Effects {
        history: vec![HistoryRecord::Notification {
            notification: n,
            entry: TimelineEntry {
                at_ms: now,
                kind: "routed".into(),
                channel: None,
                detail,
            },
        }],
        jobs,
        dirty: true,
        outcome: "routed",
        ..Default::default()
    }
}

type Refusal = (&'static str, String);

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
                source_status: Default::default(),
                recent: Default::default(),
            });
            fx.dirty = true;
            Ok(())
        }
        Command::AddSource { source } => {
            let r = existing(user, record)?;
            validate_source(&source)?;
            let upserted = subscription(user, &source, SubscriptionOp::Upsert);
            let id = source.id.clone();
            upsert(
                &mut r.sources,
                source,
                |s| s.id == id,
                limits.max_sources,
                "sources",
            )?;
            fx.subscriptions.push(upserted);
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveSource { source_id } => {
            let r = existing(user, record)?;
            let source = take(&mut r.sources, |s| s.id == source_id, "source", &source_id)?;
            r.source_status.remove(&source_id);
            fx.subscriptions
                .push(subscription(user, &source, SubscriptionOp::Remove));
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
        Command::SetAllowedSenders { senders } => {
            let r = existing(user, record)?;
            r.allowed_senders = tocsin_model::validate_allowed_senders(&senders)
                .map_err(|e| ("invalid", format!("allowed_senders: {e}")))?;
            fx.dirty = true;
            Ok(())
        }
        Command::RemoveDestination { destination_id } => {
            let r = existing(user, record)?;
            take(
                &mut r.destinations,
                |d| d.id == destination_id,
                "destination",
                &destination_id,
            )?;
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
    }
}

fn subscription(user: &UserId, source: &Source, op: SubscriptionOp) -> FeedSubscription {
    let SourceSpec::Feed {
        url,
        deliver_existing,
    } = &source.spec;
    FeedSubscription {
        op,
        user: user.clone(),
        source_id: source.id.clone(),
        url: url.clone(),
        filter: source.filter.clone(),
        deliver_existing: *deliver_existing,
        label: source.label.clone(),
    }
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
    };

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
            add("d3", Channel::Sms, "+15550001111"),
            &LIMITS,
            1,
        );
        assert!(
            fx.reply
                .unwrap()
                .1
                .message
                .unwrap()
                .contains("not available yet")
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
                attempts: 1,
                at_ms: 3,
            },
        };
        let fx = apply(&user(), &mut rec, outcome, &LIMITS, 3);
        assert_eq!(fx.outcome, "delivered");
        match &fx.history[0] {
            HistoryRecord::Timeline { entry, .. } => {
                assert_eq!(entry.kind, "delivered");
                assert_eq!(entry.channel, Some(Channel::Webhook));
            }
            other => panic!("{other:?}"),
        }
    }
}
