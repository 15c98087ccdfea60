//! Alert webhooks in Alertmanager's shape: `POST /v1/alertmanager` (Prometheus Alertmanager,
//! payload version 4) and `POST /v1/grafana` (Grafana Alerting's webhook contact point, its
//! version 1, the same alerts with dashboard and panel links). Each firing alert becomes a
//! notification of the caller whose dedup key is the alert's fingerprint, so repeats add a
//! `repeated` entry rather than a page; each resolved alert resolves that key, which stops its
//! escalation.

use crate::auth::authenticate;
use crate::routes::parse_body;
use crate::routes::publish::{Origin, Publish, publish_for, resolve_for};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use std::collections::BTreeMap;
use tocsin_model::text::truncate;
use tocsin_model::{UserRecord, budget};

/// The most alerts one request may carry (Alertmanager's `max_alerts` caps what it sends).
pub(crate) const MAX_ALERTS: usize = 500;

/// The webhook's body; fields tocsin does not use are ignored (both senders add some).
#[derive(Debug, Deserialize)]
pub(crate) struct Payload {
    version: String,
    #[serde(default)]
    receiver: String,
    /// `firing` while any alert of the group fires, `resolved` when none does.
    #[serde(default)]
    status: String,
    /// The group's identity.
    #[serde(default, rename = "groupKey")]
    group_key: String,
    #[serde(default, rename = "groupLabels")]
    group_labels: BTreeMap<String, String>,
    #[serde(default, rename = "commonAnnotations")]
    common_annotations: BTreeMap<String, String>,
    alerts: Vec<Alert>,
}

/// How many of a group's alerts one notification lists.
const GROUP_LINES: usize = 20;

/// Who sends the alerts: their payload version, the name their keys and events carry, and
/// which link of an alert to open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sender {
    Alertmanager,
    Grafana,
}

impl Sender {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Sender::Alertmanager => "alertmanager",
            Sender::Grafana => "grafana",
        }
    }

    fn version(self) -> &'static str {
        match self {
            Sender::Alertmanager => "4",
            Sender::Grafana => "1",
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Alert {
    /// `firing` or `resolved`.
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
    /// Grafana's links to the panel and the dashboard the alert is about.
    #[serde(default, rename = "panelURL")]
    panel_url: String,
    #[serde(default, rename = "dashboardURL")]
    dashboard_url: String,
    /// Grafana's rendering of the values that fired it.
    #[serde(default, rename = "valueString")]
    value_string: String,
    #[serde(default)]
    fingerprint: String,
}

/// What to do for one alert.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    Notify(Box<Publish>),
    Resolve(String),
}

/// `?per=alert` (the default) or `?per=group`: one notification per alert, or per group.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mode {
    #[serde(default)]
    per: Option<String>,
}

impl Mode {
    fn per_group(&self) -> Result<bool, ApiError> {
        match self.per.as_deref() {
            None | Some("alert") => Ok(false),
            Some("group") => Ok(true),
            Some(other) => Err(ApiError::bad_request(
                format!("per: {other:?} is neither alert nor group"),
                Some("per".into()),
            )),
        }
    }
}

/// `POST /v1/alertmanager[?per=group]`.
pub(crate) async fn alertmanager(
    State(state): St,
    headers: HeaderMap,
    Query(mode): Query<Mode>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    receive(&state, &headers, &body, Sender::Alertmanager, &mode).await
}

/// `POST /v1/grafana[?per=group]`.
pub(crate) async fn grafana(
    State(state): St,
    headers: HeaderMap,
    Query(mode): Query<Mode>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    receive(&state, &headers, &body, Sender::Grafana, &mode).await
}

async fn receive(
    state: &crate::AppState,
    headers: &HeaderMap,
    body: &[u8],
    sender: Sender,
    mode: &Mode,
) -> Result<Response, ApiError> {
    let u = authenticate(state, headers).await?;
    deliver(state, &u, body, sender, None, mode.per_group()?).await
}

/// Take `body` from `sender` for `u` (as the hook source `source`, when it came through one);
/// `per_group`: one notification per alert group rather than per alert.
pub(crate) async fn deliver(
    state: &crate::AppState,
    u: &UserRecord,
    body: &[u8],
    sender: Sender,
    source: Option<&tocsin_model::Source>,
    per_group: bool,
) -> Result<Response, ApiError> {
    let payload: Payload = parse_body(body)?;
    let label = match source {
        Some(s) if !s.label.is_empty() => s.label.clone(),
        _ if !payload.receiver.trim().is_empty() => truncate(payload.receiver.trim(), 100),
        _ => sender.name().to_owned(),
    };
    let origin = Origin {
        label: &label,
        source_id: source.map(|s| s.id.as_str()),
        via: sender.name(),
    };
    let actions = if per_group {
        group_actions(payload, sender)?
    } else {
        actions(payload, sender)?
    };
    run(state, u, actions, &origin).await
}

/// Send `actions` for `u` in order; answers how many notified and resolved.
pub(crate) async fn run(
    state: &crate::AppState,
    u: &UserRecord,
    actions: Vec<Action>,
    origin: &Origin<'_>,
) -> Result<Response, ApiError> {
    let (mut notified, mut resolved) = (0, 0);
    for action in actions {
        match action {
            Action::Notify(p) => {
                publish_for(state, u, *p, origin).await?;
                notified += 1;
            }
            Action::Resolve(key) => {
                resolve_for(state, &u.id, &key, origin.via).await?;
                resolved += 1;
            }
        }
    }
    Ok(Json(json!({ "notified": notified, "resolved": resolved })).into_response())
}

/// The payload as one notification for its whole group, keyed by the group: it pages once
/// while any alert of the group fires and is resolved when none does.
pub(crate) fn group_actions(payload: Payload, sender: Sender) -> Result<Vec<Action>, ApiError> {
    let key = format!(
        "{}-group:{}",
        match sender {
            Sender::Alertmanager => "am",
            Sender::Grafana => "grafana",
        },
        &tocsin_model::digest(&[&payload.group_key])[..16]
    );
    let resolved = payload.status == "resolved";
    let common_summary = payload.common_annotations.get("summary").cloned();
    let group_labels: Vec<String> = payload.group_labels.values().cloned().collect();
    // each alert read as on its own, for its title, priority, tags and link
    let alerts: Vec<Publish> = actions(payload, sender)?
        .into_iter()
        .filter_map(|a| match a {
            Action::Notify(p) => Some(*p),
            Action::Resolve(_) => None,
        })
        .collect();
    let Some(first) = alerts.first().filter(|_| !resolved) else {
        return Ok(vec![Action::Resolve(key)]);
    };
    let title = common_summary.unwrap_or_else(|| {
        format!(
            "[FIRING:{}] {}",
            alerts.len(),
            if group_labels.is_empty() {
                first.title.clone()
            } else {
                group_labels.join(" ")
            }
        )
    });
    let mut body: Vec<String> = alerts
        .iter()
        .take(GROUP_LINES)
        .map(|a| format!("- {}", a.title))
        .collect();
    if alerts.len() > GROUP_LINES {
        body.push(format!("… and {} more", alerts.len() - GROUP_LINES));
    }
    let group = Publish {
        title: truncate(title.trim(), budget::MAX_TITLE),
        body: truncate(&body.join("\n"), budget::MAX_BODY),
        priority: alerts.iter().filter_map(|a| a.priority).max(),
        tags: first.tags.clone(),
        click_url: first.click_url.clone(),
        dedup_key: Some(key),
        ..Default::default()
    };
    Ok(vec![Action::Notify(Box::new(group))])
}

/// The payload's alerts as notifications and resolves, checked before any is sent.
pub(crate) fn actions(payload: Payload, sender: Sender) -> Result<Vec<Action>, ApiError> {
    let bad = |field: &str, msg: String| ApiError::bad_request(msg, Some(field.to_owned()));
    if payload.version != sender.version() {
        return Err(bad(
            "version",
            format!(
                "version: {:?} is not {}'s webhook version {}",
                payload.version,
                sender.name(),
                sender.version()
            ),
        ));
    }
    if payload.alerts.len() > MAX_ALERTS {
        return Err(bad(
            "alerts",
            format!(
                "alerts: {} in one request, at most {MAX_ALERTS}; set max_alerts in the webhook_config",
                payload.alerts.len()
            ),
        ));
    }
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            let key = match sender {
                Sender::Alertmanager => format!("am:{}", fingerprint(&a)),
                Sender::Grafana => format!("grafana:{}", fingerprint(&a)),
            };
            match a.status.as_str() {
                "resolved" => Ok(Action::Resolve(key)),
                "firing" => Ok(Action::Notify(Box::new(publish(a, key)))),
                other => Err(bad(
                    &format!("alerts[{i}].status"),
                    format!("alerts[{i}].status: {other:?} is neither firing nor resolved"),
                )),
            }
        })
        .collect()
}

/// The alert's identity: Alertmanager's fingerprint, or one of its labels when it has none.
fn fingerprint(a: &Alert) -> String {
    let f = a.fingerprint.trim();
    if !f.is_empty() && f.len() <= 64 {
        return f.to_owned();
    }
    let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let parts: Vec<&str> = labels.iter().map(String::as_str).collect();
    tocsin_model::digest(&parts)[..16].to_owned()
}

/// A firing alert as a publish, cut to the budgets rather than refused: an alert is not lost
/// for a long annotation.
fn publish(a: Alert, key: String) -> Publish {
    let name = a.labels.get("alertname").cloned().unwrap_or_default();
    let title = a
        .annotations
        .get("summary")
        .or(a.annotations.get("title"))
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| {
            if name.is_empty() {
                "alert".into()
            } else {
                name.clone()
            }
        });
    let mut body = a
        .annotations
        .get("description")
        .or(a.annotations.get("message"))
        .cloned()
        .unwrap_or_default();
    let labels: Vec<String> = a
        .labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for extra in [a.value_string.trim().to_owned(), labels.join(", ")] {
        if extra.is_empty() {
            continue;
        }
        if !body.is_empty() {
            body.push_str("\n\n");
        }
        body.push_str(&extra);
    }
    let severity = a.labels.get("severity").cloned().unwrap_or_default();
    let tags = [name.as_str(), severity.as_str()]
        .into_iter()
        .filter(|t| !t.is_empty())
        .map(|t| truncate(t, budget::MAX_TAG))
        .collect();
    // the most specific link that is one (a bad link must not cost the alert, or keep the
    // sender retrying the whole payload): Grafana's panel, its dashboard, the rule's source
    let click_url = [a.panel_url, a.dashboard_url, a.generator_url]
        .into_iter()
        .find(|u| {
            u.len() <= budget::MAX_URL
                && url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https"))
        });
    Publish {
        title: truncate(title.trim(), budget::MAX_TITLE),
        body: truncate(&body, budget::MAX_BODY),
        priority: Some(priority(&a.labels)),
        tags,
        click_url,
        dedup_key: Some(key),
        ..Default::default()
    }
}

/// The priority an alert's labels ask for: a `priority` label of 1-5, else its `severity`.
fn priority(labels: &BTreeMap<String, String>) -> u8 {
    if let Some(p) = labels
        .get("priority")
        .and_then(|p| p.trim().parse::<u8>().ok())
        && (1..=5).contains(&p)
    {
        return p;
    }
    match labels
        .get("severity")
        .map(|s| s.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("critical" | "page" | "emergency" | "fatal" | "disaster") => 5,
        Some("error" | "high" | "major") => 4,
        Some("info" | "informational" | "low" | "minor" | "none") => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A notification as Alertmanager's documentation shows it: one group, a firing alert and a
    /// resolved one.
    const FIXTURE: &str = r#"{
      "version": "4",
      "groupKey": "{}:{alertname=\"DiskFull\"}",
      "truncatedAlerts": 0,
      "status": "firing",
      "receiver": "tocsin",
      "groupLabels": {"alertname": "DiskFull"},
      "commonLabels": {"alertname": "DiskFull"},
      "commonAnnotations": {},
      "externalURL": "http://alertmanager.example.org:9093",
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "DiskFull", "instance": "db1:9100", "severity": "critical"},
          "annotations": {"summary": "db1: /var is 97% full", "description": "Free space below 3%."},
          "startsAt": "2026-12-03T10:00:00Z",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=disk",
          "fingerprint": "b4f6d1c2a3e5f708"
        },
        {
          "status": "resolved",
          "labels": {"alertname": "DiskFull", "instance": "db2:9100", "severity": "warning"},
          "annotations": {},
          "startsAt": "2026-12-03T09:00:00Z",
          "endsAt": "2026-12-03T10:00:00Z",
          "generatorURL": "",
          "fingerprint": "0011223344556677"
        }
      ]
    }"#;

    #[test]
    fn firing_alerts_are_notifications_keyed_by_fingerprint_and_resolved_ones_resolve() {
        let payload: Payload = serde_json::from_str(FIXTURE).unwrap();
        let actions = actions(payload, Sender::Alertmanager).unwrap();
        let Action::Notify(p) = &actions[0] else {
            panic!("{actions:?}")
        };
        assert_eq!(p.title, "db1: /var is 97% full");
        assert_eq!(
            p.body,
            "Free space below 3%.\n\ninstance=db1:9100, severity=critical"
        );
        assert_eq!(p.priority, Some(5));
        assert_eq!(p.tags, vec!["DiskFull", "critical"]);
        assert_eq!(p.dedup_key.as_deref(), Some("am:b4f6d1c2a3e5f708"));
        assert_eq!(
            p.click_url.as_deref(),
            Some("http://prometheus.example.org:9090/graph?g0.expr=disk")
        );
        assert_eq!(actions[1], Action::Resolve("am:0011223344556677".into()));
    }

    #[test]
    fn per_group_the_group_is_one_alert_resolved_when_none_of_it_fires() {
        let payload: Payload = serde_json::from_str(FIXTURE).unwrap();
        let done = group_actions(payload, Sender::Alertmanager).unwrap();
        let [Action::Notify(p)] = done.as_slice() else {
            panic!("{done:?}")
        };
        assert_eq!(
            p.title, "[FIRING:1] DiskFull",
            "the firing ones, by their group"
        );
        assert_eq!(p.body, "- db1: /var is 97% full");
        assert_eq!(p.priority, Some(5));
        let key = p.dedup_key.clone().unwrap();
        assert!(key.starts_with("am-group:") && key.len() == 9 + 16, "{key}");
        // the whole group resolved: its key resolves
        let resolved: Payload = serde_json::from_str(&FIXTURE.replacen(
            r#""status": "firing","#,
            r#""status": "resolved","#,
            1,
        ))
        .unwrap();
        assert_eq!(
            group_actions(resolved, Sender::Alertmanager).unwrap(),
            [Action::Resolve(key)]
        );
        // a mode that is neither is refused by name
        let mode = Mode {
            per: Some("day".into()),
        };
        assert_eq!(mode.per_group().unwrap_err().field.as_deref(), Some("per"));
    }

    #[test]
    fn priority_follows_the_labels() {
        let p = |pairs: &[(&str, &str)]| {
            priority(
                &pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        };
        assert_eq!(p(&[("severity", "Critical")]), 5);
        assert_eq!(p(&[("severity", "warning")]), 3);
        assert_eq!(p(&[("severity", "info")]), 2);
        assert_eq!(p(&[("severity", "info"), ("priority", "4")]), 4);
        assert_eq!(p(&[("priority", "9")]), 3);
    }

    #[test]
    fn hostile_payloads_are_refused_by_field_and_long_text_is_cut() {
        let field = |v: serde_json::Value| {
            actions(serde_json::from_value(v).unwrap(), Sender::Alertmanager)
                .unwrap_err()
                .field
        };
        assert_eq!(
            field(json!({"version": "3", "alerts": []})),
            Some("version".into())
        );
        let many: Vec<_> = (0..=MAX_ALERTS)
            .map(|_| json!({"status": "firing"}))
            .collect();
        assert_eq!(
            field(json!({"version": "4", "alerts": many})),
            Some("alerts".into())
        );
        assert_eq!(
            field(json!({"version": "4", "alerts": [{"status": "pending"}]})),
            Some("alerts[0].status".into())
        );
        // no fingerprint, a huge summary, a javascript: link: still an alert, within budget
        let huge = "x".repeat(budget::MAX_TITLE * 3);
        let payload = serde_json::from_value(json!({"version": "4", "alerts": [{
            "status": "firing",
            "labels": {"alertname": "A", "job": "j"},
            "annotations": {"summary": huge},
            "generatorURL": "javascript:alert(1)",
            "panelURL": "http://[not a host"
        }]}))
        .unwrap();
        let Action::Notify(p) = actions(payload, Sender::Alertmanager).unwrap().remove(0) else {
            panic!("not a notification")
        };
        assert!(p.title.len() <= budget::MAX_TITLE);
        assert!(p.click_url.is_none());
        assert!(p.dedup_key.as_deref().is_some_and(|k| k.len() == 3 + 16));
        assert!(crate::routes::publish::validate_publish(&p).is_ok());
    }

    /// Grafana Alerting's webhook body as its documentation describes it (version 1): the
    /// alerts of Alertmanager's shape with panel and dashboard links and the values.
    const GRAFANA: &str = r#"{
      "receiver": "tocsin",
      "status": "firing",
      "orgId": 1,
      "alerts": [
        {
          "status": "firing",
          "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
          "annotations": {"description": "The system has high memory usage", "summary": "Memory high in us-1"},
          "startsAt": "2026-12-03T09:51:03.157076+02:00",
          "endsAt": "0001-01-01T00:00:00Z",
          "generatorURL": "https://grafana.example.org/alerting/1afz29v7z/edit",
          "fingerprint": "c6eadffa33fcdf37",
          "silenceURL": "https://grafana.example.org/alerting/silence/new",
          "dashboardURL": "https://grafana.example.org/d/mem",
          "panelURL": "https://grafana.example.org/d/mem?viewPanel=2",
          "values": {"B": 44.2, "C": 1},
          "valueString": "[ var='B' labels={zone=us-1} value=44.2 ]"
        }
      ],
      "groupLabels": {"alertname": "High memory usage"},
      "commonLabels": {"team": "blue"},
      "commonAnnotations": {},
      "externalURL": "https://grafana.example.org/",
      "version": "1",
      "groupKey": "{}:{alertname=\"High memory usage\"}",
      "truncatedAlerts": 0,
      "title": "[FIRING:1] High memory usage",
      "state": "alerting",
      "message": "**Firing**"
    }"#;

    #[test]
    fn grafana_alerts_link_their_panel_and_carry_their_values() {
        let payload: Payload = serde_json::from_str(GRAFANA).unwrap();
        let done = actions(payload, Sender::Grafana).unwrap();
        let Action::Notify(p) = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(p.title, "Memory high in us-1");
        assert_eq!(
            p.body,
            "The system has high memory usage\n\n[ var='B' labels={zone=us-1} value=44.2 ]\n\nteam=blue, zone=us-1"
        );
        assert_eq!(
            p.click_url.as_deref(),
            Some("https://grafana.example.org/d/mem?viewPanel=2")
        );
        assert_eq!(p.dedup_key.as_deref(), Some("grafana:c6eadffa33fcdf37"));
        assert_eq!(p.priority, Some(3));
        // Grafana's payload is not Alertmanager's, and the other way round
        let payload: Payload = serde_json::from_str(GRAFANA).unwrap();
        assert_eq!(
            actions(payload, Sender::Alertmanager).unwrap_err().field,
            Some("version".into())
        );
    }
}
