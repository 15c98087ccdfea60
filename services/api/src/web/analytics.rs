//! The analytics screen: the user's report from the archive (`/v1/analytics`) drawn as
//! charts — deliveries per day and channel, acknowledgement rate and time to ack, delivery
//! latency — with the figures in a table beside them.

use crate::St;
use crate::routes::analytics::report;
use crate::web::layout::{self, Viewer};
use crate::web::{error_page, render};
use axum::extract::{Query, State};
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;
use tocsin_model::AnalyticsRow;

#[derive(Deserialize, Default)]
pub(crate) struct Params {
    #[serde(default)]
    days: Option<u32>,
}

const CHOICES: [u32; 4] = [7, 14, 30, 90];
/// One colour per channel, told apart without colour too (the legend and the table).
const COLOURS: [(&str, &str); 6] = [
    ("email", "#1f5f99"),
    ("xmpp", "#6b3fa0"),
    ("sms", "#a4161a"),
    ("push", "#1c6b37"),
    ("webhook", "#8a5a00"),
    ("sink", "#5c554e"),
];

pub(crate) async fn page(
    State(state): St,
    v: Viewer,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let days = params.ok().and_then(|Query(p)| p.days).unwrap_or(14);
    let rows = match report(&state, &v.user.id, days).await {
        Ok(r) => r,
        Err(e) => return error_page(None, e),
    };
    let all: Vec<&AnalyticsRow> = rows.iter().filter(|r| r.channel == "all").collect();
    let period = period(days);
    render(layout::page(
        &v,
        "/app/analytics",
        "Analytics",
        html! {
            form.filters method="get" action="/app/analytics" {
                div {
                    label for="days" { "Period" }
                    select id="days" name="days" {
                        @for d in CHOICES {
                            option value=(d) selected[d == days] { "Last " (d) " days" }
                        }
                    }
                }
                button type="submit" { "Show" }
            }
            @if all.is_empty() {
                p.empty { "Nothing in the archive for these days yet. Events reach it within a minute or so of happening." }
            } @else {
                section.card aria-labelledby="a-deliveries" {
                    h2 id="a-deliveries" { "Deliveries per day and channel" }
                    (deliveries(&period, &rows))
                }
                section.card aria-labelledby="a-acks" {
                    h2 id="a-acks" { "Acknowledged, of those routed" }
                    (bars_of(
                        "a-acks-chart",
                        "Acknowledgement rate per day, in percent",
                        &period
                            .iter()
                            .map(|d| {
                                let rate = all.iter().find(|r| r.day == *d).and_then(|r| r.ack_rate);
                                (d.clone(), vec![("acked %", "#8a2b06", (rate.unwrap_or(0.0) * 100.0).round() as u64)])
                            })
                            .collect::<Vec<_>>(),
                        Some(100),
                    ))
                }
                section.card aria-labelledby="a-table" {
                    h2 id="a-table" { "Day by day" }
                    div.scroll {
                        table {
                            thead {
                                tr {
                                    th scope="col" { "Day" }
                                    th scope="col" { "Routed" }
                                    th scope="col" { "Delivered" }
                                    th scope="col" { "Failed" }
                                    th scope="col" { "Acked" }
                                    th scope="col" { "Ack rate" }
                                    th scope="col" { "Delivery p50 / p95 / p99" }
                                    th scope="col" { "Time to ack p50 / p95" }
                                }
                            }
                            tbody {
                                @for r in &all {
                                    tr {
                                        th scope="row" { (r.day) }
                                        td { (r.routed) }
                                        td { (r.delivered) }
                                        td { (r.failed) }
                                        td { (r.acked) }
                                        td { (r.ack_rate.map_or("—".to_owned(), |a| format!("{:.0} %", a * 100.0))) }
                                        td { (ms(r.delivery_p50_ms)) " / " (ms(r.delivery_p95_ms)) " / " (ms(r.delivery_p99_ms)) }
                                        td { (ms(r.ack_p50_ms)) " / " (ms(r.ack_p95_ms)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

fn ms(v: Option<i64>) -> String {
    match v {
        None => "—".to_owned(),
        Some(m) if m < 1000 => format!("{m} ms"),
        Some(m) if m < 120_000 => format!("{:.1} s", m as f64 / 1000.0),
        Some(m) => layout::duration((m / 1000) as u64),
    }
}

/// The days of the last `days`, oldest first, as the report names them (`2026-12-03`).
fn period(days: u32) -> Vec<String> {
    let today = chrono::Utc::now().date_naive();
    (0..days.clamp(1, tocsin_model::AnalyticsRequest::MAX_DAYS))
        .rev()
        .filter_map(|back| today.checked_sub_days(chrono::Days::new(u64::from(back))))
        .map(|d| d.format("%Y-%m-%d").to_string())
        .collect()
}

/// Deliveries per day, stacked by channel.
fn deliveries(period: &[String], rows: &[AnalyticsRow]) -> Markup {
    let mut days: BTreeMap<&str, Stack<'static>> =
        period.iter().map(|d| (d.as_str(), Vec::new())).collect();
    for r in rows {
        if let Some((name, colour)) = COLOURS.iter().find(|(c, _)| *c == r.channel) {
            days.entry(&r.day)
                .or_default()
                .push((name, colour, r.delivered));
        }
    }
    let series: Vec<(String, Stack<'_>)> =
        days.into_iter().map(|(d, v)| (d.to_owned(), v)).collect();
    let shown: Vec<&(&str, &str)> = COLOURS
        .iter()
        .filter(|(c, _)| rows.iter().any(|r| r.channel == *c && r.delivered > 0))
        .collect();
    html! {
        (bars_of("a-deliveries-chart", "Deliveries per day, stacked by channel", &series, None))
        ul.legend aria-label="Channels" {
            @for (name, colour) in shown {
                li { svg.swatch viewBox="0 0 10 10" aria-hidden="true" { rect width="10" height="10" fill=(colour) {} } (name) }
            }
        }
    }
}

type Stack<'a> = Vec<(&'a str, &'a str, u64)>;

/// A bar chart: a bar per day, stacked from its parts, each part with its own `<title>`
/// (read by screen readers and shown on hover).
fn bars_of(id: &str, title: &str, series: &[(String, Stack<'_>)], max: Option<u64>) -> Markup {
    const W: f64 = 640.0;
    const H: f64 = 180.0;
    const BOTTOM: f64 = 20.0;
    let top = max
        .unwrap_or_else(|| {
            series
                .iter()
                .map(|(_, s)| s.iter().map(|p| p.2).sum::<u64>())
                .max()
                .unwrap_or(0)
        })
        .max(1);
    let slot = W / series.len().max(1) as f64;
    let bar = (slot * 0.7).clamp(1.0, 48.0);
    let scale = (H - BOTTOM - 10.0) / top as f64;
    // each part's rectangle: x, y, height, colour, label
    let mut rects = Vec::new();
    let mut labels = Vec::new();
    for (i, (day, parts)) in series.iter().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut y = H - BOTTOM;
        for (name, colour, value) in parts {
            let h = *value as f64 * scale;
            y -= h;
            rects.push((x, y, h, *colour, format!("{day}, {name}: {value}")));
        }
        if series.len() <= 14 || i % 7 == 0 {
            labels.push((x + bar / 2.0, day.get(5..).unwrap_or(day).to_owned()));
        }
    }
    html! {
        svg.chart id=(id) viewBox={ "0 0 " (W) " " (H) } role="img" aria-labelledby={ (id) "-title" } {
            title id={ (id) "-title" } { (title) "; highest " (top) }
            line x1="0" x2=(W) y1=(H - BOTTOM) y2=(H - BOTTOM) stroke="#8c8279" {}
            @for (x, y, h, colour, label) in &rects {
                rect x=(x) y=(y) width=(bar) height=(h) fill=(colour) { title { (label) } }
            }
            @for (x, day) in &labels {
                text x=(x) y=(H - 5.0) text-anchor="middle" font-size="10" { (day) }
            }
        }
    }
}
