//! A fetched feed document (RSS 0.9x/2.0, RSS 1.0/RDF, Atom, JSON Feed) reduced to plain-text
//! items with stable keys. Pure: bytes in, items or a readable error out.

use tocsin_model::budget;
use tocsin_model::text::{html_to_text, one_line, truncate};

/// One item of a feed, as plain text.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// Stable identity: the feed's guid/id, else the link, else a hash of the content.
    pub key: String,
    pub title: String,
    pub text: String,
    pub link: Option<String>,
    pub categories: Vec<String>,
    pub published_ms: Option<i64>,
    /// Set by its publisher (a shared topic's message); a feed's items are at the default.
    pub priority: Option<tocsin_model::Priority>,
    /// What deduplicates it for a subscriber; none: its link, else its key (a listing seen
    /// in two feeds reaches a user once).
    pub dedup_key: Option<String>,
    /// A listing's price: its source's price field, else the first price in its title.
    pub price: Option<tocsin_model::Price>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    pub title: String,
    pub items: Vec<FeedItem>,
    /// The WebSub hub the feed advertises (`<link rel="hub">`), if any.
    pub hub: Option<String>,
    /// The feed's own URL as it states it (`<link rel="self">`): the WebSub topic.
    pub self_url: Option<String>,
    /// A paged JSON API's next page (its `next` pointer's URL, resolved).
    pub next_page: Option<String>,
}

/// Why a document is not a usable feed, for the person who subscribed to it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the document is empty")]
    Empty,
    #[error("not a valid RSS, RDF or Atom feed: {0}")]
    Invalid(String),
    #[error("the feed declares entities (a DTD); refusing it to avoid entity-expansion attacks")]
    Entities,
}

pub(crate) const MAX_TITLE: usize = 300;
pub(crate) const MAX_TEXT: usize = 4000;
pub(crate) const MAX_ITEMS: usize = 500;
const MAX_KEY: usize = 512;
const MAX_CATEGORY: usize = 100;

/// Parse and normalise `body`.
pub fn normalize(body: &[u8]) -> Result<ParsedFeed, NormalizeError> {
    let trimmed = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| &body[p..]);
    let Some(body) = trimmed else {
        return Err(NormalizeError::Empty);
    };
    // A DTD with entity declarations has no place in a feed; refuse it before any parser
    // sees it ("billion laughs", external entities).
    let head = &body[..body.len().min(64 * 1024)];
    if contains_ci(head, b"<!ENTITY") {
        return Err(NormalizeError::Entities);
    }
    let parser = feed_rs::parser::Builder::new()
        // no invented ids: an item without guid/id gets our own stable key below
        .id_generator(|_, _, _| String::new())
        .sanitize_content(false)
        .build();
    let feed = parser
        .parse(body)
        .map_err(|e| NormalizeError::Invalid(one_line(&e.to_string())))?;
    let feed_title = feed
        .title
        .as_ref()
        .map(|t| text_of(&t.content, t.content_type.to_string().as_str()))
        .unwrap_or_default();
    let link_rel = |rel: &str| {
        feed.links
            .iter()
            .find(|l| l.rel.as_deref() == Some(rel))
            .map(|l| l.href.trim().to_owned())
            .filter(|h| web_link(h))
    };
    let hub = link_rel("hub");
    let self_url = link_rel("self");
    let mut items = Vec::new();
    for e in feed.entries.into_iter().take(MAX_ITEMS) {
        let title = e
            .title
            .as_ref()
            .map(|t| one_line(&text_of(&t.content, t.content_type.to_string().as_str())))
            .unwrap_or_default();
        let text = e
            .content
            .as_ref()
            .and_then(|c| {
                c.body
                    .as_deref()
                    .map(|b| text_of(b, c.content_type.to_string().as_str()))
            })
            .filter(|t| !t.is_empty())
            .or_else(|| {
                e.summary
                    .as_ref()
                    .map(|s| text_of(&s.content, s.content_type.to_string().as_str()))
            })
            .unwrap_or_default();
        let link = e
            .links
            .iter()
            .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
            .or(e.links.first())
            .map(|l| l.href.trim().to_owned())
            .filter(|h| web_link(h));
        if title.is_empty() && text.is_empty() {
            continue;
        }
        let key = if !e.id.trim().is_empty() {
            bounded_key(e.id.trim())
        } else if let Some(l) = &link {
            l.clone()
        } else {
            format!("h:{}", &tocsin_model::digest(&[&title, &text])[..32])
        };
        let categories = e
            .categories
            .iter()
            .map(|c| {
                truncate(
                    &one_line(c.label.as_deref().unwrap_or(&c.term)),
                    MAX_CATEGORY,
                )
            })
            .filter(|c| !c.is_empty())
            .take(10)
            .collect();
        items.push(FeedItem {
            key,
            title: truncate(&title, MAX_TITLE),
            text: truncate(&text, MAX_TEXT),
            link,
            categories,
            published_ms: e.published.or(e.updated).map(|d| d.timestamp_millis()),
            priority: None,
            dedup_key: None,
            price: None,
        });
    }
    Ok(ParsedFeed {
        title: truncate(&one_line(&feed_title), MAX_TITLE),
        items,
        hub,
        self_url,
        next_page: None,
    })
}

/// An absolute http(s) link short enough to keep (a longer one is dropped, not cut).
pub(crate) fn web_link(h: &str) -> bool {
    (h.starts_with("http://") || h.starts_with("https://")) && h.len() <= budget::MAX_URL
}

/// An item's id as its key; a longer one as its digest (two ids that differ only past a cut
/// would otherwise be one item).
pub(crate) fn bounded_key(id: &str) -> String {
    if id.len() <= MAX_KEY {
        id.to_owned()
    } else {
        format!("sha256:{}", tocsin_model::digest(&[id]))
    }
}

fn text_of(content: &str, content_type: &str) -> String {
    if content_type.contains("html") || content.contains('<') {
        html_to_text(content)
    } else {
        tocsin_model::text::fold_whitespace(&tocsin_model::text::decode_entities(content))
    }
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RDF: &str = include_str!("../../tests/fixtures/craigslist.rdf");
    const ATOM: &str = include_str!("../../tests/fixtures/atom.xml");
    const RSS2: &str = include_str!("../../tests/fixtures/rss2.xml");

    #[test]
    fn craigslist_rdf() {
        let f = normalize(RDF.as_bytes()).unwrap();
        assert_eq!(f.items.len(), 2);
        let a = &f.items[0];
        assert_eq!(a.title, "Trek road bike 56cm - $1,250 (oakland)");
        assert_eq!(
            a.link.as_deref(),
            Some("https://sfbay.craigslist.org/eby/bik/d/trek-road-bike/7700000001.html")
        );
        assert_eq!(a.key, a.link.clone().unwrap());
        assert!(a.text.contains("Carbon frame & Shimano 105"), "{}", a.text);
        assert!(!a.text.contains('<'));
    }

    #[test]
    fn atom_and_rss2() {
        let f = normalize(ATOM.as_bytes()).unwrap();
        assert_eq!(f.title, "Example releases");
        assert_eq!(f.hub.as_deref(), Some("https://hub.example.org/"));
        assert_eq!(
            f.self_url.as_deref(),
            Some("https://example.org/releases.atom")
        );
        assert_eq!(f.items[0].key, "urn:example:release:1");
        assert_eq!(f.items[0].categories, ["release"]);
        assert!(f.items[0].published_ms.is_some());
        let f = normalize(RSS2.as_bytes()).unwrap();
        assert_eq!(f.items.len(), 3);
        assert_eq!(f.hub.as_deref(), Some("https://hub.example.org/"));
        assert_eq!(normalize(RDF.as_bytes()).unwrap().hub, None);
        assert_eq!(f.items[0].key, "guid-1");
        // no guid: the link; no link either: a content hash, stable across parses
        assert_eq!(f.items[1].key, "https://example.org/items/2");
        assert!(f.items[2].key.starts_with("h:"));
        assert_eq!(
            normalize(RSS2.as_bytes()).unwrap().items[2].key,
            f.items[2].key
        );
        assert!(!f.items[0].text.contains("alert"), "{}", f.items[0].text);
    }

    #[test]
    fn bad_documents_get_readable_errors() {
        assert_eq!(normalize(b"  \n"), Err(NormalizeError::Empty));
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><rss><channel><title>&lol2;</title></channel></rss>"#;
        assert_eq!(normalize(bomb.as_bytes()), Err(NormalizeError::Entities));
        // an external entity (XXE) is refused the same way…
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><rss version="2.0"><channel><title>t</title><item><title>&x;</title></item></channel></rss>"#;
        assert_eq!(normalize(xxe.as_bytes()), Err(NormalizeError::Entities));
        // …and one hidden behind 64 KiB of comments reaches the parser, which never resolves
        // it: no file is read, the item's title is not the file
        let hidden = format!(
            "<?xml version=\"1.0\"?>{}{}",
            "<!-- padding -->".repeat(5_000),
            &xxe[21..]
        );
        match normalize(hidden.as_bytes()) {
            Ok(f) => assert!(
                f.items.iter().all(|i| !i.title.contains("root:")),
                "{:?}",
                f.items
            ),
            Err(e) => assert!(!e.to_string().contains("root:"), "{e}"),
        }
        let e = normalize(b"<html><body>not a feed</body></html>").unwrap_err();
        assert!(matches!(e, NormalizeError::Invalid(_)), "{e}");
        let truncated = &RSS2.as_bytes()[..RSS2.len() / 2];
        assert!(normalize(truncated).is_err());
        assert!(normalize(&[0xff, 0xfe, 0x00, 0x3c, 0x80, 0x81]).is_err());
    }

    /// An item far over every bound (the report's oversized item made fan-out fail on every
    /// poll) comes out bounded: key as a digest, the link dropped, the rest cut.
    #[test]
    fn an_oversized_item_comes_out_bounded() {
        let big = |c: &str, n: usize| c.repeat(n);
        let doc = format!(
            "<rss version=\"2.0\"><channel><title>{}</title><item><guid>{}</guid><link>https://x.example/{}</link><title>{}</title>{}<description>{}</description></item></channel></rss>",
            big("T", 1 << 20),
            big("g", 1 << 20),
            big("l", 2 << 20),
            big("t", 1 << 20),
            format!("<category>{}</category>", big("c", 100_000)).repeat(20),
            big("&amp;lt;script&amp;gt;x", 200_000),
        );
        let f = normalize(doc.as_bytes()).unwrap();
        let item = &f.items[0];
        assert!(item.key.starts_with("sha256:") && item.key.len() < 80);
        assert_eq!(item.link, None, "a 2 MiB link is dropped");
        assert!(item.title.len() <= MAX_TITLE && f.title.len() <= MAX_TITLE);
        assert!(item.text.len() <= MAX_TEXT);
        assert!(item.categories.len() <= 10);
        assert!(item.categories.iter().all(|c| c.len() <= MAX_CATEGORY));
    }
}
