//! A demo feed for the five-minute walkthrough: an RSS 1.0 (RDF) document in Craigslist's
//! shape that gains a listing every few seconds, with ETag support.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What is for sale: the item, its price in dollars, its description. Every bike but the Trek
/// stays under $1,000 and the Trek over it whatever a round takes off (the README's walkthrough
/// watches for bikes up to $1,000).
const LISTINGS: &[(&str, u32, &str)] = &[
    (
        "Trek road bike 56cm",
        1250,
        "Carbon frame, Shimano 105, barely ridden.",
    ),
    ("Mid-century sofa", 400, "Walnut legs, new cushions."),
    (
        "Specialized Allez road bike",
        650,
        "Aluminium frame, 54cm, new tyres.",
    ),
    (
        "Kids bike 20in",
        80,
        "Good condition, training wheels included.",
    ),
    (
        "Cannondale CAAD12 road bike",
        900,
        "Ultegra groupset, 56cm.",
    ),
    ("Standing desk", 150, "Electric, 120x60."),
    (
        "Vintage Peugeot road bike",
        300,
        "Steel frame, recently serviced.",
    ),
];

/// Where the listings are; eleven, prime to the seven items, so each item meets every place
/// before any pair comes round again.
const PLACES: &[&str] = &[
    "oakland",
    "berkeley",
    "sf",
    "mission district",
    "san jose",
    "palo alto",
    "alameda",
    "richmond",
    "daly city",
    "fremont",
    "sausalito",
];

/// The dollars a round of every item in every place takes off each price, and after how many
/// rounds the prices start over: listings stay distinct for 77 × 50 of them (about ten hours
/// at one every 10 s). A listing with the title and price of a recent one is a repost, which a
/// feed does not announce (ADR 0026); without this every listing after the first seven would be
/// one, and the walkthrough would show nothing once the feed was older than a minute.
const ROUNDS: usize = 50;

/// The most listings a document shows, newest first, as Craigslist's search feeds do.
pub const SHOWN: usize = 25;

/// Listing `i`: its title (`<item> - $<price> (<place>)`) and description.
fn listing(i: usize) -> (String, &'static str) {
    let (what, dollars, desc) = LISTINGS[i % LISTINGS.len()];
    let place = PLACES[i % PLACES.len()];
    let round = (i / (LISTINGS.len() * PLACES.len())) % ROUNDS;
    let price = dollars - round as u32;
    let shown = if price >= 1000 {
        format!("{},{:03}", price / 1000, price % 1000)
    } else {
        price.to_string()
    };
    (format!("{what} - ${shown} ({place})"), desc)
}

struct Demo {
    started: Instant,
    every: Duration,
}

impl Demo {
    fn count(&self) -> usize {
        1 + (self.started.elapsed().as_secs_f64() / self.every.as_secs_f64()) as usize
    }
}

/// The document after `n` listings were posted: the newest [`SHOWN`] of them, newest first.
pub fn document(n: usize, base: &str) -> String {
    let shown: Vec<usize> = (n.saturating_sub(SHOWN)..n).rev().collect();
    let mut s = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rdf:RDF xmlns=\"http://purl.org/rss/1.0/\" xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\" xmlns:dc=\"http://purl.org/dc/elements/1.1/\">\n",
    );
    s.push_str(&format!("<channel rdf:about=\"{base}/search.rdf\"><title>demo listings</title><link>{base}/</link><description>tocsin demo feed</description><items><rdf:Seq>"));
    for i in &shown {
        s.push_str(&format!("<rdf:li rdf:resource=\"{base}/listing/{i}\"/>"));
    }
    s.push_str("</rdf:Seq></items></channel>\n");
    for i in shown {
        let (title, desc) = listing(i);
        s.push_str(&format!(
            "<item rdf:about=\"{base}/listing/{i}\"><title><![CDATA[{title}]]></title><link>{base}/listing/{i}</link><description><![CDATA[{desc}]]></description></item>\n"
        ));
    }
    s.push_str("</rdf:RDF>\n");
    s
}

async fn feed(State(d): State<Arc<Demo>>, headers: HeaderMap) -> Response {
    let n = d.count();
    let etag = format!("\"n{n}\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let body = document(n, &format!("http://{host}"));
    (
        [
            (header::CONTENT_TYPE, "application/rdf+xml".to_owned()),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

/// Serve the demo feed at `/search.rdf` until `shutdown`; a new listing every `every`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    every: Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let state = Arc::new(Demo {
        started: Instant::now(),
        every,
    });
    let app = Router::new()
        .route("/search.rdf", get(feed))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use tocsin_ingestor::feeds::listings::signature;
    use tocsin_model::listing::parse_price;

    /// Ten hours of listings at one every 10 s: none has the repost signature of another, so
    /// a feed added at any time in them announces what is posted after it.
    #[test]
    fn no_listing_of_the_first_ten_hours_is_a_repost_of_another() {
        let n = LISTINGS.len() * PLACES.len() * ROUNDS;
        assert!(n * 10 >= 10 * 3600, "{n} listings");
        let mut seen = HashSet::new();
        for i in 0..n {
            let (title, _) = listing(i);
            let price = parse_price(&title).unwrap_or_else(|| panic!("no price in {title:?}"));
            assert!(
                seen.insert(signature(&title, &price)),
                "listing {i}, {title:?}, repeats an earlier one"
            );
        }
    }

    #[test]
    fn every_bike_but_the_trek_stays_under_a_thousand_dollars_and_the_trek_over_it() {
        for i in 0..LISTINGS.len() * PLACES.len() * ROUNDS {
            let (title, _) = listing(i);
            let dollars = parse_price(&title).expect("a price").minor / 100;
            if title.starts_with("Trek") {
                assert!(dollars > 1000, "{title}");
            } else if title.contains("bike") {
                assert!(dollars <= 1000, "{title}");
            }
        }
        assert_eq!(listing(0).0, "Trek road bike 56cm - $1,250 (oakland)");
        assert_eq!(listing(77).0, "Trek road bike 56cm - $1,249 (oakland)");
    }

    #[test]
    fn a_document_shows_the_newest_listings_first_and_no_more_than_a_search_feed_does() {
        let doc = document(100, "http://h");
        let items: Vec<&str> = doc
            .match_indices("<item ")
            .map(|(i, _)| &doc[i..])
            .collect();
        assert_eq!(items.len(), SHOWN);
        assert!(items[0].starts_with("<item rdf:about=\"http://h/listing/99\""));
        assert!(items[SHOWN - 1].starts_with("<item rdf:about=\"http://h/listing/75\""));
        assert!(!doc.contains("listing/74\""));
        let early = document(3, "http://h");
        assert_eq!(early.matches("<item ").count(), 3);
        assert!(early.contains("Specialized Allez road bike - $650 (sf)"));
    }
}
