//! Text from feeds and mail, and notifications from any producer: reducing HTML to text,
//! decoding entities, finding links and prices never panics, and a notification cut to its
//! bounds is within every bound, whatever it carried.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tocsin_model::{budget, text};

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let t = text::html_to_text(&s);
    assert!(!t.chars().any(|c| c.is_control() && c != '\n'), "{t:?}");
    let _ = text::decode_entities(&s);
    let _ = tocsin_model::listing::parse_price(&s);
    for link in tocsin_ingestor::mail::parse::links(&s) {
        assert!(link.starts_with("http://") || link.starts_with("https://"), "{link:?}");
    }
    for max in [0, 1, 3, 7, 300] {
        assert!(text::truncate(&s, max).len() <= max.max(3));
    }
    if let Ok(n) = serde_json::from_slice::<tocsin_model::Notification>(data) {
        let n = n.bounded();
        assert!(n.title.len() <= budget::MAX_TITLE && n.body.len() <= budget::MAX_BODY);
        assert!(n.url.as_ref().is_none_or(|u| u.len() <= budget::MAX_URL));
        assert!(n.tags.len() <= budget::MAX_TAGS);
        assert!(n.dedup_key.as_ref().is_none_or(|k| k.len() <= budget::MAX_DEDUP_KEY));
    }
});
