//! The destinations screen: where the user is reached, each with its state, and the form
//! that adds one.

use crate::St;
use crate::web::layout::{self, Viewer};
use crate::web::render;
use axum::extract::State;
use axum::response::Response;
use maud::html;
use tocsin_model::Channel;

pub(crate) async fn page(State(state): St, v: Viewer) -> Response {
    // the channels of unconfirmed destinations no delivery instance serves: no code can reach
    // them, so none is asked for
    let mut unserved = Vec::new();
    for d in v.user.destinations.iter().filter(|d| !d.verified()) {
        if !unserved.contains(&d.channel) && !state.served(d.channel).await {
            unserved.push(d.channel);
        }
    }
    render(layout::page(
        &v,
        "/app/destinations",
        "Destinations",
        html! {
            @if v.user.destinations.is_empty() {
                p.empty { "Nowhere to reach you yet: add a destination below." }
            }
            ul.cards aria-label="Your destinations" {
                @for d in &v.user.destinations {
                    @let name = if d.label.is_empty() { d.address.as_str() } else { d.label.as_str() };
                    li.card id={ "destination-" (d.id) } {
                        h2 { (name) }
                        p {
                            (channel_name(d.channel))
                            @if d.push_format == Some(tocsin_model::PushFormat::WebPush) { " (a browser)" }
                            ": " code { (d.address) }
                        }
                        p.health {
                            @match v.user.destination_status.get(&d.id) {
                                _ if !d.verified() => { span.badge.bad { "Waiting for its code" } }
                                Some(st) if !st.ok => {
                                    span.badge.bad { "Paused after failures" }
                                    @if let Some(e) = &st.error { p.error { "Last error: " (e) } }
                                }
                                _ => { span.badge.ok { "In use" } }
                            }
                        }
                        @if !d.verified() && unserved.contains(&d.channel) {
                            p.error {
                                "No code can be sent: this server does not deliver by "
                                (channel_name(d.channel)) " yet (its operator adds it to "
                                code { "delivery.channels" } ")."
                            }
                        } @else if !d.verified() {
                            // a code was sent to it: nothing else is until it comes back
                            form data-api={ "/v1/destinations/" (d.id) "/verify" } data-method="POST" data-then="reload" {
                                label for={ "code-" (d.id) } { "The code sent to it" }
                                input id={ "code-" (d.id) } name="code" inputmode="numeric" autocomplete="one-time-code" required;
                                button type="submit" { "Confirm " span.sr { (name) } }
                                (layout::form_status())
                            }
                        }
                        div.actions {
                            @if d.verified() {
                                form.inline data-api={ "/v1/destinations/" (d.id) "/test" } data-method="POST" data-say="detail" data-ok="delivered" {
                                    button type="submit" { "Send a test message " span.sr { "to " (name) } }
                                    (layout::form_status())
                                }
                            } @else {
                                form.inline data-api={ "/v1/destinations/" (d.id) "/verify" } data-method="POST" data-done="A new code was sent" {
                                    input type="hidden" name="$" data-kind="json" value="{}";
                                    button type="submit" { "Send a new code " span.sr { "to " (name) } }
                                    (layout::form_status())
                                }
                            }
                            form.inline data-api={ "/v1/destinations/" (d.id) } data-method="DELETE" data-confirm={ "Delete " (name) "?" } data-then="reload" {
                                button.danger type="submit" { "Delete " span.sr { (name) } }
                                (layout::form_status())
                            }
                        }
                    }
                }
            }
            section.card aria-labelledby="push-here" {
                h2 id="push-here" { "Notifications on this device" }
                p { "Get tocsin's notifications from this browser, with an Acknowledge button, even when the page is closed. On a phone, add tocsin to the home screen first (the browser's menu: Install or Add to Home screen)." }
                div {
                    button type="button" data-action="push-subscribe" data-label="This browser" { "Notify this device" }
                    (layout::form_status())
                }
            }
            section.card aria-labelledby="add-destination" {
                h2 id="add-destination" { "Add a destination" }
                form data-api="/v1/destinations" data-method="POST" data-then="reload" {
                    label for="d-channel" { "Channel" }
                    select id="d-channel" name="channel" required {
                        @for c in [Channel::Email, Channel::Xmpp, Channel::Sms, Channel::Push, Channel::Webhook] {
                            option value=(c.as_str()) { (channel_name(c)) }
                        }
                    }
                    label for="d-address" { "Address (e-mail, XMPP address, phone number in +E.164, URL)" }
                    input id="d-address" name="address" required;
                    label for="d-label" { "Name" }
                    input id="d-label" name="label" maxlength="100";
                    button type="submit" { "Add destination" }
                    (layout::form_status())
                }
            }
        },
    ))
}

pub(crate) fn channel_name(c: Channel) -> &'static str {
    match c {
        Channel::Xmpp => "XMPP",
        Channel::Sms => "SMS",
        Channel::Email => "E-mail",
        Channel::Push => "Push",
        Channel::Webhook => "Webhook",
        Channel::Sink => "Sink",
    }
}
