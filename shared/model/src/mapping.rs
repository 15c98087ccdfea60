//! A JSON hook's mapping: how any program's JSON becomes notifications. Each field is a
//! template — text with `{{ /json/pointer }}` placeholders (RFC 6901), `{{ $/pointer }}` for the
//! whole payload when `items` splits it, and `{{ /pointer | fallback }}` for a field that may be
//! missing. There is no computation: rendering is one pass over the template, each placeholder
//! one lookup, every output bounded — a hostile template cannot loop or blow up (see ADR 0020).

use crate::{Invalid, Priority};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// How a JSON payload becomes notifications.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JsonMapping {
    /// A pointer to a list in the payload (`/alerts`): one notification per element, whose
    /// fields the other templates' pointers name. Absent: the payload is one item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Renders to 1-5, an ntfy word (`min` … `urgent`), or a key of `priorities`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// What a rendered `priority` means (`{"critical": 5, "warning": 3}`), compared without case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub priorities: BTreeMap<String, Priority>,
    /// The alert's identity: equal keys page once while open, and resolve together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Renders to one of `resolved_when` (default `resolved`, `ok`, `true`) for an item that
    /// resolves its key rather than notifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_when: Vec<String>,
    /// The click URL (kept when it is http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A listing's price (a JSON API source): an amount (`400`) or a price as shown
    /// (`$1,950`), what a later poll compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
}

/// One item, mapped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    pub title: String,
    pub body: String,
    pub priority: Option<Priority>,
    pub key: Option<String>,
    /// The item resolves `key` instead of notifying.
    pub resolve: bool,
    pub url: Option<String>,
    pub price: Option<String>,
}

/// Why a payload could not be mapped: the mapping's field and what went wrong, for the sender
/// (a 400) and for the source's owner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for MapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// The longest template, the most placeholders in one, the most items in one payload, and
/// the longest a placeholder's value is written (objects and lists as JSON).
pub const MAX_TEMPLATE: usize = 1000;
pub const MAX_PLACEHOLDERS: usize = 20;
pub const MAX_ITEMS: usize = 500;
const MAX_VALUE: usize = 2000;
/// The longest a rendered field is kept (a title is cut further by the notification's bounds).
const MAX_RENDERED: usize = 16_000;

#[derive(Debug, PartialEq)]
enum Part {
    Text(String),
    Field {
        /// `$/…`: from the whole payload.
        root: bool,
        pointer: String,
        fallback: Option<String>,
        /// As written, for errors.
        source: String,
    },
}

/// A template's parts, or what is wrong with it.
fn parse(template: &str) -> Result<Vec<Part>, String> {
    if template.len() > MAX_TEMPLATE {
        return Err(format!("at most {MAX_TEMPLATE} bytes"));
    }
    let mut parts = Vec::new();
    let mut rest = template;
    let mut fields = 0;
    while let Some(open) = rest.find("{{") {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_owned()));
        }
        let after = &rest[open + 2..];
        let close = after.find("}}").ok_or_else(|| {
            format!(
                "{{{{ at byte {} is not closed by }}}}",
                template.len() - rest.len() + open
            )
        })?;
        let inner = after[..close].trim();
        let (path, fallback) = match inner.split_once('|') {
            Some((p, f)) => (p.trim(), Some(f.trim().to_owned())),
            None => (inner, None),
        };
        let (root, pointer) = match path.strip_prefix('$') {
            Some(p) => (true, p),
            None => (false, path),
        };
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            return Err(format!(
                "{{{{ {inner} }}}}: a field is a JSON pointer like /labels/alertname (or $/receiver for the whole payload)"
            ));
        }
        fields += 1;
        if fields > MAX_PLACEHOLDERS {
            return Err(format!("at most {MAX_PLACEHOLDERS} fields"));
        }
        parts.push(Part::Field {
            root,
            pointer: pointer.to_owned(),
            fallback,
            source: inner.to_owned(),
        });
        rest = &after[close + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(parts)
}

/// `v` as text: strings as they are, numbers and booleans written, null empty, the rest as JSON.
/// Objects and lists are written only as far as [`MAX_VALUE`]: a placeholder naming the whole
/// payload costs about 2,000 bytes of work, not the payload's size, however often it is used.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => crate::text::truncate(s, MAX_VALUE),
        Value::Null => String::new(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        _ => {
            let mut out = String::new();
            json_capped(v, &mut out);
            crate::text::truncate(&out, MAX_VALUE)
        }
    }
}

/// `v` as compact JSON appended to `out`, stopping once `out` is past [`MAX_VALUE`]: long
/// strings are cut before they are escaped, and no element past the cap is visited.
fn json_capped(v: &Value, out: &mut String) {
    if out.len() > MAX_VALUE {
        return;
    }
    match v {
        Value::String(s) => string_capped(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if out.len() > MAX_VALUE {
                    return;
                }
                if i > 0 {
                    out.push(',');
                }
                json_capped(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if out.len() > MAX_VALUE {
                    return;
                }
                if i > 0 {
                    out.push(',');
                }
                string_capped(k, out);
                out.push(':');
                json_capped(item, out);
            }
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// `s` as a JSON string appended to `out`, cut to the room left before it is escaped.
fn string_capped(s: &str, out: &mut String) {
    let room = MAX_VALUE.saturating_sub(out.len()) + 1;
    let cut = crate::text::truncate(s, room);
    out.push_str(&serde_json::to_string(&cut).unwrap_or_default());
}

fn render(parts: &[Part], item: &Value, root: &Value) -> Result<String, String> {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field {
                root: from_root,
                pointer,
                fallback,
                source,
            } => {
                let doc = if *from_root { root } else { item };
                match (doc.pointer(pointer), fallback) {
                    (Some(v), _) if !v.is_null() => out.push_str(&text(v)),
                    (_, Some(f)) => out.push_str(f),
                    (None, None) => {
                        return Err(format!(
                            "{{{{ {source} }}}}: the item has no {pointer} (give a fallback: {{{{ {source} | none }}}})"
                        ));
                    }
                    (Some(_), None) => {}
                }
            }
        }
        if out.len() > MAX_RENDERED {
            return Ok(crate::text::truncate(&out, MAX_RENDERED));
        }
    }
    Ok(out)
}

impl JsonMapping {
    fn templates(&self) -> Vec<(&'static str, &String)> {
        let mut t = vec![("title", &self.title)];
        for (name, v) in [
            ("body", &self.body),
            ("priority", &self.priority),
            ("key", &self.key),
            ("resolve", &self.resolve),
            ("url", &self.url),
            ("price", &self.price),
        ] {
            if let Some(v) = v {
                t.push((name, v));
            }
        }
        t
    }

    /// Check every template and limit; problems name `mapping.<field>`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.title.trim().is_empty() {
            return Err(Invalid::new("mapping.title", "needed"));
        }
        for (name, t) in self.templates() {
            parse(t).map_err(|e| Invalid::new(&format!("mapping.{name}"), e))?;
        }
        if let Some(items) = &self.items
            && !items.starts_with('/')
        {
            return Err(Invalid::new(
                "mapping.items",
                "a JSON pointer to a list, like /alerts",
            ));
        }
        if self.resolve.is_some() && self.key.is_none() {
            return Err(Invalid::new(
                "mapping.resolve",
                "resolving needs a key: what it resolves",
            ));
        }
        if self.priorities.len() > 50 || self.resolved_when.len() > 20 {
            return Err(Invalid::new(
                "mapping.priorities",
                "at most 50 priorities and 20 resolved_when values",
            ));
        }
        let long = self
            .priorities
            .keys()
            .chain(&self.resolved_when)
            .chain(self.items.iter())
            .any(|k| k.len() > 200);
        if long {
            return Err(Invalid::new("mapping", "values of at most 200 bytes"));
        }
        Ok(())
    }

    /// Map `payload` to its items. Every item is mapped before any is used, so a payload that
    /// fails half-way sends nothing.
    pub fn apply(&self, payload: &Value) -> Result<Vec<Mapped>, MapError> {
        let err = |field: &str, message: String| MapError {
            field: format!("mapping.{field}"),
            message,
        };
        let compiled: Vec<(&str, Vec<Part>)> = self
            .templates()
            .into_iter()
            .map(|(name, t)| parse(t).map(|p| (name, p)).map_err(|e| err(name, e)))
            .collect::<Result<_, _>>()?;
        let items: Vec<&Value> = match &self.items {
            None => vec![payload],
            Some(p) => match payload.pointer(p) {
                Some(Value::Array(list)) if list.len() <= MAX_ITEMS => list.iter().collect(),
                Some(Value::Array(list)) => {
                    return Err(err(
                        "items",
                        format!("{} items in one payload, at most {MAX_ITEMS}", list.len()),
                    ));
                }
                Some(_) => return Err(err("items", format!("{p} is not a list"))),
                None => return Err(err("items", format!("the payload has no {p}"))),
            },
        };
        let resolved_when: Vec<String> = if self.resolved_when.is_empty() {
            vec!["resolved".into(), "ok".into(), "true".into()]
        } else {
            self.resolved_when
                .iter()
                .map(|v| v.to_lowercase())
                .collect()
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let at = |name: &str, e: String| match &self.items {
                    Some(p) => err(name, format!("{e} (item {i} of {p})")),
                    None => err(name, e),
                };
                let mut rendered: BTreeMap<&str, String> = BTreeMap::new();
                for (name, parts) in &compiled {
                    let v = render(parts, item, payload).map_err(|e| at(name, e))?;
                    rendered.insert(name, v.trim().to_owned());
                }
                let get = |name: &str| rendered.get(name).cloned().filter(|v| !v.is_empty());
                let priority = match get("priority") {
                    None => None,
                    Some(p) => Some(self.priority_of(&p).ok_or_else(|| {
                        at(
                            "priority",
                            format!("{p:?} is not 1-5, an ntfy word (min, low, default, high, max, urgent) or one of priorities"),
                        )
                    })?),
                };
                let resolve = get("resolve")
                    .is_some_and(|v| resolved_when.iter().any(|w| *w == v.to_lowercase()));
                let title = get("title").ok_or_else(|| at("title", "renders empty".into()))?;
                Ok(Mapped {
                    title,
                    body: get("body").unwrap_or_default(),
                    priority,
                    key: get("key"),
                    resolve,
                    url: get("url"),
                    price: get("price"),
                })
            })
            .collect()
    }

    fn priority_of(&self, v: &str) -> Option<Priority> {
        if let Some(p) = self
            .priorities
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(v))
            .map(|(_, p)| *p)
        {
            return Some(p);
        }
        let n = match v.to_ascii_lowercase().as_str() {
            "min" => 1,
            "low" => 2,
            "default" => 3,
            "high" => 4,
            "max" | "urgent" => 5,
            other => other.parse().ok()?,
        };
        Priority::new(n).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(v: Value) -> JsonMapping {
        let m: JsonMapping = serde_json::from_value(v).unwrap();
        m.validate().unwrap();
        m
    }

    #[test]
    fn a_payload_with_a_list_maps_item_by_item() {
        let m = mapping(json!({
            "items": "/checks",
            "title": "{{ /name }} is {{ /state }} ({{ $/host }})",
            "body": "{{ /output | no output }}",
            "priority": "{{ /severity }}",
            "priorities": {"critical": 5, "Warning": 3},
            "key": "{{ $/host }}:{{ /name }}",
            "resolve": "{{ /state }}",
            "resolved_when": ["OK"],
            "url": "https://mon.example.org/{{ /name }}"
        }));
        let payload = json!({"host": "web1", "checks": [
            {"name": "disk", "state": "CRITICAL", "severity": "critical", "output": "/var 97%"},
            {"name": "load", "state": "OK", "severity": "warning"},
        ]});
        let out = m.apply(&payload).unwrap();
        assert_eq!(
            out[0],
            Mapped {
                title: "disk is CRITICAL (web1)".into(),
                body: "/var 97%".into(),
                priority: Priority::new(5).ok(),
                key: Some("web1:disk".into()),
                resolve: false,
                url: Some("https://mon.example.org/disk".into()),
                price: None,
            }
        );
        assert_eq!(out[1].body, "no output");
        assert_eq!(
            out[1].priority,
            Priority::new(3).ok(),
            "priorities compare without case"
        );
        assert!(out[1].resolve);
    }

    #[test]
    fn what_does_not_render_is_named() {
        let m = mapping(json!({"items": "/a", "title": "{{ /name }}", "priority": "{{ /p }}"}));
        let e = m
            .apply(&json!({"a": [{"name": "x", "p": 2}, {"nme": "y"}]}))
            .unwrap_err();
        assert_eq!(e.field, "mapping.title");
        assert!(
            e.message.contains("has no /name") && e.message.contains("item 1 of /a"),
            "{e}"
        );
        let e = m
            .apply(&json!({"a": [{"name": "x", "p": "soon"}]}))
            .unwrap_err();
        assert_eq!(e.field, "mapping.priority");
        assert_eq!(
            m.apply(&json!({"a": 1})).unwrap_err().field,
            "mapping.items"
        );
        let many = json!({"a": vec![json!({"name": "x"}); MAX_ITEMS + 1]});
        assert_eq!(m.apply(&many).unwrap_err().field, "mapping.items");
        // numbers, booleans and objects are written as text, bounded
        let m = mapping(json!({"title": "{{ /n }} {{ /b }} {{ /o }}"}));
        let big = "x".repeat(100_000);
        let out = m
            .apply(&json!({"n": 1.5, "b": true, "o": {"k": big}}))
            .unwrap();
        assert!(out[0].title.starts_with("1.5 true {\"k\":\"xxx"));
        assert!(out[0].title.len() < 2100);
        // the whole payload in every field of every item: each value costs its cap, not the
        // payload (500 items × 20 fields of a 100 KB payload)
        let m = mapping(json!({"items": "/a", "title": "{{ $ }}".repeat(MAX_PLACEHOLDERS)}));
        let payload = json!({"a": vec![json!({}); MAX_ITEMS], "big": "x".repeat(100_000)});
        let out = m.apply(&payload).unwrap();
        assert_eq!(out.len(), MAX_ITEMS);
        assert!(out.iter().all(|o| o.title.len() <= MAX_RENDERED));
        assert!(
            out[0].title.starts_with("{\"a\":[{}"),
            "{}",
            &out[0].title[..40]
        );
        assert!(
            text(&payload).len() <= MAX_VALUE,
            "each value is cut at its cap"
        );
    }

    #[test]
    fn bad_mappings_are_refused_by_field() {
        let field = |v: Value| {
            serde_json::from_value::<JsonMapping>(v)
                .unwrap()
                .validate()
                .unwrap_err()
                .field
        };
        assert_eq!(field(json!({"title": ""})), "mapping.title");
        assert_eq!(field(json!({"title": "{{ /a "})), "mapping.title");
        assert_eq!(
            field(json!({"title": "x", "body": "{{ labels.x }}"})),
            "mapping.body"
        );
        assert_eq!(
            field(json!({"title": "x", "resolve": "{{ /s }}"})),
            "mapping.resolve"
        );
        assert_eq!(
            field(json!({"title": "x", "items": "alerts"})),
            "mapping.items"
        );
        let many = "{{ /a }}".repeat(MAX_PLACEHOLDERS + 1);
        assert_eq!(field(json!({"title": many})), "mapping.title");
        assert_eq!(
            field(json!({"title": "x".repeat(MAX_TEMPLATE + 1)})),
            "mapping.title"
        );
    }
}
