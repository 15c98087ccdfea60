//! What handling one message produced: records, jobs, subscriptions, index changes, events,
//! a reply, and whether the user's record changed.

use crate::decide::escalate::Fired;
use tocsin_model::{
    AddressEntry, CommandReply, DeliveryJob, Event, FeedSubscription, HistoryRecord, UserId,
};

/// What handling one message produced.
#[derive(Debug, Default, PartialEq)]
pub struct Effects {
    pub history: Vec<HistoryRecord>,
    pub subscriptions: Vec<FeedSubscription>,
    /// IMAP sources to start, change or stop watching (with the password, when given).
    pub imap: Vec<tocsin_model::ImapSubscription>,
    pub jobs: Vec<DeliveryJob>,
    pub reply: Option<(String, CommandReply)>,
    /// Address index changes: the key and the new entry (None: delete).
    pub index: Vec<(String, Option<AddressEntry>)>,
    /// Events for the archive; `lib.rs` fills in the user and silo and publishes them with the
    /// other outputs.
    pub events: Vec<Event>,
    /// The record changed and must be saved before the message is acked (or, when the
    /// record is gone, deleted with the user's timer).
    pub dirty: bool,
    /// What it came to (a bounded label for metrics and logs).
    pub outcome: Outcome,
}

impl Effects {
    /// No effects, only the outcome label.
    pub(crate) fn labelled(outcome: Outcome) -> Effects {
        Effects {
            outcome,
            ..Default::default()
        }
    }

    /// Add what an escalation rule produced; any change to the record makes it dirty.
    pub(crate) fn take(&mut self, user: &UserId, fired: Fired) {
        self.dirty = true;
        self.jobs.extend(fired.jobs);
        self.events.extend(fired.events);
        for (notification_id, entry) in fired.entries {
            self.history.push(HistoryRecord::Timeline {
                user: user.clone(),
                notification_id,
                entry,
            });
        }
    }
}

impl Effects {
    /// Add everything `other` produced (its outcome label is dropped).
    pub(crate) fn absorb(&mut self, other: Effects) {
        self.history.extend(other.history);
        self.subscriptions.extend(other.subscriptions);
        self.imap.extend(other.imap);
        self.jobs.extend(other.jobs);
        self.index.extend(other.index);
        self.events.extend(other.events);
        self.dirty |= other.dirty;
    }
}

/// What handling one message came to: a bounded label for metrics and logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outcome {
    Routed,
    Duplicate,
    DuplicateContent,
    SourceRemoved,
    NoUser,
    #[default]
    Applied,
    Refused,
    Status,
    Delivered,
    Failed,
    Presence,
    PresenceSame,
    Reply,
    ReplyUnknownAddress,
    Ack,
    Resolved,
    Ping,
    Tick,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::Duplicate => "duplicate",
            Outcome::DuplicateContent => "duplicate_content",
            Outcome::SourceRemoved => "source_removed",
            Outcome::NoUser => "no_user",
            Outcome::Applied => "applied",
            Outcome::Refused => "refused",
            Outcome::Status => "status",
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Presence => "presence",
            Outcome::PresenceSame => "presence_same",
            Outcome::Reply => "reply",
            Outcome::ReplyUnknownAddress => "reply_unknown_address",
            Outcome::Ack => "ack",
            Outcome::Resolved => "resolved",
            Outcome::Ping => "ping",
            Outcome::Tick => "tick",
        }
    }
}
