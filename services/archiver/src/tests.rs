//! The archiver's own tests against a real nats-server: crashes between writing a roll's
//! files and acking its events, whole and half-written envelopes.

use super::*;
use tocsin_model::EventKind;

/// Run the archiver with these configurations until the token is cancelled.
fn start(
    bus: BusConfig,
    archiver: &ArchiverConfig,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), ServiceError>>,
) {
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run(
        Config {
            bus,
            archiver: archiver.clone(),
        },
        shutdown.clone(),
    ));
    (shutdown, task)
}

/// Wait until the archiver consumer `c` has acked everything up to `seq`, then stop the
/// archiver `task`.
async fn acked_then_stop(
    c: &jetstream::consumer::Consumer<jetstream::consumer::pull::Config>,
    seq: u64,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServiceError>>,
) {
    tocsin_testkit::wait_for(Duration::from_secs(20), "every event acked", || {
        let mut c = c.clone();
        async move {
            let i = c.info().await.ok()?;
            (i.ack_floor.stream_sequence == seq && i.num_ack_pending == 0).then_some(())
        }
    })
    .await
    .unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
}

/// The stream sequences of every row in the archive, in order.
async fn archived_seqs(archive: &Archive) -> Vec<u64> {
    let mut seqs = Vec::new();
    for f in archive.list().await.unwrap() {
        seqs.extend(table::read_seqs(archive.get(&f.relative).await.unwrap()).unwrap());
    }
    seqs.sort_unstable();
    seqs
}

/// `n` routed events, numbered from 0.
fn routed(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| Event::new(EventKind::Routed, &[&i.to_string()], tocsin_model::now_ms()))
        .collect()
}

/// A nats-server, an archive directory, and a bus and archiver configured for them.
async fn setup(
    name: &str,
) -> (
    tocsin_testkit::NatsServer,
    tempfile::TempDir,
    BusConfig,
    ArchiverConfig,
    Bus,
) {
    let nats = tocsin_testkit::NatsServer::start().expect("nats-server");
    let dir = tempfile::tempdir().unwrap();
    let bus_cfg = BusConfig {
        url: nats.url(),
        prefix: tocsin_testkit::unique_prefix(name),
        silo_count: 1,
        ack_wait_secs: 1,
        ..Default::default()
    };
    let cfg = ArchiverConfig {
        target: dir.path().display().to_string(),
        roll_max_age_secs: 1,
        ops_listen: String::new(),
        ..Default::default()
    };
    let bus = Bus::connect(&bus_cfg, "test").await.unwrap();
    bus.ensure_streams().await.unwrap();
    (nats, dir, bus_cfg, cfg, bus)
}

/// An envelope whose events fall into two hours is written as two files; a crash between
/// the two leaves it half archived. After a restart only the other half is written.
#[tokio::test]
async fn an_envelope_half_archived_before_a_crash_is_completed_not_repeated() {
    let (_nats, _dir, bus_cfg, cfg, bus) = setup("archiver-half").await;
    // two events in one hour, two in the next
    let hour = 3_600_000;
    let base = (tocsin_model::now_ms() / hour - 2) * hour;
    let events: Vec<Event> = (0..4)
        .map(|i| {
            let at = base + hour - 2 + i;
            let mut e = Event::new(EventKind::Routed, &[&i.to_string()], at);
            e.service = "test".into();
            e
        })
        .collect();
    let payloads: Vec<(String, Bytes)> = events
        .iter()
        .map(|e| (e.id.clone(), tocsin_bus::encode(e).unwrap()))
        .collect();
    let envelope =
        tocsin_bus::envelope::encode(payloads.iter().map(|(id, p)| (id.as_str(), &p[..])));
    bus.publish(bus.subjects().events_envelope(), "env-1", envelope)
        .await
        .unwrap();
    // the first life wrote the first hour's file and died
    let archive = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let first: Vec<(u64, &Event)> = events[..2].iter().map(|e| (1, e)).collect();
    write_rows(&archive, &first).await.unwrap();
    let (shutdown, task) = start(bus_cfg, &cfg);
    let c = consumer(&bus, &cfg).await.unwrap();
    acked_then_stop(&c, 1, shutdown, task).await;
    let mut rows = Vec::new();
    for f in archive.list().await.unwrap() {
        rows.extend(table::read_seq_ids(archive.get(&f.relative).await.unwrap()).unwrap());
    }
    rows.sort();
    let mut expected: Vec<(u64, String)> = events.iter().map(|e| (1, e.id.clone())).collect();
    expected.sort();
    assert_eq!(rows, expected, "each event of the envelope once");
}

/// The window no kill in an integration test reliably hits: the files of a roll are
/// durable, its events are not yet acked, and the archiver dies. After a restart the
/// events come back and are acked without being written again.
#[tokio::test]
async fn files_written_but_not_acked_before_a_crash_are_not_written_twice() {
    let (_nats, _dir, bus_cfg, cfg, bus) = setup("archiver-crash").await;
    let events = routed(100);
    bus.publish_events(events, "test").await.unwrap();

    // the first life: pull everything, write the file, die before acking
    let c = consumer(&bus, &cfg).await.unwrap();
    let mut pull = tocsin_bus::Pull::new(c.clone(), 100, "test");
    let archive = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let mut roll = Roll::new(archive.clone(), BTreeMap::new());
    while roll.len() < 100 {
        let m = tokio::time::timeout(Duration::from_secs(10), pull.next())
            .await
            .expect("events");
        roll.take(&bus, m).await;
    }
    roll.write_files().await.unwrap();
    drop(roll);
    drop(pull);
    let files = archive.list().await.unwrap();
    assert_eq!(files.len(), 1);

    // the second life
    let (shutdown, task) = start(bus_cfg, &cfg);
    // new events keep coming, so the roll that takes the redelivered events back is not
    // the one that was lost: written again, they would be in two files
    for i in 100..200 {
        let e = Event::new(EventKind::Routed, &[&i.to_string()], tocsin_model::now_ms());
        bus.publish_events(vec![e], "test").await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    acked_then_stop(&c, 200, shutdown, task).await;
    let now = archive.list().await.unwrap();
    assert_eq!(
        now[0], files[0],
        "the first file is as the first life left it"
    );
    let seqs = archived_seqs(&archive).await;
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "each event once");
}

/// The archive on an S3-compatible server (moto, speaking the S3 REST API with SigV4 on
/// loopback): the archiver writes there and the report reads it back, exactly.
#[tokio::test]
async fn the_archive_on_an_s3_compatible_store_is_written_and_reported() {
    let s3 = tocsin_testkit::S3Server::start().expect("moto_server");
    s3.create_bucket("tocsin-archive").unwrap();
    let nats = tocsin_testkit::NatsServer::start().expect("nats-server");
    let bus_cfg = BusConfig {
        url: nats.url(),
        prefix: tocsin_testkit::unique_prefix("archiver-s3"),
        silo_count: 1,
        ack_wait_secs: 1,
        ..Default::default()
    };
    let cfg = ArchiverConfig {
        target: "s3://tocsin-archive/prod/events".into(),
        s3: S3Options {
            endpoint: s3.endpoint(),
            region: "us-east-1".into(),
            allow_http: true,
            access_key_id: "test-key".into(),
            secret_access_key: "test-secret".into(),
        },
        roll_max_age_secs: 1,
        ops_listen: String::new(),
        ..Default::default()
    };
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let bus = Bus::connect(&bus_cfg, "test").await.unwrap();
    bus.ensure_streams().await.unwrap();
    let now = tocsin_model::now_ms();
    let user = tocsin_model::UserId::parse("ann").unwrap();
    let mut events = Vec::new();
    for i in 0..30 {
        let n = tocsin_model::NotificationId(format!("n{i}"));
        events.push(
            Event::new(EventKind::Routed, &[n.as_str()], now)
                .user(&user)
                .notification(&n),
        );
        events.push(
            Event::new(EventKind::Delivered, &[n.as_str(), "d"], now + 50)
                .user(&user)
                .notification(&n)
                .channel(Some(tocsin_model::Channel::Email))
                .since(now),
        );
    }
    bus.publish_events(events, "test").await.unwrap();
    let (shutdown, task) = start(bus_cfg, &cfg);
    let archive = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let report = tocsin_testkit::wait_for(Duration::from_secs(20), "the report", || async {
        let r = analytics::report(&archive, &analytics::Options::default())
            .await
            .ok()?;
        (r.events == 60).then_some(r)
    })
    .await
    .unwrap();
    shutdown.cancel();
    task.await.unwrap().unwrap();
    let all = report.rows.iter().find(|r| r.channel == "all").unwrap();
    let email = report.rows.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!((all.routed, all.delivered, email.delivered), (30, 30, 30));
    assert_eq!(email.delivery_p50_ms, Some(50));
    let listed = archive.list().await.unwrap();
    assert!(
        listed.iter().all(|f| f.name.is_some()),
        "names relative to the prefix: {listed:?}"
    );
}

/// A roll written on its own task that fails is held again — its events counted once, none
/// left marked as being written — and written whole with what came since; one that succeeds
/// is acked and remembered as written.
#[tokio::test]
async fn a_roll_that_fails_to_write_is_held_again_and_written_with_the_next() {
    let (_nats, _dir, _bus_cfg, cfg, bus) = setup("archiver-retry").await;
    let events = routed(20);
    bus.publish_events(events, "test").await.unwrap();
    let c = consumer(&bus, &cfg).await.unwrap();
    let mut pull = tocsin_bus::Pull::new(c.clone(), 20, "test");
    // an archive under a regular file cannot be written, even by root
    let elsewhere = tempfile::tempdir().unwrap();
    let blocked = elsewhere.path().join("not-a-directory");
    std::fs::write(&blocked, b"").unwrap();
    let bad = Archive::open(&blocked.join("archive").display().to_string(), &cfg.s3).unwrap();
    let good = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let mut roll = Roll::new(bad.clone(), BTreeMap::new());
    let mut take = async |roll: &mut Roll, n: usize| {
        for _ in 0..n {
            let m = tokio::time::timeout(Duration::from_secs(10), pull.next())
                .await
                .expect("events");
            roll.take(&bus, m).await;
        }
    };
    take(&mut roll, 12).await;
    let sealed = roll.seal();
    assert_eq!((roll.len(), roll.in_flight.len()), (0, 12));
    take(&mut roll, 8).await;
    let (sealed, result) = sealed.write(bad).await;
    assert!(result.is_err(), "the blocked archive is not writable");
    roll.restore(sealed);
    assert_eq!((roll.len(), roll.in_flight.len()), (20, 0));
    let sealed = roll.seal();
    let (sealed, result) = sealed.write(good.clone()).await;
    result.unwrap();
    roll.acked(sealed).await;
    assert!(roll.in_flight.is_empty() && roll.is_empty());
    assert_eq!(roll.written.len(), 20);
    let files = good.list().await.unwrap();
    let mut seqs = Vec::new();
    for f in &files {
        let bytes = good.get(&f.relative).await.unwrap();
        seqs.extend(
            table::read_seq_ids(bytes)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s),
        );
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "every event once");
    tocsin_testkit::wait_for(Duration::from_secs(10), "every event acked", || {
        let mut c = c.clone();
        async move {
            let i = c.info().await.ok()?;
            (i.ack_floor.stream_sequence == 20).then_some(())
        }
    })
    .await
    .unwrap();
}

/// An event that cannot be decoded is set aside as a dead letter, and the acknowledgement by
/// position passes it: the events after it are acked, and it is not archived.
#[tokio::test]
async fn an_event_that_cannot_be_decoded_is_dead_lettered_and_acked_past() {
    let (_nats, _dir, bus_cfg, cfg, bus) = setup("archiver-garbage").await;
    let event = |i: usize| Event::new(EventKind::Routed, &[&i.to_string()], tocsin_model::now_ms());
    bus.publish_events(vec![event(1)], "test").await.unwrap();
    let (subject, _, _) = bus.event_output(event(2), "test").unwrap();
    bus.jetstream()
        .publish(subject, "{not an event".into())
        .await
        .unwrap()
        .await
        .unwrap();
    bus.publish_events(vec![event(3)], "test").await.unwrap();

    let c = consumer(&bus, &cfg).await.unwrap();
    let (shutdown, task) = start(bus_cfg, &cfg);
    acked_then_stop(&c, 3, shutdown, task).await;
    let archive = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let seqs = archived_seqs(&archive).await;
    assert_eq!(seqs, vec![1, 3]);
    let dead = bus.dead_letters(0, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].original_seq, 2);
    assert!(dead[0].reason.contains("event"), "{}", dead[0].reason);
    let info = c.clone().info().await.unwrap().clone();
    assert_eq!(
        info.config.ack_policy,
        jetstream::consumer::AckPolicy::All,
        "acknowledged by position"
    );
}

/// A consumer left by an earlier release (one ack per message), with a message delivered
/// and not acked, is made again from its ack floor: what was acked is not archived again,
/// what was not is archived once.
#[tokio::test]
async fn a_consumer_acked_per_message_is_made_again_from_its_ack_floor() {
    let (_nats, _dir, bus_cfg, cfg, bus) = setup("archiver-upgrade").await;
    for e in routed(3) {
        bus.publish_events(vec![e], "test").await.unwrap();
    }
    // the earlier release's consumer: the first event archived and acked, the second
    // delivered and never acked
    let old = bus
        .pull_consumer_with(
            StreamKind::Events,
            "archiver",
            None,
            100,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let mut pull = tocsin_bus::Pull::new(old.clone(), 2, "test");
    for i in 0..2 {
        let m = tokio::time::timeout(Duration::from_secs(10), pull.next())
            .await
            .expect("events");
        match i {
            0 => m.ack().await.unwrap(),
            _ => m.leave(),
        }
    }
    drop(pull);
    bus.client().flush().await.unwrap();

    let (shutdown, task) = start(bus_cfg, &cfg);
    // the old consumer would give the second event back only after its ack_wait (600 s)
    acked_then_stop(&old, 3, shutdown, task).await;
    let archive = Archive::open(&cfg.target, &cfg.s3).unwrap();
    let seqs = archived_seqs(&archive).await;
    assert_eq!(seqs, vec![2, 3]);
}
