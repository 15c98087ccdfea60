//! The web app in a real browser: headless Chromium driven over WebDriver by a real
//! chromedriver, against the whole pipeline. Signing in, previewing and adding a feed, a
//! notification arriving live and acknowledged (its escalation stops), editing the policy;
//! every screen checked by axe-core at 1280 px and 360 px; hostile titles, bodies and links
//! inert; CSRF and framing refused.
//!
//! `TOCSIN_SCREENSHOTS=docs/screenshots cargo test -p tocsin-tests --test e2e web::` (or
//! `make screenshots`) writes each screen's screenshot there.

use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tocsin_testkit::wait_for;
use tocsin_tests::browser::Browser;
use tocsin_tests::{Harness, Recorder, Svc, rdf};

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (360, 740);

/// axe-core, pinned and vendored (tests/vendor/README.md).
const AXE: &str = include_str!("../vendor/axe-core-4.14.1.min.js");

/// Check the page at both widths: no element wider than the screen, no accessibility
/// violation axe-core finds (WCAG 2.1 A and AA, best practices), and a screenshot of each.
async fn check_screen(b: &Browser, name: &str) -> anyhow::Result<()> {
    for (label, (w, h)) in [("desktop", DESKTOP), ("phone", PHONE)] {
        b.resize(w, h).await?;
        let overflow = b
            .script(
                "return document.documentElement.scrollWidth - window.innerWidth",
                json!([]),
            )
            .await?;
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{name} at {w} px is wider than the screen by {overflow} px"
        );
        let violations = axe(b).await?;
        assert!(
            violations.as_array().is_some_and(Vec::is_empty),
            "{name} at {w} px: axe-core found {}",
            serde_json::to_string_pretty(&violations)?
        );
        b.script("window.scrollTo(0, 0)", json!([])).await?;
        let png = b.screenshot().await?;
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        if let Ok(dir) = std::env::var("TOCSIN_SCREENSHOTS") {
            let dir = tocsin_testkit::workspace_root().join(dir);
            std::fs::create_dir_all(&dir)?;
            std::fs::write(dir.join(format!("{name}-{label}.png")), png)?;
        }
    }
    b.resize(DESKTOP.0, DESKTOP.1).await
}

/// axe-core's violations on the page as it is now.
async fn axe(b: &Browser) -> anyhow::Result<Value> {
    // the library is run as a WebDriver script (not subject to the page's CSP, which refuses
    // any script not served by tocsin)
    let loaded = b
        .script(&format!("{AXE}\n;return typeof window.axe;"), json!([]))
        .await?;
    anyhow::ensure!(loaded == "object", "axe-core did not load: {loaded}");
    let result = b
        .script_async(
        r#"const done = arguments[arguments.length - 1];
        axe.run(document, {runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]}})
          .then(r => done({passes: r.passes.length, violations: r.violations.map(v => ({id: v.id,
              impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))}))
          .catch(e => done({passes: 0, violations: [{id: "axe-error", help: String(e)}]}));"#,
        json!([]),
    )
    .await?;
    // a check that checked nothing would pass every page
    let passes = result["passes"].as_u64().unwrap_or(0);
    anyhow::ensure!(passes >= 10, "axe-core ran only {passes} rules: {result}");
    Ok(result["violations"].clone())
}

/// The user signs in through the form, with the keyboard alone.
async fn sign_in(b: &Browser, h: &Harness, token: &str) -> anyhow::Result<()> {
    b.goto(&format!("{}/app/", h.api_url)).await?;
    // not signed in: the sign-in page
    let input = b.find("#token").await?;
    assert!(b.url().await?.ends_with("/app/sign-in"));
    b.keys(&input, token).await?;
    b.keys(&input, "\u{E007}").await?; // Enter submits
    b.find("nav a[aria-current=\"page\"]").await?;
    anyhow::ensure!(b.url().await?.ends_with("/app/"), "signed in to the inbox");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_signs_in_adds_a_feed_and_acknowledges_a_live_notification() -> anyhow::Result<()>
{
    let hooks = Recorder::start().await?;
    let mut h = Harness::start_with("e2eweb", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Webhook];
    })
    .await?;
    h.start_service(Svc::Archiver);
    let (_, token, _) = h.create_user("Wendy").await?;
    let now = h
        .add_destination(
            &token,
            json!({"channel": "webhook", "address": hooks.url("/now"), "label": "pager"}),
        )
        .await?;
    let later = h
        .add_destination(
            &token,
            json!({"channel": "webhook", "address": hooks.url("/later"), "label": "phone"}),
        )
        .await?;
    h.set_policy(
        &token,
        json!({"steps": [{"destinations": [now], "wait_secs": 3600}, {"destinations": [later]}]}),
    )
    .await?;
    h.feeds.set(
        "bikes.rdf",
        rdf(&[
            ("1", "Road bike, 56 cm", "Light and fast: $400"),
            ("2", "Oak sofa", "Seats three: $150"),
        ]),
        "application/rss+xml",
    );
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await?;

    // the sign-in page passes the checks before anyone signs in
    b.goto(&format!("{}/app/sign-in", h.api_url)).await?;
    b.find("#token").await?;
    check_screen(&b, "sign-in").await?;
    // a wrong token is refused where it was typed
    let input = b.find("#token").await?;
    b.fill(&input, "tk_nobody_0000").await?;
    b.keys(&input, "\u{E007}").await?;
    b.wait_text(".form-status", "the refusal", |t| {
        t.contains("invalid token")
    })
    .await?;
    sign_in(&b, &h, &token).await?;

    // sources: preview the feed, see which items would match and why not, then add it
    b.goto(&format!("{}/app/sources", h.api_url)).await?;
    b.fill(&b.find("#feed-url").await?, &h.feeds.url("bikes.rdf"))
        .await?;
    b.fill(&b.find("#feed-label").await?, "Bikes").await?;
    b.fill(&b.find("#feed-any").await?, "bike, bicycle").await?;
    b.fill(&b.find("#feed-every").await?, "600").await?;
    b.click(&b.find("button[data-action=\"preview\"]").await?)
        .await?;
    let summary = b
        .wait_text(".preview-summary", "the preview", |t| !t.is_empty())
        .await?;
    assert_eq!(summary, "test listings: 1 of 2 items would notify you.");
    let items = b.all(".preview-items li").await?;
    assert_eq!(items.len(), 2);
    assert_eq!(
        b.attribute(&items[0], "data-match").await?.as_deref(),
        Some("true")
    );
    let sofa = b.text(&items[1]).await?;
    assert!(
        sofa.contains("Oak sofa") && sofa.contains("has none of: bike, bicycle"),
        "{sofa}"
    );
    check_screen(&b, "sources-preview").await?;
    b.click(&b.find("#feed-form button[type=\"submit\"]").await?)
        .await?;
    b.wait_text("ul.cards li.card h2", "the new source", |t| t == "Bikes")
        .await?;
    let (_, sources) = h
        .call(Method::GET, "/v1/sources", Some(&token), None)
        .await?;
    assert_eq!(
        sources["sources"][0]["filter"]["any"],
        json!(["bike", "bicycle"])
    );
    assert_eq!(sources["sources"][0]["poll_interval_secs"], json!(600));
    let card = b.text(&b.find("ul.cards li.card").await?).await?;
    assert!(card.contains("asked to be checked every 10 min"), "{card}");
    // its settings, edited in place
    let sid = sources["sources"][0]["id"].as_str().unwrap().to_owned();
    b.click(
        &b.find(&format!("#source-{sid} details.settings summary"))
            .await?,
    )
    .await?;
    b.click(&b.find(&format!("#prio-{sid} option[value=\"4\"]")).await?)
        .await?;
    b.fill(&b.find(&format!("#tags-{sid}")).await?, "bikes, local")
        .await?;
    b.click(
        &b.find(&format!("#digest-{sid} option[value=\"day\"]"))
            .await?,
    )
    .await?;
    b.fill(&b.find(&format!("#digest-at-{sid}")).await?, "07:30")
        .await?;
    b.fill(
        &b.find(&format!("#digest-tz-{sid}")).await?,
        "Europe/Berlin",
    )
    .await?;
    b.click(
        &b.find(&format!(
            "#source-{sid} details.settings button[type=\"submit\"]"
        ))
        .await?,
    )
    .await?;
    let settings = wait_for(Duration::from_secs(10), "the new settings", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/sources", Some(&token), None)
            .await
            .ok()?;
        let s = v["sources"][0]["settings"].clone();
        (s["priority"] == 4).then_some(s)
    })
    .await?;
    assert_eq!(settings["tags"], json!(["bikes", "local"]), "{settings}");
    assert_eq!(
        settings["digest"],
        json!({"every": "day", "at": "07:30", "tz": "Europe/Berlin"}),
        "{settings}"
    );
    // and its words, once the page has reloaded (its folds closed again)
    wait_for(Duration::from_secs(10), "the reloaded page", || async {
        let open = b
            .script(
                "return document.querySelector(arguments[0])?.open",
                json!([format!("#source-{sid} details.settings")]),
            )
            .await
            .ok()?;
        (open == false).then_some(())
    })
    .await?;
    b.click(
        &b.find(&format!("#source-{sid} details.words summary"))
            .await?,
    )
    .await?;
    b.fill(&b.find(&format!("#any-{sid}")).await?, "bike, tandem")
        .await?;
    // 0: back to the server's own interval
    b.fill(&b.find(&format!("#every-{sid}")).await?, "0")
        .await?;
    b.click(
        &b.find(&format!("#any-{sid} ~ button[type=\"submit\"]"))
            .await?,
    )
    .await?;
    wait_for(Duration::from_secs(10), "the new words", || async {
        let (_, v) = h
            .call(Method::GET, "/v1/sources", Some(&token), None)
            .await
            .ok()?;
        (v["sources"][0]["filter"]["any"] == json!(["bike", "tandem"])
            && v["sources"][0]["poll_interval_secs"].is_null())
        .then_some(())
    })
    .await?;
    // a heartbeat: its ping URL is shown once, and works
    b.goto(&format!("{}/app/sources", h.api_url)).await?;
    b.click(
        &b.find("section[aria-labelledby=\"add-other\"] details summary")
            .await?,
    )
    .await?;
    b.fill(&b.find("#hb-label").await?, "Nightly backup")
        .await?;
    b.fill(&b.find("#hb-period").await?, "86400").await?;
    b.click(&b.find("#hb-label ~ button[type=\"submit\"]").await?)
        .await?;
    let ping = b.input_value("#hb-url", |u| u.starts_with("http")).await?;
    assert_eq!(reqwest::get(&ping).await?.status(), 200, "{ping}");
    // its health is its pings, not "not checked yet" as a feed's before its first poll
    wait_for(
        Duration::from_secs(10),
        "the heartbeat's health",
        || async {
            b.goto(&format!("{}/app/sources", h.api_url)).await.ok()?;
            for card in b.all("ul.cards li.card").await.ok()? {
                let text = b.text(&card).await.ok()?;
                if text.contains("Nightly backup") {
                    return text.contains("Working · overdue after").then_some(());
                }
            }
            None
        },
    )
    .await?;
    // OPML: a reader's export imported (one feed new, one watched already), ours exported.
    // The new feed is served: a feed that answered 404 would break after a few polls, and its
    // "not working" notice would start an escalation that the acknowledgement below does not stop
    h.feeds.set(
        "flats.rdf",
        rdf(&[("1", "Two rooms, balcony", "Fourth floor: $900")]),
        "application/rss+xml",
    );
    let opml = tempfile::NamedTempFile::with_suffix(".opml")?;
    std::fs::write(
        opml.path(),
        format!(
            r#"<?xml version="1.0"?><opml version="1.0"><head><title>reader</title></head><body><outline text="Flats" xmlUrl="{}"/><outline text="Bikes again" xmlUrl="{}"/></body></opml>"#,
            h.feeds.url("flats.rdf"),
            h.feeds.url("bikes.rdf")
        ),
    )?;
    b.goto(&format!("{}/app/sources", h.api_url)).await?;
    b.keys(
        &b.find("#opml-file").await?,
        &opml.path().display().to_string(),
    )
    .await?;
    b.click(&b.find("button[data-action=\"opml-import\"]").await?)
        .await?;
    let said = b
        .wait_text(
            "section[aria-labelledby=\"opml\"] .form-status",
            "the import",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(
        said.starts_with("Added 1 feed(s).") && said.contains("watched already"),
        "{said}"
    );
    let exported = h
        .http
        .get(format!("{}/v1/sources/opml", h.api_url))
        .bearer_auth(&token)
        .send()
        .await?
        .text()
        .await?;
    assert!(
        exported.contains(&h.feeds.url("flats.rdf")) && exported.contains("title=\"Bikes\""),
        "{exported}"
    );
    b.goto(&format!("{}/app/sources", h.api_url)).await?;
    check_screen(&b, "sources").await?;

    // the inbox: a notification arrives live (the page is not reloaded) and is acknowledged
    b.goto(&format!("{}/app/", h.api_url)).await?;
    b.find("#inbox").await?;
    b.script("window.__same_page = true", json!([])).await?;
    let id = h
        .publish(
            &token,
            json!({"title": "Disk full on db1", "body": "/var at 97%", "priority": 5}),
        )
        .await?;
    let item = b.wait(&format!("#n-{id}"), Duration::from_secs(20)).await?;
    assert_eq!(
        b.script("return window.__same_page === true", json!([]))
            .await?,
        true,
        "arrived without a reload"
    );
    assert!(b.text(&item).await?.contains("Disk full on db1"));
    wait_for(Duration::from_secs(20), "the first page", || async {
        (hooks.requests("/now").len() == 1).then_some(())
    })
    .await?;
    check_screen(&b, "inbox").await?;
    b.click(&b.find(&format!("#n-{id} form[data-done] button")).await?)
        .await?;
    b.wait_text(&format!("#n-{id} .done"), "the acknowledgement", |t| {
        t.starts_with("Acknowledged")
    })
    .await?;
    h.escalations_over(&token).await?;
    // the installed app's service worker shows a pushed notification with an Acknowledge
    // action carrying the signed link (the push is handed to it through DevTools, as a
    // browser's push service would: the encryption is tested against http_ece below)
    b.cdp(
        "Browser.grantPermissions",
        json!({"origin": h.api_url, "permissions": ["notifications"]}),
    )
    .await?;
    let scope = b
        .script_async(
            "const done = arguments[arguments.length - 1];
             navigator.serviceWorker.ready.then(r => done(r.scope));",
            json!([]),
        )
        .await?;
    assert_eq!(scope, format!("{}/app/", h.api_url));
    b.cdp("ServiceWorker.enable", json!({})).await?;
    let pushed = json!({"id": "n-push", "title": "Pushed: disk full", "body": "/var at 99%", "priority": 5,
                        "ack_url": format!("{}/v1/ack/u/n-push/sig", h.api_url)});
    let shown = wait_for(Duration::from_secs(10), "the pushed notification", || async {
        // the profile is new: its one registration has one of the first ids
        for id in 0..3 {
            let params = json!({"origin": format!("{}/", h.api_url), "registrationId": id.to_string(), "data": pushed.to_string()});
            let _ = b.cdp("ServiceWorker.deliverPushMessage", params).await;
        }
        let shown = b
            .script_async(
                "const done = arguments[arguments.length - 1];
                 navigator.serviceWorker.ready.then(r => r.getNotifications()).then(ns => done(ns.map(n =>
                   ({title: n.title, body: n.body, actions: n.actions.map(a => [a.action, a.title]), data: n.data}))));",
                json!([]),
            )
            .await
            .ok()?;
        shown.as_array().filter(|a| !a.is_empty()).map(|a| a[0].clone())
    })
    .await?;
    assert_eq!(shown["title"], "Pushed: disk full", "{shown}");
    assert_eq!(shown["actions"], json!([["ack", "Acknowledge"]]), "{shown}");
    assert_eq!(shown["data"]["ack_url"], pushed["ack_url"], "{shown}");

    // an alert with a key is resolved from the inbox
    b.goto(&format!("{}/app/", h.api_url)).await?;
    let alert = h
        .publish(
            &token,
            json!({"title": "CPU hot on db1", "dedup_key": "cpu-db1", "priority": 4}),
        )
        .await?;
    b.wait(
        &format!("#n-{alert} form[data-json] button"),
        Duration::from_secs(20),
    )
    .await?;
    b.click(
        &b.find(&format!("#n-{alert} form[data-json] button"))
            .await?,
    )
    .await?;
    b.wait_text(&format!("#n-{alert} .done"), "the resolution", |t| {
        t.starts_with("Resolved")
    })
    .await?;
    h.timeline_entry(&token, &alert, "resolved").await?;

    // its timeline, read in the page, says so
    b.goto(&format!("{}/app/?state=acked", h.api_url)).await?;
    let timeline = b
        .wait_text(
            &format!("#n-{id} details.timeline"),
            "the acked timeline",
            |_| true,
        )
        .await?;
    assert!(timeline.contains("Timeline"), "{timeline}");
    let kinds = b
        .script(
            &format!("return [...document.querySelectorAll('#n-{id} details.timeline li strong')].map(e => e.textContent)"),
            json!([]),
        )
        .await?;
    assert!(
        kinds.as_array().unwrap().contains(&json!("acked")),
        "{kinds}"
    );
    assert!(
        hooks.requests("/later").is_empty(),
        "the escalation stopped"
    );

    // the policy: drawn as a timeline; an invalid edit is refused naming its field; a valid
    // one is saved
    b.goto(&format!("{}/app/policy", h.api_url)).await?;
    let drawn = b
        .wait_text(
            "#p-default + ol.timeline-steps, ol.timeline-steps",
            "the steps",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(drawn.contains("pager") && drawn.contains("1 h"), "{drawn}");
    let editor = b.find("#policy-json").await?;
    b.fill(
        &editor,
        r#"{"steps": [{"wait_secs": 60, "colour": "red"}]}"#,
    )
    .await?;
    b.click(&b.find("#p-edit ~ form button[type=\"submit\"], section[aria-labelledby=\"p-edit\"] form button[type=\"submit\"]").await?)
        .await?;
    let refusal = b
        .wait_text(
            "section[aria-labelledby=\"p-edit\"] .form-status",
            "the refusal",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(refusal.contains("colour"), "{refusal}");
    assert_eq!(
        b.attribute(&editor, "aria-invalid").await?.as_deref(),
        Some("true")
    );
    let policy = json!({"steps": [{"channels": ["webhook"], "wait_secs": 300}], "repeat": 1});
    b.fill(&editor, &policy.to_string()).await?;
    b.click(
        &b.find("section[aria-labelledby=\"p-edit\"] form button[type=\"submit\"]")
            .await?,
    )
    .await?;
    b.wait_text("ol.timeline-steps", "the saved policy", |t| {
        t.contains("5 min")
    })
    .await?;
    let (_, v) = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?;
    assert_eq!(v["policy"]["repeat"], 1, "{v}");
    check_screen(&b, "policy").await?;

    // analytics: once the archive holds the acknowledgement, the page draws it
    let archive = tocsin_archiver::store::Archive::open(&h.archiver.target, &Default::default())?;
    let opts = tocsin_archiver::analytics::Options::default();
    wait_for(
        Duration::from_secs(30),
        "the ack in the archive",
        || async {
            let r = tocsin_archiver::analytics::report(&archive, &opts)
                .await
                .ok()?;
            r.rows
                .iter()
                .any(|r| r.channel == "all" && r.acked == 1)
                .then_some(())
        },
    )
    .await?;
    b.goto(&format!("{}/app/analytics?days=7", h.api_url))
        .await?;
    b.find("#a-deliveries-chart rect").await?;
    b.find("section[aria-labelledby=\"a-table\"] tbody tr")
        .await?;
    let cells = b
        .script(
            "return [...document.querySelectorAll('section[aria-labelledby=\"a-table\"] tbody tr:last-child > *')].map(c => c.textContent)",
            json!([]),
        )
        .await?;
    // day, routed, delivered, failed, acked, ack rate: the acknowledged one, of those routed
    let cell = |i: usize| cells[i].as_str().unwrap_or_default().to_owned();
    let routed: f64 = cell(1).parse()?;
    assert_eq!(cell(4), "1", "{cells}");
    assert_eq!(cell(5), format!("{:.0} %", 100.0 / routed), "{cells}");
    let bars = b
        .script("return [...document.querySelectorAll('#a-deliveries-chart rect title')].map(t => t.textContent)", json!([]))
        .await?;
    // every delivery went to a webhook: the day's bar is the day's delivered count
    assert!(
        bars.to_string()
            .contains(&format!(", webhook: {}\"", cell(2))),
        "{bars} {cells}"
    );
    check_screen(&b, "analytics").await?;

    // a test message to the pager's webhook, and what it answered, in the page
    b.goto(&format!("{}/app/destinations", h.api_url)).await?;
    let before = hooks.requests("/now").len();
    b.click(
        &b.find(&format!("#destination-{now} form[data-say] button"))
            .await?,
    )
    .await?;
    let said = b
        .wait_text(
            &format!("#destination-{now} form[data-say] .form-status"),
            "the test's result",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(said.starts_with('✓'), "{said}");
    assert_eq!(hooks.requests("/now").len(), before + 1, "one test message");

    for (path, name) in [
        ("/app/destinations", "destinations"),
        ("/app/inbound", "inbound"),
        ("/app/sessions", "sessions"),
    ] {
        b.goto(&format!("{}{path}", h.api_url)).await?;
        b.find("main h1").await?;
        check_screen(&b, name).await?;
    }
    // a new inbound address, shown once, takes mail
    b.goto(&format!("{}/app/inbound", h.api_url)).await?;
    b.click(&b.find("form[data-show] button").await?).await?;
    b.accept_dialog().await?;
    let shown = b.find("#in-new").await?;
    let address = b.input_value("#in-new", |s| s.contains('@')).await?;
    assert!(address.ends_with("@tocsin.localhost"), "{address}");
    let _ = shown;
    // new private feed addresses, shown once, serve the feed
    b.goto(&format!("{}/app/sessions", h.api_url)).await?;
    b.click(&b.find("form[data-api='/v1/me/feed'] button").await?)
        .await?;
    b.accept_dialog().await?;
    let feed = b
        .input_value("#keys-new-feed", |s| s.contains("/feeds/"))
        .await?;
    assert_eq!(h.http.get(&feed).send().await?.status(), 200, "{feed}");
    // the SMS reply PIN is set on the same screen
    b.fill(&b.find("#reply-pin").await?, "4821").await?;
    b.click(
        &b.find("form[data-api='/v1/me/reply-pin'][data-method='PUT'] button")
            .await?,
    )
    .await?;
    b.wait_text(
        "#keys-pin + p, section[aria-labelledby='keys-pin'] p",
        "the PIN set",
        |t| t.contains("A PIN is set"),
    )
    .await?;

    // signing out ends the session on the server: the cookie no longer works anywhere
    let cookie = b
        .cookie("tocsin_session")
        .await?
        .expect("the session cookie");
    let with_cookie = || {
        h.http
            .get(format!("{}/v1/me", h.api_url))
            .header("cookie", format!("tocsin_session={cookie}"))
            .send()
    };
    assert_eq!(with_cookie().await?.status(), 200, "the cookie signs in");
    b.click(&b.find("form.signout button").await?).await?;
    b.find("#token").await?;
    assert_eq!(with_cookie().await?.status(), 401, "the session ended");
    b.goto(&format!("{}/app/sources", h.api_url)).await?;
    b.find("#token").await?;
    b.close().await;
    h.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_content_stays_inert_and_other_sites_cannot_act_or_frame() -> anyhow::Result<()> {
    let h = Harness::start("e2ewebhostile").await?;
    let (_, token, _) = h.create_user("Hugo").await?;
    let hostile_title =
        r#"<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">"#;
    let long = "A".repeat(5000);
    let id = h
        .publish(
            &token,
            json!({
                "title": hostile_title,
                "body": format!("<svg onload=\"window.__pwned = 3\"></svg> {long}"),
                "url": "javascript:window.__pwned = 4",
            }),
        )
        .await;
    // a javascript: link is refused by the API; the same title and body go in without it
    let id = match id {
        Ok(id) => id,
        Err(_) => {
            h.publish(
                &token,
                json!({"title": hostile_title, "body": format!("<svg onload=\"window.__pwned = 3\"></svg> {long}")}),
            )
            .await?
        }
    };
    h.notifications_at_least(&token, 1).await?;
    let b = Browser::start(PHONE.0, PHONE.1).await?;
    sign_in(&b, &h, &token).await?;
    let title = b.find(&format!("#t-{id}")).await?;
    assert_eq!(b.text(&title).await?, hostile_title, "shown as text");
    let state = b
        .script(
            "return {pwned: window.__pwned === undefined ? null : window.__pwned, \
             scripts: document.querySelectorAll('main script, main img, main svg').length, \
             js_links: document.querySelectorAll('a[href^=\"javascript:\"]').length, \
             overflow: document.documentElement.scrollWidth - window.innerWidth}",
            json!([]),
        )
        .await?;
    assert_eq!(state["pwned"], Value::Null, "nothing ran: {state}");
    assert_eq!(state["scripts"], 0, "{state}");
    assert_eq!(state["js_links"], 0, "{state}");
    assert!(
        state["overflow"].as_i64().unwrap_or(1) <= 0,
        "a long word breaks: {state}"
    );

    // every page carries the CSP (no inline script) and refuses framing
    let r = h
        .http
        .get(format!("{}/app/sign-in", h.api_url))
        .send()
        .await?;
    let csp = r.headers()["content-security-policy"].to_str()?.to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["x-frame-options"], "DENY");

    // another site frames the app (clickjacking): the browser refuses to show it there; a
    // page that allows framing, beside it, shows (so the check sees into frames)
    h.feeds.set(
        "form.html",
        r#"<!doctype html><title>framable</title><main><h1>a page that may be framed</h1></main>"#,
        "text/html; charset=utf-8",
    );
    h.feeds.set(
        "frame.html",
        format!(
            r#"<!doctype html><title>frame</title><iframe id="f" src="{}/app/sign-in"></iframe><iframe id="g" src="{}"></iframe>"#,
            h.api_url,
            h.feeds.url("form.html")
        ),
        "text/html; charset=utf-8",
    );
    // the page's load waits for its frames
    b.goto(&h.feeds.url("frame.html")).await?;
    let mut shown = Vec::new();
    for id in ["#f", "#g"] {
        let frame = b.find(id).await?;
        b.frame(Some(&frame)).await?;
        let inside = b
            .script("return !!document.querySelector('main h1')", json!([]))
            .await?;
        b.frame(None).await?;
        shown.push(inside);
    }
    assert_eq!(
        shown,
        [json!(false), json!(true)],
        "the app is never shown in another site's frame"
    );

    // another site (the feed server, another origin on the same host, so the same "site" to
    // the browser and the cookie goes along) posts a change: refused without the CSRF token
    let before = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?
        .1;
    h.feeds.set(
        "evil.html",
        format!(
            r#"<!doctype html><title>evil</title>
<form id="x" method="post" action="{api}/v1/destinations" enctype="text/plain">
<input name='{{"channel":"webhook","address":"https://evil.example/","label":"' value='"}}'></form>
<script>setTimeout(() => document.getElementById("x").submit(), 300)</script>"#,
            api = h.api_url
        ),
        "text/html; charset=utf-8",
    );
    b.goto(&h.feeds.url("evil.html")).await?;
    // the form's answer replaces the page: the API refused it
    let answer = b
        .wait_text("body", "the forged post's answer", |t| t.contains("error"))
        .await?;
    assert!(answer.contains("unauthorized"), "{answer}");
    let after = h
        .call(Method::GET, "/v1/policy", Some(&token), None)
        .await?
        .1;
    assert_eq!(before["policy"], after["policy"], "the policy is unchanged");
    b.close().await;

    // a sign-in may only come as JSON: a form (text/plain) from another site is refused
    let r = h
        .http
        .post(format!("{}/v1/session", h.api_url))
        .header("content-type", "text/plain")
        .body(json!({"token": token}).to_string())
        .send()
        .await?;
    assert_eq!(r.status(), 415);
    h.shutdown().await;
    Ok(())
}

/// Web Push end to end against a local push service that checks the VAPID token and decrypts
/// with Python's `http_ece` (browsers' push services are on the internet): the message
/// arrives encrypted, readable only with the subscription's keys; its signed acknowledge
/// link, posted as the service worker's "Acknowledge" action does, stops the escalation; a
/// subscription that ended fails for good with a message saying what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_push_arrives_encrypted_and_its_acknowledge_action_stops_the_escalation()
-> anyhow::Result<()> {
    let push = tocsin_testkit::PushService::start()?;
    let hooks = Recorder::start().await?;
    let h = Harness::start_with("e2ewebpush", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Push, tocsin_model::Channel::Webhook];
        s.delivery.web_push = tocsin_delivery::webpush::WebPushConfig {
            vapid_private_key: tocsin_delivery::webpush::Vapid::generate(),
            subject: "mailto:ops@example.org".into(),
        };
    })
    .await?;
    let (_, token, _) = h.create_user("Petra").await?;
    // the key a browser subscribes with, once delivery has published it
    let key = wait_for(Duration::from_secs(10), "the VAPID key", || async {
        let (status, key) = h.call(Method::GET, "/v1/push/key", None, None).await.ok()?;
        (status == 200).then_some(key)
    })
    .await?;
    let browser = h
        .add_destination(
            &token,
            json!({"channel": "push", "push_format": "web_push", "address": push.endpoint("/wpush/v2/sub-1"),
                   "secret": push.keys, "label": "Petra's phone"}),
        )
        .await?;
    let later = h
        .add_destination(
            &token,
            json!({"channel": "webhook", "address": hooks.url("/later")}),
        )
        .await?;
    h.set_policy(&token, json!({"steps": [{"destinations": [browser], "wait_secs": 3600}, {"destinations": [later]}]})).await?;
    let id = h
        .publish(
            &token,
            json!({"title": "Backup failed on nas1", "body": "exit code 23", "priority": 5}),
        )
        .await?;
    let got = wait_for(Duration::from_secs(20), "the push", || async {
        push.pushes().into_iter().next()
    })
    .await?;
    assert!(
        got.get("refused").is_none(),
        "the push service refused it: {got}"
    );
    let m = &got["message"];
    assert_eq!(m["title"], "Backup failed on nas1", "{got}");
    assert_eq!(m["body"], "exit code 23");
    assert_eq!(m["id"], id.as_str());
    assert_eq!(got["urgency"], "high");
    assert_eq!(got["ttl"], "86400");
    assert_eq!(got["vapid_sub"], "mailto:ops@example.org");
    assert_eq!(
        got["vapid_key"], key["public_key"],
        "signed with the key browsers subscribe with"
    );
    // the service worker's "Acknowledge": a plain POST of the signed link, no session
    let ack_url = m["ack_url"].as_str().expect("an acknowledge link");
    let r = reqwest::Client::new().post(ack_url).send().await?;
    assert_eq!(r.status(), 200);
    h.escalations_over(&token).await?;
    assert!(
        hooks.requests("/later").is_empty(),
        "the escalation stopped"
    );

    // a subscription that ended (410): failed for good, and the timeline says what to do
    h.set_policy(&token, json!({"steps": [{"channels": ["push"]}]}))
        .await?;
    let (_, d) = h
        .call(
            Method::DELETE,
            &format!("/v1/destinations/{browser}"),
            Some(&token),
            None,
        )
        .await?;
    let _ = d;
    h.add_destination(
        &token,
        json!({"channel": "push", "push_format": "web_push", "address": push.endpoint("/gone/sub-2"), "secret": push.keys}),
    )
    .await?;
    let gone = h
        .publish(&token, json!({"title": "to a browser that left"}))
        .await?;
    let failed = h.timeline_entry(&token, &gone, "failed").await?;
    let detail = failed["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("turn push on again"), "{detail}");
    h.shutdown().await;
    Ok(())
}

/// The operator signs in with the admin token: the users, which router holds which silo, and
/// a dead letter, replayed from the page. A user's session does not open the admin screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_sees_users_silos_and_replays_a_dead_letter() -> anyhow::Result<()> {
    let h = Harness::start("e2ewebadmin").await?;
    let (uid, token, _) = h.create_user("Olga").await?;
    let bus = tocsin_bus::Bus::connect(&h.bus, "test").await?;
    let user = tocsin_model::UserId::parse(&uid)?;
    bus.publish(
        bus.subjects().silo(bus.silo_of(&user), &uid, "notify"),
        "poison-web",
        bytes::Bytes::from_static(b"{\"type\":\"notify\",\"garbage\":true}"),
    )
    .await?;
    wait_for(Duration::from_secs(20), "the dead letter", || async {
        let (_, v) = h
            .call(
                Method::GET,
                "/v1/admin/dead-letters",
                Some(tocsin_tests::ADMIN),
                None,
            )
            .await
            .ok()?;
        (!v["dead_letters"].as_array()?.is_empty()).then_some(())
    })
    .await?;
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await?;
    // a user's session is no way in
    sign_in(&b, &h, &token).await?;
    b.goto(&format!("{}/app/admin", h.api_url)).await?;
    b.find("#inbox").await?;
    assert!(
        b.url().await?.ends_with("/app/"),
        "back to the user's inbox"
    );
    b.click(&b.find("form.signout button").await?).await?;
    let input = b.find("#token").await?;
    b.keys(&input, tocsin_tests::ADMIN).await?;
    b.keys(&input, "\u{E007}").await?;
    b.find("#ad-users").await?;
    assert!(b.url().await?.ends_with("/app/admin"));
    let users = b
        .wait_text(
            "section[aria-labelledby=\"ad-users\"] tbody",
            "the users",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(users.contains(&uid) && users.contains("Olga"), "{users}");
    let silos = b
        .wait_text(
            "section[aria-labelledby=\"ad-silos\"] tbody",
            "the silos",
            |t| !t.is_empty(),
        )
        .await?;
    assert!(!silos.contains("nobody"), "every silo is held: {silos}");
    let dead = b
        .find("section[aria-labelledby=\"ad-dead\"] li.card")
        .await?;
    assert!(b.text(&dead).await?.contains("notify"));
    check_screen(&b, "admin").await?;
    b.click(
        &b.find("section[aria-labelledby=\"ad-dead\"] form[data-done] button")
            .await?,
    )
    .await?;
    b.wait_text(
        "section[aria-labelledby=\"ad-dead\"] .done",
        "the replay",
        |t| t == "Replayed",
    )
    .await?;
    // adding a user shows their token once
    b.fill(&b.find("#ad-name").await?, "Nina").await?;
    b.click(
        &b.find("section[aria-labelledby=\"ad-new\"] button[type=\"submit\"]")
            .await?,
    )
    .await?;
    let new_token = b.input_value("#ad-token", |t| t.starts_with("tk_")).await?;
    let (status, me) = h
        .call(Method::GET, "/v1/me", Some(&new_token), None)
        .await?;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["name"], "Nina");
    // and deleting her, after a confirmation, ends her token at once
    let nina = me["user_id"].as_str().unwrap_or_default();
    b.goto(&format!("{}/app/admin", h.api_url)).await?;
    b.click(
        &b.find(&format!("form[data-api=\"/v1/users/{nina}\"] button"))
            .await?,
    )
    .await?;
    b.accept_dialog().await?;
    wait_for(Duration::from_secs(10), "Nina deleted", || async {
        let (status, _) = h
            .call(Method::GET, "/v1/me", Some(&new_token), None)
            .await
            .ok()?;
        (status == 401).then_some(())
    })
    .await?;
    b.close().await;
    h.shutdown().await;
    Ok(())
}

/// Where a delivery instance serves e-mail, the sign-in page offers a link by mail: it is
/// mailed to the user's e-mail destination, opens a page with one button (a mail scanner
/// fetching the link signs nobody in), signs in once, and never again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_signs_in_once() -> anyhow::Result<()> {
    let smtp = tocsin_testkit::SmtpSink::start(tocsin_testkit::free_port())?;
    let h = Harness::start_with("e2eweblink", |s| {
        s.delivery.channels = vec![tocsin_model::Channel::Email];
        s.delivery.smtp = tocsin_tests::smtp_out(smtp.port);
    })
    .await?;
    let (uid, token, _) = h.create_user("Lena").await?;
    h.add_destination(
        &token,
        json!({"channel": "email", "address": "lena@example.org"}),
    )
    .await?;
    // the answer tells nothing about which ids are in use
    let ask = |user: &str| {
        h.http
            .post(format!("{}/v1/session/link", h.api_url))
            .json(&json!({ "user": user }))
            .send()
    };
    let (known, unknown) = (ask(&uid).await?, ask("u0123456789abcdef01234567").await?);
    assert_eq!(known.status(), 202);
    assert_eq!(unknown.status(), 202);
    assert_eq!(known.text().await?, unknown.text().await?);
    let first = wait_for(Duration::from_secs(20), "the first mail", || async {
        smtp.messages().into_iter().next()
    })
    .await?;
    assert!(first.contains("Sign in to tocsin"), "{first}");
    let b = Browser::start(DESKTOP.0, DESKTOP.1).await?;
    b.goto(&format!("{}/app/sign-in", h.api_url)).await?;
    let input = wait_for(Duration::from_secs(10), "the mail-a-link form", || async {
        // the form appears once delivery has said it serves e-mail
        b.goto(&format!("{}/app/sign-in", h.api_url)).await.ok()?;
        b.all("#link-user").await.ok()?.into_iter().next()
    })
    .await?;
    b.keys(&input, &uid).await?;
    b.keys(&input, "\u{E007}").await?;
    b.wait_text("#link-user ~ .form-status", "the answer", |t| {
        t.starts_with('✓')
    })
    .await?;
    let mail = wait_for(Duration::from_secs(20), "the second mail", || async {
        smtp.messages().into_iter().nth(1)
    })
    .await?;
    // the text part is quoted-printable: its soft line breaks joined
    let mail = mail.replace("=\r\n", "").replace("=\n", "");
    let start = mail.find("/app/sign-in/link/").expect("a link in the mail");
    let path: String = mail[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "/-_".contains(*c))
        .collect();
    let link = format!("{}{path}", h.api_url);
    // fetching the page (as a scanner does) uses nothing; its button signs in
    assert_eq!(reqwest::get(&link).await?.status(), 200);
    b.goto(&link).await?;
    check_screen(&b, "sign-in-link").await?;
    b.click(
        &b.find("form[data-api^=\"/v1/session/link/\"] button")
            .await?,
    )
    .await?;
    b.find("#inbox").await?;
    // the same link again: refused
    b.click(&b.find("form.signout button").await?).await?;
    b.find("#token").await?;
    b.goto(&link).await?;
    b.click(
        &b.find("form[data-api^=\"/v1/session/link/\"] button")
            .await?,
    )
    .await?;
    let refusal = b
        .wait_text(".form-status", "the refusal", |t| !t.is_empty())
        .await?;
    assert!(refusal.contains("used already"), "{refusal}");
    b.close().await;
    h.shutdown().await;
    Ok(())
}

/// A destination waiting for its code says so on the destinations screen, and the code typed
/// there confirms it (an SMS number, through a Twilio stand-in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_is_confirmed_with_its_code_on_the_destinations_screen() -> anyhow::Result<()>
{
    let twilio = Recorder::start().await?;
    let h = Harness::start_with("e2ewebverify", |s| {
        s.api.verify_destinations = true;
        s.delivery.channels = vec![tocsin_model::Channel::Sms];
        tocsin_tests::use_twilio(&mut s.delivery, &twilio);
    })
    .await?;
    let (_, token, _) = h.create_user("Wes").await?;
    let id = h
        .add_destination(&token, json!({"channel": "sms", "address": "+15550007777"}))
        .await?;
    let text = wait_for(Duration::from_secs(20), "the code by SMS", || async {
        twilio
            .requests(&tocsin_tests::twilio_path())
            .iter()
            .find_map(|r| r.form("Body"))
    })
    .await?;
    let code: String = text.chars().filter(char::is_ascii_digit).take(6).collect();
    let b = Browser::start(PHONE.0, PHONE.1).await?;
    sign_in(&b, &h, &token).await?;
    b.goto(&format!("{}/app/destinations", h.api_url)).await?;
    let badge = b
        .wait_text("main .badge", "the destination's state", |t| !t.is_empty())
        .await?;
    assert_eq!(badge, "Waiting for its code");
    check_screen(&b, "destination-code").await?;
    b.fill(&b.find(&format!("#code-{id}")).await?, &code)
        .await?;
    b.click(
        &b.find(&format!(
            "form[data-api=\"/v1/destinations/{id}/verify\"] button[type=\"submit\"]"
        ))
        .await?,
    )
    .await?;
    b.wait_text("main .badge", "confirmed", |t| t == "In use")
        .await?;
    let (_, list) = h
        .call(Method::GET, "/v1/destinations", Some(&token), None)
        .await?;
    assert_eq!(list["destinations"][0]["verified"], true, "{list}");
    b.close().await;
    h.shutdown().await;
    Ok(())
}
