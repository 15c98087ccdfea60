//! The names of the archiver service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// Events that could not be read, dead-lettered.
pub(crate) const REJECTED: &str = "tocsin_archiver_rejected_total";
/// Parquet files written.
pub(crate) const FILES: &str = "tocsin_archiver_files_total";
/// Bytes of Parquet written.
pub(crate) const BYTES: &str = "tocsin_archiver_bytes_total";
/// Events archived.
pub(crate) const EVENTS: &str = "tocsin_archiver_events_total";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(REJECTED, "events that could not be read, dead-lettered");
    metrics::describe_counter!(FILES, "Parquet files written");
    metrics::describe_counter!(BYTES, "bytes of Parquet written");
    metrics::describe_counter!(EVENTS, "events archived");
}
