//! How the CLI prints for a person: history, a notification with what was decided for it (its
//! policy and why), where it went and how it ended; sources with their health and destinations with their
//! confirmation, one line each. Times in UTC.

use serde_json::Value;
use tocsin_model::text::duration;
use tocsin_model::{Source, SourceSpec};

pub(crate) fn print_history(v: &Value) {
    for line in history_lines(v) {
        println!("{line}");
    }
}

fn history_lines(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        out.push("no notifications yet".to_owned());
    }
    for i in items {
        let n = &i["notification"];
        out.push(format!(
            "{}  [{}] {}",
            utc(n["created_at_ms"].as_i64().unwrap_or(0)),
            n["source"]["label"].as_str().unwrap_or(""),
            n["title"].as_str().unwrap_or("")
        ));
        if let Some(u) = n["url"].as_str() {
            out.push(format!("    {u}"));
        }
        // what was decided (which policy and why, held, silenced, grouped), where it went and
        // how it ended; single delivery attempts, where kept, are left to `--json`
        for e in i["timeline"].as_array().into_iter().flatten() {
            let kind = e["kind"].as_str().unwrap_or("");
            if kind != "attempt" {
                out.push(format!(
                    "    {kind} {}: {}",
                    utc(e["at_ms"].as_i64().unwrap_or(0)),
                    e["detail"].as_str().unwrap_or("")
                ));
            }
        }
    }
    if let Some(c) = v["next_cursor"].as_str() {
        out.push(format!("(more: --cursor {c})"));
    }
    out
}

/// Each of `GET /v1/sources`'s sources on a line: its id, what it is and watches, its name, and
/// its health (or, before any, what it waits for).
pub(crate) fn print_sources(v: &Value) {
    print_each(&v["sources"], "no sources yet", source_line);
}

/// Each entry of the list `list` on a line of `line`'s making; `empty` when there is none.
fn print_each(list: &Value, empty: &str, line: fn(&Value) -> String) {
    let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
    if entries.is_empty() {
        println!("{empty}");
    }
    for e in entries {
        println!("{}", line(e));
    }
}

fn source_line(s: &Value) -> String {
    let id = s["id"].as_str().unwrap_or("?");
    let Ok(source) = serde_json::from_value::<Source>(s.clone()) else {
        return format!("{id}  (a kind of source this tocsin does not know: update it)");
    };
    let kind = source.spec.kind_name();
    let what = match &source.spec {
        SourceSpec::Feed {
            url,
            poll_interval_secs,
            ..
        } => match poll_interval_secs {
            Some(every) => format!("{kind} {url}, asked every {}", duration(*every)),
            None => format!("{kind} {url}"),
        },
        SourceSpec::Imap {
            host,
            username,
            mailbox,
            ..
        } => format!("{kind} {mailbox} of {username} at {host}"),
        SourceSpec::Heartbeat {
            period_secs,
            grace_secs,
            ..
        } => match grace_secs {
            0 => format!("{kind} every {}", duration(*period_secs)),
            g => format!(
                "{kind} every {}, {} of grace",
                duration(*period_secs),
                duration(*g)
            ),
        },
        SourceSpec::Hook { .. } => {
            format!("{kind} ({})", s["format"].as_str().unwrap_or("?"))
        }
        SourceSpec::Topic { topic } => format!("{kind} {topic}"),
    };
    let label = if source.label.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", source.label)
    };
    let beat = &s["heartbeat"];
    let status = match (&s["status"]["ok"], s["status"]["error"].as_str()) {
        // a heartbeat's health is its pings; a hook's status is kept once a request is refused
        _ if beat.is_object() => match (beat["missed"].is_null(), beat["last_ping_ms"].as_i64()) {
            (false, last) => format!("missed: no ping since {}", utc(last.unwrap_or(0))),
            (true, _) => format!(
                "ok, overdue after {}",
                utc(beat["due_ms"].as_i64().unwrap_or(0))
            ),
        },
        (Value::Bool(true), _) => "ok".to_owned(),
        (_, Some(e)) => format!("error: {e}"),
        _ => match &source.spec {
            SourceSpec::Hook { .. } => "ok, no request refused".to_owned(),
            SourceSpec::Topic { .. } => "ok".to_owned(),
            _ => "waiting for the first check".to_owned(),
        },
    };
    format!("{id}  {what}{label}  [{status}]")
}

/// Each of `GET /v1/destinations`'s destinations on a line: its id, channel and address, and
/// whether it is confirmed (one waiting for its code gets nothing).
pub(crate) fn print_destinations(v: &Value) {
    print_each(
        &v["destinations"],
        "no destinations yet: add one with `tocsin dest webhook|email|xmpp|sms|push …`",
        destination_line,
    );
}

fn destination_line(d: &Value) -> String {
    let id = d["id"].as_str().unwrap_or("?");
    let state = if d["verified"] == Value::Bool(false) {
        format!("waiting for its code, gets nothing until then: tocsin dest verify {id} CODE")
    } else {
        "confirmed".to_owned()
    };
    format!(
        "{id}  {}  {}  [{state}]",
        d["channel"].as_str().unwrap_or("?"),
        d["address"].as_str().unwrap_or("?")
    )
}

/// A time in milliseconds since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC); out of range: `?`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn each_kind_of_source_says_what_it_is_and_what_it_waits_for() {
        let line = |v| super::source_line(&v);
        let feed = json!({"id": "s1", "kind": "feed", "url": "https://x.example/a.rss",
            "poll_interval_secs": 600, "label": "bikes", "created_at_ms": 0,
            "status": {"ok": true, "checked_at_ms": 1}});
        assert_eq!(
            line(feed),
            "s1  Feed https://x.example/a.rss, asked every 10 min \"bikes\"  [ok]"
        );
        let failing = json!({"id": "s2", "kind": "feed", "url": "https://x.example/b",
            "extract": {"kind": "change"}, "created_at_ms": 0,
            "status": {"ok": false, "error": "HTTP 404", "checked_at_ms": 1}});
        assert_eq!(
            line(failing),
            "s2  Watched page https://x.example/b  [error: HTTP 404]"
        );
        let hook = json!({"id": "s3", "kind": "hook", "format": "alertmanager",
            "token_hash": "h", "label": "prod", "created_at_ms": 0});
        assert_eq!(
            line(hook),
            "s3  Webhook (alertmanager) \"prod\"  [ok, no request refused]"
        );
        let heartbeat = json!({"id": "s4", "kind": "heartbeat", "period_secs": 3600,
            "grace_secs": 300, "token_hash": "h", "created_at_ms": 0,
            "heartbeat": {"due_ms": 1_700_000_000_123_i64, "last_ping_ms": 0}});
        assert_eq!(
            line(heartbeat),
            "s4  Heartbeat every 1 h, 5 min of grace  [ok, overdue after 2023-11-14 22:13:20Z]"
        );
        let missed = json!({"id": "s6", "kind": "heartbeat", "period_secs": 60,
            "token_hash": "h", "created_at_ms": 0,
            "heartbeat": {"due_ms": 1, "last_ping_ms": 0, "missed": "n1"}});
        assert_eq!(
            line(missed),
            "s6  Heartbeat every 60 s  [missed: no ping since 1970-01-01 00:00:00Z]"
        );
        let unknown = json!({"id": "s5", "kind": "carrier-pigeon", "created_at_ms": 0});
        assert!(line(unknown).starts_with("s5  (a kind of source"));
    }

    #[test]
    fn history_shows_where_a_notification_went_and_how_it_ended() {
        let v = json!({"items": [{
            "notification": {"created_at_ms": 0, "source": {"label": "prod"},
                "title": "db1 down", "url": "https://x.example/a"},
            "timeline": [
                {"at_ms": 0, "kind": "routed", "detail": "policy default: to sms d1"},
                {"at_ms": 1000, "kind": "attempt", "detail": "HTTP 503"},
                {"at_ms": 2000, "kind": "failed", "channel": "sms", "detail": "d1: HTTP 400"},
                {"at_ms": 3000, "kind": "escalated", "detail": "to webhook d2"},
                {"at_ms": 4000, "kind": "delivered", "channel": "webhook", "detail": "d2: HTTP 200"},
                {"at_ms": 5000, "kind": "acked", "detail": "via the API"}]}],
            "next_cursor": "c2"});
        assert_eq!(
            super::history_lines(&v),
            [
                "1970-01-01 00:00:00Z  [prod] db1 down",
                "    https://x.example/a",
                "    routed 1970-01-01 00:00:00Z: policy default: to sms d1",
                "    failed 1970-01-01 00:00:02Z: d1: HTTP 400",
                "    escalated 1970-01-01 00:00:03Z: to webhook d2",
                "    delivered 1970-01-01 00:00:04Z: d2: HTTP 200",
                "    acked 1970-01-01 00:00:05Z: via the API",
                "(more: --cursor c2)",
            ]
        );
        assert_eq!(
            super::history_lines(&json!({"items": []})),
            ["no notifications yet"]
        );
    }

    #[test]
    fn a_destination_waiting_for_its_code_says_so_and_how_to_give_it() {
        let d = json!({"id": "d1", "channel": "email", "address": "me@example.org",
            "verified": false});
        assert_eq!(
            super::destination_line(&d),
            "d1  email  me@example.org  [waiting for its code, gets nothing until then: \
             tocsin dest verify d1 CODE]"
        );
        let d = json!({"id": "d2", "channel": "webhook", "address": "https://x.example/h",
            "verified": true});
        assert_eq!(
            super::destination_line(&d),
            "d2  webhook  https://x.example/h  [confirmed]"
        );
    }

    #[test]
    fn times_print_in_utc_and_far_ones_do_not_panic() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14 22:13:20Z");
        assert_eq!(super::utc(i64::MAX), "?");
        assert_eq!(super::utc(i64::MIN), "?");
    }
}
