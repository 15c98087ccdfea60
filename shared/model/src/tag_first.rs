//! Decoding the busiest tagged messages (a notification for an avatar, an escalation tick, a
//! failed job's outcome; a history record) without serde's buffering. An internally tagged
//! enum (`#[serde(tag = "type")]`) is decoded by serde in two passes: the whole object into an
//! intermediate tree, then the tree into the variant, allocating twice; it cost about half of
//! such a message's decode (docs/performance.md). serde_json writes the tag as the first
//! entry, so when a payload starts with it, the variant's fields are read in one pass into a
//! struct of their own. Anything else (another variant, keys in another order, whitespace) is
//! decoded by the derived code as before: the result is the same either way, and the tests
//! below hold the two to it.

use crate::{AvatarMessage, DeliveryOutcome, HistoryRecord, Millis, Notification};
use crate::{NotificationId, TimelineEntry, UserId};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The tag of an internally tagged value as serde_json writes it: `{"<key>":"<tag>",…`, the
/// tag first. None when the text does not start that way.
fn leading_tag<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let rest = json
        .strip_prefix("{\"")?
        .strip_prefix(key)?
        .strip_prefix("\":\"")?;
    let tag = &rest[..rest.find('"')?];
    // an escaped tag is left to the derived code
    (!tag.contains('\\')).then_some(tag)
}

// Each variant's fields as a struct. The tag is a field too, so that a second `type` key is
// refused as a duplicate, as the derived code refuses it.

#[derive(Deserialize)]
struct Notify {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    notification: Notification,
}

#[derive(Deserialize)]
struct Tick {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    at_ms: Millis,
}

#[derive(Deserialize)]
struct Outcome {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    outcome: DeliveryOutcome,
}

#[derive(Deserialize)]
struct Stored {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    notification: Notification,
    entry: TimelineEntry,
}

#[derive(Deserialize)]
struct Timeline {
    #[serde(rename = "type")]
    _tag: IgnoredAny,
    user: UserId,
    notification_id: NotificationId,
    entry: TimelineEntry,
}

impl AvatarMessage {
    /// Decode an avatar message from JSON text (see the module's note).
    pub fn from_json(json: &str) -> serde_json::Result<AvatarMessage> {
        Ok(match leading_tag(json, "type") {
            Some("notify") => {
                let Notify { notification, .. } = serde_json::from_str(json)?;
                AvatarMessage::Notify { notification }
            }
            Some("tick") => {
                let Tick { at_ms, .. } = serde_json::from_str(json)?;
                AvatarMessage::Tick { at_ms }
            }
            Some("outcome") => {
                let Outcome { outcome, .. } = serde_json::from_str(json)?;
                AvatarMessage::Outcome { outcome }
            }
            _ => serde_json::from_str(json)?,
        })
    }
}

impl HistoryRecord {
    /// Decode a history record from JSON text (see the module's note).
    pub fn from_json(json: &str) -> serde_json::Result<HistoryRecord> {
        Ok(match leading_tag(json, "type") {
            Some("notification") => {
                let Stored {
                    notification,
                    entry,
                    ..
                } = serde_json::from_str(json)?;
                HistoryRecord::Notification {
                    notification,
                    entry,
                }
            }
            Some("timeline") => {
                let Timeline {
                    user,
                    notification_id,
                    entry,
                    ..
                } = serde_json::from_str(json)?;
                HistoryRecord::Timeline {
                    user,
                    notification_id,
                    entry,
                }
            }
            _ => serde_json::from_str(json)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Channel, Priority, SourceKind, SourceRef};

    fn notification() -> Notification {
        Notification {
            id: NotificationId("n1".into()),
            user: UserId::parse("u1").unwrap(),
            source: SourceRef {
                kind: SourceKind::Feed,
                id: Some("s1".into()),
                label: "a \"feed\"".into(),
            },
            title: "caf\u{e9} \\ \"quoted\"".into(),
            body: "line\nbreak".into(),
            url: Some("https://example.org/a".into()),
            priority: Priority::URGENT,
            tags: vec!["ops".into()],
            created_at_ms: 5,
            published_at_ms: Some(4),
            dedup_key: Some("k".into()),
        }
    }

    fn entry() -> TimelineEntry {
        TimelineEntry {
            at_ms: 6,
            kind: "delivered".into(),
            channel: Some(Channel::Sms),
            detail: "d1: ok".into(),
        }
    }

    fn messages() -> Vec<AvatarMessage> {
        vec![
            AvatarMessage::Notify {
                notification: notification(),
            },
            AvatarMessage::Tick { at_ms: 7 },
            AvatarMessage::Outcome {
                outcome: DeliveryOutcome {
                    job_id: "n1:d1".into(),
                    notification_id: NotificationId("n1".into()),
                    user: UserId::parse("u1").unwrap(),
                    destination_id: "d1".into(),
                    channel: Channel::Webhook,
                    delivered: false,
                    detail: "410".into(),
                    attempts: 2,
                    at_ms: 8,
                },
            },
            AvatarMessage::Ping {
                source_id: "hb".into(),
                at_ms: 9,
            },
        ]
    }

    fn records() -> Vec<HistoryRecord> {
        vec![
            HistoryRecord::Notification {
                notification: notification(),
                entry: entry(),
            },
            HistoryRecord::Timeline {
                user: UserId::parse("u1").unwrap(),
                notification_id: NotificationId("n1".into()),
                entry: entry(),
            },
            HistoryRecord::Forget {
                user: UserId::parse("u1").unwrap(),
            },
        ]
    }

    /// `text` decodes to the same result (or fails too) both ways.
    fn same<T: PartialEq + std::fmt::Debug + serde::de::DeserializeOwned>(
        text: &str,
        fast: fn(&str) -> serde_json::Result<T>,
    ) -> Option<T> {
        let derived = serde_json::from_str::<T>(text).ok();
        assert_eq!(fast(text).ok(), derived, "{text}");
        derived
    }

    #[test]
    fn the_fast_path_decodes_what_the_derived_code_decodes() {
        for m in messages() {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(same(&text, AvatarMessage::from_json), Some(m.clone()));
            // pretty-printed and with keys in another order: the derived code's way
            let pretty = serde_json::to_string_pretty(&m).unwrap();
            assert_eq!(same(&pretty, AvatarMessage::from_json), Some(m.clone()));
            let mut v = serde_json::to_value(&m).unwrap();
            v["added_later"] = serde_json::json!([1, {"x": "y"}]);
            let moved = serde_json::to_string(&v).unwrap();
            assert_eq!(same(&moved, AvatarMessage::from_json), Some(m));
        }
        for r in records() {
            let text = serde_json::to_string(&r).unwrap();
            assert_eq!(same(&text, HistoryRecord::from_json), Some(r.clone()));
            let pretty = serde_json::to_string_pretty(&r).unwrap();
            assert_eq!(same(&pretty, HistoryRecord::from_json), Some(r));
        }
    }

    #[test]
    fn the_fast_path_refuses_what_the_derived_code_refuses() {
        let n = serde_json::to_string(&notification()).unwrap();
        for bad in [
            String::new(),
            "{".into(),
            r#"{"type":"notify"}"#.into(),
            r#"{"type":"notify","notification":{}}"#.into(),
            format!(r#"{{"type":"notify","notification":{n},"type":"tick"}}"#),
            format!(r#"{{"type":"notify","notification":{n},"notification":{n}}}"#),
            r#"{"type":"tick","at_ms":"soon"}"#.into(),
            r#"{"type":"ti\"ck","at_ms":1}"#.into(),
            r#"{"type":"no_such_thing","at_ms":1}"#.into(),
            r#"{"type":"tick""#.into(),
        ] {
            assert_eq!(same(&bad, AvatarMessage::from_json), None);
        }
        for bad in [
            r#"{"type":"timeline","user":"u1"}"#.to_owned(),
            r#"{"type":"notification","entry":{"at_ms":1,"kind":"x"}}"#.to_owned(),
            r#"{"type":"timeline","user":"NOT A USER","notification_id":"n","entry":{"at_ms":1,"kind":"x"}}"#.to_owned(),
        ] {
            assert_eq!(same(&bad, HistoryRecord::from_json), None);
        }
    }

    #[test]
    fn the_leading_tag_is_read_only_where_serde_json_writes_it() {
        assert_eq!(
            leading_tag(r#"{"type":"tick","at_ms":1}"#, "type"),
            Some("tick")
        );
        assert_eq!(leading_tag(r#"{"at_ms":1,"type":"tick"}"#, "type"), None);
        assert_eq!(leading_tag(r#"{ "type":"tick"}"#, "type"), None);
        assert_eq!(leading_tag(r#"{"type":"ti\"ck"}"#, "type"), None);
        assert_eq!(leading_tag(r#"{"type":"tick"#, "type"), None);
        assert_eq!(leading_tag(r#"{"types":"tick"}"#, "type"), None);
        assert_eq!(leading_tag("", "type"), None);
    }
}
