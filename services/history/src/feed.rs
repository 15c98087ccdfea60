//! A user's private feed as Atom 1.0 or RSS 2.0. Notifications are plain text; everything is
//! escaped, characters XML forbids are dropped, and only http(s) links are emitted. An alert
//! that was resolved says so in its title (and, in Atom, is updated when it was).

use chrono::{DateTime, Utc};
use tocsin_model::text::xml_escape as escape;
use tocsin_model::{FeedFormat, HistoryItem, Millis, UserId};

/// Render `items` (newest first) as a feed document.
pub fn render(
    format: FeedFormat,
    user: &UserId,
    self_url: &str,
    items: &[HistoryItem],
    now: Millis,
) -> String {
    match format {
        FeedFormat::Atom => atom(user, self_url, items, now),
        FeedFormat::Rss => rss(user, self_url, items, now),
    }
}

/// The content type to serve a format with.
pub fn content_type(format: FeedFormat) -> &'static str {
    match format {
        FeedFormat::Atom => "application/atom+xml; charset=utf-8",
        FeedFormat::Rss => "application/rss+xml; charset=utf-8",
    }
}

/// When `item`'s alert was resolved, if it was.
fn resolved_at(item: &HistoryItem) -> Option<Millis> {
    item.timeline
        .iter()
        .rev()
        .find(|e| e.kind == "resolved")
        .map(|e| e.at_ms)
}

/// The entry's title: a resolved alert's says so.
fn title(item: &HistoryItem) -> String {
    match resolved_at(item) {
        Some(_) => format!("[Resolved] {}", item.notification.title),
        None => item.notification.title.clone(),
    }
}

fn atom(user: &UserId, self_url: &str, items: &[HistoryItem], now: Millis) -> String {
    let updated = items
        .first()
        .map(|i| i.notification.created_at_ms)
        .unwrap_or(now);
    let mut s = String::with_capacity(1024 + items.len() * 512);
    s.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    s.push_str("<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    s.push_str(&format!("  <id>urn:tocsin:feed:{user}</id>\n"));
    s.push_str("  <title>tocsin notifications</title>\n");
    s.push_str(&format!("  <updated>{}</updated>\n", rfc3339(updated)));
    s.push_str(&format!(
        "  <link rel=\"self\" type=\"application/atom+xml\" href=\"{}\"/>\n",
        escape(self_url)
    ));
    s.push_str("  <author><name>tocsin</name></author>\n");
    s.push_str("  <generator>tocsin</generator>\n");
    for item in items {
        let n = &item.notification;
        s.push_str("  <entry>\n");
        s.push_str(&format!("    <id>urn:tocsin:notification:{}</id>\n", n.id));
        s.push_str(&format!(
            "    <title type=\"text\">{}</title>\n",
            escape(&title(item))
        ));
        s.push_str(&format!(
            "    <updated>{}</updated>\n",
            rfc3339(
                resolved_at(item)
                    .unwrap_or(n.created_at_ms)
                    .max(n.created_at_ms)
            )
        ));
        if let Some(p) = n.published_at_ms {
            s.push_str(&format!("    <published>{}</published>\n", rfc3339(p)));
        }
        if let Some(link) = safe_link(n.url.as_deref()) {
            s.push_str(&format!(
                "    <link rel=\"alternate\" href=\"{}\"/>\n",
                escape(link)
            ));
        }
        if !n.source.label.is_empty() {
            s.push_str(&format!(
                "    <author><name>{}</name></author>\n",
                escape(&n.source.label)
            ));
        }
        for tag in &n.tags {
            s.push_str(&format!("    <category term=\"{}\"/>\n", escape(tag)));
        }
        s.push_str(&format!(
            "    <content type=\"text\">{}</content>\n",
            escape(&n.body)
        ));
        s.push_str("  </entry>\n");
    }
    s.push_str("</feed>\n");
    s
}

fn rss(user: &UserId, self_url: &str, items: &[HistoryItem], now: Millis) -> String {
    let mut s = String::with_capacity(1024 + items.len() * 512);
    s.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    s.push_str("<rss version=\"2.0\" xmlns:atom=\"http://www.w3.org/2005/Atom\">\n<channel>\n");
    s.push_str("  <title>tocsin notifications</title>\n");
    s.push_str(&format!("  <link>{}</link>\n", escape(self_url)));
    s.push_str(&format!(
        "  <atom:link rel=\"self\" type=\"application/rss+xml\" href=\"{}\"/>\n",
        escape(self_url)
    ));
    s.push_str(&format!(
        "  <description>tocsin notifications for {user}</description>\n"
    ));
    s.push_str(&format!(
        "  <lastBuildDate>{}</lastBuildDate>\n",
        rfc2822(now)
    ));
    s.push_str("  <generator>tocsin</generator>\n");
    for item in items {
        let n = &item.notification;
        s.push_str("  <item>\n");
        s.push_str(&format!("    <title>{}</title>\n", escape(&title(item))));
        if let Some(link) = safe_link(n.url.as_deref()) {
            s.push_str(&format!("    <link>{}</link>\n", escape(link)));
        }
        s.push_str(&format!(
            "    <guid isPermaLink=\"false\">urn:tocsin:notification:{}</guid>\n",
            n.id
        ));
        s.push_str(&format!(
            "    <pubDate>{}</pubDate>\n",
            rfc2822(n.published_at_ms.unwrap_or(n.created_at_ms))
        ));
        for tag in &n.tags {
            s.push_str(&format!("    <category>{}</category>\n", escape(tag)));
        }
        s.push_str(&format!(
            "    <description>{}</description>\n",
            escape(&n.body)
        ));
        s.push_str("  </item>\n");
    }
    s.push_str("</channel>\n</rss>\n");
    s
}

/// Only absolute http(s) links leave tocsin; anything else (`javascript:`, `data:`) is dropped.
pub fn safe_link(url: Option<&str>) -> Option<&str> {
    let u = url?.trim();
    let lower = u.get(..8).unwrap_or(u).to_ascii_lowercase();
    (lower.starts_with("http://") || lower.starts_with("https://")).then_some(u)
}

/// The latest instant every format here can write: RFC 2822 and RFC 3339 have four-digit
/// years, and a date from a feed or an e-mail can be anything (`31 Dec 9999 -2359` is year
/// 10000 in UTC).
const LATEST_MS: Millis = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

fn datetime(ms: Millis) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms.clamp(0, LATEST_MS)).unwrap_or_default()
}

fn rfc3339(ms: Millis) -> String {
    datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn rfc2822(ms: Millis) -> String {
    datetime(ms).to_rfc2822()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::*;

    fn item(title: &str, body: &str, url: Option<&str>) -> HistoryItem {
        HistoryItem {
            notification: Notification {
                id: NotificationId("n1".into()),
                user: UserId::parse("u1").unwrap(),
                source: SourceRef {
                    kind: SourceKind::Feed,
                    id: None,
                    label: "Bikes <SF>".into(),
                },
                title: title.into(),
                body: body.into(),
                url: url.map(Into::into),
                priority: Priority::DEFAULT,
                tags: vec!["a&b".into()],
                created_at_ms: 1_700_000_000_000,
                published_at_ms: None,
                dedup_key: None,
            },
            timeline: vec![],
        }
    }

    #[test]
    fn dates_no_format_can_write_are_clamped_not_a_panic() {
        // `Date: Fri, 31 Dec 9999 23:59:59 -2359` is year 10000 in UTC
        let far = 253_402_387_140_000;
        let user = UserId::parse("u1").unwrap();
        for ms in [far, i64::MAX, i64::MIN, -1] {
            let mut it = item("t", "b", None);
            it.notification.created_at_ms = ms;
            it.notification.published_at_ms = Some(ms);
            for format in [FeedFormat::Atom, FeedFormat::Rss] {
                let xml = render(format, &user, "http://127.0.0.1/f.xml", &[it.clone()], ms);
                let feed = feed_rs::parser::parse(xml.as_bytes()).expect("still a feed");
                assert_eq!(feed.entries.len(), 1, "{ms} {format:?}");
            }
        }
    }

    #[test]
    fn a_resolved_alert_says_so_in_both_formats() {
        let mut it = item("Disk full", "db1", None);
        it.timeline.push(tocsin_model::TimelineEntry {
            at_ms: 1_700_000_600_000,
            kind: "resolved".into(),
            channel: None,
            detail: "via api".into(),
        });
        let user = UserId::parse("u1").unwrap();
        for format in [FeedFormat::Atom, FeedFormat::Rss] {
            let xml = render(format, &user, "http://127.0.0.1/f.xml", &[it.clone()], 0);
            let feed = feed_rs::parser::parse(xml.as_bytes()).expect("a feed");
            let e = &feed.entries[0];
            assert_eq!(e.title.as_ref().unwrap().content, "[Resolved] Disk full");
            if format == FeedFormat::Atom {
                assert_eq!(
                    e.updated.map(|d| d.timestamp_millis()),
                    Some(1_700_000_600_000)
                );
            }
        }
    }

    #[test]
    fn both_formats_parse_back_with_text_intact_and_no_markup() {
        let hostile = "<script>alert(1)</script> & \u{0001}ok";
        let items = vec![
            item(
                hostile,
                "<img src=x onerror=alert(1)>",
                Some("javascript:alert(1)"),
            ),
            item(
                "Road bike $900",
                "plain",
                Some("https://example.org/a?x=1&y=2"),
            ),
        ];
        let user = UserId::parse("u1").unwrap();
        for format in [FeedFormat::Atom, FeedFormat::Rss] {
            let xml = render(format, &user, "http://127.0.0.1/feeds/u1/s.xml", &items, 0);
            assert!(!xml.contains("<script"));
            assert!(!xml.contains("<img"));
            assert!(!xml.contains("javascript:"));
            let feed = feed_rs::parser::parse(xml.as_bytes()).expect("a feed reader accepts it");
            assert_eq!(feed.entries.len(), 2);
            let t = &feed.entries[0].title.as_ref().unwrap().content;
            assert_eq!(t, "<script>alert(1)</script> & ok", "{format:?}");
            assert!(feed.entries[0].links.is_empty());
            assert_eq!(
                feed.entries[1].links[0].href,
                "https://example.org/a?x=1&y=2"
            );
        }
    }
}
