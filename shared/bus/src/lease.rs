//! Exclusive ownership of a silo while silos move between instances.
//!
//! Which silos an instance serves is decided by configuration (a range, or the StatefulSet
//! ordinal rule), but while a deployment changes — a rolling update from 2 routers to 3 —
//! old and new instances briefly disagree: the new router 2 already wants silo 2 while the
//! old router 0 still serves it. Both pulling from the silo's one durable consumer would
//! split a user's messages between two avatars. So an instance serves a silo only while it
//! holds the silo's **lease**: a key `<service>.<silo>` in the `<P>_LEASES` bucket, taken with
//! an atomic create, renewed with a revision-checked update every quarter of `ttl`, released
//! (deleted, revision-checked) once the silo's work is drained and settled.
//!
//! - A holder that stops gracefully releases at once; the next instance takes the silo
//!   within a poll interval.
//! - A holder that dies leaves its key until the bucket's `max_age` (`ttl`) removes it; the
//!   silo then moves within `ttl`.
//! - A holder that cannot renew (cut off from the bus) stops serving the silo by itself
//!   before its lease can expire on the server — the deadline is counted from the moment the
//!   last successful renewal was *sent* — and a holder whose renewal finds another revision
//!   stops at once. Whatever it had pulled but not acked is redelivered to the next holder.
//!
//! The lease is the fence for pulling; the avatars' revision-checked saves and the
//! deterministic message ids downstream remain the fence for effects, should two instances
//! ever overlap (clocks running at very different rates).

use crate::{Bus, BusError};
use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What a lease key holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseValue {
    /// Who holds it: `<host>/<pid>/<random>`, unique per process start.
    pub holder: String,
    /// When this holder took it (ms since the epoch).
    pub since_ms: i64,
}

/// The leases of one service (`router`, `history`) held by this process.
#[derive(Clone)]
pub struct Leases {
    kv: kv::Store,
    service: String,
    holder: String,
    ttl: Duration,
}

/// The answer to one attempt to take a lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Taken, at this revision.
    Taken(u64),
    /// Somebody else holds it.
    HeldBy(String),
}

/// A renewal that did not succeed.
#[derive(Debug)]
pub enum RenewError {
    /// The key changed or vanished: the lease is gone; stop serving now.
    Lost,
    /// The bus did not answer; try again (until the deadline).
    Transient(String),
}

impl Leases {
    /// Open (create if missing) the lease bucket, whose `max_age` is `ttl`.
    pub async fn open(bus: &Bus, service: &str, ttl: Duration) -> Result<Leases, BusError> {
        let kv = bus
            .kv_expiring(
                "leases",
                "which instance serves which silo (service.silo → holder)",
                ttl,
            )
            .await?;
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Ok(Leases {
            kv,
            service: service.to_owned(),
            holder: format!("{host}/{}/{}", std::process::id(), &random[..8]),
            ttl,
        })
    }

    /// This process's holder name.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn key(&self, silo: u32) -> String {
        format!("{}.{silo}", self.service)
    }

    fn value(&self) -> bytes::Bytes {
        serde_json::to_vec(&LeaseValue {
            holder: self.holder.clone(),
            since_ms: tocsin_model::now_ms(),
        })
        .expect("a lease value always encodes")
        .into()
    }

    /// Who holds the lease of `silo` now, if anybody.
    pub async fn holder_of(&self, silo: u32) -> Result<Option<LeaseValue>, BusError> {
        let key = self.key(silo);
        let entry = self
            .kv
            .get(&key)
            .await
            .map_err(|e| self.kv_error(&key, e))?;
        Ok(entry.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Try once to take the lease of `silo`.
    pub async fn try_take(&self, silo: u32) -> Result<Attempt, BusError> {
        let key = self.key(silo);
        match self.kv.create(&key, self.value()).await {
            Ok(rev) => Ok(Attempt::Taken(rev)),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let holder = self
                    .holder_of(silo)
                    .await?
                    .map(|v| v.holder)
                    .unwrap_or_else(|| "an unreadable holder".into());
                Ok(Attempt::HeldBy(holder))
            }
            Err(e) => Err(self.kv_error(&key, e)),
        }
    }

    /// Renew the lease held at `revision`; the new revision.
    pub async fn renew(&self, silo: u32, revision: u64) -> Result<u64, RenewError> {
        match self.kv.update(self.key(silo), self.value(), revision).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(RenewError::Lost),
            Err(e) => Err(RenewError::Transient(e.to_string())),
        }
    }

    /// Give the lease back (only if it is still the one held at `revision`).
    pub async fn release(&self, silo: u32, revision: u64) -> Result<(), BusError> {
        let key = self.key(silo);
        self.kv
            .delete_expect_revision(&key, Some(revision))
            .await
            .map_err(|e| self.kv_error(&key, e))
    }

    fn kv_error(&self, key: &str, e: impl std::fmt::Display) -> BusError {
        BusError::Kv {
            bucket: self.kv.name.clone(),
            key: key.to_owned(),
            message: e.to_string(),
        }
    }

    /// Serve `silo` for as long as `shutdown` is not cancelled, but only while holding its
    /// lease: wait for the lease, run `serve` with a token that is cancelled when the lease
    /// is lost (or at shutdown), wait for `serve` to finish — it must settle its work when
    /// the token fires — and release. Lost leases are taken again once free.
    pub async fn serve_silo<F, Fut>(&self, silo: u32, shutdown: CancellationToken, mut serve: F)
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let poll = (self.ttl / 4).min(Duration::from_secs(1));
        let renew_every = self.ttl / 4;
        // stop serving before the server can expire the key and hand it to somebody else
        let fence = self.ttl.mul_f64(0.8);
        let service = self.service.as_str();
        let mut waiting_for: Option<String> = None;
        while !shutdown.is_cancelled() {
            let mut revision = match self.try_take(silo).await {
                Ok(Attempt::Taken(rev)) => rev,
                Ok(Attempt::HeldBy(other)) => {
                    if waiting_for.as_deref() != Some(other.as_str()) {
                        info!(
                            service,
                            silo,
                            holder = %other,
                            "silo is held by another instance; waiting until it is released \
                             (at once when it stops, within the lease time if it died)"
                        );
                        waiting_for = Some(other);
                    }
                    pause(poll, &shutdown).await;
                    continue;
                }
                Err(e) => {
                    warn!(service, silo, error = %e, "cannot take the silo's lease; retrying");
                    pause(poll, &shutdown).await;
                    continue;
                }
            };
            waiting_for = None;
            info!(service, silo, holder = %self.holder, "took the silo's lease; serving it");
            metrics::gauge!("tocsin_silos_held", "service" => service.to_owned()).increment(1.0);
            let mut last_renewed = Instant::now();
            let stop = shutdown.child_token();
            let mut work =
                tokio_util::task::AbortOnDropHandle::new(tokio::spawn(serve(stop.clone())));
            let mut lost = false;
            let mut stopping = false;
            let mut tick = tokio::time::interval_at(Instant::now() + renew_every, renew_every);
            // renewed until `serve` has finished, so the silo does not move while it drains
            loop {
                tokio::select! {
                    _ = &mut work => break,
                    _ = stop.cancelled(), if !stopping => stopping = true,
                    _ = tick.tick() => {
                        let sent = Instant::now();
                        match self.renew(silo, revision).await {
                            Ok(rev) => {
                                revision = rev;
                                last_renewed = sent;
                            }
                            Err(RenewError::Lost) => {
                                warn!(service, silo, "the silo's lease was taken over; stopping");
                                lost = true;
                                break;
                            }
                            Err(RenewError::Transient(e)) => {
                                if last_renewed.elapsed() >= fence {
                                    warn!(
                                        service, silo, error = %e,
                                        "cannot renew the silo's lease before it expires; \
                                         stopping until it can be taken again"
                                    );
                                    lost = true;
                                    break;
                                }
                                warn!(service, silo, error = %e, "cannot renew the silo's lease; retrying");
                            }
                        }
                    }
                }
            }
            stop.cancel();
            if !work.is_finished() {
                // the lease is lost: `serve` stops pulling at once and settles what it holds
                let _ = (&mut work).await;
            }
            metrics::gauge!("tocsin_silos_held", "service" => service.to_owned()).decrement(1.0);
            if !lost {
                match self.release(silo, revision).await {
                    Ok(()) => info!(service, silo, "released the silo's lease"),
                    Err(e) => warn!(
                        service, silo, error = %e,
                        "cannot release the silo's lease; it expires by itself"
                    ),
                }
            }
            if !shutdown.is_cancelled() {
                pause(poll, &shutdown).await;
            }
        }
    }
}

async fn pause(d: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = shutdown.cancelled() => {}
    }
}
