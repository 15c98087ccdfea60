//! What history deletes on its own — notifications past `retention_days`, a user's oldest past
//! `max_items_per_user` — in short transactions that each take their turn among the instance's
//! writers like a batch does, so that deleting an hour's rows, or a user's thousands, never
//! holds the other silos' writes for longer than one step.

use crate::store::{Store, StoreError};
use crate::{Shared, lock};
use rusqlite::{OpenFlags, params};
use std::time::Duration;
use tocsin_model::{Millis, now_ms};
use tocsin_runtime::background::Background;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Notifications deleted per transaction (per turn) at most.
pub(crate) const STEP: usize = 2_000;

impl Store {
    /// Delete what is older than `before_ms`, every step at once; how many notifications went.
    /// (The service takes the steps in turns: [`run`].)
    #[cfg(test)]
    pub fn prune(&mut self, before_ms: Millis) -> Result<usize, StoreError> {
        until_done(|| self.prune_step(before_ms, STEP))
    }

    /// Delete up to `limit` of the oldest notifications created before `before_ms`, with their
    /// timeline and search entries, in one transaction; fewer than `limit` means none older is
    /// left, and that step also deletes the older timeline entries whose notification is gone.
    pub fn prune_step(&mut self, before_ms: Millis, limit: usize) -> Result<usize, StoreError> {
        self.delete_picked(
            "created_at_ms < ?1 ORDER BY created_at_ms LIMIT ?2",
            params![before_ms, limit as i64],
            |tx, n| match n < limit {
                // entries whose notification is gone (or never was)
                true => tx
                    .execute(
                        "DELETE FROM entries WHERE at_ms < ?1 AND seq NOT IN (SELECT seq FROM notifications)",
                        params![before_ms],
                    )
                    .map(|_| ()),
                false => Ok(()),
            },
        )
    }

    /// Delete each user's oldest notifications past `max_per_user`, every step at once; how many
    /// went. (The service takes the steps in turns: [`run`].)
    #[cfg(test)]
    pub fn enforce_quota(&mut self, max_per_user: u64) -> Result<usize, StoreError> {
        let mut deleted = 0;
        for user in over_quota(&self.path, max_per_user)? {
            deleted += until_done(|| self.quota_step(&user, max_per_user, STEP))?;
        }
        Ok(deleted)
    }

    /// Delete up to `limit` of `user`'s oldest notifications past their newest `max_per_user`,
    /// in one transaction; fewer than `limit` means the user is within the quota.
    pub fn quota_step(
        &mut self,
        user: &str,
        max_per_user: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        // the newest to go: everything of the user's at or below it goes
        let cut: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM notifications WHERE user = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
                params![user, max_per_user as i64],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(|e| self.err(e))?;
        let Some(cut) = cut else { return Ok(0) };
        self.delete_picked(
            "user = ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            params![user, cut, limit as i64],
            |_, _| Ok(()),
        )
    }

    /// Delete the notifications `SELECT … FROM notifications WHERE <pick>` names, with their
    /// search and timeline entries, then run `then`, in one transaction; how many went.
    fn delete_picked(
        &mut self,
        pick: &str,
        args: impl rusqlite::Params,
        then: impl FnOnce(&rusqlite::Transaction<'_>, usize) -> rusqlite::Result<()>,
    ) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute_batch(
            "CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY); DELETE FROM doomed;",
        )
        .map_err(err)?;
        tx.execute(
            &format!("INSERT INTO doomed (seq) SELECT seq FROM notifications WHERE {pick}"),
            args,
        )
        .map_err(err)?;
        for sql in [
            "DELETE FROM notifications_fts WHERE rowid IN (SELECT seq FROM doomed)",
            "DELETE FROM entries WHERE seq IN (SELECT seq FROM doomed)",
        ] {
            tx.execute(sql, []).map_err(err)?;
        }
        let n = tx
            .execute(
                "DELETE FROM notifications WHERE seq IN (SELECT seq FROM doomed)",
                [],
            )
            .map_err(err)?;
        then(&tx, n).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n)
    }
}

/// Run `step` until it deletes fewer than [`STEP`]; the total.
#[cfg(test)]
fn until_done(mut step: impl FnMut() -> Result<usize, StoreError>) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let n = step()?;
        total += n;
        if n < STEP {
            return Ok(total);
        }
    }
}

/// The users of the database at `path` with more than `max_per_user` notifications: a scan on
/// a read-only connection of its own, so it holds neither the writer nor a turn.
fn over_quota(path: &str, max_per_user: u64) -> Result<Vec<String>, StoreError> {
    let err = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let conn = rusqlite::Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(err)?;
    let mut stmt = conn
        .prepare("SELECT user FROM notifications GROUP BY user HAVING COUNT(*) > ?1")
        .map_err(err)?;
    stmt.query_map(params![max_per_user as i64], |r| r.get(0))
        .and_then(|r| r.collect())
        .map_err(err)
}

/// Hourly (and once at the start): retention, then the quota, each step in a turn of
/// `turns`.
pub(crate) async fn run(
    store: Shared,
    (turns, threads, scans): (
        std::sync::Arc<Semaphore>,
        std::sync::Arc<Background>,
        std::sync::Arc<Background>,
    ),
    (retention_days, max_items_per_user): (u64, u64),
    shutdown: CancellationToken,
) -> Result<(), tocsin_runtime::ServiceError> {
    let path = lock(&store).path.clone();
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = every.tick() => {}
        }
        if retention_days > 0 {
            // a retention longer than the clock can count keeps everything
            let days = i64::try_from(retention_days).unwrap_or(i64::MAX);
            let before = now_ms().saturating_sub(days.saturating_mul(86_400_000));
            match in_turns(&store, (&turns, &threads), &shutdown, move |s| {
                s.prune_step(before, STEP)
            })
            .await
            {
                Ok(n) if n > 0 => info!(deleted = n, "history retention applied"),
                Err(e) => warn!(error = %e, "history retention failed; trying again in an hour"),
                _ => {}
            }
        }
        let p = path.clone();
        let over = scans.run(move || over_quota(&p, max_items_per_user)).await;
        let users = match over {
            Ok(Ok(users)) => users,
            Ok(Err(e)) => {
                warn!(error = %e, "cannot find the users over their history quota; trying again in an hour");
                continue;
            }
            Err(e) => {
                warn!(error = %e, "the history quota's scan failed; trying again in an hour");
                continue;
            }
        };
        for user in users {
            let quota = in_turns(&store, (&turns, &threads), &shutdown, {
                let user = user.clone();
                move |s| s.quota_step(&user, max_items_per_user, STEP)
            })
            .await;
            match quota {
                Ok(n) if n > 0 => info!(
                    deleted = n,
                    %user,
                    max_items_per_user,
                    "a user over the history quota lost their oldest notifications"
                ),
                Err(e) => warn!(error = %e, %user, "history quota failed; trying again in an hour"),
                _ => {}
            }
        }
    }
}

/// Run `step` (deleting at most [`STEP`]) in turns until it deletes fewer, or until
/// `shutdown`; how many went.
async fn in_turns(
    store: &Shared,
    (turns, threads): (&Semaphore, &Background),
    shutdown: &CancellationToken,
    step: impl Fn(&mut Store) -> Result<usize, StoreError> + Clone + Send + 'static,
) -> Result<usize, String> {
    let mut total = 0;
    while !shutdown.is_cancelled() {
        // never closed; were it, the step goes ahead without a turn
        let _turn = turns.acquire().await.ok();
        let (s, f) = (store.clone(), step.clone());
        let n = threads
            .run(move || f(&mut lock(&s)))
            .await
            .map_err(|e| format!("the deleting step failed: {e}"))?
            .map_err(|e| e.to_string())?;
        total += n;
        if n < STEP {
            break;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::HistoryRecord;

    fn n(id: &str, user: &str, at: i64) -> HistoryRecord {
        crate::store::tests::n(id, user, at, &format!("bike {id}"))
    }

    fn count(s: &Store, table: &str) -> i64 {
        s.conn
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn retention_deletes_in_steps_oldest_first_with_timeline_and_search_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let recs: Vec<_> = (0..25).map(|i| n(&format!("a{i:02}"), "u1", i)).collect();
        s.apply(&recs).unwrap();
        // 20 are older than 20: two full steps of 8, then 4 and done
        assert_eq!(s.prune_step(20, 8).unwrap(), 8);
        assert!(!s.contains("a07").unwrap() && s.contains("a08").unwrap());
        assert_eq!(s.prune_step(20, 8).unwrap(), 8);
        assert_eq!(s.prune_step(20, 8).unwrap(), 4);
        assert_eq!(s.prune_step(20, 8).unwrap(), 0);
        for table in ["notifications", "entries", "notifications_fts"] {
            assert_eq!(count(&s, table), 5, "{table}");
        }
        assert!(s.contains("a20").unwrap());
    }

    #[test]
    fn the_quota_deletes_a_users_oldest_in_steps_and_no_one_elses() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let mut recs: Vec<_> = (0..12).map(|i| n(&format!("a{i:02}"), "u1", i)).collect();
        recs.extend((0..12).map(|i| n(&format!("b{i:02}"), "u2", i)));
        s.apply(&recs).unwrap();
        // u1 keeps its newest 5: 7 go, 3 at a time
        assert_eq!(s.quota_step("u1", 5, 3).unwrap(), 3);
        assert_eq!(s.quota_step("u1", 5, 3).unwrap(), 3);
        assert_eq!(s.quota_step("u1", 5, 3).unwrap(), 1);
        assert_eq!(s.quota_step("u1", 5, 3).unwrap(), 0);
        assert!(!s.contains("a06").unwrap() && s.contains("a07").unwrap());
        assert_eq!(count(&s, "notifications"), 5 + 12);
        assert_eq!(count(&s, "entries"), 5 + 12);
        assert_eq!(count(&s, "notifications_fts"), 5 + 12);
        assert_eq!(over_quota(&s.path, 5).unwrap(), vec!["u2".to_owned()]);
    }
}
