//! The avatar's decisions, message by message.

use super::*;
use tocsin_model::*;

pub(crate) fn user() -> UserId {
    UserId::parse("u1").unwrap()
}

pub(crate) fn create() -> AvatarMessage {
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

pub(crate) fn notify(id: &str, key: Option<&str>) -> AvatarMessage {
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

/// A notification for `user()`: a feed item of source `s1` ("bikes") when `kind` is `Feed`,
/// else one with no source id.
pub(crate) fn item_of(id: &str, kind: SourceKind, title: &str, priority: u8) -> AvatarMessage {
    AvatarMessage::Notify {
        notification: Notification {
            id: NotificationId(id.into()),
            user: user(),
            source: SourceRef {
                kind,
                id: (kind == SourceKind::Feed).then(|| "s1".into()),
                label: "bikes".into(),
            },
            title: title.into(),
            body: String::new(),
            url: None,
            priority: Priority::new(priority).unwrap(),
            tags: vec![],
            created_at_ms: 0,
            published_at_ms: None,
            dedup_key: None,
        },
    }
}

pub(crate) const LIMITS: Limits = Limits {
    max_sources: 2,
    max_destinations: 2,
    links: Links {
        base_url: String::new(),
    },
};

pub(crate) fn limits_with_links() -> Limits {
    Limits {
        max_sources: 5,
        max_destinations: 5,
        links: Links {
            base_url: "https://tocsin.example.org".into(),
        },
    }
}

/// Feed source `s1`, labelled `label`, with default settings.
pub(crate) fn feed_source(label: &str) -> Source {
    Source {
        id: "s1".into(),
        spec: SourceSpec::Feed {
            active_hours: None,
            request: Default::default(),
            listing: Default::default(),
            url: "https://example.org/bikes.rss".into(),
            deliver_existing: false,
            poll_interval_secs: None,
            extract: None,
        },
        filter: Default::default(),
        label: label.into(),
        created_at_ms: 1,
        settings: Default::default(),
    }
}

pub(crate) fn command(c: Command) -> AvatarMessage {
    AvatarMessage::Command {
        command_id: "c".into(),
        command: c,
        reply_to: Some("i".into()),
    }
}

pub(crate) fn add_dest(id: &str, channel: Channel, address: &str) -> AvatarMessage {
    command(Command::AddDestination {
        destination: Destination {
            id: id.into(),
            channel,
            address: address.into(),
            secret: None,
            label: String::new(),
            push_format: None,
            throttle: None,
            verification: None,
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
pub(crate) fn reachable(rec: &mut Option<UserRecord>, l: &Limits) {
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
        ..Default::default()
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
    assert_eq!(fx.outcome, Outcome::Presence);
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
        ..Default::default()
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
    assert_eq!(fx.outcome, Outcome::ReplyUnknownAddress);
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
        command(Command::SetPolicy { policy: Some(*p) }),
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
    assert_eq!(fx.reply.unwrap().1.code, Some(RefusalCode::Exists));
}

#[test]
fn notifications_route_once_and_dedup_by_content() {
    let mut rec = None;
    assert_eq!(
        apply(&user(), &mut rec, notify("n1", None), &LIMITS, 1).outcome,
        Outcome::NoUser
    );
    apply(&user(), &mut rec, create(), &LIMITS, 1);
    let fx = apply(&user(), &mut rec, notify("n1", Some("link")), &LIMITS, 2);
    assert_eq!(fx.outcome, Outcome::Routed);
    assert_eq!(fx.history.len(), 1);
    let fx = apply(&user(), &mut rec, notify("n1", Some("link")), &LIMITS, 3);
    assert_eq!(fx.outcome, Outcome::Duplicate);
    assert!(fx.history.is_empty());
    let fx = apply(&user(), &mut rec, notify("n2", Some("link")), &LIMITS, 3);
    assert_eq!(fx.outcome, Outcome::DuplicateContent);
    // a publish with the key of one still open: no new notification, an entry on the first
    assert!(matches!(
        fx.history.as_slice(),
        [HistoryRecord::Timeline { notification_id, entry, .. }]
            if notification_id.as_str() == "n1" && entry.kind == "repeated"
    ));
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
                    active_hours: None,
                    request: Default::default(),
                    listing: Default::default(),
                    url: url.into(),
                    deliver_existing: false,
                    poll_interval_secs: None,
                    extract: None,
                },
                filter: Filter {
                    regex: regex.map(Into::into),
                    ..Default::default()
                },
                label: String::new(),
                created_at_ms: 1,
                settings: Default::default(),
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
                throttle: None,
                verification: None,
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
    assert_eq!(fx.outcome, Outcome::Delivered);
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

/// A feed item of source `s1` for the user.
pub(crate) fn feed_item(id: &str, title: &str, priority: u8) -> AvatarMessage {
    item_of(id, SourceKind::Feed, title, priority)
}

/// The `routed` entry's detail of the notification `fx` recorded first.
pub(crate) fn routed(fx: &Effects) -> &str {
    match &fx.history[0] {
        HistoryRecord::Notification { entry, .. } => &entry.detail,
        other => panic!("not a notification: {other:?}"),
    }
}
