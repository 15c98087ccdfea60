//! The sessions screen: the browsers signed in as the user, this one marked.

use crate::web::layout::{self, Viewer};
use crate::web::render;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use tocsin_model::{hash_token, now_ms};

pub(crate) async fn page(headers: HeaderMap, v: Viewer) -> Response {
    let this = crate::session::cookie(&headers)
        .map(hash_token)
        .unwrap_or_default();
    let now = now_ms();
    render(layout::page(
        &v,
        "/app/sessions",
        "Sessions",
        html! {
            p { "Browsers signed in as you (at most " (tocsin_model::WebSession::MAX_PER_USER)
                "; signing in on another ends the oldest)." }
            table {
                thead { tr { th scope="col" { "Browser" } th scope="col" { "Signed in" } th scope="col" { "Ends" } } }
                tbody {
                    @for s in v.user.sessions.iter().filter(|s| s.expires_at_ms > now) {
                        tr {
                            td { (s.label) @if s.id_hash == this { " " strong { "(this browser)" } } }
                            td { (layout::time(s.created_at_ms)) }
                            td { (layout::time(s.expires_at_ms)) }
                        }
                    }
                }
            }
        },
    ))
}
