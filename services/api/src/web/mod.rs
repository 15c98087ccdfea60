//! The web app (ADR 0023): pages rendered here from the user's record and history, served at
//! `/app/` on the API's own origin with every asset built into the binary. Pages only read;
//! every change goes from `app.js` to the same `/v1` endpoints every other client uses, with
//! the session cookie and its CSRF token.

mod admin;
mod analytics;
mod assets;
mod destinations;
mod inbound;
mod inbox;
pub(crate) mod layout;
mod policy;
mod sessions;
mod sources;

use crate::{ApiError, AppState, St};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use layout::Viewer;
use maud::Markup;
use std::sync::Arc;

/// What every web app response carries: no script but our own files, no framing (no
/// clickjacking), no type sniffing, no referrer to the sites a notification links to.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; manifest-src 'self'; worker-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/app/") }))
        .route("/app", get(|| async { Redirect::to("/app/") }))
        .route("/app/", get(inbox::page))
        .route("/app/sign-in", get(sign_in))
        .route("/app/sign-in/link/{user}/{code}", get(sign_in_link))
        .route("/app/sources", get(sources::page))
        .route("/app/destinations", get(destinations::page))
        .route("/app/policy", get(policy::page))
        .route("/app/inbound", get(inbound::page))
        .route("/app/analytics", get(analytics::page))
        .route("/app/sessions", get(sessions::page))
        .route("/app/admin", get(admin::page))
        .merge(assets::router())
}

/// The security headers of [`CONTENT_SECURITY_POLICY`], on every response of the API: the web
/// app's, the acknowledgement page's, and the JSON ones (which no page may frame either).
pub(crate) async fn secure_headers(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// The signed-in viewer of a page, or the way to the sign-in page.
pub(crate) async fn viewer(state: &AppState, headers: &HeaderMap) -> Result<Viewer, Response> {
    let Some(cookie) = crate::session::cookie(headers) else {
        // the operator, signed in with the admin token, has the admin screen
        let to = match crate::session::named_cookie(headers, crate::session::ADMIN_COOKIE) {
            Some(_) => "/app/admin",
            None => "/app/sign-in",
        };
        return Err(Redirect::to(to).into_response());
    };
    match crate::session::authenticate_cookie(state, cookie).await {
        Ok(user) => Ok(Viewer {
            user,
            csrf: crate::session::csrf_token(cookie),
        }),
        Err(e) if e.status == axum::http::StatusCode::UNAUTHORIZED => {
            Err(Redirect::to("/app/sign-in").into_response())
        }
        Err(e) => Err(error_page(Some(cookie), e)),
    }
}

/// A screen's handler takes its viewer as an argument: the signed-in user, or the way to the
/// sign-in page (or the admin screen for the operator) instead of the screen.
impl axum::extract::FromRequestParts<Arc<AppState>> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        viewer(state, &parts.headers).await
    }
}

/// A page saying what went wrong (the bus or history unavailable, a bad filter).
pub(crate) fn error_page(_cookie: Option<&str>, e: ApiError) -> Response {
    let status = e.status;
    let body = layout::bare(
        "Something went wrong",
        maud::html! {
            p role="alert" { (e.message) }
            p { a href="/app/" { "Back to the inbox" } }
        },
    );
    (status, Html(body.into_string())).into_response()
}

pub(crate) fn render(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

/// The page a mailed sign-in link opens: a button, so that mail scanners fetching the link
/// do not use it up.
async fn sign_in_link(
    axum::extract::Path((user, code)): axum::extract::Path<(String, String)>,
) -> Response {
    let valid = tocsin_model::UserId::parse(&user).is_ok()
        && code.len() == 32
        && code.bytes().all(|b| b.is_ascii_hexdigit());
    render(layout::bare(
        "Sign in to tocsin",
        maud::html! {
            @if valid {
                form.card data-api={ "/v1/session/link/" (user) "/" (code) } data-method="POST" data-then="/app/" {
                    p { "Sign in as " code { (user) } " in this browser." }
                    button type="submit" { "Sign in" }
                    (layout::form_status())
                }
            } @else {
                p role="alert" { "This is not a sign-in link. " a href="/app/sign-in" { "Sign in" } }
            }
        },
    ))
}

async fn sign_in(State(state): St, headers: HeaderMap) -> Response {
    if let Some(cookie) = crate::session::cookie(&headers)
        && crate::session::authenticate_cookie(&state, cookie)
            .await
            .is_ok()
    {
        return Redirect::to("/app/").into_response();
    }
    // a link by mail, where some delivery instance serves e-mail
    let mail = state.served(tocsin_model::Channel::Email).await;
    render(layout::bare(
        "Sign in",
        maud::html! {
            form.card data-api="/v1/session" data-method="POST" data-then="/app/" {
                p { "Sign in with your API token (" code { "tk_…" } "), the one " code { "tocsin user add" } " printed." }
                label for="token" { "API token" }
                input id="token" name="token" type="password" autocomplete="current-password" required spellcheck="false";
                button type="submit" { "Sign in" }
                (layout::form_status())
            }
            @if mail {
                form.card data-api="/v1/session/link" data-method="POST" data-say="mailed" {
                    h2 { "Or get a link by e-mail" }
                    label for="link-user" { "Your user id (" code { "u…" } ")" }
                    input id="link-user" name="user" required spellcheck="false" autocomplete="username";
                    button type="submit" { "Mail me a sign-in link" }
                    (layout::form_status())
                }
            }
        },
    ))
}
