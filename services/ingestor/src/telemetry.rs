//! The names of the ingestor service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

/// Feed polls, by outcome (ok, not_modified, error).
pub(crate) const POLLS: &str = "tocsin_ingestor_polls_total";
/// How long one feed poll took, fetch to recorded.
pub(crate) const POLL_SECONDS: &str = "tocsin_ingestor_poll_seconds";
/// Notifications fanned out from feed items.
pub(crate) const NOTIFICATIONS: &str = "tocsin_ingestor_notifications_total";
/// WebSub pushes received, by outcome (ok, bad_signature).
pub(crate) const WEBSUB_PUSHES: &str = "tocsin_ingestor_websub_pushes_total";
/// Inbound e-mails taken in by the SMTP ingress.
pub(crate) const MAIL: &str = "tocsin_ingestor_mail_total";
/// Inbound e-mails refused, by reason (sender, rate, unauthenticated).
pub(crate) const MAIL_REFUSED: &str = "tocsin_ingestor_mail_refused_total";

/// Give every metric its help text (once, at start).
pub(crate) fn describe() {
    metrics::describe_counter!(POLLS, "feed polls, by outcome (ok, not_modified, error)");
    metrics::describe_histogram!(
        POLL_SECONDS,
        "how long one feed poll took, fetch to recorded"
    );
    metrics::describe_counter!(NOTIFICATIONS, "notifications fanned out from feed items");
    metrics::describe_counter!(
        WEBSUB_PUSHES,
        "WebSub pushes received, by outcome (ok, bad_signature)"
    );
    metrics::describe_counter!(MAIL, "inbound e-mails taken in by the SMTP ingress");
    metrics::describe_counter!(
        MAIL_REFUSED,
        "inbound e-mails refused, by reason (sender, rate, unauthenticated)"
    );
}
