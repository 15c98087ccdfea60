//! Where a user is reached: destinations, their addresses checked and normalised per channel,
//! their confirmation by a code, and the index that says which user an IM address or phone
//! number belongs to.

use crate::{Channel, Millis, UserId};
use serde::{Deserialize, Serialize};

/// Where a user can be reached.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Destination {
    pub id: String,
    pub channel: Channel,
    /// The channel's address: a URL for webhooks.
    pub address: String,
    /// A shared secret for signing (webhooks: HMAC-SHA256 of each request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(default)]
    pub label: String,
    /// For push: the protocol the endpoint speaks (ntfy by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_format: Option<PushFormat>,
    /// At most so many notifications an hour; the rest of the hour go out as one digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<crate::Throttle>,
    /// Set while the destination waits for its owner to confirm the code sent to it: it gets
    /// nothing else until then. None: confirmed (or a channel that needs no confirming).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<Box<Verification>>,
    pub created_at_ms: Millis,
}

/// The code sent to a new SMS, e-mail or XMPP destination, which its owner gives back to
/// prove the address is theirs (only its hash is kept).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Verification {
    pub code_hash: String,
    pub sent_at_ms: Millis,
    pub expires_at_ms: Millis,
    /// Wrong codes given for this one.
    #[serde(default)]
    pub attempts: u32,
}

impl Verification {
    /// How long a code works.
    pub const LIFETIME_MS: Millis = 30 * 60_000;
    /// Wrong tries before the code stops working (a new one must be sent).
    pub const MAX_ATTEMPTS: u32 = 5;
    /// A new code is sent at most this often.
    pub const RESEND_MS: Millis = 60_000;

    /// Whether a destination on `channel` must be confirmed: an address tocsin sends to at the
    /// operator's cost or in the operator's name, which anyone could type.
    pub fn needed(channel: Channel) -> bool {
        matches!(channel, Channel::Sms | Channel::Email | Channel::Xmpp)
    }
}

impl Destination {
    /// Whether it may get notifications (confirmed, or needing no confirmation).
    pub fn verified(&self) -> bool {
        self.verification.is_none()
    }
}

/// An entry of the address index: who owns an IM address or phone number, so that presence
/// and replies arriving from it reach the right avatar.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct AddressEntry {
    pub user: UserId,
    pub destination_id: String,
    pub channel: Channel,
    pub address: String,
    /// Set while the owner has not confirmed the address (when they added it): after the
    /// operator's claim period (a day) someone who confirms it may take it over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed_since_ms: Option<Millis>,
}

impl AddressEntry {
    /// The index key and entry of `user`'s destination `d`.
    pub fn of(user: &UserId, d: &Destination) -> (String, AddressEntry) {
        (
            AddressEntry::key(d.channel, &d.address),
            AddressEntry {
                user: user.clone(),
                destination_id: d.id.clone(),
                channel: d.channel,
                address: d.address.clone(),
                unconfirmed_since_ms: (!d.verified()).then_some(d.created_at_ms),
            },
        )
    }

    /// Why `user` may not add this address, or None: it is theirs, or its holder left it
    /// unconfirmed for `claim_after_ms` or longer.
    pub fn held_against(
        &self,
        user: &UserId,
        now: Millis,
        claim_after_ms: Millis,
    ) -> Option<String> {
        if self.user == *user {
            return None;
        }
        match self.unconfirmed_since_ms {
            Some(since) if now.saturating_sub(since) >= claim_after_ms => None,
            Some(since) => Some(format!(
                "{} is held by another user who has not confirmed it yet; if it is yours, add it again after {} (UTC) and confirm it with the code sent to it",
                self.address,
                crate::text::utc_minute(since.saturating_add(claim_after_ms))
            )),
            None => Some(format!(
                "{} is already registered by another user; replies from it could not be told apart",
                self.address
            )),
        }
    }

    /// The index key of an address: `<channel>.<32 hex of its SHA-256>` (KV keys cannot hold
    /// `@` or `+`).
    pub fn key(channel: Channel, address: &str) -> String {
        format!(
            "{}.{}",
            channel.as_str(),
            &crate::digest(&["address", address])[..32]
        )
    }

    /// Whether replies and presence from this channel are taken.
    pub fn indexed(channel: Channel) -> bool {
        matches!(channel, Channel::Xmpp | Channel::Sms)
    }
}

/// What a push endpoint speaks.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PushFormat {
    /// ntfy's publish API (`POST <server>/<topic>` with Title/Priority/Tags/Click headers).
    #[default]
    Ntfy,
    /// A UnifiedPush endpoint: the message as the POST body, at most 4 KiB.
    Unifiedpush,
    /// A browser's Web Push subscription (the web app, installed or not): the message
    /// encrypted to the browser's keys (RFC 8291), the server identified by VAPID (RFC 8292).
    /// The destination's secret holds the keys: `<p256dh>.<auth>`, base64url.
    WebPush,
}

impl Destination {
    /// The key the address index and presence use: `xmpp:ann@example.org`.
    pub fn address_key(&self) -> String {
        format!("{}:{}", self.channel.as_str(), self.address)
    }

    /// Check the address for its channel. Returns the normalised address.
    pub fn validate_address(channel: Channel, address: &str) -> Result<String, String> {
        match channel {
            Channel::Sink => {
                let a = address.trim();
                if a.is_empty() || a.len() > 256 || a.chars().any(char::is_control) {
                    return Err("a sink address is a name of 1-256 printable characters".into());
                }
                Ok(a.to_owned())
            }
            Channel::Webhook | Channel::Push => {
                let u = url::Url::parse(address.trim())
                    .map_err(|e| format!("{address:?} is not a URL ({e})"))?;
                if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
                    return Err(format!(
                        "a {} address must be an http or https URL",
                        channel.as_str()
                    ));
                }
                if address.len() > 2048 {
                    return Err("longer than 2048 bytes".into());
                }
                Ok(u.to_string())
            }
            Channel::Email => {
                let a = address.trim();
                let ok = a.len() <= 254
                    && a.split_once('@').is_some_and(|(local, domain)| {
                        !local.is_empty()
                            && domain.contains('.')
                            && !domain.starts_with('.')
                            && !domain.ends_with('.')
                    })
                    && a.matches('@').count() == 1
                    && !a.chars().any(|c| {
                        c.is_whitespace() || c.is_control() || "<>()[],;:\\\"".contains(c)
                    });
                if ok {
                    Ok(a.to_owned())
                } else {
                    Err(format!("{address:?} is not an e-mail address"))
                }
            }
            Channel::Xmpp => validate_jid(address),
            Channel::Sms => validate_e164(address),
        }
    }
}

/// A bare JID (`ann@example.org`), lower-cased; resources are not addresses.
pub fn validate_jid(address: &str) -> Result<String, String> {
    let a = address.trim().to_lowercase();
    let ok = a.len() <= 1023
        && a.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 1023
                && !domain.is_empty()
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
        })
        && a.matches('@').count() == 1
        && !a
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"&'/:<>".contains(c));
    if ok {
        Ok(a)
    } else {
        Err(format!(
            "{address:?} is not a bare JID like ann@example.org (no resource)"
        ))
    }
}

/// A phone number in E.164 form: `+` and 8 to 15 digits, the first not 0. Spaces, dashes,
/// dots and parentheses are dropped.
pub fn validate_e164(address: &str) -> Result<String, String> {
    let a: String = address
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = a.strip_prefix('+').unwrap_or("");
    if (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Ok(a)
    } else {
        Err(format!(
            "{address:?} is not an E.164 phone number like +15551234567"
        ))
    }
}
