//! Shared topics: a user creates one, hands its subscribe key to others, and whatever is
//! published to it with its publish key reaches every subscriber — through the ingestor's
//! feed fan-out, each subscriber's filter applied, as a shared feed's item would.

use crate::{Millis, UserId};
use serde::{Deserialize, Serialize};

/// A topic, in the `topics` bucket under [`TopicRecord::key`]. Written by the API when the
/// owner creates it; the keys are kept as hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub name: String,
    pub owner: UserId,
    /// SHA-256 (hex) of the key that publishes to it.
    pub publish_hash: String,
    /// SHA-256 (hex) of the key that subscribes to it.
    pub subscribe_hash: String,
    pub created_at_ms: Millis,
}

impl TopicRecord {
    /// Its key in the `topics` bucket.
    pub fn key(name: &str) -> String {
        format!("t.{name}")
    }
}

/// One message published to a topic, on `<p>.ingest.topic.<name>` for the ingestor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopicItem {
    pub topic: String,
    /// Its identity (the publish's id): a repeat is the same item for every subscriber.
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub priority: crate::Priority,
    #[serde(default)]
    pub tags: Vec<String>,
    pub published_at_ms: Millis,
}

/// How many topics one user may create.
pub const MAX_PER_USER: usize = 10;

/// The feed key a topic's subscribers are kept under in the ingestor (`topic:<name>`).
pub fn subscription_url(name: &str) -> String {
    format!("topic:{name}")
}

/// Check a topic's name: 1-64 of `a-z 0-9 - _` (it is a subject token).
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a topic name: 1-64 of a-z, 0-9, - and _"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_subject_tokens() {
        assert!(validate_name("homelab-alerts_2").is_ok());
        for bad in ["", "Home", "a.b", "a b", "a>", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(subscription_url("x"), "topic:x");
    }
}
