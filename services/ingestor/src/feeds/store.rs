//! The feed state in the `feeds` KV bucket: loading every record and subscriber at start,
//! writing a record or one subscriber's entry.

use crate::feeds::Shared;
use crate::feeds::record::{FeedRecord, Subscriber, subscriber_key};
use async_nats::jetstream::kv;
use futures::StreamExt;
use std::collections::HashMap;
use tocsin_bus::BusError;
use tracing::warn;

pub(crate) async fn load_feeds(kv: &kv::Store) -> Result<HashMap<String, FeedRecord>, BusError> {
    let kv_err = |e: &dyn std::fmt::Display| BusError::Kv {
        bucket: "feeds".into(),
        key: "*".into(),
        message: e.to_string(),
    };
    let mut out: HashMap<String, FeedRecord> = HashMap::new();
    let mut subscribers = Vec::new();
    let mut keys = kv.keys().await.map_err(|e| kv_err(&e))?;
    let mut names = Vec::new();
    while let Some(k) = keys.next().await {
        names.push(k.map_err(|e| kv_err(&e))?);
    }
    for k in names {
        let Some(v) = kv.get(&k).await.map_err(|e| kv_err(&e))? else {
            continue;
        };
        if k.starts_with('f') {
            match serde_json::from_slice::<FeedRecord>(&v) {
                Ok(r) => {
                    out.insert(k, r);
                }
                Err(e) => warn!(key = %k, error = %e, "unreadable feed record skipped"),
            }
        } else if let Some(feed) = k.strip_prefix('s').and_then(|r| r.split('.').next()) {
            match serde_json::from_slice::<Subscriber>(&v) {
                Ok(sub) => subscribers.push((format!("f{feed}"), sub)),
                Err(e) => warn!(key = %k, error = %e, "unreadable subscriber skipped"),
            }
        }
    }
    for (feed, sub) in subscribers {
        match out.get_mut(&feed) {
            Some(r) => {
                r.subscribers
                    .insert(format!("{}/{}", sub.user, sub.source_id), sub);
            }
            None => warn!(feed = %feed, user = %sub.user, "subscriber of an unknown feed skipped"),
        }
    }
    Ok(out)
}

/// Store or delete one subscriber's entry.
pub(crate) async fn save_subscriber(
    shared: &Shared,
    feed_key: &str,
    sub: &Subscriber,
    delete: bool,
) -> Result<(), BusError> {
    let key = subscriber_key(feed_key, sub);
    let result = if delete {
        shared.kv.delete(&key).await.map_err(|e| e.to_string())
    } else {
        let bytes = tocsin_bus::encode(sub)?;
        shared
            .kv
            .put(&key, bytes)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    result.map_err(|message| BusError::Kv {
        bucket: "feeds".into(),
        key,
        message,
    })
}

pub(crate) async fn save(shared: &Shared, key: &str, record: &FeedRecord) -> Result<(), BusError> {
    let bytes = tocsin_bus::encode(record)?;
    shared
        .kv
        .put(key, bytes)
        .await
        .map(|_| ())
        .map_err(|e| BusError::Kv {
            bucket: "feeds".into(),
            key: key.to_owned(),
            message: e.to_string(),
        })
}
