//! Grouping in the avatar: the first item of a window goes out, the rest are held and told in
//! one summary when the window ends (through the durable timer), and the next window starts
//! afresh.

use crate::decide::apply;
use crate::decide::tests::{
    command, feed_item as item, feed_source, limits_with_links, reachable, routed, user,
};
use tocsin_model::*;

#[test]
fn a_burst_from_a_grouping_source_is_one_page_and_one_summary() {
    let l = limits_with_links();
    let mut rec = None;
    reachable(&mut rec, &l);
    let mut source = feed_source("bikes");
    source.settings.group_secs = Some(600);
    let fx = apply(
        &user(),
        &mut rec,
        command(Command::AddSource { source }),
        &l,
        1,
    );
    assert!(fx.reply.unwrap().1.ok);
    // the first goes out and opens the window
    let fx = apply(&user(), &mut rec, item("n1", "Road bike", 3), &l, 1_000);
    assert_eq!(fx.jobs.len(), 1, "the first at once");
    assert_eq!(rec.as_ref().unwrap().reach.earliest_due(), Some(601_000));
    // the rest are held, each in history with a `grouped` event
    for (i, p) in [(2, 3), (3, 4), (4, 2)] {
        let fx = apply(
            &user(),
            &mut rec,
            item(&format!("n{i}"), &format!("Bike {i}"), p),
            &l,
            2_000,
        );
        assert!(fx.jobs.is_empty());
        assert!(
            routed(&fx).starts_with("kept in history: grouped with n1 until"),
            "{}",
            routed(&fx)
        );
        assert!(fx.events.iter().any(|e| e.kind == EventKind::Grouped));
    }
    // the window ends: one summary at the highest priority held, and an entry on the first
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        601_000,
    );
    assert_eq!(fx.jobs.len(), 1);
    let summary = &fx.jobs[0].notification;
    assert_eq!(summary.title, "3 more from bikes");
    assert_eq!(summary.body, "Bike 2\nBike 3\nBike 4");
    assert_eq!(summary.priority.get(), 4);
    assert!(fx.history.iter().any(|h| matches!(h,
        HistoryRecord::Timeline { notification_id, entry, .. }
            if notification_id.as_str() == "n1" && entry.kind == "grouped")));
    assert!(rec.as_ref().unwrap().reach.groups.is_empty());
    // the next item opens a new window and goes out
    let fx = apply(&user(), &mut rec, item("n5", "Gravel bike", 3), &l, 700_000);
    assert_eq!(fx.jobs.len(), 1);
    // a window nothing joined ends without a summary
    let fx = apply(
        &user(),
        &mut rec,
        AvatarMessage::Tick { at_ms: 0 },
        &l,
        1_300_000,
    );
    assert!(fx.jobs.is_empty() && fx.history.is_empty());
    // and the window is bounded
    let mut bad = feed_source("bikes");
    bad.settings.group_secs = Some(5);
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
    assert_eq!(reply.field.as_deref(), Some("group_secs"));
}
