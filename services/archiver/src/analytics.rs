//! `tocsin analytics`: reports over the archive, per day and channel (optionally per user).
//!
//! It reads only the columns a report needs from each file (Parquet projection), one file at
//! a time, and folds them into counters and latency samples: no query engine, so the
//! archiver and the CLI stay small to build. `docs/analytics.md` gives the same reports as
//! DuckDB SQL for people who bring their own engine.
//!
//! A file that is not the archive's (another name, another table, damaged) is reported in
//! [`Report::skipped`] and left out; it never stops the report.

use crate::store::Archive;
use crate::table::{self, Columns, text_at};
use arrow_array::Array;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use tocsin_model::EventKind;

/// What to report on.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// First day included (UTC).
    pub from: Option<chrono::NaiveDate>,
    /// Last day included (UTC).
    pub to: Option<chrono::NaiveDate>,
    /// One row per user as well as per day and channel.
    pub by_user: bool,
    /// Only this user's events (the web app's analytics: a user sees their own).
    pub user: Option<String>,
}

pub use tocsin_model::AnalyticsRow as Row;

/// A whole report.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// Archive files read.
    pub files: usize,
    /// Events counted (within the days asked for).
    pub events: u64,
    /// Files left out, with the reason.
    pub skipped: Vec<Skipped>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub file: String,
    pub reason: String,
}

#[derive(Default)]
struct Acc {
    row: Row,
    delivery: Vec<i64>,
    ack: Vec<i64>,
}

type Key = (i64, Option<String>, String);

const DAY_MS: i64 = 86_400_000;
const ALL: &str = "all";

/// Build the report over every archive file in `archive`.
pub async fn report(archive: &Archive, opts: &Options) -> Result<Report, crate::store::StoreError> {
    if let Archive::Local(root) = archive
        && !root.is_dir()
    {
        // a mistyped path must not look like an empty archive
        return Err(crate::store::StoreError::Io {
            target: root.display().to_string(),
            message: "no such directory (is archiver.target, or --archive, right?)".into(),
        });
    }
    let listed = archive.list().await?;
    let mut out = Report::default();
    let mut files = Vec::new();
    for f in listed {
        let Some(name) = &f.name else {
            out.skipped.push(Skipped {
                file: f.relative.clone(),
                reason: "not an archive file (expected dt=YYYY-MM-DD/hour=HH/events-<first>-<last>.parquet)".into(),
            });
            continue;
        };
        let day = chrono::NaiveDate::parse_from_str(&name.date, "%Y-%m-%d").ok();
        if opts.from.zip(day).is_some_and(|(from, d)| d < from)
            || opts.to.zip(day).is_some_and(|(to, d)| d > to)
        {
            continue;
        }
        files.push(f.relative);
    }
    let mut columns = vec!["at", "kind", "channel", "latency_ms"];
    if opts.by_user || opts.user.is_some() {
        columns.push("user");
    }
    let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
    let mut acks_to_join = false;
    let mut readable = Vec::new();
    for file in &files {
        let cols = match read(archive, file, &columns).await {
            Ok(c) => c,
            Err(reason) => {
                out.skipped.push(Skipped {
                    file: file.clone(),
                    reason,
                });
                continue;
            }
        };
        readable.push(file.clone());
        for c in &cols {
            let (Some(at), Some(kind), Some(channel), Some(latency)) = (
                c.at.as_ref(),
                c.text("kind"),
                c.text("channel"),
                c.int("latency_ms"),
            ) else {
                continue;
            };
            let user = c.text("user");
            for i in 0..c.rows {
                let at_ms = at.value(i);
                if !in_range(at_ms, opts) || !whose(opts, user, i) {
                    continue;
                }
                out.events += 1;
                let Some(kind) = EventKind::parse(kind.value(i)) else {
                    continue;
                };
                let lat = (!latency.is_null(i)).then(|| latency.value(i));
                if kind == EventKind::Acked && lat.is_none() {
                    acks_to_join = true;
                }
                let who = user
                    .filter(|_| opts.by_user)
                    .map(|u| text_at(u, i).unwrap_or("-").to_owned());
                count(
                    &mut groups,
                    at_ms.div_euclid(DAY_MS),
                    who,
                    text_at(channel, i),
                    kind,
                    lat,
                );
            }
        }
    }
    out.files = readable.len();
    out.skipped.sort_by(|a, b| a.file.cmp(&b.file));
    if acks_to_join {
        join_ack_times(archive, &readable, opts, &mut groups).await;
    }
    out.rows = groups
        .into_iter()
        .map(|((day, _, _), mut acc)| {
            acc.row.day = day_string(day);
            if acc.row.channel == ALL && acc.row.routed > 0 {
                acc.row.ack_rate = Some(acc.row.acked as f64 / acc.row.routed as f64);
            }
            (
                acc.row.delivery_p50_ms,
                acc.row.delivery_p95_ms,
                acc.row.delivery_p99_ms,
            ) = percentiles(&mut acc.delivery);
            (acc.row.ack_p50_ms, acc.row.ack_p95_ms, acc.row.ack_p99_ms) =
                percentiles(&mut acc.ack);
            acc.row
        })
        .collect();
    Ok(out)
}

async fn read(archive: &Archive, file: &str, columns: &[&str]) -> Result<Vec<Columns>, String> {
    let bytes = archive.get(file).await.map_err(|e| e.to_string())?;
    let columns: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let names: Vec<&str> = columns.iter().map(String::as_str).collect();
        table::read_columns(bytes, &names).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("read task: {e}"))?
}

fn in_range(at_ms: i64, opts: &Options) -> bool {
    let day = at_ms.div_euclid(DAY_MS);
    let epoch_day = |d: chrono::NaiveDate| {
        d.signed_duration_since(chrono::NaiveDate::default())
            .num_days()
    };
    opts.from.is_none_or(|f| day >= epoch_day(f)) && opts.to.is_none_or(|t| day <= epoch_day(t))
}

/// Whether row `i` is of the user the report is limited to (any, when it is not).
fn whose(opts: &Options, user: Option<&arrow_array::StringArray>, i: usize) -> bool {
    match &opts.user {
        None => true,
        Some(want) => user.and_then(|u| text_at(u, i)) == Some(want.as_str()),
    }
}

fn day_string(day: i64) -> String {
    chrono::DateTime::from_timestamp_millis(day * DAY_MS)
        .map(|t| t.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn acc(groups: &mut BTreeMap<Key, Acc>, key: Key) -> &mut Acc {
    groups.entry(key.clone()).or_insert_with(|| Acc {
        row: Row {
            user: key.1,
            channel: key.2,
            ..Default::default()
        },
        ..Default::default()
    })
}

/// Fold one event into its day's `all` row and, when it has one, its channel's row.
fn count(
    groups: &mut BTreeMap<Key, Acc>,
    day: i64,
    user: Option<String>,
    channel: Option<&str>,
    kind: EventKind,
    latency: Option<i64>,
) {
    let mut keys = vec![(day, user.clone(), ALL.to_owned())];
    let per_channel = matches!(
        kind,
        EventKind::Attempted
            | EventKind::Delivered
            | EventKind::Failed
            | EventKind::Escalated
            | EventKind::Acked
    );
    if per_channel && let Some(c) = channel {
        keys.push((day, user, c.to_owned()));
    }
    for key in keys {
        let a = acc(groups, key);
        let r = &mut a.row;
        match kind {
            EventKind::Ingested => r.ingested += 1,
            EventKind::Matched => r.matched += 1,
            EventKind::FilteredOut => r.filtered_out += 1,
            EventKind::Routed => r.routed += 1,
            EventKind::Attempted => r.attempts += 1,
            EventKind::Delivered => {
                // the send that delivered (attempts that did not are `attempted` events)
                r.attempts += 1;
                r.delivered += 1;
                a.delivery.extend(latency);
            }
            EventKind::Failed => r.failed += 1,
            EventKind::Escalated => r.escalated += 1,
            EventKind::Acked => {
                r.acked += 1;
                a.ack.extend(latency);
            }
            EventKind::Resolved => r.resolved += 1,
            EventKind::Silenced => r.silenced += 1,
            EventKind::HeartbeatMissed => r.heartbeat_missed += 1,
            EventKind::Grouped => r.grouped += 1,
            _ => {}
        }
    }
}

/// Acks that came when no escalation was pending carry no time to ack: find when their
/// notification was created from its `routed` event (two more passes over the files, reading
/// the notification column).
async fn join_ack_times(
    archive: &Archive,
    files: &[String],
    opts: &Options,
    groups: &mut BTreeMap<Key, Acc>,
) {
    let mut columns = vec!["at", "kind", "channel", "latency_ms", "notification"];
    if opts.by_user || opts.user.is_some() {
        columns.push("user");
    }
    // pass 1: the acks without a time, and where they are counted
    let mut waiting: Vec<(String, i64, Key, Option<Key>)> = Vec::new();
    for f in files {
        let Ok(cols) = read(archive, f, &columns).await else {
            continue;
        };
        for c in &cols {
            let (Some(at), Some(kind), Some(channel), Some(lat), Some(n)) = (
                c.at.as_ref(),
                c.text("kind"),
                c.text("channel"),
                c.int("latency_ms"),
                c.text("notification"),
            ) else {
                continue;
            };
            let user = c.text("user");
            for i in 0..c.rows {
                if kind.value(i) != "acked"
                    || !lat.is_null(i)
                    || !in_range(at.value(i), opts)
                    || !whose(opts, user, i)
                {
                    continue;
                }
                let Some(id) = text_at(n, i) else { continue };
                let day = at.value(i).div_euclid(DAY_MS);
                let who = user
                    .filter(|_| opts.by_user)
                    .map(|u| text_at(u, i).unwrap_or("-").to_owned());
                let all = (day, who.clone(), ALL.to_owned());
                let ch = text_at(channel, i).map(|c| (day, who, c.to_owned()));
                waiting.push((id.to_owned(), at.value(i), all, ch));
            }
        }
    }
    let wanted: HashSet<&str> = waiting.iter().map(|w| w.0.as_str()).collect();
    // pass 2: when those notifications were created
    let mut created: HashMap<String, i64> = HashMap::new();
    for f in files {
        let Ok(cols) = read(archive, f, &["at", "kind", "latency_ms", "notification"]).await else {
            continue;
        };
        for c in &cols {
            let (Some(at), Some(kind), Some(lat), Some(n)) = (
                c.at.as_ref(),
                c.text("kind"),
                c.int("latency_ms"),
                c.text("notification"),
            ) else {
                continue;
            };
            for i in 0..c.rows {
                if kind.value(i) != "routed" {
                    continue;
                }
                if let Some(id) = text_at(n, i).filter(|id| wanted.contains(id)) {
                    let since = if lat.is_null(i) { 0 } else { lat.value(i) };
                    created.insert(id.to_owned(), at.value(i) - since);
                }
            }
        }
    }
    for (id, at, all, ch) in waiting {
        let Some(c) = created.get(&id) else { continue };
        let t = (at - c).max(0);
        for key in std::iter::once(all).chain(ch) {
            acc(groups, key).ack.push(t);
        }
    }
}

/// p50, p95 and p99 by nearest rank.
fn percentiles(v: &mut [i64]) -> (Option<i64>, Option<i64>, Option<i64>) {
    if v.is_empty() {
        return (None, None, None);
    }
    v.sort_unstable();
    let at = |p: f64| {
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        Some(v[rank.clamp(1, v.len()) - 1])
    };
    (at(50.0), at(95.0), at(99.0))
}

/// How to print a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "table" => Ok(Format::Table),
            "csv" => Ok(Format::Csv),
            "json" => Ok(Format::Json),
            other => Err(format!("unknown format {other:?}: use table, csv or json")),
        }
    }
}

const HEADER: [&str; 23] = [
    "day",
    "user",
    "channel",
    "ingested",
    "matched",
    "filtered_out",
    "routed",
    "attempts",
    "delivered",
    "failed",
    "escalated",
    "acked",
    "ack_rate",
    "delivery_p50_ms",
    "delivery_p95_ms",
    "delivery_p99_ms",
    "ack_p50_ms",
    "ack_p95_ms",
    "ack_p99_ms",
    "resolved",
    "silenced",
    "heartbeat_missed",
    "grouped",
];

fn cells(r: &Row, by_user: bool) -> Vec<String> {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    let all = r.channel == ALL;
    // counts that belong to no channel are shown on the `all` row only
    let total = |v: u64| if all { v.to_string() } else { String::new() };
    let mut c = vec![r.day.clone()];
    if by_user {
        c.push(r.user.clone().unwrap_or_default());
    }
    c.extend([
        r.channel.clone(),
        total(r.ingested),
        total(r.matched),
        total(r.filtered_out),
        total(r.routed),
        r.attempts.to_string(),
        r.delivered.to_string(),
        r.failed.to_string(),
        r.escalated.to_string(),
        r.acked.to_string(),
        r.ack_rate.map(|a| format!("{a:.3}")).unwrap_or_default(),
        opt(r.delivery_p50_ms),
        opt(r.delivery_p95_ms),
        opt(r.delivery_p99_ms),
        opt(r.ack_p50_ms),
        opt(r.ack_p95_ms),
        opt(r.ack_p99_ms),
        total(r.resolved),
        total(r.silenced),
        total(r.heartbeat_missed),
        total(r.grouped),
    ]);
    c
}

fn header(by_user: bool) -> Vec<String> {
    HEADER
        .iter()
        .filter(|h| by_user || **h != "user")
        .map(|h| h.to_string())
        .collect()
}

/// The report as text in `format`.
pub fn render(report: &Report, format: Format, by_user: bool) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Csv => {
            let mut out = header(by_user).join(",") + "\n";
            for r in &report.rows {
                let line: Vec<String> = cells(r, by_user)
                    .into_iter()
                    .map(|c| csv_cell(&c))
                    .collect();
                out.push_str(&line.join(","));
                out.push('\n');
            }
            out
        }
        Format::Table => {
            let head = header(by_user);
            let rows: Vec<Vec<String>> = report.rows.iter().map(|r| cells(r, by_user)).collect();
            let widths: Vec<usize> = (0..head.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].len())
                        .chain(std::iter::once(head[i].len()))
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: &[String]| {
                let parts: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .enumerate()
                    .map(|(i, (c, w))| {
                        let text_col = i == 0 || head[i] == "channel" || head[i] == "user";
                        if text_col {
                            format!("{c:<w$}")
                        } else {
                            format!("{c:>w$}")
                        }
                    })
                    .collect();
                parts.join("  ").trim_end().to_owned() + "\n"
            };
            let mut out = line(&head);
            for r in &rows {
                out.push_str(&line(r));
            }
            out.push_str(&format!(
                "{} events in {} files",
                report.events, report.files
            ));
            if !report.skipped.is_empty() {
                out.push_str(&format!("; {} skipped:", report.skipped.len()));
            }
            out.push('\n');
            for s in &report.skipped {
                out.push_str(&format!("  skipped {}: {}\n", s.file, s.reason));
            }
            out
        }
    }
}

fn csv_cell(c: &str) -> String {
    if c.contains([',', '"', '\n']) {
        format!("\"{}\"", c.replace('"', "\"\""))
    } else {
        c.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<i64> = (1..=100).rev().collect();
        assert_eq!(percentiles(&mut v), (Some(50), Some(95), Some(99)));
        assert_eq!(percentiles(&mut [7]), (Some(7), Some(7), Some(7)));
        assert_eq!(percentiles(&mut []), (None, None, None));
    }

    #[tokio::test]
    async fn a_missing_archive_directory_is_an_error_not_an_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-archive");
        let a = Archive::open(missing.to_str().unwrap(), &Default::default()).unwrap();
        let err = report(&a, &Options::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such directory"), "{err}");
        let empty = Archive::open(dir.path().to_str().unwrap(), &Default::default()).unwrap();
        assert_eq!(report(&empty, &Options::default()).await.unwrap().events, 0);
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        assert_eq!(csv_cell("a"), "a");
        assert_eq!(csv_cell("a,b"), "\"a,b\"");
        assert_eq!(csv_cell("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
