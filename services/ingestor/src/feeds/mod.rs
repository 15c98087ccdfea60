//! Feed watching: one record per distinct URL, polled once per interval however many people
//! subscribe, new items fanned out to the subscribers whose filter matches.

pub mod extract;
pub mod fetch;
pub mod listings;
pub mod normalize;
pub mod plan;
pub(crate) mod poll;
pub(crate) mod preview;
pub mod queue;
pub mod record;
pub(crate) mod scheduler;
pub(crate) mod store;
pub(crate) mod subscriptions;
pub(crate) mod topics;
pub mod transition;
pub mod websub;

pub use plan::{PollPlan, next_poll, plan_poll};
pub use record::{FeedRecord, Subscriber, feed_key, feed_key_for, subscriber_key};

use crate::config::IngestorConfig;
use crate::feeds::fetch::Fetcher;
use async_nats::jetstream::kv;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tocsin_bus::Bus;
use tocsin_model::Millis;
use tokio::sync::{Notify, Semaphore};

pub(crate) struct Shared {
    /// Every task the ingestor starts (polls, pushes, hub requests, SMTP sessions, IMAP
    /// watches): waited for, within the grace period, before the bus is drained.
    pub(crate) tasks: tokio_util::task::TaskTracker,
    pub(crate) bus: Bus,
    pub(crate) kv: kv::Store,
    pub(crate) cfg: IngestorConfig,
    pub(crate) fetcher: Fetcher,
    pub(crate) feeds: Mutex<HashMap<String, FeedRecord>>,
    pub(crate) in_flight: Mutex<HashSet<String>>,
    pub(crate) hosts: Mutex<HashMap<String, HostState>>,
    pub(crate) fetch_permits: Arc<Semaphore>,
    /// When each watched feed is next due (lock after `feeds`, never before).
    pub(crate) queue: Mutex<crate::feeds::queue::PollQueue>,
    /// Woken when an entry becomes the earliest.
    pub(crate) wake: Notify,
}

impl Shared {
    /// Poll `key` at `at` (its record's `next_poll_ms`).
    pub(crate) fn reschedule(&self, key: &str, at: Millis) {
        if self.queue.lock().expect("queue lock").set(key, at) {
            self.wake.notify_one();
        }
    }
}

#[derive(Default)]
pub(crate) struct HostState {
    pub(crate) in_flight: usize,
    pub(crate) next_allowed_ms: Millis,
}
