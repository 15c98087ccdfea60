//! The admin screen, for the operator signed in with the admin token: users (and a form that
//! creates one), which instance serves which silo, and the dead letters with replay.

use crate::web::layout;
use crate::web::render;
use crate::{AppState, St};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use tocsin_bus::LeaseValue;

/// The users the screen lists (the first, by key order of the bucket).
const USERS_SHOWN: usize = 100;

pub(crate) async fn page(State(state): St, headers: HeaderMap) -> Response {
    let Some(cookie) = crate::session::named_cookie(&headers, crate::session::ADMIN_COOKIE) else {
        return Redirect::to("/app/sign-in").into_response();
    };
    if crate::auth::require_admin(&state, &headers).is_err() {
        return Redirect::to("/app/sign-in").into_response();
    }
    let csrf = crate::session::csrf_token(cookie);
    let dead = state.bus.dead_letters(0, 100).await;
    render(layout::admin_page(
        &csrf,
        html! {
            section.card aria-labelledby="ad-new" {
                h2 id="ad-new" { "Add a user" }
                form data-api="/v1/users" data-method="POST" data-show="token" {
                    label for="ad-name" { "Name" }
                    input id="ad-name" name="name" required maxlength="100";
                    button type="submit" { "Add user" }
                    (layout::form_status())
                }
                (layout::shown_once("ad-token", html! { "Their API token (shown once: give it to them to sign in)" }))
            }
            section.card aria-labelledby="ad-users" {
                h2 id="ad-users" { "Users" }
                (users(&state).await)
            }
            section.card aria-labelledby="ad-silos" {
                h2 id="ad-silos" { "Silos" }
                (silos(&state).await)
            }
            section.card aria-labelledby="ad-dead" {
                h2 id="ad-dead" { "Dead letters" }
                @match dead {
                    Err(e) => p.error { "Cannot read the dead letters: " (e) }
                    Ok(list) if list.is_empty() => p.empty { "None: every message was handled." }
                    Ok(list) => ul.cards {
                        @for d in &list {
                            li.card id={ "dl-" (d.seq) } {
                                h3 { "#" (d.seq) " · " code { (d.original_subject) } }
                                p { (d.reason) }
                                p.meta { (d.deliveries) " deliveries, from " (d.original_stream) " #" (d.original_seq) }
                                details { summary { "Payload" } pre.payload { (d.payload) } }
                                form.inline data-api={ "/v1/admin/dead-letters/" (d.seq) "/replay" } data-method="POST" data-done="Replayed" {
                                    button type="submit" { "Replay " span.sr { "#" (d.seq) } }
                                    (layout::form_status())
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

async fn users(state: &AppState) -> Markup {
    let rows = match crate::routes::users::first_users(state, USERS_SHOWN).await {
        Ok(rows) => rows,
        Err(e) => return html! { p.error { (e.message) } },
    };
    html! {
        @if rows.is_empty() {
            p.empty { "No users yet." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "User" } th scope="col" { "Name" } th scope="col" { "Sources" } th scope="col" { "Destinations" } th scope="col" { "Escalating" } th scope="col" { "Silo" } th scope="col" { span.sr { "Delete" } } } }
                    tbody {
                        @for u in &rows {
                            tr {
                                th scope="row" { code { (u.id) } }
                                td { (u.name) }
                                td { (u.sources.len()) }
                                td { (u.destinations.len()) }
                                td { (u.reach.escalations.len()) }
                                td { (state.bus.silo_of(&u.id)) }
                                td {
                                    form.inline data-api={ "/v1/users/" (u.id) } data-method="DELETE" data-then="reload"
                                        data-confirm={ "Delete " (u.id) " (" (u.name) ") with their sources, destinations and history? This cannot be undone." } {
                                        button type="submit" { "Delete " span.sr { (u.id) } }
                                        (layout::form_status())
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.len() == USERS_SHOWN { p { "The first " (USERS_SHOWN) " users." } }
        }
    }
}

/// Which router instance holds each silo's lease (ADR 0013).
async fn silos(state: &AppState) -> Markup {
    let Some(leases) = state.bus.kv_existing("leases").await else {
        return html! { p.empty { "No silo is leased yet (no router has started)." } };
    };
    let mut rows = Vec::new();
    for silo in 0..state.bus.config().silo_count {
        let held = leases
            .get(format!("router.{silo}"))
            .await
            .ok()
            .flatten()
            .filter(|b| !b.is_empty())
            .and_then(|b| serde_json::from_slice::<LeaseValue>(&b).ok());
        rows.push((silo, held));
    }
    html! {
        div.scroll {
            table {
                thead { tr { th scope="col" { "Silo" } th scope="col" { "Router holding it" } } }
                tbody {
                    @for (silo, held) in &rows {
                        tr {
                            th scope="row" { (silo) }
                            td {
                                @match held {
                                    Some(l) => { code { (l.holder) } " since " (layout::time(l.since_ms)) }
                                    None => { span.badge.bad { "nobody" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
