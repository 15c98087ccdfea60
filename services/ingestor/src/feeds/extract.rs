//! A polled document read by its source's extractor: a feed by the feed parser, a JSON API's
//! answer by the source's mapping, a web page by CSS selectors — into the same items, so
//! filters, dedup, the seen set and the fan-out treat them alike (ADR 0025). Pure: bytes in,
//! items or a readable error out, in time linear in the document (at most 500 listings, each
//! field's text read only up to its bound).

use crate::feeds::normalize::{
    FeedItem, MAX_ITEMS, MAX_TEXT, MAX_TITLE, ParsedFeed, bounded_key, normalize, web_link,
};
use tocsin_model::listing::{parse_price, price_field};
use tocsin_model::text::{one_line, truncate};
use tocsin_model::{Extract, JsonMapping};

/// The items of `body`, fetched from `page`, read as `extract` says (none: a feed). Each
/// item's dedup key is its link in canonical form, computed here once per item (not once per
/// subscriber): the same listing from another source reaches a user once.
/// A listing's price is its source's price field, else the first price in its title.
pub fn parse(body: &[u8], extract: Option<&Extract>, page: &str) -> Result<ParsedFeed, String> {
    let mut parsed = read(body, extract, page)?;
    let watched = matches!(extract, Some(Extract::Change { .. }));
    for item in &mut parsed.items {
        if item.dedup_key.is_none() {
            item.dedup_key = item
                .link
                .as_deref()
                .and_then(tocsin_model::canonical::canonical_url);
        }
        if item.price.is_none() && !watched {
            item.price = parse_price(&item.title);
        }
    }
    Ok(parsed)
}

fn read(body: &[u8], extract: Option<&Extract>, page: &str) -> Result<ParsedFeed, String> {
    match extract {
        None => normalize(body).map_err(|e| e.to_string()),
        Some(Extract::Json { mapping, next }) => json(body, mapping, next.as_deref(), page),
        Some(Extract::Html {
            item,
            title,
            link,
            price,
            text,
        }) => {
            let sel = |name: &str, s: &str| {
                scraper::Selector::parse(s)
                    .map_err(|e| format!("extract.{name}: {s:?} is not a CSS selector ({e})"))
            };
            let opt =
                |name: &str, s: &Option<String>| s.as_deref().map(|s| sel(name, s)).transpose();
            let selectors = Selectors {
                item: sel("item", item)?,
                title: opt("title", title)?,
                link: opt("link", link)?,
                price: opt("price", price)?,
                text: opt("text", text)?,
            };
            html(body, &selectors, page)
        }
        Some(Extract::Change { selector }) => {
            let region = selector
                .as_deref()
                .map(|s| {
                    scraper::Selector::parse(s)
                        .map_err(|e| format!("extract.selector: {s:?} is not a CSS selector ({e})"))
                })
                .transpose()?;
            page_text(body, region.as_ref(), page)
        }
    }
}

/// The most a watched region's text keeps, in lines and in bytes.
pub const MAX_LINES: usize = 500;
pub const MAX_PAGE_TEXT: usize = 20_000;

/// A watched page as one item: its id is a digest of the selected region's text, so a change
/// is a new item; its text is that region, a line per text node.
fn page_text(
    body: &[u8],
    region: Option<&scraper::Selector>,
    page: &str,
) -> Result<ParsedFeed, String> {
    if too_deep(body, MAX_DEPTH) {
        return Err(format!(
            "the page nests elements deeper than {MAX_DEPTH}: not read (no real page does)"
        ));
    }
    let doc = scraper::Html::parse_document(&String::from_utf8_lossy(body));
    let root = match region {
        Some(sel) => doc
            .select(sel)
            .next()
            .ok_or_else(|| "extract.selector: nothing on the page matches it".to_owned())?,
        None => doc.root_element(),
    };
    let skip = scraper::Selector::parse("script, style, noscript, template").expect("valid");
    let hidden: std::collections::HashSet<_> = root.select(&skip).map(|e| e.id()).collect();
    let mut lines: Vec<String> = Vec::new();
    let mut bytes = 0;
    for node in root.descendants() {
        let Some(text) = node.value().as_text() else {
            continue;
        };
        if node.ancestors().any(|a| hidden.contains(&a.id())) {
            continue;
        }
        let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if line.is_empty() {
            continue;
        }
        if lines.len() == MAX_LINES || bytes + line.len() > MAX_PAGE_TEXT {
            break;
        }
        bytes += line.len() + 1;
        lines.push(line);
    }
    let text = lines.join("\n");
    let title_sel = scraper::Selector::parse("title").expect("valid");
    let title = doc
        .select(&title_sel)
        .next()
        .map(|t| truncate(&one_line(&text_of(t, MAX_TITLE)), MAX_TITLE))
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| page.to_owned());
    let key = format!("c:{}", &tocsin_model::digest(&[&text])[..32]);
    Ok(ParsedFeed {
        title: title.clone(),
        items: vec![FeedItem {
            title: truncate(&format!("Changed: {title}"), MAX_TITLE),
            text,
            link: Some(page.to_owned()).filter(|u| web_link(u)),
            categories: vec![],
            published_ms: None,
            priority: None,
            // a change is news however often the page changes back: never keyed by its link
            dedup_key: Some(key.clone()),
            key,
            price: None,
        }],
        hub: None,
        self_url: None,
        next_page: None,
    })
}

/// A watched page's item once the last poll's text (`before`) is known: none when the text
/// is the same; else keyed by both versions (a page changing back is a change too), its text
/// the lines added and removed. Returns the text to remember.
pub fn changed(parsed: &mut ParsedFeed, before: Option<&str>) -> Option<String> {
    let item = parsed.items.first_mut()?;
    let now = item.text.clone();
    match before {
        Some(b) if b == now => parsed.items.clear(),
        Some(b) => {
            item.key = format!("c:{}", &tocsin_model::digest(&[b, &now])[..32]);
            item.dedup_key = Some(item.key.clone());
            item.text = diff(b, &now);
        }
        None => {}
    }
    Some(now)
}

/// What changed between two versions of a watched region, for people: the lines added and
/// the lines removed (each line compared whole, in one pass over each version), at most 30 of
/// each shown.
pub fn diff(before: &str, after: &str) -> String {
    use std::collections::HashMap;
    fn count(s: &str) -> HashMap<&str, usize> {
        let mut m: HashMap<&str, usize> = HashMap::new();
        for l in s.lines() {
            *m.entry(l).or_default() += 1;
        }
        m
    }
    let (mut old, mut new) = (count(before), count(after));
    let mut added = Vec::new();
    for l in after.lines() {
        match old.get_mut(l) {
            Some(n) if *n > 0 => *n -= 1,
            _ => added.push(l),
        }
    }
    let mut removed = Vec::new();
    for l in before.lines() {
        match new.get_mut(l) {
            Some(n) if *n > 0 => *n -= 1,
            _ => removed.push(l),
        }
    }
    let mut out = String::new();
    for (sign, lines) in [("+", &added), ("-", &removed)] {
        for l in lines.iter().take(30) {
            out.push_str(&format!("{sign} {l}\n"));
        }
        if lines.len() > 30 {
            out.push_str(&format!("{sign} … and {} more\n", lines.len() - 30));
        }
    }
    if out.is_empty() {
        out.push_str("(the same lines, in another order)");
    }
    truncate(out.trim_end(), MAX_TEXT)
}

struct Selectors {
    item: scraper::Selector,
    title: Option<scraper::Selector>,
    link: Option<scraper::Selector>,
    price: Option<scraper::Selector>,
    text: Option<scraper::Selector>,
}

/// The text of `el`, its whitespace collapsed, read only up to `max` bytes: a listing that
/// holds the rest of the page costs no more than a small one.
fn text_of(el: scraper::ElementRef<'_>, max: usize) -> String {
    let mut out = String::new();
    for chunk in el.text() {
        for word in chunk.split_whitespace() {
            if out.len() + word.len() + 1 > max {
                return out;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    out
}

/// The deepest a page may nest elements. The HTML parser checks the open elements at each
/// tag, so a page nested 100,000 deep costs it seconds (measured: 20,000 deep takes 0.5 s in
/// a release build, growing with the square); browsers stop at a few hundred.
pub const MAX_DEPTH: usize = 1000;

/// Elements that never hold others (void) or whose end tag may be left out (closed by the
/// next of their kind): the nesting estimate does not count them.
const NOT_NESTING: [&str; 30] = [
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "li", "p", "td", "th", "tr", "option", "optgroup", "dt", "dd", "tbody",
    "thead", "tfoot", "colgroup", "rb", "rt", "rp",
];

/// Whether the page nests elements deeper than `limit`, estimated in one pass over its bytes
/// (start tags counted up, end tags down; comments, `script` and `style` skipped).
fn too_deep(body: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(off) = body[i..].iter().position(|b| *b == b'<') {
        i += off + 1;
        match body.get(i) {
            Some(b'/') => depth = depth.saturating_sub(1),
            Some(b'!') if body[i..].starts_with(b"!--") => match find(&body[i..], b"-->") {
                Some(end) => i += end,
                None => return false,
            },
            Some(c) if c.is_ascii_alphabetic() => {
                let name_end = body[i..]
                    .iter()
                    .position(|b| !b.is_ascii_alphanumeric())
                    .map_or(body.len(), |e| i + e);
                let name = String::from_utf8_lossy(&body[i..name_end]).to_ascii_lowercase();
                let Some(close) = body[name_end..].iter().position(|b| *b == b'>') else {
                    return false;
                };
                let self_closing = name_end + close > 0 && body[name_end + close - 1] == b'/';
                i = name_end + close;
                if name == "script" || name == "style" {
                    match find(&body[i..], format!("</{name}").as_bytes()) {
                        Some(end) => i += end,
                        None => return false,
                    }
                } else if !self_closing && !NOT_NESTING.contains(&name.as_str()) {
                    depth += 1;
                    if depth > limit {
                        return true;
                    }
                }
            }
            _ => {}
        }
    }
    false
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

/// A web page's listings: one per element `item` selects (at most 500).
fn html(body: &[u8], s: &Selectors, page: &str) -> Result<ParsedFeed, String> {
    if too_deep(body, MAX_DEPTH) {
        return Err(format!(
            "the page nests elements deeper than {MAX_DEPTH}: not read (no real listing page does)"
        ));
    }
    let doc = scraper::Html::parse_document(&String::from_utf8_lossy(body));
    let base = url::Url::parse(page).ok();
    let any_link = scraper::Selector::parse("a[href]").expect("a valid selector");
    let page_title = scraper::Selector::parse("title").expect("a valid selector");
    let mut items = Vec::new();
    for el in doc.select(&s.item).take(MAX_ITEMS) {
        let pick = |sel: &Option<scraper::Selector>| sel.as_ref().and_then(|x| el.select(x).next());
        let title =
            pick(&s.title).map_or_else(|| text_of(el, MAX_TITLE), |t| text_of(t, MAX_TITLE));
        let price = pick(&s.price)
            .map(|p| text_of(p, 100))
            .filter(|p| !p.is_empty());
        let amount = price.as_deref().and_then(price_field);
        let title = match &price {
            Some(p) if !title.contains(p.as_str()) => format!("{title} - {p}"),
            _ => title,
        };
        let title = truncate(&one_line(&title), MAX_TITLE);
        let text = pick(&s.text)
            .map(|t| text_of(t, MAX_TEXT))
            .unwrap_or_default();
        let href = match &s.link {
            Some(l) => el.select(l).next(),
            None => el.select(&any_link).next(),
        }
        .and_then(|a| a.attr("href"));
        let link = href
            .and_then(|h| match &base {
                Some(b) => b.join(h.trim()).ok().map(|u| u.to_string()),
                None => url::Url::parse(h.trim()).ok().map(|u| u.to_string()),
            })
            .filter(|u| web_link(u));
        if title.is_empty() && link.is_none() {
            continue;
        }
        let key = match &link {
            Some(l) => bounded_key(l),
            None => format!("h:{}", &tocsin_model::digest(&[&title, &text])[..32]),
        };
        items.push(FeedItem {
            key,
            title,
            text,
            link,
            categories: vec![],
            published_ms: None,
            priority: None,
            dedup_key: None,
            price: amount,
        });
    }
    let title = doc
        .select(&page_title)
        .next()
        .map(|t| truncate(&one_line(&text_of(t, MAX_TITLE)), MAX_TITLE))
        .unwrap_or_default();
    Ok(ParsedFeed {
        title,
        items,
        hub: None,
        self_url: None,
        next_page: None,
    })
}

/// A JSON API's answer: parsed (serde_json refuses nesting past 128 levels), then mapped
/// item by item; an item's key is its `key` template, else its link, else a digest of its
/// text. `next` points at the next page's URL, resolved against `page`.
fn json(
    body: &[u8],
    mapping: &JsonMapping,
    next: Option<&str>,
    page: &str,
) -> Result<ParsedFeed, String> {
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
                price: m.price.as_deref().and_then(price_field),
            }
        })
        .collect();
    let next_page = next
        .and_then(|p| value.pointer(p))
        .and_then(serde_json::Value::as_str)
        .and_then(|n| url::Url::parse(page).ok()?.join(n.trim()).ok())
        .map(|u| u.to_string())
        .filter(|u| web_link(u) && u != page);
    Ok(ParsedFeed {
        title: String::new(),
        items,
        hub: None,
        self_url: None,
        next_page,
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
                price: Some("{{ /price }}".into()),
                ..Default::default()
            },
            next: Some("/next".into()),
        }
    }

    #[test]
    fn a_json_api_answer_becomes_items() {
        let body = br#"{"results": [
            {"id": 17, "name": "Road bike", "price": 400, "url": "https://shop.example/l/17", "location": "Oakland"},
            {"id": 18, "name": "Sofa", "price": 150, "url": "javascript:alert(1)"}
        ], "next": null}"#;
        let f = parse(body, Some(&shop()), "https://shop.example/api").unwrap();
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
        assert_eq!(f.items[0].price.as_ref().map(|p| p.minor), Some(40_000));
        assert_eq!(f.next_page, None, "the last page");
        let paged = br#"{"results": [], "next": "/api?page=2"}"#;
        let f = parse(paged, Some(&shop()), "https://shop.example/api?page=1").unwrap();
        assert_eq!(
            f.next_page.as_deref(),
            Some("https://shop.example/api?page=2")
        );
        // a page naming itself, or a link that is not the web, ends the paging
        for next in ["https://shop.example/api?page=1", "file:///etc/passwd"] {
            let body = format!(r#"{{"results": [], "next": "{next}"}}"#);
            let f = parse(
                body.as_bytes(),
                Some(&shop()),
                "https://shop.example/api?page=1",
            );
            assert_eq!(f.unwrap().next_page, None);
        }
    }

    fn listings() -> Extract {
        Extract::Html {
            item: "li.result".into(),
            title: Some(".title".into()),
            link: None,
            price: Some(".price".into()),
            text: Some(".where".into()),
        }
    }

    #[test]
    fn a_web_pages_listings_become_items() {
        let page = br#"<html><head><title>Search: bike</title></head><body><ul>
          <li class="result"><a href="/l/17"><span class="title">Road  bike</span></a> <span class="price">$400</span> <span class="where">Oakland</span></li>
          <li class="result"><a href="https://other.example/x?id=2"><span class="title">Sofa $150</span></a><span class="price">$150</span></li>
          <li class="result"><span class="title">No link</span></li>
          <li class="ad">not a listing</li>
        </ul></body></html>"#;
        let f = parse(
            page,
            Some(&listings()),
            "https://shop.example/search?q=bike",
        )
        .unwrap();
        assert_eq!(f.title, "Search: bike");
        let got: Vec<(&str, &str, Option<&str>)> = f
            .items
            .iter()
            .map(|i| (i.title.as_str(), i.text.as_str(), i.link.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "Road bike - $400",
                    "Oakland",
                    Some("https://shop.example/l/17")
                ),
                ("Sofa $150", "", Some("https://other.example/x?id=2")),
                ("No link", "", None),
            ]
        );
        assert_eq!(f.items[0].key, "https://shop.example/l/17");
        assert!(f.items[2].key.starts_with("h:"));
        let prices: Vec<Option<i64>> = f
            .items
            .iter()
            .map(|i| i.price.as_ref().map(|p| p.minor))
            .collect();
        assert_eq!(prices, [Some(40_000), Some(15_000), None]);
        let bad = Extract::Html {
            item: "li[".into(),
            title: None,
            link: None,
            price: None,
            text: None,
        };
        let e = parse(page, Some(&bad), "https://shop.example/").unwrap_err();
        assert!(e.starts_with("extract.item"), "{e}");
    }

    /// Hostile pages: nested 100,000 deep (refused before the parser sees it), and 100,000
    /// elements the item selector matches, under 200 that each hold the rest of the
    /// page: 500 listings, each text read only to its bound.
    #[test]
    fn hostile_pages_cost_bounded_time() {
        let any = Extract::Html {
            item: "div".into(),
            title: None,
            link: None,
            price: None,
            text: None,
        };
        let deep = format!("{}x{}", "<div>".repeat(100_000), "</div>".repeat(100_000));
        let e = parse(deep.as_bytes(), Some(&any), "https://e.org/").unwrap_err();
        assert!(e.contains("deeper than 1000"), "{e}");
        let started = std::time::Instant::now();
        let wide = format!(
            "{}{}{}",
            "<div>".repeat(200),
            "<div>a</div>".repeat(100_000),
            "</div>".repeat(200)
        );
        let f = parse(wide.as_bytes(), Some(&any), "https://e.org/").unwrap();
        assert_eq!(f.items.len(), 500);
        assert!(f.items.iter().all(|i| i.title.len() <= MAX_TITLE));
        // in a debug build; a release build is about ten times faster
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{:?}",
            started.elapsed()
        );
        // unclosed list items and paragraphs are not nesting
        let flat = format!("<ul>{}</ul>", "<li><p>x".repeat(5_000));
        assert!(!too_deep(flat.as_bytes(), MAX_DEPTH));
        let script = format!("<script>{}</script><div>ok</div>", "<div>".repeat(5_000));
        assert!(!too_deep(script.as_bytes(), MAX_DEPTH));
    }

    #[test]
    fn a_watched_region_is_one_item_keyed_by_its_text_and_its_changes_read_as_lines() {
        let watch = Extract::Change {
            selector: Some("#prices".into()),
        };
        let v1 = br#"<html><head><title>Prices</title><script>var x = "<p>not text</p>";</script></head>
            <body><nav>menu</nav><div id="prices"><p>Plan A: $10</p><p>Plan B: $20</p></div></body></html>"#;
        let a = parse(v1, Some(&watch), "https://vendor.example/pricing").unwrap();
        assert_eq!(a.items.len(), 1);
        assert_eq!(a.items[0].title, "Changed: Prices");
        assert_eq!(a.items[0].text, "Plan A: $10\nPlan B: $20");
        let same = parse(v1, Some(&watch), "https://vendor.example/pricing").unwrap();
        assert_eq!(
            same.items[0].key, a.items[0].key,
            "unchanged: the same item"
        );
        let v2 = br#"<html><head><title>Prices</title></head>
            <body><nav>another menu</nav><div id="prices"><p>Plan A: $12</p><p>Plan B: $20</p></div></body></html>"#;
        let b = parse(v2, Some(&watch), "https://vendor.example/pricing").unwrap();
        assert_ne!(b.items[0].key, a.items[0].key, "changed: a new item");
        assert_eq!(
            diff(&a.items[0].text, &b.items[0].text),
            "+ Plan A: $12\n- Plan A: $10"
        );
        // against the last poll: unchanged is nothing; a change, and a change back, are news
        let mut again = same.clone();
        assert_eq!(
            changed(&mut again, Some(&a.items[0].text)).as_deref(),
            Some(a.items[0].text.as_str())
        );
        assert!(again.items.is_empty());
        let mut to_b = b.clone();
        changed(&mut to_b, Some(&a.items[0].text));
        let mut back = a.clone();
        changed(&mut back, Some(&b.items[0].text));
        assert_ne!(
            back.items[0].key, a.items[0].key,
            "back to the first text: a new change"
        );
        assert_ne!(back.items[0].key, to_b.items[0].key);
        assert_eq!(back.items[0].text, "+ Plan A: $10\n- Plan A: $12");
        let missing = Extract::Change {
            selector: Some("#gone".into()),
        };
        assert!(
            parse(v1, Some(&missing), "https://vendor.example/")
                .unwrap_err()
                .contains("nothing")
        );
    }

    #[test]
    fn what_is_not_the_expected_json_is_named() {
        let e = parse(b"<html>", Some(&shop()), "https://shop.example/api").unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
        let e = parse(
            br#"{"results": 3}"#,
            Some(&shop()),
            "https://shop.example/api",
        )
        .unwrap_err();
        assert!(e.contains("mapping.items"), "{e}");
        // nesting far past any API's: refused, not a stack overflow
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(deep.as_bytes(), Some(&shop()), "https://shop.example/api").unwrap_err();
        assert!(e.contains("recursion limit"), "{e}");
        // a feed is still a feed
        assert!(
            parse(
                b"<rss version=\"2.0\"><channel><title>t</title></channel></rss>",
                None,
                "https://e.org/"
            )
            .is_ok()
        );
    }
}
