//! The inbound e-mail screen: the user's address (a new one on request, shown once with a
//! copy button), who may send to it, and whether mail must be authenticated.

use crate::St;
use crate::web::layout::{self, Viewer};
use crate::web::render;
use axum::extract::State;
use axum::response::Response;
use maud::html;

pub(crate) async fn page(State(state): St, v: Viewer) -> Response {
    let u = &v.user;
    let domain = &state.cfg.inbound_domain;
    render(layout::page(
        &v,
        "/app/inbound",
        "Inbound e-mail",
        html! {
            section.card aria-labelledby="in-address" {
                h2 id="in-address" { "Your address" }
                p { "Forward alert e-mails to your address and each becomes a notification. "
                    "It is " code { (u.id) ".<secret>@" (domain) } "; only a hash of the secret is kept, "
                    "so the whole address is shown when it is made." }
                @if u.inbound_token_hash.is_empty() {
                    p { "You have no inbound address yet." }
                }
                (layout::replace_form(layout::Replace {
                    api: "/v1/inbound/address",
                    show: "inbound_address",
                    confirm: "Make a new address? The old one stops taking mail at once.",
                    button: "Make a new address",
                    id: "in-new",
                    what: "Your new address",
                }))
            }
            section.card aria-labelledby="in-senders" {
                h2 id="in-senders" { "Who may send to it" }
                form data-api="/v1/inbound" data-method="PUT" data-then="reload" {
                    label for="in-allowed" { "Allowed senders, comma-separated (" code { "ann@example.org" } " or a whole domain, " code { "@example.org" } "); empty: anyone" }
                    input id="in-allowed" name="allowed_senders" data-kind="list" value=(u.allowed_senders.join(", "));
                    div.check {
                        input id="in-auth" name="require_authenticated" type="checkbox" checked[u.require_authenticated_mail];
                        label for="in-auth" { "Take only mail that passes SPF or DKIM" }
                    }
                    button type="submit" { "Save" }
                    (layout::form_status())
                }
                @if !u.mail_rules.is_empty() {
                    p { (u.mail_rules.len()) " e-mail rule(s) set what mail means (priority, alert key, resolve); "
                        "see " code { "tocsin mail-rules" } "." }
                }
            }
        },
    ))
}
