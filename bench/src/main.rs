//! `tocsin-bench`: run one benchmark, or all of them in one table (`tocsin-bench all`, which
//! `make bench` runs), each figure beside a baseline measured in the same run.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::time::Duration;

/// tocsin's allocator, counting each thread's allocations for `tocsin-bench work`.
#[global_allocator]
static GLOBAL: tocsin_runtime::thread_meter::CountingAllocator =
    tocsin_runtime::thread_meter::CountingAllocator;

#[derive(Parser)]
#[command(
    name = "tocsin-bench",
    version,
    about = "tocsin's benchmarks, each beside a baseline from the same run"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure history's write path alone: notifications and their timeline entries applied
    /// in batches to one silo's store that already holds many, beside the same batches as bare
    /// rows in a table without indexes.
    HistoryStore {
        #[arg(long, default_value_t = 200_000)]
        prefill: usize,
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
        #[arg(long, default_value_t = 40)]
        batch: usize,
        #[arg(long, default_value_t = 60)]
        users: usize,
    },
    /// Measure the SMTP ingress (concurrent senders) and the mail parser against a raw
    /// JetStream baseline.
    #[command(alias = "bench-mail")]
    Mail {
        #[arg(long, default_value_t = 10_000)]
        messages: usize,
        #[arg(long, default_value_t = 32)]
        senders: usize,
        #[arg(long, default_value_t = 100)]
        users: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Measure the archiver (events/s into Parquet, bytes per event) and an analytics report
    /// over many events, against the raw JetStream consume rate of the same events.
    #[command(alias = "bench-archive")]
    Archive {
        #[arg(long, default_value_t = 200_000)]
        events: usize,
        #[arg(long, default_value_t = 10_000_000)]
        report_events: usize,
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Measure how fast the ingestor polls feeds (conditional GETs against a local server)
    /// against plain HTTP requests from one client.
    #[command(alias = "bench-feeds")]
    Feeds {
        #[arg(long, default_value_t = 10_000)]
        feeds: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Subscribers of one feed whose new item is fanned out (0 skips it); e.g. 100000.
        #[arg(long, default_value_t = 0)]
        fanout: usize,
        /// Recent keys written into each subscriber's record before the item appears (the
        /// router restarted, so every avatar wakes from its record; 512 at most are kept).
        #[arg(long, default_value_t = 0)]
        aged_keys: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
    },
    /// Measure escalation timers (held, fired, memory) and publish → XMPP client latency
    /// against raw JetStream baselines (the IM part needs `prosody`).
    #[command(alias = "bench-reach")]
    Reach {
        #[arg(long, default_value_t = 10_000)]
        users: usize,
        /// When the held escalations are due (must exceed the time to route them all).
        #[arg(long, default_value_t = 10)]
        wait_secs: u64,
        #[arg(long, default_value_t = 500)]
        im_messages: usize,
        /// Instant messages per second.
        #[arg(long, default_value_t = 50)]
        im_rate: u64,
        /// Users registered for the memory figure (0 skips it); e.g. 1000000.
        #[arg(long, default_value_t = 0)]
        registered: usize,
        /// How many of the registered users are made active.
        #[arg(long, default_value_t = 100_000)]
        active: usize,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Recent keys written into each user's record before the restart, as a long-lived
        /// user's record holds (512 at most are kept; 0: records as created).
        #[arg(long, default_value_t = 0)]
        aged_keys: usize,
    },
    /// Run every benchmark in turn (pipeline burst and fixed rate, feed polling and fan-out,
    /// escalation timers, instant messages, router memory, SMTP ingress, archive) and print
    /// one table, each figure beside the baseline measured in the same run.
    #[command(alias = "bench-all")]
    All {
        /// Small sizes (about a minute) instead of the full ones (about seven minutes).
        #[arg(long)]
        short: bool,
        /// The longest any one part may take (the fan-out and memory parts get at least 900 s
        /// in the full mode).
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
    },
    /// Measure publish → router → history against a raw JetStream baseline.
    #[command(alias = "bench")]
    Pipeline {
        #[arg(long, default_value_t = 20_000)]
        notifications: usize,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 16)]
        silos: u32,
        #[arg(long, default_value_t = 512)]
        window: usize,
        /// Publishes per second (0: a burst, as fast as the window allows).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        #[arg(long, default_value_t = 300)]
        timeout_secs: u64,
        /// Notifications each user gets before the measured ones (their records then hold
        /// recent ids, as a long-lived user's do; 256 fills a record's 512 keys halfway).
        #[arg(long, default_value_t = 0)]
        warm: usize,
    },
    /// Measure tocsin's own work on a notification with no bus, server or disk: the router's
    /// decode, decision, outputs and record, history's and delivery's decode; CPU time and
    /// allocations per notification, beside the notification parsed as a bare JSON value.
    Work {
        #[arg(long, default_value_t = 50_000)]
        notifications: usize,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        /// Notifications an avatar handles between two checkpoints of its record.
        #[arg(long, default_value_t = 4)]
        per_checkpoint: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

fn main() -> ExitCode {
    match tocsin_runtime::runtime() {
        Ok(rt) => rt.block_on(run()),
        Err(e) => {
            eprintln!("tocsin-bench: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    tocsin_runtime::install_crypto();
    // the services log as they do when deployed (`TOCSIN_LOG`, `info` by default), so their
    // spans and log lines cost here what they cost there; `TOCSIN_LOG=off` measures without
    tocsin_runtime::init_tracing();
    match dispatch(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tocsin-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Work {
            notifications,
            users,
            per_checkpoint,
            rounds,
        } => {
            let report = tocsin_bench::work::run(tocsin_bench::work::WorkOptions {
                users: users.max(1),
                notifications: notifications.max(1),
                per_checkpoint: per_checkpoint.max(1),
                rounds: rounds.max(1),
            })?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::Reach {
            users,
            wait_secs,
            im_messages,
            im_rate,
            registered,
            active,
            timeout_secs,
            aged_keys,
        } => {
            let report = tocsin_bench::reach::run(tocsin_bench::reach::ReachBenchOptions {
                users: users.max(1),
                wait_secs: wait_secs.max(1),
                im_messages: im_messages.max(1),
                im_rate: im_rate.max(1),
                registered,
                active,
                timeout: Duration::from_secs(timeout_secs),
                aged_keys,
            })
            .await?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::Archive {
            events,
            report_events,
            timeout_secs,
        } => {
            let report = tocsin_bench::archive::run(tocsin_bench::archive::ArchiveBenchOptions {
                events: events.max(1),
                report_events: report_events.max(1),
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::Feeds {
            feeds,
            concurrency,
            seconds,
            fanout,
            aged_keys,
            timeout_secs,
        } => {
            let report = tocsin_bench::feeds::run(tocsin_bench::feeds::FeedBenchOptions {
                feeds: feeds.max(1),
                concurrency: concurrency.max(1),
                seconds: seconds.max(1),
                fanout,
                aged_keys,
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::HistoryStore {
            prefill,
            notifications,
            batch,
            users,
        } => {
            let opts = tocsin_bench::store::StoreBenchOptions {
                prefill,
                notifications: notifications.max(1),
                batch: batch.max(1),
                users: users.max(1),
            };
            let report =
                tokio::task::spawn_blocking(move || tocsin_bench::store::run(opts)).await??;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::Mail {
            messages,
            senders,
            users,
            timeout_secs,
        } => {
            let report = tocsin_bench::mail::run(tocsin_bench::mail::MailBenchOptions {
                messages: messages.max(1),
                senders: senders.max(1),
                users: users.max(1),
                timeout: Duration::from_secs(timeout_secs),
            })
            .await?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::All {
            short,
            timeout_secs,
        } => {
            let timeout = Duration::from_secs(timeout_secs);
            let opts = if short {
                tocsin_bench::all::AllOptions::short(timeout)
            } else {
                tocsin_bench::all::AllOptions::full(timeout)
            };
            let report = tocsin_bench::all::run(opts).await?;
            print!("{}", report.table());
            Ok(())
        }
        Cmd::Pipeline {
            notifications,
            users,
            silos,
            window,
            rate,
            timeout_secs,
            warm,
        } => {
            let report = tocsin_bench::pipeline::run(tocsin_bench::pipeline::BenchOptions {
                notifications,
                users: users.max(1),
                silo_count: silos.max(1),
                window: window.max(1),
                rate,
                timeout: Duration::from_secs(timeout_secs),
                warm,
            })
            .await?;
            print!("{}", report.table());
            Ok(())
        }
    }
}
