//! A subscriber's filter over feed items: keywords, excluded words, a regex, a price range
//! and a category. Matching is case-insensitive on whole words over the item's plain text.

use crate::listing::parse_price;
use serde::{Deserialize, Serialize};

/// What a person wants from a source. An empty filter matches everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    /// At least one of these words or phrases must appear (when non-empty).
    pub any: Vec<String>,
    /// Every one of these words or phrases must appear.
    pub all: Vec<String>,
    /// None of these words or phrases may appear.
    pub exclude: Vec<String>,
    /// A regular expression (case-insensitive) that must match the title or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The lowest acceptable price found in the title (or else the text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_min: Option<f64>,
    /// The highest acceptable price found in the title (or else the text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_max: Option<f64>,
    /// The item must carry this category (case-insensitive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

/// One problem with a filter, naming the field it is about.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FilterError {
    pub field: String,
    pub message: String,
}

const MAX_WORDS: usize = 50;
const MAX_WORD_LEN: usize = 100;
pub(crate) const MAX_REGEX_LEN: usize = 500;

/// The item a filter is applied to: plain text only.
#[derive(Clone, Debug, Default)]
pub struct Item<'a> {
    pub title: &'a str,
    pub text: &'a str,
    pub categories: &'a [String],
}

/// One entry of a word list as it matches: at the start of a word (`bike` finds "bikes",
/// `rc` finds "rc1"), or, quoted, as exactly those words (`"road bike"` finds "road bike" but
/// not "road biker").
#[derive(Clone, Debug)]
struct Term {
    /// Lower case, quotes removed.
    text: String,
    exact: bool,
    /// As the person wrote it, for explanations.
    shown: String,
}

impl Term {
    /// An entry (already trimmed), and whether it is an exclusion (`-word`).
    fn parse(entry: &str) -> (Term, bool) {
        let entry = entry.trim();
        let (negated, rest) = match entry.strip_prefix('-') {
            Some(r) if !r.trim().is_empty() => (true, r.trim()),
            _ => (false, entry),
        };
        let quoted = rest.len() >= 2 && rest.starts_with('"') && rest.ends_with('"');
        let text = if quoted {
            &rest[1..rest.len() - 1]
        } else {
            rest
        };
        (
            Term {
                text: text.trim().to_lowercase(),
                exact: quoted,
                shown: rest.to_owned(),
            },
            negated,
        )
    }

    fn found_in(&self, hay: &str) -> bool {
        occurs(hay, &self.text, self.exact)
    }
}

/// A validated filter, ready to match.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    any: Vec<Term>,
    all: Vec<Term>,
    exclude: Vec<Term>,
    regex: Option<regex::Regex>,
    price_min: Option<f64>,
    price_max: Option<f64>,
    category: Option<String>,
}

impl Filter {
    /// Every problem with this filter, each naming its field (prefixed with `prefix`).
    pub fn validate(&self, prefix: &str) -> Vec<FilterError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, message: String| {
            errors.push(FilterError {
                field: format!("{prefix}{field}"),
                message,
            })
        };
        for (name, words) in [
            ("any", &self.any),
            ("all", &self.all),
            ("exclude", &self.exclude),
        ] {
            if words.len() > MAX_WORDS {
                err(
                    name,
                    format!("at most {MAX_WORDS} entries, got {}", words.len()),
                );
            }
            for w in words {
                if w.trim().is_empty() {
                    err(name, "entries must not be empty".into());
                } else if w.len() > MAX_WORD_LEN {
                    err(
                        name,
                        format!("entries must be at most {MAX_WORD_LEN} bytes"),
                    );
                }
            }
        }
        if let Some(r) = &self.regex {
            if r.len() > MAX_REGEX_LEN {
                err("regex", format!("at most {MAX_REGEX_LEN} bytes"));
            } else if let Err(e) = build_regex(r) {
                err(
                    "regex",
                    format!("invalid regular expression: {}", one_line(&e)),
                );
            }
        }
        for (name, v) in [("price_min", self.price_min), ("price_max", self.price_max)] {
            if let Some(v) = v
                && (!v.is_finite() || v < 0.0)
            {
                err(name, format!("must be a non-negative number, got {v}"));
            }
        }
        if let (Some(lo), Some(hi)) = (self.price_min, self.price_max)
            && lo > hi
        {
            err("price_min", format!("{lo} is greater than price_max {hi}"));
        }
        if let Some(c) = &self.category
            && (c.trim().is_empty() || c.len() > MAX_WORD_LEN)
        {
            err("category", format!("must be 1-{MAX_WORD_LEN} bytes"));
        }
        errors
    }

    /// Validate and compile.
    pub fn compile(&self) -> Result<CompiledFilter, Vec<FilterError>> {
        let errors = self.validate("");
        if !errors.is_empty() {
            return Err(errors);
        }
        // `-word` in any list is an exclusion
        let mut exclude: Vec<Term> = self.exclude.iter().map(|w| Term::parse(w).0).collect();
        let mut split = |v: &Vec<String>| {
            let mut keep = Vec::new();
            for w in v {
                match Term::parse(w) {
                    (t, true) => exclude.push(t),
                    (t, false) => keep.push(t),
                }
            }
            keep
        };
        let any = split(&self.any);
        let all = split(&self.all);
        Ok(CompiledFilter {
            any,
            all,
            exclude,
            regex: self
                .regex
                .as_deref()
                .map(|r| build_regex(r).expect("validated")),
            price_min: self.price_min,
            price_max: self.price_max,
            category: self.category.as_ref().map(|c| c.trim().to_lowercase()),
        })
    }

    pub fn is_empty(&self) -> bool {
        *self == Filter::default()
    }
}

fn one_line(e: &regex::Error) -> String {
    crate::text::one_line(&e.to_string())
}

pub(crate) fn build_regex(r: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(r)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
}

/// The first part of a filter an item fails (no allocation: the hot path only asks whether).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Miss {
    Any,
    All(usize),
    Exclude(usize),
    Regex,
    NoPrice,
    Price(f64),
    Category,
}

impl CompiledFilter {
    /// Whether `item` passes every part of the filter.
    pub fn matches(&self, item: &Item<'_>) -> bool {
        self.check(item).is_ok()
    }

    /// Why `item` does not pass, for a person (the web app's preview); None: it passes.
    pub fn why_not(&self, item: &Item<'_>) -> Option<String> {
        let miss = self.check(item).err()?;
        Some(match miss {
            Miss::Any => format!(
                "has none of: {}",
                self.any
                    .iter()
                    .map(|t| t.shown.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Miss::All(i) => format!("lacks {}", quoted(&self.all[i])),
            Miss::Exclude(i) => format!("has the excluded {}", quoted(&self.exclude[i])),
            Miss::Regex => "does not match the pattern".to_owned(),
            Miss::NoPrice => "shows no price".to_owned(),
            Miss::Price(p) => format!("costs {p}, outside the price range"),
            Miss::Category => format!(
                "is not in the category {:?}",
                self.category.as_deref().unwrap_or_default()
            ),
        })
    }

    fn check(&self, item: &Item<'_>) -> Result<(), Miss> {
        let hay = format!("{}\n{}", item.title, item.text).to_lowercase();
        if !self.any.is_empty() && !self.any.iter().any(|t| t.found_in(&hay)) {
            return Err(Miss::Any);
        }
        if let Some(i) = self.all.iter().position(|t| !t.found_in(&hay)) {
            return Err(Miss::All(i));
        }
        if let Some(i) = self.exclude.iter().position(|t| t.found_in(&hay)) {
            return Err(Miss::Exclude(i));
        }
        if let Some(re) = &self.regex
            && !re.is_match(item.title)
            && !re.is_match(item.text)
        {
            return Err(Miss::Regex);
        }
        if self.price_min.is_some() || self.price_max.is_some() {
            let Some(price) = parse_price(item.title)
                .or_else(|| parse_price(item.text))
                .map(|p| p.minor as f64 / 100.0)
            else {
                return Err(Miss::NoPrice);
            };
            if self.price_min.is_some_and(|lo| price < lo)
                || self.price_max.is_some_and(|hi| price > hi)
            {
                return Err(Miss::Price(price));
            }
        }
        if let Some(cat) = &self.category
            && !item
                .categories
                .iter()
                .any(|c| c.trim().to_lowercase() == *cat)
        {
            return Err(Miss::Category);
        }
        Ok(())
    }
}

/// A term as a person reads it in an explanation: quoted, as they wrote it.
fn quoted(t: &Term) -> String {
    if t.exact {
        t.shown.clone()
    } else {
        format!("\"{}\"", t.shown)
    }
}

/// Whether `word` (already lowercase) occurs in `hay` (lowercase) at the start of a word —
/// no letter or digit directly before it — and, when `exact`, also ending one. Linear in the
/// haystack for each start it tries: the search moves on one character at a time.
fn occurs(hay: &str, word: &str, exact: bool) -> bool {
    if word.is_empty() {
        return true;
    }
    let mut from = 0;
    while let Some(pos) = hay[from..].find(word) {
        let start = from + pos;
        let end = start + word.len();
        let before = hay[..start].chars().next_back();
        let after = hay[end..].chars().next();
        if before.is_none_or(|c| !c.is_alphanumeric())
            && (!exact || after.is_none_or(|c| !c.is_alphanumeric()))
        {
            return true;
        }
        from = start + hay[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_miss_is_explained_by_the_part_that_failed() {
        let f = Filter {
            any: vec!["Bike".into(), "bicycle".into()],
            all: vec!["road".into()],
            exclude: vec!["broken".into()],
            price_max: Some(300.0),
            ..Filter::default()
        }
        .compile()
        .unwrap();
        let why = |t: &str| f.why_not(&item(t, ""));
        assert_eq!(why("road bike $200"), None);
        assert_eq!(why("sofa").as_deref(), Some("has none of: Bike, bicycle"));
        assert_eq!(why("mountain bike $200").as_deref(), Some("lacks \"road\""));
        assert_eq!(
            why("broken road bike $20").as_deref(),
            Some("has the excluded \"broken\"")
        );
        assert_eq!(why("road bike").as_deref(), Some("shows no price"));
        assert_eq!(
            why("road bike $900").as_deref(),
            Some("costs 900, outside the price range")
        );
    }

    fn item<'a>(title: &'a str, text: &'a str) -> Item<'a> {
        Item {
            title,
            text,
            categories: &[],
        }
    }

    #[test]
    fn words_match_at_word_starts_and_quotes_match_exactly() {
        let f = Filter {
            any: vec!["Bike".into(), "bicycle".into(), "-kids".into()],
            exclude: vec!["rc".into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(f.matches(&item("Road BIKE for sale", "")));
        assert!(f.matches(&item("x", "a vintage bicycle.")));
        assert!(f.matches(&item("Two bikes", "")), "bike finds bikes");
        assert!(!f.matches(&item("Ebike", "")), "only at a word's start");
        assert!(!f.matches(&item("Kids bike", "")), "-kids excludes");
        assert!(!f.matches(&item("bike v2.4.0-rc1", "")), "rc finds rc1");
        assert!(!f.matches(&item("Sofa", "")));
        let exact = Filter {
            all: vec!["\"road bike\"".into()],
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(exact.matches(&item("A road bike, 56 cm", "")));
        assert!(!exact.matches(&item("A road biker", "")), "quoted: exactly");
        assert_eq!(
            exact.why_not(&item("A road biker", "")).as_deref(),
            Some("lacks \"road bike\"")
        );
    }

    #[test]
    fn all_regex_price_and_category() {
        let cats = vec!["Bicycles".to_string()];
        let f = Filter {
            all: vec!["road".into(), "carbon frame".into()],
            regex: Some(r"\b(54|56)\s?cm\b".into()),
            price_min: Some(300.0),
            price_max: Some(1500.0),
            category: Some("bicycles".into()),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let ok = Item {
            title: "Road bike, carbon frame, 56cm - $1,250",
            text: "",
            categories: &cats,
        };
        assert!(f.matches(&ok));
        let pricey = Item {
            title: "Road bike carbon frame 56cm $3.5k",
            ..ok.clone()
        };
        assert!(!f.matches(&pricey));
        let no_price = Item {
            title: "Road bike carbon frame 56cm",
            ..ok.clone()
        };
        assert!(!f.matches(&no_price));
        let price_in_text = Item {
            title: "Road bike carbon frame 56cm",
            text: "asking $900 obo",
            ..ok.clone()
        };
        assert!(f.matches(&price_in_text));
        assert!(!f.matches(&Item {
            categories: &[],
            ..ok
        }));
    }

    #[test]
    fn validation_names_every_bad_field() {
        let f = Filter {
            any: vec![" ".into()],
            regex: Some("(unclosed".into()),
            price_min: Some(10.0),
            price_max: Some(5.0),
            ..Default::default()
        };
        let fields: Vec<_> = f.validate("filter.").into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["filter.any", "filter.regex", "filter.price_min"]);
        assert!(f.compile().is_err());
    }

    /// A stored filter with a field a newer version added still reads (the API refuses unknown
    /// fields in what clients send: `tests/tests/pipeline.rs`, `filter.anny`).
    #[test]
    fn a_stored_filter_with_a_newer_field_still_reads() {
        let f = serde_json::from_str::<Filter>(r#"{"any":["x"],"stems":true}"#).unwrap();
        assert_eq!(f.any, ["x"]);
    }

    proptest! {
        #[test]
        fn empty_filter_matches_everything(t in ".{0,80}", b in ".{0,80}") {
            let f = Filter::default().compile().unwrap();
            prop_assert!(f.matches(&item(&t, &b)));
        }

        #[test]
        fn a_word_in_the_title_is_found(w in "[a-z]{1,10}", pre in "[ ,.]{0,3}", post in "[ ,.!]{0,3}") {
            let f = Filter { any: vec![w.to_uppercase()], ..Default::default() }.compile().unwrap();
            let title = format!("{pre}{w}{post}");
            prop_assert!(f.matches(&item(&title, "")));
        }

        #[test]
        fn exclude_wins_over_any(w in "[a-z]{1,10}") {
            let f = Filter { any: vec![w.clone()], exclude: vec![w.clone()], ..Default::default() }
                .compile().unwrap();
            prop_assert!(!f.matches(&item(&w, "")));
        }
    }
}
