//! Digests in the avatar: a source's notifications held until its hour, time of day or count
//! comes, then listed in one message through the policy; urgent ones go out at once. And
//! throttled destinations, whose overflow is such a digest at the end of their hour.

use crate::decide::tests::{
    command, feed_item as item, feed_source, limits_with_links, reachable, routed, user,
};
use crate::decide::{Effects, apply};
use tocsin_model::*;

/// `2026-12-03T10:17:00Z` in ms (only that day is used).
fn ms(s: &str) -> Millis {
    const DAY: Millis = 1_796_256_000_000;
    let t = s
        .strip_prefix("2026-12-03T")
        .and_then(|t| t.strip_suffix('Z'))
        .unwrap();
    let parts: Vec<Millis> = t.split(':').map(|p| p.parse().unwrap()).collect();
    DAY + ((parts[0] * 60 + parts[1]) * 60 + parts[2]) * 1000
}

fn with_digest(digest: &str) -> (Option<UserRecord>, crate::decide::Limits) {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let mut source = feed_source("bikes");
    source.settings.digest = Some(serde_json::from_str(digest).unwrap());
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::AddSource { source }),
        &l,
        1,
    );
    assert!(fx.reply.unwrap().1.ok);
    (rec, l)
}

#[test]
fn an_hourly_digest_holds_every_item_and_lists_them_at_the_full_hour() {
    let (mut rec, l) = with_digest(r#"{"every": "hour"}"#);
    for (i, t) in [(1, "10:17:00"), (2, "10:40:00")] {
        let fx = apply(
            &user(),
            &mut rec,
            item(&format!("n{i}"), &format!("Bike {i}"), 3),
            &l,
            ms(&format!("2026-12-03T{t}Z")),
        );
        assert!(fx.jobs.is_empty(), "held, the first too");
        assert!(
            routed(&fx).starts_with("kept in history: in the digest due 2026-12-03 11:00 UTC"),
            "{}",
            routed(&fx)
        );
        assert!(fx.events.iter().any(|e| e.kind == EventKind::Grouped));
    }
    assert_eq!(
        rec.as_ref().unwrap().reach.earliest_due(),
        Some(ms("2026-12-03T11:00:00Z"))
    );
    // an urgent one does not wait
    let fx = apply(
        &user(),
        &mut rec,
        item("n3", "Stolen bike alert", 5),
        &l,
        ms("2026-12-03T10:50:00Z"),
    );
    assert_eq!(fx.jobs.len(), 1);
    // the hour: one message listing both, linked to the source's inbox
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        ms("2026-12-03T11:00:00Z"),
    );
    assert_eq!(fx.jobs.len(), 1);
    let digest = &fx.jobs[0].notification;
    assert_eq!(digest.title, "Digest: 2 from bikes");
    assert_eq!(digest.body, "• Bike 1\n• Bike 2");
    assert_eq!(
        digest.url.as_deref(),
        Some("https://tocsin.example.org/app/?source=s1")
    );
    assert!(fx.history.iter().any(|h| matches!(h,
        HistoryRecord::Timeline { notification_id, entry, .. }
            if notification_id.as_str() == "n1" && entry.kind == "grouped")));
    assert!(rec.as_ref().unwrap().reach.groups.is_empty());
    // a replayed close names the same digest (its first item names it)
    let again = crate::decide::tests::item_of("n1", SourceKind::Feed, "Bike 1", 3);
    let (mut rec2, _) = with_digest(r#"{"every": "hour"}"#);
    apply(&user(), &mut rec2, again, &l, ms("2026-12-03T10:20:00Z"));
    let fx2 = apply(
        &user(),
        &mut rec2,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        ms("2026-12-03T11:00:05Z"),
    );
    assert_eq!(fx2.jobs[0].notification.id, digest.id);
}

#[test]
fn a_digest_with_a_count_goes_out_with_the_item_that_fills_it() {
    let (mut rec, l) = with_digest(r#"{"every": "count", "count": 3, "urgent_bypass": false}"#);
    for i in 1..=2 {
        let fx = apply(&user(), &mut rec, item(&format!("n{i}"), "Lamp", 5), &l, i);
        assert!(fx.jobs.is_empty(), "urgent ones wait too when it says so");
    }
    let fx = apply(&user(), &mut rec, item("n3", "Desk", 2), &l, 3);
    assert!(routed(&fx).contains("it goes out now"), "{}", routed(&fx));
    assert_eq!(fx.jobs.len(), 1);
    let digest = &fx.jobs[0].notification;
    assert_eq!(digest.title, "Digest: 3 from bikes");
    assert_eq!(digest.priority, Priority::URGENT, "the highest held");
    assert!(rec.as_ref().unwrap().reach.groups.is_empty());
}

#[test]
fn a_digest_is_checked_when_set() {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    for (digest, group, field) in [
        (r#"{"every": "count"}"#, None, "digest.count"),
        (
            r#"{"every": "day", "tz": "Mars/Olympus"}"#,
            None,
            "digest.tz",
        ),
        (r#"{"every": "hour"}"#, Some(60), "digest"),
    ] {
        let mut source = feed_source("bikes");
        source.settings.digest = Some(serde_json::from_str(digest).unwrap());
        source.settings.group_secs = group;
        let reply = apply(
            &user(),
            &mut rec,
            command(Command::AddSource { source }),
            &l,
            1,
        )
        .reply
        .unwrap()
        .1;
        assert_eq!(reply.field.as_deref(), Some(field), "{digest}");
    }
}

#[test]
fn a_throttled_destination_gets_its_count_then_one_digest_when_the_hour_ends() {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::AddSource {
            source: feed_source("bikes"),
        }),
        &l,
        1,
    );
    assert!(fx.reply.unwrap().1.ok);
    let mut mail = rec.as_ref().unwrap().destinations[2].clone();
    assert_eq!(mail.id, "mail");
    mail.throttle = Some(Throttle {
        per_hour: 2,
        urgent_bypass: true,
    });
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::AddDestination { destination: mail }),
        &l,
        1,
    );
    assert!(fx.reply.unwrap().1.ok);
    let to_mail = |fx: &Effects| {
        fx.jobs
            .iter()
            .filter(|j| j.destination.id == "mail")
            .count()
    };
    let start = 1_000_000;
    let (mut sent, mut held) = (0, 0);
    for i in 1..=5 {
        let fx = apply(
            &user(),
            &mut rec,
            item(&format!("n{i}"), &format!("Bike {i}"), 3),
            &l,
            start + i * 1000,
        );
        sent += to_mail(&fx);
        held += fx
            .history
            .iter()
            .filter(
                |h| matches!(h, HistoryRecord::Timeline { entry, .. } if entry.kind == "throttled"),
            )
            .count();
    }
    assert_eq!((sent, held), (2, 3), "two this hour, three held");
    // an urgent one is not held
    let fx = apply(
        &user(),
        &mut rec,
        item("n6", "Stolen", 5),
        &l,
        start + 9_000,
    );
    assert_eq!(to_mail(&fx), 1);
    let hour_ends = start + 1000 + 3_600_000;
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(hour_ends));
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        hour_ends,
    );
    assert_eq!(fx.jobs.len(), 1, "to the throttled destination alone");
    let digest = &fx.jobs[0];
    assert_eq!(digest.destination.id, "mail");
    assert_eq!(
        digest.notification.title,
        "3 more held back (at most 2 an hour to this destination)"
    );
    assert_eq!(digest.notification.body, "• Bike 3\n• Bike 4\n• Bike 5");
    assert!(
        fx.history
            .iter()
            .any(|h| matches!(h, HistoryRecord::Notification { notification, .. } if notification.id == digest.notification.id)),
        "the digest is in history"
    );
    assert!(rec.as_ref().unwrap().reach.throttled.is_empty());
    // a new hour
    let fx = apply(
        &user(),
        &mut rec,
        item("n7", "Bike 7", 3),
        &l,
        hour_ends + 1,
    );
    assert_eq!(to_mail(&fx), 1);
}
