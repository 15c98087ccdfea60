//! `/v1/sources/opml`: a user's feeds as OPML, the format feed readers import and export —
//! to take them elsewhere, or to bring a reader's subscriptions here in one step.

use crate::auth::{authenticate, random_hex};
use crate::{ApiError, St};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tocsin_model::text::xml_escape as escape;
use tocsin_model::{Filter, Source, SourceSettings, SourceSpec, now_ms};

/// The most feeds one import takes (a user holds at most `router.max_sources_per_user`).
const MAX_OUTLINES: usize = 200;

/// One feed of an OPML document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outline {
    pub(crate) url: String,
    pub(crate) title: String,
}

/// The feeds an OPML document lists (`<outline xmlUrl=…>`, in folders or not), in order, at
/// most [`MAX_OUTLINES`]; an error names the byte where the XML stops making sense. One pass,
/// no entity expansion (quick-xml never reads a DTD).
pub(crate) fn parse(doc: &[u8]) -> Result<Vec<Outline>, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(doc);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut saw_opml = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("not OPML: {e} (at byte {})", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let qname = e.name();
                let name: &str = qname.as_ref();
                if name.eq_ignore_ascii_case("opml") {
                    saw_opml = true;
                }
                if name.eq_ignore_ascii_case("outline") {
                    let (mut url, mut text, mut title) = (None, None, None);
                    for a in e.attributes().flatten() {
                        let value = a
                            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                            .map(|v| v.trim().to_owned())
                            .unwrap_or_default();
                        let key: &str = a.key.as_ref();
                        match key.to_ascii_lowercase().as_str() {
                            "xmlurl" => url = Some(value),
                            "text" => text = Some(value),
                            "title" => title = Some(value),
                            _ => {}
                        }
                    }
                    if let Some(url) = url.filter(|u| !u.is_empty()) {
                        if out.len() == MAX_OUTLINES {
                            return Err(format!("more than {MAX_OUTLINES} feeds in one import"));
                        }
                        out.push(Outline {
                            url,
                            title: title.or(text).unwrap_or_default(),
                        });
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    if !saw_opml {
        return Err("not OPML: no <opml> element".into());
    }
    Ok(out)
}

/// `sources`' feeds as an OPML 2.0 document.
pub(crate) fn render(sources: &[Source]) -> String {
    let mut doc = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n  <head><title>tocsin feeds</title></head>\n  <body>\n",
    );
    for s in sources {
        // feeds only: a JSON API or a web page read by selectors means nothing to a reader
        if let SourceSpec::Feed {
            url, extract: None, ..
        } = &s.spec
        {
            let title = escape(if s.label.is_empty() { url } else { &s.label });
            doc.push_str(&format!(
                "    <outline type=\"rss\" text=\"{title}\" title=\"{title}\" xmlUrl=\"{}\"/>\n",
                escape(url)
            ));
        }
    }
    doc.push_str("  </body>\n</opml>\n");
    doc
}

/// `GET /v1/sources/opml`: the user's feeds as an OPML file.
pub(crate) async fn export(State(state): St, headers: HeaderMap) -> Result<Response, ApiError> {
    let u = authenticate(&state, &headers).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/x-opml; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"tocsin-feeds.opml\"",
            ),
        ],
        render(&u.sources),
    )
        .into_response())
}

/// `POST /v1/sources/opml` (an OPML document): every feed it lists that the user does not
/// watch yet becomes a source (new items only, no filter); answers what was added and, for
/// the rest, why not. A feed refused stops nothing else.
pub(crate) async fn import(
    State(state): St,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    let u = authenticate(&state, &headers).await?;
    // one import is up to 200 commands to the user's avatar: counted with previews and test
    // messages, so that a tenant's imports cannot flood the silo it shares
    if let Err(wait) = state.previews.take(&u.id) {
        return Err(ApiError::too_many(format!(
            "too many imports, previews and test messages; retry in {}s",
            wait.as_secs().max(1)
        )));
    }
    let outlines = parse(&body).map_err(|e| ApiError::bad_request(e, None))?;
    let mut added = Vec::new();
    let mut skipped = Vec::new();
    let mut watched: Vec<String> = u
        .sources
        .iter()
        .filter_map(|s| match &s.spec {
            SourceSpec::Feed {
                url, extract: None, ..
            } => Some(url.clone()),
            _ => None,
        })
        .collect();
    for o in outlines {
        let url = match tocsin_model::validate_feed_url(&o.url) {
            Ok(url) => url,
            Err(e) => {
                skipped.push(json!({"url": o.url, "reason": e.to_string()}));
                continue;
            }
        };
        if watched.contains(&url) {
            skipped.push(json!({"url": url, "reason": "watched already"}));
            continue;
        }
        let source = Source {
            id: format!("s{}", random_hex(6)),
            spec: SourceSpec::Feed {
                active_hours: None,
                request: Default::default(),
                url: url.clone(),
                deliver_existing: false,
                poll_interval_secs: None,
                listing: Default::default(),
                extract: None,
            },
            filter: Filter::default(),
            label: tocsin_model::text::truncate(&o.title, 100),
            created_at_ms: now_ms(),
            settings: SourceSettings::default(),
        };
        match crate::routes::sources::save(&state, &u.id, &source).await {
            Ok(()) => {}
            // this feed refused (a bad URL, a full list): the others go on
            Err(e) if e.status.is_client_error() => {
                skipped.push(json!({"url": url, "reason": e.message}));
                continue;
            }
            Err(e) => return Err(e),
        }
        watched.push(url);
        added.push(source);
    }
    Ok(Json(json!({ "added": added, "skipped": skipped })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_readers_export_reads_and_ours_reads_back() {
        let doc = br#"<?xml version="1.0"?>
<opml version="1.0"><head><title>My feeds</title></head><body>
  <outline text="Bikes &amp; more" title="Bikes &amp; more" type="rss" xmlUrl="https://example.org/bikes.rss"/>
  <outline text="Folder"><outline text="Flats" xmlurl="https://example.org/flats.atom" /></outline>
  <outline text="no feed here"/>
</body></opml>"#;
        let got = parse(doc).unwrap();
        assert_eq!(
            got,
            [
                Outline {
                    url: "https://example.org/bikes.rss".into(),
                    title: "Bikes & more".into()
                },
                Outline {
                    url: "https://example.org/flats.atom".into(),
                    title: "Flats".into()
                },
            ]
        );
        let source = |url: &str, label: &str| Source {
            id: "s1".into(),
            spec: SourceSpec::Feed {
                active_hours: None,
                request: Default::default(),
                url: url.into(),
                deliver_existing: false,
                poll_interval_secs: None,
                listing: Default::default(),
                extract: None,
            },
            filter: Filter::default(),
            label: label.into(),
            created_at_ms: 0,
            settings: SourceSettings::default(),
        };
        let ours = render(&[
            source(
                "https://example.org/a?x=1&y=<2>",
                "A \"quoted\" <b>name</b>",
            ),
            source("https://example.org/b", ""),
        ]);
        let mut api = source("https://example.org/api", "an API");
        if let SourceSpec::Feed { extract, .. } = &mut api.spec {
            *extract = Some(Box::new(tocsin_model::Extract::Change { selector: None }));
        }
        assert!(
            !render(&[api]).contains("example.org/api"),
            "only feeds are exported"
        );
        let back = parse(ours.as_bytes()).unwrap();
        assert_eq!(back[0].url, "https://example.org/a?x=1&y=<2>");
        assert_eq!(back[0].title, "A \"quoted\" <b>name</b>");
        assert_eq!(back[1].title, "https://example.org/b");
    }

    #[test]
    fn what_is_not_opml_is_refused_by_what_is_wrong() {
        assert!(
            parse(b"<html><body>hi</body></html>")
                .unwrap_err()
                .contains("no <opml>")
        );
        assert!(parse(b"<opml><body><outline xmlUrl=\"x").is_err());
        let many: String = (0..=MAX_OUTLINES)
            .map(|i| format!("<outline xmlUrl=\"https://e.org/{i}\"/>"))
            .collect();
        let e = parse(format!("<opml><body>{many}</body></opml>").as_bytes()).unwrap_err();
        assert!(e.contains("more than"), "{e}");
        // an entity declared in a DTD is never expanded
        let bomb = br#"<!DOCTYPE opml [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><opml><body><outline title="&b;" xmlUrl="https://e.org/x"/></body></opml>"#;
        let r = parse(bomb);
        assert!(
            r.as_ref()
                .map_or(true, |o| o.iter().all(|x| x.title.len() < 100)),
            "{r:?}"
        );
    }
}
