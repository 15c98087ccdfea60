//! The words of a notification on the short channels (IM, SMS, push): one plain-text shape,
//! with the way to acknowledge at the end, and SMS fitted to a number of segments.

use tocsin_model::text::{one_line, truncate};
use tocsin_model::{DeliveryJob, JobKind, Priority};

/// The first line: the title, marked when urgent.
fn headline(job: &DeliveryJob) -> String {
    let n = &job.notification;
    let title = one_line(&n.title);
    if n.priority >= Priority::URGENT {
        format!("URGENT: {title}")
    } else {
        title
    }
}

/// How to acknowledge, on IM.
fn im_ack_line(job: &DeliveryJob) -> Option<String> {
    match (job.reference, &job.ack_url) {
        (Some(r), Some(u)) => Some(format!("Reply \"ack {r}\" to acknowledge, or open {u}")),
        (Some(r), None) => Some(format!("Reply \"ack {r}\" to acknowledge")),
        (None, Some(u)) => Some(format!("Acknowledge: {u}")),
        (None, None) => None,
    }
}

/// An instant message: headline, body (at most 1,000 characters), link, how to acknowledge.
pub fn im_text(job: &DeliveryJob) -> String {
    if job.kind == JobKind::Reply {
        return job.notification.title.clone();
    }
    let n = &job.notification;
    let mut lines = vec![headline(job)];
    let body = n.body.trim();
    if !body.is_empty() {
        lines.push(truncate(body, 1000));
    }
    if let Some(u) = &n.url {
        lines.push(u.clone());
    }
    if let Some(a) = im_ack_line(job) {
        lines.push(a);
    }
    lines.join("\n")
}

/// The GSM 03.38 basic character set; anything else makes a message UCS-2.
const GSM7: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// Characters that take two septets (an escape and the character).
const GSM7_EXT: &str = "^{}\\[~]|€\u{c}";

/// How a text is encoded and its length in that encoding's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsEncoding {
    Gsm7,
    Ucs2,
}

pub fn sms_encoding(text: &str) -> SmsEncoding {
    if text
        .chars()
        .all(|c| GSM7.contains(c) || GSM7_EXT.contains(c))
    {
        SmsEncoding::Gsm7
    } else {
        SmsEncoding::Ucs2
    }
}

/// Units of `text` in `enc`: septets for GSM-7, UTF-16 code units for UCS-2.
fn units(text: &str, enc: SmsEncoding) -> usize {
    match enc {
        SmsEncoding::Gsm7 => text
            .chars()
            .map(|c| if GSM7_EXT.contains(c) { 2 } else { 1 })
            .sum(),
        SmsEncoding::Ucs2 => text.encode_utf16().count(),
    }
}

/// How many segments `text` takes (160/153 septets or 70/67 UCS-2 units).
pub fn sms_segments(text: &str) -> usize {
    let enc = sms_encoding(text);
    let n = units(text, enc);
    let (single, multi) = match enc {
        SmsEncoding::Gsm7 => (160, 153),
        SmsEncoding::Ucs2 => (70, 67),
    };
    if n <= single { 1 } else { n.div_ceil(multi) }
}

/// An SMS: headline, body and link, cut to fit `max_segments` so that the way to acknowledge
/// (the signed link, else `reply ACK <n>`) always survives.
pub fn sms_text(job: &DeliveryJob, max_segments: usize) -> String {
    let n = &job.notification;
    let mut head = headline(job);
    let body = one_line(n.body.trim());
    if !body.is_empty() {
        head.push_str(" - ");
        head.push_str(&body);
    }
    let mut tail = String::new();
    if let Some(u) = &n.url {
        tail.push('\n');
        tail.push_str(u);
    }
    match (&job.ack_url, job.reference) {
        (Some(u), _) => tail.push_str(&format!("\nAck: {u}")),
        (None, Some(r)) => tail.push_str(&format!("\nReply ACK {r}")),
        _ => {}
    }
    fit(&head, &tail, max_segments.max(1))
}

/// `head` cut (with "...") so that `head + tail` fits in `max` segments; if even the tail
/// does not fit, the tail is cut too.
fn fit(head: &str, tail: &str, max: usize) -> String {
    let full = format!("{head}{tail}");
    if sms_segments(&full) <= max {
        return full;
    }
    let enc = sms_encoding(&full);
    let capacity = match (enc, max) {
        (SmsEncoding::Gsm7, 1) => 160,
        (SmsEncoding::Gsm7, m) => 153 * m,
        (SmsEncoding::Ucs2, 1) => 70,
        (SmsEncoding::Ucs2, m) => 67 * m,
    };
    let tail_units = units(tail, enc);
    if tail_units + 3 >= capacity {
        return cut(&full, capacity, enc);
    }
    let mut out = cut(head, capacity - tail_units - 3, enc);
    out.push_str("...");
    out.push_str(tail);
    out
}

/// The longest prefix of `text` within `limit` units.
fn cut(text: &str, limit: usize, enc: SmsEncoding) -> String {
    let mut used = 0;
    let mut out = String::new();
    for c in text.chars() {
        let u = units(c.encode_utf8(&mut [0; 4]), enc);
        if used + u > limit {
            break;
        }
        used += u;
        out.push(c);
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tocsin_model::*;

    /// A job for tests of every channel (an SMS destination; tests change what they need).
    pub(crate) fn job(title: &str, body: &str, ack: bool) -> DeliveryJob {
        DeliveryJob {
            job_id: "n1:d1".into(),
            notification: Notification {
                id: NotificationId("n1".into()),
                user: UserId::parse("u1").unwrap(),
                source: SourceRef {
                    kind: SourceKind::Publish,
                    id: None,
                    label: String::new(),
                },
                title: title.into(),
                body: body.into(),
                url: Some("https://example.org/x".into()),
                priority: Priority::URGENT,
                tags: vec![],
                created_at_ms: 0,
                published_at_ms: None,
                dedup_key: None,
            },
            destination: Destination {
                id: "d1".into(),
                channel: Channel::Sms,
                address: "+15550001111".into(),
                secret: None,
                label: String::new(),
                push_format: None,
                throttle: None,
                verification: None,
                created_at_ms: 0,
            },
            kind: JobKind::Notification,
            reference: Some(7),
            ack_url: ack.then(|| "https://t.example/v1/ack/u1/n1/abc".into()),
        }
    }

    #[test]
    fn segments_follow_the_encoding() {
        assert_eq!(sms_segments(&"a".repeat(160)), 1);
        assert_eq!(sms_segments(&"a".repeat(161)), 2);
        assert_eq!(sms_segments(&"€".repeat(80)), 1, "160 septets");
        assert_eq!(sms_segments(&"€".repeat(81)), 2);
        assert_eq!(sms_encoding("Grüße"), SmsEncoding::Gsm7);
        assert_eq!(sms_encoding("Łódź"), SmsEncoding::Ucs2);
        assert_eq!(sms_segments(&"ж".repeat(70)), 1);
        assert_eq!(sms_segments(&"ж".repeat(71)), 2);
        assert_eq!(sms_segments(&"😀".repeat(35)), 1, "two UTF-16 units each");
    }

    #[test]
    fn sms_keeps_the_ack_link_when_cut() {
        let j = job("Disk full on db1", &"lorem ipsum ".repeat(100), true);
        let text = sms_text(&j, 2);
        assert!(sms_segments(&text) <= 2, "{text}");
        assert!(text.starts_with("URGENT: Disk full on db1 - lorem"));
        assert!(
            text.ends_with("\nAck: https://t.example/v1/ack/u1/n1/abc"),
            "{text}"
        );
        assert!(text.contains("...\nhttps://example.org/x"));
        let short = sms_text(&job("Short", "", false), 1);
        assert_eq!(short, "URGENT: Short\nhttps://example.org/x\nReply ACK 7");
    }

    #[test]
    fn im_text_has_the_reference() {
        let text = im_text(&job("Title\r\nBcc: x", "body", true));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "URGENT: Title Bcc: x");
        assert_eq!(lines[1], "body");
        assert!(lines[3].starts_with("Reply \"ack 7\" to acknowledge, or open https://"));
    }
}
