//! `tocsin-bench all --short` runs every benchmark end to end, accounts for every
//! notification, message and event, and prints its one table (CI's smoke run).

use std::time::Duration;
use tocsin_bench::all::{AllOptions, run};

/// As the bench binary: tocsin's allocator, counting each thread's allocations.
#[global_allocator]
static GLOBAL: tocsin_runtime::thread_meter::CountingAllocator =
    tocsin_runtime::thread_meter::CountingAllocator;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_short_mode_measures_every_part_and_prints_one_table() {
    tocsin_runtime::install_crypto();
    // the memory figure runs `tocsin-router` as its own process: `cargo test` builds only
    // the test harness of that package, so build the binary beside this test's profile
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "tocsin-router"])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "cargo build -p tocsin-router failed");
    let opts = AllOptions::short(Duration::from_secs(120));
    let report = run(opts.clone()).await.expect("bench-all runs");
    let table = report.table();
    println!("{table}");

    // the pipeline: every notification stored and delivered, in both runs
    assert_eq!(report.steady.len(), opts.steady.len());
    for r in std::iter::once(&report.burst).chain(&report.steady) {
        let floor = [&r.floor.stored, &r.floor.delivered];
        for f in [&r.baseline, &r.pipeline, &r.delivered]
            .into_iter()
            .chain(floor)
        {
            assert_eq!(f.count, r.options.notifications);
            assert!(
                f.per_sec > 0.0 && f.p50_ms > 0.0 && f.p99_ms >= f.p50_ms && f.p999_ms >= f.p99_ms,
                "{f:?}"
            );
        }
    }
    // feeds: after the first round every fetch is conditional and answered 304
    let feeds = &report.feeds;
    assert!(feeds.baseline_per_sec > 0.0 && feeds.ingestor_per_sec > 0.0);
    assert!(feeds.not_modified > 0.9, "{}", feeds.not_modified);
    let fan = feeds.fanout.as_ref().expect("asked for");
    assert_eq!(fan.subscribers, opts.feeds.fanout);
    assert!(fan.secs > 0.0);
    // the ingestor hands the item to the silos in bulk: well under one silo message per
    // subscriber, while every subscriber's record is written
    let silo = |w: &tocsin_bench::writes::WritesPer| {
        w.by_kind
            .iter()
            .find(|(k, _)| k == "silo")
            .map_or(0.0, |(_, w)| *w)
    };
    assert!(
        silo(&fan.writes) > 0.0 && silo(&fan.writes) < 1.0,
        "{:?}",
        fan.writes
    );
    // timers, instant messages, memory
    let reach = &report.reach;
    assert_eq!(reach.timers.count, opts.reach.users);
    assert!(reach.timers.per_sec > 0.0 && reach.hold_secs > 0.0);
    // the second steps fired with the router running, the third ones after its restart
    assert_eq!(reach.timers_on_time.count, opts.reach.users);
    assert!(reach.restart_ms >= 0.0);
    let im = reach
        .im
        .as_ref()
        .expect("prosody is installed by make tools");
    assert_eq!(im.count, opts.reach.im_messages);
    assert!(im.p50_ms > 0.0);
    let reg = reach
        .registered
        .as_ref()
        .expect("asked for")
        .as_ref()
        .expect("registered users measured");
    assert_eq!(
        (reg.registered, reg.active),
        (opts.reach.registered, opts.reach.active)
    );
    assert!(reg.idle_rss > 0.0 && reg.active_rss > 0.0 && reg.created_per_sec > 0.0);
    // mail and archive
    assert_eq!(report.mail.ingress.count, opts.mail.messages);
    assert!(report.mail.ingress.per_sec > 0.0 && report.mail.parse_us > 0.0);
    let a = &report.archive;
    assert!(a.baseline_runs.0 > 0.0 && a.baseline_runs.1 > 0.0 && a.archived_per_sec > 0.0);
    assert!(a.files > 0 && a.bytes_per_event > 0.0);
    assert!(a.report_rows > 0 && a.report_secs > 0.0);
    // history's store, and what a notification cost in CPU beside a raw message
    let st = &report.store;
    assert!(st.tocsin.wall_us > 0.0 && st.bare.wall_us > 0.0, "{st:?}");
    // tocsin's own work: every stage measured, and more than parsing the message takes
    let w = &report.work;
    for c in [&w.baseline, &w.route, &w.checkpoint, &w.read] {
        assert!(c.micros > 0.0 && c.allocations > 0.0, "{c:?}");
    }
    assert!(w.total().allocations > w.baseline.allocations, "{w:?}");
    assert!(w.output_bytes > 0.0);
    for r in std::iter::once(&report.burst).chain(&report.steady) {
        // every notification is at least its one publish into a silo stream; a raw message is
        // exactly its one publish
        let (raw_w, ours_w) = &r.writes;
        assert!((raw_w.total - 1.0).abs() < 1e-9, "{raw_w:?}");
        assert!(ours_w.total >= 1.0, "{ours_w:?}");
        assert!(
            ours_w.by_kind.iter().any(|(k, w)| k == "silo" && *w >= 1.0),
            "{ours_w:?}"
        );
        // the shape's floor: each notification published once, and its rounds' envelopes
        // (two per round, at most two per notification)
        let fw = &r.floor.writes;
        assert!(fw.total > 1.0 && fw.total <= 3.0, "{fw:?}");
        assert!(
            fw.by_kind
                .iter()
                .any(|(k, w)| k == "floor_silo" && *w == 1.0),
            "{fw:?}"
        );
        assert!(r.floor.cpu.is_some_and(|c| c.total_us() > 0.0));
        let (raw, ours) = r.cpu.expect("/proc is readable on Linux");
        assert!(
            raw.total_us() > 0.0 && ours.total_us() > 0.0,
            "{raw:?} {ours:?}"
        );
    }

    // one table, a row per figure, each with its baseline and (where one applies) a ratio
    for row in [
        "publish → delivered (sink), 500 as fast as they go, 4 silos",
        "publish → history, 300 at 300/s offered, 4 silos",
        "one feed item to 300 subscribers",
        "feed polling, 300 feeds",
        "router memory, 2,000 registered",
        "escalations fired, 200 due at once",
        "publish → XMPP client at 20/s",
        "SMTP ingress, 4 senders",
        "archiver: events into durable Parquet",
        "analytics report over 200,000 events",
        "history's store: 1,000 notifications in batches of 40 into 2,000",
        "CPU per notification, burst",
        "the shape's floor (tocsin's hops, none of its work), burst",
        "tocsin's own work on a notification, no bus",
    ] {
        assert!(table.contains(row), "{row:?} missing from\n{table}");
    }
    assert!(!table.contains("not measured"), "{table}");
    // each part's own table still prints its detail
    assert!(report.burst.table().contains("ratio delivered/baseline"));
}
