//! A polled document read by its source's extractor: a feed by the feed parser, a JSON API's
//! answer by the source's mapping — into the same items, so filters, dedup, the seen set and
//! the fan-out treat both alike (ADR 0025). Pure: bytes in, items or a readable error out.

use crate::feeds::normalize::{
    FeedItem, MAX_TEXT, MAX_TITLE, ParsedFeed, bounded_key, normalize, web_link,
};
use tocsin_model::text::{one_line, truncate};
use tocsin_model::{Extract, JsonMapping};

/// The items of `body`, read as `extract` says (none: a feed).
pub fn parse(body: &[u8], extract: Option<&Extract>) -> Result<ParsedFeed, String> {
    match extract {
        None => normalize(body).map_err(|e| e.to_string()),
        Some(Extract::Json { mapping }) => json(body, mapping),
    }
}

/// A JSON API's answer: parsed (serde_json refuses nesting past 128 levels), then mapped
/// item by item; an item's key is its `key` template, else its link, else a digest of its
/// text.
fn json(body: &[u8], mapping: &JsonMapping) -> Result<ParsedFeed, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let mapped = mapping
        .apply(&value)
        .map_err(|e| format!("the answer does not fit the mapping: {e}"))?;
    let items = mapped
        .into_iter()
        .map(|m| {
            let title = truncate(&one_line(&m.title), MAX_TITLE);
            let text = truncate(&m.body, MAX_TEXT);
            let link = m.url.filter(|u| web_link(u));
            let key = match (&m.key, &link) {
                (Some(k), _) => bounded_key(k),
                (None, Some(l)) => bounded_key(l),
                (None, None) => format!("h:{}", &tocsin_model::digest(&[&title, &text])[..32]),
            };
            FeedItem {
                key,
                title,
                text,
                link,
                categories: vec![],
                published_ms: None,
                priority: m.priority,
                dedup_key: None,
            }
        })
        .collect();
    Ok(ParsedFeed {
        title: String::new(),
        items,
        hub: None,
        self_url: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> Extract {
        Extract::Json {
            mapping: JsonMapping {
                items: Some("/results".into()),
                title: "{{ /name }} - ${{ /price }}".into(),
                body: Some("{{ /location | somewhere }}".into()),
                url: Some("{{ /url }}".into()),
                key: Some("{{ /id }}".into()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_json_api_answer_becomes_items() {
        let body = br#"{"results": [
            {"id": 17, "name": "Road bike", "price": 400, "url": "https://shop.example/l/17", "location": "Oakland"},
            {"id": 18, "name": "Sofa", "price": 150, "url": "javascript:alert(1)"}
        ], "next": null}"#;
        let f = parse(body, Some(&shop())).unwrap();
        assert_eq!(f.items.len(), 2);
        assert_eq!(f.items[0].key, "17");
        assert_eq!(f.items[0].title, "Road bike - $400");
        assert_eq!(f.items[0].text, "Oakland");
        assert_eq!(
            f.items[0].link.as_deref(),
            Some("https://shop.example/l/17")
        );
        assert_eq!(f.items[1].link, None, "only web links are links");
        assert_eq!(f.items[1].text, "somewhere");
    }

    #[test]
    fn what_is_not_the_expected_json_is_named() {
        let e = parse(b"<html>", Some(&shop())).unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
        let e = parse(br#"{"results": 3}"#, Some(&shop())).unwrap_err();
        assert!(e.contains("mapping.items"), "{e}");
        // nesting far past any API's: refused, not a stack overflow
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(deep.as_bytes(), Some(&shop())).unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
        // a feed is still a feed
        assert!(
            parse(
                b"<rss version=\"2.0\"><channel><title>t</title></channel></rss>",
                None
            )
            .is_ok()
        );
    }
}
