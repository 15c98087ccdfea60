//! The payloads that travel on the bus. Each is JSON; fields are only ever added, so a newer
//! service reads an older message and the other way round (`docs/bus.md` lists them all).

use crate::{
    Channel, Destination, Filter, Millis, NotificationId, Policy, Show, Source, SourceStatus,
    UserId,
};
use serde::{Deserialize, Serialize};

/// How urgent a notification is: 1 (lowest) to 5 (urgent); 3 by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    pub const LOWEST: Priority = Priority(1);
    pub const DEFAULT: Priority = Priority(3);
    pub const URGENT: Priority = Priority(5);

    pub fn new(p: u8) -> Result<Self, String> {
        if (1..=5).contains(&p) {
            Ok(Priority(p))
        } else {
            Err(format!("priority must be 1-5, got {p}"))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Priority {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u8> for Priority {
    type Error = String;
    fn try_from(p: u8) -> Result<Self, String> {
        Priority::new(p)
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

/// Where a notification came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Feed,
    Publish,
    Email,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceRef {
    pub kind: SourceKind,
    /// The user's source id, for sources a user configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A human label: the source's label, or the feed's title.
    #[serde(default)]
    pub label: String,
}

/// One thing to tell one person. Title and body are plain text (never HTML).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub id: NotificationId,
    pub user: UserId,
    pub source: SourceRef,
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default)]
    pub tags: Vec<String>,
    /// When tocsin took the item in.
    pub created_at_ms: Millis,
    /// When the source says the item was published, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at_ms: Option<Millis>,
    /// A key that identifies the content across sources (a link, a guid or a content hash);
    /// the avatar drops a second notification with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup_key: Option<String>,
}

impl Notification {
    /// A message tocsin itself sends the user (an answer to an IM command, a sign-in link, a
    /// test message): from `tocsin`, at the default priority.
    pub fn from_tocsin(
        id: NotificationId,
        user: UserId,
        title: String,
        body: String,
        at_ms: Millis,
    ) -> Notification {
        Notification {
            id,
            user,
            source: SourceRef {
                kind: SourceKind::Publish,
                id: None,
                label: "tocsin".into(),
            },
            title,
            body,
            url: None,
            priority: Priority::DEFAULT,
            tags: vec![],
            created_at_ms: at_ms,
            published_at_ms: None,
            dedup_key: None,
        }
        .bounded()
    }
}

/// Everything addressed to a user's avatar, carried in the user's silo stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AvatarMessage {
    /// A new item for the user, to be routed.
    Notify { notification: Notification },
    /// A configuration change; the avatar is the only writer of its user's data.
    Command {
        command_id: String,
        command: Command,
        /// A core NATS subject the avatar answers on once the command is durable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// The ingestor's view of one of the user's sources changed.
    SourceStatus {
        source_id: String,
        status: SourceStatus,
    },
    /// The delivery service's view of one of the user's destinations changed (its circuit
    /// breaker paused it after failures, or it delivers again).
    DestinationStatus {
        destination_id: String,
        status: SourceStatus,
    },
    /// What became of a delivery job.
    Outcome { outcome: DeliveryOutcome },
    /// The user's presence on an IM address changed (from the delivery service's XMPP link).
    Presence {
        /// `xmpp:ann@example.org`
        address: String,
        show: Show,
        at_ms: Millis,
    },
    /// The user wrote back over IM or SMS: an acknowledgement or a command.
    Reply {
        channel: Channel,
        /// The address it came from, as stored in the destination.
        address: String,
        text: String,
        at_ms: Millis,
    },
    /// An acknowledgement from the API or a signed link.
    Ack {
        notification_id: NotificationId,
        /// `api`, `link`, …
        via: String,
        at_ms: Millis,
    },
    /// What carried dedup key `key` is over (an alert resolved): its escalation stops, and the
    /// key may page again.
    Resolve {
        key: String,
        /// `api`, `alertmanager`, …
        via: String,
        at_ms: Millis,
    },
    /// A heartbeat source was pinged (its URL requested) at `at_ms`.
    Ping { source_id: String, at_ms: Millis },
    /// Escalation timers are due (from the router's timer scheduler).
    Tick { at_ms: Millis },
    /// Something addressed to the user was refused (an e-mail from a sender not on the list,
    /// over the rate, too large, unreadable), recorded in the user's history.
    Refused {
        source: SourceKind,
        /// Who sent it (the envelope sender for e-mail).
        from: String,
        reason: String,
        at_ms: Millis,
    },
}

impl AvatarMessage {
    /// The subject suffix this message is published under (`…<user>.<kind>`).
    pub fn kind(&self) -> &'static str {
        match self {
            AvatarMessage::Notify { .. } => "notify",
            AvatarMessage::Command { .. } => "cmd",
            AvatarMessage::SourceStatus { .. } => "status",
            AvatarMessage::DestinationStatus { .. } => "destination_status",
            AvatarMessage::Outcome { .. } => "outcome",
            AvatarMessage::Presence { .. } => "presence",
            AvatarMessage::Reply { .. } => "reply",
            AvatarMessage::Ack { .. } => "ack",
            AvatarMessage::Resolve { .. } => "resolve",
            AvatarMessage::Ping { .. } => "ping",
            AvatarMessage::Tick { .. } => "tick",
            AvatarMessage::Refused { .. } => "refused",
        }
    }
}

/// Configuration commands for an avatar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
// a command is rare and short-lived: its size does not matter, a box would only add noise
#[allow(clippy::large_enum_variant)]
pub enum Command {
    CreateUser {
        name: String,
        token_hash: String,
        feed_token_hash: String,
        #[serde(default)]
        inbound_token_hash: String,
    },
    AddSource {
        source: Source,
    },
    RemoveSource {
        source_id: String,
    },
    /// Replace a source's settings (priority, mute).
    SetSourceSettings {
        source_id: String,
        settings: crate::SourceSettings,
    },
    AddDestination {
        destination: Destination,
    },
    RemoveDestination {
        destination_id: String,
    },
    /// Send a new confirmation code to an unconfirmed destination (at most once a minute);
    /// the earlier code stops working.
    SendVerificationCode {
        destination_id: String,
        code: String,
    },
    /// The owner gives back the code sent to the destination (by its hash): right, and the
    /// destination is confirmed; wrong, and one of its tries is used.
    VerifyDestination {
        destination_id: String,
        code_hash: String,
    },
    /// Who may send to the user's inbound address (empty: anyone).
    SetAllowedSenders {
        senders: Vec<String>,
        /// Take only mail that passes SPF or DKIM.
        #[serde(default)]
        require_authenticated: bool,
    },
    /// The user's escalation policy (None: back to the default).
    SetPolicy {
        #[serde(default)]
        policy: Option<Policy>,
    },
    /// One of the user's named policies (None: removed; `feeds` back to the built-in one).
    SetNamedPolicy {
        name: String,
        #[serde(default)]
        policy: Option<Policy>,
    },
    /// Silence what `silence` matches until it ends (escalations under way that it matches
    /// stop).
    AddSilence {
        silence: crate::Silence,
    },
    RemoveSilence {
        silence_id: String,
    },
    /// What inbound mail means (see [`crate::mail_rules`]); empty: none.
    SetMailRules {
        rules: Vec<crate::MailRule>,
    },
    /// The user created shared topic `name` (counted against their topics before the API
    /// claims the name).
    AddTopic {
        name: String,
    },
    RemoveTopic {
        name: String,
    },
    /// A new inbound e-mail address: the old one stops taking mail at once.
    SetInboundAddress {
        inbound_token_hash: String,
    },
    /// Delete the user and everything of theirs: the record, their sources (shared feeds
    /// unsubscribed, IMAP watches stopped), their addresses in the index, their history in the
    /// silo, their pending timers. A `user_deleted` event says so.
    DeleteUser {},
    /// Credentials replaced, each at once: a new API token's hash, a new private feed secret's
    /// hash; with `end_sessions`, every web session ends but `keep_session` (the caller's own,
    /// by its id's hash).
    ReplaceCredentials {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_hash: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        feed_token_hash: Option<String>,
        #[serde(default)]
        end_sessions: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        keep_session: Option<String>,
    },
    /// The PIN SMS replies that change settings must start with, by its hash
    /// ([`crate::reply_pin_hash`]); `None` removes it.
    SetReplyPin {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin_hash: Option<String>,
    },
    /// A browser signed in to the web app (see [`crate::WebSession`]).
    StartSession {
        session: crate::WebSession,
    },
    /// A browser signed out: its session ends.
    EndSession {
        id_hash: String,
    },
    /// Mail the user a one-time sign-in link (`link`, whose code hashes to `code_hash`) at
    /// each of their e-mail destinations.
    MailSignInLink {
        code_hash: String,
        link: String,
    },
    /// A browser signs in with a mailed link: the link is used up and the session starts,
    /// in one step, so a link signs in once.
    UseSignInLink {
        code_hash: String,
        session: crate::WebSession,
    },
}

/// One notification to send to one destination (the delivery service's work).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryJob {
    /// `<notification id>:<destination id>`: the job's identity across retries.
    pub job_id: String,
    pub notification: Notification,
    pub destination: Destination,
    /// What kind of message this is.
    #[serde(default)]
    pub kind: JobKind,
    /// The short number to acknowledge with (`ack 12`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<u32>,
    /// A signed link that acknowledges the notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_url: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// A notification, recorded in its timeline.
    #[default]
    Notification,
    /// An answer to the user's own command (IM): the title is the text; no outcome is kept.
    Reply,
}

/// What the delivery service reports back to the avatar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryOutcome {
    pub job_id: String,
    pub notification_id: NotificationId,
    pub user: UserId,
    pub destination_id: String,
    pub channel: Channel,
    pub delivered: bool,
    /// What happened, for a person: the provider's answer or the error.
    #[serde(default)]
    pub detail: String,
    pub attempts: i64,
    pub at_ms: Millis,
}

impl DeliveryOutcome {
    /// The outcome as the entry it makes in its notification's timeline: `delivered` or
    /// `failed`, with the destination and, when it took more than one, the attempt.
    pub fn timeline_record(&self) -> HistoryRecord {
        let kind = if self.delivered {
            "delivered"
        } else {
            "failed"
        };
        HistoryRecord::Timeline {
            user: self.user.clone(),
            notification_id: self.notification_id.clone(),
            entry: TimelineEntry {
                at_ms: self.at_ms,
                kind: kind.into(),
                channel: Some(self.channel),
                detail: match self.attempts {
                    n if n > 1 => format!("{}: {} (attempt {n})", self.destination_id, self.detail),
                    _ => format!("{}: {}", self.destination_id, self.detail),
                },
            },
        }
    }
}

/// The avatar's answer to a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandReply {
    pub command_id: String,
    pub ok: bool,
    /// A machine-readable reason when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<RefusalCode>,
    /// The field at fault, when one is (`url`, `steps[0].destinations`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why an avatar refused a command (`CommandReply::code`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    /// Something in the command is not acceptable (see the reply's `field` and message).
    Invalid,
    /// What the command names does not exist (the user, a source, a destination).
    NotFound,
    /// What the command would create exists already.
    Exists,
    /// A code from a newer router than this reader knows.
    #[serde(other)]
    Other,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Invalid => "invalid",
            RefusalCode::NotFound => "not_found",
            RefusalCode::Exists => "exists",
            RefusalCode::Other => "other",
        }
    }
}

/// What the router tells the ingestor about an IMAP source (`<p>.ingest.imap`). Carries the
/// password, which the ingestor keeps in its own bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImapSubscription {
    pub op: SubscriptionOp,
    pub user: UserId,
    pub source_id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub filter: Filter,
    /// The source's spec, with the password when the user gave a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<crate::SourceSpec>,
}

/// What the router tells the ingestor about feed subscriptions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedSubscription {
    pub op: SubscriptionOp,
    pub user: UserId,
    pub source_id: String,
    pub url: String,
    #[serde(default)]
    pub filter: Filter,
    #[serde(default)]
    pub deliver_existing: bool,
    #[serde(default)]
    pub label: String,
    /// The subscriber's own poll interval (none: the ingestor's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poll_interval_secs: Option<u64>,
    /// The source's extractor, when the URL is not a feed (a JSON API): the same URL read
    /// another way is another feed to the ingestor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<Box<crate::Extract>>,
    /// What a price change or a repost of a listing tells the subscriber.
    #[serde(default, skip_serializing_if = "crate::ListingRules::is_default")]
    pub listing: crate::ListingRules,
    /// The source's own request headers, with its secret when the user gave a new one.
    #[serde(default, skip_serializing_if = "crate::SourceRequest::is_default")]
    pub request: crate::SourceRequest,
    /// When the subscriber wants the feed polled (local time); absent: always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<crate::Window>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionOp {
    Upsert,
    Remove,
}

/// One step in a notification's life, as shown in its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: Millis,
    /// `routed`, `attempt`, `delivered`, `failed`, `acked`, …
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub detail: String,
}

/// What the router sends the history service.
// a wire type, built once per message and serialized: boxing would buy nothing
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HistoryRecord {
    /// A routed notification, with the first entry of its timeline.
    Notification {
        notification: Notification,
        entry: TimelineEntry,
    },
    /// A later step of a stored notification's timeline.
    Timeline {
        user: UserId,
        notification_id: NotificationId,
        entry: TimelineEntry,
    },
    /// The user was deleted: every notification and timeline entry of theirs goes.
    Forget { user: UserId },
}

impl HistoryRecord {
    pub fn user(&self) -> &UserId {
        match self {
            HistoryRecord::Notification { notification, .. } => &notification.user,
            HistoryRecord::Timeline { user, .. } | HistoryRecord::Forget { user } => user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avatar_messages_round_trip_and_tolerate_new_fields() {
        let n = Notification {
            id: NotificationId("n1".into()),
            user: UserId::parse("u1").unwrap(),
            source: SourceRef {
                kind: SourceKind::Publish,
                id: None,
                label: String::new(),
            },
            title: "t".into(),
            body: String::new(),
            url: None,
            priority: Priority::URGENT,
            tags: vec![],
            created_at_ms: 1,
            published_at_ms: None,
            dedup_key: None,
        };
        let m = AvatarMessage::Notify { notification: n };
        let mut v = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "notify");
        v["notification"]["added_later"] = serde_json::json!(true);
        let back: AvatarMessage = serde_json::from_value(v).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn priority_is_bounded() {
        assert!(serde_json::from_str::<Priority>("0").is_err());
        assert!(serde_json::from_str::<Priority>("6").is_err());
        assert_eq!(
            serde_json::from_str::<Priority>("5").unwrap(),
            Priority::URGENT
        );
    }
}
