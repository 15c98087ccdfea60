//! The `[delivery]` configuration section: which channels this instance serves, concurrency
//! and provider rates, the address guard for user-given URLs, and each channel's provider.

use crate::{email, sms, xmpp};
use serde::{Deserialize, Serialize};
use tocsin_bus::BusConfig;
use tocsin_model::Channel;

/// The `[delivery]` section.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub ops_listen: String,
    /// The channels this instance serves (each can run in its own deployment). From the
    /// environment as a comma-separated list: `TOCSIN_DELIVERY__CHANNELS=xmpp,sms`.
    #[serde(deserialize_with = "channel_list")]
    pub channels: Vec<Channel>,
    /// Jobs in flight per channel.
    pub concurrency: usize,
    /// Jobs pulled but not yet settled per channel — queued in lanes behind a slow or failing
    /// destination, or being sent. The rest wait in the stream (backpressure), not in memory.
    pub max_ack_pending: i64,
    /// Sends in flight for one user per channel (at most `concurrency`): a tenant's slow
    /// destinations hold at most this many of the channel's sends.
    pub max_sends_per_user: usize,
    /// Jobs one user may hold in a channel's window; the rest are parked back in the stream
    /// until some of theirs are settled, so one tenant cannot fill the window for all.
    pub max_held_per_user: usize,
    /// Parked jobs pulled but not yet settled per channel (their own window).
    pub parked_max_ack_pending: i64,
    /// Failed sends in a row that pause a destination (its jobs are parked, one probes it).
    pub breaker_failures: u32,
    /// The first pause; doubled each time the probe fails, up to `breaker_max_secs`.
    pub breaker_open_secs: u64,
    pub breaker_max_secs: u64,
    pub webhook_timeout_secs: u64,
    /// Allow webhooks on loopback addresses (tests, local receivers).
    pub allow_loopback: bool,
    /// Allow webhooks on private and link-local addresses (an intranet).
    pub allow_private_addresses: bool,
    pub shutdown_grace_secs: u64,
    /// The SMTP relay for the `email` channel.
    pub smtp: email::SmtpConfig,
    /// tocsin's XMPP account for the `xmpp` channel.
    pub xmpp: xmpp::XmppConfig,
    /// The SMS provider for the `sms` channel.
    pub sms: sms::SmsConfig,
    /// The VAPID identity for Web Push (browsers) on the `push` channel.
    pub web_push: crate::webpush::WebPushConfig,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            ops_listen: "127.0.0.1:9104".into(),
            channels: vec![Channel::Webhook],
            concurrency: 32,
            max_ack_pending: 10_000,
            max_sends_per_user: 8,
            max_held_per_user: 64,
            parked_max_ack_pending: 1_000,
            breaker_failures: 5,
            breaker_open_secs: 30,
            breaker_max_secs: 600,
            webhook_timeout_secs: 10,
            allow_loopback: false,
            allow_private_addresses: false,
            shutdown_grace_secs: 20,
            smtp: email::SmtpConfig::default(),
            xmpp: xmpp::XmppConfig::default(),
            sms: sms::SmsConfig::default(),
            web_push: Default::default(),
        }
    }
}

/// A list of channels, or a comma-separated string of them (environment variables are strings).
fn channel_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Channel>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        List(Vec<Channel>),
        Text(String),
    }
    match Either::deserialize(d)? {
        Either::List(l) => Ok(l),
        Either::Text(t) => t
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(|c| {
                Channel::ALL
                    .into_iter()
                    .find(|x| x.as_str() == c)
                    .ok_or_else(|| {
                        serde::de::Error::custom(format!(
                            "{c:?} is not a channel (xmpp, sms, email, push, webhook)"
                        ))
                    })
            })
            .collect(),
    }
}

tocsin_runtime::service_config!(delivery: DeliveryConfig, ops: ops_listen);

impl DeliveryConfig {
    /// What is wrong with this section, given the `[bus]` one; each problem names its field.
    pub fn check(&self, _bus: &BusConfig) -> Vec<String> {
        let mut p = Vec::new();
        for c in &self.channels {
            match c {
                Channel::Webhook | Channel::Push | Channel::Sink => {}
                Channel::Email => p.extend(self.smtp.problems()),
                Channel::Xmpp => p.extend(self.xmpp.problems()),
                Channel::Sms => p.extend(self.sms.problems()),
            }
        }
        if let Err(e) = self.web_push.vapid() {
            p.push(e);
        }
        if self.concurrency == 0 || self.webhook_timeout_secs == 0 {
            p.push("delivery.concurrency and webhook_timeout_secs: must be greater than 0".into());
        }
        if self.max_held_per_user == 0 || self.breaker_failures == 0 || self.max_sends_per_user == 0
        {
            p.push(
                "delivery.max_held_per_user, max_sends_per_user and breaker_failures: must be at least 1"
                    .into(),
            );
        }
        if self.parked_max_ack_pending < 1 {
            p.push(format!(
                "delivery.parked_max_ack_pending: must be at least 1, got {}",
                self.parked_max_ack_pending
            ));
        }
        if self.max_ack_pending < 1 {
            p.push(format!(
                "delivery.max_ack_pending: must be at least 1, got {}",
                self.max_ack_pending
            ));
        }
        p
    }
}

impl DeliveryConfig {
    /// The address this instance sends `channel` from, as a destination would name it: the
    /// e-mail sender, the XMPP account (bare, lower-case), the SMS number. None for channels
    /// sent to URLs, and when it is not configured.
    pub fn own_address(&self, channel: Channel) -> Option<String> {
        let a = match channel {
            Channel::Email => self
                .smtp
                .from
                .parse::<lettre::message::Mailbox>()
                .ok()?
                .email
                .to_string(),
            Channel::Xmpp => tocsin_model::validate_jid(&self.xmpp.jid).ok()?,
            Channel::Sms => match self.sms.provider {
                sms::SmsProvider::Twilio => self.sms.twilio_from.clone(),
                sms::SmsProvider::Kannel => self.sms.kannel_from.clone(),
            },
            _ => return None,
        };
        (!a.trim().is_empty()).then_some(a)
    }

    /// The bounds on what one user or destination may hold of a channel.
    pub fn fairness(&self) -> crate::fairness::Bounds {
        crate::fairness::Bounds {
            max_held_per_user: self.max_held_per_user,
            breaker_failures: self.breaker_failures,
            breaker_open: std::time::Duration::from_secs(self.breaker_open_secs),
            breaker_max: std::time::Duration::from_secs(
                self.breaker_max_secs.max(self.breaker_open_secs),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_runtime::ConfigSource;

    #[test]
    fn channels_come_from_the_environment_as_a_comma_list() {
        let src = ConfigSource {
            file: None,
            env: [(
                "TOCSIN_DELIVERY__CHANNELS".to_string(),
                "webhook, push".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let cfg = Config::load(&src.load().unwrap()).unwrap();
        assert_eq!(cfg.delivery.channels, [Channel::Webhook, Channel::Push]);
        let src = ConfigSource {
            file: None,
            env: [(
                "TOCSIN_DELIVERY__CHANNELS".to_string(),
                "pigeon".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let problems = Config::load(&src.load().unwrap()).unwrap_err();
        assert!(
            problems[0].contains("\"pigeon\" is not a channel"),
            "{problems:?}"
        );
    }
}
