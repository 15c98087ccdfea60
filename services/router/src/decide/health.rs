//! Telling a user when one of their sources stops working, and when it works again: once each,
//! on the status change the ingestor reports (`broken`: failing `source_broken_after` checks in
//! a row), as an ordinary notification of that source.

use tocsin_model::{
    Millis, Notification, NotificationId, Priority, SourceKind, SourceRef, SourceSpec,
    SourceStatus, UserId, UserRecord,
};

/// The notice `status` calls for, given what the record last held for `source_id`: the source
/// broke, or works again after being broken. None otherwise (and for a source the user no
/// longer has).
pub(crate) fn notice(
    user: &UserId,
    record: Option<&UserRecord>,
    source_id: &str,
    status: &SourceStatus,
    now: Millis,
) -> Option<Notification> {
    let r = record?;
    let source = r.sources.iter().find(|s| s.id == source_id)?;
    let was_broken = r
        .source_status
        .get(source_id)
        .is_some_and(|s| s.broken && !s.ok);
    let (kind, label) = match &source.spec {
        SourceSpec::Feed { url, .. } => (SourceKind::Feed, url.clone()),
        SourceSpec::Imap {
            host,
            username,
            mailbox,
            ..
        } => (SourceKind::Email, format!("{username}@{host} {mailbox}")),
        // the ingestor checks none of these: a heartbeat's misses are told by
        // `heartbeats.rs`, a hook is called and a topic published to, never polled
        SourceSpec::Heartbeat { .. } | SourceSpec::Hook { .. } | SourceSpec::Topic { .. } => {
            return None;
        }
    };
    let name = if source.label.is_empty() {
        label
    } else {
        source.label.clone()
    };
    let (what, title, body) = if status.broken && !status.ok && !was_broken {
        (
            "broken",
            format!("Source {name} is not working"),
            format!(
                "{} checks in a row failed; the last: {}. tocsin keeps trying it and tells you when it works again.",
                status.consecutive_failures,
                status.error.as_deref().unwrap_or("no detail")
            ),
        )
    } else if status.ok && was_broken {
        (
            "recovered",
            format!("Source {name} works again"),
            "Its last check succeeded; new items come through as before.".to_owned(),
        )
    } else {
        return None;
    };
    Some(Notification {
        id: NotificationId::for_source_notice(user, source_id, what, status.checked_at_ms),
        user: user.clone(),
        source: SourceRef {
            kind,
            id: Some(source_id.to_owned()),
            label: name,
        },
        title,
        body,
        url: None,
        priority: Priority::DEFAULT,
        tags: vec!["source-health".to_owned()],
        created_at_ms: now,
        published_at_ms: None,
        dedup_key: None,
    })
}

#[cfg(test)]
mod tests {
    use crate::decide::tests::{command, create, feed_source, limits_with_links, user};
    use crate::decide::{Effects, apply};
    use tocsin_model::{AvatarMessage, Command, HistoryRecord, SourceStatus, UserRecord};

    fn status(rec: &mut Option<UserRecord>, status: SourceStatus) -> Effects {
        let msg = AvatarMessage::SourceStatus {
            source_id: "s1".into(),
            status,
        };
        apply(&user(), rec, msg, &limits_with_links(), 10)
    }

    fn failing(n: u32, broken: bool) -> SourceStatus {
        SourceStatus {
            ok: false,
            error: Some("HTTP 500 from https://example.org/bikes.rss".into()),
            checked_at_ms: n as i64,
            consecutive_failures: n,
            broken,
        }
    }

    /// The notification a status produced, if any.
    fn told(fx: &Effects) -> Option<tocsin_model::Notification> {
        fx.history.iter().find_map(|h| match h {
            HistoryRecord::Notification { notification, .. } => Some(notification.clone()),
            _ => None,
        })
    }

    #[test]
    fn a_source_is_announced_broken_once_and_recovered_once() {
        let l = limits_with_links();
        let mut rec = None;
        apply(&user(), &mut rec, create(), &l, 1);
        let add = command(Command::AddSource {
            source: feed_source("bikes"),
        });
        apply(&user(), &mut rec, add, &l, 2);
        // failing, not yet broken: kept, nothing told
        let fx = status(&mut rec, failing(1, false));
        assert!(fx.dirty && told(&fx).is_none());
        // broken: told, with the error and the count, as a notification of the source
        let fx = status(&mut rec, failing(3, true));
        let n = told(&fx).expect("broken notice");
        assert_eq!(n.title, "Source bikes is not working");
        assert!(
            n.body.contains("3 checks") && n.body.contains("HTTP 500"),
            "{}",
            n.body
        );
        assert_eq!(n.source.id.as_deref(), Some("s1"));
        // still broken, another error: not told again
        assert!(told(&status(&mut rec, failing(4, true))).is_none());
        // works again: told once
        let ok = SourceStatus {
            ok: true,
            checked_at_ms: 5,
            ..Default::default()
        };
        let n = told(&status(&mut rec, ok.clone())).expect("recovered notice");
        assert_eq!(n.title, "Source bikes works again");
        assert!(told(&status(&mut rec, ok.clone())).is_none());
        // broken again: told again (a new episode, a new id)
        let again = told(&status(&mut rec, failing(6, true))).expect("broken again");
        assert_ne!(again.id, n.id);
        // the same report replayed is the same notification: a duplicate, not told twice
        let mut replay = rec.clone();
        if let Some(r) = replay.as_mut() {
            r.source_status.insert("s1".into(), ok);
        }
        assert!(told(&status(&mut replay, failing(6, true))).is_none());
    }
}
