//! Acknowledgements: `POST /v1/notifications/{id}/ack` and the signed links in e-mails and
//! SMS (`/v1/ack/{user}/{id}/{sig}`: a page that asks, a POST that acknowledges).

use crate::auth::authenticate;
use crate::client::to_avatar;
use crate::{ApiError, AppState, St};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use serde_json::json;
use tocsin_model::{AvatarMessage, NotificationId, UserId, ack_signature_valid, now_ms};

pub(crate) fn notification_id(id: &str) -> Result<NotificationId, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 80
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(NotificationId(id.to_owned()))
    } else {
        Err(ApiError::bad_request(
            format!("{id:?} is not a notification id"),
            Some("id".into()),
        ))
    }
}

/// `POST /v1/notifications/{id}/ack`: the user acknowledges through the API.
pub(crate) async fn ack(
    State(state): St,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let u = authenticate(&state, &headers).await?;
    let id = notification_id(&id)?;
    let msg = AvatarMessage::Ack {
        notification_id: id.clone(),
        via: "api".into(),
        at_ms: now_ms(),
    };
    to_avatar(&state, &u.id, &tocsin_bus::msg_id::ack(&id, "api"), &msg).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "acknowledged": id }))))
}

/// The user and notification of a signed link, once the signature checks out.
pub(crate) async fn signed(
    state: &AppState,
    user: &str,
    id: &str,
    sig: &str,
) -> Result<(UserId, NotificationId), ApiError> {
    let bad = || ApiError::not_found("this acknowledgement link is not valid");
    let user = UserId::parse(user).map_err(|_| bad())?;
    let id = notification_id(id).map_err(|_| bad())?;
    let record = crate::auth::load_user(state, &user)
        .await?
        .ok_or_else(bad)?;
    if ack_signature_valid(&record.token_hash, &id, sig) {
        Ok((user, id))
    } else {
        Err(bad())
    }
}

pub(crate) fn page(title: &str, body: maud::Markup) -> Html<String> {
    Html(crate::web::layout::bare(title, body).into_string())
}

/// `GET /v1/ack/{user}/{id}/{sig}`: a page with one button. A GET never acknowledges: mail
/// scanners and link previews fetch links nobody clicked.
pub(crate) async fn ack_link_page(
    State(state): St,
    Path((user, id, sig)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    signed(&state, &user, &id, &sig).await?;
    Ok(page(
        "Acknowledge this notification?",
        maud::html! {
            p { "Acknowledging stops any further escalation of this notification on every channel." }
            form method="post" { button.big type="submit" { "Acknowledge" } }
        },
    )
    .into_response())
}

/// `POST /v1/ack/{user}/{id}/{sig}`: the button on that page (or an ntfy action).
pub(crate) async fn ack_link(
    State(state): St,
    Path((user, id, sig)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (user, id) = signed(&state, &user, &id, &sig).await?;
    let msg = AvatarMessage::Ack {
        notification_id: id.clone(),
        via: "link".into(),
        at_ms: now_ms(),
    };
    to_avatar(&state, &user, &tocsin_bus::msg_id::ack(&id, "link"), &msg).await?;
    Ok(page(
        "Acknowledged",
        maud::html! { p { "No further escalation will be sent for this notification." } },
    )
    .into_response())
}
