//! The HTTP handlers, one file per resource, and what they share.

pub(crate) mod acks;
pub(crate) mod admin;
pub(crate) mod alert_hooks;
pub(crate) mod analytics;
pub(crate) mod credentials;
pub(crate) mod destinations;
pub(crate) mod heartbeats;
pub(crate) mod history;
pub(crate) mod hooks;
pub(crate) mod inbound;
pub(crate) mod ntfy;
pub(crate) mod opml;
pub(crate) mod policy;
pub(crate) mod publish;
pub(crate) mod push;
pub(crate) mod session;
pub(crate) mod silences;
pub(crate) mod sms;
pub(crate) mod sources;
pub(crate) mod stream;
pub(crate) mod topics;
pub(crate) mod users;

use crate::ApiError;

/// Parse a JSON body, naming the offending field on error.
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body", None));
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let field = (path != ".").then_some(path);
        ApiError::bad_request(format!("invalid JSON body: {}", e.inner()), field)
    })
}

/// [`parse_body`], refusing fields the type does not know, at any depth, naming the first
/// (`steps[0].colour`). The stored types accept unknown fields, so that a record written by a
/// newer version still reads; what a client sends is checked here instead.
pub(crate) fn parse_body_strict<T: serde::de::DeserializeOwned>(
    body: &[u8],
) -> Result<T, ApiError> {
    let value: T = parse_body(body)?;
    let mut unknown = Vec::new();
    let de = &mut serde_json::Deserializer::from_slice(body);
    let _: Result<T, _> = serde_ignored::deserialize(de, |path| unknown.push(path.to_string()));
    match unknown.into_iter().next() {
        None => Ok(value),
        Some(path) => {
            let field = path.trim_start_matches('?').to_owned();
            Err(ApiError::bad_request(
                format!("invalid JSON body: unknown field {field}"),
                Some(field),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::publish::Publish;
    use axum::http::StatusCode;

    #[test]
    fn a_strict_body_names_an_unknown_field_at_any_depth() {
        let e = parse_body_strict::<tocsin_model::Policy>(
            br#"{"steps": [{"wait_secs": 1, "colour": "red"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.field.as_deref(), Some("steps.0.colour"), "{}", e.message);
        assert!(
            parse_body_strict::<tocsin_model::Policy>(br#"{"steps": [{"wait_secs": 1}]}"#).is_ok()
        );
        // what is stored reads with fields a newer version added
        let newer: tocsin_model::Policy =
            serde_json::from_str(r#"{"steps": [{"later": true}], "escalate_to_mars": 1}"#).unwrap();
        assert_eq!(newer.steps.len(), 1);
    }

    #[test]
    fn body_errors_name_the_field() {
        let e = parse_body::<Publish>(br#"{"title": "x", "priority": "high"}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("priority"));
        let e = parse_body::<Publish>(br#"{"title": "x", "colour": 1}"#).unwrap_err();
        assert!(e.message.contains("colour"), "{}", e.message);
        let e = parse_body::<Publish>(b"{not json").unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
