//! The policy screen: each escalation policy drawn as a timeline of its steps, quiet hours,
//! what would happen to an urgent notification sent now, and the editor of the default one.

use crate::web::destinations::channel_name;
use crate::web::layout::{self, Viewer};
use crate::web::render;
use axum::response::Response;
use maud::{Markup, html};
use tocsin_model::{Condition, Policy, Priority, Reach, Step, now_ms};

pub(crate) async fn page(v: Viewer) -> Response {
    let u = &v.user;
    let (default, custom) = u.reach.policy_named(Reach::DEFAULT_POLICY, &u.destinations);
    // the default is drawn first, with its preview and editor
    let names: Vec<&str> = u.reach.policy_names().into_iter().skip(1).collect();
    let editing = serde_json::to_string_pretty(&default).unwrap_or_default();
    render(layout::page(
        &v,
        "/app/policy",
        "Policy",
        html! {
            section.card aria-labelledby="p-default" {
                h2 id="p-default" { "Default policy" @if !custom { " (built in)" } }
                (steps(&v, &default))
                (preview(&v, &default))
            }
            @for name in names {
                @let (p, _) = u.reach.policy_named(name, &u.destinations);
                section.card aria-labelledby={ "p-" (name) } {
                    h2 id={ "p-" (name) } { "Policy " code { (name) } }
                    (steps(&v, &p))
                }
            }
            section.card aria-labelledby="p-edit" {
                h2 id="p-edit" { "Edit the default policy" }
                p { "Steps run in order until you acknowledge: each sends to some of your destinations (by "
                    code { "destinations" } " id or by " code { "channels" } "), "
                    code { "when" } " you are " code { "present" } ", " code { "away" } " or "
                    code { "always" } ", then waits " code { "wait_secs" } " for an acknowledgement." }
                form data-api="/v1/policy" data-method="PUT" data-then="reload" {
                    label for="policy-json" { "Policy (JSON)" }
                    textarea id="policy-json" name="$" data-kind="json" rows="14" spellcheck="false" { (editing) }
                    div.actions {
                        button type="submit" { "Save policy" }
                    }
                    (layout::form_status())
                }
                @if custom {
                    form.inline data-api="/v1/policy" data-method="DELETE" data-confirm="Go back to the built-in default policy?" data-then="reload" {
                        button.danger type="submit" { "Back to the built-in default" }
                        (layout::form_status())
                    }
                }
            }
        },
    ))
}

fn when(step: &Step) -> &'static str {
    match step.when {
        Condition::Always => "",
        Condition::Present => " while you are present",
        Condition::Away => " while you are away",
    }
}

fn step_targets(v: &Viewer, step: &Step) -> Markup {
    let targets = step.targets(&v.user.destinations);
    html! {
        @if targets.is_empty() {
            em { "no destination of yours" }
        } @else {
            @for (i, d) in targets.iter().enumerate() {
                @if i > 0 { ", " }
                (channel_name(d.channel)) " " code { (if d.label.is_empty() { &d.address } else { &d.label }) }
            }
        }
    }
}

/// The steps as a timeline: when each fires, counted from the notification, if nobody has
/// acknowledged by then.
fn steps(v: &Viewer, p: &Policy) -> Markup {
    let starts = p.steps.iter().scan(0u64, |at, s| {
        let start = *at;
        *at = at.saturating_add(s.wait_secs);
        Some(start)
    });
    html! {
        ol.timeline-steps {
            @for (step, at) in p.steps.iter().zip(starts) {
                li {
                    span.at { (layout::duration(at)) }
                    span.what { "Send to " (step_targets(v, step)) (when(step)) }
                    @if step.wait_secs > 0 {
                        span.wait { "then wait " (layout::duration(step.wait_secs)) }
                    }
                }
            }
        }
        @if p.urgent_steps.is_some() {
            p { "Urgent notifications (priority 5) have steps of their own." }
        }
        @if p.repeat > 0 {
            p { "Runs " (p.repeat) " more time(s) while nobody acknowledges." }
        }
        @if let Some(q) = &p.quiet_hours {
            p { "Quiet hours " (q.start) "–" (q.end) " (" (q.tz) "): only urgent notifications escalate." }
        }
    }
}

/// What an urgent notification sent now would do, with presence as it is.
fn preview(v: &Viewer, p: &Policy) -> Markup {
    let present = v.user.reach.present();
    let plan = p.plan(Priority::URGENT, &v.user.destinations, present);
    let quiet_until = p.quiet_hours.as_ref().and_then(|q| q.ends_at(now_ms()));
    html! {
        section.preview-now aria-labelledby="p-now" {
            h3 id="p-now" { "What an urgent notification sent now would do" }
            p { "You are " strong { @if present { "present" } @else { "away" } } " on IM."
                @if let Some(t) = quiet_until { " Quiet hours hold other notifications until " (layout::time(t)) "; urgent ones go now." } }
            ol {
                @for s in &plan {
                    li {
                        @if let Some(why) = s.skipped {
                            "Step " (s.index + 1) ": skipped — " (why) "."
                        } @else {
                            @if s.after_secs == 0 { "At once: " } @else { "After " (layout::duration(s.after_secs)) ": " }
                            @for (i, id) in s.destinations.iter().enumerate() {
                                @if i > 0 { ", " }
                                @if let Some(d) = v.user.destinations.iter().find(|d| &d.id == id) {
                                    (channel_name(d.channel)) " " code { (if d.label.is_empty() { &d.address } else { &d.label }) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
