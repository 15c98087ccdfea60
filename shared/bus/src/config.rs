//! The `[bus]` section every service shares.

use serde::{Deserialize, Serialize};

/// How to reach the bus and how the contract is laid out on it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// NATS server URL(s), comma-separated.
    pub url: String,
    /// Prefix of every subject, stream and bucket: `[a-z0-9_-]`, 1-32 characters.
    pub prefix: String,
    /// How many silos users are partitioned into. Changing it moves users between silos:
    /// choose it for the largest deployment you expect (silos are cheap).
    pub silo_count: u32,
    /// Stream and bucket replicas (3 in a JetStream cluster).
    pub replicas: usize,
    /// JetStream's duplicate window for `Nats-Msg-Id`.
    pub duplicate_window_secs: u64,
    /// Deliveries after which a failing message goes to the dead-letter stream.
    pub max_deliver: i64,
    /// How long a consumer has to settle a message before it is redelivered.
    pub ack_wait_secs: u64,
    /// How long dead letters are kept.
    pub dead_letter_max_age_days: u64,
    /// How long events are kept in the event stream (the archiver normally takes them within
    /// seconds; this is how long it may be down without losing any).
    pub events_max_age_hours: u64,
    /// The most the event stream may hold on disk, in bytes (0: no limit but the age). When
    /// reached, the oldest events are discarded.
    pub events_max_bytes: u64,
    pub connect_timeout_secs: u64,
    pub request_timeout_secs: u64,
    /// How long a publish keeps retrying transient failures before giving up.
    pub publish_retry_secs: u64,
    /// Outstanding PubAcks per connection before publishers wait.
    pub max_ack_inflight: usize,
    /// The file holding this service's NKey seed (one line, `SU…`): its identity on NATS,
    /// which the server's `authorization` block lets do only what this service does
    /// (`tocsin nats-auth` makes one per service; ADR 0029). Empty: no credentials.
    pub nkey_seed_file: String,
    /// A PEM file of the certificate authority that signed the NATS server's certificate:
    /// set, the connection must be TLS and the server must prove itself with it.
    pub tls_ca_file: String,
    /// Require TLS to NATS even without `tls_ca_file` (the server's certificate is then
    /// checked against the system's roots).
    pub tls_required: bool,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "tocsin".into(),
            silo_count: 16,
            replicas: 1,
            duplicate_window_secs: 120,
            max_deliver: 10,
            ack_wait_secs: 30,
            dead_letter_max_age_days: 14,
            events_max_age_hours: 168,
            events_max_bytes: 0,
            connect_timeout_secs: 10,
            request_timeout_secs: 5,
            publish_retry_secs: 10,
            max_ack_inflight: 4096,
            nkey_seed_file: String::new(),
            tls_ca_file: String::new(),
            tls_required: false,
        }
    }
}

/// A problem with the `[bus]` section.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bus.{field}: {message}")]
pub struct ConfigError {
    pub field: &'static str,
    pub message: String,
}

impl BusConfig {
    /// The servers in `url`: one, or several separated by commas (the nodes of a cluster;
    /// the client learns the others from the first it reaches, too).
    pub fn server_urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// Every problem with this section, as text.
    pub fn problems(&self) -> Vec<String> {
        self.validate().iter().map(ToString::to_string).collect()
    }

    /// Every problem with this section.
    pub fn validate(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut err = |field, message: String| out.push(ConfigError { field, message });
        if self.url.trim().is_empty() {
            err("url", "must not be empty".into());
        }
        for u in self.server_urls() {
            if let Err(e) = u.parse::<async_nats::ServerAddr>() {
                err("url", format!("{u:?} is not a NATS server address: {e}"));
            }
        }
        if !tocsin_model::ids::is_token(&self.prefix, 32) {
            err(
                "prefix",
                format!(
                    "{:?} must be 1-32 characters of a-z, 0-9, '_' or '-'",
                    self.prefix
                ),
            );
        }
        if !(1..=4096).contains(&self.silo_count) {
            err(
                "silo_count",
                format!("must be 1-4096, got {}", self.silo_count),
            );
        }
        if !matches!(self.replicas, 1 | 3 | 5) {
            err(
                "replicas",
                format!("must be 1, 3 or 5, got {}", self.replicas),
            );
        }
        if self.max_deliver < 1 {
            err(
                "max_deliver",
                format!("must be at least 1, got {}", self.max_deliver),
            );
        }
        for (f, v) in [
            ("duplicate_window_secs", self.duplicate_window_secs),
            ("ack_wait_secs", self.ack_wait_secs),
            ("connect_timeout_secs", self.connect_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("dead_letter_max_age_days", self.dead_letter_max_age_days),
            ("events_max_age_hours", self.events_max_age_hours),
        ] {
            if v == 0 {
                err(f, "must be greater than 0".into());
            }
        }
        for (f, v) in [
            ("nkey_seed_file", &self.nkey_seed_file),
            ("tls_ca_file", &self.tls_ca_file),
        ] {
            if !v.is_empty() && !std::path::Path::new(v).is_file() {
                err(f, format!("{v:?} is not a readable file"));
            }
        }
        if self.max_ack_inflight == 0 {
            err("max_ack_inflight", "must be greater than 0".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_all_reported() {
        assert!(BusConfig::default().validate().is_empty());
        let bad = BusConfig {
            prefix: "Bad.Prefix".into(),
            silo_count: 0,
            replicas: 2,
            ..Default::default()
        };
        let fields: Vec<_> = bad.validate().iter().map(|e| e.field).collect();
        assert_eq!(fields, ["prefix", "silo_count", "replicas"]);
    }
}
