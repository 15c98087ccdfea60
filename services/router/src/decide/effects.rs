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
    /// The record changed and must be saved before the message is acked.
    pub dirty: bool,
    /// A bounded label for metrics and logs: `routed`, `duplicate`, `no_user`, `applied`, …
    pub outcome: &'static str,
}

impl Effects {
    /// No effects, only the outcome label.
    pub(crate) fn labelled(outcome: &'static str) -> Effects {
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
