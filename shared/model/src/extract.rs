//! How a source that is not a feed becomes items: the extractor a polled URL's document goes
//! through instead of the feed parser. A JSON API's answer is mapped by the same
//! `{{ /json/pointer }}` templates as a JSON hook (ADR 0020); a web page's listings are found
//! by CSS selectors (ADR 0025). The selectors' syntax is checked where they run (the
//! ingestor: a preview, or the source's status, names a bad one).

use crate::{Invalid, JsonMapping};
use serde::{Deserialize, Serialize};

/// A polled document's extractor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Extract {
    /// A JSON API: `mapping.items` points at the list of listings, the other templates at each
    /// listing's fields (`title`, `body`, `url`, `key` — its id —, `price` and `priority`).
    /// `next`, a pointer to the next page's URL in the answer (`/next`, `/links/next`), is
    /// followed for up to [`MAX_PAGES`] pages in all.
    Json {
        mapping: JsonMapping,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next: Option<String>,
    },
    /// A web page: `item` selects each listing; within it, `title` (default: the listing's
    /// text), `link` (default: its first `a[href]`), `price` and `text` select the fields. A
    /// listing's id is its link (resolved against the page), else its title and price.
    Html {
        item: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        price: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// A page watched for changes: the text of what `selector` selects (default: the whole
    /// page) is compared with the last poll's, and a change is one notification with the
    /// lines added and removed.
    Change {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        selector: Option<String>,
    },
}

/// The longest CSS selector taken.
pub const MAX_SELECTOR: usize = 300;
/// The most pages of a paged JSON API read in one poll.
pub const MAX_PAGES: usize = 5;

impl Extract {
    /// What is wrong with it, naming the field (`extract.mapping.title`).
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Extract::Json { mapping, next } => {
                mapping.validate().map_err(|e| Invalid {
                    field: format!("extract.{}", e.field),
                    ..e
                })?;
                if let Some(next) = next
                    && (!next.starts_with('/') || next.len() > 200)
                {
                    return Err(Invalid::new(
                        "extract.next",
                        "a JSON pointer to the next page's URL, like /next",
                    ));
                }
                if mapping.resolve.is_some() || !mapping.resolved_when.is_empty() {
                    return Err(Invalid::new(
                        "extract.mapping.resolve",
                        "a source's items are listings, not alerts: nothing resolves them",
                    ));
                }
                Ok(())
            }
            Extract::Html {
                item,
                title,
                link,
                price,
                text,
            } => {
                for (name, sel) in [
                    ("item", Some(item)),
                    ("title", title.as_ref()),
                    ("link", link.as_ref()),
                    ("price", price.as_ref()),
                    ("text", text.as_ref()),
                ] {
                    if let Some(sel) = sel
                        && (sel.trim().is_empty() || sel.len() > MAX_SELECTOR)
                    {
                        return Err(Invalid::new(
                            &format!("extract.{name}"),
                            format!("a CSS selector of 1-{MAX_SELECTOR} bytes"),
                        ));
                    }
                }
                Ok(())
            }
            Extract::Change { selector } => match selector {
                Some(sel) if sel.trim().is_empty() || sel.len() > MAX_SELECTOR => {
                    Err(Invalid::new(
                        "extract.selector",
                        format!("a CSS selector of 1-{MAX_SELECTOR} bytes"),
                    ))
                }
                _ => Ok(()),
            },
        }
    }

    /// The `Accept` header its fetch sends.
    pub fn accept(&self) -> &'static str {
        match self {
            Extract::Json { .. } => "application/json",
            Extract::Html { .. } | Extract::Change { .. } => {
                "text/html, application/xhtml+xml;q=0.9, */*;q=0.5"
            }
        }
    }

    /// Whether its documents come in pages (a JSON API with a `next` pointer).
    pub fn paged(&self) -> bool {
        matches!(self, Extract::Json { next: Some(_), .. })
    }

    /// What it is called in a source's description.
    pub fn kind(&self) -> &'static str {
        match self {
            Extract::Json { .. } => "json",
            Extract::Html { .. } => "html",
            Extract::Change { .. } => "change",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_extractor_is_checked_as_a_mapping_and_never_resolves() {
        let ok = Extract::Json {
            mapping: JsonMapping {
                items: Some("/results".into()),
                title: "{{ /name }}".into(),
                url: Some("{{ /url }}".into()),
                key: Some("{{ /id }}".into()),
                ..Default::default()
            },
            next: Some("/next".into()),
        };
        assert!(ok.validate().is_ok());
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["kind"], "json");
        let bad = Extract::Json {
            mapping: JsonMapping {
                title: "{{ /name".into(),
                ..Default::default()
            },
            next: None,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .field
                .starts_with("extract.mapping")
        );
        let resolving = Extract::Json {
            mapping: JsonMapping {
                title: "x".into(),
                resolve: Some("{{ /state }}".into()),
                ..Default::default()
            },
            next: None,
        };
        assert_eq!(
            resolving.validate().unwrap_err().field,
            "extract.mapping.resolve"
        );
        let unpaged = Extract::Json {
            mapping: JsonMapping {
                title: "x".into(),
                ..Default::default()
            },
            next: Some("next".into()),
        };
        assert_eq!(unpaged.validate().unwrap_err().field, "extract.next");
    }
}
