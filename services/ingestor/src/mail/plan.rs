//! The one plan from a parsed e-mail to what is published, for the SMTP ingress and the IMAP
//! watches alike: the message's key, its `ingested` event and, when it passes the source's
//! filter, the notification with its `matched` event (else a `filtered_out` event). Mail that
//! is tocsin's own or an auto-responder's is never a notification (a `refused` event). Pure.

use crate::mail::parse::ParsedMail;
use tocsin_model::{CompiledFilter, Event, EventKind, Item, Millis, Notification, UserId};

/// How the message reached tocsin (the `ingested` event's source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Forwarded to the user's inbound address.
    Smtp,
    /// Taken from a watched mailbox (a source of the user's).
    Imap,
}

/// Whose message it is and what applies to it.
pub struct Mailbox<'a> {
    pub user: &'a UserId,
    /// The IMAP source; none for forwarded mail.
    pub source_id: Option<&'a str>,
    /// The source's filter; forwarded mail has none.
    pub filter: Option<&'a CompiledFilter>,
    pub tags: Vec<String>,
}

/// What one message means for one mailbox.
#[derive(Debug)]
pub struct MailPlan {
    /// None when the source's filter dropped it.
    pub notification: Option<Notification>,
    pub events: Vec<Event>,
}

/// Decide what `parsed` (keyed `key`) becomes in `to`'s silo at `now`.
pub fn plan(parsed: &ParsedMail, key: &str, via: Via, to: Mailbox<'_>, now: Millis) -> MailPlan {
    let mut ingested = Event::ingested(
        match via {
            Via::Smtp => "mail",
            Via::Imap => "imap",
        },
        key,
        now,
    )
    .user(to.user)
    .detail(&format!("from {}", parsed.from));
    if let Some(source) = to.source_id {
        ingested = ingested.source(Some(source));
    }
    if let Some(automatic) = parsed.automatic {
        let refused = Event::new(
            EventKind::Refused,
            &[to.user.as_str(), to.source_id.unwrap_or_default(), key],
            now,
        )
        .user(to.user)
        .source(to.source_id)
        .detail(automatic.reason());
        return MailPlan {
            notification: None,
            events: vec![ingested, refused],
        };
    }
    let passes = to.filter.is_none_or(|f| {
        f.matches(&Item {
            title: &parsed.subject,
            text: &parsed.text,
            categories: &[],
        })
    });
    if !passes {
        let out = Event::filtered_out(to.user, to.source_id.unwrap_or_default(), key, now);
        return MailPlan {
            notification: None,
            events: vec![ingested, out],
        };
    }
    let n = parsed.notification(to.user, key, to.source_id.map(str::to_owned), to.tags, now);
    let events = vec![ingested, Event::matched(&n)];
    MailPlan {
        notification: Some(n),
        events,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::parse::Automatic;
    use tocsin_model::{EventKind, Filter};

    const ALERT: &[u8] = b"From: Grafana <alerts@grafana.example.org>\r\nTo: u1.s@in.example\r\nSubject: [FIRING:1] DiskSpaceLow\r\nMessage-ID: <a1@grafana.example.org>\r\n\r\n/var is 97% full on db1\r\n";

    #[test]
    fn forwarded_mail_becomes_one_notification_keyed_by_its_message_id() {
        let parsed = crate::mail::parse::parse(ALERT).unwrap();
        let key = crate::mail::parse::mail_key(&parsed, ALERT);
        assert_eq!(key, "a1@grafana.example.org");
        let user = UserId::parse("u1").unwrap();
        let to = Mailbox {
            user: &user,
            source_id: None,
            filter: None,
            tags: vec!["email".into()],
        };
        let p = plan(&parsed, &key, Via::Smtp, to, 1_000);
        let n = p.notification.expect("no filter: it passes");
        assert_eq!(n.title, "[FIRING:1] DiskSpaceLow");
        assert_eq!(n.created_at_ms, 1_000);
        assert_eq!(n.tags, ["email"]);
        let kinds: Vec<_> = p.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Ingested, EventKind::Matched]);
        assert_eq!(p.events[0].source.as_deref(), Some("mail"));
        // the same message planned again is the same notification
        let again = plan(
            &parsed,
            &key,
            Via::Smtp,
            Mailbox {
                user: &user,
                source_id: None,
                filter: None,
                tags: vec![],
            },
            2_000,
        );
        assert_eq!(again.notification.unwrap().id, n.id);
    }

    #[test]
    fn a_watched_mailbox_applies_its_filter_and_names_its_source() {
        let parsed = crate::mail::parse::parse(ALERT).unwrap();
        let user = UserId::parse("u1").unwrap();
        let any = |word: &str| {
            Filter {
                any: vec![word.into()],
                ..Default::default()
            }
            .compile()
            .unwrap()
        };
        let (only_cpu, full) = (any("cpu"), any("full"));
        let watched = |filter, tags| Mailbox {
            user: &user,
            source_id: Some("s1"),
            filter: Some(filter),
            tags,
        };
        let p = plan(&parsed, "k", Via::Imap, watched(&only_cpu, vec![]), 5);
        assert!(p.notification.is_none());
        let kinds: Vec<_> = p.events.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Ingested, EventKind::FilteredOut]);
        assert_eq!(p.events[0].source.as_deref(), Some("s1"));

        let to = watched(&full, vec!["email".into(), "imap".into()]);
        let n = plan(&parsed, "k", Via::Imap, to, 5).notification.unwrap();
        assert_eq!(n.source.id.as_deref(), Some("s1"));
        assert_eq!(n.tags, ["email", "imap"]);
    }

    #[test]
    fn tocsins_own_mail_and_auto_replies_are_never_notifications() {
        let user = UserId::parse("u1").unwrap();
        let mailbox = || Mailbox {
            user: &user,
            source_id: None,
            filter: None,
            tags: vec![],
        };
        let own = b"From: tocsin <notify@tocsin.example>\r\nSubject: DiskSpaceLow\r\nx-tocsin-loop: tocsin.example\r\nAuto-Submitted: auto-generated\r\n\r\nbody\r\n";
        // forwarded as an attachment by a mail client: the mark is on the message inside
        let attached = b"From: ann@example.org\r\nSubject: Fwd: DiskSpaceLow\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee below\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nFrom: tocsin <notify@tocsin.example>\r\nX-Tocsin-Loop: tocsin.example\r\nSubject: DiskSpaceLow\r\n\r\nbody\r\n--b--\r\n";
        let vacation = b"From: ann@example.org\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\nback Monday\r\n";
        for (raw, why) in [
            (&own[..], Automatic::TocsinsOwn),
            (&attached[..], Automatic::TocsinsOwn),
            (&vacation[..], Automatic::AutoReply),
        ] {
            let parsed = crate::mail::parse::parse(raw).unwrap();
            assert_eq!(parsed.automatic, Some(why));
            let p = plan(&parsed, "k", Via::Smtp, mailbox(), 5);
            assert!(p.notification.is_none());
            let kinds: Vec<_> = p.events.iter().map(|e| e.kind).collect();
            assert_eq!(kinds, [EventKind::Ingested, EventKind::Refused]);
            assert_eq!(p.events[1].detail, why.reason());
        }
        // an alert that says it is automatic is what tocsin is for
        let cron = b"From: cron@db1.example\r\nSubject: backup failed\r\nAuto-Submitted: auto-generated\r\n\r\nexit 1\r\n";
        let parsed = crate::mail::parse::parse(cron).unwrap();
        assert_eq!(parsed.automatic, None);
        assert!(
            plan(&parsed, "k", Via::Smtp, mailbox(), 5)
                .notification
                .is_some()
        );
    }
}
