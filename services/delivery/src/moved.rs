//! Whether an SMS number or IM address still leads to the destination a job was made for,
//! from the address index (`addresses`, which the owner's avatar keeps), read before each send:
//! a number removed, or taken over by another user, while its job waited or was retried gets
//! no further message.

use crate::Ctx;
use async_nats::jetstream::kv::Operation;
use tocsin_model::{AddressEntry, DeliveryJob, JobKind, Millis};
use tracing::debug;

/// How long a send waits for the index before it goes ahead without it.
const READ_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);

/// What the index says now of a job's address, as far as the decision needs it.
#[derive(Debug, PartialEq)]
pub(crate) enum Latest {
    /// Its entry was deleted (the destination removed), at this server time.
    Removed { at_ms: Millis },
    /// Its entry names this user's destination, since this server time.
    Holds {
        user: String,
        destination_id: String,
        at_ms: Millis,
    },
}

/// Why `job` is not to be sent, or None to send it. Only what happened after the job's
/// notification was made counts: a new destination's entry may not be written yet (the
/// avatar publishes its first job, its code included, before it writes the index), and the
/// same number may have been removed once before it was added again. Any doubt sends, as
/// before this check.
pub(crate) fn verdict(latest: Option<&Latest>, job: &DeliveryJob) -> Option<String> {
    let made = job.notification.created_at_ms;
    match latest? {
        Latest::Removed { at_ms } if *at_ms > made => {
            Some("not sent: the destination was removed after the notification was made".into())
        }
        Latest::Holds {
            user,
            destination_id,
            at_ms,
        } if *at_ms > made
            && (user != job.notification.user.as_str()
                || destination_id != &job.destination.id) =>
        {
            Some(
                "not sent: the address passed to another destination after the notification was made"
                    .into(),
            )
        }
        _ => None,
    }
}

/// [`verdict`] on the index as it is now; a job to an address the index does not keep (a
/// webhook, e-mail, push) or a reply to a message just received is sent without asking.
pub(crate) async fn gone(ctx: &Ctx, job: &DeliveryJob) -> Option<String> {
    if job.kind == JobKind::Reply || !AddressEntry::indexed(job.destination.channel) {
        return None;
    }
    let key = AddressEntry::key(job.destination.channel, &job.destination.address);
    // the bus failing over must not hold a send: after a second, the job is sent as it says
    let entry = match tokio::time::timeout(READ_WITHIN, ctx.addresses.entry(&key)).await {
        Ok(Ok(e)) => e?,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot read the address index; sending as the job says");
            return None;
        }
        Err(_) => {
            debug!("the address index did not answer in time; sending as the job says");
            return None;
        }
    };
    let at_ms = (entry.created.unix_timestamp_nanos() / 1_000_000) as Millis;
    let latest = match entry.operation {
        Operation::Put => {
            let e: AddressEntry = serde_json::from_slice(&entry.value).ok()?;
            Latest::Holds {
                user: e.user.as_str().to_owned(),
                destination_id: e.destination_id,
                at_ms,
            }
        }
        Operation::Delete | Operation::Purge => Latest::Removed { at_ms },
    };
    verdict(Some(&latest), job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> DeliveryJob {
        serde_json::from_value(json!({
            "job_id": "n1:d1",
            "notification": {"id": "n1", "user": "u1", "source": {"kind": "publish"},
                "title": "t", "created_at_ms": 1000},
            "destination": {"id": "d1", "channel": "sms", "address": "+15550001111",
                "created_at_ms": 0}
        }))
        .expect("a job")
    }

    fn holds(user: &str, destination_id: &str, at_ms: Millis) -> Latest {
        Latest::Holds {
            user: user.into(),
            destination_id: destination_id.into(),
            at_ms,
        }
    }

    #[test]
    fn only_a_removal_or_a_takeover_after_the_notification_stops_a_send() {
        let j = job();
        // removed after the notification was made: not sent
        let removed = verdict(Some(&Latest::Removed { at_ms: 1001 }), &j);
        assert!(removed.is_some_and(|w| w.contains("removed")));
        // taken over by another user, or moved to another destination of this one, since
        let other = verdict(Some(&holds("u2", "d9", 2000)), &j);
        assert!(other.is_some_and(|w| w.contains("another destination")));
        assert!(verdict(Some(&holds("u1", "d2", 2000)), &j).is_some());
        // still this destination's, whenever written
        assert_eq!(verdict(Some(&holds("u1", "d1", 2000)), &j), None);
        // not written yet (a new destination's first job), or older than the notification: an
        // earlier removal of the same number, another user's hold it is being claimed from
        assert_eq!(verdict(None, &j), None);
        assert_eq!(verdict(Some(&Latest::Removed { at_ms: 999 }), &j), None);
        assert_eq!(verdict(Some(&holds("u2", "d9", 999)), &j), None);
    }
}
