//! tocsin's own addresses, and the one rule that no destination may lead back into tocsin (a
//! notification that becomes a new notification of itself loops for ever). Pure.
//!
//! Delivery publishes the addresses it sends from under [`key`] in the `keys` bucket; the API
//! reads them and calls [`loops_back`] before a destination is added. Mail tocsin sends carries
//! [`LOOP_HEADER`]; the e-mail ingress drops any message carrying it.

use crate::Channel;

/// The header every e-mail tocsin sends carries (its value: the sending domain). Mail that
/// carries it is tocsin's own notification coming back and is never taken in again.
pub const LOOP_HEADER: &str = "X-Tocsin-Loop";

/// The `keys` bucket's key under which delivery publishes the address it sends `channel` from.
pub fn key(channel: Channel) -> String {
    format!("own.{}", channel.as_str())
}

/// What a destination must not point at.
pub struct OwnAddresses<'a> {
    /// The address delivery sends this channel from (its e-mail sender, XMPP account, SMS
    /// number), when an instance serving it has said.
    pub sender: Option<&'a str>,
    /// The domain of every user's inbound e-mail address (`api.inbound_domain`).
    pub inbound_domain: &'a str,
    /// The API's public URL: a webhook or push to it would publish into tocsin.
    pub public_url: &'a str,
}

/// Why a destination on `channel` at `address` (already validated and normalised) would lead
/// back into tocsin, or `None` when it does not.
pub fn loops_back(channel: Channel, address: &str, own: &OwnAddresses<'_>) -> Option<String> {
    let same = |a: &str, b: &str| a.trim().eq_ignore_ascii_case(b.trim());
    if let Some(sender) = own.sender.filter(|s| !s.trim().is_empty())
        && same(address, sender)
    {
        return Some(format!(
            "{address} is the address tocsin itself sends {} from; notifications to it would come back as new ones",
            channel.as_str()
        ));
    }
    match channel {
        Channel::Email => {
            let domain = address.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            (!own.inbound_domain.is_empty() && same(domain, own.inbound_domain)).then(|| {
                format!(
                    "{address} is a tocsin inbound address (@{}): mail to it would come back as a new notification",
                    own.inbound_domain
                )
            })
        }
        Channel::Webhook | Channel::Push => {
            let origin = |u: &str| {
                url::Url::parse(u).ok().map(|u| {
                    (
                        u.host_str().map(str::to_ascii_lowercase),
                        u.port_or_known_default(),
                    )
                })
            };
            let api = origin(own.public_url)?;
            (api.0.is_some() && origin(address) == Some(api)).then(|| {
                format!(
                    "{address} is tocsin's own API ({}): a notification sent there would publish a new one",
                    own.public_url
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: OwnAddresses<'static> = OwnAddresses {
        sender: None,
        inbound_domain: "in.tocsin.example",
        public_url: "https://tocsin.example",
    };

    #[test]
    fn inbound_addresses_and_the_api_itself_are_refused() {
        assert!(loops_back(Channel::Email, "u1.abc@IN.tocsin.example", &OWN).is_some());
        assert!(loops_back(Channel::Email, "ann@tocsin.example", &OWN).is_none());
        assert!(
            loops_back(
                Channel::Webhook,
                "https://TOCSIN.example:443/v1/hooks/x",
                &OWN
            )
            .is_some()
        );
        assert!(loops_back(Channel::Push, "https://tocsin.example/topic", &OWN).is_some());
        // another port of the same host is another server
        assert!(loops_back(Channel::Webhook, "https://tocsin.example:8443/h", &OWN).is_none());
        assert!(loops_back(Channel::Webhook, "https://hooks.example/h", &OWN).is_none());
    }

    #[test]
    fn tocsins_own_sending_addresses_are_refused_on_their_channel() {
        let own = |sender| OwnAddresses {
            sender: Some(sender),
            ..OWN
        };
        let why = loops_back(
            Channel::Email,
            "Notify@Example.org",
            &own("notify@example.org"),
        )
        .unwrap();
        assert!(why.contains("sends email from"), "{why}");
        assert!(
            loops_back(
                Channel::Xmpp,
                "tocsin@example.org",
                &own("tocsin@example.org")
            )
            .is_some()
        );
        assert!(loops_back(Channel::Sms, "+15550001", &own("+15550001")).is_some());
        assert!(loops_back(Channel::Sms, "+15550002", &own("+15550001")).is_none());
        assert!(loops_back(Channel::Xmpp, "ann@example.org", &own("")).is_none());
    }
}
