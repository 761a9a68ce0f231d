//! Headless Chromium driven over the W3C WebDriver protocol (`chromedriver`): the dashboard's
//! browser tests and its screenshots ([`photograph`]: the tutorial's, taken by the tutorial test
//! through `lab screenshot`, and the dashboard page's, `cargo run -p lab --example screenshots`).
//!
//! The handful of WebDriver calls the tests need (new session, navigate, find, click, text) are
//! plain JSON over HTTP, so they go through `reqwest`, which the lab already uses. The WebDriver
//! crates (fantoccini, thirtyfour) would bring a second HTTP stack and ICU segmentation data to
//! compile, for these six endpoints.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The key of an element reference in W3C WebDriver's answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A `chromedriver` process and one headless browser session. [`Browser::close`] ends the
/// session (and Chromium); dropping the value stops the driver.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
}

/// An element found on the current page.
pub struct Element<'a> {
    browser: &'a Browser,
    id: String,
}

fn free_port() -> u16 {
    crate::pg::free_port().expect("a free port")
}

impl Browser {
    /// Starts `chromedriver` (from PATH) and a headless Chromium session.
    pub async fn start() -> Browser {
        Browser::start_sized(1280, 900).await
    }

    /// The same with a window of `width` x `height` pixels.
    pub async fn start_sized(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver on PATH (apt install chromium chromium-driver)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        crate::client::eventually("chromedriver ready", Duration::from_secs(30), || async {
            let res = http.get(format!("{base}/status")).send().await.ok()?;
            let status: Value = res.json().await.ok()?;
            status["value"]["ready"].as_bool().filter(|r| *r)
        })
        .await
        .unwrap();
        // Root (as in CI) needs --no-sandbox; /dev/shm is small in containers.
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                format!("--window-size={width},{height}")
            ]}
        }}});
        let res: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("new session")
            .json()
            .await
            .expect("new session answer");
        let session = res["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {res}"))
            .to_owned();
        Browser {
            driver,
            http,
            session: format!("{base}/session/{session}"),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res: Value = req
            .send()
            .await
            .expect("WebDriver call")
            .json()
            .await
            .expect("WebDriver answer");
        res["value"].clone()
    }

    pub async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await;
    }

    pub async fn current_url(&self) -> String {
        let v = self.call(reqwest::Method::GET, "/url", None).await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the page shown is one whose URL contains `url_part` and `selector`'s element
    /// on it has text, and returns that text. (Right after a click the old page may still be
    /// shown, and an element of a page being replaced reads as no text.)
    pub async fn text_on_page(&self, url_part: &str, selector: &str) -> String {
        crate::client::eventually(
            &format!("{selector} on {url_part}"),
            Duration::from_secs(60),
            || async {
                if !self.current_url().await.contains(url_part) {
                    return None;
                }
                let text = self.find(selector).await?.text().await;
                (!text.is_empty()).then_some(text)
            },
        )
        .await
        .unwrap()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page, returns its result.
    pub async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Waits until `selector`'s element has text for which `check` is true; returns the text.
    pub async fn wait_text(&self, selector: &str, check: impl Fn(&str) -> bool) -> String {
        crate::client::eventually(
            &format!("the text of {selector}"),
            Duration::from_secs(60),
            || async {
                let text = self.find(selector).await?.text().await;
                check(&text).then_some(text)
            },
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits until `selector` matches an element, and returns it.
    pub async fn wait_for(&self, selector: &str) -> Element<'_> {
        crate::client::eventually(
            &format!("an element {selector}"),
            Duration::from_secs(60),
            || self.find(selector),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .expect("a base64 PNG")
    }

    /// The first element matching the CSS `selector`, if there is one.
    pub async fn find(&self, selector: &str) -> Option<Element<'_>> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        // The element reference, under the key W3C WebDriver fixes for it; without a match the
        // answer is an error object ({"error": "no such element", ...}) instead.
        let id = v.get(ELEMENT_KEY)?.as_str()?.to_owned();
        Some(Element { browser: self, id })
    }
}

impl Element<'_> {
    pub async fn text(&self) -> String {
        let v = self
            .browser
            .call(
                reqwest::Method::GET,
                &format!("/element/{}/text", self.id),
                None,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Types `text` into it (after what it holds).
    pub async fn send_keys(&self, text: &str) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/value", self.id),
                Some(json!({"text": text})),
            )
            .await;
    }

    pub async fn click(&self) {
        self.browser
            .call(
                reqwest::Method::POST,
                &format!("/element/{}/click", self.id),
                Some(json!({})),
            )
            .await;
    }
}

impl Browser {
    /// Ends the session, which closes Chromium.
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A dashboard view as it is photographed: open `page`, wait until `ready` (a CSS selector) is
/// drawn and, if given, its text contains `contains`; a topic's page browses a partition that has
/// records first. The live numbers and charts get a few snapshots to show.
pub async fn photograph(
    browser: &Browser,
    page: &str,
    ready: &str,
    contains: Option<&str>,
) -> Result<Vec<u8>, crate::client::ClientError> {
    browser.goto(page).await;
    if page.contains("#/topics/") {
        // The page opens on partition 0: browse one that has records.
        browser.wait_for("#partitions tbody tr").await;
        browser
            .execute(
                "const row = [...document.querySelectorAll('#partitions tbody tr')]\
                   .find((r) => Number(r.cells[3].textContent.replace(/[^0-9]/g, '')) > 0);\
                 if (row) document.getElementById('partition').value = row.cells[0].textContent;\
                 document.querySelector('form button[type=submit]').click();",
                json!([]),
            )
            .await;
    }
    match contains {
        Some(text) => {
            browser.wait_text(ready, |t| t.contains(text)).await;
        }
        None => {
            browser.wait_for(ready).await;
        }
    }
    crate::client::eventually(
        "three snapshots on the page",
        Duration::from_secs(30),
        || async {
            let n: Value = browser
                .execute("return state.history.length;", json!([]))
                .await;
            (n.as_u64()? >= 3).then_some(())
        },
    )
    .await?;
    Ok(browser.screenshot().await)
}
