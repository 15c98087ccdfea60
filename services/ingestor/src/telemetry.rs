//! The names of the ingestor service's metrics, in one place, with their help text on
//! `/metrics`. Labels are bounded (channel, outcome, kind, silo, reason), never a user or id.

tocsin_runtime::metric_names! {
    POLLS: counter = "tocsin_ingestor_polls_total", "feed polls, by outcome (ok, not_modified, error)";
    POLL_SECONDS: histogram = "tocsin_ingestor_poll_seconds", "how long one feed poll took, fetch to recorded";
    NOTIFICATIONS: counter = "tocsin_ingestor_notifications_total", "notifications fanned out from feed items";
    WEBSUB_PUSHES: counter = "tocsin_ingestor_websub_pushes_total", "WebSub pushes received, by outcome (ok, bad_signature)";
    MAIL: counter = "tocsin_ingestor_mail_total", "inbound e-mails taken in by the SMTP ingress";
    MAIL_REFUSED: counter = "tocsin_ingestor_mail_refused_total", "inbound e-mails refused, by reason (sender, rate, unauthenticated; automatic: accepted and dropped, tocsin's own mail or an auto-reply)";
}
