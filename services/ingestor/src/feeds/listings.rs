//! What a feed remembers about each priced listing it has shown — its prices over time and a
//! signature of its title and price — and what a later poll learns from that: a price change
//! on a known listing, or a repost of a recent one under a new id (ADR 0026). Pure.

use crate::feeds::normalize::FeedItem;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use tocsin_model::{Millis, Price};

/// Prices kept per listing (the oldest go first).
pub const MAX_PRICES: usize = 8;

/// One listing as the feed remembers it (about 150 bytes in the feed's record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// A digest of the item's key.
    #[serde(rename = "k")]
    pub key: String,
    /// Its repost signature: a digest of its title's words and its price.
    #[serde(rename = "s")]
    pub sig: String,
    /// When it was first seen.
    #[serde(rename = "f")]
    pub first_ms: Millis,
    /// Its prices, oldest first: since when, in minor units.
    #[serde(rename = "p")]
    pub prices: Vec<(Millis, i64)>,
    /// Its latest price as the listing showed it.
    #[serde(rename = "t")]
    pub shown: String,
}

impl Listing {
    /// Its latest price: since when, in minor units.
    pub fn price(&self) -> Option<(Millis, i64)> {
        self.prices.last().copied()
    }
}

/// How an item's key is remembered.
pub fn key_of(item_key: &str) -> String {
    tocsin_model::digest(&["listing", item_key])[..24].to_owned()
}

/// A listing's repost signature: its title's words in lower case (the price's own text left
/// out) and its price. The same flat posted again under a new id has the same one.
pub fn signature(title: &str, price: &Price) -> String {
    let without = title.replacen(&price.shown, " ", 1);
    let words: Vec<String> = without
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    tocsin_model::digest(&["repost", &words.join(" "), &price.minor.to_string()])[..16].to_owned()
}

/// What the feed remembered before a poll, looked up by key and by signature.
pub struct Memory<'a> {
    by_key: HashMap<&'a str, &'a Listing>,
    /// The latest listing first seen with each signature.
    by_sig: HashMap<&'a str, &'a Listing>,
}

impl<'a> Memory<'a> {
    pub fn new(listings: &'a VecDeque<Listing>) -> Memory<'a> {
        let mut by_key = HashMap::with_capacity(listings.len());
        let mut by_sig: HashMap<&str, &Listing> = HashMap::with_capacity(listings.len());
        for l in listings {
            by_key.insert(l.key.as_str(), l);
            let latest = by_sig.entry(l.sig.as_str()).or_insert(l);
            if l.first_ms > latest.first_ms {
                *latest = l;
            }
        }
        Memory { by_key, by_sig }
    }

    /// The item's listing when its price changed since the last poll that showed one.
    pub fn repriced(&self, item: &FeedItem) -> Option<&'a Listing> {
        let price = item.price.as_ref()?;
        let known = self.by_key.get(key_of(&item.key).as_str())?;
        let (_, last) = known.price()?;
        (last != price.minor).then_some(*known)
    }

    /// The recent listing a new item repeats (same title words and price, another id).
    pub fn repost_of(&self, item: &FeedItem) -> Option<&'a Listing> {
        let price = item.price.as_ref()?;
        let original = self.by_sig.get(signature(&item.title, price).as_str())?;
        (original.key != key_of(&item.key)).then_some(*original)
    }
}

/// What the feed remembers after a poll of `items`: each priced item's listing, its price
/// appended when it changed, most recently shown last; older listings kept up to `capacity`
/// (at least the document's).
pub fn remember(
    before: &VecDeque<Listing>,
    items: &[FeedItem],
    now: Millis,
    capacity: usize,
) -> VecDeque<Listing> {
    let known: HashMap<&str, &Listing> = before.iter().map(|l| (l.key.as_str(), l)).collect();
    let mut shown: Vec<Listing> = Vec::new();
    let mut in_document: HashSet<String> = HashSet::new();
    for item in items {
        let Some(price) = &item.price else { continue };
        let key = key_of(&item.key);
        if !in_document.insert(key.clone()) {
            continue;
        }
        let listing = match known.get(key.as_str()) {
            Some(l) => {
                let mut l = (*l).clone();
                if l.price().is_none_or(|(_, last)| last != price.minor) {
                    l.prices.push((now, price.minor));
                    if l.prices.len() > MAX_PRICES {
                        l.prices.remove(0);
                    }
                    l.shown = price.shown.clone();
                }
                l
            }
            None => Listing {
                sig: signature(&item.title, price),
                key,
                first_ms: now,
                prices: vec![(now, price.minor)],
                shown: price.shown.clone(),
            },
        };
        shown.push(listing);
    }
    let mut after: VecDeque<Listing> = before
        .iter()
        .filter(|l| !in_document.contains(&l.key))
        .cloned()
        .collect();
    let cap = capacity.max(shown.len());
    after.extend(shown);
    while after.len() > cap {
        after.pop_front();
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use tocsin_model::listing::parse_price;

    fn item(key: &str, title: &str) -> FeedItem {
        FeedItem {
            key: key.into(),
            title: title.into(),
            text: String::new(),
            link: None,
            categories: vec![],
            published_ms: None,
            priority: None,
            dedup_key: None,
            price: parse_price(title),
        }
    }

    #[test]
    fn a_known_listing_whose_price_changed_is_repriced_once() {
        let first = remember(
            &VecDeque::new(),
            &[item("a", "Flat (Mission) $1,950"), item("b", "Desk")],
            1,
            100,
        );
        assert_eq!(first.len(), 1, "only priced items are listings");
        let memory = Memory::new(&first);
        assert!(
            memory
                .repriced(&item("a", "Flat (Mission) $1,950"))
                .is_none()
        );
        let cheaper = item("a", "Flat (Mission) $1,800");
        let was = memory.repriced(&cheaper).unwrap();
        assert_eq!(
            (was.shown.as_str(), was.price()),
            ("$1,950", Some((1, 195_000)))
        );
        let second = remember(&first, std::slice::from_ref(&cheaper), 2, 100);
        assert_eq!(second[0].prices, [(1, 195_000), (2, 180_000)]);
        assert_eq!(second[0].shown, "$1,800");
        assert!(Memory::new(&second).repriced(&cheaper).is_none());
        // an item that shows no price now keeps its listing's last one
        assert_eq!(remember(&second, &[item("a", "Flat")], 3, 100), second);
    }

    #[test]
    fn the_same_title_and_price_under_a_new_id_is_a_repost() {
        let first = remember(
            &VecDeque::new(),
            &[item("a", "Flat (Mission) $1,950")],
            1,
            100,
        );
        let memory = Memory::new(&first);
        let again = item("z", "FLAT  (mission) – $1,950");
        assert_eq!(memory.repost_of(&again).unwrap().first_ms, 1);
        assert!(
            memory
                .repost_of(&item("a", "Flat (Mission) $1,950"))
                .is_none()
        );
        assert!(
            memory
                .repost_of(&item("y", "Flat (Mission) $1,900"))
                .is_none()
        );
        assert!(
            memory
                .repost_of(&item("x", "Flat (Castro) $1,950"))
                .is_none()
        );
    }

    #[test]
    fn what_is_remembered_is_bounded() {
        let items: Vec<FeedItem> = (0..50)
            .map(|i| item(&format!("k{i}"), &format!("thing {i} ${i}")))
            .collect();
        let mut kept = VecDeque::new();
        for round in 0..30 {
            kept = remember(&kept, &items, round, 20);
            // a listing whose price goes up and down keeps only its last prices
            let flip: Vec<FeedItem> = (0..50)
                .map(|i| item(&format!("k{i}"), &format!("thing {i} ${}", i + round % 2)))
                .collect();
            kept = remember(&kept, &flip, round, 20);
        }
        assert_eq!(kept.len(), 50, "at least the document");
        assert!(kept.iter().all(|l| l.prices.len() <= MAX_PRICES));
        let small = remember(&kept, &items[..5], 99, 20);
        assert_eq!(small.len(), 20);
        assert_eq!(
            small.back().unwrap().key,
            key_of("k4"),
            "the latest shown last"
        );
    }
}
