//! How a feed's record changes after a fetch or a WebSub push, as pure functions: what is
//! seen now, its validators and health, when it is polled next, whether to ask its hub, and
//! what the caller must then do (save, tell subscribers). The caller holds the feeds lock
//! around these and does the I/O after it.

use crate::config::IngestorConfig;
use crate::feeds::plan::{PollPlan, next_poll};
use crate::feeds::record::{FeedRecord, Subscriber};
use crate::feeds::websub;
use std::time::Duration;
use tocsin_model::Millis;

/// A document that was fetched (or pushed) and parsed, with what it means.
#[derive(Debug)]
pub struct Refreshed {
    pub plan: PollPlan,
    pub title: String,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// The WebSub hub and topic the document advertises.
    pub hub: Option<String>,
    pub topic: Option<String>,
    /// A watched page's text now, to remember.
    pub page_text: Option<String>,
}

/// What the I/O side must do after a successful fetch.
#[derive(Debug, Default, PartialEq)]
pub struct AfterSuccess {
    /// Ask this hub for a subscription (the record already holds it, unverified).
    pub subscribe: Option<websub::WebSub>,
    /// Subscribers who have now had the items already listed: their entries are saved.
    pub served: Vec<Subscriber>,
    /// Write the record (an unchanged 304 changes only times: not worth a bus write).
    pub must_save: bool,
    /// The feed was failing (or never polled): tell its subscribers it is healthy.
    pub recovered: bool,
}

/// `rec` after a successful fetch of `snapshot` (the record as it was when the fetch began):
/// `doc` is the parsed document, or none for a 304. `secret` makes a WebSub secret if one is
/// needed; `rand01` spreads the next poll.
pub fn after_success(
    rec: &mut FeedRecord,
    snapshot: &FeedRecord,
    doc: Option<Refreshed>,
    cfg: &IngestorConfig,
    now: Millis,
    rand01: f64,
    secret: impl FnOnce() -> String,
) -> AfterSuccess {
    let recovered = snapshot.failures > 0 || !snapshot.polled;
    let had_document = doc.is_some();
    let mut out = AfterSuccess {
        recovered,
        ..Default::default()
    };
    let mut hub_topic = None;
    if let Some(r) = doc {
        if !cfg.websub_public_url.is_empty() {
            hub_topic = Some((r.hub, r.topic.unwrap_or_else(|| snapshot.url.clone())));
        }
        rec.seen = r.plan.seen;
        rec.listings = r.plan.listings;
        rec.title = r.title;
        if r.page_text.is_some() {
            rec.page_text = r.page_text;
        }
        rec.etag = r.etag;
        rec.last_modified = r.last_modified;
        rec.polled = true;
        // subscribers who got the existing items (those waiting in the snapshot) are done;
        // looked for first, as changing the subscribers copies them while the snapshot holds
        // them too
        let served_some = rec.subscribers.values().any(|s| s.pending_existing)
            && snapshot.subscribers.values().any(|s| s.pending_existing);
        for (k, s) in served_some
            .then(|| rec.subscribers.iter_mut())
            .into_iter()
            .flatten()
        {
            if s.pending_existing
                && snapshot
                    .subscribers
                    .get(k)
                    .is_some_and(|o| o.pending_existing)
            {
                s.pending_existing = false;
                out.served.push(s.clone());
            }
        }
    }
    let failing_before = rec.failures > 0 || rec.last_error.is_some();
    rec.failures = 0;
    rec.last_error = None;
    rec.last_checked_ms = now;
    if let Some((hub, topic)) = hub_topic {
        let action = websub::plan(
            rec.websub.as_ref(),
            hub.as_deref(),
            &topic,
            cfg.websub_lease_secs,
            now,
        );
        if let websub::Action::Subscribe { hub, topic } = action {
            let ws = websub::WebSub {
                hub,
                topic,
                secret: secret(),
                verified: false,
                lease_expires_ms: 0,
                requested_at_ms: now,
            };
            rec.websub = Some(ws.clone());
            out.subscribe = Some(ws);
        }
    }
    let mut interval = rec.interval_secs(cfg);
    if websub::active(rec.websub.as_ref(), now) {
        interval = interval.max(cfg.websub_poll_interval_secs);
    }
    rec.next_poll_ms = rec.active_from(next_poll(now, interval, cfg, 0, None, rand01));
    if had_document && rec.subscribers.values().any(|s| s.pending_existing) {
        // subscribed while this poll was under way, asking for the existing items: again now
        rec.next_poll_ms = now;
    }
    out.must_save = had_document
        || failing_before
        || recovered
        || out.subscribe.is_some()
        || !out.served.is_empty();
    out
}

/// Why a fetch failed.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    pub error: &'a str,
    /// Not before this (the server's `Retry-After`, or our own retry delay).
    pub retry_after: Option<Duration>,
    /// The feed's own failure (counted, backed off, reported); otherwise ours (publishing
    /// failed), retried after `retry_after` without blaming the feed.
    pub feed_at_fault: bool,
}

/// `rec` after a failed fetch. True when subscribers must be told: a new error, or the
/// failure that makes the feed broken (`source_broken_after` in a row).
pub fn after_failure(
    rec: &mut FeedRecord,
    snapshot: &FeedRecord,
    failure: Failure<'_>,
    cfg: &IngestorConfig,
    now: Millis,
    rand01: f64,
) -> bool {
    let Failure {
        error: msg,
        retry_after,
        feed_at_fault: count,
    } = failure;
    if count {
        rec.failures += 1;
        rec.last_error = Some(msg.to_owned());
    }
    rec.last_checked_ms = now;
    rec.next_poll_ms = match (count, retry_after) {
        (false, Some(d)) => now + d.as_millis() as Millis,
        _ => rec.active_from(next_poll(
            now,
            rec.interval_secs(cfg),
            cfg,
            rec.failures,
            retry_after,
            rand01,
        )),
    };
    count
        && (snapshot.last_error.as_deref() != Some(msg) || rec.failures == cfg.source_broken_after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::{Filter, UserId};

    fn cfg() -> IngestorConfig {
        IngestorConfig {
            poll_interval_secs: 60,
            jitter: 0.0,
            ..Default::default()
        }
    }

    fn sub(user: &str, pending_existing: bool) -> Subscriber {
        Subscriber {
            active_hours: None,
            user: UserId::parse(user).unwrap(),
            source_id: "s".into(),
            filter: Filter::default(),
            label: String::new(),
            pending_existing,
            poll_interval_secs: None,
            listing: Default::default(),
        }
    }

    fn doc(seen: &[&str], hub: Option<&str>) -> Refreshed {
        Refreshed {
            plan: PollPlan {
                seen: seen.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
            title: "t".into(),
            etag: Some("\"e1\"".into()),
            last_modified: None,
            hub: hub.map(Into::into),
            topic: None,
            page_text: None,
        }
    }

    fn feed(error: &str) -> Failure<'_> {
        Failure {
            error,
            retry_after: None,
            feed_at_fault: true,
        }
    }

    fn polled() -> FeedRecord {
        let mut r = FeedRecord {
            url: "https://example.org/rss".into(),
            polled: true,
            ..Default::default()
        };
        r.subscribers.insert("u1/s".into(), sub("u1", false));
        r
    }

    #[test]
    fn an_unchanged_304_moves_only_the_times_and_is_not_saved() {
        let mut rec = polled();
        let snapshot = rec.clone();
        let out = after_success(&mut rec, &snapshot, None, &cfg(), 1_000, 0.5, || {
            unreachable!("no hub without a document")
        });
        assert_eq!(out, AfterSuccess::default());
        assert_eq!((rec.last_checked_ms, rec.next_poll_ms), (1_000, 61_000));
        assert_eq!(rec.etag, None);
    }

    #[test]
    fn a_document_updates_what_is_seen_and_serves_waiting_subscribers() {
        let mut rec = polled();
        rec.subscribers.insert("u2/s".into(), sub("u2", true));
        let snapshot = rec.clone();
        // u3 subscribed during the poll, also asking for the existing items
        rec.subscribers.insert("u3/s".into(), sub("u3", true));
        let out = after_success(
            &mut rec,
            &snapshot,
            Some(doc(&["a", "b"], None)),
            &cfg(),
            5,
            0.5,
            String::new,
        );
        assert!(out.must_save && !out.recovered);
        assert_eq!(out.served.len(), 1);
        assert_eq!(out.served[0].user.as_str(), "u2");
        assert_eq!(rec.seen, ["a", "b"]);
        assert_eq!(rec.etag.as_deref(), Some("\"e1\""));
        assert!(rec.subscribers["u3/s"].pending_existing);
        assert_eq!(rec.next_poll_ms, 5, "u3 still waits: polled again at once");
    }

    #[test]
    fn a_document_nobody_waits_for_leaves_the_subscribers_shared_with_the_snapshot() {
        let mut rec = polled();
        let snapshot = rec.clone();
        assert!(rec.subscribers.shares_with(&snapshot.subscribers));
        let doc = Some(doc(&["a"], None));
        let out = after_success(&mut rec, &snapshot, doc, &cfg(), 5, 0.5, String::new);
        assert!(out.must_save && out.served.is_empty());
        assert!(rec.subscribers.shares_with(&snapshot.subscribers));
        // a change copies them: the snapshot keeps what it was taken with
        rec.subscribers.insert("u2/s".into(), sub("u2", false));
        assert!(!rec.subscribers.shares_with(&snapshot.subscribers));
        assert_eq!((rec.subscribers.len(), snapshot.subscribers.len()), (2, 1));
    }

    #[test]
    fn a_failing_feed_recovers_and_its_subscribers_are_told() {
        let mut rec = polled();
        assert!(after_failure(
            &mut rec,
            &polled(),
            feed("503"),
            &cfg(),
            0,
            0.5
        ));
        assert_eq!(rec.failures, 1);
        let snapshot = rec.clone();
        // the same error again is not news
        assert!(!after_failure(
            &mut rec,
            &snapshot,
            feed("503"),
            &cfg(),
            60_000,
            0.5
        ));
        assert_eq!(rec.failures, 2);
        assert_eq!(rec.next_poll_ms, 60_000 + 120_000, "backed off");
        // the same error a third time (`source_broken_after`): now it is broken, and told
        let snapshot = rec.clone();
        assert!(after_failure(
            &mut rec,
            &snapshot,
            feed("503"),
            &cfg(),
            180_000,
            0.5
        ));
        assert_eq!(rec.failures, cfg().source_broken_after);
        let snapshot = rec.clone();
        assert!(!after_failure(
            &mut rec,
            &snapshot,
            feed("503"),
            &cfg(),
            400_000,
            0.5
        ));
        let snapshot = rec.clone();
        let out = after_success(&mut rec, &snapshot, None, &cfg(), 200_000, 0.5, String::new);
        assert!(out.recovered && out.must_save);
        assert_eq!((rec.failures, rec.last_error.clone()), (0, None));
    }

    #[test]
    fn our_own_failure_is_retried_soon_without_blaming_the_feed() {
        let mut rec = polled();
        let snapshot = rec.clone();
        let ours = Failure {
            error: "internal: the bus is down",
            retry_after: Some(Duration::from_secs(5)),
            feed_at_fault: false,
        };
        let tell = after_failure(&mut rec, &snapshot, ours, &cfg(), 1_000, 0.5);
        assert!(!tell);
        assert_eq!((rec.failures, rec.next_poll_ms), (0, 6_000));
    }

    #[test]
    fn an_advertised_hub_is_asked_when_websub_is_on() {
        let on = IngestorConfig {
            websub_public_url: "https://tocsin.example.org".into(),
            ..cfg()
        };
        let mut rec = polled();
        let snapshot = rec.clone();
        let d = doc(&["a"], Some("https://hub.example.org/"));
        let out = after_success(&mut rec, &snapshot, Some(d), &on, 7, 0.5, || {
            "s3cret".into()
        });
        let ws = out.subscribe.expect("asked");
        assert_eq!(ws.hub, "https://hub.example.org/");
        assert_eq!(ws.topic, "https://example.org/rss");
        assert_eq!(ws.secret, "s3cret");
        assert_eq!(rec.websub.as_ref(), Some(&ws));
        // off: never asked
        let mut rec = polled();
        let d = doc(&["a"], Some("https://hub.example.org/"));
        let out = after_success(
            &mut rec,
            &snapshot,
            Some(d),
            &cfg(),
            7,
            0.5,
            || unreachable!(),
        );
        assert!(out.subscribe.is_none());
    }
}
