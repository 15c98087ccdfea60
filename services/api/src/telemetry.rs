//! The names of the api service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// Notifications published through the API.
pub(crate) const PUBLISHED: &str = "tocsin_api_published_total";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(PUBLISHED, "notifications published through the API");
}
