//! Sources beyond feeds, end to end through a real nats-server against sites the test serves:
//! web pages and JSON APIs read by their extractors, what a listing's price change or repost
//! tells, a paged API read whole, digests and throttles of what sources bring, and
//! docs/sources.md's recipes run as written.

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::{Harness, rdf};

/// The recipes of docs/sources.md, each run as written against a local copy of the site it
/// describes (its host replaced by the test's feed server): the page stays true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_doc_recipes_work() -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(tocsin_testkit::workspace_root().join("docs/sources.md"))?;
    let recipe = |name: &str| -> anyhow::Result<String> {
        let start = doc
            .find(&format!(" recipe:{name}\n"))
            .ok_or_else(|| anyhow::anyhow!("no recipe {name} in docs/sources.md"))?;
        let body = &doc[start..];
        let body = &body[body.find('\n').unwrap_or(0) + 1..];
        Ok(body[..body.find("```").unwrap_or(body.len())].to_owned())
    };
    let h = Harness::start("e2erecipes").await?;
    let (_, token, _) = h.create_user("rosa").await?;
    let local = |text: &str, path: &str, site: &str| text.replace(site, &h.feeds.url(path));

    // the feed recipe: only the road bike under $800, not the kids' one
    h.feeds.set(
        "feed",
        rdf(&[
            ("1", "Road bike 54 cm - $700", "Steel"),
            ("2", "Kids road bike - $90", "Small"),
            ("3", "Road bike, carbon - $1,900", "Light"),
        ]),
        "application/rss+xml",
    );
    let mut feed: Value = serde_json::from_str(&local(
        &recipe("feed")?,
        "feed",
        "https://listings.example/search/bik?format=rss",
    ))?;
    feed["deliver_existing"] = json!(true);
    h.add_source(&token, feed).await?;
    h.wait_for_title(&token, "Road bike 54 cm - $700").await?;

    // the JSON API recipe, against its documented answer
    h.feeds
        .set("api", recipe("json-api-answer")?, "application/json");
    let source: Value = serde_json::from_str(&local(
        &recipe("json-api")?,
        "api",
        "https://shop.example/api/search?q=bike",
    ))?;
    // what the preview says first: the kids' bike filtered out, and why
    let (status, preview) = h
        .call(
            Method::POST,
            "/v1/sources/preview",
            Some(&token),
            Some(source.clone()),
        )
        .await?;
    assert_eq!(status, 200, "{preview}");
    let items = preview["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["title"], "Road bike, 56 cm - $650");
    assert_eq!(items[1]["why"], "has the excluded \"kids\"");
    let id = h.add_source(&token, source).await?;
    h.wait_for_title(&token, "Road bike, 56 cm - $650").await?;
    // a new listing in the answer arrives; the ones seen do not again
    let mut answer: Value = serde_json::from_str(&recipe("json-api-answer")?)?;
    answer["results"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "7714", "title": "Gravel bike", "price": 900, "url": "https://shop.example/l/7714"}));
    h.feeds.set("api", answer.to_string(), "application/json");
    h.wait_for_title(&token, "Gravel bike - $900").await?;
    let notified = h.history_titles(&token).await?;
    assert_eq!(
        notified
            .iter()
            .filter(|t| t.starts_with("Road bike, 56 cm"))
            .count(),
        1,
        "{notified:?}"
    );
    assert!(!notified.iter().any(|t| t.contains("Kids")), "{notified:?}");
    // the web page recipe, against its documented page
    h.feeds
        .set("page", recipe("html-page")?, "text/html; charset=utf-8");
    let page: Value = serde_json::from_str(&local(
        &recipe("html")?,
        "page",
        "https://listings.example/search/bik",
    ))?;
    h.add_source(&token, page).await?;
    let base = h.feeds.url("page");
    let origin = &base[..base.len() - "/page".len()];
    let want = format!("{origin}/bik/d/road-bike/7712.html");
    // the JSON API's listing has the same title: wait for the page's own, its relative link
    // resolved against the page
    let road = wait_for(
        Duration::from_secs(20),
        "the page's listing, its link resolved against the page",
        || async {
            h.history(&token).await.ok()?.into_iter().find(|i| {
                i["notification"]["title"] == "Road bike, 56 cm - $650"
                    && i["notification"]["url"] == want.as_str()
            })
        },
    )
    .await?;
    assert_eq!(road["notification"]["body"], "(oakland)");

    // the watched page recipe: nothing at first, then the change told as lines
    let pricing = |a: &str| {
        format!(
            "<html><head><title>Pricing</title></head><body><nav>Home</nav><div id=\"prices\"><p>Plan A: {a}</p><p>Plan B: $20</p></div></body></html>"
        )
    };
    h.feeds
        .set("pricing", pricing("$10"), "text/html; charset=utf-8");
    let watch: Value = serde_json::from_str(&local(
        &recipe("change")?,
        "pricing",
        "https://vendor.example/pricing",
    ))?;
    let watched = h.add_source(&token, watch).await?;
    h.wait_sources_checked(&token, 4).await?;
    h.feeds
        .set("pricing", pricing("$12"), "text/html; charset=utf-8");
    h.wait_for_title(&token, "Changed: Pricing").await?;
    let change = h
        .history(&token)
        .await?
        .into_iter()
        .find(|i| i["notification"]["title"] == "Changed: Pricing")
        .unwrap();
    assert_eq!(
        change["notification"]["body"], "+ Plan A: $12\n- Plan A: $10",
        "{change}"
    );
    assert_eq!(change["notification"]["source"]["id"], watched.as_str());

    // an answer that is not JSON is the source's error, named
    h.feeds.set("api", "<html>maintenance</html>", "text/html");
    let error = h.source_error(&token, &id).await?;
    assert!(error.starts_with("not JSON"), "{error}");
    h.shutdown().await;
    Ok(())
}

/// A listing page, as a classifieds site renders it: each listing's title, link and price.
fn listings_page(listings: &[(&str, &str, &str)]) -> String {
    let rows: String = listings
        .iter()
        .map(|(id, title, price)| {
            format!(
                r#"<li class="result"><a href="/l/{id}.html"><span class="title">{title}</span></a> <span class="price">{price}</span></li>"#
            )
        })
        .collect();
    format!("<html><head><title>Flats</title></head><body><ul>{rows}</ul></body></html>")
}

/// A listing page that changes between polls: a new listing arrives once, a price drop on a
/// known one is its own notification, a repost (the same title and price under a new id) is
/// dropped — or marked, and rises told too, for a subscriber whose rules say so. Both users
/// share one fetch of the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_page_tells_new_listings_price_drops_and_reposts_as_each_user_asks()
-> anyhow::Result<()> {
    let h = Harness::start("e2elistings").await?;
    let (_, ana, _) = h.create_user("ana").await?;
    let (_, ben, _) = h.create_user("ben").await?;
    let html = "text/html; charset=utf-8";
    h.feeds.set(
        "flats",
        listings_page(&[
            ("1", "Flat (Mission)", "$1,950"),
            ("2", "Studio (Castro)", "$1,400"),
        ]),
        html,
    );
    let source = json!({
        "kind": "html",
        "url": h.feeds.url("flats"),
        "selectors": {"item": "li.result", "title": ".title", "price": ".price"},
    });
    h.add_source(&ana, source.clone()).await?;
    let mut rules = source;
    rules["listing"] = json!({"prices": "changes", "reposts": "mark"});
    h.add_source(&ben, rules).await?;
    // both baselines taken: nothing told yet
    h.wait_sources_checked(&ana, 1).await?;
    h.wait_sources_checked(&ben, 1).await?;

    h.feeds.set(
        "flats",
        listings_page(&[
            ("1", "Flat (Mission)", "$1,800"),
            ("2", "Studio (Castro)", "$1,400"),
            ("3", "Loft (SoMa)", "$2,500"),
            ("9", "Studio  (castro)", "$1,400"),
        ]),
        html,
    );
    let drop = "Price drop: $1,950 → $1,800 · Flat (Mission) - $1,800";
    for token in [&ana, &ben] {
        h.wait_for_title(token, drop).await?;
        h.wait_for_title(token, "Loft (SoMa) - $2,500").await?;
    }
    h.wait_for_title(&ben, "Repost: Studio (castro) - $1,400")
        .await?;
    let told = h
        .history(&ana)
        .await?
        .into_iter()
        .find(|i| i["notification"]["title"] == drop)
        .unwrap();
    let base = h.feeds.url("flats");
    let origin = &base[..base.len() - "/flats".len()];
    assert_eq!(told["notification"]["url"], format!("{origin}/l/1.html"));
    assert!(
        told["notification"]["body"]
            .as_str()
            .unwrap()
            .starts_with("$1,950 → $1,800"),
        "{told}"
    );

    // the price goes back up, and one more listing marks the poll's end
    h.feeds.set(
        "flats",
        listings_page(&[
            ("1", "Flat (Mission)", "$1,900"),
            ("3", "Loft (SoMa)", "$2,500"),
            ("4", "Room (Sunset)", "$900"),
        ]),
        html,
    );
    h.wait_for_title(&ben, "Price up: $1,800 → $1,900 · Flat (Mission) - $1,900")
        .await?;
    for token in [&ana, &ben] {
        h.wait_for_title(token, "Room (Sunset) - $900").await?;
    }
    let ana_titles = h.history_titles(&ana).await?;
    let mut sorted = ana_titles.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["Loft (SoMa) - $2,500", drop, "Room (Sunset) - $900",],
        "ana: each once, no repost, no rise"
    );
    let ben_titles = h.history_titles(&ben).await?;
    assert_eq!(ben_titles.len(), 5, "{ben_titles:?}");
    h.shutdown().await;
    Ok(())
}

/// A JSON API that answers in pages: every page is read (its `next` link followed), a new
/// listing on a later page arrives once, and a failing page is the source's error, named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paged_json_api_is_read_page_by_page() -> anyhow::Result<()> {
    let h = Harness::start("e2epaged").await?;
    let (_, token, _) = h.create_user("carl").await?;
    let page = |items: &[(&str, &str)], next: Option<&str>| {
        let results: Vec<Value> = items
            .iter()
            .map(|(id, name)| json!({"id": id, "name": name, "url": format!("https://shop.example/l/{id}")}))
            .collect();
        json!({"results": results, "paging": {"next": next}}).to_string()
    };
    let js = "application/json";
    h.feeds.set(
        "api-p1",
        page(&[("1", "Lamp"), ("2", "Desk")], Some("api-p2")),
        js,
    );
    h.feeds.set("api-p2", page(&[("3", "Chair")], None), js);
    let id = h
        .add_source(
            &token,
            json!({
                "kind": "json",
                "url": h.feeds.url("api-p1"),
                "deliver_existing": true,
                "mapping": {"items": "/results", "title": "{{ /name }}", "url": "{{ /url }}", "key": "{{ /id }}"},
                "next": "/paging/next",
            }),
        )
        .await?;
    for title in ["Lamp", "Desk", "Chair"] {
        h.wait_for_title(&token, title).await?;
    }
    h.feeds
        .set("api-p2", page(&[("3", "Chair"), ("4", "Shelf")], None), js);
    h.wait_for_title(&token, "Shelf").await?;
    let titles = h.history_titles(&token).await?;
    assert_eq!(titles.len(), 4, "each once: {titles:?}");
    // the second page gone: the source says which page failed
    h.feeds
        .set("api-p1", page(&[("1", "Lamp")], Some("api-gone")), js);
    let error = h.source_error(&token, &id).await?;
    assert!(
        error.starts_with("page 2 (") && error.contains("api-gone"),
        "{error}"
    );
    h.shutdown().await;
    Ok(())
}

/// A daily digest at a local time: a feed's listings are kept in history as they come, and at
/// the time (a few seconds ahead, in Kolkata's time) one message lists each of them once;
/// nothing went out on its own. A throttled destination gets its count, and the rest are held
/// for its hour's digest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_arrives_at_its_local_time_and_a_throttle_holds_the_overflow() -> anyhow::Result<()>
{
    let hooks = tocsin_tests::Recorder::start().await?;
    let h = Harness::start_with("e2edigest", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    let (_, token, _) = h.create_user("dora").await?;
    h.add_destination(
        &token,
        json!({"channel": "webhook", "address": hooks.url("/dora")}),
    )
    .await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            ("1", "Road bike - $400", ""),
            ("2", "Gravel bike - $900", ""),
            ("3", "Kids bike - $80", ""),
        ]),
        "application/rdf+xml",
    );
    // 10 s from now as a time of day in Kolkata (UTC+5:30, no DST)
    let kolkata =
        chrono::Utc::now() + chrono::Duration::seconds(10) + chrono::Duration::minutes(330);
    let at = kolkata.format("%H:%M:%S").to_string();
    h.add_source(
        &token,
        json!({"url": h.feeds.url("bikes.rdf"), "label": "bikes", "deliver_existing": true,
               "settings": {"digest": {"every": "day", "at": at, "tz": "Asia/Kolkata"}}}),
    )
    .await?;
    wait_for(Duration::from_secs(20), "all three in history", || async {
        (h.history(&token).await.ok()?.len() == 3).then_some(())
    })
    .await?;
    wait_for(Duration::from_secs(30), "the digest", || async {
        (!hooks.requests("/dora").is_empty()).then_some(())
    })
    .await?;
    let digest: Value = serde_json::from_slice(&hooks.requests("/dora")[0].body)?;
    assert_eq!(digest["title"], "Digest: 3 from bikes", "{digest}");
    let body = digest["body"].as_str().unwrap_or_default();
    for title in ["Road bike - $400", "Gravel bike - $900", "Kids bike - $80"] {
        assert_eq!(body.matches(title).count(), 1, "{title} once in {body}");
    }
    let titles = h.history_titles(&token).await?;
    assert_eq!(
        titles.len(),
        4,
        "three listings and their digest: {titles:?}"
    );
    assert_eq!(
        hooks.requests("/dora").len(),
        1,
        "nothing went out on its own"
    );

    // a throttle of one an hour on the destination: one notification passes, two are held
    let (_, v) = h
        .call(Method::GET, "/v1/destinations", Some(&token), None)
        .await?;
    let dest = v["destinations"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (status, v) = h
        .call(
            Method::PUT,
            &format!("/v1/destinations/{dest}"),
            Some(&token),
            Some(json!({"throttle": {"per_hour": 1}})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["destination"]["throttle"]["per_hour"], 1);
    let (status, v) = h
        .call(
            Method::PUT,
            &format!("/v1/destinations/{dest}"),
            Some(&token),
            Some(json!({"throttle": {"per_hour": 99999}})),
        )
        .await?;
    assert_eq!(status, 400, "{v}");
    let mut ids = Vec::new();
    for i in 1..=3 {
        ids.push(
            h.publish(&token, json!({"title": format!("Backup {i} done")}))
                .await?,
        );
    }
    wait_for(Duration::from_secs(20), "the first through", || async {
        (hooks.requests("/dora").len() == 2).then_some(())
    })
    .await?;
    for id in &ids[1..] {
        h.timeline_entry(&token, id, "throttled").await?;
    }
    assert_eq!(
        hooks.requests("/dora").len(),
        2,
        "the others held for the hour's digest"
    );
    h.shutdown().await;
    Ok(())
}

/// A JSON API that needs a key: the key is sent as the header names it (with the source's own
/// User-Agent) and never shown back; a wrong key is the source's error, named; a rotated key
/// works at once; and the source's headers are checked when it is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_is_sent_as_its_header_kept_by_the_ingestor_and_rotated() -> anyhow::Result<()> {
    let h = Harness::start("e2eapikey").await?;
    let (_, token, _) = h.create_user("erin").await?;
    h.feeds.set(
        "keyed",
        json!({"results": [{"id": "1", "name": "Lamp"}]}).to_string(),
        "application/json",
    );
    h.feeds.require_header("keyed", "x-api-key", "k2");
    let source = json!({
        "kind": "json",
        "url": h.feeds.url("keyed"),
        "deliver_existing": true,
        "mapping": {"items": "/results", "title": "{{ /name }}", "key": "{{ /id }}"},
        "headers": {"X-Api-Key": "{{secret}}", "User-Agent": "erin-watcher/1.0"},
        "secret": "k1",
    });
    // what the API refuses before anything is kept
    for (change, field) in [
        (json!({"secret": null}), "secret"),
        (json!({"headers": {"Host": "x"}}), "headers.Host"),
        (json!({"headers": {"Accept": "text/plain"}}), "secret"),
    ] {
        let mut bad = source.clone();
        for (k, v) in change.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let (status, v) = h
            .call(Method::POST, "/v1/sources", Some(&token), Some(bad))
            .await?;
        assert_eq!(status, 400, "{v}");
        assert_eq!(v["error"]["field"], field, "{v}");
    }
    let id = h.add_source(&token, source).await?;
    let error = h.source_error(&token, &id).await?;
    assert!(error.contains("401"), "{error}");
    assert!(
        !error.contains("k1"),
        "the secret is never told back: {error}"
    );
    assert_eq!(
        h.feeds.last_header("keyed", "user-agent").as_deref(),
        Some("erin-watcher/1.0")
    );
    let (_, v) = h
        .call(Method::GET, "/v1/sources", Some(&token), None)
        .await?;
    let listed = v.to_string();
    assert!(
        !listed.contains("\"k1\""),
        "not in the user's sources: {listed}"
    );
    assert!(listed.contains("{{secret}}"), "{listed}");
    // the key rotated: the next poll uses it
    let (status, v) = h
        .call(
            Method::PUT,
            &format!("/v1/sources/{id}"),
            Some(&token),
            Some(json!({"secret": "k2"})),
        )
        .await?;
    assert_eq!(status, 200, "{v}");
    // (the items it owed from the start, too: an update before the first good poll keeps
    // them owed)
    h.wait_for_title(&token, "Lamp").await?;
    assert_eq!(
        h.feeds.last_header("keyed", "x-api-key").as_deref(),
        Some("k2")
    );
    h.shutdown().await;
    Ok(())
}
