//! `tocsin-bench archive`: events archived per second (and bytes per event on disk), and the
//! time of an analytics report over many events, beside the raw JetStream consume rate of the
//! same events measured in the same run (the mean of one consume before the archiver and one
//! after).
//!
//! The events are a realistic mix: each notification brings `ingested`, `matched`, `routed`,
//! `attempted`, `delivered` and, for a third, `acked`, spread over users and channels.

use crate::common::{BenchNats, tempfile_dir};
use anyhow::{Context, Result, anyhow};
use std::time::{Duration, Instant};
use tocsin_archiver::analytics;
use tocsin_archiver::store::{Archive, S3Options};
use tocsin_bus::{Bus, BusConfig, StreamKind};
use tocsin_model::{Channel, Event, EventKind, NotificationId, UserId};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ArchiveBenchOptions {
    /// Events through the bus and the archiver.
    pub events: usize,
    /// Events in the archive the report reads (written directly, as the archiver writes them).
    pub report_events: usize,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct ArchiveReport {
    pub options: ArchiveBenchOptions,
    /// The mean of `baseline_runs`.
    pub baseline_per_sec: f64,
    /// The baseline's rate before the archiver ran and after it.
    pub baseline_runs: (f64, f64),
    /// From the archiver's start (connecting, its consumer) to the last event acked.
    pub archived_per_sec: f64,
    pub bytes_per_event: f64,
    pub files: usize,
    pub report_secs: f64,
    pub report_per_sec: f64,
    pub report_rows: usize,
}

impl ArchiveReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        format!(
            "tocsin-bench archive: {} events through the bus, a report over {} events\n\
             {:<52} {:>12} {:>8}\n\
             {:<52} {:>12.0} {:>8.2}\n\
             {:<52} {:>12.0} {:>8.3}\n\
             {:<52} {:>12.0} {:>8.3}\n\
             {:<52} {:>12.1}\n\
             {:<52} {:>12.2}\n",
            o.events,
            o.report_events,
            "path",
            "events/s",
            "ratio",
            format!(
                "raw JetStream consume + ack (baseline; {:.0} before, {:.0} after)",
                self.baseline_runs.0, self.baseline_runs.1
            ),
            self.baseline_per_sec,
            1.0,
            "archiver: stream → Parquet, durable, acked",
            self.archived_per_sec,
            self.archived_per_sec / self.baseline_per_sec.max(1.0),
            format!("tocsin analytics over {} events", o.report_events),
            self.report_per_sec,
            self.report_per_sec / self.baseline_per_sec.max(1.0),
            "bytes per event on disk (Snappy Parquet)",
            self.bytes_per_event,
            format!("report time (s, {} rows)", self.report_rows),
            self.report_secs,
        )
    }
}

/// The `i`-th event of the synthetic workload.
pub fn synthetic_event(i: usize, start_ms: i64) -> Event {
    const KINDS: [EventKind; 6] = [
        EventKind::Ingested,
        EventKind::Matched,
        EventKind::Routed,
        EventKind::Attempted,
        EventKind::Delivered,
        EventKind::Acked,
    ];
    const CHANNELS: [Channel; 4] = [
        Channel::Email,
        Channel::Webhook,
        Channel::Push,
        Channel::Sms,
    ];
    let n = i / KINDS.len();
    let kind = KINDS[i % KINDS.len()];
    let user = UserId::parse(&format!("user{}", n % 1000)).expect("valid id");
    let notification = NotificationId(format!("n{n:032x}"));
    // a notification a second: a report over many events spans many hours and days
    let created = start_ms + n as i64 * 1000;
    let at = created + (i % KINDS.len()) as i64 * 40;
    let mut e = Event::new(kind, &[&i.to_string()], at)
        .user(&user)
        .notification(&notification);
    e.service = "bench".into();
    e.silo = Some((n % 16) as u32);
    if matches!(
        kind,
        EventKind::Attempted | EventKind::Delivered | EventKind::Acked
    ) {
        e.channel = Some(CHANNELS[n % CHANNELS.len()]);
        e.destination = Some("d1".into());
    }
    match kind {
        EventKind::Delivered => e = e.since(created).attempt(1),
        EventKind::Attempted => e = e.attempt(1).detail("retry: 503 Service Unavailable"),
        EventKind::Acked if !n.is_multiple_of(3) => e.kind = EventKind::Failed,
        EventKind::Acked => e = e.since(created - 30_000),
        _ => {}
    }
    e
}

pub async fn run(opts: ArchiveBenchOptions) -> Result<ArchiveReport> {
    let nats = BenchNats::start()?;
    let cfg = BusConfig {
        url: nats.url.clone(),
        prefix: "bencharchive".into(),
        silo_count: 1,
        ..Default::default()
    };
    let bus = Bus::connect(&cfg, "bench").await?;
    bus.ensure_streams().await?;
    let start_ms = tocsin_model::now_ms();
    let mut window = bus.window(1024);
    for i in 0..opts.events {
        let (subject, id, payload) = bus.event_output(synthetic_event(i, start_ms), "bench")?;
        window.push(subject, id, payload).await;
    }
    window.flush().await?;

    // the baseline, once before the archiver and once after: the machine drifts during a run
    let before = consume_rate(&bus, "baseline", &opts).await?;

    // the archiver, in this process, over the same events
    let dir = tempfile_dir()?;
    let archive_dir = dir.join("archive");
    let acfg = tocsin_archiver::Config {
        bus: cfg.clone(),
        archiver: tocsin_archiver::ArchiverConfig {
            target: archive_dir.display().to_string(),
            ops_listen: String::new(),
            // a roll of every event when there are fewer than a default roll's worth (else the
            // figure would be the wait for the age limit)
            roll_max_events: tocsin_archiver::ArchiverConfig::default()
                .roll_max_events
                .min(opts.events),
            ..Default::default()
        },
    };
    let shutdown = CancellationToken::new();
    let began = Instant::now();
    let task = tokio::spawn(tocsin_archiver::run(acfg, shutdown.clone()));
    let deadline = Instant::now() + opts.timeout;
    let stream = bus.subjects().stream(StreamKind::Events);
    let end = loop {
        let consumer: Result<
            async_nats::jetstream::consumer::Consumer<
                async_nats::jetstream::consumer::pull::Config,
            >,
            _,
        > = bus
            .jetstream()
            .get_consumer_from_stream("archiver", &stream)
            .await;
        if let Ok(mut c) = consumer {
            let floor = c.info().await?.ack_floor.stream_sequence;
            if floor >= opts.events as u64 {
                break Instant::now();
            }
        }
        if Instant::now() > deadline {
            shutdown.cancel();
            return Err(anyhow!("the archiver did not archive every event in time"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let archived_per_sec = opts.events as f64 / (end - began).as_secs_f64();
    shutdown.cancel();
    task.await?.map_err(|e| anyhow!(e))?;
    let after = consume_rate(&bus, "baseline-after", &opts).await?;
    let archive = Archive::open(&archive_dir.display().to_string(), &S3Options::default())?;
    let listed = archive.list().await?;
    let bytes: u64 = listed.iter().map(|f| f.size).sum();
    let files = listed.len();

    // the report: an archive of report_events written as the archiver writes it
    let report_dir = dir.join("report");
    let report_archive = Archive::open(&report_dir.display().to_string(), &S3Options::default())?;
    write_synthetic(&report_archive, opts.report_events, start_ms).await?;
    let began = Instant::now();
    let report = analytics::report(&report_archive, &analytics::Options::default()).await?;
    let report_secs = began.elapsed().as_secs_f64();
    if report.events != opts.report_events as u64 {
        return Err(anyhow!(
            "the report read {} events, not {}",
            report.events,
            opts.report_events
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ArchiveReport {
        options: opts.clone(),
        baseline_per_sec: (before + after) / 2.0,
        baseline_runs: (before, after),
        archived_per_sec,
        bytes_per_event: bytes as f64 / opts.events.max(1) as f64,
        files,
        report_secs,
        report_per_sec: opts.report_events as f64 / report_secs,
        report_rows: report.rows.len(),
    })
}

/// The baseline: a plain durable consumer `name` of the events stream, pulling and acking
/// each of `opts.events` events; its rate per second.
async fn consume_rate(bus: &Bus, name: &str, opts: &ArchiveBenchOptions) -> Result<f64> {
    let consumer = bus
        .pull_consumer(StreamKind::Events, name, None, 20_000)
        .await?;
    let began = Instant::now();
    // the services' own pull: a missed heartbeat on a busy machine renews it, as there
    let mut msgs = tocsin_bus::Pull::new(consumer, 1024, "the baseline");
    for _ in 0..opts.events {
        let m = tokio::time::timeout(opts.timeout, msgs.next())
            .await
            .context("baseline timed out")?;
        m.ack().await.map_err(|e| anyhow!(e))?;
    }
    Ok(opts.events as f64 / began.elapsed().as_secs_f64())
}

/// Write `n` synthetic events in rolls of 100,000, as the archiver writes them.
async fn write_synthetic(archive: &Archive, n: usize, start_ms: i64) -> Result<()> {
    const ROLL: usize = 100_000;
    let mut i = 0;
    while i < n {
        let end = (i + ROLL).min(n);
        let events: Vec<Event> = (i..end).map(|j| synthetic_event(j, start_ms)).collect();
        let rows: Vec<(u64, &Event)> = events
            .iter()
            .enumerate()
            .map(|(k, e)| ((i + k + 1) as u64, e))
            .collect();
        tocsin_archiver::write_rows(archive, &rows)
            .await
            .map_err(|e| anyhow!(e))?;
        i = end;
    }
    Ok(())
}
