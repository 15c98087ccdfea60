//! The `[router]` configuration section: which silos this instance serves, batching, avatar
//! idle time and queue, per-user limits, and where acknowledgement links point.

use serde::{Deserialize, Serialize};
use tocsin_bus::{BusConfig, SiloSet};

/// The `[router]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Which silos this instance owns: `all`, or numbers and ranges like `0-7,12`.
    /// Ignored when `replica_ordinal` is set.
    pub silos: String,
    /// This instance's StatefulSet ordinal; with `replica_count` it decides the silos
    /// (silo k belongs to ordinal k mod replica_count).
    pub replica_ordinal: Option<u32>,
    pub replica_count: u32,
    /// Where `/healthz`, `/readyz` and `/metrics` listen; empty for none.
    pub ops_listen: String,
    /// An avatar with no message for this long is evicted from memory.
    pub avatar_idle_secs: u64,
    /// Messages queued per avatar before the silo's puller waits.
    pub avatar_queue: usize,
    /// Unacked messages per silo consumer (backpressure on the whole silo).
    pub max_ack_pending: i64,
    /// Outputs an avatar gathers before it hands them to its silo's outbox (it hands them
    /// over sooner when its queue is empty).
    pub batch: usize,
    /// An avatar checkpoints (saves its record, then acks what it handled) at the latest when
    /// its oldest unacked message is this old, or when it has handled `checkpoint_messages`;
    /// sooner when a command waits for its reply or its address index or timer changes.
    /// Outputs do not wait for it. Must stay well under `bus.ack_wait_secs`.
    pub checkpoint_ms: u64,
    pub checkpoint_messages: usize,
    pub max_sources_per_user: usize,
    pub max_destinations_per_user: usize,
    /// How long shutdown waits for avatars to finish and settle.
    pub shutdown_grace_secs: u64,
    /// A silo is served only by the holder of its lease, renewed every quarter of this; a
    /// router that dies without releasing its silos holds them this long.
    pub silo_lease_secs: u64,
    /// The API's public URL, for the signed acknowledgement links in notifications
    /// (`<url>/v1/ack/…`); empty: no links.
    pub ack_link_base_url: String,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            silos: "all".into(),
            replica_ordinal: None,
            replica_count: 1,
            ops_listen: "127.0.0.1:9102".into(),
            avatar_idle_secs: 300,
            avatar_queue: 256,
            max_ack_pending: 20_000,
            batch: 64,
            checkpoint_ms: 200,
            checkpoint_messages: 256,
            max_sources_per_user: 100,
            max_destinations_per_user: 20,
            shutdown_grace_secs: 20,
            silo_lease_secs: 15,
            ack_link_base_url: "http://127.0.0.1:8080".into(),
        }
    }
}

tocsin_runtime::service_config!(router: RouterConfig, ops: ops_listen);

impl RouterConfig {
    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, bus: &BusConfig) -> Vec<String> {
        let mut p = Vec::new();
        if let Err(e) = self.silo_set(bus.silo_count) {
            p.push(format!("router.silos: {e}"));
        }
        if self.silo_lease_secs < 2 {
            p.push("router.silo_lease_secs: must be at least 2".into());
        }
        if self.avatar_queue == 0 || self.batch == 0 || self.checkpoint_messages == 0 {
            p.push(
                "router.avatar_queue, router.batch and router.checkpoint_messages: must be greater than 0"
                    .into(),
            );
        }
        if self.checkpoint_ms.saturating_mul(5) > bus.ack_wait_secs.saturating_mul(1000) {
            p.push(format!(
                "router.checkpoint_ms: {} is too close to bus.ack_wait_secs ({} s); keep it under a fifth of it",
                self.checkpoint_ms, bus.ack_wait_secs
            ));
        }
        p
    }
}

impl RouterConfig {
    pub fn silo_set(&self, silo_count: u32) -> Result<SiloSet, String> {
        SiloSet::resolve(
            &self.silos,
            self.replica_ordinal,
            self.replica_count,
            silo_count,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_runtime::{ConfigDoc, ConfigSource};

    #[test]
    fn config_problems_are_all_reported() {
        let src = ConfigSource {
            file: None,
            env: [
                ("TOCSIN_BUS__SILO_COUNT".to_string(), "0".to_string()),
                ("TOCSIN_ROUTER__SILOS".to_string(), "9-2".to_string()),
            ]
            .into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with("bus.silo_count")),
            "{problems:?}"
        );
        let src = ConfigSource {
            file: None,
            env: [("TOCSIN_ROUTER__SILOS".to_string(), "0-99".to_string())].into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.starts_with("router.silos")),
            "{problems:?}"
        );
        assert!(Config::load(&ConfigDoc::empty()).is_ok());
    }
}
