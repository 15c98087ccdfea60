//! A forwarded alert e-mail reduced to a notification's parts. Pure: bytes in, parts out.
//!
//! mail-parser handles MIME, charsets and encodings. On top of it: the text body (HTML reduced
//! to text when there is no text part), links, attachment names and sizes, priority from
//! `X-Priority` / `Importance`, and for a forwarded message (an attached `message/rfc822`, or
//! an inline "Forwarded message" block) the original sender and subject.

use mail_parser::{MessageParser, MimeHeaders};
use serde::Serialize;
use tocsin_model::text::{fold_whitespace, html_to_text, one_line, truncate};
use tocsin_model::{Millis, Priority};

/// What tocsin keeps of a message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParsedMail {
    pub subject: String,
    /// The sender: the original one for a forwarded message.
    pub from: String,
    pub date_ms: Option<Millis>,
    pub message_id: Option<String>,
    pub text: String,
    pub links: Vec<String>,
    /// The first attachments (at most 20), and how many more there were.
    pub attachments: Vec<Attachment>,
    pub more_attachments: usize,
    /// Set when the message says (`X-Priority`, `Importance`).
    pub priority: Option<u8>,
    pub forwarded: bool,
    /// Set when the message is never taken in, whoever it is for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub automatic: Option<Automatic>,
}

/// Mail that must not become a notification: taking it in would answer a machine, or loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Automatic {
    /// It carries tocsin's loop mark ([`tocsin_model::own::LOOP_HEADER`]), on itself or on the
    /// message it forwards: a notification tocsin sent, come back.
    TocsinsOwn,
    /// An auto-responder's answer (`Auto-Submitted: auto-replied`, RFC 3834): an out-of-office
    /// note, not an alert. (`auto-generated` mail is taken: alerts from cron and monitoring
    /// systems say so.)
    AutoReply,
}

impl Automatic {
    /// Why it was not taken, for the user's history and the log.
    pub fn reason(self) -> &'static str {
        match self {
            Automatic::TocsinsOwn => {
                "it is a notification tocsin sent (it carries X-Tocsin-Loop), forwarded back; taking it would loop"
            }
            Automatic::AutoReply => {
                "it is an auto-responder's answer (Auto-Submitted: auto-replied), not an alert"
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attachment {
    pub name: String,
    pub bytes: usize,
}

const MAX_TEXT: usize = 8000;
const MAX_LINKS: usize = 20;
const MAX_LINK: usize = 2048;
const MAX_ATTACHMENTS: usize = 20;
/// Attachment names and the sender's name, in bytes.
const MAX_NAME: usize = 200;
/// A Message-ID longer than this is kept as its digest.
const MAX_ID: usize = 250;

/// `parse` and `mail_key` on a blocking thread: a message of several MiB takes long enough
/// to parse that it must not hold an async worker. `None` when it is not a message at all.
pub async fn parse_keyed(raw: std::sync::Arc<[u8]>) -> Option<(ParsedMail, String)> {
    tokio::task::spawn_blocking(move || {
        let parsed = parse(&raw)?;
        let key = mail_key(&parsed, &raw);
        Some((parsed, key))
    })
    .await
    .ok()
    .flatten()
}

/// The message's key: its Message-ID, else a digest of the whole message (a repeat of the
/// same message is the same notification either way).
pub fn mail_key(parsed: &ParsedMail, raw: &[u8]) -> String {
    parsed
        .message_id
        .clone()
        .unwrap_or_else(|| tocsin_model::digest(&[&String::from_utf8_lossy(raw)]))
}

/// Parse `raw`; `None` when it is not a message at all.
pub fn parse(raw: &[u8]) -> Option<ParsedMail> {
    let msg = MessageParser::default().parse(raw)?;
    let header_text = |name: &str| {
        msg.header(name)
            .and_then(|v| v.as_text())
            .map(str::to_owned)
    };
    let priority = header_text("X-Priority")
        .and_then(|p| p.trim().chars().next()?.to_digit(10))
        .and_then(|d| match d {
            1 => Some(5),
            2 => Some(4),
            3 => Some(3),
            4 => Some(2),
            5 => Some(1),
            _ => None,
        })
        .or_else(|| {
            match header_text("Importance")?
                .trim()
                .to_ascii_lowercase()
                .as_str()
            {
                "high" => Some(4),
                "low" => Some(2),
                _ => None,
            }
        });
    let marked = |m: &mail_parser::Message<'_>| m.header(tocsin_model::own::LOOP_HEADER).is_some();
    let automatic = if marked(&msg) || msg.attachments().any(|p| p.message().is_some_and(marked)) {
        Some(Automatic::TocsinsOwn)
    } else if header_text("Auto-Submitted")
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("auto-replied"))
    {
        Some(Automatic::AutoReply)
    } else {
        None
    };
    let mut subject = msg.subject().map(one_line).unwrap_or_default();
    let mut from = sender(msg.from());
    let mut text = body_of(&msg);
    let mut forwarded = false;
    let mut attachments = Vec::new();
    let mut more_attachments = 0;
    for part in msg.attachments() {
        if let Some(inner) = part.message() {
            // an attached original: it is what the person wants to see
            if !forwarded {
                forwarded = true;
                subject = inner.subject().map(one_line).unwrap_or(subject);
                let inner_from = sender(inner.from());
                if !inner_from.is_empty() {
                    from = inner_from;
                }
                let inner_text = body_of(inner);
                if !inner_text.is_empty() {
                    text = inner_text;
                }
            }
            continue;
        }
        if attachments.len() == MAX_ATTACHMENTS {
            more_attachments += 1;
            continue;
        }
        attachments.push(Attachment {
            name: part
                .attachment_name()
                .map(|n| truncate(&one_line(n), MAX_NAME))
                .unwrap_or_else(|| "(unnamed)".into()),
            bytes: part.len(),
        });
    }
    if !forwarded && let Some((orig_from, orig_subject, rest)) = inline_forward(&text) {
        forwarded = true;
        if !orig_from.is_empty() {
            from = orig_from;
        }
        if !orig_subject.is_empty() {
            subject = orig_subject;
        }
        text = rest;
    }
    let subject = strip_forward_prefix(&subject);
    let text = fold_whitespace(&text);
    Some(ParsedMail {
        subject: truncate(&subject, 300),
        from: truncate(&from, MAX_NAME),
        date_ms: msg.date().and_then(|d| d.to_timestamp().checked_mul(1000)),
        message_id: msg.message_id().map(bounded_id),
        links: links(&text),
        text: truncate(&text, MAX_TEXT),
        attachments,
        more_attachments,
        priority,
        forwarded,
        automatic,
    })
}

/// A Message-ID as the key of its notification: kept when it is of a sensible length, else
/// replaced by its digest (an id is only compared, and a 600 KB one must not be kept).
fn bounded_id(id: &str) -> String {
    if id.len() <= MAX_ID {
        id.to_owned()
    } else {
        format!("sha256:{}", tocsin_model::digest(&[id]))
    }
}

fn sender(addr: Option<&mail_parser::Address<'_>>) -> String {
    let Some(first) = addr.and_then(|a| a.first()) else {
        return String::new();
    };
    match (first.name(), first.address()) {
        (Some(n), Some(a)) if !n.trim().is_empty() => format!("{} <{a}>", one_line(n)),
        (_, Some(a)) => a.to_owned(),
        (Some(n), None) => one_line(n),
        (None, None) => String::new(),
    }
}

/// The text body as sent (text/plain), or the HTML body reduced to text.
fn body_of(msg: &mail_parser::Message<'_>) -> String {
    let plain = msg.text_body.first().is_some_and(|&i| {
        msg.part(i).is_some_and(|p| {
            p.content_type().is_none_or(|ct| {
                ct.ctype().eq_ignore_ascii_case("text")
                    && ct.subtype().is_none_or(|s| s.eq_ignore_ascii_case("plain"))
            })
        })
    });
    if plain && let Some(t) = msg.body_text(0) {
        return t.replace("\r\n", "\n");
    }
    if let Some(h) = msg.body_html(0) {
        return html_to_text(&h);
    }
    msg.body_text(0)
        .map(|t| t.replace("\r\n", "\n"))
        .unwrap_or_default()
}

/// "Fwd: Fw: Re: x" → "x" (only forward prefixes; replies keep theirs).
fn strip_forward_prefix(s: &str) -> String {
    let mut rest = s.trim();
    loop {
        // compared in place: lowercasing the rest per prefix made `Fwd:` × n quadratic
        let cut = ["fwd:", "fw:", "tr:", "wg:"]
            .iter()
            .find(|p| {
                rest.as_bytes()
                    .get(..p.len())
                    .is_some_and(|h| h.eq_ignore_ascii_case(p.as_bytes()))
            })
            .map(|p| p.len());
        match cut {
            Some(n) => rest = rest[n..].trim_start(),
            None => return rest.to_owned(),
        }
    }
}

/// An inline forward (Gmail's "---------- Forwarded message ---------", Outlook's
/// "-----Original Message-----"): the original sender, subject and the text after the block.
fn inline_forward(text: &str) -> Option<(String, String, String)> {
    let lower = text.to_ascii_lowercase();
    let start = [
        "forwarded message",
        "original message",
        "begin forwarded message",
    ]
    .iter()
    .filter_map(|m| lower.find(m))
    .min()?;
    let after = &text[start..];
    let mut from = String::new();
    let mut subject = String::new();
    let mut body_start = None;
    let mut offset = 0;
    for (i, line) in after.split_inclusive('\n').enumerate() {
        offset += line.len();
        if i == 0 {
            continue;
        }
        let l = line.trim();
        let ll = l.to_ascii_lowercase();
        if let Some(v) = ll.strip_prefix("from:").map(|_| l[5..].trim()) {
            from = v.to_owned();
        } else if let Some(v) = ll.strip_prefix("subject:").map(|_| l[8..].trim()) {
            subject = v.to_owned();
        } else if ll.starts_with("date:")
            || ll.starts_with("to:")
            || ll.starts_with("sent:")
            || ll.starts_with("cc:")
        {
        } else if l.is_empty() && (!from.is_empty() || !subject.is_empty()) {
            body_start = Some(offset);
            break;
        }
    }
    let rest = body_start
        .map(|b| after[b..].trim().to_owned())
        .unwrap_or_default();
    (!from.is_empty() || !subject.is_empty()).then_some((from, subject, rest))
}

/// The distinct http(s) links in `text`, in order. One pass: the search resumes after each
/// link found (resuming at the next `http` inside it made `http://http://…` quadratic).
pub fn links(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut from = 0;
    while out.len() < MAX_LINKS
        && let Some(p) = text[from..].find("http")
    {
        let start = from + p;
        let rest = &text[start..];
        if !(rest.starts_with("http://") || rest.starts_with("https://")) {
            from = start + 4;
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '"' | '\'' | ')' | ']'))
            .unwrap_or(rest.len());
        from = start + end;
        let link = rest[..end].trim_end_matches(['.', ',', ';', ':', '!', '?']);
        if link.len() > 10 && link.len() <= MAX_LINK && !out.iter().any(|l| l == link) {
            out.push(link.to_owned());
        }
    }
    out
}

impl ParsedMail {
    /// The notification body: the text, then the attachments, if any.
    /// The notification for `user`: `key` identifies the message (its Message-ID, else a
    /// digest of it), so the same message is one notification however often it arrives.
    pub fn notification(
        &self,
        user: &tocsin_model::UserId,
        key: &str,
        source_id: Option<String>,
        tags: Vec<String>,
        now: tocsin_model::Millis,
    ) -> tocsin_model::Notification {
        tocsin_model::Notification {
            id: tocsin_model::NotificationId::for_mail(user, key),
            user: user.clone(),
            source: tocsin_model::SourceRef {
                kind: tocsin_model::SourceKind::Email,
                id: source_id,
                label: self.from.clone(),
            },
            title: if self.subject.is_empty() {
                "(no subject)".into()
            } else {
                self.subject.clone()
            },
            body: self.body(),
            url: self.links.first().cloned(),
            priority: self.priority(),
            tags,
            created_at_ms: now,
            published_at_ms: self.date_ms,
            dedup_key: self.message_id.clone().map(|m| format!("mid:{m}")),
        }
    }

    pub fn body(&self) -> String {
        let mut b = self.text.clone();
        if !self.attachments.is_empty() {
            b.push_str("\n\nAttachments:");
            for a in &self.attachments {
                b.push_str(&format!("\n- {} ({} bytes)", a.name, a.bytes));
            }
            if self.more_attachments > 0 {
                b.push_str(&format!("\n- and {} more", self.more_attachments));
            }
        }
        b
    }

    pub fn priority(&self) -> Priority {
        self.priority
            .and_then(|p| Priority::new(p).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Golden files: every `tests/mail/*.eml` must parse to its `.json` twin. On a mismatch
    /// the actual result is written beside it as `.actual.json` for review.
    #[test]
    fn golden_fixtures() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mail");
        let mut checked = 0;
        let mut failures = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("eml") {
                continue;
            }
            let raw = std::fs::read(&path).unwrap();
            let parsed = parse(&raw).unwrap_or_else(|| panic!("{} did not parse", path.display()));
            let actual = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
            let expected_path = path.with_extension("json");
            let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if actual != expected {
                std::fs::write(path.with_extension("actual.json"), &actual).unwrap();
                failures.push(path.display().to_string());
            }
            checked += 1;
        }
        assert!(checked >= 6, "only {checked} fixtures");
        assert!(
            failures.is_empty(),
            "differs from its .json (see .actual.json): {failures:?}"
        );
    }

    #[test]
    fn links_and_prefixes() {
        assert_eq!(
            links("see https://a.example/x, and (http://b.example/y). https://a.example/x again"),
            ["https://a.example/x", "http://b.example/y"]
        );
        assert_eq!(strip_forward_prefix("Fwd: FW: Re: disk"), "Re: disk");
    }

    /// What a message can make tocsin keep is bounded: a 600 KB Message-ID (the report's
    /// stuck record) is kept as its digest, the sender's name is cut, and only the first 20
    /// attachments are listed, with how many more there were.
    #[test]
    fn oversized_headers_and_attachment_lists_are_bounded() {
        let mut m = format!(
            "From: {} <a@example.org>\r\nSubject: s\r\nMessage-ID: <{}@x>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n",
            "N".repeat(100_000),
            "i".repeat(600_000)
        );
        for i in 0..100 {
            m.push_str(&format!(
                "--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"{i}{}\"\r\n\r\nx\r\n",
                "f".repeat(1000)
            ));
        }
        m.push_str("--b--\r\n");
        let p = parse(m.as_bytes()).unwrap();
        let id = p.message_id.as_deref().unwrap();
        assert!(id.starts_with("sha256:") && id.len() < 80, "{id}");
        assert_eq!(mail_key(&p, m.as_bytes()), id);
        assert!(p.from.len() <= MAX_NAME);
        assert_eq!((p.attachments.len(), p.more_attachments), (20, 80));
        assert!(p.attachments.iter().all(|a| a.name.len() <= MAX_NAME));
        let n = p.notification(
            &tocsin_model::UserId::parse("u1").unwrap(),
            id,
            None,
            vec![],
            0,
        );
        assert!(n.body.ends_with("- and 80 more"), "{}", n.body);
        assert!(serde_json::to_vec(&n).unwrap().len() < 32 * 1024);
    }

    #[test]
    fn hostile_messages_parse_cleanly_and_quickly() {
        // 100k MIME parts (a "million-part" message cut to what fits under the size limit)
        let mut many =
            b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n".to_vec();
        for i in 0..100_000 {
            many.extend_from_slice(
                format!("--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n").as_bytes(),
            );
        }
        many.extend_from_slice(b"--b--\r\n");
        let started = std::time::Instant::now();
        let p = parse(&many).expect("parses");
        assert_eq!(p.subject, "parts");
        assert!(p.text.len() <= MAX_TEXT);
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        // an unknown charset, a broken encoded word, unterminated MIME, NULs and 8-bit junk
        let junk = b"Subject: =?x-unknown?Q?caf=E9?= =?utf-8?B?###?=\r\nContent-Type: multipart/alternative; boundary=\"zz\"\r\n\r\n--zz\r\nContent-Type: text/plain; charset=klingon\r\n\r\n\x00\xff\xfe body\r\n--zz\r\nContent-Type: text/html\r\n\r\n<p onclick=\"x\">hi";
        let p = parse(junk).expect("parses");
        assert!(!p.text.contains('\0'));
        assert!(!p.subject.contains('\n'));
        // a header-injection attempt in an encoded subject stays one line
        let inj = b"Subject: =?utf-8?Q?alert=0D=0ABcc:_evil@example.org?=\r\n\r\nx\r\n";
        let p = parse(inj).expect("parses");
        assert!(
            !p.subject.contains('\r') && !p.subject.contains('\n'),
            "{:?}",
            p.subject
        );
    }

    #[test]
    fn garbage_never_panics() {
        for raw in [
            &b""[..],
            b"\xff\xfe\x00",
            b"Subject: x\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n--b--",
        ] {
            let _ = parse(raw);
        }
    }
}
