//! Heartbeats in the avatar: the clock starts at creation, the first tick past the deadline
//! tells the owner once through the policy, the next ping resolves it, and removing the source
//! ends it all.

use crate::decide::tests::{add_dest, command, create, limits_with_links, user};
use crate::decide::{Effects, Outcome, apply};
use tocsin_model::*;

fn heartbeat(id: &str, period_secs: u64, grace_secs: u64) -> AvatarMessage {
    command(Command::AddSource {
        source: Source {
            id: id.into(),
            spec: SourceSpec::Heartbeat {
                period_secs,
                grace_secs,
                token_hash: hash_token("secret"),
            },
            filter: Default::default(),
            label: "nightly backup".into(),
            created_at_ms: 0,
            settings: Default::default(),
        },
    })
}

fn tick(rec: &mut Option<UserRecord>, now: Millis) -> Effects {
    apply(
        &user(),
        rec,
        AvatarMessage::Tick { at_ms: now },
        &limits_with_links(),
        now,
    )
}

fn ping(rec: &mut Option<UserRecord>, at: Millis) -> Effects {
    let msg = AvatarMessage::Ping {
        source_id: "h1".into(),
        at_ms: at,
    };
    apply(&user(), rec, msg, &limits_with_links(), at)
}

fn user_with_heartbeat() -> Option<UserRecord> {
    let l = limits_with_links();
    let mut rec = None;
    apply(&user(), &mut rec, create(), &l, 0);
    apply(
        &user(),
        &mut rec,
        add_dest("d1", Channel::Webhook, "https://h.example/x"),
        &l,
        0,
    );
    let fx = apply(&user(), &mut rec, heartbeat("h1", 3600, 300), &l, 1_000);
    assert!(fx.reply.unwrap().1.ok);
    rec
}

#[test]
fn a_missed_heartbeat_pages_once_and_the_next_ping_resolves_it() {
    let mut rec = user_with_heartbeat();
    let due = 1_000 + 3_900_000;
    assert_eq!(
        rec.as_ref().unwrap().reach.earliest_due(),
        Some(due),
        "the timer is set"
    );
    // a ping in time moves the deadline
    let fx = ping(&mut rec, 600_000);
    assert_eq!(fx.outcome, Outcome::Ping);
    let due = 600_000 + 3_900_000;
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(due));
    assert!(tick(&mut rec, due - 1).jobs.is_empty());
    // overdue: one alert through the policy, with its event
    let fx = tick(&mut rec, due);
    assert_eq!(fx.jobs.len(), 1);
    let n = &fx.jobs[0].notification;
    assert_eq!(n.title, "nightly backup: no heartbeat");
    assert!(
        n.body.contains("expected every 1h, with 5m of grace"),
        "{}",
        n.body
    );
    assert_eq!(n.dedup_key.as_deref(), Some("hb:h1"));
    assert!(
        fx.events
            .iter()
            .any(|e| e.kind == EventKind::HeartbeatMissed)
    );
    assert!(fx.events.iter().any(|e| e.kind == EventKind::Routed));
    // told once: no timer while it is missed, a later tick tells nothing more
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), None);
    assert!(tick(&mut rec, due + 10_000_000).jobs.is_empty());
    // the next ping resolves it, and the clock starts again
    let fx = ping(&mut rec, due + 20_000_000);
    assert!(fx.events.iter().any(|e| e.kind == EventKind::Resolved));
    assert!(fx.history.iter().any(|h| matches!(
        h,
        HistoryRecord::Timeline { entry, .. } if entry.kind == "resolved"
    )));
    let again = due + 20_000_000 + 3_900_000;
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(again));
    // and a second miss pages again
    assert_eq!(tick(&mut rec, again).jobs.len(), 1);
    // an older ping (out of order) changes nothing
    assert_eq!(ping(&mut rec, 5).outcome, Outcome::Duplicate);
}

#[test]
fn removing_a_heartbeat_resolves_its_miss_and_stops_its_clock() {
    let l = limits_with_links();
    let mut rec = user_with_heartbeat();
    let fx = tick(&mut rec, 10_000_000);
    assert_eq!(fx.jobs.len(), 1);
    let rm = command(Command::RemoveSource {
        source_id: "h1".into(),
    });
    let fx = apply(&user(), &mut rec, rm, &l, 10_000_001);
    assert!(fx.events.iter().any(|e| e.kind == EventKind::Resolved));
    let r = rec.as_ref().unwrap();
    assert!(r.reach.beats.is_empty() && r.reach.escalations.is_empty());
    assert_eq!(r.reach.earliest_due(), None);
    // a ping for it now is nobody's
    assert_eq!(ping(&mut rec, 10_000_002).outcome, Outcome::Duplicate);
}

#[test]
fn heartbeat_periods_are_bounded() {
    let l = limits_with_links();
    let mut rec = user_with_heartbeat();
    for (period, grace, field) in [
        (5, 0, "period_secs"),
        (32 * 86_400, 0, "period_secs"),
        (60, 8 * 86_400, "grace_secs"),
    ] {
        let reply = apply(&user(), &mut rec, heartbeat("h2", period, grace), &l, 1)
            .reply
            .unwrap()
            .1;
        assert_eq!(reply.field.as_deref(), Some(field), "{period} {grace}");
    }
}
