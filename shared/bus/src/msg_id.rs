//! Every `Nats-Msg-Id` a service gives a message it publishes, built here and nowhere else.
//!
//! An id names the change a message carries, never the moment it was sent: a repeat of the
//! same change (a retry, a redelivered batch handled again) gets the same id and JetStream's
//! duplicate window drops it. Notifications, commands and events carry ids of their own
//! (`NotificationId`, the command id, `Event::id`); these are the rest. The formats are part
//! of the bus contract (docs/bus.md): changing one makes a repeat across an upgrade a new
//! message.

use std::fmt::Display;
use tocsin_model::{Channel, Millis, NotificationId, UserId};

/// A delivery job: the notification and the destination, with the policy step from the
/// second step on (a destination named again later is a reminder, not a repeat).
pub fn delivery_job(notification: &NotificationId, destination: &str, step: usize) -> String {
    match step {
        0 => format!("{notification}:{destination}"),
        s => format!("{notification}:{destination}:s{s}"),
    }
}

/// The message telling `destination` that the alert of `notification` is resolved.
pub fn resolved_job(notification: &NotificationId, destination: &str) -> String {
    format!("{notification}:{destination}:resolved")
}

/// The answer to what the user said (an IM command, or asked for through the API: `said`),
/// sent to `destination` for a request received at `at_ms`. Different commands received in
/// the same millisecond (a client or gateway handing over several at once) are each answered;
/// the same one twice in a millisecond, once.
pub fn command_answer(destination: &str, at_ms: Millis, said: &str) -> String {
    let said = tocsin_model::digest(&[said]);
    format!(
        "reply:{destination}:{at_ms}:{}",
        &said[..said.len().min(16)]
    )
}

/// History's order to forget a deleted user.
pub fn forget(user: &UserId) -> String {
    format!("forget:{user}")
}

/// An entry of a notification's timeline in history.
pub fn timeline(
    notification: &NotificationId,
    kind: &str,
    channel: Option<Channel>,
    at_ms: Millis,
) -> String {
    let channel = channel.map(|c| c.as_str()).unwrap_or("");
    format!("{notification}:{kind}:{channel}:{at_ms}")
}

/// The `i`-th feed subscription change a command (`command_id`) made for a source.
pub fn feed_subscription(user: &UserId, source: &str, command_id: &str, i: usize) -> String {
    format!("sub:{user}:{source}:{command_id}:{i}")
}

/// The `i`-th IMAP watch change a command (`command_id`) made for a source.
pub fn imap_subscription(user: &UserId, source: &str, command_id: &str, i: usize) -> String {
    format!("imap:{user}:{source}:{command_id}:{i}")
}

/// A source's health as checked at `checked_at_ms`.
pub fn source_status(user: &UserId, source: &str, checked_at_ms: Millis) -> String {
    format!("status:{user}:{source}:{checked_at_ms}")
}

/// A destination's status change for `user` at `at_ms`.
pub fn destination_status(user: &UserId, destination: &str, at_ms: Millis) -> String {
    format!("dstatus:{user}:{destination}:{at_ms}")
}

/// Input refused for `user` at `at_ms` (mail from a sender not allowed, unreadable mail).
pub fn refused(user: &UserId, at_ms: Millis) -> String {
    format!("refused:{user}:{at_ms}")
}

/// A delivery job's outcome, back to the avatar.
pub fn outcome(job_id: &str) -> String {
    format!("outcome:{job_id}")
}

/// A delivery job parked back in the stream, from the stream message `seq` (each parking of
/// the same job is a new copy; a repeat of one parking is dropped).
pub fn parked(job_id: &str, seq: u64) -> String {
    format!("parked:{job_id}:{seq}")
}

/// A presence change of `user`'s IM destination.
pub fn presence(user: &UserId, destination: &str, at_ms: Millis) -> String {
    format!("presence:{user}:{destination}:{at_ms}")
}

/// An IM reply from `bare` (a JID), keyed by the stanza id or a digest of the reply.
pub fn xmpp_reply(bare: impl Display, key: &str) -> String {
    format!("xmpp-reply:{bare}:{key}")
}

/// An SMS reply, keyed by a digest of the provider's id, the number and the text.
pub fn sms_reply(digest: &str) -> String {
    format!("sms-reply:{digest}")
}

/// An acknowledgement of a notification through `via` (`api`, `link`).
pub fn ack(notification: &NotificationId, via: &str) -> String {
    format!("ack:{notification}:{via}")
}

/// `user`'s resolve of dedup key `key` (by its digest: keys are free text) at `at_ms`.
pub fn resolve(user: &UserId, key: &str, at_ms: Millis) -> String {
    format!(
        "resolve:{user}:{}:{at_ms}",
        &tocsin_model::digest(&[key])[..16]
    )
}

/// Message `id` published to shared topic `topic`.
pub fn topic_item(topic: &str, id: &str) -> String {
    format!("topic:{topic}:{id}")
}

/// A ping of `user`'s heartbeat source `source_id` at `at_ms`.
pub fn ping(user: &UserId, source_id: &str, at_ms: Millis) -> String {
    format!("ping:{user}:{source_id}:{at_ms}")
}

/// The `n`-th tick for `user`'s escalation timer due at `due` (KV revision `revision`).
pub fn tick(user: &str, due: Millis, revision: u64, n: u32) -> String {
    format!("tick:{user}:{due}:{revision}:{n}")
}

/// A message of `stream` (sequence `seq`) set aside as a dead letter.
pub fn dead_letter(stream: &str, seq: u64) -> String {
    format!("dlq:{stream}:{seq}")
}

/// Record `index` of the envelope at sequence `seq` of `stream`, set aside alone.
pub fn dead_letter_record(stream: &str, seq: u64, index: usize) -> String {
    format!("dlq:{stream}:{seq}:{index}")
}

/// Dead letter `seq` replayed to its original subject (its original id kept inside).
pub fn replay(seq: u64, original_id: &str) -> String {
    format!("replay:{seq}:{original_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_formats_are_the_bus_contract() {
        let n = NotificationId("n1".into());
        let u = UserId::parse("u1").unwrap();
        assert_eq!(delivery_job(&n, "d1", 0), "n1:d1");
        assert_eq!(delivery_job(&n, "d1", 2), "n1:d1:s2");
        assert!(command_answer("d1", 7, "status").starts_with("reply:d1:7:"));
        assert_ne!(
            command_answer("d1", 7, "status"),
            command_answer("d1", 7, "list")
        );
        assert_eq!(
            timeline(&n, "delivered", Some(Channel::Sms), 9),
            "n1:delivered:sms:9"
        );
        assert_eq!(timeline(&n, "acked", None, 9), "n1:acked::9");
        assert_eq!(feed_subscription(&u, "s1", "c1", 0), "sub:u1:s1:c1:0");
        assert_eq!(imap_subscription(&u, "s1", "c1", 1), "imap:u1:s1:c1:1");
        assert_eq!(source_status(&u, "s1", 5), "status:u1:s1:5");
        assert_eq!(refused(&u, 5), "refused:u1:5");
        assert_eq!(outcome("n1:d1"), "outcome:n1:d1");
        assert_eq!(presence(&u, "d1", 5), "presence:u1:d1:5");
        assert_eq!(xmpp_reply("ann@x", "s9"), "xmpp-reply:ann@x:s9");
        assert_eq!(sms_reply("ab"), "sms-reply:ab");
        assert_eq!(ack(&n, "api"), "ack:n1:api");
        assert_eq!(tick("u1", 5, 3, 0), "tick:u1:5:3:0");
        assert_eq!(dead_letter("SILO_0", 4), "dlq:SILO_0:4");
        assert_eq!(replay(4, "n1"), "replay:4:n1");
    }
}
