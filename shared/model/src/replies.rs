//! What a person may write back over IM or SMS (`ack 12`, `mute 1h`, `silence 2h bikes`), and
//! the signed links that acknowledge a notification.

use crate::{Millis, NotificationId, UserId};
use serde::{Deserialize, Serialize};

/// What a person may write back over IM or SMS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyCommand {
    /// `ack`/`ok` (the latest), `ack 12`, `ack all`.
    Ack(AckTarget),
    Help,
    List,
    /// `mute 1h`, `mute 30m`, `mute 2d`.
    Mute(u64),
    Unmute,
    /// `silence 2h bikes`, `silence bikes` (an hour): the source (id or label) for a while.
    Silence {
        secs: u64,
        source: String,
    },
    /// `unsilence bikes`, `unsilence` (every silence).
    Unsilence(Option<String>),
    Status,
    Unknown(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckTarget {
    Latest,
    Reference(u32),
    All,
}

impl ReplyCommand {
    pub const HELP: &'static str = "Commands: ack (the latest), ack 12, ack all, list, mute 1h, unmute, silence 2h <source>, unsilence <source>, status, help";

    pub fn parse(text: &str) -> ReplyCommand {
        let t = text.trim().to_ascii_lowercase();
        let mut words = t.split_whitespace();
        let first = words.next().unwrap_or("");
        if first == "silence" || first == "unsilence" {
            let rest: Vec<&str> = words.collect();
            if first == "unsilence" {
                return ReplyCommand::Unsilence((!rest.is_empty()).then(|| rest.join(" ")));
            }
            let (secs, source) = match rest.split_first() {
                Some((d, tail)) if d.starts_with(|c: char| c.is_ascii_digit()) => {
                    (parse_duration(d), tail.join(" "))
                }
                _ => (Some(3600), rest.join(" ")),
            };
            return match secs {
                Some(secs) if !source.is_empty() => ReplyCommand::Silence { secs, source },
                _ => ReplyCommand::Unknown(text.trim().to_owned()),
            };
        }
        let second = words.next();
        let rest = words.next();
        match (first, second, rest) {
            ("ack" | "ok" | "k" | "👍", None, _) => ReplyCommand::Ack(AckTarget::Latest),
            ("ack" | "ok", Some("all"), None) => ReplyCommand::Ack(AckTarget::All),
            ("ack" | "ok", Some(n), None) => match n.trim_start_matches('#').parse() {
                Ok(r) => ReplyCommand::Ack(AckTarget::Reference(r)),
                Err(_) => ReplyCommand::Unknown(text.trim().to_owned()),
            },
            ("help" | "?", None, _) => ReplyCommand::Help,
            ("list", None, _) => ReplyCommand::List,
            ("unmute", None, _) => ReplyCommand::Unmute,
            ("status", None, _) => ReplyCommand::Status,
            ("mute", Some(d), None) => match parse_duration(d) {
                Some(s) => ReplyCommand::Mute(s),
                None => ReplyCommand::Unknown(text.trim().to_owned()),
            },
            ("mute", None, _) => ReplyCommand::Mute(3600),
            _ => ReplyCommand::Unknown(text.trim().to_owned()),
        }
    }
}

impl ReplyCommand {
    /// Whether the command changes the user's settings: over SMS, whose sender can be forged,
    /// it then needs the user's reply PIN ([`split_pin`]).
    pub fn changes_settings(&self) -> bool {
        matches!(
            self,
            ReplyCommand::Mute(_)
                | ReplyCommand::Unmute
                | ReplyCommand::Silence { .. }
                | ReplyCommand::Unsilence(_)
        )
    }
}

/// The user's reply PIN, which SMS replies that change settings start with: its hash
/// ([`reply_pin_hash`]) and the wrong ones in a row.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplyPin {
    pub hash: String,
    #[serde(default)]
    pub failures: u32,
    /// After [`ReplyPin::MAX_FAILURES`] wrong PINs, SMS replies change nothing until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked_until_ms: Option<Millis>,
}

impl ReplyPin {
    pub const MAX_FAILURES: u32 = 5;
    pub const LOCK_MS: Millis = 3_600_000;
}

/// A PIN: 4 to 8 digits.
pub fn is_pin(s: &str) -> bool {
    (4..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A reply's leading PIN (`4821 mute 30d`) and the command after it; no PIN: the whole text.
pub fn split_pin(text: &str) -> (Option<&str>, &str) {
    let t = text.trim_start();
    let end = t.find(char::is_whitespace).unwrap_or(t.len());
    let (first, rest) = t.split_at(end);
    if is_pin(first) && !rest.trim().is_empty() {
        (Some(first), rest.trim_start())
    } else {
        (None, text)
    }
}

/// What the record keeps of a user's reply PIN.
pub fn reply_pin_hash(user: &UserId, pin: &str) -> String {
    crate::digest(&["reply-pin", user.as_str(), pin])
}

/// `90s`, `30m`, `1h`, `2d` (at most 30 days) in seconds.
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    let secs = n.checked_mul(mult)?;
    (secs > 0 && secs <= 30 * 86400).then_some(secs)
}

/// The signature in an acknowledgement link: HMAC-SHA256 keyed by a secret derived from the
/// user's token hash, over the notification id (32 hex characters). Only the avatar and the
/// API, which both read the user's record, can make or check one.
pub fn ack_signature(token_hash: &str, notification: &NotificationId) -> String {
    use hmac::{Hmac, Mac};
    let key = crate::digest(&["ack-link-key", token_hash]);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(b"ack\0");
    mac.update(notification.as_str().as_bytes());
    crate::to_hex(&mac.finalize().into_bytes()[..16])
}

/// Constant-time check of a link signature.
pub fn ack_signature_valid(token_hash: &str, notification: &NotificationId, sig: &str) -> bool {
    let want = ack_signature(token_hash, notification);
    want.len() == sig.len()
        && want
            .bytes()
            .zip(sig.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse() {
        use AckTarget::*;
        assert_eq!(ReplyCommand::parse(" OK "), ReplyCommand::Ack(Latest));
        assert_eq!(
            ReplyCommand::parse("ack 12"),
            ReplyCommand::Ack(Reference(12))
        );
        assert_eq!(
            ReplyCommand::parse("ack #7"),
            ReplyCommand::Ack(Reference(7))
        );
        assert_eq!(ReplyCommand::parse("ack all"), ReplyCommand::Ack(All));
        assert_eq!(ReplyCommand::parse("mute 1h"), ReplyCommand::Mute(3600));
        assert_eq!(ReplyCommand::parse("mute 30m"), ReplyCommand::Mute(1800));
        assert!(matches!(
            ReplyCommand::parse("mute forever"),
            ReplyCommand::Unknown(_)
        ));
        assert_eq!(ReplyCommand::parse("status"), ReplyCommand::Status);
        assert_eq!(
            ReplyCommand::parse("Silence 2h Road Bikes"),
            ReplyCommand::Silence {
                secs: 7200,
                source: "road bikes".into()
            }
        );
        assert_eq!(
            ReplyCommand::parse("silence bikes"),
            ReplyCommand::Silence {
                secs: 3600,
                source: "bikes".into()
            }
        );
        for bad in ["silence", "silence 2h", "silence 99y bikes"] {
            assert!(
                matches!(ReplyCommand::parse(bad), ReplyCommand::Unknown(_)),
                "{bad}"
            );
        }
        assert_eq!(
            ReplyCommand::parse("unsilence bikes"),
            ReplyCommand::Unsilence(Some("bikes".into()))
        );
        assert_eq!(
            ReplyCommand::parse("unsilence"),
            ReplyCommand::Unsilence(None)
        );
        assert!(matches!(
            ReplyCommand::parse("ack 12 please"),
            ReplyCommand::Unknown(_)
        ));
        assert_eq!(parse_duration("0m"), None);
        assert_eq!(parse_duration("31d"), None);
    }

    #[test]
    fn a_pin_leads_a_reply_and_only_settings_need_it() {
        assert_eq!(split_pin("4821 mute 30d"), (Some("4821"), "mute 30d"));
        assert_eq!(split_pin(" 12345678  silence 2h bikes").0, Some("12345678"));
        // too short or long, alone, or not first: no PIN
        for text in [
            "482 mute 1h",
            "123456789 mute 1h",
            "4821",
            "mute 1h 4821",
            "ack 1234",
        ] {
            assert_eq!(split_pin(text), (None, text), "{text}");
        }
        assert!(ReplyCommand::parse("mute 1h").changes_settings());
        assert!(ReplyCommand::parse("unsilence").changes_settings());
        for text in ["ack", "ack 12", "status", "list", "help"] {
            assert!(!ReplyCommand::parse(text).changes_settings(), "{text}");
        }
        let u = UserId::parse("u1").unwrap();
        assert_ne!(
            reply_pin_hash(&u, "4821"),
            reply_pin_hash(&UserId::parse("u2").unwrap(), "4821")
        );
    }

    #[test]
    fn ack_links_are_signed_per_user() {
        let n = NotificationId("n1".into());
        let s = ack_signature("hash-a", &n);
        assert_eq!(s.len(), 32);
        assert!(ack_signature_valid("hash-a", &n, &s));
        assert!(!ack_signature_valid("hash-b", &n, &s));
        assert!(!ack_signature_valid(
            "hash-a",
            &NotificationId("n2".into()),
            &s
        ));
        assert!(!ack_signature_valid("hash-a", &n, &s[..31]));
    }
}
