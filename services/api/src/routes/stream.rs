//! `/v1/stream`: new notifications as Server-Sent Events, live from `live.<user>`.

use crate::auth::authenticate;
use crate::{ApiError, AppState, St};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::sync::Arc;
use tocsin_model::UserId;

/// One of a user's open live streams; its slot is given back when the stream ends.
struct Slot {
    state: Arc<AppState>,
    user: UserId,
}

impl Slot {
    /// A slot for `user`, unless they hold `api.max_streams_per_user` already.
    fn take(state: &Arc<AppState>, user: &UserId) -> Option<Slot> {
        let mut open = state
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(user.clone()).or_default();
        if *n >= state.cfg.max_streams_per_user {
            return None;
        }
        *n += 1;
        Some(Slot {
            state: state.clone(),
            user: user.clone(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .state
            .streams
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

pub(crate) async fn stream(State(state): St, headers: HeaderMap) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    let Some(slot) = Slot::take(&state, &u.id) else {
        return Err(ApiError::too_many(format!(
            "{} live streams are open for this user already (api.max_streams_per_user); close one",
            state.cfg.max_streams_per_user
        )));
    };
    let sub = state
        .bus
        .client()
        .subscribe(state.bus.subjects().live(u.id.as_str()))
        .await
        .map_err(|e| ApiError::unavailable(format!("the bus is unavailable: {e}")))?;
    // the stream ends when the API shuts down, so it never holds the drain open
    let events = sub
        .take_until(state.shutdown.clone().cancelled_owned())
        .map(move |m| {
            // the slot lives as long as the stream
            let _slot = &slot;
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
