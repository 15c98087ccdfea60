//! The names of the api service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    PUBLISHED: counter = "tocsin_api_published_total", "notifications published through the API";
}
