//! The router: one avatar per user, the single authority over that user's data and routing.
//!
//! A router instance owns a set of silos. For each it pulls the silo's stream (everything
//! addressed to that silo's avatars) and hands each message to its user's avatar: a task
//! that processes that user's messages strictly in order, while different users run
//! concurrently. An avatar is activated on its first message (its record loaded from the
//! `avatars` KV bucket) and evicted after `avatar_idle_secs` without one, so a router holds
//! millions of registered users but only the active ones in memory.
//!
//! An avatar decides with [`decide::apply`] (pure), publishes the effects (history records,
//! subscription changes) in order without waiting per message, and then — once every PubAck
//! is in and the record is saved with a revision check — acks the batch. A crash anywhere
//! before that leaves the messages unacked; they are redelivered and the deterministic ids
//! make the repeat a no-op downstream.

mod actor;
mod bulk;
pub mod config;
pub mod decide;
mod mailbox;
pub mod outputs;
mod silo;
mod telemetry;
pub mod timers;

pub use config::{Config, RouterConfig};

use crate::decide::escalate;
use crate::silo::serve_silo;
use async_nats::jetstream::kv;
use std::sync::Arc;
use std::time::Duration;
use tocsin_bus::{Bus, BusError, Leases};
use tocsin_runtime::ServiceError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{info, warn};

pub(crate) struct Ctx {
    pub(crate) bus: Bus,
    pub(crate) kv: kv::Store,
    /// The users' bases of recent keys, apart from their records (ADR 0033).
    pub(crate) seen: kv::Store,
    /// Who owns an IM address or phone number (`AddressEntry`).
    pub(crate) addresses: kv::Store,
    /// One key per user with escalations pending: `s<silo>.<user>` → the earliest due time.
    pub(crate) timers: kv::Store,
    pub(crate) cfg: RouterConfig,
    pub(crate) limits: decide::Limits,
    /// Room for the records being written at once ([`RECORD_WRITES`]).
    pub(crate) writes: tokio::sync::Semaphore,
}

/// How many avatars of this router encode and write their record at once. A fan-out's
/// 100,000 avatars all reach their checkpoint together; unbounded, each held its encoded
/// record and its write's future until the server had worked through the other writes, which
/// was fresh memory for all of them at once (page faults were a fifth of the router's time).
/// The server takes the writes one after another anyway, so a window keeps it as busy.
pub(crate) const RECORD_WRITES: usize = 512;

/// Run the router until `shutdown`, then drain: stop pulling, let every avatar finish and
/// settle what it holds (within `shutdown_grace_secs`), close the connection.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    telemetry::describe();
    let silos = config
        .router
        .silo_set(config.bus.silo_count)
        .map_err(ServiceError::Config)?;
    let (bus, ready) = config.connect(&shutdown).await?;
    let kv = bus.kv("avatars").await?;
    let seen = bus.kv("seen").await?;
    let addresses = bus.kv("addresses").await?;
    let timers = bus.kv("timers").await?;
    let ctx = Arc::new(Ctx {
        bus: bus.clone(),
        kv,
        seen,
        addresses,
        timers,
        limits: decide::Limits {
            max_sources: config.router.max_sources_per_user,
            max_destinations: config.router.max_destinations_per_user,
            links: escalate::Links {
                base_url: config.router.ack_link_base_url.clone(),
            },
        },
        cfg: config.router.clone(),
        writes: tokio::sync::Semaphore::new(RECORD_WRITES),
    });
    // a silo is served only while this instance holds its lease (see tocsin_bus::lease)
    let leases = Leases::open(
        &bus,
        "router",
        Duration::from_secs(config.router.silo_lease_secs),
    )
    .await?;
    info!(holder = leases.holder(), "router instance");
    let mut workers = Vec::new();
    for silo in silos.iter() {
        let (ctx, leases, shutdown) = (ctx.clone(), leases.clone(), shutdown.clone());
        // if this task is dropped (aborted), its workers go with it, and theirs with them
        workers.push(AbortOnDropHandle::new(tokio::spawn(async move {
            leases
                .serve_silo(silo, shutdown, |stop| serve_silo(ctx.clone(), silo, stop))
                .await;
            Ok::<(), BusError>(())
        })));
    }
    ready.set(true);
    info!(silos = silos.len(), "router running");
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(error = %e, "silo worker stopped with an error"),
            Err(e) => warn!(error = %e, "silo worker panicked"),
        }
    }
    ready.set(false);
    bus.drain().await;
    info!("router stopped");
    Ok(())
}
