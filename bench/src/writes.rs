//! What a run wrote into JetStream: every stream's last sequence number (KV buckets are streams
//! too), read before and after, the difference divided per notification and named by stream —
//! issue 16's "JetStream writes per delivered notification", measured rather than counted by hand.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use std::collections::BTreeMap;

/// Messages stored so far on a server, by stream kind (one silo's stream counted with the
/// others; a KV bucket as `kv <bucket>`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Stored(BTreeMap<String, u64>);

/// What a run wrote per message it was given: in all, and by stream kind, largest first (kinds
/// that wrote nothing are left out).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WritesPer {
    pub total: f64,
    pub by_kind: Vec<(String, f64)>,
}

/// Every stream on the server `js` talks to, as it is now.
async fn streams(
    js: &async_nats::jetstream::Context,
) -> Result<Vec<async_nats::jetstream::stream::Info>> {
    js.streams()
        .try_collect()
        .await
        .context("list the server's streams")
}

/// Read every stream's last sequence on the server `js` talks to.
pub(crate) async fn stored(js: &async_nats::jetstream::Context) -> Result<Stored> {
    let mut by = BTreeMap::new();
    for info in streams(js).await? {
        *by.entry(kind(&info.config.name)).or_default() += info.state.last_sequence;
    }
    Ok(Stored(by))
}

/// Wait until every durable consumer on the server has been given and has acked all its
/// stream holds for it (the avatars' checkpoints made, every envelope settled): writes that
/// follow the last delivery count too. `timeout` at most. The raw baselines' streams (kind
/// `raw`) are not the pipeline's and are left out.
pub(crate) async fn settled(
    js: &async_nats::jetstream::Context,
    timeout: std::time::Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let mut busy = Vec::new();
        for info in streams(js).await? {
            if kind(&info.config.name) == "raw" {
                continue;
            }
            let stream = js.get_stream(&info.config.name).await?;
            let mut consumers = stream.consumers();
            while let Some(c) = consumers.try_next().await.context("list consumers")? {
                // an ephemeral consumer is a listing or a watch (a KV bucket's keys read once),
                // not a stage of the pipeline: one left behind lingers until the server drops
                // it for inactivity, and would hold the wait that long
                if c.config.durable_name.is_none() {
                    continue;
                }
                if c.num_ack_pending > 0 || c.num_pending > 0 {
                    busy.push(format!(
                        "{}/{}: {} unacked, {} not yet delivered",
                        info.config.name, c.name, c.num_ack_pending, c.num_pending
                    ));
                }
            }
        }
        if busy.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!(
                "JetStream did not settle within {timeout:?}: {}",
                busy.join("; ")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A stream's kind from its name: past the installation's prefix (`BENCH_SILO_3` is `silo`),
/// a KV bucket's stream as `kv <bucket>` (`KV_BENCH_AVATARS` is `kv avatars`).
fn kind(stream: &str) -> String {
    let (kv, rest) = match stream.strip_prefix("KV_") {
        Some(r) => (true, r),
        None => (false, stream),
    };
    let rest = rest.split_once('_').map_or(rest, |(_, r)| r);
    let name = rest
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .trim_end_matches('_')
        .to_lowercase();
    match kv {
        true => format!("kv {name}"),
        false => name,
    }
}

impl Stored {
    /// What was written from `self` to `later`, per message of `messages`.
    pub(crate) fn per(&self, later: &Stored, messages: usize) -> WritesPer {
        let n = messages.max(1) as f64;
        let mut by_kind: Vec<(String, f64)> = later
            .0
            .iter()
            .map(|(k, &after)| {
                let before = self.0.get(k).copied().unwrap_or(0);
                (k.clone(), after.saturating_sub(before) as f64 / n)
            })
            .filter(|(_, w)| *w > 0.0)
            .collect();
        by_kind.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        WritesPer {
            total: by_kind.iter().map(|(_, w)| w).sum(),
            by_kind,
        }
    }
}

impl std::fmt::Display for WritesPer {
    /// `3.35 (silo 1.07, history 0.69, …)`: kinds under 0.005 each are left out of the list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.2}", self.total)?;
        let shown: Vec<String> = self
            .by_kind
            .iter()
            .filter(|(_, w)| *w >= 0.005)
            .map(|(k, w)| format!("{k} {w:.2}"))
            .collect();
        if !shown.is_empty() {
            write!(f, " ({})", shown.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_named_by_kind_without_prefix_or_silo() {
        assert_eq!(kind("BENCH_SILO_3"), "silo");
        assert_eq!(kind("BENCH_HISTORY"), "history");
        assert_eq!(kind("KV_BENCH_AVATARS"), "kv avatars");
        assert_eq!(kind("BENCH_RAW_0"), "raw");
        assert_eq!(kind("LONELY"), "lonely");
    }

    #[test]
    fn writes_are_the_differences_per_message_largest_first() {
        let at = |v: &[(&str, u64)]| Stored(v.iter().map(|(k, n)| (k.to_string(), *n)).collect());
        let before = at(&[("silo", 100), ("history", 10), ("raw", 5)]);
        let after = at(&[
            ("silo", 300),
            ("history", 160),
            ("raw", 5),
            ("kv avatars", 2),
        ]);
        let w = before.per(&after, 200);
        assert_eq!(
            w.by_kind,
            vec![
                ("silo".to_owned(), 1.0),
                ("history".to_owned(), 0.75),
                ("kv avatars".to_owned(), 0.01),
            ]
        );
        assert!((w.total - 1.76).abs() < 1e-9);
        assert_eq!(
            w.to_string(),
            "1.76 (silo 1.00, history 0.75, kv avatars 0.01)"
        );
    }
}
