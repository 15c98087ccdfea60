//! The names of the history service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// History records committed.
pub(crate) const RECORDS: &str = "tocsin_history_records_total";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(RECORDS, "history records committed");
}
