//! The `[api]` configuration section: where it listens, its public URL, the admin token,
//! body and rate limits, and the inbound SMS settings.

use serde::{Deserialize, Serialize};
use tocsin_bus::BusConfig;

/// The `[api]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Where the API listens (and its /healthz, /readyz, /metrics, unless `ops_listen` is set).
    pub listen: String,
    /// Where /healthz, /readyz and /metrics listen instead, off the public listener (the Helm
    /// chart sets it). Empty: on `listen`.
    pub ops_listen: String,
    /// The URL people reach the API at; private feed URLs are built from it.
    pub public_url: String,
    /// The token that may create users and handle dead letters. Empty: admin calls refused.
    /// Give it through `TOCSIN_API__ADMIN_TOKEN`, never in a file under version control.
    pub admin_token: String,
    /// How long to wait for an avatar to answer a command.
    pub command_timeout_secs: u64,
    /// How long to wait for the history service.
    pub query_timeout_secs: u64,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// On shutdown, how long requests in flight may take to finish; live streams end at once.
    pub shutdown_grace_secs: u64,
    /// The domain of users' inbound e-mail addresses (`<user>.<secret>@<domain>`): the one
    /// whose MX points at the ingestor's SMTP listener.
    pub inbound_domain: String,
    /// Twilio's auth token, to check `X-Twilio-Signature` on inbound SMS
    /// (`POST /v1/sms/twilio`). Give it through `TOCSIN_API__TWILIO_AUTH_TOKEN`. Empty: off.
    pub twilio_auth_token: String,
    /// The `token` an SMS gateway (Kannel) passes on `GET /v1/sms/kannel`. Empty: off.
    pub sms_inbound_token: String,
    /// Requests a minute per client address (a burst of as many; 0: no limit). Behind a proxy
    /// every client has the proxy's address: raise it, or limit at the proxy.
    pub rate_per_ip_per_minute: u32,
    /// Requests a minute per authenticated user (0: no limit).
    pub rate_per_user_per_minute: u32,
    /// Live streams (`/v1/stream`) one user may hold open at once; more get 429.
    pub max_streams_per_user: usize,
    /// Connections the API holds in all; more are closed as they arrive.
    pub max_connections: usize,
    /// Connections one client (an IPv4 address or an IPv6 /64; behind a proxy, the proxy)
    /// may hold.
    pub max_connections_per_client: usize,
    /// A new connection's first request must arrive within this long (more than the
    /// command and query timeouts, so no answer is cut off).
    pub header_timeout_secs: u64,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout_secs: u64,
    /// How long a browser stays signed in to the web app (days).
    pub session_days: u64,
    /// The number prefixes users may add SMS destinations for (`["+1", "+44"]`); empty: none
    /// (every message is paid by the operator, so countries are opted into).
    pub sms_allowed_prefixes: Vec<String>,
    /// New SMS, e-mail and XMPP destinations get notifications only once their owner gives
    /// back the code sent to them. Off only where every user is trusted with every address.
    pub verify_destinations: bool,
    /// An IM address or phone number held unconfirmed this long (seconds) may be taken over by
    /// a user who confirms it.
    pub claim_unconfirmed_after_secs: u64,
    /// Prefixes never texted, besides the built-in premium-rate and satellite ranges
    /// (`crate::sms_numbers::PREMIUM`).
    pub sms_blocked_prefixes: Vec<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            ops_listen: String::new(),
            public_url: "http://127.0.0.1:8080".into(),
            admin_token: String::new(),
            command_timeout_secs: 10,
            query_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            shutdown_grace_secs: 20,
            inbound_domain: "tocsin.localhost".into(),
            twilio_auth_token: String::new(),
            sms_inbound_token: String::new(),
            rate_per_ip_per_minute: 1200,
            rate_per_user_per_minute: 600,
            max_streams_per_user: 8,
            max_connections: 512,
            max_connections_per_client: 64,
            header_timeout_secs: 30,
            idle_timeout_secs: 60,
            session_days: 30,
            verify_destinations: true,
            claim_unconfirmed_after_secs: 86_400,
            sms_allowed_prefixes: Vec::new(),
            sms_blocked_prefixes: Vec::new(),
        }
    }
}

tocsin_runtime::service_config!(api: ApiConfig, ops: ops_listen);

impl ApiConfig {
    /// The listener's limits.
    pub fn listener_limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            max_connections: self.max_connections,
            per_client: self.max_connections_per_client,
            header_timeout: std::time::Duration::from_secs(self.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
        }
    }

    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, _bus: &BusConfig) -> Vec<String> {
        let mut p = Vec::new();
        if url::Url::parse(&self.public_url).is_err() {
            p.push(format!(
                "api.public_url: {:?} is not a URL",
                self.public_url
            ));
        }
        if !self.admin_token.is_empty() && self.admin_token.len() < 16 {
            p.push("api.admin_token: use at least 16 characters".into());
        }
        let slowest = self.command_timeout_secs.max(self.query_timeout_secs);
        if self.header_timeout_secs <= slowest || self.idle_timeout_secs <= slowest {
            p.push(format!(
                "api.header_timeout_secs ({}) and idle_timeout_secs ({}): must be longer than the command and query timeouts ({slowest} s), or slow answers are cut off",
                self.header_timeout_secs, self.idle_timeout_secs
            ));
        }
        if self.max_connections == 0 || self.max_connections_per_client == 0 {
            p.push("api.max_connections and max_connections_per_client: must be at least 1".into());
        }
        if !(1..=366).contains(&self.session_days) {
            p.push("api.session_days: must be 1-366".into());
        }
        if self.max_body_bytes < 1024 {
            p.push("api.max_body_bytes: must be at least 1024".into());
        }
        for (field, list) in [
            ("sms_allowed_prefixes", &self.sms_allowed_prefixes),
            ("sms_blocked_prefixes", &self.sms_blocked_prefixes),
        ] {
            p.extend(crate::sms_numbers::problems(field, list));
        }
        p
    }
}
