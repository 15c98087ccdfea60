//! Something refused on the user's behalf — mail from a sender they do not allow, an SMS reply
//! that would change settings without their PIN: a notification in their history saying what
//! and why, and a `refused` event.

use crate::decide::effects::{Effects, Outcome};
use tocsin_model::{
    Event, EventKind, HistoryRecord, Millis, Notification, NotificationId, SourceKind, SourceRef,
    TimelineEntry, UserId,
};

/// `what` ("an e-mail") from `from` was refused for `reason`, at `at_ms`.
pub(crate) fn refused(
    user: &UserId,
    source: SourceKind,
    what: &str,
    from: &str,
    reason: String,
    at_ms: Millis,
) -> Effects {
    let from = tocsin_model::text::truncate(&tocsin_model::text::one_line(from), 200);
    let id = tocsin_model::digest(&["refused", user.as_str(), &from, &reason, &at_ms.to_string()]);
    let notification = Notification {
        id: NotificationId(format!("x{}", &id[..32])),
        user: user.clone(),
        source: SourceRef {
            kind: source,
            id: None,
            label: from.clone(),
        },
        title: format!(
            "Refused {what} from {}",
            if from.is_empty() { "<>" } else { &from }
        ),
        body: reason.clone(),
        url: None,
        priority: tocsin_model::Priority::LOWEST,
        tags: vec!["refused".into()],
        created_at_ms: at_ms,
        published_at_ms: None,
        dedup_key: None,
    };
    let event = Event::new(EventKind::Refused, &[notification.id.as_str()], at_ms)
        .notification(&notification.id)
        .detail(&format!("{}: {reason}", notification.title));
    Effects {
        history: vec![HistoryRecord::Notification {
            notification,
            entry: TimelineEntry {
                at_ms,
                kind: "refused".into(),
                channel: None,
                detail: reason,
            },
        }],
        events: vec![event],
        outcome: Outcome::Refused,
        ..Default::default()
    }
}
