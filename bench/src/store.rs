//! `tocsin-bench history-store`: history's write path alone — notifications with their
//! `routed` entries, and the previous batch's `delivered` entries, applied in batches to one
//! silo's store that already holds many (what the pipeline bench's small, fresh stores cannot
//! show) — beside the same batches written as bare rows into a table without indexes, the
//! floor of one SQLite commit of the same bytes on this disk.

use crate::common::{notification, tempfile_dir};
use crate::cpu::CpuMeter;
use anyhow::{Context, Result};
use std::time::Instant;
use tocsin_history::store::Store;
use tocsin_model::{Channel, HistoryRecord, TimelineEntry, UserId};

#[derive(Debug, Clone)]
pub struct StoreBenchOptions {
    /// Notifications in the store before the timed part.
    pub prefill: usize,
    /// Notifications written in the timed part.
    pub notifications: usize,
    /// Notifications per batch (one transaction each, with the entries that go with them).
    pub batch: usize,
    /// Users the notifications belong to (one silo's share).
    pub users: usize,
}

/// One side's figures: µs per notification, of wall time and of this process's CPU.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFigures {
    pub wall_us: f64,
    pub cpu_us: f64,
}

#[derive(Debug)]
pub struct StoreReport {
    pub options: StoreBenchOptions,
    pub tocsin: StoreFigures,
    pub bare: StoreFigures,
}

impl StoreReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        format!(
            "tocsin-bench history-store: {} notifications in batches of {} (with their entries) into a store holding {}, {} users\n\
             {:<44} {:>14} {:>14}\n\
             {:<44} {:>14.1} {:>14.1}\n\
             {:<44} {:>14.1} {:>14.1}\n\
             {:<44} {:>14.2} {:>14.2}\n",
            o.notifications,
            o.batch,
            o.prefill,
            o.users,
            "µs per notification",
            "wall",
            "cpu",
            "history's store (Store::apply)",
            self.tocsin.wall_us,
            self.tocsin.cpu_us,
            "bare rows, no index (same commits)",
            self.bare.wall_us,
            self.bare.cpu_us,
            "ratio store/bare",
            self.tocsin.wall_us / self.bare.wall_us.max(0.001),
            self.tocsin.cpu_us / self.bare.cpu_us.max(0.001),
        )
    }
}

/// Notification `i` of the run.
fn note(users: &[UserId], i: usize) -> tocsin_model::Notification {
    notification(
        &users[i % users.len()],
        format!("store{i}"),
        format!("bench notification {i}"),
    )
}

/// The records of notifications `from..to`: each notification with its `routed` entry, then,
/// when `delivered`, the `delivered` entries of `from - back..to - back`.
fn records(
    users: &[UserId],
    from: usize,
    to: usize,
    delivered: Option<usize>,
) -> Vec<HistoryRecord> {
    let note = |i: usize| note(users, i);
    let mut out: Vec<HistoryRecord> = (from..to)
        .map(|i| {
            let n = note(i);
            HistoryRecord::Notification {
                entry: TimelineEntry {
                    at_ms: n.created_at_ms,
                    kind: "routed".into(),
                    channel: None,
                    detail: "policy default: to sink".into(),
                },
                notification: n,
            }
        })
        .collect();
    if let Some(back) = delivered {
        out.extend(
            (from.saturating_sub(back)..to.saturating_sub(back)).map(|i| {
                let n = note(i);
                HistoryRecord::Timeline {
                    user: n.user,
                    notification_id: n.id,
                    entry: TimelineEntry {
                        at_ms: n.created_at_ms + 1,
                        kind: "delivered".into(),
                        channel: Some(Channel::Sink),
                        detail: String::new(),
                    },
                }
            }),
        );
    }
    out
}

/// Run both sides, each in a directory of its own that is removed afterwards.
pub fn run(opts: StoreBenchOptions) -> Result<StoreReport> {
    anyhow::ensure!(
        opts.notifications > 0,
        "--notifications must be at least 1 (nothing to time)"
    );
    let users: Vec<UserId> = (0..opts.users.max(1))
        .map(|i| UserId::parse(&format!("bench{i}")).expect("valid"))
        .collect();
    let dir = tempfile_dir()?;
    let result = (|| {
        let mut store = StoreSide::open(&dir.join("store.db"))?;
        let tocsin = timed(&opts, &users, &mut store)?;
        // every notification is there, the first of the prefill and the last timed one
        let total = opts.prefill + opts.notifications;
        for i in [0, total - 1] {
            let id = note(&users, i).id;
            anyhow::ensure!(
                store.0.contains(id.as_str())?,
                "notification {i} ({id}) is not in the store after the run"
            );
        }
        let bare = timed(&opts, &users, &mut BareSide::open(&dir.join("bare.db"))?)?;
        Ok(StoreReport {
            options: opts.clone(),
            tocsin,
            bare,
        })
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Something the same batches are written into.
trait Side {
    fn write(&mut self, records: &[HistoryRecord]) -> Result<()>;
}

struct StoreSide(Store);

impl StoreSide {
    fn open(path: &std::path::Path) -> Result<Self> {
        Ok(Self(Store::open(path).context("open the store")?))
    }
}

impl Side for StoreSide {
    fn write(&mut self, records: &[HistoryRecord]) -> Result<()> {
        self.0.apply(records).context("apply a batch")?;
        Ok(())
    }
}

/// The floor: each record's JSON as a row of a table with nothing but its rowid, one
/// transaction per batch, WAL and `synchronous=FULL` as the store has.
struct BareSide(rusqlite::Connection);

impl BareSide {
    fn open(path: &std::path::Path) -> Result<Self> {
        let c = rusqlite::Connection::open(path)?;
        c.pragma_update(None, "journal_mode", "WAL")?;
        c.pragma_update(None, "synchronous", "FULL")?;
        c.execute_batch("CREATE TABLE rows (doc TEXT NOT NULL)")?;
        Ok(Self(c))
    }
}

impl Side for BareSide {
    fn write(&mut self, records: &[HistoryRecord]) -> Result<()> {
        let tx = self.0.transaction()?;
        {
            let mut ins = tx.prepare_cached("INSERT INTO rows (doc) VALUES (?1)")?;
            for r in records {
                ins.execute([serde_json::to_string(r)?])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// Fill `side` with `prefill` notifications (batches of 1,000), then time the batches (made
/// beforehand, so only the writing is timed).
fn timed(opts: &StoreBenchOptions, users: &[UserId], side: &mut impl Side) -> Result<StoreFigures> {
    let mut at = 0;
    while at < opts.prefill {
        let to = (at + 1_000).min(opts.prefill);
        side.write(&records(users, at, to, Some(0)))?;
        at = to;
    }
    let size = opts.batch.max(1);
    let (first, end) = (at, at + opts.notifications);
    let mut batches = Vec::new();
    while at < end {
        let to = (at + size).min(end);
        // this batch's notifications, and the delivered entries of the one before
        batches.push(records(users, at, to, (at > first).then_some(size)));
        at = to;
    }
    let meter = CpuMeter::new(None);
    let before = meter.read();
    let started = Instant::now();
    for b in &batches {
        side.write(b)?;
    }
    let elapsed = started.elapsed();
    let cpu = before
        .zip(meter.read())
        .map(|(a, b)| a.per(b, opts.notifications).process_us)
        .unwrap_or(0.0);
    Ok(StoreFigures {
        wall_us: elapsed.as_secs_f64() * 1e6 / opts.notifications.max(1) as f64,
        cpu_us: cpu,
    })
}
