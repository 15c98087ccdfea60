//! The names of the delivery service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    ATTEMPTS: counter = "tocsin_delivery_attempts_total", "send attempts, by channel and outcome (delivered, failed, retry)";
    DELIVERED_SECONDS: histogram = "tocsin_delivery_delivered_seconds", "end to end: from a notification's creation (publish or ingestion) to its delivery, by channel";
    PARKED: counter = "tocsin_delivery_parked_total", "jobs parked back in the stream (a user over its share of a channel, a destination that keeps failing), by channel";
    XMPP_RELOGINS: counter = "tocsin_delivery_xmpp_relogins_total", "XMPP sessions started again";
    XMPP_ONLINE: gauge = "tocsin_delivery_xmpp_online", "1 while the XMPP session is online";
}
