//! How the CLI prints history for a person: one line per notification with what was decided
//! for it (its policy and why) and how it ended, times in UTC.

use serde_json::Value;

pub(crate) fn print_history(v: &Value) {
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no notifications yet");
    }
    for i in items {
        let n = &i["notification"];
        let when = n["created_at_ms"].as_i64().unwrap_or(0);
        let when = utc(when);
        println!(
            "{when}  [{}] {}",
            n["source"]["label"].as_str().unwrap_or(""),
            n["title"].as_str().unwrap_or("")
        );
        if let Some(u) = n["url"].as_str() {
            println!("    {u}");
        }
        // what was decided (which policy and why, held, silenced, grouped), and how it ended
        let timeline = i["timeline"].as_array().cloned().unwrap_or_default();
        for e in &timeline {
            let kind = e["kind"].as_str().unwrap_or("");
            if matches!(kind, "routed" | "acked" | "resolved" | "ack_expired") {
                println!(
                    "    {kind} {}: {}",
                    utc(e["at_ms"].as_i64().unwrap_or(0)),
                    e["detail"].as_str().unwrap_or("")
                );
            }
        }
    }
    if let Some(c) = v["next_cursor"].as_str() {
        println!("(more: --cursor {c})");
    }
}

/// A time in milliseconds since the epoch as `YYYY-MM-DD HH:MM:SSZ` (UTC); out of range: `?`.
fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_print_in_utc_and_far_ones_do_not_panic() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(1_700_000_000_123), "2023-11-14 22:13:20Z");
        assert_eq!(super::utc(i64::MAX), "?");
        assert_eq!(super::utc(i64::MIN), "?");
    }
}
