//! `/v1/stream`: new notifications as Server-Sent Events, live from `live.<user>`.

use crate::auth::authenticate;
use crate::{ApiError, St};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

pub(crate) async fn stream(State(state): St, headers: HeaderMap) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let sub = state
        .bus
        .client()
        .subscribe(state.bus.subjects().live(u.id.as_str()))
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus is unavailable: {e}")))?;
    // the stream ends when the API shuts down, so it never holds the drain open
    let events = sub
        .take_until(state.shutdown.clone().cancelled_owned())
        .map(|m| {
            Ok::<_, std::convert::Infallible>(
                Event::default()
                    .event("notification")
                    .data(String::from_utf8_lossy(&m.payload)),
            )
        });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}
