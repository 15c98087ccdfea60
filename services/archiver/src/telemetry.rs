//! The names of the archiver service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    REJECTED: counter = "tocsin_archiver_rejected_total", "events that could not be read, dead-lettered";
    FILES: counter = "tocsin_archiver_files_total", "Parquet files written";
    BYTES: counter = "tocsin_archiver_bytes_total", "bytes of Parquet written";
    EVENTS: counter = "tocsin_archiver_events_total", "events archived";
}
