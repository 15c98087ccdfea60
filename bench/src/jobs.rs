//! The delivery jobs a benchmark watches go by: a core subscription to a channel's subject,
//! each message one job or an envelope of a router round's jobs.

use anyhow::{Result, anyhow};
use futures::StreamExt;
use std::collections::VecDeque;
use tocsin_bus::Bus;
use tocsin_model::{Channel, DeliveryJob};

/// The delivery jobs published on a channel's subject, seen by a core subscription: a
/// message is one job, or an envelope of a router round's jobs.
pub struct Jobs {
    sub: async_nats::Subscriber,
    pending: VecDeque<DeliveryJob>,
}

impl Jobs {
    /// Watch `channel`'s jobs (a core subscription sees every publish).
    pub async fn watch(bus: &Bus, channel: Channel) -> Result<Jobs> {
        Ok(Jobs {
            sub: bus
                .client()
                .subscribe(bus.subjects().delivery(channel.as_str()))
                .await?,
            pending: VecDeque::new(),
        })
    }
}

/// The next delivery job seen on `jobs`, by `deadline`.
pub async fn next_job(
    jobs: &mut Jobs,
    deadline: tokio::time::Instant,
    what: &str,
) -> Result<DeliveryJob> {
    loop {
        if let Some(job) = jobs.pending.pop_front() {
            return Ok(job);
        }
        let m = tokio::time::timeout_at(deadline, jobs.sub.next())
            .await
            .map_err(|_| anyhow!("{what}: not all fired in time"))?
            .ok_or_else(|| anyhow!("subscription ended"))?;
        for record in tocsin_bus::envelope::records(&m.payload)? {
            jobs.pending
                .push_back(tocsin_bus::decode(&record.payload, "delivery job")?);
        }
    }
}
