//! Identifiers that end up inside NATS subjects, so their alphabet is restricted.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A user id: 1–64 characters of `[a-z0-9_-]`, safe inside a NATS subject token.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid user id {0:?}: expected 1-64 characters of a-z, 0-9, '_' or '-'")]
pub struct UserIdError(pub String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self, UserIdError> {
        if is_token(s, 64) {
            Ok(Self(s.to_owned()))
        } else {
            Err(UserIdError(s.chars().take(80).collect()))
        }
    }

    /// A fresh random id (`u` + 24 hex digits).
    pub fn generate(random: [u8; 12]) -> Self {
        let mut s = String::from("u");
        for b in random {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `s` is a non-empty token of `[a-z0-9_-]` no longer than `max`.
pub fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl TryFrom<String> for UserId {
    type Error = UserIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<UserId> for String {
    fn from(u: UserId) -> String {
        u.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A notification id. Deterministic where the input has an identity (a feed item, a publish
/// with an idempotency key), so that a retry produces the same id and JetStream's
/// `Nats-Msg-Id` deduplication and the stores' primary keys make it one notification.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NotificationId(pub String);

impl NotificationId {
    /// The id of feed item `item_key` delivered to `user` through source `source_id`.
    pub fn for_feed_item(user: &UserId, source_id: &str, item_key: &str) -> Self {
        Self(format!(
            "n{}",
            &crate::digest(&["feed", user.as_str(), source_id, item_key])[..32]
        ))
    }

    /// The id of a published notification carrying an idempotency key.
    pub fn for_publish(user: &UserId, idempotency_key: &str) -> Self {
        Self(format!(
            "n{}",
            &crate::digest(&["publish", user.as_str(), idempotency_key])[..32]
        ))
    }

    /// The id of an inbound e-mail (`key`: its Message-ID, else a hash of it) for `user`.
    pub fn for_mail(user: &UserId, key: &str) -> Self {
        Self(format!(
            "n{}",
            &crate::digest(&["mail", user.as_str(), key])[..32]
        ))
    }

    /// The id of the notice that `user`'s source `source_id` broke (`what`: "broken") or
    /// works again ("recovered"), as the status checked at `at_ms` said.
    pub fn for_source_notice(user: &UserId, source_id: &str, what: &str, at_ms: i64) -> Self {
        Self(format!(
            "n{}",
            &crate::digest(&["source", user.as_str(), source_id, what, &at_ms.to_string()])[..32]
        ))
    }

    /// A fresh random id for inputs with no identity of their own.
    pub fn random(random: [u8; 16]) -> Self {
        let mut s = String::from("n");
        for b in random {
            s.push_str(&format!("{b:02x}"));
        }
        Self(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NotificationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_are_subject_safe() {
        assert!(UserId::parse("alice_01-x").is_ok());
        for bad in ["", "Alice", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(UserId::generate([0xab; 12]).as_str().len(), 25);
    }

    #[test]
    fn feed_item_ids_are_stable_and_distinct() {
        let u = UserId::parse("u1").unwrap();
        let a = NotificationId::for_feed_item(&u, "s1", "guid-1");
        assert_eq!(a, NotificationId::for_feed_item(&u, "s1", "guid-1"));
        assert_ne!(a, NotificationId::for_feed_item(&u, "s2", "guid-1"));
        assert_ne!(a, NotificationId::for_publish(&u, "guid-1"));
    }
}
