//! How a source that is not a feed becomes items: the extractor a polled URL's document goes
//! through instead of the feed parser. A JSON API's answer is mapped by the same
//! `{{ /json/pointer }}` templates as a JSON hook (ADR 0020, ADR 0025).

use crate::{Invalid, JsonMapping};
use serde::{Deserialize, Serialize};

/// A polled document's extractor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Extract {
    /// A JSON API: `mapping.items` points at the list of listings, the other templates at each
    /// listing's fields (`title`, `body`, `url`, `key` — its id — and `priority`).
    Json { mapping: JsonMapping },
}

impl Extract {
    /// What is wrong with it, naming the field (`extract.mapping.title`).
    pub fn validate(&self) -> Result<(), Invalid> {
        match self {
            Extract::Json { mapping } => {
                mapping.validate().map_err(|e| Invalid {
                    field: format!("extract.{}", e.field),
                    ..e
                })?;
                if mapping.resolve.is_some() || !mapping.resolved_when.is_empty() {
                    return Err(Invalid::new(
                        "extract.mapping.resolve",
                        "a source's items are listings, not alerts: nothing resolves them",
                    ));
                }
                Ok(())
            }
        }
    }

    /// The `Accept` header its fetch sends.
    pub fn accept(&self) -> &'static str {
        match self {
            Extract::Json { .. } => "application/json",
        }
    }

    /// What it is called in a source's description.
    pub fn kind(&self) -> &'static str {
        match self {
            Extract::Json { .. } => "json",
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
        };
        assert!(ok.validate().is_ok());
        let json = serde_json::to_value(&ok).unwrap();
        assert_eq!(json["kind"], "json");
        let bad = Extract::Json {
            mapping: JsonMapping {
                title: "{{ /name".into(),
                ..Default::default()
            },
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
        };
        assert_eq!(
            resolving.validate().unwrap_err().field,
            "extract.mapping.resolve"
        );
    }
}
