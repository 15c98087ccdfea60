//! The read side of one silo's history: pages of a user's notifications (filtered, searched,
//! newest first) on a pool of read-only connections, each query cut off after [`QUERY_TIME`]
//! and each page kept under [`PAGE_BYTES`].

use crate::store::StoreError;
use rusqlite::{Connection, params};
use tocsin_model::{
    HistoryItem, HistoryPage, HistoryQuery, HistoryState, Notification, TimelineEntry,
};

/// Queries on one silo's database through a pool of read-only connections, used without the
/// writer's lock.
pub struct Reader {
    path: String,
    /// Idle read-only connections.
    idle: std::sync::Mutex<Vec<Connection>>,
}

/// The most a page's items may take encoded; past it the page ends early with a cursor.
pub const PAGE_BYTES: usize = 512 * 1024;
/// The longest a query may run before it is interrupted.
pub const QUERY_TIME: std::time::Duration = std::time::Duration::from_secs(3);

impl Reader {
    pub(crate) fn new(path: String) -> Reader {
        Reader {
            path,
            idle: Default::default(),
        }
    }

    /// A read-only connection from the pool (a new one when all are busy), given back by
    /// [`Reader::give_back`].
    fn connection(&self) -> Result<Connection, StoreError> {
        let idle = tocsin_runtime::lock(&self.idle).pop();
        if let Some(c) = idle {
            return Ok(c);
        }
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
            | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX
            | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let c = Connection::open_with_flags(&self.path, flags).map_err(|e| self.err(e))?;
        c.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| self.err(e))?;
        Ok(c)
    }

    fn give_back(&self, c: Connection) {
        let mut idle = tocsin_runtime::lock(&self.idle);
        if idle.len() < 4 {
            idle.push(c);
        }
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// One page of a user's history, newest first: at most `limit` items and [`PAGE_BYTES`],
    /// on a read-only connection, within [`QUERY_TIME`].
    pub fn query(&self, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let conn = self.connection()?;
        // a watchdog interrupts the query at its time (on the runtime's timer when there is
        // one: queries run on its blocking threads)
        let interrupt = conn.get_interrupt_handle();
        let watchdog = tokio::runtime::Handle::try_current().ok().map(|rt| {
            rt.spawn(async move {
                tokio::time::sleep(QUERY_TIME).await;
                interrupt.interrupt();
            })
        });
        let page = self.query_on(&conn, q);
        if let Some(w) = watchdog {
            w.abort();
        }
        self.give_back(conn);
        page.map_err(|e| match e {
            StoreError::Sqlite { source, .. }
                if source.sqlite_error_code()
                    == Some(rusqlite::ErrorCode::OperationInterrupted) =>
            {
                StoreError::TooSlow(QUERY_TIME.as_secs())
            }
            e => e,
        })
    }

    fn query_on(&self, conn: &Connection, q: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let before: i64 = match &q.cursor {
            None => i64::MAX,
            Some(c) => c
                .strip_prefix('c')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| StoreError::Cursor(c.clone()))?,
        };
        let limit = q.limit.clamp(1, 500) as i64;
        let fts = q.q.as_deref().map(fts_query).filter(|s| !s.is_empty());
        let since = q.since_ms.unwrap_or(i64::MIN);
        let until = q.until_ms.unwrap_or(i64::MAX);
        let mut sql = String::from(
            "SELECT seq, doc FROM notifications WHERE user = ?1 AND seq < ?2 AND created_at_ms >= ?3 AND created_at_ms < ?4",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![
            q.user.as_str().to_owned().into(),
            before.into(),
            since.into(),
            until.into(),
            (limit + 1).into(),
        ];
        let mut arg = |sql: &mut String, clause: &str, v: rusqlite::types::Value| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(f) = fts {
            arg(
                &mut sql,
                " AND seq IN (SELECT rowid FROM notifications_fts WHERE notifications_fts MATCH ?)",
                f.into(),
            );
        }
        if let Some(source) = &q.source {
            arg(
                &mut sql,
                " AND json_extract(doc, '$.source.id') = ?",
                source.clone().into(),
            );
        }
        if let Some(p) = q.min_priority {
            arg(
                &mut sql,
                " AND json_extract(doc, '$.priority') >= ?",
                i64::from(p.get()).into(),
            );
        }
        const HAS: &str =
            "EXISTS (SELECT 1 FROM entries t WHERE t.seq = notifications.seq AND t.kind = ";
        match q.state {
            None => {}
            Some(HistoryState::Resolved) => sql.push_str(&format!(" AND {HAS}'resolved')")),
            Some(HistoryState::Acked) => {
                sql.push_str(&format!(" AND {HAS}'acked') AND NOT {HAS}'resolved')"))
            }
            Some(HistoryState::Open) => {
                sql.push_str(&format!(" AND NOT {HAS}'acked') AND NOT {HAS}'resolved')"))
            }
        }
        sql.push_str(" ORDER BY seq DESC LIMIT ?5");
        let mut stmt = conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let map = |r: &rusqlite::Row<'_>| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?));
        let rows: Vec<(i64, String)> = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), map)
            .and_then(|r| r.collect())
            .map_err(|e| self.err(e))?;
        let mut more = rows.len() as i64 > limit;
        let mut items = Vec::new();
        let mut last_seq = None;
        let mut bytes = 0;
        for (seq, doc) in rows.into_iter().take(limit as usize) {
            let notification: Notification =
                serde_json::from_str(&doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let timeline = self.timeline(conn, seq)?;
            // what the item adds to the reply: its stored document (JSON already) and its
            // entries, with room for their field names
            let size = doc.len()
                + timeline
                    .iter()
                    .map(|e| 96 + e.kind.len() + e.detail.len())
                    .sum::<usize>();
            let item = HistoryItem {
                notification,
                timeline,
            };
            if !items.is_empty() && bytes + size > PAGE_BYTES {
                // the rest on the next page
                more = true;
                break;
            }
            bytes += size;
            items.push(item);
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

    /// The timeline of the notification stored as `seq`.
    fn timeline(&self, conn: &Connection, seq: i64) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut stmt = conn
            .prepare_cached(
                "SELECT at_ms, kind, channel, detail FROM entries WHERE seq = ?1 ORDER BY at_ms, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(params![seq], |r| {
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
