//! The map from an avatar's effects to bus messages, in the order the actor submits them to
//! its silo's outbox: history records (in the silo's history envelopes, acknowledged first),
//! delivery jobs (in envelopes per channel), IMAP watch changes, events (in event envelopes),
//! feed subscription changes.
//! Pure: the actor submits what this returns.

use crate::decide::Effects;
use tocsin_bus::{BusError, Outgoing, Subjects, msg_id};
use tocsin_model::{HistoryRecord, UserId};

/// The messages `fx` makes for `user` in `silo`; `command_id` is the command being handled
/// (empty for other messages). Events get the user, the silo and the router as their service;
/// they are taken from `fx` rather than copied.
pub fn outputs(
    fx: &mut Effects,
    user: &UserId,
    silo: u32,
    subjects: &Subjects,
    command_id: &str,
) -> Result<Vec<Outgoing>, BusError> {
    let mut out = Vec::with_capacity(
        fx.history.len() + fx.jobs.len() + fx.imap.len() + fx.events.len() + fx.subscriptions.len(),
    );
    for rec in &fx.history {
        let id = match rec {
            HistoryRecord::Notification { notification, .. } => notification.id.to_string(),
            HistoryRecord::Timeline {
                notification_id,
                entry,
                ..
            } => msg_id::timeline(notification_id, &entry.kind, entry.channel, entry.at_ms),
            HistoryRecord::Forget { user } => msg_id::forget(user),
        };
        out.push(
            Outgoing::record(
                subjects.history_envelope(silo),
                id,
                tocsin_bus::encode(rec)?,
            )
            .first(),
        );
    }
    for job in &fx.jobs {
        // in the round's envelopes of jobs for the channel (delivery splits them again)
        out.push(Outgoing::record(
            subjects.delivery(job.destination.channel.as_str()),
            job.job_id.clone(),
            tocsin_bus::encode(job)?,
        ));
    }
    for (i, sub) in fx.imap.iter().enumerate() {
        out.push(Outgoing::alone(
            subjects.ingest_imap(),
            msg_id::imap_subscription(user, &sub.source_id, command_id, i),
            tocsin_bus::encode(sub)?,
        ));
    }
    for mut event in std::mem::take(&mut fx.events) {
        event.user = Some(user.clone());
        event.silo = Some(silo);
        let payload = tocsin_bus::event_payload(&mut event, "router")?;
        out.push(Outgoing::record(
            subjects.events_envelope(),
            event.id,
            payload,
        ));
    }
    for (i, sub) in fx.subscriptions.iter().enumerate() {
        out.push(Outgoing::alone(
            subjects.ingest_subscriptions(),
            msg_id::feed_subscription(user, &sub.source_id, command_id, i),
            tocsin_bus::encode(sub)?,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::apply;
    use crate::decide::tests::{LIMITS, add_dest, create, notify, user};
    use tocsin_model::{
        AvatarMessage, Channel, Command, DeliveryJob, Event, EventKind, FeedSubscription, Filter,
        Source, SourceSpec,
    };

    fn subjects() -> Subjects {
        Subjects::new("t")
    }

    #[test]
    fn a_routed_notification_becomes_its_history_record_then_its_job_then_its_events() {
        let mut rec = None;
        apply(&user(), &mut rec, create(), &LIMITS, 1);
        apply(
            &user(),
            &mut rec,
            add_dest("d1", Channel::Webhook, "https://hooks.example.org/x"),
            &LIMITS,
            1,
        );
        let mut fx = apply(&user(), &mut rec, notify("n1", None), &LIMITS, 2);
        let out = outputs(&mut fx, &user(), 3, &subjects(), "").unwrap();
        let s = subjects();
        assert_eq!(out[0].subject, s.history_envelope(3));
        assert!(out[0].enveloped && out[0].first);
        assert_eq!(out[0].id, "n1");
        let job = out
            .iter()
            .find(|o| o.subject == s.delivery("webhook"))
            .expect("a job");
        assert_eq!(job.id, "n1:d1");
        assert!(job.enveloped && !job.first);
        let decoded: DeliveryJob = serde_json::from_slice(&job.payload).unwrap();
        assert_eq!(decoded.destination.id, "d1");
        let events: Vec<Event> = out
            .iter()
            .filter(|o| o.subject == s.events_envelope())
            .map(|o| serde_json::from_slice(&o.payload).unwrap())
            .collect();
        assert!(events.iter().any(|e| e.kind == EventKind::Routed));
        for (e, o) in events
            .iter()
            .zip(out.iter().filter(|o| o.subject == s.events_envelope()))
        {
            assert_eq!(e.user, Some(user()));
            assert_eq!(e.silo, Some(3));
            assert_eq!(e.service, "router");
            assert_eq!(o.id, e.id);
            assert!(o.enveloped && !o.first);
        }
        // the order the actor publishes in: history, jobs, (imap,) events, subscriptions
        let rank = |o: &Outgoing| {
            if o.subject == s.history_envelope(3) {
                0
            } else if o.subject.starts_with("t.delivery.") {
                1
            } else {
                2
            }
        };
        assert!(
            out.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])),
            "{out:?}"
        );
    }

    #[test]
    fn subscription_changes_carry_the_command_s_id() {
        let mut rec = None;
        apply(&user(), &mut rec, create(), &LIMITS, 1);
        let add = AvatarMessage::Command {
            command_id: "c7".into(),
            command: Command::AddSource {
                source: Source {
                    id: "s1".into(),
                    spec: SourceSpec::Feed {
                        active_hours: None,
                        request: Default::default(),
                        listing: Default::default(),
                        url: "https://example.org/rss".into(),
                        deliver_existing: false,
                        poll_interval_secs: None,
                        extract: None,
                    },
                    filter: Filter::default(),
                    label: String::new(),
                    created_at_ms: 1,
                    settings: Default::default(),
                },
            },
            reply_to: None,
        };
        let mut fx = apply(&user(), &mut rec, add, &LIMITS, 2);
        let out = outputs(&mut fx, &user(), 0, &subjects(), "c7").unwrap();
        let last = out.last().unwrap();
        assert_eq!(last.subject, subjects().ingest_subscriptions());
        assert_eq!(last.id, "sub:u1:s1:c7:0");
        assert!(!last.enveloped);
        let sub: FeedSubscription = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!(sub.url, "https://example.org/rss");
    }
}
