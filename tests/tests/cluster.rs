//! Scale-out on a 3-node JetStream cluster on loopback (R3 streams and buckets): router and
//! history replicas own silos by the Helm chart's ordinal rule; routers are scaled 2 → 3 → 2
//! the way a Helm upgrade rolls a StatefulSet, one is killed mid-run, and a NATS node is
//! killed and restarted — while notifications keep flowing. Every notification is then
//! delivered once and in history once, checked by id.

mod common;

use anyhow::{Context, Result};
use common::{Harness, Recorder, Svc};
use reqwest::Method;
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tocsin_testkit::wait_for;

const SILOS: u32 = 6;

/// The notification ids the webhook receiver got, each with how often.
fn delivered(hooks: &Recorder, users: &[User]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for u in users {
        for r in hooks.requests(&u.path) {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}

#[derive(Clone)]
struct User {
    token: String,
    path: String,
}

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
    let hooks = Recorder::start().await?;

    // users until every silo has two
    let mut users = Vec::new();
    let mut per_silo: HashMap<u32, usize> = HashMap::new();
    for i in 0..200 {
        if per_silo.len() == SILOS as usize && per_silo.values().all(|n| *n >= 2) {
            break;
        }
        let v = h.create_user_json(&format!("u{i}")).await?;
        let id = v["user_id"].as_str().context("user_id")?;
        let silo = tocsin_bus::silo_of(id, SILOS);
        if per_silo.get(&silo).copied().unwrap_or(0) >= 2 {
            continue;
        }
        *per_silo.entry(silo).or_insert(0) += 1;
        let user = User {
            token: v["token"].as_str().context("token")?.to_owned(),
            path: format!("/u{i}"),
        };
        let (status, v) = h
            .call(
                Method::POST,
                "/v1/destinations",
                Some(&user.token),
                Some(json!({"channel": "webhook", "address": hooks.url(&user.path)})),
            )
            .await?;
        anyhow::ensure!(status == 201, "destination: {status} {v}");
        users.push(user);
    }
    assert_eq!(users.len(), 2 * SILOS as usize);

    // a steady stream of notifications, round-robin over the users, each retried with its
    // idempotency key until accepted (as a client would through the outages)
    let published: Arc<std::sync::Mutex<Vec<(usize, String)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (users, published, done) = (users.clone(), published.clone(), done.clone());
        let (http, api) = (h.http.clone(), h.api_url.clone());
        tokio::spawn(async move {
            let mut i = 0usize;
            while !done.load(Ordering::Relaxed) {
                let u = i % users.len();
                let body = json!({"title": format!("n{i}"), "idempotency_key": format!("n{i}")});
                let id = wait_for(Duration::from_secs(60), "an accepted publish", || async {
                    let r = http
                        .post(format!("{api}/v1/publish"))
                        .bearer_auth(&users[u].token)
                        .json(&body)
                        .send()
                        .await
                        .ok()?;
                    if r.status() != 202 {
                        return None;
                    }
                    let v: serde_json::Value = r.json().await.ok()?;
                    Some(v["id"].as_str()?.to_owned())
                })
                .await
                .expect("the API accepts every publish in the end");
                published.lock().unwrap().push((u, id));
                i += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        })
    };
    let count = || published.lock().unwrap().len();
    let settle = |n: usize| {
        let published = published.clone();
        async move {
            let start = published.lock().unwrap().len();
            wait_for(Duration::from_secs(60), "more notifications", || async {
                (published.lock().unwrap().len() >= start + n).then_some(())
            })
            .await
        }
    };
    settle(100).await?;

    // 2 → 3, as `helm upgrade --set router.replicas=3` rolls it: the new pod first (its
    // silos are still held by the old pods, it waits), then each old pod restarts with the
    // new count, highest ordinal first
    h.router_replicas = 3;
    h.start_service(Svc::RouterReplica(2));
    settle(50).await?;
    for i in [1, 0] {
        h.stop(Svc::RouterReplica(i)).await;
        h.start_service(Svc::RouterReplica(i));
        settle(50).await?;
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
    settle(100).await?;
    h.start_service(Svc::RouterReplica(1));
    settle(50).await?;

    // a NATS node dies mid-run and comes back (R3: the streams keep a quorum)
    h.cluster.as_mut().context("cluster")?.kill(1);
    settle(100).await?;
    h.cluster.as_mut().context("cluster")?.restart(1)?;
    settle(50).await?;

    // 3 → 2: the highest pod goes, the others restart with the new count
    h.router_replicas = 2;
    h.stop(Svc::RouterReplica(2)).await;
    for i in [1, 0] {
        h.stop(Svc::RouterReplica(i)).await;
        h.start_service(Svc::RouterReplica(i));
        settle(50).await?;
    }
    settle(100).await?;
    done.store(true, Ordering::Relaxed);
    publisher.await?;
    let holders = lease_holders(&h).await?;
    assert_eq!(holders.len(), 2, "two routers hold the silos: {holders:?}");

    let published = published.lock().unwrap().clone();
    let all: HashSet<String> = published.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(
        all.len(),
        published.len(),
        "every publish is its own notification"
    );
    eprintln!(
        "{} notifications published across the moves (count {})",
        all.len(),
        count()
    );
    // delivered once each, by id
    let got = wait_for(
        Duration::from_secs(90),
        "every webhook delivery",
        || async {
            let d = delivered(&hooks, &users);
            all.iter().all(|id| d.contains_key(id)).then_some(d)
        },
    )
    .await
    .with_context(|| {
        let d = delivered(&hooks, &users);
        let missing = all.iter().filter(|id| !d.contains_key(*id)).count();
        format!("{missing} of {} not delivered", all.len())
    })?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_later = delivered(&hooks, &users);
    let twice: Vec<_> = got_later.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(got.len(), got_later.len());
    assert!(got_later.keys().all(|id| all.contains(id)));
    // and in history once each, user by user
    for (u, user) in users.iter().enumerate() {
        let ids: HashSet<String> = published
            .iter()
            .filter(|(p, _)| *p == u)
            .map(|(_, id)| id.clone())
            .collect();
        h.assert_history_is_exactly(&user.token, &ids).await?;
    }
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
