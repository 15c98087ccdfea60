//! The inbox: the user's history, searched and filtered, newest first, each notification with
//! its acknowledge button and its timeline; `app.js` adds new ones live.

use crate::routes::history::{HistoryParams, query};
use crate::web::layout::{self, Viewer};
use crate::web::{error_page, render};
use crate::{ApiError, St};
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use tocsin_model::{HistoryItem, HistoryState, SourceKind};

/// The filter form's fields; an empty field is no filter.
#[derive(Deserialize, Default)]
pub(crate) struct Filters {
    #[serde(default)]
    q: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    min_priority: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    cursor: String,
}

impl Filters {
    fn params(&self) -> Result<HistoryParams, ApiError> {
        let some = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
        let min_priority = match some(&self.min_priority) {
            None => None,
            Some(p) => Some(p.parse::<u8>().map_err(|_| {
                ApiError::bad_request("min_priority: 1-5", Some("min_priority".into()))
            })?),
        };
        let state = match some(&self.state) {
            None => None,
            Some(s) => Some(
                HistoryState::ALL
                    .into_iter()
                    .find(|k| k.as_str() == s)
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "state: open, acked or resolved",
                            Some("state".into()),
                        )
                    })?,
            ),
        };
        Ok(HistoryParams {
            limit: Some(50),
            cursor: some(&self.cursor),
            q: some(&self.q),
            source: some(&self.source),
            min_priority,
            state,
            ..HistoryParams::default()
        })
    }
}

pub(crate) async fn page(
    State(state): St,
    v: Viewer,
    filters: Result<Query<Filters>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Query(filters) = filters.unwrap_or_default();
    let page = match filters.params() {
        Ok(p) => query(&state, &v.user.id, p).await,
        Err(e) => Err(e),
    };
    let page = match page {
        Ok(p) => p,
        Err(e) => return error_page(None, e),
    };
    let next = page.next_cursor.as_ref().map(|c| {
        let qs = serde_urlencoded::to_string([
            ("q", filters.q.as_str()),
            ("source", filters.source.as_str()),
            ("min_priority", filters.min_priority.as_str()),
            ("state", filters.state.as_str()),
            ("cursor", c.as_str()),
        ])
        .unwrap_or_default();
        format!("/app/?{qs}")
    });
    render(layout::page(
        &v,
        "/app/",
        "Inbox",
        html! {
            (filter_form(&v, &filters))
            p.live-note id="live-note" aria-live="polite" {}
            @if page.items.is_empty() {
                p.empty { "Nothing here yet. New notifications appear as they arrive." }
            }
            ol.inbox id="inbox" data-live="/v1/stream" {
                @for item in &page.items {
                    (notification(item))
                }
            }
            @if let Some(next) = next {
                p { a href=(next) rel="next" { "Older notifications" } }
            }
        },
    ))
}

fn filter_form(v: &Viewer, f: &Filters) -> Markup {
    let selected = |a: &str, b: &str| a == b;
    html! {
        form.filters method="get" action="/app/" role="search" {
            div {
                label for="q" { "Search" }
                input id="q" name="q" type="search" value=(f.q) maxlength="200";
            }
            div {
                label for="source" { "Source" }
                select id="source" name="source" {
                    option value="" { "Any" }
                    @for s in &v.user.sources {
                        option value=(s.id) selected[selected(&f.source, &s.id)] {
                            (if s.label.is_empty() { &s.id } else { &s.label })
                        }
                    }
                }
            }
            div {
                label for="min_priority" { "Priority" }
                select id="min_priority" name="min_priority" {
                    option value="" { "Any" }
                    @for p in (2..=5).rev() {
                        option value=(p) selected[selected(&f.min_priority, &p.to_string())] { (p) " or higher" }
                    }
                }
            }
            div {
                label for="state" { "State" }
                select id="state" name="state" {
                    option value="" { "Any" }
                    @for s in HistoryState::ALL {
                        option value=(s.as_str()) selected[selected(&f.state, s.as_str())] { (state_name(s)) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
    }
}

fn state_name(s: HistoryState) -> &'static str {
    match s {
        HistoryState::Open => "Open",
        HistoryState::Acked => "Acknowledged",
        HistoryState::Resolved => "Resolved",
    }
}

/// One notification: title (linked when its link is http or https), where it came from, its
/// state, its body, the acknowledge button while it is open, and its timeline.
pub(crate) fn notification(item: &HistoryItem) -> Markup {
    let n = &item.notification;
    let st = HistoryState::of(&item.timeline);
    let source = if n.source.label.is_empty() {
        match n.source.kind {
            SourceKind::Feed => "a feed",
            SourceKind::Publish => "published",
            SourceKind::Email => "e-mail",
        }
        .to_owned()
    } else {
        n.source.label.clone()
    };
    html! {
        li.item id={ "n-" (n.id.as_str()) } data-id=(n.id.as_str()) data-state=(st.as_str()) {
            article aria-labelledby={ "t-" (n.id.as_str()) } {
                h2 id={ "t-" (n.id.as_str()) } {
                    (layout::outside_link(n.url.as_deref(), html! { (n.title) }))
                }
                p.meta {
                    span.prio data-priority=(n.priority.get()) { "P" (n.priority.get()) }
                    " · " span.src { (source) }
                    " · " (layout::time(n.created_at_ms))
                    " · " span.state { (state_name(st)) }
                }
                @if !n.body.is_empty() {
                    p.body { (n.body) }
                }
                @if st == HistoryState::Open {
                    form.inline data-api={ "/v1/notifications/" (n.id.as_str()) "/ack" } data-method="POST" data-done="Acknowledged: escalation stopped" {
                        button type="submit" { "Acknowledge " span.sr { (n.title) } }
                        (layout::form_status())
                    }
                }
                @if let Some(key) = n.dedup_key.as_deref().filter(|_| st != HistoryState::Resolved) {
                    form.inline data-api="/v1/publish" data-method="POST" data-json=(serde_json::json!({"resolve": true, "dedup_key": key}).to_string()) data-done="Resolved: its alert is over" {
                        button type="submit" { "Resolve " span.sr { (n.title) } }
                        (layout::form_status())
                    }
                }
                details.timeline {
                    summary { "Timeline (" (item.timeline.len()) ")" }
                    ol {
                        @for e in &item.timeline {
                            li {
                                (layout::time(e.at_ms)) " "
                                strong { (e.kind) }
                                @if let Some(c) = e.channel { " via " (c.as_str()) }
                                @if !e.detail.is_empty() { ": " (e.detail) }
                            }
                        }
                    }
                }
            }
        }
    }
}
