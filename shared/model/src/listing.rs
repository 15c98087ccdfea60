//! Listings: the price read from a listing's text, and the rules a source's owner sets for
//! what a price change or a repost of a listing tells them (ADR 0026).

use crate::Invalid;
use serde::{Deserialize, Serialize};

/// A price as a listing shows it, and its amount in minor units (cents) to compare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Price {
    pub minor: i64,
    /// As the listing wrote it (`$1,950`, `1.800 €`), at most 40 bytes.
    pub shown: String,
}

/// What a price change on a listing already seen tells its subscriber.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceAlerts {
    /// A lower price is its own notification (`$1,950 → $1,800`).
    #[default]
    Drops,
    /// Any change, up or down.
    Changes,
    /// Nothing.
    Off,
}

/// What a repost (the same title and price under a new listing id) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reposts {
    /// Not delivered (the item's event says what it repeats).
    #[default]
    Drop,
    /// Delivered, its title starting with `Repost:`.
    Mark,
    /// Delivered as any new listing.
    Keep,
}

/// A listing source's rules for price changes and reposts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListingRules {
    #[serde(default)]
    pub prices: PriceAlerts,
    #[serde(default)]
    pub reposts: Reposts,
    /// How long after a listing was first seen a copy of it counts as a repost.
    #[serde(default = "ListingRules::default_repost_days")]
    pub repost_days: u16,
}

impl Default for ListingRules {
    fn default() -> Self {
        ListingRules {
            prices: PriceAlerts::default(),
            reposts: Reposts::default(),
            repost_days: Self::default_repost_days(),
        }
    }
}

impl ListingRules {
    pub const MAX_REPOST_DAYS: u16 = 90;

    fn default_repost_days() -> u16 {
        7
    }

    pub fn is_default(&self) -> bool {
        *self == ListingRules::default()
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if !(1..=Self::MAX_REPOST_DAYS).contains(&self.repost_days) {
            return Err(Invalid::new(
                "listing.repost_days",
                format!("1-{} days", Self::MAX_REPOST_DAYS),
            ));
        }
        Ok(())
    }

    /// Whether a change from `from` to `to` (minor units) is told.
    pub fn tells(&self, from: i64, to: i64) -> bool {
        match self.prices {
            PriceAlerts::Drops => to < from,
            PriceAlerts::Changes => to != from,
            PriceAlerts::Off => false,
        }
    }
}

const SYMBOLS: &[char] = &['$', '€', '£', '¥', '₹', '₩', '₪', '₺', '₽', '₱', '₫'];
const CODES: &[&str] = &[
    "USD", "EUR", "GBP", "CAD", "AUD", "NZD", "CHF", "SEK", "NOK", "DKK", "PLN", "CZK", "JPY",
    "INR",
];
/// The most digits an amount may have (beyond, it is an id, not a price).
const MAX_DIGITS: usize = 12;

/// What a source's own price field says (an HTML listing's price element, a JSON API's
/// `price`): an amount alone (`400`, `"399.99"`), or else the first price in it.
pub fn price_field(text: &str) -> Option<Price> {
    let trimmed = text.trim();
    match amount(trimmed) {
        Some((minor, len)) if len == trimmed.len() => Some(price(minor, trimmed)),
        _ => parse_price(text),
    }
}

/// The first price in `text`: a currency symbol or code next to an amount (`$1,950`,
/// `€ 1.800,50`, `1 950 €`, `USD 300`, `$3.5k`). Commas, dots and spaces group digits; a last
/// `.` or `,` followed by one or two digits is the decimal point. Linear in `text`; only its
/// first 4 KB are read. The one price reader: filters' price ranges and listings' prices.
pub fn parse_price(text: &str) -> Option<Price> {
    let text = crate::text::truncate(text, 4096);
    for (i, c) in text.char_indices() {
        let marker_len = if SYMBOLS.contains(&c) {
            Some(c.len_utf8())
        } else if c.is_ascii_uppercase()
            && (i == 0 || !text[..i].ends_with(|p: char| p.is_alphanumeric()))
        {
            CODES
                .iter()
                .find(|code| {
                    text[i..].starts_with(**code)
                        && !text[i + code.len()..].starts_with(|n: char| n.is_alphabetic())
                })
                .map(|code| code.len())
        } else {
            None
        };
        let Some(marker_len) = marker_len else {
            continue;
        };
        // the amount after the marker (`$1,950`, `EUR 300`)
        let after = &text[i + marker_len..];
        let gap = after.len() - after.trim_start_matches([' ', '\u{a0}']).len();
        if gap <= 1
            && let Some((minor, len)) = amount(&after[gap..])
        {
            let mut end = i + marker_len + gap + len;
            // `$3.5k`: thousands (not `$5kg`)
            let rest = &text[end..];
            let thousands = rest.starts_with(['k', 'K'])
                && !rest[1..].starts_with(|c: char| c.is_alphanumeric());
            let minor = if thousands {
                end += 1;
                minor.checked_mul(1000)?
            } else {
                minor
            };
            return Some(price(minor, &text[i..end]));
        }
        // the amount before it (`1.800 €`)
        let before = text[..i].trim_end_matches([' ', '\u{a0}']);
        if text[..i].len() - before.len() <= 1 {
            let start = before
                .char_indices()
                .rev()
                .take(3 * MAX_DIGITS)
                .take_while(|(_, c)| c.is_ascii_digit() || matches!(c, ',' | '.' | ' '))
                .last()
                .map(|(s, _)| s);
            if let Some(start) = start {
                let start = start + (before[start..].len() - before[start..].trim_start().len());
                if let Some((minor, len)) = amount(&before[start..])
                    && len == before.len() - start
                {
                    return Some(price(minor, &text[start..i + marker_len]));
                }
            }
        }
    }
    None
}

fn price(minor: i64, shown: &str) -> Price {
    Price {
        minor,
        shown: crate::text::truncate(shown.trim(), 40),
    }
}

/// The amount at the start of `s` in minor units, and how many bytes it took.
fn amount(s: &str) -> Option<(i64, usize)> {
    let bytes = s.as_bytes();
    let mut end = 0;
    let mut digits = String::new();
    // (position in `digits`, separator) of each separator
    let mut seps: Vec<(usize, u8)> = Vec::new();
    while end < bytes.len() {
        let b = bytes[end];
        if b.is_ascii_digit() {
            digits.push(b as char);
            end += 1;
        } else if !digits.is_empty()
            && (matches!(b, b',' | b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit)
                // a space groups only three digits (`1 950`), else it ends the amount
                || b == b' '
                    && bytes.len() > end + 3
                    && bytes[end + 1..end + 4].iter().all(u8::is_ascii_digit)
                    && !bytes.get(end + 4).is_some_and(u8::is_ascii_digit))
        {
            seps.push((digits.len(), b));
            end += 1;
        } else {
            break;
        }
        if digits.len() > MAX_DIGITS {
            return None;
        }
    }
    if digits.is_empty() {
        return None;
    }
    let decimals = match seps.last() {
        Some(&(at, sep))
            if sep != b' '
                && digits.len() - at == 2
                && seps.iter().filter(|(_, s)| *s == sep).count() == 1 =>
        {
            2
        }
        Some(&(at, sep)) if sep != b' ' && digits.len() - at == 1 && seps.len() == 1 => 1,
        _ => 0,
    };
    let value: i64 = digits.parse().ok()?;
    let minor = match decimals {
        2 => value,
        1 => value * 10,
        _ => value.checked_mul(100)?,
    };
    Some((minor, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minor(s: &str) -> Option<i64> {
        parse_price(s).map(|p| p.minor)
    }

    #[test]
    fn prices_are_read_as_listings_write_them() {
        assert_eq!(minor("Road bike (Oakland) $1,950"), Some(195_000));
        assert_eq!(minor("$ 400 obo"), Some(40_000));
        assert_eq!(minor("Sofa – 1.800 €"), Some(180_000));
        assert_eq!(minor("Sofa – 1.800,50 €"), Some(180_050));
        assert_eq!(minor("€1,800.50"), Some(180_050));
        assert_eq!(minor("1 950 € à débattre"), Some(195_000));
        assert_eq!(minor("EUR 300"), Some(30_000));
        assert_eq!(minor("£12.5"), Some(1_250));
        assert_eq!(minor("Loft $3.5k/mo"), Some(350_000));
        assert_eq!(minor("$5kg of rice"), Some(500));
        assert_eq!(minor("$12.50."), Some(1_250));
        assert_eq!(minor("no price here $ or $x"), None);
        // a price field may be an amount alone; text needs a currency
        assert_eq!(price_field("400").map(|p| p.minor), Some(40_000));
        assert_eq!(price_field(" 399.99 ").map(|p| p.minor), Some(39_999));
        assert_eq!(price_field("$1,950").map(|p| p.minor), Some(195_000));
        assert_eq!(minor("400"), None);
        let p = parse_price("Desk, walnut - $120 (Berkeley)").unwrap();
        assert_eq!(p.shown, "$120");
        assert_eq!(parse_price("Sofa 1.800 €").unwrap().shown, "1.800 €");
    }

    #[test]
    fn what_is_not_a_price_is_none() {
        for s in [
            "",
            "v2.4.0-rc1",
            "3 bedrooms in 2024",
            "$",
            "USDA organic 12",
            "$99999999999999999999",
            "AUDIO 300",
        ] {
            assert_eq!(parse_price(s), None, "{s}");
        }
        // a marker without an amount does not stop the search
        assert_eq!(minor("$ off: now $25"), Some(2_500));
    }

    proptest::proptest! {
        #[test]
        fn parse_price_never_panics(s in ".{0,100}") {
            let _ = parse_price(&s);
            let _ = price_field(&s);
        }
    }

    #[test]
    fn hostile_text_is_read_in_linear_time() {
        let s = "$".repeat(200_000) + &"1,".repeat(100_000);
        let t = std::time::Instant::now();
        let _ = parse_price(&s);
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn rules_default_to_drops_and_dropping_reposts() {
        let r: ListingRules = serde_json::from_str("{}").unwrap();
        assert!(r.is_default());
        assert!(r.tells(195_000, 180_000) && !r.tells(180_000, 195_000));
        let both = ListingRules {
            prices: PriceAlerts::Changes,
            ..r
        };
        assert!(both.tells(180_000, 195_000) && !both.tells(1, 1));
        let bad = ListingRules {
            repost_days: 0,
            ..r
        };
        assert_eq!(bad.validate().unwrap_err().field, "listing.repost_days");
    }
}
