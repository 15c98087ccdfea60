//! Scale-out on a 3-node JetStream cluster on loopback (R3 streams and buckets): router and
//! history replicas own silos by the Helm chart's ordinal rule; routers are scaled 2 → 3 → 2
//! the way a Helm upgrade rolls a StatefulSet, one is killed mid-run, and a NATS node is
//! killed and restarted — while notifications keep flowing. Every notification is then
//! delivered once and in history once, checked by id.

use anyhow::{Context, Result};
use std::collections::BTreeSet;
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::workload::Workload;
use tocsin_tests::{Harness, Svc};

const SILOS: u32 = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silos_move_between_routers_on_a_cluster_without_loss_or_duplicates() -> Result<()> {
    let mut h = Harness::start_with("silomove", |s| {
        s.cluster_nodes = 3;
        s.bus.replicas = 3;
        s.bus.silo_count = SILOS;
        s.bus.max_deliver = 20;
        s.router_replicas = 2;
        s.history_replicas = 2;
    })
    .await?;
    let mut w = Workload::users(&h, 2).await?;
    w.start(&h, Duration::from_millis(15));
    w.advance(100).await?;

    // 2 → 3, as `helm upgrade --set router.replicas=3` rolls it: the new pod first (its
    // silos are still held by the old pods, it waits), then each old pod restarts with the
    // new count, highest ordinal first
    h.router_replicas = 3;
    h.start_service(Svc::RouterReplica(2));
    w.advance(50).await?;
    for i in [1, 0] {
        h.stop(Svc::RouterReplica(i)).await;
        h.start_service(Svc::RouterReplica(i));
        w.advance(50).await?;
    }
    // every silo served, by three different routers, as the chart's rule says
    let holders = lease_holders(&h).await?;
    assert_eq!(
        holders.len(),
        3,
        "three routers hold the silos: {holders:?}"
    );

    // one router dies mid-run (nothing settled, its leases left to expire) and comes back
    h.kill(Svc::RouterReplica(1)).await;
    w.advance(100).await?;
    h.start_service(Svc::RouterReplica(1));
    w.advance(50).await?;

    // a NATS node dies mid-run and comes back (R3: the streams keep a quorum)
    h.cluster.as_mut().context("cluster")?.kill(1);
    w.advance(100).await?;
    h.cluster.as_mut().context("cluster")?.restart(1)?;
    w.advance(50).await?;

    // 3 → 2: the highest pod goes, the others restart with the new count
    h.router_replicas = 2;
    h.stop(Svc::RouterReplica(2)).await;
    for i in [1, 0] {
        h.stop(Svc::RouterReplica(i)).await;
        h.start_service(Svc::RouterReplica(i));
        w.advance(50).await?;
    }
    w.advance(100).await?;
    w.finish().await?;
    let holders = lease_holders(&h).await?;
    assert_eq!(holders.len(), 2, "two routers hold the silos: {holders:?}");

    w.assert_each_delivered_once(&h).await?;
    h.shutdown().await;
    Ok(())
}

/// The distinct holders of the router leases, once every silo has one.
async fn lease_holders(h: &Harness) -> Result<BTreeSet<String>> {
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let leases = tocsin_bus::Leases::open(&bus, "router", Duration::from_secs(3)).await?;
    let out = wait_for(
        Duration::from_secs(30),
        "every silo held by a router",
        || async {
            let mut out = BTreeSet::new();
            for silo in 0..SILOS {
                out.insert(leases.holder_of(silo).await.ok()??.holder);
            }
            Some(out)
        },
    )
    .await?;
    bus.drain().await;
    Ok(out)
}
