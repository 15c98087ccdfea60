//! Many senders, each holding its earlier PubAcks while it sends more, with few in-flight
//! permits: every PubAck must still arrive. With the client's own PubAck futures held, this
//! deadlocks (each future keeps a permit until awaited; every sender waits for a permit).

use std::time::Duration;
use tocsin_bus::{Bus, BusConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_holding_pubacks_never_deadlock_on_in_flight_permits() {
    let nats = tocsin_testkit::NatsServer::start().expect("nats-server");
    let cfg = BusConfig {
        url: nats.url(),
        prefix: tocsin_testkit::unique_prefix("inflight"),
        silo_count: 1,
        max_ack_inflight: 8,
        ..Default::default()
    };
    let bus = Bus::connect(&cfg, "test").await.unwrap();
    bus.ensure_streams().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..32 {
        let bus = bus.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..4 {
                let subject = bus.subjects().history(0, &format!("u{t}"));
                let ack = bus
                    .send(
                        subject,
                        &format!("m{t}-{i}"),
                        bytes::Bytes::from_static(b"{}"),
                    )
                    .await
                    .expect("sent");
                acks.push(ack);
                tokio::task::yield_now().await;
            }
            for a in acks {
                a.await.expect("stored");
            }
        }));
    }
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every sender finished: no deadlock on in-flight permits");
    assert!(done.iter().all(Result::is_ok));
}
