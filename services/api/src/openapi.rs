//! The OpenAPI 3.1 document, kept by hand beside the routes (a test checks they agree).

use axum::http::header;
use axum::response::IntoResponse;

pub const DOCUMENT: &str = include_str!("../openapi.json");

pub async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_is_json_and_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(super::DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let src = include_str!("lib.rs");
        let mut routes = 0;
        // `.route("/path", …)`, also when rustfmt puts the path on the next line
        for chunk in src.split(".route(").skip(1) {
            let path = chunk
                .trim_start()
                .strip_prefix('"')
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            routes += 1;
            assert!(
                doc["paths"].get(path).is_some(),
                "{path} missing from openapi.json"
            );
        }
        assert!(routes >= 19, "{routes} routes found");
    }
}
