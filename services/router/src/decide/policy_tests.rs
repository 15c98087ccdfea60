//! Named policies: which policy a notification follows (its source's, `feeds` for feed items,
//! else `default`), that `feeds` never pages by SMS, and that an escalation keeps its policy.

use crate::decide::tests::{command, feed_source, limits_with_links, reachable, routed, user};
use crate::decide::{Effects, apply};
use tocsin_model::*;

fn item(id: &str, kind: SourceKind) -> AvatarMessage {
    crate::decide::tests::item_of(id, kind, "Road bike", 3)
}

fn channels(fx: &Effects) -> Vec<&str> {
    fx.jobs
        .iter()
        .map(|j| j.destination.channel.as_str())
        .collect()
}

fn ok(fx: Effects) {
    let reply = fx.reply.expect("a reply").1;
    assert!(reply.ok, "{reply:?}");
}

fn refused(fx: Effects) -> CommandReply {
    let reply = fx.reply.expect("a reply").1;
    assert!(!reply.ok, "accepted");
    reply
}

fn set_policy(name: &str, steps: Vec<Step>) -> AvatarMessage {
    command(Command::SetNamedPolicy {
        name: name.into(),
        policy: Some(Policy {
            steps,
            urgent_steps: None,
            quiet_hours: None,
            ..Default::default()
        }),
    })
}

fn follow(policy: Option<&str>) -> AvatarMessage {
    command(Command::SetSourceSettings {
        source_id: "s1".into(),
        settings: SourceSettings {
            policy: policy.map(Into::into),
            ..Default::default()
        },
    })
}

fn step(c: Channel, wait_secs: u64) -> Step {
    Step {
        channels: vec![c],
        wait_secs,
        ..Default::default()
    }
}

/// A user with IM (present only), SMS and e-mail, a paging default policy, and a feed `s1`.
fn user_with_feed() -> Option<UserRecord> {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let add = command(Command::AddSource {
        source: feed_source("bikes"),
    });
    ok(apply(&user(), &mut rec, add, &l, 1));
    rec
}

#[test]
fn a_feed_item_never_pages_by_sms_unless_its_source_says_so() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    // away: the default policy's IM step is skipped, SMS is its next
    let fx = apply(&user(), &mut rec, item("n1", SourceKind::Feed), &l, 10);
    assert_eq!(channels(&fx), ["email"], "a feed item follows `feeds`");
    assert_eq!(
        routed(&fx),
        "policy feeds (what feeds follow): to email mail"
    );
    assert!(
        rec.as_ref().unwrap().reach.escalations.is_empty(),
        "nothing is left to escalate to"
    );
    // an alert follows the default policy and pages
    let fx = apply(&user(), &mut rec, item("n2", SourceKind::Publish), &l, 10);
    assert_eq!(channels(&fx), ["sms"]);
    assert!(routed(&fx).starts_with("policy default: to sms sms; escalating"));
    // a source that names a paging policy pages
    ok(apply(
        &user(),
        &mut rec,
        set_policy("pager", vec![step(Channel::Sms, 0)]),
        &l,
        20,
    ));
    ok(apply(&user(), &mut rec, follow(Some("pager")), &l, 20));
    let fx = apply(&user(), &mut rec, item("n3", SourceKind::Feed), &l, 30);
    assert_eq!(channels(&fx), ["sms"]);
    assert_eq!(
        routed(&fx),
        "policy pager (the source's setting): to sms sms"
    );
    // a policy a source follows stays; an unknown one cannot be followed
    let rm = command(Command::SetNamedPolicy {
        name: "pager".into(),
        policy: None,
    });
    let reply = refused(apply(&user(), &mut rec, rm.clone(), &l, 40));
    assert!(
        reply
            .message
            .as_deref()
            .unwrap_or("")
            .contains("sources s1"),
        "{reply:?}"
    );
    let reply = refused(apply(&user(), &mut rec, follow(Some("nope")), &l, 40));
    assert_eq!(reply.field.as_deref(), Some("policy"));
    ok(apply(&user(), &mut rec, follow(None), &l, 40));
    ok(apply(&user(), &mut rec, rm, &l, 40));
    assert!(rec.as_ref().unwrap().reach.policies.is_empty());
}

#[test]
fn an_escalation_keeps_to_its_own_policy() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    ok(apply(
        &user(),
        &mut rec,
        set_policy(
            "slow",
            vec![step(Channel::Email, 60), step(Channel::Sms, 0)],
        ),
        &l,
        1,
    ));
    ok(apply(&user(), &mut rec, follow(Some("slow")), &l, 1));
    let fx = apply(&user(), &mut rec, item("n1", SourceKind::Feed), &l, 1_000);
    assert_eq!(channels(&fx), ["email"]);
    let r = rec.as_ref().unwrap();
    assert_eq!(r.reach.escalations["n1"].policy.as_deref(), Some("slow"));
    // its next step is the named policy's, not the default's (which would send e-mail again)
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        61_000,
    );
    assert_eq!(channels(&fx), ["sms"]);
}

#[test]
fn policy_names_and_their_count_are_bounded() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    for bad in ["", "Pager", "-x", &"p".repeat(33), "a b"] {
        let reply = refused(apply(
            &user(),
            &mut rec,
            set_policy(bad, vec![step(Channel::Email, 0)]),
            &l,
            1,
        ));
        assert_eq!(reply.field.as_deref(), Some("name"), "{bad:?}");
    }
    for i in 0..Reach::MAX_POLICIES {
        ok(apply(
            &user(),
            &mut rec,
            set_policy(&format!("p{i}"), vec![step(Channel::Email, 0)]),
            &l,
            1,
        ));
    }
    let reply = refused(apply(
        &user(),
        &mut rec,
        set_policy("one-more", vec![step(Channel::Email, 0)]),
        &l,
        1,
    ));
    assert!(reply.message.unwrap_or_default().contains("at most 10"));
    // a policy naming a destination keeps that destination
    ok(apply(
        &user(),
        &mut rec,
        set_policy(
            "p0",
            vec![Step {
                destinations: vec!["mail".into()],
                ..Default::default()
            }],
        ),
        &l,
        1,
    ));
    let rm = command(Command::RemoveDestination {
        destination_id: "mail".into(),
    });
    refused(apply(&user(), &mut rec, rm, &l, 1));
}

fn set_default(policy: Policy) -> AvatarMessage {
    command(Command::SetPolicy {
        policy: Some(policy),
    })
}

fn alert(id: &str, key: &str) -> AvatarMessage {
    let mut msg = item(id, SourceKind::Publish);
    if let AvatarMessage::Notify { notification } = &mut msg {
        notification.dedup_key = Some(key.into());
    }
    msg
}

#[test]
fn a_policy_that_repeats_runs_its_steps_again_until_acknowledged() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    let policy = Policy {
        steps: vec![step(Channel::Email, 60)],
        repeat: 2,
        ..Default::default()
    };
    ok(apply(&user(), &mut rec, set_default(policy), &l, 1));
    let fx = apply(&user(), &mut rec, item("n1", SourceKind::Publish), &l, 0);
    let mut ids = vec![fx.jobs[0].job_id.clone()];
    let tick = |rec: &mut Option<UserRecord>, now: Millis| {
        apply(&user(), rec, AvatarMessage::Tick { at_ms: now }, &l, now)
    };
    for (round, at) in [(2, 60_000), (3, 120_000)] {
        let fx = tick(&mut rec, at);
        assert_eq!(channels(&fx), ["email"], "round {round}");
        ids.push(fx.jobs[0].job_id.clone());
        assert!(
            fx.history.iter().any(|h| matches!(h,
                HistoryRecord::Timeline { entry, .. }
                    if entry.detail.starts_with(&format!("step 1 (round {round})")))),
            "{:?}",
            fx.history
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 3, "each round's job is new: {ids:?}");
    // two repeats, then over
    assert!(tick(&mut rec, 180_000).jobs.is_empty());
    assert!(rec.as_ref().unwrap().reach.escalations.is_empty());
    // a repeat needs a pause
    let bad = Policy {
        steps: vec![step(Channel::Email, 0)],
        repeat: 1,
        ..Default::default()
    };
    let reply = refused(apply(&user(), &mut rec, set_default(bad), &l, 1));
    assert_eq!(reply.field.as_deref(), Some("repeat"));
}

#[test]
fn a_resolved_alert_is_told_where_it_reached_when_its_policy_says_so() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    let policy = Policy {
        steps: vec![step(Channel::Email, 60), step(Channel::Sms, 0)],
        tell_resolved: true,
        ..Default::default()
    };
    ok(apply(&user(), &mut rec, set_default(policy), &l, 1));
    apply(&user(), &mut rec, alert("a1", "disk"), &l, 0);
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        60_000,
    );
    assert_eq!(channels(&fx), ["sms"]);
    let resolve = AvatarMessage::Resolve {
        key: "disk".into(),
        via: "api".into(),
        at_ms: 70_000,
    };
    let fx = apply(&user(), &mut rec, resolve, &l, 70_000);
    let mut told: Vec<(&str, &str)> = fx
        .jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.notification.title.as_str()))
        .collect();
    told.sort();
    assert_eq!(
        told,
        [
            ("a1:mail:resolved", "Resolved: Road bike"),
            ("a1:sms:resolved", "Resolved: Road bike")
        ]
    );
    assert!(rec.as_ref().unwrap().reach.told.is_empty());
    match fx.history.as_slice() {
        [HistoryRecord::Timeline { entry, .. }] => {
            assert_eq!(entry.kind, "resolved");
            assert!(
                entry
                    .detail
                    .ends_with("told the 2 destination(s) it reached"),
                "{}",
                entry.detail
            );
        }
        other => panic!("{other:?}"),
    }
    // a policy that does not tell: nothing is kept, nothing is sent
    let quiet = Policy {
        steps: vec![step(Channel::Email, 0)],
        ..Default::default()
    };
    ok(apply(&user(), &mut rec, set_default(quiet), &l, 80_000));
    apply(&user(), &mut rec, alert("a2", "cpu"), &l, 80_000);
    assert!(rec.as_ref().unwrap().reach.told.is_empty());
    let resolve = AvatarMessage::Resolve {
        key: "cpu".into(),
        via: "api".into(),
        at_ms: 90_000,
    };
    assert!(
        apply(&user(), &mut rec, resolve, &l, 90_000)
            .jobs
            .is_empty()
    );
}

#[test]
fn an_acknowledgement_expires_while_the_alert_still_fires() {
    let l = limits_with_links();
    let mut rec = user_with_feed();
    let policy = Policy {
        steps: vec![step(Channel::Sms, 60), step(Channel::Email, 0)],
        ack_expires_secs: Some(600),
        ..Default::default()
    };
    ok(apply(&user(), &mut rec, set_default(policy), &l, 1));
    let tick = |rec: &mut Option<UserRecord>, now: Millis| {
        apply(&user(), rec, AvatarMessage::Tick { at_ms: now }, &l, now)
    };
    let ack = |rec: &mut Option<UserRecord>, now: Millis| {
        let msg = AvatarMessage::Ack {
            notification_id: NotificationId("a1".into()),
            via: "api".into(),
            at_ms: now,
        };
        apply(&user(), rec, msg, &l, now)
    };
    assert_eq!(
        channels(&apply(&user(), &mut rec, alert("a1", "disk"), &l, 0)),
        ["sms"]
    );
    assert_eq!(channels(&tick(&mut rec, 60_000)), ["email"]);
    // every step fired: it waits for an acknowledgement, with no timer
    let r = rec.as_ref().unwrap();
    assert!(r.reach.escalations["a1"].awaiting_ack);
    assert_eq!(r.reach.earliest_due(), None);
    let fx = ack(&mut rec, 100_000);
    match fx.history.as_slice() {
        [HistoryRecord::Timeline { entry, .. }] => assert!(
            entry
                .detail
                .ends_with("it starts again in 10m if the alert still fires"),
            "{}",
            entry.detail
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(700_000));
    // still firing when the ack expires: the steps start again, with new jobs
    let fx = tick(&mut rec, 700_000);
    assert_eq!(channels(&fx), ["sms"]);
    assert_eq!(fx.jobs[0].job_id, "a1:sms:s10");
    assert!(fx.history.iter().any(|h| matches!(h,
        HistoryRecord::Timeline { entry, .. } if entry.kind == "ack_expired")));
    // the new acknowledgement counts, and resolving ends it all
    assert_eq!(ack(&mut rec, 750_000).history.len(), 1);
    let resolve = AvatarMessage::Resolve {
        key: "disk".into(),
        via: "api".into(),
        at_ms: 800_000,
    };
    apply(&user(), &mut rec, resolve, &l, 800_000);
    assert!(rec.as_ref().unwrap().reach.escalations.is_empty());
    assert!(tick(&mut rec, 1_400_000).jobs.is_empty());
    // a notification that is no alert ends with its last step as before
    apply(
        &user(),
        &mut rec,
        item("n9", SourceKind::Publish),
        &l,
        2_000_000,
    );
    tick(&mut rec, 2_060_000);
    assert!(rec.as_ref().unwrap().reach.escalations.is_empty());
    // bounded
    let bad = Policy {
        steps: vec![step(Channel::Email, 0)],
        ack_expires_secs: Some(5),
        ..Default::default()
    };
    let reply = refused(apply(&user(), &mut rec, set_default(bad), &l, 1));
    assert_eq!(reply.field.as_deref(), Some("ack_expires_secs"));
}
