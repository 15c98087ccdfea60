//! The fault suite: while a few thousand notifications flow, every service is killed in
//! turn (its task aborted: nothing settled, in-flight work lost, like `kill -9` of its
//! process), the nats-server is killed with SIGKILL and restarted, and the webhook target
//! answers 503 for a while. Afterwards every notification was delivered exactly once — save
//! the few in flight at the moment delivery itself was killed, repeated with the same
//! `X-Tocsin-Id` — and is in history exactly once, checked by id.
//!
//! The long version (`TOCSIN_FAULTS_LONG=1`) publishes ten times as many and repeats the
//! round of kills three times.

mod common;

use anyhow::Result;
use common::workload::Workload;
use common::{Harness, Svc};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_killed_in_turn_loses_and_doubles_nothing() -> Result<()> {
    let long = std::env::var_os("TOCSIN_FAULTS_LONG").is_some();
    let (step, rounds) = if long { (1_000, 3) } else { (150, 1) };
    let mut h = Harness::start_with("faults", |s| {
        s.bus.max_deliver = 20;
        s.delivery.concurrency = 4;
    })
    .await?;
    let mut w = Workload::users(&h, 2).await?;
    w.start(&h, Duration::from_millis(2));
    w.advance(step).await?;
    let mut delivery_kills = 0;
    for _ in 0..rounds {
        for svc in [Svc::Router, Svc::History, Svc::Delivery, Svc::Ingestor] {
            h.kill(svc).await;
            w.advance(step).await?;
            h.start_service(svc);
            w.advance(step).await?;
            delivery_kills += usize::from(svc == Svc::Delivery);
        }
        // the bus itself: SIGKILL, store kept, restarted on the same port
        let nats = h.nats.as_mut().expect("one nats-server");
        nats.kill();
        nats.restart()?;
        w.advance(step).await?;
        // the target refuses for a while: deliveries wait and retry, nothing is dropped
        for u in &w.users {
            w.hooks.answer(&u.path, 503, "{}");
        }
        w.advance(step).await?;
        for u in &w.users {
            w.hooks.answer(&u.path, 200, "{}");
        }
        w.advance(step).await?;
    }
    let n = w.finish().await?;
    eprintln!("{n} notifications published through the faults");
    // at most the jobs sent but not yet settled at each delivery kill: a destination's jobs go
    // out one at a time, so one per destination (here one per user) per kill
    w.assert_each_delivered(&h, delivery_kills * w.users.len())
        .await?;
    h.shutdown().await;
    Ok(())
}
