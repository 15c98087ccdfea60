//! One silo's history in SQLite (WAL): notifications, their timelines, a full-text index.
//! Synchronous code; the service calls it from blocking tasks. Writes go through one
//! connection; queries through a pool of read-only ones (WAL lets them read while the writer
//! commits), each query cut off after [`QUERY_TIME`], so a tenant's slow search never holds up
//! the silo's writes. A page never grows past [`PAGE_BYTES`]: the reply travels in one bus
//! message.

pub use crate::reader::{PAGE_BYTES, QUERY_TIME, Reader, fts_query};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use tocsin_model::{HistoryPage, HistoryQuery, HistoryRecord, TimelineEntry};

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
    #[error(
        "the search took longer than {0}s and was stopped; narrow it (fewer or longer words, a time range)"
    )]
    TooSlow(u64),
}

impl From<StoreError> for tocsin_runtime::ServiceError {
    fn from(e: StoreError) -> Self {
        tocsin_runtime::ServiceError::Store(Box::new(e))
    }
}

/// A notification a batch stored for the first time: its user, and the document as stored
/// (the JSON of the notification), which is also what the live announcement carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fresh {
    pub user: tocsin_model::UserId,
    pub doc: String,
}

pub struct Store {
    pub(crate) conn: Connection,
    pub(crate) path: String,
    reader: std::sync::Arc<Reader>,
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
CREATE TABLE IF NOT EXISTS entries (
    seq     INTEGER NOT NULL,
    at_ms   INTEGER NOT NULL,
    kind    TEXT NOT NULL,
    channel TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT '',
    UNIQUE (seq, kind, at_ms, channel)
);
CREATE VIRTUAL TABLE IF NOT EXISTS notifications_fts USING fts5 (title, body);
";

/// A timeline entry is keyed by its notification's `seq`, which grows with time, so a batch's
/// entries land at the right edge of their index. Stores written before 2026-12-04 (late) keyed them
/// by the notification's id (a hash: every entry a write to a page of its own, half of a
/// notification's write cost); their `timeline` table is moved into `entries` once, at open.
const MIGRATE_TIMELINE: &str = "
INSERT OR IGNORE INTO entries (seq, at_ms, kind, channel, detail)
    SELECT n.seq, t.at_ms, t.kind, t.channel, t.detail
    FROM timeline t JOIN notifications n ON n.id = t.notification_id
    ORDER BY t.rowid;
DROP TABLE timeline;
";

/// Delete every notification of `user`, with its timeline and search entries (a deleted
/// user's history; by the `notifications_by_user` index).
fn forget(tx: &rusqlite::Transaction<'_>, user: &str) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM notifications_fts WHERE rowid IN (SELECT seq FROM notifications WHERE user = ?1)",
        params![user],
    )?;
    tx.execute(
        "DELETE FROM entries WHERE seq IN (SELECT seq FROM notifications WHERE user = ?1)",
        params![user],
    )?;
    tx.execute("DELETE FROM notifications WHERE user = ?1", params![user])?;
    Ok(())
}

/// A timeline entry's channel as its row keeps it ("" for none).
fn stored_channel(entry: &TimelineEntry) -> &'static str {
    entry.channel.map(|c| c.as_str()).unwrap_or("")
}

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
        let old: bool = conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'timeline')",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if old {
            let started = std::time::Instant::now();
            conn.execute_batch(&format!("BEGIN IMMEDIATE; {MIGRATE_TIMELINE} COMMIT;"))
                .map_err(err)?;
            tracing::info!(
                path = %p,
                secs = started.elapsed().as_secs_f64(),
                "timeline entries moved to the table keyed by notification sequence (once per store)"
            );
        }
        Ok(Store {
            conn,
            reader: std::sync::Arc::new(Reader::new(p.clone())),
            path: p,
        })
    }

    /// The silo's reader, for queries that must not wait for writes.
    pub fn reader(&self) -> std::sync::Arc<Reader> {
        self.reader.clone()
    }

    /// [`Reader::query`].
    pub fn query(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        self.reader.query(q)
    }

    pub(crate) fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Apply a batch in one transaction. Returns the notifications that were new, as stored
    /// (a redelivered record is ignored: the notification id is unique).
    pub fn apply(&mut self, records: &[HistoryRecord]) -> Result<Vec<Fresh>, StoreError> {
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
            // an entry belongs to a notification of the same user, or it is not kept: an ack
            // of an id that is not the user's (or not stored) leaves nothing behind
            let mut tl = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO entries (seq, at_ms, kind, channel, detail) SELECT seq, ?2, ?3, ?4, ?5 FROM notifications WHERE id = ?1 AND user = ?6",
                )
                .map_err(err)?;
            // the entry of a notification this batch has just stored: its `seq` is known
            let mut tl_seq = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO entries (seq, at_ms, kind, channel, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(err)?;
            for rec in records {
                let user = rec.user().as_str();
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
                                &doc
                            ])
                            .map_err(err)?;
                        if added == 1 {
                            let seq = tx.last_insert_rowid();
                            fts.execute(params![seq, n.title, n.body]).map_err(err)?;
                            fresh.push(Fresh {
                                user: n.user.clone(),
                                doc,
                            });
                            tl_seq
                                .execute(params![
                                    seq,
                                    entry.at_ms,
                                    entry.kind,
                                    stored_channel(entry),
                                    entry.detail,
                                ])
                                .map_err(err)?;
                            continue;
                        }
                        (n.id.as_str(), entry)
                    }
                    HistoryRecord::Timeline {
                        notification_id,
                        entry,
                        ..
                    } => (notification_id.as_str(), entry),
                    HistoryRecord::Forget { .. } => {
                        forget(&tx, user).map_err(err)?;
                        fresh.retain(|f| f.user.as_str() != user);
                        continue;
                    }
                };
                tl.execute(params![
                    nid,
                    entry.at_ms,
                    entry.kind,
                    stored_channel(entry),
                    entry.detail,
                    user
                ])
                .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(fresh)
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
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tocsin_model::*;

    pub(crate) fn n(id: &str, user: &str, at: i64, title: &str) -> HistoryRecord {
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
        HistoryQuery::newest(UserId::parse(user).unwrap(), 2)
    }

    #[test]
    fn filters_by_source_priority_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let mut recs = vec![];
        for (i, (source, priority)) in [("s1", 2), ("s2", 5), ("s1", 4), ("s2", 3)]
            .iter()
            .enumerate()
        {
            let mut r = n(&format!("n{i}"), "u1", i as i64, "t");
            if let HistoryRecord::Notification { notification, .. } = &mut r {
                notification.source.id = Some((*source).into());
                notification.priority = Priority::new(*priority).unwrap();
            }
            recs.push(r);
        }
        let step = |id: &str, kind: &str| HistoryRecord::Timeline {
            user: UserId::parse("u1").unwrap(),
            notification_id: NotificationId(id.into()),
            entry: TimelineEntry {
                at_ms: 100,
                kind: kind.into(),
                channel: None,
                detail: String::new(),
            },
        };
        recs.push(step("n1", "acked"));
        recs.push(step("n2", "acked"));
        recs.push(step("n2", "resolved"));
        s.apply(&recs).unwrap();
        let ids = |q: HistoryQuery| -> Vec<String> {
            s.query(&HistoryQuery { limit: 10, ..q })
                .unwrap()
                .items
                .into_iter()
                .map(|i| i.notification.id.0)
                .collect()
        };
        let with = |f: &dyn Fn(&mut HistoryQuery)| {
            let mut q = q("u1");
            f(&mut q);
            q
        };
        assert_eq!(ids(with(&|q| q.source = Some("s1".into()))), ["n2", "n0"]);
        assert_eq!(
            ids(with(&|q| q.min_priority = Priority::new(4).ok())),
            ["n2", "n1"]
        );
        assert_eq!(
            ids(with(&|q| q.state = Some(HistoryState::Open))),
            ["n3", "n0"]
        );
        assert_eq!(ids(with(&|q| q.state = Some(HistoryState::Acked))), ["n1"]);
        assert_eq!(
            ids(with(&|q| q.state = Some(HistoryState::Resolved))),
            ["n2"]
        );
        let both = with(&|q| {
            q.source = Some("s2".into());
            q.state = Some(HistoryState::Open);
        });
        assert_eq!(ids(both), ["n3"]);
        let searched = with(&|q| {
            q.q = Some("t".into());
            q.min_priority = Priority::new(5).ok();
        });
        assert_eq!(ids(searched), ["n1"]);
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

    fn entry(user: &str, id: &str, at: i64, kind: &str) -> HistoryRecord {
        HistoryRecord::Timeline {
            user: UserId::parse(user).unwrap(),
            notification_id: NotificationId(id.into()),
            entry: TimelineEntry {
                at_ms: at,
                kind: kind.into(),
                channel: None,
                detail: String::new(),
            },
        }
    }

    fn timeline_of(s: &Store, user: &str, id: &str) -> Vec<String> {
        s.query(&HistoryQuery {
            limit: 500,
            ..q(user)
        })
        .unwrap()
        .items
        .into_iter()
        .find(|i| i.notification.id.0 == id)
        .map(|i| i.timeline.into_iter().map(|e| e.kind).collect())
        .unwrap_or_default()
    }

    /// The report: 25 large mails made a page larger than a bus message (dropped silently;
    /// the API timed out). A page now ends early at PAGE_BYTES, and its cursors still lead
    /// through every item exactly once.
    #[test]
    fn pages_stop_at_their_byte_budget_and_cursors_cover_everything() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let recs: Vec<_> = (0..100)
            .map(|i| {
                let mut r = n(&format!("n{i:03}"), "u1", i, "big");
                if let HistoryRecord::Notification { notification, .. } = &mut r {
                    notification.body = "<".repeat(16_000);
                }
                r
            })
            .collect();
        s.apply(&recs).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        let mut pages = 0;
        loop {
            let page = s
                .query(&HistoryQuery {
                    limit: 500,
                    cursor: cursor.clone(),
                    ..q("u1")
                })
                .unwrap();
            let bytes = serde_json::to_vec(&page).unwrap().len();
            assert!(bytes <= PAGE_BYTES + 4096, "a page of {bytes} bytes");
            pages += 1;
            seen.extend(page.items.into_iter().map(|i| i.notification.id.0));
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert!(pages > 1);
        let want: Vec<String> = (0..100).rev().map(|i| format!("n{i:03}")).collect();
        assert_eq!(seen, want);
    }

    /// The report: acks of ids that are not the user's left rows retention never deleted, and
    /// one user's ack showed in another's timeline when they shared a silo.
    #[test]
    fn timeline_entries_attach_only_to_the_same_users_notifications() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        s.apply(&[n("n1", "u1", 10, "mine")]).unwrap();
        s.apply(&[
            entry("u2", "n1", 11, "acked"),
            entry("u2", "nope", 12, "acked"),
            entry("u1", "n1", 13, "delivered"),
        ])
        .unwrap();
        assert_eq!(timeline_of(&s, "u1", "n1"), ["routed", "delivered"]);
        let rows: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2, "nothing kept for ids that are not the user's");
    }

    /// A store written before timeline entries were keyed by sequence: its entries are moved
    /// at open, in order, and the old table is gone; an entry whose notification is gone is not
    /// carried over.
    #[test]
    fn a_store_with_the_timeline_keyed_by_id_is_moved_once_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        {
            let mut s = Store::open(&path).unwrap();
            s.apply(&[n("n1", "u1", 10, "one"), n("n2", "u1", 20, "two")])
                .unwrap();
            // the layout of before: the same notifications, entries by id (two at the same
            // time, whose order is the order they were written in)
            s.conn
                .execute_batch(
                    "DROP TABLE entries;
                     CREATE TABLE timeline (
                         notification_id TEXT NOT NULL, at_ms INTEGER NOT NULL,
                         kind TEXT NOT NULL, channel TEXT NOT NULL DEFAULT '',
                         detail TEXT NOT NULL DEFAULT '',
                         UNIQUE (notification_id, kind, at_ms, channel));
                     INSERT INTO timeline VALUES ('n1', 10, 'routed', '', 'to sink');
                     INSERT INTO timeline VALUES ('n2', 20, 'routed', '', '');
                     INSERT INTO timeline VALUES ('n1', 15, 'sent', 'sink', '');
                     INSERT INTO timeline VALUES ('n1', 15, 'delivered', 'sink', 'ok');
                     INSERT INTO timeline VALUES ('gone', 5, 'routed', '', '');",
                )
                .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(timeline_of(&s, "u1", "n1"), ["routed", "sent", "delivered"]);
        assert_eq!(timeline_of(&s, "u1", "n2"), ["routed"]);
        let page = s.query(&q("u1")).unwrap();
        let n1 = page
            .items
            .iter()
            .find(|i| i.notification.id.0 == "n1")
            .unwrap();
        assert_eq!(n1.timeline[0].detail, "to sink");
        assert_eq!(n1.timeline[2].channel, Some(Channel::Sink));
        let old: i64 = s
            .conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'timeline'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
        let rows: i64 = s
            .conn
            .query_row("SELECT COUNT(*) FROM entries", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            rows, 4,
            "the entry of a notification that is gone stays behind"
        );
        // and it goes on as a new store
        s.apply(&[entry("u1", "n2", 30, "acked")]).unwrap();
        assert_eq!(timeline_of(&s, "u1", "n2"), ["routed", "acked"]);
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(timeline_of(&s, "u1", "n2"), ["routed", "acked"]);
    }

    #[test]
    fn a_user_over_the_quota_loses_the_oldest_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let mut recs: Vec<_> = (0..30)
            .map(|i| n(&format!("a{i:02}"), "u1", i, "bike"))
            .collect();
        recs.extend((0..5).map(|i| n(&format!("b{i}"), "u2", i, "bike")));
        s.apply(&recs).unwrap();
        assert_eq!(s.enforce_quota(10).unwrap(), 20);
        let kept = s
            .query(&HistoryQuery {
                limit: 500,
                ..q("u1")
            })
            .unwrap()
            .items;
        assert_eq!(kept.len(), 10);
        assert_eq!(kept.last().unwrap().notification.id.0, "a20");
        let found = s
            .query(&HistoryQuery {
                limit: 500,
                q: Some("bike".into()),
                ..q("u1")
            })
            .unwrap();
        assert_eq!(
            found.items.len(),
            10,
            "the search index lost the deleted ones too"
        );
        assert_eq!(s.enforce_quota(10).unwrap(), 0);
        let others = s
            .query(&HistoryQuery {
                limit: 500,
                ..q("u2")
            })
            .unwrap();
        assert_eq!(others.items.len(), 5);
    }

    #[test]
    fn a_deleted_user_is_forgotten_whole_and_no_one_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(&dir.path().join("h.db")).unwrap();
        let u1 = UserId::parse("u1").unwrap();
        let mut recs: Vec<_> = (0..5)
            .map(|i| n(&format!("a{i}"), "u1", i, "bike"))
            .collect();
        recs.push(n("b0", "u2", 0, "bike"));
        recs.push(HistoryRecord::Timeline {
            user: u1.clone(),
            notification_id: NotificationId("a0".into()),
            entry: TimelineEntry {
                at_ms: 9,
                kind: "acked".into(),
                channel: None,
                detail: String::new(),
            },
        });
        s.apply(&recs).unwrap();
        // a notification in the same batch before the order goes too, and is not fresh
        let fresh = s
            .apply(&[n("a9", "u1", 9, "bike"), HistoryRecord::Forget { user: u1 }])
            .unwrap();
        assert!(fresh.is_empty(), "{fresh:?}");
        let count = |sql: &str| -> i64 { s.conn.query_row(sql, [], |r| r.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM notifications WHERE user = 'u1'"),
            0
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM entries WHERE seq NOT IN (SELECT seq FROM notifications WHERE user = 'u2')"
            ),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM notifications_fts"),
            1,
            "u2's only"
        );
        let q2 = HistoryQuery {
            limit: 500,
            q: Some("bike".into()),
            ..q("u2")
        };
        assert_eq!(s.query(&q2).unwrap().items.len(), 1);
    }
}
