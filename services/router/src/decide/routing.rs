//! Routing a new notification: drop duplicates and items of removed sources, record it in
//! history, and start its escalation.

use crate::decide::escalate::{self, Links};
use crate::decide::{Effects, Outcome};
use tocsin_model::{
    Event, EventKind, HistoryRecord, Millis, Notification, TimelineEntry, UserRecord,
};

pub(crate) fn route(
    record: &mut Option<UserRecord>,
    n: Notification,
    now: Millis,
    links: &Links,
) -> Effects {
    route_with(record, n, now, links, true)
}

/// Route `n`; `grouping`: whether its source's open group may hold it (a group's own summary
/// may not).
pub(crate) fn route_with(
    record: &mut Option<UserRecord>,
    n: Notification,
    now: Millis,
    links: &Links,
    grouping: bool,
) -> Effects {
    // the record keeps it while it escalates: cut to the bounds whoever produced it
    let n = n.bounded();
    let Some(r) = record else {
        return Effects {
            outcome: Outcome::NoUser,
            ..Default::default()
        };
    };
    if let Some(sid) = &n.source.id
        && !r.sources.iter().any(|s| &s.id == sid)
    {
        // the user removed this source (a feed, a mailbox, a hook) while the item was on its
        // way
        return Effects {
            outcome: Outcome::SourceRemoved,
            ..Default::default()
        };
    }
    // the source's own tags and priority, whatever its item said
    let mut n = n;
    if let Some(s) = escalate::source_of(r, &n) {
        for t in &s.settings.tags {
            if !n.tags.contains(t) && n.tags.len() < tocsin_model::budget::MAX_TAGS {
                n.tags.push(t.clone());
            }
        }
    }
    let mut set_priority = None;
    if let Some(p) = escalate::source_of(r, &n).and_then(|s| s.settings.priority)
        && p != n.priority
    {
        n.priority = p;
        set_priority = Some((p, "the source's setting".to_owned()));
    }
    // an alert (a publish with a dedup key) stays open until resolved; so does a mail whose
    // e-mail rule named its alert. A feed item's or another mail's key only deduplicates
    let mut opens = n.source.kind == tocsin_model::SourceKind::Publish;
    if n.source.kind == tocsin_model::SourceKind::Email
        && let Some(m) =
            tocsin_model::mail_rules::first_match(&r.mail_rules, &n.source.label, &n.title, &n.body)
    {
        let why = format!("e-mail rule {}", m.rule);
        if let Some(p) = m.priority
            && p != n.priority
        {
            n.priority = p;
            set_priority = Some((p, why.clone()));
        }
        if let Some(k) = m.key {
            n.dedup_key = Some(k);
            n = n.bounded();
            opens = true;
        }
        // a listing's key is its link, as a feed's item has it: one notification per listing
        if m.listing
            && let Some(k) = n
                .url
                .as_deref()
                .and_then(tocsin_model::canonical::canonical_url)
        {
            n.dedup_key = Some(k);
            n = n.bounded();
        }
        if m.resolve
            && let Some(k) = n.dedup_key.clone()
        {
            // the mail says the alert is over: it resolves it rather than being one more
            let via = format!("{why} ({})", tocsin_model::text::truncate(&n.title, 100));
            let fired = escalate::resolve(r, &k, &via, now);
            let mut fx = Effects {
                outcome: Outcome::Resolved,
                ..Default::default()
            };
            fx.take(&n.user, fired);
            return fx;
        }
    }
    if r.recent.contains(n.id.as_str()) {
        return Effects {
            outcome: Outcome::Duplicate,
            ..Default::default()
        };
    }
    let key = n.dedup_key.as_ref().map(|k| format!("k:{k}"));
    if let Some(k) = &key
        && r.recent.contains(k)
    {
        // the same content already reached this user (through another source, or the same
        // alert firing again): no new page; while the first is still open its timeline says so
        r.recent.insert(n.id.0.clone());
        let mut fx = Effects {
            outcome: Outcome::DuplicateContent,
            dirty: true,
            ..Default::default()
        };
        if let Some((open, _)) = n
            .dedup_key
            .as_deref()
            .and_then(|k| r.reach.open_keys.get(k))
        {
            fx.history.push(HistoryRecord::Timeline {
                user: n.user.clone(),
                notification_id: open.clone(),
                entry: TimelineEntry {
                    at_ms: now,
                    kind: "repeated".into(),
                    channel: None,
                    detail: format!("seen again ({}: {})", n.source.label, n.title),
                },
            });
        }
        return fx;
    }
    r.recent.insert(n.id.0.clone());
    if let Some(k) = key {
        r.recent.insert(k);
    }
    if opens && let Some(k) = &n.dedup_key {
        r.reach.open_key(k, &n.id, now);
    }
    let held = if grouping {
        crate::decide::groups::hold(r, &n, now)
    } else {
        None
    };
    // a digest that has its count goes out with this notification, not at the next tick
    let digest_due = held.is_some() && crate::decide::groups::digest_due(r, now);
    let (fired, mut detail) = match held {
        Some(held) => (held.1, held.0),
        None => {
            let (fired, detail) = escalate::start(r, &n, now, links);
            (fired, detail)
        }
    };
    if let Some((p, why)) = set_priority {
        detail = format!("priority {} ({why}); {detail}", p.get());
    }
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
        outcome: Outcome::Routed,
        ..Default::default()
    };
    fx.take(&user, fired);
    if digest_due {
        let summaries = record
            .as_mut()
            .map(|r| crate::decide::groups::close(r, now, links))
            .unwrap_or_default();
        fx.absorb(route_summaries(record, summaries, now, links));
    }
    fx
}

/// Route the summaries of closed groups and digests (never held again), each with its
/// entry on the notification that opened it.
pub(crate) fn route_summaries(
    record: &mut Option<UserRecord>,
    summaries: Vec<(Notification, (tocsin_model::NotificationId, TimelineEntry))>,
    now: Millis,
    links: &Links,
) -> Effects {
    let mut fx = Effects::default();
    for (summary, (first, entry)) in summaries {
        let user = summary.user.clone();
        fx.absorb(route_with(record, summary, now, links, false));
        fx.history.push(HistoryRecord::Timeline {
            user,
            notification_id: first,
            entry,
        });
    }
    fx
}

#[cfg(test)]
mod tests {
    use crate::decide::tests::{add_dest, command, create, feed_source, limits_with_links, user};
    use crate::decide::{Outcome, apply};
    use tocsin_model::{
        AvatarMessage, Channel, Command, HistoryRecord, Priority, SourceKind, SourceRef,
        SourceSettings, UserRecord,
    };

    fn item(id: &str, priority: u8) -> AvatarMessage {
        crate::decide::tests::item_of(id, SourceKind::Feed, "Road bike", priority)
    }

    fn with_source() -> Option<UserRecord> {
        let l = limits_with_links();
        let mut rec = None;
        apply(&user(), &mut rec, create(), &l, 1);
        apply(
            &user(),
            &mut rec,
            add_dest("d1", Channel::Webhook, "https://h.example/x"),
            &l,
            1,
        );
        let add = command(Command::AddSource {
            source: feed_source("bikes"),
        });
        apply(&user(), &mut rec, add, &l, 1);
        rec
    }

    fn set(rec: &mut Option<UserRecord>, settings: SourceSettings) -> crate::decide::Effects {
        let msg = command(Command::SetSourceSettings {
            source_id: "s1".into(),
            settings,
        });
        apply(&user(), rec, msg, &limits_with_links(), 1_000)
    }

    /// What the routed notification was stored with: (priority, its `routed` entry's detail).
    fn stored(fx: &crate::decide::Effects) -> (u8, String) {
        match &fx.history[0] {
            HistoryRecord::Notification {
                notification,
                entry,
            } => (notification.priority.get(), entry.detail.clone()),
            other => panic!("not a notification: {other:?}"),
        }
    }

    #[test]
    fn a_sources_priority_and_mute_decide_for_its_items() {
        let l = limits_with_links();
        let mut rec = with_source();
        // its own priority replaces the item's, and the timeline says why
        let fx = set(
            &mut rec,
            SourceSettings {
                priority: Some(Priority::new(1).unwrap()),
                ..Default::default()
            },
        );
        assert!(fx.dirty && fx.reply.as_ref().is_some_and(|r| r.1.ok));
        let fx = apply(&user(), &mut rec, item("n1", 4), &l, 2_000);
        let (priority, detail) = stored(&fx);
        assert_eq!(priority, 1);
        assert!(
            detail.starts_with(
                "priority 1 (the source's setting); policy feeds (what feeds follow): to webhook d1"
            ),
            "{detail}"
        );
        assert_eq!(fx.jobs.len(), 1);
        // muted: kept in history, no one reached, until the time has passed
        let until = 10_000;
        set(
            &mut rec,
            SourceSettings {
                muted_until_ms: Some(until),
                ..Default::default()
            },
        );
        let fx = apply(&user(), &mut rec, item("n2", 3), &l, 2_000);
        assert_eq!(fx.outcome, Outcome::Routed);
        assert!(fx.jobs.is_empty());
        assert!(
            stored(&fx)
                .1
                .starts_with("kept in history: this source is muted until"),
            "{}",
            stored(&fx).1
        );
        // an urgent item still gets through, as with the user's own mute
        let fx = apply(&user(), &mut rec, item("n3", 5), &l, 2_000);
        assert_eq!(fx.jobs.len(), 1);
        // after the mute: reached again
        let fx = apply(&user(), &mut rec, item("n4", 3), &l, until + 1);
        assert_eq!(fx.jobs.len(), 1);
    }

    #[test]
    fn source_settings_for_an_unknown_source_or_too_far_ahead_are_refused() {
        let mut rec = with_source();
        let msg = command(Command::SetSourceSettings {
            source_id: "nope".into(),
            settings: SourceSettings::default(),
        });
        let fx = apply(&user(), &mut rec, msg, &limits_with_links(), 1);
        let reply = fx.reply.expect("a reply").1;
        assert!(!reply.ok && reply.message.unwrap_or_default().contains("no source nope"));
        let far = SourceSettings {
            muted_until_ms: Some(2 * 366 * 86_400_000),
            ..Default::default()
        };
        let reply = set(&mut rec, far).reply.expect("a reply").1;
        assert_eq!(reply.field.as_deref(), Some("muted_until_ms"));
    }

    fn alert(id: &str, key: &str) -> AvatarMessage {
        let mut msg = item(id, 3);
        if let AvatarMessage::Notify { notification } = &mut msg {
            notification.source = SourceRef {
                kind: SourceKind::Publish,
                id: None,
                label: "api".into(),
            };
            notification.dedup_key = Some(key.into());
        }
        msg
    }

    fn mail(id: &str, from: &str, subject: &str) -> AvatarMessage {
        let mut msg = item(id, 3);
        if let AvatarMessage::Notify { notification } = &mut msg {
            notification.source = SourceRef {
                kind: SourceKind::Email,
                id: None,
                label: from.into(),
            };
            notification.title = subject.into();
            notification.dedup_key = Some(format!("mid:{id}@mail"));
        }
        msg
    }

    #[test]
    fn e_mail_rules_give_forwarded_alerts_a_lifecycle() {
        let l = limits_with_links();
        let mut rec = with_source();
        let rules = vec![
            tocsin_model::MailRule {
                subject: Some(r"^\[RESOLVED\] (?P<key>.+)$".into()),
                resolve: true,
                ..Default::default()
            },
            tocsin_model::MailRule {
                subject: Some(r"^\[FIRING:\d+\] (?P<key>.+)$".into()),
                priority: Some(Priority::new(4).unwrap()),
                ..Default::default()
            },
        ];
        let fx = apply(
            &user(),
            &mut rec,
            command(Command::SetMailRules { rules }),
            &l,
            1,
        );
        assert!(fx.reply.unwrap().1.ok);
        let fx = apply(
            &user(),
            &mut rec,
            mail("m1", "grafana@x.org", "[FIRING:1] HighCPU (web1)"),
            &l,
            10,
        );
        let (priority, detail) = stored(&fx);
        assert_eq!(priority, 4);
        assert!(
            detail.starts_with("priority 4 (e-mail rule 2); "),
            "{detail}"
        );
        assert_eq!(fx.jobs.len(), 1);
        // Grafana mails again while it fires: no page
        let fx = apply(
            &user(),
            &mut rec,
            mail("m2", "grafana@x.org", "[FIRING:1] HighCPU (web1)"),
            &l,
            20,
        );
        assert_eq!(fx.outcome, Outcome::DuplicateContent);
        // the RESOLVED mail resolves it instead of being one more notification
        let fx = apply(
            &user(),
            &mut rec,
            mail("m3", "grafana@x.org", "[RESOLVED] HighCPU (web1)"),
            &l,
            30,
        );
        assert_eq!(fx.outcome, Outcome::Resolved);
        assert!(fx.jobs.is_empty());
        match fx.history.as_slice() {
            [
                HistoryRecord::Timeline {
                    notification_id,
                    entry,
                    ..
                },
            ] => {
                assert_eq!(notification_id.as_str(), "m1");
                assert_eq!(entry.kind, "resolved");
                assert!(
                    entry
                        .detail
                        .starts_with("via e-mail rule 1 ([RESOLVED] HighCPU"),
                    "{}",
                    entry.detail
                );
            }
            other => panic!("{other:?}"),
        }
        // mail no rule matches is a notification as before
        let fx = apply(&user(), &mut rec, mail("m4", "ann@x.org", "Lunch?"), &l, 40);
        assert_eq!((fx.outcome, stored(&fx).0), (Outcome::Routed, 3));
        // a bad rule is refused by field
        let bad = vec![tocsin_model::MailRule {
            subject: Some("(".into()),
            ..Default::default()
        }];
        let fx = apply(
            &user(),
            &mut rec,
            command(Command::SetMailRules { rules: bad }),
            &l,
            50,
        );
        assert_eq!(
            fx.reply.unwrap().1.field.as_deref(),
            Some("rules[0].subject")
        );
    }

    #[test]
    fn an_alert_firing_again_is_one_page_until_resolved() {
        let l = limits_with_links();
        let mut rec = with_source();
        let fx = apply(&user(), &mut rec, alert("a1", "disk:db1"), &l, 10);
        assert_eq!((fx.outcome, fx.jobs.len()), (Outcome::Routed, 1));
        // firing again while open: no page, a `repeated` entry on the first
        let fx = apply(&user(), &mut rec, alert("a2", "disk:db1"), &l, 20);
        assert_eq!(fx.outcome, Outcome::DuplicateContent);
        assert!(fx.jobs.is_empty());
        match fx.history.as_slice() {
            [
                HistoryRecord::Timeline {
                    notification_id,
                    entry,
                    ..
                },
            ] => {
                assert_eq!(
                    (notification_id.as_str(), entry.kind.as_str()),
                    ("a1", "repeated")
                );
            }
            other => panic!("{other:?}"),
        }
        // resolved: the escalation stops, with an entry and an event
        let resolve = AvatarMessage::Resolve {
            key: "disk:db1".into(),
            via: "api".into(),
            at_ms: 30,
        };
        let fx = apply(&user(), &mut rec, resolve.clone(), &l, 30);
        assert_eq!(fx.outcome, Outcome::Resolved);
        assert!(
            fx.events
                .iter()
                .any(|e| e.kind == tocsin_model::EventKind::Resolved)
        );
        assert!(matches!(
            fx.history.as_slice(),
            [HistoryRecord::Timeline { entry, .. }] if entry.kind == "resolved"
        ));
        assert!(rec.as_ref().is_some_and(|r| r.reach.escalations.is_empty()));
        // resolved twice: nothing more
        let fx = apply(&user(), &mut rec, resolve, &l, 31);
        assert!(fx.history.is_empty() && fx.events.is_empty());
        // and when it fires again, it pages again
        let fx = apply(&user(), &mut rec, alert("a3", "disk:db1"), &l, 40);
        assert_eq!((fx.outcome, fx.jobs.len()), (Outcome::Routed, 1));
    }
}
