//! The avatar's decisions against what outside input could make it keep or do: the record's
//! size, the configuration's byte budget, the jobs one notification may cause.

use super::tests::{add_dest, command, create, limits_with_links, notify, reachable, user};
use super::*;
use tocsin_model::*;

/// What outside input puts into the record is bounded: the report's two mails with 600 KB
/// Message-IDs, and many large notifications escalating at once, leave a record that still
/// fits in one bus message (before, the first pushed it past 1 MiB and the avatar could
/// never save again).
#[test]
fn outside_input_cannot_grow_the_record_past_one_bus_message() {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let huge = |i: usize| {
        let AvatarMessage::Notify { mut notification } = notify(&format!("n{i}"), None) else {
            unreachable!()
        };
        notification.dedup_key = Some(format!("mid:{}{i}", "x".repeat(600_000)));
        notification.title = "t".repeat(50_000);
        notification.body = "b".repeat(500_000);
        notification.tags = vec!["tag".repeat(100); 1000];
        notification.priority = Priority::new(5).unwrap();
        AvatarMessage::Notify { notification }
    };
    let mut dropped = 0;
    for i in 0..60 {
        let fx = apply(&user(), &mut rec, huge(i), &l, 10 + i as i64);
        assert_eq!(fx.outcome, Outcome::Routed, "{i}");
        dropped += fx
            .history
            .iter()
            .filter(|h| matches!(h, HistoryRecord::Timeline { entry, .. } if entry.kind == "escalation_dropped"))
            .count();
    }
    let r = rec.as_ref().unwrap();
    let bytes = serde_json::to_vec(r).unwrap().len();
    assert!(bytes < budget::RECORD_LIMIT, "record of {bytes} bytes");
    assert!(
        r.reach.escalations.len() < 60 && dropped > 0,
        "the byte budget gives up the oldest escalations, and says so"
    );
    // the same key again is still a duplicate by content
    let AvatarMessage::Notify { mut notification } = huge(0) else {
        unreachable!()
    };
    notification.id = NotificationId("other".into());
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Notify { notification },
        &l,
        100,
    );
    assert_eq!(fx.outcome, Outcome::DuplicateContent);
}

/// A change that would take the configuration over its byte budget is refused whole, with
/// the sizes in the message, and leaves the record as it was.
#[test]
fn configuration_over_its_byte_budget_is_refused_and_undone() {
    let l = Limits {
        max_sources: 1000,
        ..limits_with_links()
    };
    let mut rec = None;
    apply(&user(), &mut rec, create(), &l, 1);
    let add = |i: usize| {
        command(Command::AddSource {
            source: Source {
                id: format!("s{i}"),
                spec: SourceSpec::Feed {
                    active_hours: None,
                    request: Default::default(),
                    listing: Default::default(),
                    url: format!("https://example.org/{i}/{}", "q".repeat(1900)),
                    deliver_existing: false,
                    poll_interval_secs: None,
                    extract: None,
                },
                filter: Filter {
                    any: vec!["w".repeat(100); 50],
                    exclude: vec!["x".repeat(100); 50],
                    ..Default::default()
                },
                label: String::new(),
                created_at_ms: 1,
                settings: Default::default(),
            },
        })
    };
    let mut refused = None;
    for i in 0..1000 {
        let fx = apply(&user(), &mut rec, add(i), &l, 1);
        let reply = fx.reply.unwrap().1;
        if !reply.ok {
            assert!(fx.subscriptions.is_empty(), "nothing subscribed");
            refused = Some((i, reply.message.unwrap()));
            break;
        }
    }
    let (at, message) = refused.expect("the budget refuses at some point");
    assert!(message.contains("over the budget of 512 KiB"), "{message}");
    let r = rec.unwrap();
    assert_eq!(r.sources.len(), at, "the refused source was not kept");
    assert!(budget::config_bytes(&r) <= budget::CONFIG_BUDGET);
}

/// A policy of ten zero-wait steps, each to five webhooks, would make one publish fifty
/// requests; one notification causes at most MAX_JOBS_PER_NOTIFICATION, and its timeline
/// says the policy was cut short.
#[test]
fn one_notification_causes_a_bounded_number_of_jobs() {
    let l = limits_with_links();
    let mut rec = None;
    apply(&user(), &mut rec, create(), &l, 1);
    for i in 0..5 {
        let fx = apply(
            &user(),
            &mut rec,
            add_dest(
                &format!("w{i}"),
                Channel::Webhook,
                &format!("https://h{i}.example/"),
            ),
            &l,
            1,
        );
        assert!(fx.reply.unwrap().1.ok);
    }
    let step = Step {
        channels: vec![Channel::Webhook],
        ..Default::default()
    };
    let policy = Policy {
        steps: vec![step; 10],
        urgent_steps: None,
        quiet_hours: None,
        ..Default::default()
    };
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::SetPolicy {
            policy: Some(policy),
        }),
        &l,
        1,
    );
    assert!(fx.reply.unwrap().1.ok);
    let fx = apply(&user(), &mut rec, notify("n1", None), &l, 2);
    assert_eq!(fx.jobs.len(), budget::MAX_JOBS_PER_NOTIFICATION as usize);
    let capped = fx.history.iter().any(|h| {
        matches!(h, HistoryRecord::Timeline { entry, .. }
            if entry.kind == "escalation_capped" && entry.detail.contains("sent to 0 of 5"))
    });
    assert!(capped, "{:?}", fx.history);
    assert!(
        rec.unwrap().reach.escalations.is_empty(),
        "the escalation is over"
    );
}
