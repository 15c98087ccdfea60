//! One silo's history in SQLite (WAL): notifications, their timelines, a full-text index.
//! Synchronous code; the service calls it from blocking tasks.

use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use tocsin_model::{
    HistoryItem, HistoryPage, HistoryQuery, HistoryRecord, Millis, Notification, TimelineEntry,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("invalid cursor {0:?}: pass the next_cursor of a previous page")]
    Cursor(String),
    #[error("stored document is corrupt: {0}")]
    Corrupt(String),
}

impl From<StoreError> for tocsin_runtime::ServiceError {
    fn from(e: StoreError) -> Self {
        tocsin_runtime::ServiceError::Store(Box::new(e))
    }
}

pub struct Store {
    conn: Connection,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS notifications (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    user          TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    doc           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS notifications_by_user ON notifications (user, seq);
CREATE INDEX IF NOT EXISTS notifications_by_time ON notifications (created_at_ms);
CREATE TABLE IF NOT EXISTS timeline (
    notification_id TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    kind            TEXT NOT NULL,
    channel         TEXT NOT NULL DEFAULT '',
    detail          TEXT NOT NULL DEFAULT '',
    UNIQUE (notification_id, kind, at_ms, channel)
);
CREATE VIRTUAL TABLE IF NOT EXISTS notifications_fts USING fts5 (title, body);
";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let p = path.display().to_string();
        let err = |source| StoreError::Sqlite {
            path: p.clone(),
            source,
        };
        let conn = Connection::open(path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // FULL: a batch is acked only after its commit is on disk
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Store { conn, path: p })
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Apply a batch in one transaction. Returns the notifications that were new (a
    /// redelivered record is ignored: the notification id is unique).
    pub fn apply(&mut self, records: &[HistoryRecord]) -> Result<Vec<Notification>, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        let mut fresh = Vec::new();
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO notifications (id, user, created_at_ms, doc) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(err)?;
            let mut fts = tx
                .prepare_cached(
                    "INSERT INTO notifications_fts (rowid, title, body) VALUES (?1, ?2, ?3)",
                )
                .map_err(err)?;
            let mut tl = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO timeline (notification_id, at_ms, kind, channel, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for rec in records {
                let (nid, entry) = match rec {
                    HistoryRecord::Notification {
                        notification: n,
                        entry,
                    } => {
                        let doc = serde_json::to_string(n).expect("notification serializes");
                        let added = ins
                            .execute(params![
                                n.id.as_str(),
                                n.user.as_str(),
                                n.created_at_ms,
                                doc
                            ])
                            .map_err(err)?;
                        if added == 1 {
                            let seq = tx.last_insert_rowid();
                            fts.execute(params![seq, n.title, n.body]).map_err(err)?;
                            fresh.push(n.clone());
                        }
                        (n.id.as_str(), entry)
                    }
                    HistoryRecord::Timeline {
                        notification_id,
                        entry,
                        ..
                    } => (notification_id.as_str(), entry),
                };
                tl.execute(params![
                    nid,
                    entry.at_ms,
                    entry.kind,
                    entry.channel.map(|c| c.as_str()).unwrap_or(""),
                    entry.detail
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(fresh)
    }

    /// One page of a user's history, newest first.
    pub fn query(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let before: i64 = match &q.cursor {
            None => i64::MAX,
            Some(c) => c
                .strip_prefix('c')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| StoreError::Cursor(c.clone()))?,
        };
        let limit = q.limit.clamp(1, 500) as i64;
        let fts = q.q.as_deref().map(fts_query).filter(|s| !s.is_empty());
        let mut sql = String::from(
            "SELECT seq, doc FROM notifications WHERE user = ?1 AND seq < ?2 AND created_at_ms >= ?3 AND created_at_ms < ?4",
        );
        if fts.is_some() {
            sql.push_str(" AND seq IN (SELECT rowid FROM notifications_fts WHERE notifications_fts MATCH ?6)");
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?5");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let since = q.since_ms.unwrap_or(i64::MIN);
        let until = q.until_ms.unwrap_or(i64::MAX);
        let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?));
        let rows: Vec<(i64, String)> = match &fts {
            Some(f) => stmt
                .query_map(
                    params![q.user.as_str(), before, since, until, limit + 1, f],
                    map,
                )
                .and_then(|r| r.collect()),
            None => stmt
                .query_map(
                    params![q.user.as_str(), before, since, until, limit + 1],
                    map,
                )
                .and_then(|r| r.collect()),
        }
        .map_err(|e| self.err(e))?;
        let more = rows.len() as i64 > limit;
        let mut items = Vec::new();
        let mut last_seq = None;
        for (seq, doc) in rows.into_iter().take(limit as usize) {
            let notification: Notification =
                serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let timeline = self.timeline(notification.id.as_str())?;
            items.push(HistoryItem {
                notification,
                timeline,
            });
            last_seq = Some(seq);
        }
        Ok(HistoryPage {
            items,
            next_cursor: if more {
                last_seq.map(|s| format!("c{s}"))
            } else {
                None
            },
        })
    }

    fn timeline(&self, id: &str) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT at_ms, kind, channel, detail FROM timeline WHERE notification_id = ?1 ORDER BY at_ms, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![id], |r| {
                let channel: String = r.get(2)?;
                Ok(TimelineEntry {
                    at_ms: r.get(0)?,
                    kind: r.get(1)?,
                    channel: serde_json::from_value(serde_json::Value::String(channel)).ok(),
                    detail: r.get(3)?,
                })
            })
            .and_then(|r| r.collect())
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// Whether a notification is stored (tests and tools).
    pub fn contains(&self, id: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM notifications WHERE id = ?1",
                params![id],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }

    /// Delete what is older than `before_ms`; returns how many notifications went.
    pub fn prune(&mut self, before_ms: Millis) -> Result<usize, StoreError> {
        let path = self.path.clone();
        let err = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(err)?;
        tx.execute(
            "DELETE FROM notifications_fts WHERE rowid IN (SELECT seq FROM notifications WHERE created_at_ms < ?1)",
            params![before_ms],
        )
        .map_err(err)?;
        tx.execute(
            "DELETE FROM timeline WHERE notification_id IN (SELECT id FROM notifications WHERE created_at_ms < ?1)",
            params![before_ms],
        )
        .map_err(err)?;
        let n = tx
            .execute(
                "DELETE FROM notifications WHERE created_at_ms < ?1",
                params![before_ms],
            )
            .map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(n)
    }
}

/// Turn free text into an FTS5 query that cannot be a syntax error: every word becomes a
/// quoted term, all of which must match (prefix match on the last one).
pub fn fts_query(q: &str) -> String {
    let words: Vec<String> = q
        .split_whitespace()
        .take(16)
        .map(|w| format!("\"{}\"", w.replace('"', "\"\"")))
        .collect();
    let mut s = words.join(" ");
    if !s.is_empty() {
        s.push('*');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::*;

    fn n(id: &str, user: &str, at: i64, title: &str) -> HistoryRecord {
        HistoryRecord::Notification {
            notification: Notification {
                id: NotificationId(id.into()),
                user: UserId::parse(user).unwrap(),
                source: SourceRef {
                    kind: SourceKind::Feed,
                    id: Some("s1".into()),
                    label: "bikes".into(),
                },
                title: title.into(),
                body: "body text".into(),
                url: None,
                priority: Priority::DEFAULT,
                tags: vec![],
                created_at_ms: at,
                published_at_ms: None,
                dedup_key: None,
            },
            entry: TimelineEntry {
                at_ms: at,
                kind: "routed".into(),
                channel: None,
                detail: String::new(),
            },
        }
    }

    fn q(user: &str) -> HistoryQuery {
        HistoryQuery {
            user: UserId::parse(user).unwrap(),
            limit: 2,
            cursor: None,
            since_ms: None,
            until_ms: None,
            q: None,
        }
    }

    #[test]
    fn stores_idempotently_pages_and_searches() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let recs = vec![
            n("n1", "u1", 10, "Road bike"),
            n("n2", "u1", 20, "Sofa \"quoted\""),
            n("n3", "u1", 30, "Mountain bike"),
            n("n4", "u2", 40, "other user's bike"),
        ];
        assert_eq!(s.apply(&recs).unwrap().len(), 4);
        assert_eq!(s.apply(&recs).unwrap().len(), 0, "redelivery is a no-op");
        let p1 = s.query(&q("u1")).unwrap();
        let ids: Vec<_> = p1
            .items
            .iter()
            .map(|i| i.notification.id.0.clone())
            .collect();
        assert_eq!(ids, ["n3", "n2"]);
        assert_eq!(p1.items[0].timeline.len(), 1);
        let p2 = s
            .query(&HistoryQuery {
                cursor: p1.next_cursor.clone(),
                ..q("u1")
            })
            .unwrap();
        assert_eq!(p2.items.len(), 1);
        assert!(p2.next_cursor.is_none());
        let found = s
            .query(&HistoryQuery {
                q: Some("bike".into()),
                limit: 10,
                ..q("u1")
            })
            .unwrap();
        assert_eq!(found.items.len(), 2, "only u1's bikes");
        let odd = s
            .query(&HistoryQuery {
                q: Some("\" OR * NEAR(".into()),
                ..q("u1")
            })
            .unwrap();
        assert!(odd.items.is_empty());
        let ranged = s
            .query(&HistoryQuery {
                since_ms: Some(15),
                until_ms: Some(30),
                limit: 10,
                ..q("u1")
            })
            .unwrap();
        assert_eq!(ranged.items.len(), 1);
        assert!(matches!(
            s.query(&HistoryQuery {
                cursor: Some("zz".into()),
                ..q("u1")
            }),
            Err(StoreError::Cursor(_))
        ));
        assert_eq!(s.prune(25).unwrap(), 2);
        assert!(!s.contains("n1").unwrap());
        assert!(s.contains("n3").unwrap());
    }
}
