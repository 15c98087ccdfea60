//! Silences in the avatar: what one holds (urgent items too), that a new one stops the
//! escalations it matches, the IM command, and the bounds.

use crate::decide::tests::{command, feed_source, limits_with_links, reachable, routed, user};
use crate::decide::{Effects, Outcome, apply};
use tocsin_model::*;

fn item(id: &str, priority: u8) -> AvatarMessage {
    crate::decide::tests::item_of(id, SourceKind::Feed, "Road bike", priority)
}

fn silence(id: &str, source: &str, starts: Millis, ends: Millis) -> AvatarMessage {
    command(Command::AddSilence {
        silence: Silence {
            id: id.into(),
            matcher: Matcher {
                source: Some(source.into()),
                ..Default::default()
            },
            starts_at_ms: starts,
            ends_at_ms: ends,
            comment: String::new(),
            created_at_ms: starts,
            window: None,
        },
    })
}

fn ok(fx: &Effects) {
    let reply = &fx.reply.as_ref().expect("a reply").1;
    assert!(reply.ok, "{reply:?}");
}

fn with_feed() -> Option<UserRecord> {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let add = command(Command::AddSource {
        source: feed_source("bikes"),
    });
    ok(&apply(&user(), &mut rec, add, &l, 1));
    rec
}

#[test]
fn a_silence_keeps_what_it_matches_in_history_until_it_ends() {
    let l = limits_with_links();
    let mut rec = with_feed();
    ok(&apply(
        &user(),
        &mut rec,
        silence("x1", "bikes", 100, 10_000),
        &l,
        100,
    ));
    // urgent too: a silence is asked for by name
    let fx = apply(&user(), &mut rec, item("n1", 5), &l, 200);
    assert_eq!(fx.outcome, Outcome::Routed);
    assert!(fx.jobs.is_empty());
    assert!(
        routed(&fx).starts_with(
            "kept in history: silenced by x1 (source bikes) until 1970-01-01 00:00 UTC"
        ),
        "{}",
        routed(&fx)
    );
    assert_eq!(
        fx.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
        [EventKind::Routed, EventKind::Silenced]
    );
    // over: reached again
    let fx = apply(&user(), &mut rec, item("n2", 3), &l, 10_000);
    assert_eq!(fx.jobs.len(), 1);
    // a window that has not begun holds nothing yet
    ok(&apply(
        &user(),
        &mut rec,
        silence("x2", "s1", 50_000, 60_000),
        &l,
        20_000,
    ));
    assert_eq!(
        apply(&user(), &mut rec, item("n3", 3), &l, 20_000)
            .jobs
            .len(),
        1
    );
    assert!(
        apply(&user(), &mut rec, item("n4", 3), &l, 50_000)
            .jobs
            .is_empty()
    );
}

#[test]
fn a_new_silence_stops_the_escalations_it_matches_and_ends_by_im() {
    let l = limits_with_links();
    let mut rec = with_feed();
    // an alert from the API escalating (away: SMS now, e-mail in a minute)
    let mut alert = item("a1", 3);
    if let AvatarMessage::Notify { notification } = &mut alert {
        notification.source = SourceRef {
            kind: SourceKind::Publish,
            id: None,
            label: "backups".into(),
        };
    }
    let fx = apply(&user(), &mut rec, alert, &l, 1_000);
    assert_eq!(fx.jobs.len(), 1);
    assert_eq!(rec.as_ref().unwrap().reach.escalations.len(), 1);
    // over IM: silence the topic by its label for two hours
    let reply = |text: &str, at: Millis| AvatarMessage::Reply {
        channel: Channel::Xmpp,
        address: "ann@example.org".into(),
        text: text.into(),
        at_ms: at,
    };
    let fx = apply(
        &user(),
        &mut rec,
        reply("silence 2h Backups", 2_000),
        &l,
        2_000,
    );
    assert!(rec.as_ref().unwrap().reach.escalations.is_empty());
    assert!(fx.history.iter().any(|h| matches!(
        h,
        HistoryRecord::Timeline { entry, notification_id, .. }
            if entry.kind == "silenced" && notification_id.as_str() == "a1"
    )));
    assert!(fx.events.iter().any(|e| e.kind == EventKind::Silenced));
    let answer = &fx.jobs[0].notification.title;
    assert!(
        answer.starts_with("Silenced backups until 1970-01-01 02:00 UTC (1 escalation(s) stopped)"),
        "{answer}"
    );
    // a feed's label names the feed's source id
    apply(
        &user(),
        &mut rec,
        reply("silence 30m BIKES", 3_000),
        &l,
        3_000,
    );
    let sources: Vec<Option<String>> = rec
        .as_ref()
        .unwrap()
        .reach
        .silences
        .iter()
        .map(|s| s.matcher.source.clone())
        .collect();
    assert_eq!(sources, [Some("backups".into()), Some("s1".into())]);
    let fx = apply(
        &user(),
        &mut rec,
        reply("unsilence bikes", 4_000),
        &l,
        4_000,
    );
    assert_eq!(fx.jobs[0].notification.title, "Ended 1 silence(s).");
    let fx = apply(&user(), &mut rec, reply("unsilence", 5_000), &l, 5_000);
    assert_eq!(fx.jobs[0].notification.title, "Ended 1 silence(s).");
    assert!(rec.as_ref().unwrap().reach.silences.is_empty());
}

#[test]
fn silences_are_bounded_and_expired_ones_make_room() {
    let l = limits_with_links();
    let mut rec = with_feed();
    for i in 0..silence::MAX_SILENCES {
        ok(&apply(
            &user(),
            &mut rec,
            silence(&format!("x{i}"), "bikes", 0, 1_000 + i as i64),
            &l,
            10,
        ));
    }
    let fx = apply(
        &user(),
        &mut rec,
        silence("more", "bikes", 0, 5_000),
        &l,
        10,
    );
    assert!(
        fx.reply
            .unwrap()
            .1
            .message
            .unwrap_or_default()
            .contains("at most 50")
    );
    // once the first has ended, there is room
    ok(&apply(
        &user(),
        &mut rec,
        silence("more", "bikes", 0, 5_000),
        &l,
        1_000,
    ));
    assert_eq!(
        rec.as_ref().unwrap().reach.silences.len(),
        silence::MAX_SILENCES
    );
    let rm = |id: &str| {
        command(Command::RemoveSilence {
            silence_id: id.into(),
        })
    };
    ok(&apply(&user(), &mut rec, rm("more"), &l, 1_000));
    let reply = apply(&user(), &mut rec, rm("more"), &l, 1_000)
        .reply
        .unwrap()
        .1;
    assert_eq!(reply.code, Some(RefusalCode::NotFound));
    // a silence that matches nothing is refused by field
    let empty = command(Command::AddSilence {
        silence: Silence {
            id: "x".into(),
            matcher: Matcher::default(),
            starts_at_ms: 0,
            ends_at_ms: 5_000,
            comment: String::new(),
            created_at_ms: 0,
            window: None,
        },
    });
    let reply = apply(&user(), &mut rec, empty, &l, 1_000).reply.unwrap().1;
    assert_eq!(reply.field.as_deref(), Some("source"));
}

#[test]
fn a_sources_tags_are_on_its_items_and_a_silence_can_name_them() {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let mut source = feed_source("bikes");
    source.settings.tags = vec!["garage".into()];
    ok(&apply(
        &user(),
        &mut rec,
        command(Command::AddSource { source }),
        &l,
        1,
    ));
    let fx = apply(&user(), &mut rec, item("n1", 3), &l, 10);
    assert_eq!(fx.jobs[0].notification.tags, ["garage"]);
    let by_tag = command(Command::AddSilence {
        silence: Silence {
            id: "x1".into(),
            matcher: Matcher {
                tag: Some("Garage".into()),
                ..Default::default()
            },
            starts_at_ms: 10,
            ends_at_ms: 10_000,
            comment: String::new(),
            created_at_ms: 10,
            window: None,
        },
    });
    ok(&apply(&user(), &mut rec, by_tag, &l, 10));
    assert!(
        apply(&user(), &mut rec, item("n2", 5), &l, 20)
            .jobs
            .is_empty()
    );
    // bounded
    let mut bad = feed_source("bikes");
    bad.settings.tags = vec!["x".repeat(65)];
    let reply = apply(
        &user(),
        &mut rec,
        command(Command::AddSource { source: bad }),
        &l,
        1,
    )
    .reply
    .unwrap()
    .1;
    assert_eq!(reply.field.as_deref(), Some("tags"));
}
