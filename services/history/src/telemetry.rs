//! The names of the history service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    RECORDS: counter = "tocsin_history_records_total", "history records committed";
}
