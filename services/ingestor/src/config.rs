//! The `[ingestor]` configuration section: polling, politeness, fetch limits, WebSub, the
//! SMTP ingress and IMAP watching, each setting validated with every problem reported at once.

use crate::feeds::fetch::AddressPolicy;
use serde::{Deserialize, Serialize};
use tocsin_bus::BusConfig;

/// The `[ingestor]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestorConfig {
    pub ops_listen: String,
    /// How often each feed is polled when healthy, unless a subscriber asks for another
    /// interval (a source's `poll_interval_secs`).
    pub poll_interval_secs: u64,
    /// The shortest interval a subscriber may ask for: politeness towards the sites watched.
    pub min_poll_interval_secs: u64,
    /// Random spread added to each interval, as a fraction of it (0.1 = ±10%).
    pub jitter: f64,
    /// The longest wait between polls of a failing feed.
    pub max_backoff_secs: u64,
    /// After this many failed checks in a row a source is broken: its owner gets a
    /// notification once, and another when it works again.
    pub source_broken_after: u32,
    /// The shortest time between two requests to one host.
    pub host_min_interval_ms: u64,
    /// Requests to one host at the same time.
    pub per_host_concurrency: usize,
    /// Requests in flight overall.
    pub max_concurrent_fetches: usize,
    pub fetch_timeout_secs: u64,
    pub connect_timeout_secs: u64,
    /// Feeds larger than this (after decompression) are refused.
    pub max_body_bytes: usize,
    /// Allow feeds on loopback addresses (tests, the local demo).
    pub allow_loopback: bool,
    /// Allow feeds on private, link-local and unique-local addresses (an intranet).
    pub allow_private_addresses: bool,
    pub user_agent: String,
    /// Item keys remembered per feed.
    pub seen_capacity: usize,
    /// Outstanding publishes while fanning out.
    pub publish_window: usize,
    pub shutdown_grace_secs: u64,
    /// The public base URL hubs reach the ingestor at (WebSub callbacks are
    /// `<url>/websub/<feed key>`). Empty: WebSub off, every feed is polled.
    pub websub_public_url: String,
    /// Where the WebSub callback listens (put it behind the public URL).
    pub websub_listen: String,
    /// The lease asked of hubs.
    pub websub_lease_secs: u64,
    /// How often a feed with an active WebSub lease is still polled, as a safety net.
    pub websub_poll_interval_secs: u64,
    /// Where the SMTP ingress for forwarded e-mail listens (port 25 behind your MX, or a
    /// relay); empty: no e-mail ingress.
    pub smtp_listen: String,
    /// The name the SMTP server greets with.
    pub smtp_hostname: String,
    pub smtp_max_message_bytes: usize,
    pub smtp_max_connections: usize,
    /// Sessions one client (an IPv4 address or an IPv6 /64) may hold at once.
    pub smtp_max_connections_per_client: usize,
    /// The longest a session may last, however busy it keeps itself.
    pub smtp_max_session_secs: u64,
    /// Message bytes all sessions together may hold while they receive (each DATA reserves
    /// `smtp_max_message_bytes`; a session that cannot reserve in time gets 421): what the
    /// SMTP ingress may take of the ingestor's memory.
    pub smtp_max_buffered_bytes: usize,
    pub smtp_timeout_secs: u64,
    /// Messages one inbound address accepts per minute; 0: no limit.
    pub smtp_per_address_per_minute: u32,
    /// PEM certificate chain and key: when both are set the SMTP ingress offers STARTTLS.
    pub smtp_tls_cert: String,
    pub smtp_tls_key: String,
    /// Check SPF and DKIM of inbound mail (results become tags; users may require a pass).
    pub smtp_verify_senders: bool,
    /// How often a watched IMAP mailbox is checked when its server offers no IDLE.
    pub imap_poll_secs: u64,
    /// The DNS server for those checks (`ip:port`); empty: the system's resolvers.
    pub smtp_dns_server: String,
}

impl Default for IngestorConfig {
    fn default() -> Self {
        Self {
            ops_listen: "127.0.0.1:9101".into(),
            poll_interval_secs: 300,
            min_poll_interval_secs: 60,
            jitter: 0.1,
            max_backoff_secs: 6 * 3600,
            source_broken_after: 3,
            host_min_interval_ms: 2000,
            per_host_concurrency: 1,
            max_concurrent_fetches: 32,
            fetch_timeout_secs: 20,
            connect_timeout_secs: 10,
            max_body_bytes: 5 * 1024 * 1024,
            allow_loopback: false,
            allow_private_addresses: false,
            user_agent: concat!("tocsin/", env!("CARGO_PKG_VERSION"), " (feed watcher)").into(),
            seen_capacity: 1000,
            publish_window: 512,
            shutdown_grace_secs: 20,
            websub_public_url: String::new(),
            websub_listen: "127.0.0.1:8081".into(),
            websub_lease_secs: 10 * 86_400,
            websub_poll_interval_secs: 3600,
            smtp_listen: String::new(),
            smtp_hostname: "tocsin.localhost".into(),
            smtp_max_message_bytes: 10 * 1024 * 1024,
            smtp_max_connections: 64,
            smtp_max_connections_per_client: 8,
            smtp_max_session_secs: 600,
            smtp_max_buffered_bytes: 128 * 1024 * 1024,
            smtp_timeout_secs: 60,
            smtp_per_address_per_minute: 60,
            smtp_tls_cert: String::new(),
            smtp_tls_key: String::new(),
            smtp_verify_senders: false,
            imap_poll_secs: 60,
            smtp_dns_server: String::new(),
        }
    }
}

tocsin_runtime::service_config!(ingestor: IngestorConfig, ops: ops_listen);

impl IngestorConfig {
    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, _bus: &BusConfig) -> Vec<String> {
        self.validate()
    }
}

impl IngestorConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.poll_interval_secs == 0 {
            p.push("ingestor.poll_interval_secs: must be greater than 0".into());
        }
        if self.source_broken_after == 0 {
            p.push("ingestor.source_broken_after: must be greater than 0".into());
        }
        if self.min_poll_interval_secs == 0 {
            p.push("ingestor.min_poll_interval_secs: must be greater than 0".into());
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            p.push(format!(
                "ingestor.jitter: must be 0-0.5, got {}",
                self.jitter
            ));
        }
        for (f, v) in [
            ("per_host_concurrency", self.per_host_concurrency),
            ("max_concurrent_fetches", self.max_concurrent_fetches),
            ("max_body_bytes", self.max_body_bytes),
            ("seen_capacity", self.seen_capacity),
            ("publish_window", self.publish_window),
        ] {
            if v == 0 {
                p.push(format!("ingestor.{f}: must be greater than 0"));
            }
        }
        if !self.websub_public_url.is_empty() {
            if url::Url::parse(&self.websub_public_url).is_err() {
                p.push(format!(
                    "ingestor.websub_public_url: {:?} is not a URL",
                    self.websub_public_url
                ));
            }
            if self.websub_listen.is_empty() {
                p.push("ingestor.websub_listen: needed when websub_public_url is set".into());
            }
            if self.websub_lease_secs < 60 {
                p.push("ingestor.websub_lease_secs: at least 60".into());
            }
        }
        if !self.smtp_listen.is_empty()
            && (self.smtp_max_message_bytes == 0
                || self.smtp_max_connections == 0
                || self.smtp_max_connections_per_client == 0
                || self.smtp_max_session_secs == 0
                || self.smtp_timeout_secs == 0)
        {
            p.push("ingestor.smtp_max_message_bytes, smtp_max_connections, smtp_max_connections_per_client, smtp_max_session_secs and smtp_timeout_secs: must be greater than 0".into());
        }
        if !self.smtp_dns_server.is_empty()
            && self
                .smtp_dns_server
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            p.push(format!(
                "ingestor.smtp_dns_server: {:?} is not ip:port (e.g. 127.0.0.1:53)",
                self.smtp_dns_server
            ));
        }
        if self.smtp_tls_cert.is_empty() != self.smtp_tls_key.is_empty() {
            p.push("ingestor.smtp_tls_cert and smtp_tls_key: set both or neither".into());
        }
        if self.fetch_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            p.push(
                "ingestor.fetch_timeout_secs and connect_timeout_secs: must be greater than 0"
                    .into(),
            );
        }
        p
    }

    pub(crate) fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_loopback: self.allow_loopback,
            allow_private: self.allow_private_addresses,
        }
    }
}
