//! A W3C WebDriver client, just what the web app's tests use, talking to a real chromedriver
//! (testkit's [`ChromeDriver`]) that drives headless Chromium: open a page, find, type,
//! click, read, run a script, take a screenshot. Every wait has a timeout.

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};
use std::time::Duration;
use tocsin_testkit::ChromeDriver;

/// The key WebDriver names an element by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    session: String,
    // last: the session is closed before chromedriver stops
    driver: ChromeDriver,
}

#[derive(Clone, Debug)]
pub struct Element(String);

impl Browser {
    /// A headless Chromium of `width` × `height` CSS pixels.
    pub async fn start(width: u32, height: u32) -> Result<Browser> {
        let driver = ChromeDriver::start()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-background-networking", "--disable-sync",
                    "--disable-component-update", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", driver.profile.path().display()),
                ]
            }
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url()))
            .json(&caps)
            .send()
            .await?
            .json()
            .await?;
        let session = r["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("chromedriver did not start a session: {r}"))?
            .to_owned();
        let b = Browser {
            http,
            session,
            driver,
        };
        b.resize(width, height).await?;
        Ok(b)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let url = format!("{}/session/{}{path}", self.driver.url(), self.session);
        let mut req = self.http.request(method, &url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let v: Value = r.json().await?;
        if !status.is_success() {
            bail!(
                "webdriver {path}: {} {}",
                v["value"]["error"].as_str().unwrap_or("?"),
                v["value"]["message"].as_str().unwrap_or("")
            );
        }
        Ok(v["value"].clone())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// The inner size of the window, in CSS pixels (the page's layout width).
    pub async fn resize(&self, width: u32, height: u32) -> Result<()> {
        // the window's outer size is its inner size plus what the browser draws around it
        self.post("/window/rect", json!({"width": width, "height": height}))
            .await?;
        let inner = self
            .script("return [window.innerWidth, window.innerHeight]", json!([]))
            .await?;
        let (iw, ih) = (
            inner[0].as_u64().unwrap_or(0),
            inner[1].as_u64().unwrap_or(0),
        );
        let (dw, dh) = (width as i64 - iw as i64, height as i64 - ih as i64);
        if dw != 0 || dh != 0 {
            self.post(
                "/window/rect",
                json!({"width": width as i64 + dw, "height": height as i64 + dh}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn goto(&self, url: &str) -> Result<()> {
        self.post("/url", json!({ "url": url })).await.map(|_| ())
    }

    pub async fn url(&self) -> Result<String> {
        Ok(self
            .get("/url")
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    /// The elements `css` selects now.
    pub async fn all(&self, css: &str) -> Result<Vec<Element>> {
        let v = self
            .post("/elements", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(|s| Element(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The first element `css` selects, waiting up to 10 s for it.
    pub async fn find(&self, css: &str) -> Result<Element> {
        self.wait(css, Duration::from_secs(10)).await
    }

    pub async fn wait(&self, css: &str, timeout: Duration) -> Result<Element> {
        tocsin_testkit::wait_for(timeout, &format!("an element {css:?}"), || async {
            self.all(css).await.ok().and_then(|v| v.into_iter().next())
        })
        .await
    }

    /// Wait until `check` holds for the text of the page's `css` element.
    pub async fn wait_text(
        &self,
        css: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> Result<String> {
        tocsin_testkit::wait_for(Duration::from_secs(15), what, || async {
            let e = self.all(css).await.ok()?.into_iter().next()?;
            let t = self.text(&e).await.ok()?;
            check(&t).then_some(t)
        })
        .await
    }

    /// The value of the input `css` selects, once `check` holds for it (10 s at most): what a
    /// form's answer filled in.
    pub async fn input_value(&self, css: &str, check: impl Fn(&str) -> bool) -> Result<String> {
        tocsin_testkit::wait_for(
            Duration::from_secs(10),
            &format!("a value in {css:?}"),
            || async {
                let v = self
                    .script(
                        "return document.querySelector(arguments[0])?.value ?? ''",
                        json!([css]),
                    )
                    .await
                    .ok()?;
                v.as_str().filter(|v| check(v)).map(str::to_owned)
            },
        )
        .await
    }

    pub async fn click(&self, e: &Element) -> Result<()> {
        self.post(&format!("/element/{}/click", e.0), json!({}))
            .await
            .map(|_| ())
    }

    /// Type `text` into `e` (after clearing it).
    pub async fn fill(&self, e: &Element, text: &str) -> Result<()> {
        self.post(&format!("/element/{}/clear", e.0), json!({}))
            .await?;
        self.keys(e, text).await
    }

    /// Send keys to `e`; `\u{E004}` is Tab, `\u{E007}` Enter.
    pub async fn keys(&self, e: &Element, text: &str) -> Result<()> {
        self.post(&format!("/element/{}/value", e.0), json!({ "text": text }))
            .await
            .map(|_| ())
    }

    pub async fn text(&self, e: &Element) -> Result<String> {
        Ok(self
            .get(&format!("/element/{}/text", e.0))
            .await?
            .as_str()
            .unwrap_or_default()
            .to_owned())
    }

    pub async fn attribute(&self, e: &Element, name: &str) -> Result<Option<String>> {
        Ok(self
            .get(&format!("/element/{}/attribute/{name}", e.0))
            .await?
            .as_str()
            .map(str::to_owned))
    }

    /// Run `script` (a function body; `arguments` are `args`) in the page, its value back.
    pub async fn script(&self, script: &str, args: Value) -> Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Run `script` that calls `arguments[arguments.length - 1]` with its result.
    pub async fn script_async(&self, script: &str, args: Value) -> Result<Value> {
        self.post("/execute/async", json!({ "script": script, "args": args }))
            .await
    }

    /// Accept the page's `confirm()` dialog, waiting up to 5 s for it.
    pub async fn accept_dialog(&self) -> Result<()> {
        tocsin_testkit::wait_for(Duration::from_secs(5), "a dialog", || async {
            self.post("/alert/accept", json!({})).await.ok()
        })
        .await
        .map(|_| ())
    }

    /// Work inside the frame `e` from now on (`None`: the top page again).
    pub async fn frame(&self, e: Option<&Element>) -> Result<()> {
        let id = match e {
            Some(e) => json!({ ELEMENT: e.0 }),
            None => Value::Null,
        };
        self.post("/frame", json!({ "id": id })).await.map(|_| ())
    }

    /// A Chrome DevTools Protocol command, through chromedriver.
    pub async fn cdp(&self, cmd: &str, params: Value) -> Result<Value> {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
            .await
    }

    /// The value of the page's cookie `name` (HttpOnly ones too: WebDriver sees them all).
    pub async fn cookie(&self, name: &str) -> Result<Option<String>> {
        match self.get(&format!("/cookie/{name}")).await {
            Ok(v) => Ok(v["value"].as_str().map(str::to_owned)),
            Err(e) if e.to_string().contains("no such cookie") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A PNG of the whole page as it is laid out now.
    pub async fn screenshot(&self) -> Result<Vec<u8>> {
        use base64::Engine;
        let v = self.get("/screenshot").await?;
        Ok(base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default())?)
    }

    /// End the browser session (the driver stops when this is dropped).
    pub async fn close(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}
