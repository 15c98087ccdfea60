//! The names of the delivery service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// Send attempts, by channel and outcome (delivered, failed, retry).
pub(crate) const ATTEMPTS: &str = "tocsin_delivery_attempts_total";
/// End to end: from a notification's creation (publish or ingestion) to its delivery, by channel.
pub(crate) const DELIVERED_SECONDS: &str = "tocsin_delivery_delivered_seconds";
/// XMPP sessions started again.
pub(crate) const XMPP_RELOGINS: &str = "tocsin_delivery_xmpp_relogins_total";
/// 1 while the XMPP session is online.
pub(crate) const XMPP_ONLINE: &str = "tocsin_delivery_xmpp_online";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(
        ATTEMPTS,
        "send attempts, by channel and outcome (delivered, failed, retry)"
    );
    metrics::describe_histogram!(
        DELIVERED_SECONDS,
        "end to end: from a notification's creation (publish or ingestion) to its delivery, by channel"
    );
    metrics::describe_counter!(XMPP_RELOGINS, "XMPP sessions started again");
    metrics::describe_gauge!(XMPP_ONLINE, "1 while the XMPP session is online");
}
