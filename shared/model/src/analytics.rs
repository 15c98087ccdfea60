//! The report `tocsin analytics` and the web app's analytics show: one row per day and
//! channel, computed by the archiver from the archive (`services/archiver/src/analytics.rs`).

use serde::{Deserialize, Serialize};

/// One line of a report: a day, a channel (`all`: every channel, and the counts that belong
/// to no channel), and with `by_user` a user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsRow {
    pub day: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub channel: String,
    pub ingested: u64,
    pub matched: u64,
    pub filtered_out: u64,
    pub routed: u64,
    /// Sends: those that did not deliver (`attempted`) and those that did (`delivered`).
    pub attempts: u64,
    pub delivered: u64,
    pub failed: u64,
    pub escalated: u64,
    pub acked: u64,
    /// Notifications whose alert was resolved while they escalated (the `all` row only).
    pub resolved: u64,
    /// Notifications a silence kept from anyone, or whose escalation a new silence stopped
    /// (the `all` row only).
    pub silenced: u64,
    /// Heartbeats that were not pinged in time (the `all` row only).
    pub heartbeat_missed: u64,
    /// Notifications held in a source's group and told in its summary (the `all` row only).
    pub grouped: u64,
    /// Acknowledged / routed (the `all` row only).
    pub ack_rate: Option<f64>,
    pub delivery_p50_ms: Option<i64>,
    pub delivery_p95_ms: Option<i64>,
    pub delivery_p99_ms: Option<i64>,
    pub ack_p50_ms: Option<i64>,
    pub ack_p95_ms: Option<i64>,
    pub ack_p99_ms: Option<i64>,
}

/// What the web app asks the archiver for (request/reply on `<p>.rpc.archiver.report`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AnalyticsRequest {
    pub user: crate::UserId,
    /// The last this many days (UTC), today included.
    pub days: u32,
}

impl AnalyticsRequest {
    /// The most days one request covers (a request reads each day's files).
    pub const MAX_DAYS: u32 = 92;
}
