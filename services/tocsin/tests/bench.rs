//! The benchmark's short mode runs end to end and accounts for every notification.

use std::time::Duration;
use tocsin::bench::{BenchOptions, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_short_mode_measures_every_path() {
    tocsin_runtime::install_crypto();
    let report = run(BenchOptions {
        notifications: 500,
        users: 50,
        silo_count: 4,
        window: 64,
        rate: 0,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("bench runs");
    let table = report.table();
    println!("{table}");
    for f in [&report.baseline, &report.pipeline, &report.delivered] {
        assert_eq!(f.count, 500);
        assert!(
            f.per_sec > 0.0 && f.p50_ms > 0.0 && f.p99_ms >= f.p50_ms && f.p999_ms >= f.p99_ms,
            "{f:?}"
        );
    }
    assert!(table.contains("ratio stored/baseline"));
    assert!(table.contains("ratio delivered/baseline"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mail_bench_short_mode_accounts_for_every_message() {
    tocsin_runtime::install_crypto();
    let report = tocsin::bench::run_mail(tocsin::bench::MailBenchOptions {
        messages: 200,
        senders: 4,
        users: 10,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("bench-mail runs");
    println!("{}", report.table());
    assert_eq!(report.ingress.count, 200);
    assert!(report.ingress.per_sec > 0.0 && report.parse_us > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reach_bench_short_mode_fires_every_escalation_and_times_the_im() {
    tocsin_runtime::install_crypto();
    // the memory figure runs `tocsin-router` as its own process: `cargo test` builds only
    // the test harness of that package, so build the binary beside this test's profile
    let built = std::process::Command::new(env!("CARGO"))
        .args(["build", "-q", "-p", "tocsin-router"])
        .status()
        .expect("cargo runs");
    assert!(built.success(), "cargo build -p tocsin-router failed");
    let report = tocsin::bench_reach::run(tocsin::bench_reach::ReachBenchOptions {
        users: 200,
        wait_secs: 3,
        im_messages: 20,
        im_rate: 20,
        registered: 2_000,
        active: 200,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("bench-reach runs");
    println!("{}", report.table());
    assert_eq!(report.timers.count, 200);
    assert!(report.timers.per_sec > 0.0 && report.hold_secs > 0.0);
    let im = report
        .im
        .as_ref()
        .expect("prosody is installed by make tools");
    assert_eq!(im.count, 20);
    assert!(im.p50_ms > 0.0);
    let reg = report
        .registered
        .as_ref()
        .expect("asked for")
        .as_ref()
        .expect("registered users measured");
    assert_eq!((reg.registered, reg.active), (2_000, 200));
    assert!(reg.idle_rss > 0.0 && reg.active_rss > 0.0 && reg.created_per_sec > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_bench_short_mode_polls_every_feed() {
    tocsin_runtime::install_crypto();
    let report = tocsin::bench_feeds::run(tocsin::bench_feeds::FeedBenchOptions {
        feeds: 300,
        concurrency: 16,
        seconds: 2,
        fanout: 300,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("bench-feeds runs");
    println!("{}", report.table());
    assert!(report.baseline_per_sec > 0.0 && report.ingestor_per_sec > 0.0);
    // after the first round every fetch is conditional and the server answers 304
    assert!(report.not_modified > 0.9, "{}", report.not_modified);
    let fan = report.fanout.as_ref().expect("asked for");
    assert_eq!(fan.subscribers, 300);
    assert!(fan.secs > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_bench_short_mode_archives_and_reports_every_event() {
    tocsin_runtime::install_crypto();
    let report = tocsin::bench_archive::run(tocsin::bench_archive::ArchiveBenchOptions {
        events: 20_000,
        report_events: 200_000,
        timeout: Duration::from_secs(120),
    })
    .await
    .expect("bench-archive runs");
    println!("{}", report.table());
    assert!(report.baseline_per_sec > 0.0 && report.archived_per_sec > 0.0);
    assert!(report.files > 0 && report.bytes_per_event > 0.0);
    assert!(report.report_rows > 0 && report.report_secs > 0.0);
}
