//! The avatar command client: a configuration change is a command published into the user's
//! silo, answered by the avatar on a reply subject; a refusal becomes the matching HTTP error.

use crate::auth::random_hex;
use crate::{ApiError, AppState, bus_error};
use futures::StreamExt;
use std::time::Duration;
use tocsin_model::{AvatarMessage, Command, CommandReply, RefusalCode, UserId};

pub(crate) async fn command(
    state: &AppState,
    user: &UserId,
    command: Command,
) -> Result<CommandReply, ApiError> {
    let command_id = format!("c{}", random_hex(12));
    let inbox = state.bus.client().new_inbox();
    let mut sub = state
        .bus
        .client()
        .subscribe(inbox.clone())
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus is unavailable: {e}")))?;
    let silo = state.bus.silo_of(user);
    let msg = AvatarMessage::Command {
        command_id: command_id.clone(),
        command,
        reply_to: Some(inbox),
    };
    let subject = state.bus.subjects().silo(silo, user.as_str(), msg.kind());
    state
        .bus
        .publish_json(subject, &command_id, &msg)
        .await
        .map_err(bus_error)?;
    let wait = Duration::from_secs(state.cfg.command_timeout_secs);
    let reply = tokio::time::timeout(wait, sub.next()).await.ok().flatten().ok_or_else(|| {
        ApiError::timeout(format!(
            "the router did not confirm command {command_id} within {}s; it is queued and will still be applied",
            wait.as_secs()
        ))
    })?;
    tocsin_bus::decode::<CommandReply>(&reply.payload, "command reply")
        .map_err(|e| ApiError::internal(e.to_string()))
}

pub(crate) fn refusal(reply: CommandReply) -> ApiError {
    let message = reply.message.unwrap_or_else(|| "refused".into());
    match reply.code {
        Some(RefusalCode::NotFound) => ApiError::not_found(message),
        Some(RefusalCode::Exists) => ApiError::conflict(message),
        Some(RefusalCode::Invalid | RefusalCode::Other) | None => {
            ApiError::bad_request(message, reply.field)
        }
    }
}

/// Publish `msg` into `user`'s silo with `id` as its message id.
pub(crate) async fn to_avatar(
    state: &AppState,
    user: &UserId,
    id: &str,
    msg: &AvatarMessage,
) -> Result<(), ApiError> {
    let subject = state
        .bus
        .subjects()
        .silo(state.bus.silo_of(user), user.as_str(), msg.kind());
    state
        .bus
        .publish_json(subject, id, msg)
        .await
        .map_err(bus_error)
}
