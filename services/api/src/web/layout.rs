//! The page every screen of the web app shares: head, navigation, sign-out, and the small
//! pieces screens render alike (times, links, status).

use maud::{DOCTYPE, Markup, html};
use tocsin_model::Millis;

/// Who the page is for: the signed-in user and the token their changes must carry.
pub(crate) struct Viewer {
    pub(crate) user: tocsin_model::UserRecord,
    pub(crate) csrf: String,
}

/// The screens, in the navigation's order: (path, name).
pub(crate) const SCREENS: [(&str, &str); 7] = [
    ("/app/", "Inbox"),
    ("/app/sources", "Sources"),
    ("/app/destinations", "Destinations"),
    ("/app/policy", "Policy"),
    ("/app/inbound", "Inbound e-mail"),
    ("/app/analytics", "Analytics"),
    ("/app/sessions", "Sessions"),
];

fn head(title: &str, csrf: Option<&str>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="robots" content="noindex";
            meta name="theme-color" content="#8a2b06";
            @if let Some(csrf) = csrf {
                meta name="csrf-token" content=(csrf);
            }
            title { (title) " · tocsin" }
            link rel="stylesheet" href="/app/static/app.css";
            link rel="manifest" href="/app/manifest.webmanifest";
            link rel="icon" href="/app/static/icon.svg" type="image/svg+xml";
            link rel="apple-touch-icon" href="/app/static/icon-192.png";
            script src="/app/static/app.js" defer {}
        }
    }
}

/// A screen of the signed-in app: `current` is its path in [`SCREENS`].
pub(crate) fn page(viewer: &Viewer, current: &str, title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, Some(&viewer.csrf)))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/app/" { "tocsin" }
                    nav aria-label="Screens" {
                        ul {
                            @for (path, name) in SCREENS {
                                li {
                                    @if path == current {
                                        a href=(path) aria-current="page" { (name) }
                                    } @else {
                                        a href=(path) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    form.signout data-api="/v1/session" data-method="DELETE" data-then="/app/sign-in" {
                        span.who { (viewer.user.name) " (" (viewer.user.id) ")" }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The operator's admin screen (signed in with the admin token, no user).
pub(crate) fn admin_page(csrf: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Admin", Some(csrf)))
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/app/admin" { "tocsin" }
                    nav aria-label="Screens" {
                        ul { li { a href="/app/admin" aria-current="page" { "Admin" } } }
                    }
                    form.signout data-api="/v1/session" data-method="DELETE" data-then="/app/sign-in" {
                        span.who { "operator" }
                        button type="submit" { "Sign out" }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { "Admin" }
                    (body)
                }
            }
        }
    }
}

/// A page outside the signed-in app (sign-in, the acknowledgement link's page).
pub(crate) fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, None))
            body.bare {
                main id="main" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// Where a form's answer is shown (an error, or what a change returned once).
pub(crate) fn form_status() -> Markup {
    html! { p.form-status role="status" aria-live="polite" {} }
}

/// Where a secret the server shows once appears (a new address, a hook's URL, a new user's
/// token), hidden until a form's answer fills it, with a button that copies it.
/// A button that replaces a credential (after `confirm`): `POST api`, and the new value,
/// `show` in the answer, shown once in the field `id` labelled `what`.
pub(crate) struct Replace<'a> {
    pub api: &'a str,
    pub show: &'a str,
    pub confirm: &'a str,
    pub button: &'a str,
    pub id: &'a str,
    pub what: &'a str,
}

pub(crate) fn replace_form(r: Replace<'_>) -> Markup {
    html! {
        form data-api=(r.api) data-method="POST" data-show=(r.show) data-confirm=(r.confirm) {
            button type="submit" { (r.button) }
            (form_status())
        }
        (shown_once(r.id, html! { (r.what) }))
    }
}

pub(crate) fn shown_once(id: &str, what: Markup) -> Markup {
    html! {
        div.shown hidden {
            label for=(id) { (what) }
            div.copy-row {
                input id=(id) readonly;
                button type="button" data-copy={ "#" (id) } { "Copy" }
            }
        }
    }
}

/// A point in time for people: UTC to the minute, the exact instant in `datetime`.
pub(crate) fn time(at_ms: Millis) -> Markup {
    use chrono::TimeZone;
    match chrono::Utc.timestamp_millis_opt(at_ms).single() {
        Some(t) => html! {
            time datetime=(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (t.format("%Y-%m-%d %H:%M UTC"))
            }
        },
        None => html! { "—" },
    }
}

/// A link to a URL from outside, only when it is http(s): a `javascript:` or `data:` link
/// from a feed stays text.
pub(crate) fn outside_link(url: Option<&str>, text: Markup) -> Markup {
    let safe =
        url.filter(|u| url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https")));
    match safe {
        Some(u) => {
            html! { a href=(u) rel="noopener noreferrer nofollow" target="_blank" { (text) } }
        }
        None => text,
    }
}

pub(crate) use tocsin_model::text::duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_web_links_are_links() {
        let text = html! { "t" };
        for bad in [
            "javascript:alert(1)",
            "data:text/html,x",
            "vbscript:x",
            "not a url",
        ] {
            let m = outside_link(Some(bad), text.clone()).into_string();
            assert_eq!(m, "t", "{bad}");
        }
        let m = outside_link(Some("https://x.example/a?b=\"c\""), text).into_string();
        assert!(
            m.starts_with("<a href=\"https://x.example/a?b=%22c%22\"") || m.contains("&quot;"),
            "{m}"
        );
    }
}
