//! The sessions screen: the browsers signed in as the user, this one marked, and the
//! credentials to replace when one may have leaked (the others signed out, a new API token, new
//! private feed addresses), and the reply PIN SMS replies that change settings need.

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
            form data-api="/v1/sessions" data-method="DELETE" data-then="reload"
                data-confirm="Sign out every other browser?" {
                button type="submit" { "Sign out everywhere else" }
                (layout::form_status())
            }
            section.card aria-labelledby="keys-token" {
                h2 id="keys-token" { "API token" }
                p { "Scripts and the command line use your API token. A new one is shown once; "
                    "the old one stops working at once and every other browser is signed out." }
                (layout::replace_form(layout::Replace {
                    api: "/v1/me/token",
                    show: "token",
                    confirm: "Make a new API token? The old one stops working at once.",
                    button: "Make a new API token",
                    id: "keys-new-token",
                    what: "Your new API token",
                }))
            }
            section.card aria-labelledby="keys-feed" {
                h2 id="keys-feed" { "Private feed" }
                p { "Your history as an Atom feed for a feed reader. New addresses are shown once; "
                    "the old ones stop working at once." }
                (layout::replace_form(layout::Replace {
                    api: "/v1/me/feed",
                    show: "feed.atom",
                    confirm: "Make a new feed address? The old one stops working at once.",
                    button: "Make a new feed address",
                    id: "keys-new-feed",
                    what: "Your new feed address (Atom)",
                }))
            }
            section.card aria-labelledby="keys-pin" {
                h2 id="keys-pin" { "SMS reply PIN" }
                p { "A text message's sender can be forged, so an SMS reply that changes your "
                    "settings must start with this PIN: " code { "4821 mute 30d" } ". "
                    @if v.user.reply_pin.is_some() { "A PIN is set." }
                    @else { "No PIN is set: SMS replies acknowledge, but change no settings." } }
                form data-api="/v1/me/reply-pin" data-method="PUT" data-then="reload" {
                    label for="reply-pin" { "New PIN (4 to 8 digits)" }
                    input id="reply-pin" name="pin" inputmode="numeric" pattern="[0-9]{4,8}"
                        autocomplete="off" required;
                    button type="submit" { "Set the PIN" }
                    (layout::form_status())
                }
                @if v.user.reply_pin.is_some() {
                    form data-api="/v1/me/reply-pin" data-method="DELETE" data-then="reload"
                        data-confirm="Remove the PIN? SMS replies will change no settings." {
                        button.danger type="submit" { "Remove the PIN" }
                        (layout::form_status())
                    }
                }
            }
        },
    ))
}
