//! The HTTP handlers, one file per resource, and what they share.

pub(crate) mod acks;
pub(crate) mod admin;
pub(crate) mod alert_hooks;
pub(crate) mod destinations;
pub(crate) mod heartbeats;
pub(crate) mod history;
pub(crate) mod hooks;
pub(crate) mod inbound;
pub(crate) mod ntfy;
pub(crate) mod policy;
pub(crate) mod publish;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::publish::Publish;
    use axum::http::StatusCode;

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
