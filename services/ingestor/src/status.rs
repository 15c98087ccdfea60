//! Telling a user's avatar how one of their sources is doing (feeds and IMAP mailboxes alike).

use tocsin_bus::Bus;
use tocsin_model::{AvatarMessage, SourceStatus};
use tracing::warn;

/// Tell `user`'s avatar how their source is doing (feeds and IMAP mailboxes alike).
pub(crate) async fn report_source_status(
    bus: &Bus,
    user: &tocsin_model::UserId,
    source_id: &str,
    status: SourceStatus,
) {
    let subject = bus
        .subjects()
        .silo(bus.silo_of(user), user.as_str(), "status");
    let id = tocsin_bus::msg_id::source_status(user, source_id, status.checked_at_ms);
    let msg = AvatarMessage::SourceStatus {
        source_id: source_id.to_owned(),
        status,
    };
    if let Err(e) = bus.publish_json(subject, &id, &msg).await {
        warn!(error = %e, "cannot report source status");
    }
}
