//! The sources screen: what the user watches, each with its health, pause and delete, and
//! the form that adds a feed after previewing it.

use crate::web::layout::{self, Viewer};
use crate::web::render;
use axum::response::Response;
use maud::{Markup, html};
use tocsin_model::{Beat, Source, SourceSpec, SourceStatus, now_ms};

pub(crate) async fn page(v: Viewer) -> Response {
    let now = now_ms();
    render(layout::page(
        &v,
        "/app/sources",
        "Sources",
        html! {
            @if v.user.sources.is_empty() {
                p.empty { "You watch nothing yet: add a feed below." }
            }
            ul.cards aria-label="Your sources" {
                @for s in &v.user.sources {
                    (source(s, v.user.source_status.get(&s.id), v.user.reach.beats.get(&s.id), now))
                }
            }
            (add_feed())
            (add_other())
            section.card aria-labelledby="opml" {
                h2 id="opml" { "Import and export" }
                p { "Feed readers exchange their subscriptions as OPML files. "
                    a href="/v1/sources/opml" download="tocsin-feeds.opml" { "Export your feeds" } "." }
                label for="opml-file" { "An OPML file to import (its feeds are added without filters; new items only)" }
                input id="opml-file" type="file" accept=".opml,.xml,text/x-opml,text/xml";
                div.actions {
                    button type="button" data-action="opml-import" data-file="opml-file" { "Import" }
                    (layout::form_status())
                }
            }
        },
    ))
}

fn what(s: &Source) -> Markup {
    let kind = s.spec.kind_name();
    match &s.spec {
        SourceSpec::Feed {
            url,
            poll_interval_secs,
            ..
        } => html! {
            (kind) " " code.url { (url) }
            @if let Some(every) = poll_interval_secs { ", asked to be checked every " (layout::duration(*every)) }
        },
        SourceSpec::Imap {
            host,
            username,
            mailbox,
            ..
        } => {
            html! { (kind) " " code { (mailbox) } " of " code { (username) } " at " code { (host) } }
        }
        SourceSpec::Heartbeat {
            period_secs,
            grace_secs,
            ..
        } => html! {
            (kind) ": pinged at least every " (layout::duration(*period_secs))
            ", told after " (layout::duration(*grace_secs)) " more"
        },
        SourceSpec::Hook { format, .. } => {
            html! { (kind) " (" (format!("{format:?}").to_lowercase()) ")" }
        }
        SourceSpec::Topic { topic } => html! { (kind) " " code { (topic) } },
    }
}

fn health(spec: &SourceSpec, status: Option<&SourceStatus>, beat: Option<&Beat>) -> Markup {
    if let Some(b) = beat {
        return match b.missed {
            Some(_) => html! {
                span.badge.bad { "Missed" } " · no ping since " (layout::time(b.last_ping_ms))
            },
            None => html! {
                span.badge.ok { "Working" } " · overdue after " (layout::time(b.due_ms))
            },
        };
    }
    match status {
        // a hook's status is kept only once a request is refused; a topic has none
        None => match spec {
            SourceSpec::Hook { .. } => html! { span.badge.ok { "Ready" } " · no request refused" },
            SourceSpec::Topic { .. } => html! { span.badge.ok { "Ready" } },
            _ => html! { span.badge.unknown { "Not checked yet" } },
        },
        Some(st) if st.ok => html! {
            span.badge.ok { "Working" } " · checked " (layout::time(st.checked_at_ms))
        },
        Some(st) => html! {
            span.badge.bad { @if st.broken { "Broken" } @else { "Failing" } }
            " · " (st.consecutive_failures) " failures in a row, last " (layout::time(st.checked_at_ms))
            @if let Some(e) = &st.error {
                p.error { "Last error: " (e) }
            }
        },
    }
}

fn source(s: &Source, status: Option<&SourceStatus>, beat: Option<&Beat>, now: i64) -> Markup {
    let name = if s.label.is_empty() { &s.id } else { &s.label };
    let muted = s.settings.muted_until_ms.filter(|t| *t > now);
    // a pause or a resume changes the mute alone: the other settings are sent as they are
    let mut unmuted = s.settings.clone();
    unmuted.muted_until_ms = None;
    let settings = serde_json::to_string(&unmuted).unwrap_or_else(|_| "{}".into());
    html! {
        li.card id={ "source-" (s.id) } {
            h2 { (name) }
            p { (what(s)) }
            p.health { (health(&s.spec, status, beat)) }
            @if !s.filter.any.is_empty() || !s.filter.all.is_empty() || !s.filter.exclude.is_empty() {
                p.filter {
                    @if !s.filter.any.is_empty() { "Any of: " (s.filter.any.join(", ")) ". " }
                    @if !s.filter.all.is_empty() { "All of: " (s.filter.all.join(", ")) ". " }
                    @if !s.filter.exclude.is_empty() { "None of: " (s.filter.exclude.join(", ")) "." }
                }
            }
            @if let Some(until) = muted {
                p { span.badge.paused { "Paused" } " until " (layout::time(until)) }
            }
            details.words {
                summary { "Name and words " span.sr { "of " (name) } }
                form data-api={ "/v1/sources/" (s.id) } data-method="PUT" data-then="reload" {
                    label for={ "name-" (s.id) } { "Name" }
                    input id={ "name-" (s.id) } name="label" maxlength="100" value=(s.label);
                    // the filter is replaced whole: its other parts go back as they are
                    input type="hidden" name="filter" data-kind="json" value=(other_filter_parts(&s.filter));
                    label for={ "any-" (s.id) } { "Any of these words (comma-separated)" }
                    input id={ "any-" (s.id) } name="filter.any" data-kind="list" value=(s.filter.any.join(", "));
                    label for={ "all-" (s.id) } { "All of these words" }
                    input id={ "all-" (s.id) } name="filter.all" data-kind="list" value=(s.filter.all.join(", "));
                    label for={ "exclude-" (s.id) } { "None of these words" }
                    input id={ "exclude-" (s.id) } name="filter.exclude" data-kind="list" value=(s.filter.exclude.join(", "));
                    (listing_fields(s))
                    button type="submit" { "Save" }
                    (layout::form_status())
                }
            }
            details.settings {
                summary { "Settings " span.sr { "of " (name) } }
                form data-api={ "/v1/sources/" (s.id) "/settings" } data-method="PUT" data-then="reload" {
                    @if let Some(m) = s.settings.muted_until_ms {
                        input type="hidden" name="muted_until_ms" data-kind="int" value=(m);
                    }
                    label for={ "prio-" (s.id) } { "Priority of its notifications" }
                    select id={ "prio-" (s.id) } name="priority" data-kind="int" {
                        option value="" selected[s.settings.priority.is_none()] { "As its items say" }
                        @for p in 1..=5u8 {
                            option value=(p) selected[s.settings.priority.map(|x| x.get()) == Some(p)] { (p) }
                        }
                    }
                    label for={ "policy-" (s.id) } { "Escalation policy (a name; empty: as for its kind)" }
                    input id={ "policy-" (s.id) } name="policy" maxlength="32" value=(s.settings.policy.clone().unwrap_or_default());
                    label for={ "group-" (s.id) } { "Group what arrives within this many seconds into one notification (empty: never)" }
                    input id={ "group-" (s.id) } name="group_secs" data-kind="int" inputmode="numeric" value=(s.settings.group_secs.map(|g| g.to_string()).unwrap_or_default());
                    label for={ "tags-" (s.id) } { "Tags (comma-separated)" }
                    input id={ "tags-" (s.id) } name="tags" data-kind="list" value=(s.settings.tags.join(", "));
                    (digest_fields(s))
                    button type="submit" { "Save settings" }
                    (layout::form_status())
                }
            }
            div.actions {
                @if muted.is_some() {
                    form.inline data-api={ "/v1/sources/" (s.id) "/settings" } data-method="PUT" data-json=(settings) data-then="reload" {
                        button type="submit" { "Resume " span.sr { (name) } }
                        (layout::form_status())
                    }
                } @else {
                    form.inline data-api={ "/v1/sources/" (s.id) "/settings" } data-method="PUT" data-json=(settings) data-then="reload" {
                        input type="hidden" name="muted_until_ms" data-kind="from-now-secs" value="86400";
                        button type="submit" { "Pause for a day " span.sr { (name) } }
                        (layout::form_status())
                    }
                }
                form.inline data-api={ "/v1/sources/" (s.id) } data-method="DELETE" data-confirm={ "Delete " (name) "?" } data-then="reload" {
                    button.danger type="submit" { "Delete " span.sr { (name) } }
                    (layout::form_status())
                }
            }
        }
    }
}

/// The form that adds a feed; "Preview" fetches it now and shows which items would match.
fn add_feed() -> Markup {
    html! {
        section.card aria-labelledby="add-feed" {
            h2 id="add-feed" { "Add a feed" }
            form id="feed-form" data-api="/v1/sources" data-method="POST" data-then="reload" data-preview="/v1/sources/preview" {
                input type="hidden" name="kind" value="feed";
                label for="feed-url" { "Feed or search URL" }
                input id="feed-url" name="url" type="url" required placeholder="https://example.org/search/bik?format=rss";
                label for="feed-label" { "Name" }
                input id="feed-label" name="label" maxlength="100";
                label for="feed-any" { "Any of these words (comma-separated)" }
                input id="feed-any" name="filter.any" data-kind="list";
                label for="feed-all" { "All of these words" }
                input id="feed-all" name="filter.all" data-kind="list";
                label for="feed-exclude" { "None of these words" }
                input id="feed-exclude" name="filter.exclude" data-kind="list";
                label for="feed-priority" { "Priority" }
                select id="feed-priority" name="settings.priority" data-kind="int" {
                    option value="" { "As its items say (3)" }
                    @for p in 1..=5 { option value=(p) { (p) } }
                }
                (every_field("feed-every"))
                div.check {
                    input id="feed-existing" name="deliver_existing" type="checkbox";
                    label for="feed-existing" { "Also send the items it has now" }
                }
                div.actions {
                    button type="button" data-action="preview" { "Preview" }
                    button type="submit" { "Add feed" }
                }
                (layout::form_status())
            }
            section id="preview" aria-live="polite" hidden {
                h3 { "Preview" }
                p.preview-summary {}
                ol.preview-items {}
            }
        }
    }
}

/// The forms that add the other kinds of source, each folded until opened. A heartbeat's
/// and a webhook source's own URL are shown once, when made.
fn add_other() -> Markup {
    html! {
        section.card aria-labelledby="add-other" {
            h2 id="add-other" { "Add another kind of source" }
            details {
                summary { "A heartbeat: be told when a job stops checking in" }
                form data-api="/v1/sources" data-method="POST" data-show="ping_url" {
                    input type="hidden" name="kind" value="heartbeat";
                    label for="hb-label" { "Name" }
                    input id="hb-label" name="label" maxlength="100" required;
                    label for="hb-period" { "It pings at least every (seconds)" }
                    input id="hb-period" name="period_secs" data-kind="int" inputmode="numeric" required;
                    label for="hb-grace" { "Tell me after this many seconds more (default 300)" }
                    input id="hb-grace" name="grace_secs" data-kind="int" inputmode="numeric";
                    button type="submit" { "Add heartbeat" }
                    (layout::form_status())
                }
                (layout::shown_once("hb-url", html! { "Its ping URL (shown once: GET or POST it from the job)" }))
            }
            details {
                summary { "Alerts from Alertmanager or Grafana" }
                form data-api="/v1/sources" data-method="POST" data-show="hook_url" {
                    input type="hidden" name="kind" value="hook";
                    label for="hook-label" { "Name" }
                    input id="hook-label" name="label" maxlength="100" required;
                    label for="hook-format" { "Sender" }
                    select id="hook-format" name="format" {
                        option value="alertmanager" { "Prometheus Alertmanager" }
                        option value="grafana" { "Grafana Alerting" }
                    }
                    div.check {
                        input id="hook-group" name="per_group" type="checkbox";
                        label for="hook-group" { "One notification per alert group" }
                    }
                    button type="submit" { "Add alert source" }
                    (layout::form_status())
                }
                (layout::shown_once("hook-url", html! { "Its webhook URL (shown once: set it as the receiver's or contact point's URL)" }))
            }
            details {
                summary { "A JSON API: a site with no feed (see the recipe in docs/sources.md)" }
                form data-api="/v1/sources" data-method="POST" data-then="reload" {
                    input type="hidden" name="kind" value="json";
                    label for="json-url" { "The API's URL" }
                    input id="json-url" name="url" type="url" required placeholder="https://shop.example/api/search?q=bike";
                    label for="json-label" { "Name" }
                    input id="json-label" name="label" maxlength="100";
                    label for="json-items" { "Where its listings are (a JSON pointer)" }
                    input id="json-items" name="mapping.items" placeholder="/results";
                    label for="json-title" { "Each listing's title" }
                    input id="json-title" name="mapping.title" required placeholder="{{ /title }} - ${{ /price }}";
                    label for="json-link" { "Its link" }
                    input id="json-link" name="mapping.url" placeholder="{{ /url }}";
                    label for="json-key" { "Its id" }
                    input id="json-key" name="mapping.key" placeholder="{{ /id }}";
                    label for="json-any" { "Any of these words (comma-separated)" }
                    input id="json-any" name="filter.any" data-kind="list";
                    (every_field("json-every"))
                    div.check {
                        input id="json-existing" name="deliver_existing" type="checkbox";
                        label for="json-existing" { "Also send the listings it has now" }
                    }
                    button type="submit" { "Add JSON API" }
                    (layout::form_status())
                }
            }
            details {
                summary { "A web page: listings found by CSS selectors (see the recipe in docs/sources.md)" }
                form data-api="/v1/sources" data-method="POST" data-then="reload" {
                    input type="hidden" name="kind" value="html";
                    label for="html-url" { "The search page's URL" }
                    input id="html-url" name="url" type="url" required placeholder="https://listings.example/search/bik";
                    label for="html-label" { "Name" }
                    input id="html-label" name="label" maxlength="100";
                    label for="html-item" { "Each listing (a CSS selector)" }
                    input id="html-item" name="selectors.item" required placeholder="li.result-row";
                    label for="html-title" { "Its title, within it" }
                    input id="html-title" name="selectors.title" placeholder="a.result-title";
                    label for="html-price" { "Its price" }
                    input id="html-price" name="selectors.price" placeholder=".result-price";
                    label for="html-any" { "Any of these words (comma-separated)" }
                    input id="html-any" name="filter.any" data-kind="list";
                    (every_field("html-every"))
                    div.check {
                        input id="html-existing" name="deliver_existing" type="checkbox";
                        label for="html-existing" { "Also send the listings it has now" }
                    }
                    button type="submit" { "Add web page" }
                    (layout::form_status())
                }
            }
            details {
                summary { "A page that changes (a price list, a status page)" }
                form data-api="/v1/sources" data-method="POST" data-then="reload" {
                    input type="hidden" name="kind" value="change";
                    label for="change-url" { "The page's URL" }
                    input id="change-url" name="url" type="url" required placeholder="https://vendor.example/pricing";
                    label for="change-label" { "Name" }
                    input id="change-label" name="label" maxlength="100";
                    label for="change-selector" { "Only this part (a CSS selector; empty: the whole page)" }
                    input id="change-selector" name="selector" placeholder="#prices";
                    (every_field("change-every"))
                    button type="submit" { "Watch page" }
                    (layout::form_status())
                }
            }
            details {
                summary { "A shared topic someone gave you" }
                form data-api="/v1/sources" data-method="POST" data-then="reload" {
                    input type="hidden" name="kind" value="topic";
                    label for="topic-name" { "Topic" }
                    input id="topic-name" name="topic" required;
                    label for="topic-key" { "Its subscribe key" }
                    input id="topic-key" name="key" type="password" required;
                    label for="topic-label" { "Name" }
                    input id="topic-label" name="label" maxlength="100";
                    button type="submit" { "Subscribe" }
                    (layout::form_status())
                }
            }
            details {
                summary { "An IMAP mailbox" }
                form data-api="/v1/sources" data-method="POST" data-then="reload" {
                    input type="hidden" name="kind" value="imap";
                    label for="imap-host" { "Server" }
                    input id="imap-host" name="host" required placeholder="imap.example.org";
                    label for="imap-port" { "Port (default 993, TLS)" }
                    input id="imap-port" name="port" data-kind="int" inputmode="numeric";
                    label for="imap-user" { "User name" }
                    input id="imap-user" name="username" required autocomplete="off";
                    label for="imap-password" { "Password (kept by the ingestor alone and never shown again; use an app password)" }
                    input id="imap-password" name="password" type="password" required autocomplete="new-password";
                    label for="imap-mailbox" { "Mailbox (default INBOX)" }
                    input id="imap-mailbox" name="mailbox";
                    label for="imap-label" { "Name" }
                    input id="imap-label" name="label" maxlength="100";
                    button type="submit" { "Watch mailbox" }
                    (layout::form_status())
                }
            }
        }
    }
}

/// A filter without its word lists (regex, price range, category), as JSON: what the words
/// form sends back unchanged.
fn other_filter_parts(f: &tocsin_model::Filter) -> String {
    let rest = tocsin_model::Filter {
        any: vec![],
        all: vec![],
        exclude: vec![],
        ..f.clone()
    };
    serde_json::to_string(&rest).unwrap_or_else(|_| "{}".into())
}

/// A source's digest, in its settings form: when it goes out (none: each notification on its
/// own), a daily one's time and zone, a count.
fn digest_fields(s: &tocsin_model::Source) -> Markup {
    use tocsin_model::DigestEvery;
    let d = s.settings.digest.as_deref();
    let every = d.map(|d| d.every);
    html! {
        label for={ "digest-" (s.id) } { "Gather its notifications into one message" }
        select id={ "digest-" (s.id) } name="digest.every" {
            option value="" selected[every.is_none()] { "No: each on its own" }
            option value="hour" selected[every == Some(DigestEvery::Hour)] { "Every hour" }
            option value="day" selected[every == Some(DigestEvery::Day)] { "Every day, at the time below" }
            option value="count" selected[every == Some(DigestEvery::Count)] { "When the number below have gathered" }
        }
        label for={ "digest-at-" (s.id) } { "Daily at (HH:MM, default 08:00)" }
        input id={ "digest-at-" (s.id) } name="digest.at" data-needs="digest.every" maxlength="8" placeholder="08:00" value=(d.and_then(|d| d.at.clone()).unwrap_or_default());
        label for={ "digest-tz-" (s.id) } { "Time zone (e.g. Europe/Berlin; default UTC)" }
        input id={ "digest-tz-" (s.id) } name="digest.tz" data-needs="digest.every" maxlength="64" value=(d.and_then(|d| d.tz.clone()).unwrap_or_default());
        label for={ "digest-count-" (s.id) } { "How many make a digest" }
        input id={ "digest-count-" (s.id) } name="digest.count" data-needs="digest.every" data-kind="int" inputmode="numeric" value=(d.and_then(|d| d.count).map(|c| c.to_string()).unwrap_or_default());
    }
}

/// How often a source being added is checked; empty: the server's own interval.
fn every_field(id: &str) -> Markup {
    html! {
        label for=(id) { "Check it every this many seconds (empty: the server's own interval; the server keeps a shortest one)" }
        input id=(id) name="poll_interval_secs" data-kind="int" inputmode="numeric";
    }
}

/// A polled source's own fields, in its words form: how often it is checked, and its listing
/// rules (what a price change and a repost do).
fn listing_fields(s: &tocsin_model::Source) -> Markup {
    use tocsin_model::{PriceAlerts, Reposts};
    let tocsin_model::SourceSpec::Feed {
        listing,
        poll_interval_secs,
        ..
    } = &s.spec
    else {
        return html! {};
    };
    html! {
        label for={ "every-" (s.id) } { "Check it every this many seconds (0: the server's own interval; the server keeps a shortest one)" }
        input id={ "every-" (s.id) } name="poll_interval_secs" data-kind="int" inputmode="numeric" value=(poll_interval_secs.unwrap_or(0));
        label for={ "prices-" (s.id) } { "A listing's price changes" }
        select id={ "prices-" (s.id) } name="listing.prices" {
            option value="drops" selected[listing.prices == PriceAlerts::Drops] { "Tell me of drops" }
            option value="changes" selected[listing.prices == PriceAlerts::Changes] { "Tell me of drops and rises" }
            option value="off" selected[listing.prices == PriceAlerts::Off] { "Tell me nothing" }
        }
        label for={ "reposts-" (s.id) } { "A listing posted again" }
        select id={ "reposts-" (s.id) } name="listing.reposts" {
            option value="drop" selected[listing.reposts == Reposts::Drop] { "Drop it" }
            option value="mark" selected[listing.reposts == Reposts::Mark] { "Tell me, marked as a repost" }
            option value="keep" selected[listing.reposts == Reposts::Keep] { "Tell me as new" }
        }
        input type="hidden" name="listing.repost_days" data-kind="int" value=(listing.repost_days);
    }
}
