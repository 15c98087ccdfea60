//! The one check of a source and of a destination, called by the API (to answer 400 with the
//! field at once) and by the avatar (the authority: a command reaching it by another way is
//! checked the same). Each problem names its field.

use crate::{Channel, Destination, Source, SourceSpec};
use std::fmt;

/// A field that is not acceptable, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for Invalid {}

/// The longest label a person may give a source or destination, in characters.
pub const MAX_LABEL_CHARS: usize = 100;
/// The longest poll interval a source may ask for: a week.
pub const MAX_POLL_INTERVAL_SECS: u64 = 7 * 86_400;

fn label(l: &str) -> Result<(), Invalid> {
    if l.chars().count() > MAX_LABEL_CHARS {
        return Err(Invalid::new(
            "label",
            format!("at most {MAX_LABEL_CHARS} characters"),
        ));
    }
    if l.chars().any(char::is_control) {
        return Err(Invalid::new("label", "no control characters"));
    }
    Ok(())
}

/// Check a source before it is added: its filter, its label and its kind's own fields.
pub fn validate_source(source: &Source) -> Result<(), Invalid> {
    if let Some(e) = source.filter.validate("filter.").into_iter().next() {
        return Err(Invalid::new(&e.field, e.message));
    }
    label(&source.label)?;
    match &source.spec {
        SourceSpec::Feed {
            url,
            poll_interval_secs,
            extract,
            listing,
            request,
            active_hours,
            ..
        } => {
            crate::validate_feed_url(url).map_err(|e| Invalid::new("url", e))?;
            listing.validate()?;
            request.validate()?;
            if let Some(w) = active_hours {
                w.validate().map_err(|e| Invalid::new("active_hours", e))?;
            }
            if let Some(s) = poll_interval_secs
                && !(1..=MAX_POLL_INTERVAL_SECS).contains(s)
            {
                return Err(Invalid::new(
                    "poll_interval_secs",
                    format!("must be 1-{MAX_POLL_INTERVAL_SECS} seconds"),
                ));
            }
            if let Some(x) = extract {
                x.validate()?;
            }
            Ok(())
        }
        SourceSpec::Imap {
            host,
            port,
            username,
            mailbox,
            ..
        } => {
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
            if !host_ok {
                Err(Invalid::new("host", format!("{host:?} is not a host name")))
            } else if *port == 0 {
                Err(Invalid::new("port", "must be 1-65535"))
            } else if username.is_empty() || username.len() > 320 {
                Err(Invalid::new("username", "needed (at most 320 characters)"))
            } else if mailbox.is_empty()
                || mailbox.len() > 200
                || mailbox
                    .chars()
                    .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                Err(Invalid::new(
                    "mailbox",
                    format!("{mailbox:?} is not a mailbox name"),
                ))
            } else {
                Ok(())
            }
        }
        SourceSpec::Heartbeat {
            period_secs,
            grace_secs,
            token_hash,
        } => {
            if !(MIN_HEARTBEAT_SECS..=MAX_HEARTBEAT_SECS).contains(period_secs) {
                Err(Invalid::new(
                    "period_secs",
                    format!(
                        "must be {MIN_HEARTBEAT_SECS}-{MAX_HEARTBEAT_SECS} seconds (10 s to 31 days)"
                    ),
                ))
            } else if *grace_secs > MAX_HEARTBEAT_GRACE_SECS {
                Err(Invalid::new(
                    "grace_secs",
                    format!("at most {MAX_HEARTBEAT_GRACE_SECS} seconds (a week)"),
                ))
            } else {
                token(token_hash)
            }
        }
        SourceSpec::Topic { topic } => {
            crate::topics::validate_name(topic).map_err(|e| Invalid::new("topic", e))
        }
        SourceSpec::Hook {
            format,
            token_hash,
            mapping,
            per_group,
        } => {
            token(token_hash)?;
            if *per_group && *format == crate::HookFormat::Json {
                return Err(Invalid::new(
                    "per_group",
                    "only alertmanager and grafana hooks send alert groups",
                ));
            }
            match (format, mapping) {
                (crate::HookFormat::Json, Some(m)) => m.validate(),
                (crate::HookFormat::Json, None) => Err(Invalid::new(
                    "mapping",
                    "a json hook needs a mapping (at least a title)",
                )),
                (_, Some(_)) => Err(Invalid::new(
                    "mapping",
                    "only a json hook has a mapping; alertmanager and grafana are read as they are",
                )),
                (_, None) => Ok(()),
            }
        }
    }
}

/// A stored secret's hash: 64 hex digits.
fn token(token_hash: &str) -> Result<(), Invalid> {
    if token_hash.len() == 64 && token_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Invalid::new("token_hash", "a SHA-256 in hex"))
    }
}

/// The shortest and longest heartbeat periods, and the longest grace.
pub const MIN_HEARTBEAT_SECS: u64 = 10;
pub const MAX_HEARTBEAT_SECS: u64 = 31 * 86_400;
pub const MAX_HEARTBEAT_GRACE_SECS: u64 = 7 * 86_400;

/// Check a destination before it is added; returns it with its address normalised.
pub fn validate_destination(d: Destination) -> Result<Destination, Invalid> {
    let address = Destination::validate_address(d.channel, &d.address)
        .map_err(|e| Invalid::new("address", e))?;
    if d.push_format == Some(crate::PushFormat::WebPush) {
        web_push_keys(d.secret.as_deref().unwrap_or_default())?;
    } else if d
        .secret
        .as_ref()
        .is_some_and(|s| s.len() < 16 || s.len() > 256)
    {
        return Err(Invalid::new("secret", "use 16-256 characters"));
    }
    label(&d.label)?;
    if d.push_format.is_some() && d.channel != Channel::Push {
        return Err(Invalid::new("push_format", "only for the push channel"));
    }
    if let Some(t) = &d.throttle {
        t.validate()?;
    }
    Ok(Destination { address, ..d })
}

/// A Web Push subscription's keys as a destination keeps them: `<p256dh>.<auth>`, the
/// browser's P-256 public key (65 bytes) and auth secret (16 bytes), each base64url. Their
/// shape is checked here; delivery checks the key is a point of the curve.
fn web_push_keys(secret: &str) -> Result<(), Invalid> {
    let b64 = |s: &str, bytes: usize| {
        let s = s.trim_end_matches('=');
        s.len() == (bytes * 4).div_ceil(3)
            && s.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    };
    match secret.split_once('.') {
        Some((key, auth)) if b64(key, 65) && b64(auth, 16) => Ok(()),
        _ => Err(Invalid::new(
            "secret",
            "a Web Push subscription needs its keys as <p256dh>.<auth>: the subscription's keys.p256dh (65 bytes) and keys.auth (16 bytes), base64url",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Filter, ImapTls};

    #[test]
    fn a_web_push_destination_needs_its_subscription_keys() {
        let d = |secret: Option<&str>| Destination {
            id: "d1".into(),
            channel: Channel::Push,
            address: "https://fcm.googleapis.com/fcm/send/abc".into(),
            secret: secret.map(str::to_owned),
            label: String::new(),
            push_format: Some(crate::PushFormat::WebPush),
            throttle: None,
            verification: None,
            created_at_ms: 0,
        };
        let good = "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4.BTBZMqHH6r4Tts7J_aSIgg";
        assert!(validate_destination(d(Some(good))).is_ok());
        for bad in [
            None,
            Some("x"),
            Some("BCVx.BTBZMqHH6r4Tts7J_aSIgg"),
            Some(&good[..good.len() - 2]),
        ] {
            assert_eq!(
                validate_destination(d(bad)).unwrap_err().field,
                "secret",
                "{bad:?}"
            );
        }
    }

    fn feed(url: &str, every: Option<u64>) -> Source {
        Source {
            id: "s1".into(),
            spec: SourceSpec::Feed {
                url: url.into(),
                deliver_existing: false,
                poll_interval_secs: every,
                extract: None,
                listing: Default::default(),
                request: Default::default(),
                active_hours: None,
            },
            filter: Filter::default(),
            label: String::new(),
            created_at_ms: 0,
            settings: Default::default(),
        }
    }

    #[test]
    fn sources_name_the_field_at_fault() {
        assert!(validate_source(&feed("https://example.org/rss", Some(60))).is_ok());
        let field = |s: Source| validate_source(&s).unwrap_err().field;
        assert_eq!(field(feed("ftp://example.org/rss", None)), "url");
        assert_eq!(
            field(feed("https://example.org/rss", Some(0))),
            "poll_interval_secs"
        );
        let mut long = feed("https://example.org/rss", None);
        long.label = "x".repeat(101);
        assert_eq!(field(long), "label");
        let mut bad_filter = feed("https://example.org/rss", None);
        bad_filter.filter.regex = Some("(".into());
        assert_eq!(field(bad_filter), "filter.regex");
        let imap = |host: &str| Source {
            spec: SourceSpec::Imap {
                host: host.into(),
                port: 993,
                tls: ImapTls::Tls,
                username: "ann".into(),
                password: None,
                mailbox: "INBOX".into(),
            },
            ..feed("https://example.org/rss", None)
        };
        assert!(validate_source(&imap("imap.example.org")).is_ok());
        assert_eq!(field(imap("imap example.org")), "host");
    }

    #[test]
    fn destinations_are_normalised_or_refused_by_field() {
        let d = |channel, address: &str| Destination {
            id: "d1".into(),
            channel,
            address: address.into(),
            secret: None,
            label: String::new(),
            push_format: None,
            throttle: None,
            verification: None,
            created_at_ms: 0,
        };
        assert!(validate_destination(d(Channel::Sms, "+1 555 000 1111")).is_ok());
        assert_eq!(
            validate_destination(d(Channel::Sms, "call me"))
                .unwrap_err()
                .field,
            "address"
        );
        let mut short_secret = d(Channel::Webhook, "https://hooks.example.org/x");
        short_secret.secret = Some("short".into());
        assert_eq!(
            validate_destination(short_secret).unwrap_err().field,
            "secret"
        );
        let mut stray = d(Channel::Email, "ann@example.org");
        stray.push_format = Some(crate::PushFormat::Ntfy);
        assert_eq!(
            validate_destination(stray).unwrap_err().field,
            "push_format"
        );
    }
}
