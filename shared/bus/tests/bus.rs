//! The bus against a real nats-server: publishing never deadlocks on the client's in-flight
//! permits, a pulled message is settled once, through its `Inbound`, many keys of a KV
//! bucket are read in one batched request, and what one instance's outbox rounds finish is
//! known to every instance, running or started later.

use std::time::Duration;
use tocsin_bus::{Bus, BusConfig, Disposition, Pull, StreamKind};

/// A bus of the test's own (one silo) on a fresh nats-server.
async fn bus(name: &str, max_ack_inflight: usize) -> (tocsin_testkit::NatsServer, Bus) {
    let nats = tocsin_testkit::NatsServer::start().expect("nats-server");
    let cfg = BusConfig {
        url: nats.url(),
        prefix: tocsin_testkit::unique_prefix(name),
        silo_count: 1,
        max_ack_inflight,
        ..Default::default()
    };
    let bus = Bus::connect(&cfg, "test").await.unwrap();
    bus.ensure_streams().await.unwrap();
    (nats, bus)
}

/// Many senders, each holding its earlier PubAcks while it sends more, with few in-flight
/// permits: every PubAck must still arrive. With the client's own PubAck futures held, this
/// deadlocks (each future keeps a permit until awaited; every sender waits for a permit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn senders_holding_pubacks_never_deadlock_on_in_flight_permits() {
    let (_nats, bus) = bus("inflight", 8).await;
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

/// Acked, given back (redelivered at once), or dropped unsettled (still pending, redelivered
/// later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_given_back_and_dropped_messages_each_end_as_they_should() {
    let (_nats, bus) = bus("inbound", BusConfig::default().max_ack_inflight).await;
    let payloads = (0..3).map(|i| bytes::Bytes::from(format!("{i}")));
    let (consumer, mut pull) = pulled_history(&bus, payloads, "inbound-test", (10, 1)).await;

    let first = next(&mut pull).await;
    assert_eq!(&first.message().payload[..], b"0");
    first.settle(&bus, Disposition::Ack).await;

    let second = next(&mut pull).await;
    assert_eq!(&second.message().payload[..], b"1");
    second.give_back().await;
    // given back: delivered again at once (not after ack_wait), beside what was already on its way
    let (x, y) = (next(&mut pull).await, next(&mut pull).await);
    let (again, third) = if &x.message().payload[..] == b"1" {
        (x, y)
    } else {
        (y, x)
    };
    assert_eq!(&again.message().payload[..], b"1");
    assert_eq!(again.message().info().unwrap().delivered, 2);
    again.settle(&bus, Disposition::Ack).await;
    assert_eq!(&third.message().payload[..], b"2");
    drop(third); // logged and counted as unsettled; the server still waits for it
    drop(pull);
    let info = tocsin_testkit::wait_for(Duration::from_secs(10), "the acks to land", || {
        let mut c = consumer.clone();
        async move {
            let i = c.info().await.ok()?.clone();
            (i.ack_floor.stream_sequence == 2).then_some(i)
        }
    })
    .await
    .unwrap();
    assert_eq!(
        info.num_ack_pending, 1,
        "the dropped message is still pending"
    );
}

/// `payloads` published in order on one user's history subject (ids `m0`, `m1`, …), and a
/// consumer `name` of them (`max_ack_pending`) with a pull of `batch`.
async fn pulled_history(
    bus: &Bus,
    payloads: impl Iterator<Item = bytes::Bytes>,
    name: &str,
    (max_ack_pending, batch): (i64, usize),
) -> (
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    Pull,
) {
    for (i, payload) in payloads.enumerate() {
        let subject = bus.subjects().history(0, "u1");
        bus.publish(subject, &format!("m{i}"), payload)
            .await
            .unwrap();
    }
    let consumer = bus
        .pull_consumer(StreamKind::History, name, None, max_ack_pending)
        .await
        .unwrap();
    let pull = Pull::new(consumer.clone(), batch, "test");
    (consumer, pull)
}

async fn next(pull: &mut Pull) -> tocsin_bus::Inbound {
    tokio::time::timeout(Duration::from_secs(10), pull.next())
        .await
        .expect("a message")
}

/// A consumer `name` of the delivery stream's webhook jobs, as delivery has one: the jobs'
/// subject and the consumer.
async fn webhook_jobs(
    bus: &Bus,
    name: &str,
) -> (
    String,
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
) {
    let subject = bus.subjects().delivery("webhook");
    let consumer = bus
        .pull_consumer(StreamKind::Delivery, name, Some(subject.clone()), 10)
        .await
        .unwrap();
    (subject, consumer)
}

/// The records of the envelope `msg` brought, each with the subject it came on.
fn records_of(subject: &str, msg: &tocsin_bus::Inbound) -> Vec<(String, String, bytes::Bytes)> {
    tocsin_bus::envelope::records(&msg.message().payload)
        .unwrap()
        .into_iter()
        .map(|r| (subject.to_owned(), r.id, r.payload))
        .collect()
}

/// An outbox turns what many submitters gave it while it was busy into one round: each
/// subject's records in envelopes (every record once, in order), the `first` ones stored and
/// acknowledged before the messages of their own; every receipt answers once the round is
/// durable, and says so when the outbox is gone.
#[tokio::test(flavor = "current_thread")]
async fn an_outbox_round_envelopes_records_and_stores_first_ones_first() {
    use tocsin_bus::{Outbox, Outgoing, envelope};
    let (_nats, bus) = bus("outbox", BusConfig::default().max_ack_inflight).await;
    let (outbox, task) = Outbox::spawn(bus.clone(), "test".into());
    let s = bus.subjects();
    // submitted without yielding: the outbox takes them all as one round
    let receipts: Vec<_> = (0..50)
        .map(|t| {
            outbox.submit(vec![
                Outgoing::record(
                    s.history_envelope(0),
                    format!("h{t}"),
                    format!("{{\"t\":{t}}}").into(),
                )
                .first(),
                Outgoing::alone(s.history(0, &format!("u{t}")), format!("a{t}"), "{}".into()),
                Outgoing::record(s.events_envelope(), format!("e{t}"), "{}".into()),
            ])
        })
        .collect();
    for r in receipts {
        r.await.expect("stored");
    }
    let name = s.stream(StreamKind::History);
    let mut stream = bus.jetstream().get_stream(&name).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(last, 51, "one envelope and fifty messages of their own");
    let first = stream.get_raw_message(1).await.unwrap();
    assert_eq!(first.subject.as_str(), s.history_envelope(0));
    let ids: Vec<String> = envelope::records(&first.payload)
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, (0..50).map(|t| format!("h{t}")).collect::<Vec<_>>());
    for seq in 2..=51 {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(m.subject.as_str(), s.history(0, &format!("u{}", seq - 2)));
    }
    let events = bus
        .jetstream()
        .get_stream(s.stream(StreamKind::Events))
        .await
        .unwrap()
        .get_raw_message(1)
        .await
        .unwrap();
    assert_eq!(envelope::records(&events.payload).unwrap().len(), 50);
    drop(task);
    tokio::task::yield_now().await;
    let gone = outbox.submit(Vec::new()).await.unwrap_err().to_string();
    assert!(gone.contains("outbox stopped"), "{gone}");
}

/// An output too large for any bus message is refused to its submitter alone: a round with
/// others' outputs is not failed by it.
#[tokio::test(flavor = "current_thread")]
async fn an_oversized_output_fails_its_submitter_and_no_one_else() {
    use tocsin_bus::{Outbox, Outgoing};
    let (_nats, bus) = bus("outbox-big", BusConfig::default().max_ack_inflight).await;
    let (outbox, _task) = Outbox::spawn(bus.clone(), "test".into());
    let s = bus.subjects();
    let big = bytes::Bytes::from(vec![b'x'; 1024 * 1024]);
    let bad = outbox.submit(vec![Outgoing::record(
        s.history_envelope(0),
        "big".into(),
        big,
    )]);
    let good = outbox.submit(vec![Outgoing::record(
        s.history_envelope(0),
        "small".into(),
        "{}".into(),
    )]);
    let e = bad.await.unwrap_err().to_string();
    assert!(e.contains("big") && e.contains("1048576 bytes"), "{e}");
    good.await.expect("the other submitter's output is stored");
}

/// A publish window on a runtime of one thread (nothing runs unless the window polls it):
/// more publishes than the window holds all end stored, and one that cannot be (too large
/// for the server) is the error its flush reports, without holding up the others.
#[tokio::test(flavor = "current_thread")]
async fn a_publish_window_stores_everything_and_reports_the_first_failure() {
    let (_nats, bus) = bus("window", BusConfig::default().max_ack_inflight).await;
    let s = bus.subjects();
    let mut window = bus.window(4);
    for i in 0..50 {
        window
            .push(s.history(0, &format!("u{i}")), format!("w{i}"), "{}".into())
            .await;
        if i == 20 {
            window
                .push(
                    s.history(0, "big"),
                    "too-big".into(),
                    bytes::Bytes::from(vec![b'x'; 2 * 1024 * 1024]),
                )
                .await;
        }
    }
    let e = tokio::time::timeout(Duration::from_secs(30), window.flush())
        .await
        .expect("the window finished")
        .unwrap_err()
        .to_string();
    assert!(e.contains(".big"), "{e}");
    let mut stream = bus
        .jetstream()
        .get_stream(s.stream(StreamKind::History))
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 50);
}

/// The latest entries of many keys in batched requests: values and revisions as written, a
/// deleted key without a value, a key never written absent; more keys than one request takes.
#[tokio::test(flavor = "current_thread")]
async fn many_keys_are_read_at_once_with_their_revisions() {
    let (_nats, bus) = bus("kvmany", 64).await;
    let kv = bus.kv("avatars").await.unwrap();
    let n = tocsin_bus::KV_LATEST_MAX_KEYS + 10;
    let mut revisions = Vec::new();
    for i in 0..n {
        let rev = kv
            .put(format!("u{i}"), format!("v{i}").into())
            .await
            .unwrap();
        revisions.push(rev);
    }
    let rewritten = kv.put("u3", "again".into()).await.unwrap();
    kv.delete("u5").await.unwrap();
    let mut keys: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    keys.push("never".into());
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let got = bus
        .kv_latest(&kv, &keys, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(got.len(), n, "every written key, not the one never written");
    let by_key: std::collections::HashMap<&str, &tocsin_bus::Latest> =
        got.iter().map(|l| (l.key.as_str(), l)).collect();
    assert!(!by_key.contains_key("never"));
    assert_eq!(by_key["u3"].value.as_deref(), Some(&b"again"[..]));
    assert_eq!(by_key["u3"].revision, rewritten);
    assert_eq!(by_key["u5"].value, None, "deleted");
    for i in [0, 1, n - 1] {
        let l = by_key[format!("u{i}").as_str()];
        assert_eq!(l.value.as_deref(), Some(format!("v{i}").as_bytes()));
        assert_eq!(l.revision, revisions[i]);
    }
    let none = bus
        .kv_latest(&kv, &["nobody", "no-one"], Duration::from_secs(10))
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// An envelope of jobs whose holder settled some of them and then went away is delivered again
/// with only the others: the holder's outbox round wrote what it had settled
/// (`ProgressLog`), and whoever takes the envelope next reads it.
#[tokio::test(flavor = "current_thread")]
async fn an_envelope_delivered_again_hands_out_only_what_was_not_settled() {
    use std::sync::Arc;
    use tocsin_bus::handed::{self, Handed, Progress};
    use tocsin_bus::{Outbox, ProgressLog, envelope};
    let (_nats, bus) = bus("progress", BusConfig::default().max_ack_inflight).await;
    let (subject, consumer) = webhook_jobs(&bus, "progress-test").await;
    let records: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| (format!("n{i}:d1"), format!("{{\"job\":{i}}}").into_bytes()))
        .collect();
    let payload = envelope::encode(records.iter().map(|(id, p)| (id.as_str(), p.as_slice())));
    bus.publish(subject.clone(), "env-1", payload)
        .await
        .unwrap();
    let mut pull = Pull::new(consumer.clone(), 1, "test");
    let store = bus.kv("progress").await.unwrap();
    let parts_of = |msg: &tocsin_bus::Inbound| records_of(&subject, msg);

    // the first holder settles jobs 0 and 2 through its outbox, then is gone
    let first = next(&mut pull).await;
    let raw = first.message().clone();
    let seq = raw.info().unwrap().stream_sequence;
    let log = Arc::new(ProgressLog::open(store.clone()).await);
    let records_now = parts_of(&first);
    let progress = Progress {
        log: log.clone(),
        done: Vec::new(),
    };
    let parts = handed::split(&bus, first, records_now, Some(progress))
        .await
        .unwrap();
    assert_eq!(parts.len(), 4);
    let (outbox, _task) = Outbox::spawn(bus.clone(), "test".into());
    let mut kept = Vec::new();
    for (i, part) in parts.into_iter().enumerate() {
        match i {
            0 | 2 => {
                outbox
                    .submit_then_ack(&bus, Vec::new(), Handed::Part(part))
                    .await
            }
            _ => kept.push(part),
        }
    }
    // as a crash would: the envelope comes back (here at once), the rest never settled
    raw.ack_with(async_nats::jetstream::AckKind::Nak(None))
        .await
        .unwrap();
    drop(kept);

    // the next holder, started after: only jobs 1 and 3
    let again = next(&mut pull).await;
    assert_eq!(again.message().info().unwrap().delivered, 2);
    let next_log = Arc::new(ProgressLog::open(store).await);
    let done = next_log.earlier(seq).await;
    assert_eq!(done, vec![0, 2]);
    let records_again = parts_of(&again);
    let progress = Progress {
        log: next_log,
        done,
    };
    let parts: Vec<Handed> = handed::split(&bus, again, records_again, Some(progress))
        .await
        .unwrap()
        .into_iter()
        .map(Handed::Part)
        .collect();
    let payloads: Vec<String> = parts
        .iter()
        .map(|p| String::from_utf8(p.payload().to_vec()).unwrap())
        .collect();
    assert_eq!(payloads, ["{\"job\":1}", "{\"job\":3}"]);
    for part in parts {
        part.settle(&bus, Disposition::Ack).await;
    }
    tocsin_testkit::wait_for(Duration::from_secs(10), "the envelope to be acked", || {
        let mut c = consumer.clone();
        async move {
            let i = c.info().await.ok()?.clone();
            (i.ack_floor.stream_sequence == seq && i.num_ack_pending == 0).then_some(())
        }
    })
    .await
    .unwrap();
}

/// The records an outbox round finishes are logged once its outputs are durable and before its
/// submitter goes on: an instance started later knows them when it opens, one already running
/// learns them as they are written, and a record never finished is known to none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_round_finished_are_known_to_every_instance() {
    use std::sync::Arc;
    use tocsin_bus::{DoneLog, Outbox};
    let (_nats, bus) = bus("donelog", BusConfig::default().max_ack_inflight).await;
    let store = bus.kv("sent").await.unwrap();
    let running = DoneLog::open(store.clone()).await;
    let log = Arc::new(DoneLog::open(store.clone()).await);
    let (outbox, _task) = Outbox::spawn_with(bus.clone(), "test".into(), Some(log.clone()));
    let (subject, consumer) = webhook_jobs(&bus, "done-test").await;
    for id in ["n1:d1", "n2:d1"] {
        bus.publish(subject.clone(), id, bytes::Bytes::from_static(b"{}"))
            .await
            .unwrap();
    }
    let mut pull = Pull::new(consumer, 2, "test");
    // n1 is finished through the outbox; n2 is taken and dropped unfinished
    let first = next(&mut pull).await;
    let report = tocsin_bus::Outgoing::alone(
        bus.subjects().history(0, "u1"),
        "report-n1".into(),
        bytes::Bytes::from_static(b"{}"),
    );
    outbox
        .submit_done_then_ack(&bus, vec![report], first, "n1:d1".into())
        .await;
    let second = next(&mut pull).await;
    second.leave();
    assert!(log.contains("n1:d1"));
    let later = DoneLog::open(store).await;
    assert!(
        later.contains("n1:d1"),
        "an instance started later knows it"
    );
    assert!(!later.contains("n2:d1") && !log.contains("n2:d1"));
    tocsin_testkit::wait_for(
        Duration::from_secs(10),
        "the running instance to learn it",
        || {
            let known = running.contains("n1:d1");
            async move { known.then_some(()) }
        },
    )
    .await
    .unwrap();
    assert!(!running.contains("n2:d1"));
}

/// An instance keeps following the log through a restart of the nats-server (killed, its store
/// kept): what another instance finishes afterwards still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_of_records_done_is_followed_through_a_server_restart() {
    use tocsin_bus::DoneLog;
    let (mut nats, bus) = bus("donelog-restart", BusConfig::default().max_ack_inflight).await;
    let store = bus.kv("sent").await.unwrap();
    let running = DoneLog::open(store.clone()).await;
    let other = DoneLog::open(store).await;
    other.write(&["before:d1".to_owned()]).await;
    let learn = |id: &'static str| {
        let running = &running;
        tocsin_testkit::wait_for(
            Duration::from_secs(30),
            "the running instance to learn it",
            move || {
                let known = running.contains(id);
                async move { known.then_some(()) }
            },
        )
    };
    learn("before:d1").await.unwrap();
    nats.kill();
    nats.restart().unwrap();
    // written once JetStream is back (a write while the server is down is only logged)
    tocsin_testkit::wait_for(Duration::from_secs(30), "JetStream back", || async {
        bus.kv("sent").await.ok()
    })
    .await
    .unwrap();
    other.write(&["after:d1".to_owned()]).await;
    learn("after:d1").await.unwrap();
}

/// The progress table is written only when what it says changes: an envelope whose jobs are
/// all settled within one outbox round (at low load, each one) never appears in the stored
/// table, so that round writes nothing; one left half done is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_leaves_the_progress_table_as_it_was_writes_nothing() {
    use std::sync::Arc;
    use tocsin_bus::handed::{self, Handed, Progress};
    use tocsin_bus::{Outbox, ProgressLog, envelope};
    let (_nats, bus) = bus("progress-quiet", BusConfig::default().max_ack_inflight).await;
    let (subject, consumer) = webhook_jobs(&bus, "quiet-test").await;
    let mut pull = Pull::new(consumer, 1, "test");
    let store = bus.kv("progress").await.unwrap();
    let log = Arc::new(ProgressLog::open(store.clone()).await);
    let (outbox, _task) = Outbox::spawn(bus.clone(), "test".into());
    let writes = || {
        let mut stream = store.stream.clone();
        async move { stream.info().await.unwrap().state.last_sequence }
    };
    // each envelope: its records as parts, handed out with the log
    let mut parts_of = async |name: &str, jobs: usize| {
        let records: Vec<(String, Vec<u8>)> = (0..jobs)
            .map(|i| (format!("{name}-{i}:d1"), b"{}".to_vec()))
            .collect();
        let payload = envelope::encode(records.iter().map(|(id, p)| (id.as_str(), p.as_slice())));
        bus.publish(subject.clone(), name, payload).await.unwrap();
        let msg = next(&mut pull).await;
        let recs = records_of(&subject, &msg);
        let progress = Progress {
            log: log.clone(),
            done: Vec::new(),
        };
        handed::split(&bus, msg, recs, Some(progress))
            .await
            .unwrap()
    };
    let before = writes().await;
    for name in ["one", "two", "three"] {
        for part in parts_of(name, 1).await {
            outbox
                .submit_then_ack(&bus, Vec::new(), Handed::Part(part))
                .await;
        }
    }
    assert_eq!(
        writes().await,
        before,
        "envelopes done within their rounds wrote a table"
    );
    // half of an envelope settled: that is worth writing
    let mut parts = parts_of("half", 2).await;
    let _kept = parts.pop();
    outbox
        .submit_then_ack(&bus, Vec::new(), Handed::Part(parts.remove(0)))
        .await;
    assert_eq!(
        writes().await,
        before + 1,
        "a half-done envelope's table was not written"
    );
}

/// The silo count is recorded in the silo streams: a service configured with another number
/// for the same installation refuses to start (naming the number to set) instead of placing
/// users in other silos than their messages and history are in; a stream made before the
/// number was recorded is given it by its owner, the router.
#[tokio::test(flavor = "current_thread")]
async fn a_service_configured_with_another_silo_count_refuses_to_start() {
    let nats = tocsin_testkit::NatsServer::start().expect("nats-server");
    let prefix = tocsin_testkit::unique_prefix("silocount");
    let cfg = |silo_count| BusConfig {
        url: nats.url(),
        prefix: prefix.clone(),
        silo_count,
        ..Default::default()
    };
    let router = Bus::connect(&cfg(4), "router").await.unwrap();
    router.ensure_streams().await.unwrap();
    // every service, owner of the silo streams or not, checks
    for (count, service) in [(2, "history"), (8, "router"), (1, "api")] {
        let other = Bus::connect(&cfg(count), service).await.unwrap();
        let e = other.ensure_streams().await.unwrap_err().to_string();
        assert!(
            e.contains(&format!("bus.silo_count is {count}"))
                && e.contains("made with 4 silos")
                && e.contains("bus.silo_count = 4"),
            "{e}"
        );
    }
    // the same number again: fine, for any service
    let history = Bus::connect(&cfg(4), "history").await.unwrap();
    history.ensure_streams().await.unwrap();

    // a silo stream as an earlier release made it, with no number recorded
    let js = async_nats::jetstream::new(router.client().clone());
    let name = router.subjects().stream(StreamKind::Silo(0));
    let mut legacy = router
        .stream_configs()
        .into_iter()
        .find(|c| c.name == name)
        .unwrap();
    legacy.metadata.clear();
    js.update_stream(&legacy).await.unwrap();
    let recorded = |js: async_nats::jetstream::Context, name: String| async move {
        let mut s = js.get_stream(&name).await.unwrap();
        s.info()
            .await
            .unwrap()
            .config
            .metadata
            .get("tocsin_silo_count")
            .cloned()
    };
    assert_eq!(recorded(js.clone(), name.clone()).await, None);
    // another service leaves it as it is; the router records its number
    history.ensure_streams().await.unwrap();
    assert_eq!(recorded(js.clone(), name.clone()).await, None);
    router.ensure_streams().await.unwrap();
    assert_eq!(recorded(js, name).await.as_deref(), Some("4"));
}

/// A pull asks for at most `PULL_BYTES` at once whatever its count: a backlog of large
/// messages (a fan-out's envelopes) is not all taken into memory by one silo's consumer.
#[tokio::test(flavor = "current_thread")]
async fn a_pull_of_large_messages_takes_a_bounded_number_of_bytes() {
    let (_nats, bus) = bus("pullbytes", BusConfig::default().max_ack_inflight).await;
    // forty messages of 900 KiB: 35 MiB waiting
    let size = 900 * 1024;
    let payloads = (0..40).map(|_| bytes::Bytes::from(vec![b'x'; size]));
    let (consumer, mut pull) = pulled_history(&bus, payloads, "bytes-test", (1_000, 256)).await;
    let first = next(&mut pull).await;
    assert_eq!(first.message().payload.len(), size);
    // the pull asked once: wait until the server has answered all of it (its request is
    // spent) or sent everything
    let info = tocsin_testkit::wait_for(Duration::from_secs(10), "the pull's answer", || {
        let mut c = consumer.clone();
        async move {
            let i = c.info().await.ok()?.clone();
            (i.num_waiting == 0 || i.num_pending == 0).then_some(i)
        }
    })
    .await
    .unwrap();
    let most = tocsin_bus::PULL_BYTES / size + 1;
    assert!(
        info.num_ack_pending as usize <= most,
        "{} of 40 messages sent to one pull (at most {most} fit in its bytes)",
        info.num_ack_pending
    );
    // and the rest still comes, as it is taken
    first.settle(&bus, Disposition::Ack).await;
    for _ in 1..40 {
        next(&mut pull).await.settle(&bus, Disposition::Ack).await;
    }
}
