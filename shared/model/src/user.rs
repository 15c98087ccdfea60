//! A user's configuration and state, owned by the user's avatar in the router and persisted
//! as one JetStream KV entry. Other services may read it (the API checks tokens against it);
//! only the avatar writes it.

pub use crate::destination::{
    AddressEntry, Destination, PushFormat, Verification, validate_e164, validate_jid,
};
use crate::{Filter, Millis, RecentSet, SignInLink, UserId, WebSession};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the avatar keeps for one user.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub created_at_ms: Millis,
    /// SHA-256 (hex) of the user's API token; the token itself is never stored.
    pub token_hash: String,
    /// SHA-256 (hex) of the secret in the user's private feed URL.
    pub feed_token_hash: String,
    /// SHA-256 (hex) of the secret in the user's inbound e-mail address
    /// (`<user>.<secret>@<inbound domain>`); empty: no inbound address.
    #[serde(default)]
    pub inbound_token_hash: String,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default)]
    pub destinations: Vec<Destination>,
    /// Envelope senders allowed to mail the inbound address: `ann@example.org` or
    /// `@example.org` (a whole domain). Empty: anyone.
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    /// Take only mail that passes SPF or (aligned) DKIM at the inbound address.
    #[serde(default)]
    pub require_authenticated_mail: bool,
    /// What inbound mail means (priority, alert key, resolve), the first matching rule first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mail_rules: Vec<crate::MailRule>,
    /// The shared topics the user created (at most [`crate::topics::MAX_PER_USER`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topics: Vec<String>,
    /// The latest status the ingestor reported per source id.
    #[serde(default)]
    pub source_status: BTreeMap<String, SourceStatus>,
    /// The latest status delivery reported per destination id (a paused destination).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub destination_status: BTreeMap<String, SourceStatus>,
    /// Recently routed notification ids and content keys, for deduplication across sources
    /// and across retries that fall outside JetStream's duplicate window. Stored as `seen`
    /// (fingerprints, [`crate::recent`]); a record from before keeps them as `recent`.
    #[serde(default, rename = "seen", alias = "recent")]
    pub recent: RecentSet,
    /// Escalation policy, presence, pending escalations, acknowledgement references.
    #[serde(default)]
    pub reach: crate::Reach,
    /// The browsers signed in to the web app (at most [`WebSession::MAX_PER_USER`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<WebSession>,
    /// The PIN SMS replies that change settings start with (none: they change nothing).
    /// Boxed, as most users have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_pin: Option<Box<crate::ReplyPin>>,
    /// Sign-in links mailed and not yet used (at most [`SignInLink::MAX_PENDING`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sign_in_links: Vec<SignInLink>,
}

/// The part of a stored [`UserRecord`] that the SMTP ingress checks for every message, read
/// from the record's JSON without building the rest: its dedup set alone is most of a busy
/// user's record, and would be parsed and hashed once per e-mail for nothing.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct InboundMail {
    /// See [`UserRecord::inbound_token_hash`].
    #[serde(default)]
    pub inbound_token_hash: String,
    /// See [`UserRecord::allowed_senders`].
    #[serde(default)]
    pub allowed_senders: Vec<String>,
    /// See [`UserRecord::require_authenticated_mail`].
    #[serde(default)]
    pub require_authenticated_mail: bool,
}

/// A source a user watches.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Source {
    pub id: String,
    #[serde(flatten)]
    pub spec: SourceSpec,
    #[serde(default)]
    pub filter: Filter,
    /// A label the user chose, shown with each notification.
    #[serde(default)]
    pub label: String,
    pub created_at_ms: Millis,
    /// How its notifications are treated (default: as they come).
    #[serde(default, skip_serializing_if = "SourceSettings::is_default")]
    pub settings: SourceSettings,
}

/// A user's settings for one source.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct SourceSettings {
    /// The priority of every notification from the source, whatever its item said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::Priority>,
    /// Until then, its notifications are kept in history and reach no one (urgent ones
    /// excepted, as with the user's own mute).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub muted_until_ms: Option<Millis>,
    /// The name of the escalation policy its notifications follow (default: `feeds` for a
    /// feed, `default` for everything else).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Group its notifications: the first reaches the user at once, the rest of this many
    /// seconds are kept in history and told as one summary when the window ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_secs: Option<u64>,
    /// Gather its notifications into one message — hourly, daily at a local time, or when
    /// enough have gathered — instead of one each (urgent ones excepted, unless it says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Box<crate::Digest>>,
    /// Tags added to each of its notifications (silences and filters can name them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl SourceSettings {
    /// The shortest and longest grouping window.
    pub const MIN_GROUP_SECS: u64 = 10;
    pub const MAX_GROUP_SECS: u64 = 86_400;
    /// The most tags a source adds, and the longest each may be.
    pub const MAX_TAGS: usize = 10;
    pub const MAX_TAG: usize = 64;
}

impl SourceSettings {
    pub fn is_default(&self) -> bool {
        self == &SourceSettings::default()
    }
}

/// The kinds of source.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceSpec {
    /// An RSS 0.9x/2.0, RSS 1.0 (RDF), Atom or JSON Feed polled by the ingestor — or, with an
    /// extractor, any document at a URL polled the same way (a JSON API).
    Feed {
        url: String,
        /// Deliver the items already in the feed on the first poll (default: only new ones).
        #[serde(default)]
        deliver_existing: bool,
        /// How often this user wants the feed checked (default: the ingestor's
        /// `poll_interval_secs`); never more often than its `min_poll_interval_secs`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        poll_interval_secs: Option<u64>,
        /// Not a feed: the document is read by this extractor (a JSON API's mapping).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extract: Option<Box<crate::Extract>>,
        /// What a price change on a known listing, or a repost, tells the user.
        #[serde(default, skip_serializing_if = "crate::ListingRules::is_default")]
        listing: crate::ListingRules,
        /// Its own request headers (an API key as `{{secret}}`, a `User-Agent`).
        #[serde(default, skip_serializing_if = "crate::SourceRequest::is_default")]
        request: Box<crate::SourceRequest>,
        /// Polled only within this weekly window (local time); absent: always.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        active_hours: Option<Box<crate::Window>>,
    },
    /// An IMAP mailbox the ingestor watches (IDLE where the server offers it, else polling):
    /// each new message becomes a notification, parsed like forwarded mail.
    Imap {
        host: String,
        port: u16,
        /// `tls` (implicit, port 993) or `none` (plain text: a server on the same machine).
        tls: ImapTls,
        username: String,
        /// Only on its way to the ingestor (in the command); never kept in the user's record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        password: Option<String>,
        #[serde(default = "inbox")]
        mailbox: String,
    },
    /// A dead-man's switch: something (a cron job, a backup) requests its ping URL at least
    /// every `period_secs`; when `period_secs + grace_secs` pass without a ping, its owner is
    /// told through their policy, and the next ping resolves that.
    Heartbeat {
        period_secs: u64,
        #[serde(default)]
        grace_secs: u64,
        /// SHA-256 (hex) of the secret in its ping URL; the secret itself is never stored.
        token_hash: String,
    },
    /// A shared topic another user created, subscribed to with its subscribe key (checked
    /// when added, never kept): what is published to it arrives like a shared feed's items.
    Topic { topic: String },
    /// An inbound webhook with its own secret URL (`/v1/hooks/<user>/<id>/<secret>`): an
    /// Alertmanager or Grafana contact point, or any program's JSON through a mapping. Its
    /// notifications are this source's: its priority, policy, mute and silences apply.
    Hook {
        format: HookFormat,
        /// SHA-256 (hex) of the secret in its URL; the secret itself is never stored.
        token_hash: String,
        /// For `json`: how the payload becomes notifications.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mapping: Option<Box<crate::JsonMapping>>,
        /// For `alertmanager` and `grafana`: one notification per alert group (keyed by the
        /// group, resolved when none of it fires) rather than per alert.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        per_group: bool,
    },
}

/// What a hook source takes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum HookFormat {
    /// Prometheus Alertmanager's webhook (version 4).
    Alertmanager,
    /// Grafana Alerting's webhook contact point (version 1).
    Grafana,
    /// Any JSON, through the source's mapping.
    Json,
}

impl SourceSpec {
    /// The kind's name: `feed`, `imap`, `heartbeat`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Feed { .. } => "feed",
            SourceSpec::Imap { .. } => "imap",
            SourceSpec::Heartbeat { .. } => "heartbeat",
            SourceSpec::Hook { .. } => "hook",
            SourceSpec::Topic { .. } => "topic",
        }
    }

    /// What the kind is called for a person, in the web app's and the CLI's lists of sources.
    pub fn kind_name(&self) -> &'static str {
        match self {
            SourceSpec::Feed { extract: None, .. } => "Feed",
            SourceSpec::Feed {
                extract: Some(x), ..
            } => match x.kind() {
                "html" => "Web page",
                "change" => "Watched page",
                _ => "JSON API",
            },
            SourceSpec::Imap { .. } => "Mailbox",
            SourceSpec::Heartbeat { .. } => "Heartbeat",
            SourceSpec::Hook { .. } => "Webhook",
            SourceSpec::Topic { .. } => "Shared topic",
        }
    }
}

fn inbox() -> String {
    "INBOX".into()
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImapTls {
    Tls,
    None,
}

/// The health of a source as the ingestor last saw it, or of a destination as delivery did.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct SourceStatus {
    pub ok: bool,
    /// What went wrong, for a person: the input and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub checked_at_ms: Millis,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Failing long enough (`ingestor.source_broken_after` checks in a row) that its owner
    /// is told; the avatar tells them once when it becomes so, and again when it works.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub broken: bool,
}

/// The closed set of delivery channels.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Xmpp,
    Sms,
    Email,
    Push,
    Webhook,
    /// Discards every message at once, reporting it delivered: no I/O, for benchmarks
    /// (`tocsin-bench pipeline` measures the pipeline to it) and for trying a policy. Served only
    /// where `delivery.channels` lists it.
    Sink,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Xmpp,
        Channel::Sms,
        Channel::Email,
        Channel::Push,
        Channel::Webhook,
        Channel::Sink,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Xmpp => "xmpp",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::Push => "push",
            Channel::Webhook => "webhook",
            Channel::Sink => "sink",
        }
    }
}

/// Check and normalise an allowed-senders list: each entry an address or `@domain`.
pub fn validate_allowed_senders(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > 100 {
        return Err(format!("at most 100 entries, got {}", list.len()));
    }
    list.iter()
        .map(|e| {
            let e = e.trim().to_ascii_lowercase();
            let ok = if let Some(domain) = e.strip_prefix('@') {
                domain.contains('.') && !domain.contains('@')
            } else {
                Destination::validate_address(Channel::Email, &e).is_ok()
            };
            if ok && e.len() <= 254 && !e.chars().any(char::is_whitespace) {
                Ok(e)
            } else {
                Err(format!("{e:?} is neither an address nor @domain"))
            }
        })
        .collect()
}

/// Whether `sender` (an envelope address) may mail a user with `allowed` senders.
pub fn sender_allowed(allowed: &[String], sender: &str) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let s = sender.trim().to_ascii_lowercase();
    allowed.iter().any(|a| {
        if a.starts_with('@') {
            s.ends_with(a.as_str())
        } else {
            s == *a
        }
    })
}

/// SHA-256 (hex) of a secret token, as stored.
pub fn hash_token(token: &str) -> String {
    crate::digest(&["token", token])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_address_can_be_claimed_after_the_claim_period_only() {
        let (ann, bob) = (UserId::parse("ann").unwrap(), UserId::parse("bob").unwrap());
        let mut d = Destination {
            id: "d1".into(),
            channel: Channel::Sms,
            address: "+15550001234".into(),
            secret: None,
            label: String::new(),
            push_format: None,
            throttle: None,
            verification: None,
            created_at_ms: 1_000,
        };
        let (_, confirmed) = AddressEntry::of(&ann, &d);
        assert!(confirmed.held_against(&ann, 0, 10).is_none(), "hers");
        let why = confirmed.held_against(&bob, i64::MAX, 10).unwrap();
        assert!(why.contains("already registered"), "{why}");
        d.verification = Some(Box::new(Verification {
            code_hash: String::new(),
            sent_at_ms: 0,
            expires_at_ms: 0,
            attempts: 0,
        }));
        let (_, held) = AddressEntry::of(&ann, &d);
        assert_eq!(held.unconfirmed_since_ms, Some(1_000));
        let why = held.held_against(&bob, 1_009, 10).unwrap();
        assert!(why.contains("not confirmed it yet"), "{why}");
        assert!(held.held_against(&bob, 1_010, 10).is_none(), "claimable");
    }

    #[test]
    fn email_addresses_are_checked() {
        for good in ["ann@example.org", " bob.smith+alerts@mail.example.co.uk "] {
            assert!(
                Destination::validate_address(Channel::Email, good).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "ann",
            "@example.org",
            "ann@",
            "ann@localhost",
            "a@b@c.org",
            "ann@example.org\r\nBcc: x@y.org",
            "Ann <ann@example.org>",
        ] {
            assert!(
                Destination::validate_address(Channel::Email, bad).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_inbound_mail_view_reads_a_stored_record() {
        let mut recent = RecentSet::default();
        for i in 0..RecentSet::CAPACITY {
            recent.insert(format!("n{i:032x}"));
        }
        let record = UserRecord {
            id: UserId::parse("ann").unwrap(),
            name: "Ann".into(),
            created_at_ms: 1,
            token_hash: "a".repeat(64),
            feed_token_hash: "b".repeat(64),
            inbound_token_hash: "c".repeat(64),
            sources: vec![],
            destinations: vec![],
            allowed_senders: vec!["@alerts.example.com".into()],
            require_authenticated_mail: true,
            mail_rules: vec![],
            topics: vec![],
            source_status: Default::default(),
            destination_status: Default::default(),
            recent,
            reach: Default::default(),
            sessions: vec![],
            reply_pin: None,
            sign_in_links: vec![],
        };
        let stored = serde_json::to_vec(&record).unwrap();
        let view: InboundMail = serde_json::from_slice(&stored).unwrap();
        assert_eq!(
            view,
            InboundMail {
                inbound_token_hash: record.inbound_token_hash.clone(),
                allowed_senders: record.allowed_senders.clone(),
                require_authenticated_mail: true,
            }
        );
        // a record from before inbound mail existed reads as "no inbound address"
        let old: InboundMail = serde_json::from_str(r#"{"id":"ann","recent":[]}"#).unwrap();
        assert_eq!(old, InboundMail::default());
    }

    #[test]
    fn recent_keys_are_stored_as_seen_and_read_from_a_record_from_before() {
        let mut record: UserRecord = serde_json::from_str(
            r#"{"id":"ann","name":"Ann","created_at_ms":1,"token_hash":"t","feed_token_hash":"f",
                "recent":["nold","k:sha256:ab"]}"#,
        )
        .unwrap();
        assert!(record.recent.contains("nold") && record.recent.contains("k:sha256:ab"));
        record.recent.insert("nnew");
        let stored = serde_json::to_value(&record).unwrap();
        assert!(stored.get("recent").is_none(), "{stored}");
        let back: UserRecord = serde_json::from_value(stored).unwrap();
        assert_eq!(back.recent.len(), 3);
        assert!(back.recent.contains("nold") && back.recent.contains("nnew"));
    }

    #[test]
    fn allowed_senders() {
        let l =
            validate_allowed_senders(&[" Ann@Example.org ".into(), "@alerts.example.com".into()])
                .unwrap();
        assert_eq!(l, ["ann@example.org", "@alerts.example.com"]);
        assert!(validate_allowed_senders(&["nope".into()]).is_err());
        assert!(sender_allowed(&[], "anyone@x.org"));
        assert!(sender_allowed(&l, "ANN@example.org"));
        assert!(sender_allowed(&l, "grafana@alerts.example.com"));
        assert!(!sender_allowed(&l, "eve@example.org"));
        assert!(!sender_allowed(&l, "x@evilalerts.example.com.net"));
        assert!(!sender_allowed(&l, ""), "a null sender is not on a list");
    }
}
