//! The poll loop: start each feed's poll when it is due, a fetch permit is free and its host's
//! politeness limits allow it.

use crate::feeds::Shared;
use crate::feeds::poll::poll;
use std::sync::Arc;
use std::time::Duration;
use tocsin_model::{Millis, now_ms};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info_span};

pub(crate) fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Start each feed's poll when it is due, a fetch permit is free and its host allows it;
/// returns at `shutdown`. A finished fetch frees its permit and the next due feed starts at
/// once; with nothing due the loop sleeps until the earliest entry (or an earlier one arrives).
pub(crate) async fn schedule_polls(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
) {
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = shared.fetch_permits.clone().acquire_owned() => p.expect("the permits are never closed"),
        };
        let Some((key, url, host)) = next_due(shared, shutdown).await else {
            return;
        };
        let s = shared.clone();
        let span = info_span!("poll", url = %url);
        tracker.spawn(
            async move {
                poll(&s, &key).await;
                s.in_flight.lock().expect("in-flight lock").remove(&key);
                let mut hosts = s.hosts.lock().expect("hosts lock");
                if let Some(h) = hosts.get_mut(&host) {
                    h.in_flight = h.in_flight.saturating_sub(1);
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
}

/// Wait for the next feed that is due and allowed by its host's limits, and mark it in
/// flight: (key, url, host). `None` at shutdown.
pub(crate) async fn next_due(
    shared: &Shared,
    shutdown: &CancellationToken,
) -> Option<(String, String, String)> {
    loop {
        let now = now_ms();
        let popped = {
            let mut queue = shared.queue.lock().expect("queue lock");
            queue.pop_due(now).ok_or(queue.next_at())
        };
        let key = match popped {
            Ok(key) => key,
            Err(next_at) => {
                // nothing due: sleep until the earliest entry, or until woken by an earlier one
                let wait = next_at.map_or(Duration::from_secs(3600), |at| {
                    Duration::from_millis(at.saturating_sub(now).max(1) as u64)
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = shared.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
                continue;
            }
        };
        let url = {
            let feeds = shared.feeds.lock().expect("feeds lock");
            match feeds.get(&key) {
                // no longer watched: its entry goes with it
                None => continue,
                Some(r) if r.subscribers.is_empty() => continue,
                Some(r) if r.next_poll_ms > now => {
                    // a stale entry: the record was rescheduled later
                    shared.reschedule(&key, r.next_poll_ms);
                    continue;
                }
                Some(r) => r.url.clone(),
            }
        };
        // being polled (or pushed by a hub): that poll's end schedules it again
        if shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .contains(&key)
        {
            continue;
        }
        let host = host_of(&url);
        {
            let mut hosts = shared.hosts.lock().expect("hosts lock");
            let h = hosts.entry(host.clone()).or_default();
            if h.in_flight >= shared.cfg.per_host_concurrency || h.next_allowed_ms > now {
                // the host's turn comes later; its other feeds wait with this one
                let later = h.next_allowed_ms.max(now + 100);
                drop(hosts);
                shared.reschedule(&key, later);
                continue;
            }
            h.in_flight += 1;
            h.next_allowed_ms = now + shared.cfg.host_min_interval_ms as Millis;
        }
        shared
            .in_flight
            .lock()
            .expect("in-flight lock")
            .insert(key.clone());
        return Some((key, url, host));
    }
}
