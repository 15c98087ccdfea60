//! `tocsin-bench reach --registered N --active M`: a router process's resident memory with N
//! users registered (in the avatars bucket, not in memory) and M of them made active.

use crate::common::{bench_router, create_users, emptied, notification};
use crate::reach::ReachBenchOptions;
use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use std::time::{Duration, Instant};
use tocsin_bus::Bus;
use tocsin_model::{AvatarMessage, UserId};
use tokio_util::sync::CancellationToken;

/// A router's memory with many registered users and some of them active.
#[derive(Debug, Clone)]
pub struct Registered {
    pub registered: usize,
    pub active: usize,
    /// This process's resident memory with the router running and every user registered
    /// but none active, and with `active` of them active.
    pub idle_rss: f64,
    pub active_rss: f64,
    /// Registering them: users per second.
    pub created_per_sec: f64,
}

/// Register `opts.registered` users through a router in this process (avatars evicted at
/// once), then start `tocsin-router` as its own process — as after a restart, holding nobody
/// in memory — and read its resident memory before and after `opts.active` of the users
/// become active. (This process's own memory would not do: the allocator keeps what the
/// registration used.)
pub(crate) async fn registered(url: &str, opts: &ReachBenchOptions) -> Result<Registered> {
    let binary = router_binary()?;
    let users: Vec<UserId> = (0..opts.registered)
        .map(|i| UserId::parse(&format!("reg{i}")).expect("valid"))
        .collect();
    let (bus_cfg, mut router) = bench_router(url, "benchreg", 16);
    let created_per_sec = {
        router.router.avatar_idle_secs = 1;
        let shutdown = CancellationToken::new();
        let r = tokio::spawn(tocsin_router::run(router, shutdown.clone()));
        let bus = Bus::connect(&bus_cfg, "bench").await?;
        bus.ensure_streams().await?;
        let started = Instant::now();
        create_users(&bus, &users, |_| String::new(), 512, opts.timeout).await?;
        let per_sec = users.len() as f64 / started.elapsed().as_secs_f64();
        // an avatar answers before its checkpoint: wait for every command to be acked, or
        // the router's stop hands the rest to the process measured, which would take them
        // up before its first reading (tens of thousands of users active in "none")
        let silos = (0..bus_cfg.silo_count).map(tocsin_bus::StreamKind::Silo);
        emptied(
            &bus,
            silos,
            opts.timeout,
            "every user's creation checkpointed",
        )
        .await?;
        shutdown.cancel();
        let _ = r.await;
        bus.drain().await;
        per_sec
    };
    let ops = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut child = std::process::Command::new(&binary)
        .env("TOCSIN_BUS__URL", url)
        .env("TOCSIN_BUS__PREFIX", "benchreg")
        .env("TOCSIN_BUS__SILO_COUNT", "16")
        .env("TOCSIN_ROUTER__AVATAR_IDLE_SECS", "3600")
        .env("TOCSIN_ROUTER__OPS_LISTEN", ops.to_string())
        .env("TOCSIN_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let pid = child.id();
    let result = async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http
                .get(format!("http://{ops}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the router process did not get ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // its silos taken and its streams pulled
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle_rss = process_rss(pid)?;
        let bus = Bus::connect(&bus_cfg, "bench").await?;
        activate(&bus, &users, opts.active.min(users.len()), opts.timeout).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let active_rss = process_rss(pid)?;
        bus.drain().await;
        Ok::<_, anyhow::Error>((idle_rss, active_rss))
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (idle_rss, active_rss) = result?;
    Ok(Registered {
        registered: users.len(),
        active: opts.active.min(users.len()),
        idle_rss,
        active_rss,
        created_per_sec,
    })
}

/// The `tocsin-router` binary beside this executable (or one directory up, for tests).
fn router_binary() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dirs = exe.ancestors().skip(1).take(2);
    for d in dirs {
        let candidate = d.join("tocsin-router");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    anyhow::bail!(
        "no tocsin-router binary beside {}: build it (cargo build --release -p tocsin-router)",
        exe.display()
    )
}

/// A process's resident memory, from /proc (Linux).
fn process_rss(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb * 1024.0)
}

/// Send one notification to each of the first `active` users and wait until the router has
/// routed them all (seen on the history subjects): each avatar loads its record and stays.
async fn activate(bus: &Bus, users: &[UserId], active: usize, timeout: Duration) -> Result<()> {
    let counted = count_routed(bus, active).await?;
    let mut w = bus.window(512);
    for (i, u) in users.iter().take(active).enumerate() {
        let note = notification(u, format!("nreg{i}"), format!("registered {i}"));
        let id = note.id.0.clone();
        let msg = AvatarMessage::Notify { notification: note };
        let subject = bus.subjects().silo(bus.silo_of(u), u.as_str(), msg.kind());
        w.push(subject, id, tocsin_bus::encode(&msg)?).await;
    }
    w.flush().await?;
    tokio::time::timeout(timeout, counted)
        .await
        .context("the active users were not all routed in time")???;
    Ok(())
}

/// A task that waits until the router has routed `n` distinct notifications (seen as their
/// history records are published, alone or in envelopes); returns when it was.
pub(crate) async fn count_routed(
    bus: &Bus,
    n: usize,
) -> Result<tokio::task::JoinHandle<Result<Instant>>> {
    let mut routed = bus
        .client()
        .subscribe(format!("{}.history.>", bus.subjects().prefix()))
        .await?;
    Ok(tokio::spawn(async move {
        let mut seen = std::collections::HashSet::new();
        while seen.len() < n {
            let m = routed
                .next()
                .await
                .ok_or_else(|| anyhow!("subscription ended"))?;
            for r in tocsin_bus::envelope::records(&m.payload).unwrap_or_default() {
                if let Ok(tocsin_model::HistoryRecord::Notification { notification, .. }) =
                    serde_json::from_slice(&r.payload)
                {
                    seen.insert(notification.id.0);
                }
            }
        }
        Ok(Instant::now())
    }))
}
