//! `tocsin-bench reach`: escalation timers and instant messages, measured on this machine.
//!
//! 1. Timers: `users` users, each with a three-step policy (a webhook, another after
//!    `wait_secs`, a third after `wait_secs` more), get one notification each at once; the
//!    router holds one escalation per user. The second steps fire with the router running
//!    (how late); then the router is stopped until every third step is due and started again,
//!    so that all are due at once (how fast). Also printed: the router process's memory per
//!    active avatar and per pending escalation.
//! 2. Instant messages: publish → router → delivery → Prosody → a real XMPP client, at a fixed
//!    rate, with each message's latency (needs `prosody`; skipped with a note otherwise).
//!
//! Both beside raw JetStream work-queue figures from the same run and the same server. The
//! delivery service is not running in part 1: jobs stay in the delivery stream, so the
//! timers are measured, not the webhooks.

use crate::common::{
    BenchNats, Figures, Pacer, baseline, bench_router, count_replies, create_users, destination,
    figure_rows, figures, notification,
};
use crate::jobs::{Jobs, next_job};
use crate::pipeline::BenchOptions;
use anyhow::{Context, Result, anyhow};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tocsin_bus::Bus;
use tocsin_model::{
    AvatarMessage, Channel, Command, Condition, Destination, Policy, Step, UserId, UserRecord,
    now_ms,
};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone)]
pub struct ReachBenchOptions {
    pub users: usize,
    pub wait_secs: u64,
    pub im_messages: usize,
    pub im_rate: u64,
    /// Users registered (in the avatars bucket, not in memory) for the memory figure; 0 skips it.
    pub registered: usize,
    /// Of those, how many are made active at once.
    pub active: usize,
    pub timeout: Duration,
    /// Recent keys written into each escalation user's record while the router is stopped,
    /// so the restart wakes avatars whose records are a long-lived user's (0: as created).
    pub aged_keys: usize,
}

pub struct ReachReport {
    pub options: ReachBenchOptions,
    pub burst_baseline: Figures,
    /// The escalation steps all due at once after a restart: their rate.
    pub timers: Figures,
    /// The steps fired with the router running, each when due: how late.
    pub timers_on_time: Figures,
    /// From the router's restart to the first step it fired.
    pub restart_ms: f64,
    pub hold_secs: f64,
    pub avatar_bytes: Option<f64>,
    pub escalation_bytes: Option<f64>,
    pub rate_baseline: Figures,
    pub im: Result<Figures, String>,
    pub registered: Option<Result<crate::memory::Registered, String>>,
}

impl ReachReport {
    pub fn table(&self) -> String {
        let o = &self.options;
        let mut s = format!(
            "tocsin-bench reach: {} users with one escalation each (steps 2 and 3 after {} s each; the router restarted while step 3 is held{}); {} instant messages at {}/s\n",
            o.users,
            o.wait_secs,
            match o.aged_keys {
                0 => String::new(),
                k => format!(", their records aged with {k} recent keys first"),
            },
            o.im_messages,
            o.im_rate
        );
        s.push_str(&figure_rows(
            &[&self.burst_baseline, &self.timers_on_time, &self.timers],
            46,
        ));
        s.push_str(&format!(
            "{:<46} {:>10.0}\n{:<46} {:>10.3}\n",
            "first step fired after the restart (ms)",
            self.restart_ms,
            "ratio fired all at once/baseline (rate)",
            self.timers.per_sec / self.burst_baseline.per_sec
        ));
        let mem = |b: Option<f64>| b.map(|b| format!("{:.0}", b)).unwrap_or("n/a".into());
        s.push_str(&format!(
            "{:<46} {:>10.1}\n{:<46} {:>10}\n{:<46} {:>10}\n",
            "escalations held for (s, all at once)",
            self.hold_secs,
            "router memory per active avatar (bytes)",
            mem(self.avatar_bytes),
            "router memory per pending escalation (bytes)",
            mem(self.escalation_bytes),
        ));
        match &self.im {
            Ok(im) => {
                s.push_str(&figure_rows(&[&self.rate_baseline, im], 46));
                s.push_str(&format!(
                    "{:<46} {:>10} {:>10.1} {:>10.1}\n",
                    "ratio IM/baseline (latency x)",
                    "",
                    im.p50_ms / self.rate_baseline.p50_ms.max(0.001),
                    im.p99_ms / self.rate_baseline.p99_ms.max(0.001),
                ));
            }
            Err(why) => s.push_str(&format!("instant messages: not measured: {why}\n")),
        }
        match &self.registered {
            None => {}
            Some(Ok(r)) => {
                let mb = |b: f64| b / 1_048_576.0;
                s.push_str(&format!(
                    "{:<46} {:>10.0}\n{:<46} {:>10.1}\n{:<46} {:>10.1}\n{:<46} {:>10.0}\n",
                    format!("users registered (per second: {:.0})", r.created_per_sec),
                    r.registered as f64,
                    "router process memory, none active (MiB)",
                    mb(r.idle_rss),
                    format!("router process memory, {} active (MiB)", r.active),
                    mb(r.active_rss),
                    "memory per active avatar (bytes)",
                    (r.active_rss - r.idle_rss) / r.active.max(1) as f64,
                ));
            }
            Some(Err(why)) => s.push_str(&format!("registered users: not measured: {why}\n")),
        }
        s
    }
}

/// Resident memory of this process, from /proc (Linux).
fn rss_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0)
}

pub async fn run(opts: ReachBenchOptions) -> Result<ReachReport> {
    let nats = BenchNats::start()?;
    let url = nats.url.clone();
    let base = |n: usize, rate: u64| BenchOptions {
        notifications: n,
        users: n.clamp(1, 1000),
        silo_count: 16,
        window: 512,
        rate,
        timeout: opts.timeout,
        warm: 0,
    };
    let burst_baseline = baseline(&url, &base(opts.users, 0))
        .await
        .context("baseline")?;
    let rate_baseline = baseline(&url, &base(opts.im_messages, opts.im_rate))
        .await
        .context("baseline at a rate")?;
    let t = timers(&url, &opts).await.context("timers")?;
    let im = instant_messages(&url, &opts)
        .await
        .map_err(|e| format!("{e:#}"));
    let registered = if opts.registered > 0 {
        Some(
            crate::memory::registered(&url, &opts)
                .await
                .map_err(|e| format!("{e:#}")),
        )
    } else {
        None
    };
    Ok(ReachReport {
        options: opts,
        burst_baseline,
        timers: t.at_once,
        timers_on_time: t.on_time,
        restart_ms: t.restart_ms,
        hold_secs: t.hold_secs,
        avatar_bytes: t.avatar_bytes,
        escalation_bytes: t.escalation_bytes,
        rate_baseline,
        im,
        registered,
    })
}

/// Send `commands` to the users' avatars, in order (a user's policy names destinations added
/// just before it), and wait until each has answered ok.
pub(crate) async fn commands(
    bus: &Bus,
    commands: Vec<(UserId, Command)>,
    timeout: Duration,
) -> Result<()> {
    let inbox = bus.client().new_inbox();
    let replies = bus.client().subscribe(format!("{inbox}.*")).await?;
    let confirmed = count_replies(replies, commands.len(), timeout);
    let mut acks = Vec::new();
    for (i, (u, c)) in commands.into_iter().enumerate() {
        let msg = AvatarMessage::Command {
            command_id: format!("bench-cmd-{i}"),
            command: c,
            reply_to: Some(format!("{inbox}.{i}")),
        };
        let subject = bus.subjects().silo(bus.silo_of(&u), u.as_str(), msg.kind());
        // pipelined but ordered (a publish window would not keep the order)
        acks.push(
            bus.send(
                subject,
                &format!("bench-cmd-{i}"),
                tocsin_bus::encode(&msg)?,
            )
            .await?,
        );
        if acks.len() >= 512 {
            for a in acks.drain(..) {
                a.await.map_err(|e| anyhow!("command not stored: {e}"))?;
            }
        }
    }
    for a in acks {
        a.await.map_err(|e| anyhow!("command not stored: {e}"))?;
    }
    confirmed.await.context("the reply counter failed")?
}

fn webhook(id: &str) -> Destination {
    destination(
        id,
        Channel::Webhook,
        format!("https://hooks.example.org/{id}"),
    )
}

/// The escalations fired with the router running (their lateness), and all due at once after
/// a restart (their rate); seconds held; bytes per active avatar and per pending escalation.
struct TimerFigures {
    on_time: Figures,
    at_once: Figures,
    /// From the router's restart to the first step fired.
    restart_ms: f64,
    hold_secs: f64,
    avatar_bytes: Option<f64>,
    escalation_bytes: Option<f64>,
}

/// Each user's policy: webhook `first` at once, `second` after `wait_secs`, `third` after
/// `wait_secs` more. The second steps fire with the router running: their lateness. Then the
/// router is stopped until every third step is due and started again: 10,000 due at once,
/// their rate.
async fn timers(url: &str, opts: &ReachBenchOptions) -> Result<TimerFigures> {
    let router_config = || {
        let (bus_cfg, mut router) = bench_router(url, "benchtimers", 16);
        // every avatar stays active: their memory is one of the figures
        router.router.avatar_idle_secs = 3600;
        router.router.ack_link_base_url = "https://tocsin.example.org".into();
        (bus_cfg, router)
    };
    let (bus_cfg, router) = router_config();
    let shutdown = CancellationToken::new();
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let bus = Bus::connect(&bus_cfg, "bench").await?;
    bus.ensure_streams().await?;
    let users: Vec<UserId> = (0..opts.users)
        .map(|i| UserId::parse(&format!("r{i}")).expect("valid"))
        .collect();
    let rss0 = rss_bytes();
    create_users(&bus, &users, |_| String::new(), 512, opts.timeout).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss1 = rss_bytes();
    let step = |to: &str, wait_secs: u64| Step {
        destinations: vec![to.into()],
        when: Condition::Always,
        wait_secs,
        ..Default::default()
    };
    let policy = Policy {
        steps: vec![
            step("first", opts.wait_secs),
            step("second", opts.wait_secs),
            step("third", 0),
        ],
        urgent_steps: None,
        quiet_hours: None,
        ..Default::default()
    };
    let mut setup = Vec::new();
    for u in &users {
        for d in ["first", "second", "third"] {
            setup.push((
                u.clone(),
                Command::AddDestination {
                    destination: webhook(d),
                },
            ));
        }
        setup.push((
            u.clone(),
            Command::SetPolicy {
                policy: Some(policy.clone()),
            },
        ));
    }
    commands(&bus, setup, opts.timeout).await?;
    // watch the delivery jobs go by (a core subscription sees every publish)
    let mut jobs = Jobs::watch(&bus, Channel::Webhook).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss2 = rss_bytes();
    let wait_ms = opts.wait_secs as i64 * 1000;
    let total = users.len();
    let deadline = tokio::time::Instant::now() + opts.timeout + Duration::from_secs(opts.wait_secs);
    // read the jobs while publishing: a subscription's buffer would overflow otherwise
    let watcher = tokio::spawn(async move {
        let (mut firsts, mut seconds) = (0, 0);
        let mut late = Histogram::<u64>::new(3).expect("histogram");
        let mut first_due: Option<i64> = None;
        let mut rss3 = None;
        let mut held_at = None;
        while seconds < total {
            let job = next_job(&mut jobs, deadline, "the second steps").await?;
            let due = job.notification.created_at_ms + wait_ms;
            match job.destination.id.as_str() {
                "first" => {
                    firsts += 1;
                    first_due = Some(first_due.map_or(due, |d: i64| d.min(due)));
                    if firsts == total {
                        held_at = Some(now_ms());
                        rss3 = rss_bytes();
                    }
                }
                "second" => {
                    late.record((now_ms() - due).max(1) as u64 * 1000)?;
                    seconds += 1;
                }
                other => anyhow::bail!(
                    "step '{other}' fired before the router was stopped: --wait-secs must exceed the time to route them all"
                ),
            }
        }
        Ok::<_, anyhow::Error>((jobs, late, first_due, rss3, held_at))
    });
    let mut w = bus.window(512);
    for (i, u) in users.iter().enumerate() {
        let msg = AvatarMessage::Notify {
            notification: notification(u, format!("nt{i}"), format!("timer {i}")),
        };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        w.push(subject, format!("nt{i}"), tocsin_bus::encode(&msg)?)
            .await;
    }
    w.flush().await?;
    let (mut jobs, late, first_due, rss3, held_at) =
        watcher.await.context("the job watcher failed")??;
    let seconds_done = now_ms();
    let first_due = first_due.unwrap_or(seconds_done);
    let on_time_span = Duration::from_millis((seconds_done - first_due).max(1) as u64);
    // stop the router while the third steps are held, until every one of them is due (each
    // was set when its second step fired, all before `seconds_done`), then start it again
    shutdown.cancel();
    let _ = r.await;
    if opts.aged_keys > 0 {
        crate::common::age_records(&bus, &users, opts.aged_keys).await?;
    }
    let all_due = seconds_done + wait_ms + 250;
    tokio::time::sleep(Duration::from_millis((all_due - now_ms()).max(0) as u64)).await;
    let (_, router) = router_config();
    let shutdown = CancellationToken::new();
    let restarted = now_ms();
    eprintln!("bench-reach: router restarted at {restarted} ms (Unix time) with {total} steps due");
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let deadline = tokio::time::Instant::now() + opts.timeout;
    let mut after_first = Histogram::<u64>::new(3).expect("histogram");
    let mut first_fired = None;
    for _ in 0..total {
        let job = next_job(&mut jobs, deadline, "the third steps, after the restart").await?;
        anyhow::ensure!(
            job.destination.id == "third",
            "step '{}' fired again after the restart",
            job.destination.id
        );
        let now = now_ms();
        let first = *first_fired.get_or_insert(now);
        after_first.record((now - first).max(1) as u64 * 1000)?;
    }
    let done = now_ms();
    eprintln!("bench-reach: the last of them fired at {done} ms");
    shutdown.cancel();
    let _ = r.await;
    let first_fired = first_fired.unwrap_or(done);
    let hold_secs = held_at
        .map(|h| (first_due - h) as f64 / 1000.0)
        .unwrap_or(0.0);
    let per = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some((b - a) / users.len() as f64),
        _ => None,
    };
    Ok(TimerFigures {
        on_time: figures(
            "escalation step fired, router running (ms late)",
            total,
            on_time_span,
            &late,
        ),
        at_once: figures(
            "all due at once after a restart (ms from 1st)",
            total,
            Duration::from_millis((done - first_fired).max(1) as u64),
            &after_first,
        ),
        restart_ms: (first_fired - restarted) as f64,
        hold_secs,
        avatar_bytes: per(rss0, rss1),
        escalation_bytes: per(rss2, rss3),
    })
}

/// publish → router → delivery (xmpp) → Prosody → a real client, at `im_rate`.
async fn instant_messages(url: &str, opts: &ReachBenchOptions) -> Result<Figures> {
    let prosody = tocsin_testkit::Prosody::start()?;
    prosody.register("tocsin", "bench-service-pw")?;
    prosody.register("ann", "bench-ann-pw")?;
    let (bus_cfg, router) = bench_router(url, "benchim", 4);
    let shutdown = CancellationToken::new();
    let delivery = tocsin_delivery::Config {
        bus: bus_cfg.clone(),
        delivery: tocsin_delivery::DeliveryConfig {
            ops_listen: String::new(),
            channels: vec![Channel::Xmpp],
            xmpp: tocsin_delivery::xmpp::XmppConfig {
                jid: "tocsin@localhost".into(),
                password: "bench-service-pw".into(),
                server: prosody.addr(),
                tls: tocsin_delivery::xmpp::XmppTls::None,
                rate_per_sec: 0.0,
                ..Default::default()
            },
            ..Default::default()
        },
    };
    let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
    let d = tokio::spawn(tocsin_delivery::run(delivery, shutdown.clone()));
    let result = async {
        let bus = Bus::connect(&bus_cfg, "bench").await?;
        bus.ensure_streams().await?;
        let ann = UserId::parse("ann").expect("valid");
        create_users(
            &bus,
            std::slice::from_ref(&ann),
            |_| String::new(),
            16,
            opts.timeout,
        )
        .await?;
        let im = Destination {
            channel: Channel::Xmpp,
            address: "ann@localhost".into(),
            ..webhook("im")
        };
        commands(
            &bus,
            vec![(ann.clone(), Command::AddDestination { destination: im })],
            opts.timeout,
        )
        .await?;
        let mut client =
            tocsin_testkit::im::ImUser::login(&prosody.addr(), "ann@localhost", "bench-ann-pw")
                .await?;
        client.show(None);
        // the avatar must see Ann present before IM is the channel
        let avatars = bus.kv("avatars").await?;
        tocsin_testkit::wait_for(Duration::from_secs(30), "Ann's presence", || async {
            let v = avatars.get(ann.as_str()).await.ok()??;
            let rec: UserRecord = serde_json::from_slice(&v).ok()?;
            rec.reach.present().then_some(())
        })
        .await?;
        let n = opts.im_messages;
        let pacer = Pacer::new(opts.im_rate);
        let mut sent: HashMap<String, Instant> = HashMap::new();
        let start = Instant::now();
        for i in 0..n {
            pacer.wait(i).await;
            let title = format!("im bench {i}");
            let msg = AvatarMessage::Notify {
                notification: notification(&ann, format!("nim{i}"), title.clone()),
            };
            let subject = bus
                .subjects()
                .silo(bus.silo_of(&ann), ann.as_str(), msg.kind());
            sent.insert(title, Instant::now());
            bus.send(subject, &format!("nim{i}"), tocsin_bus::encode(&msg)?)
                .await?;
        }
        let mut hist = Histogram::<u64>::new(3).expect("histogram");
        let mut got = 0;
        while got < n {
            let (_, body, at) = client.next_timed(opts.timeout).await?;
            let title = body.lines().next().unwrap_or_default().to_owned();
            if let Some(t) = sent.remove(&title) {
                hist.record(at.duration_since(t).as_micros().max(1) as u64)?;
                got += 1;
            }
        }
        Ok::<_, anyhow::Error>(figures(
            "tocsin publish→router→xmpp→client",
            n,
            start.elapsed(),
            &hist,
        ))
    }
    .await;
    shutdown.cancel();
    let _ = r.await;
    let _ = d.await;
    result
}
