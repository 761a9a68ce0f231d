//! Headless Chromium driven over the W3C WebDriver protocol (`chromedriver`), for testing the
//! dashboard in a real browser.
//!
//! The handful of WebDriver calls the tests need (new session, navigate, find, click, text) are
//! plain JSON over HTTP, so they go through `reqwest`, which the lab already uses. The WebDriver
//! crates (fantoccini, thirtyfour) would bring a second HTTP stack and ICU segmentation data to
//! compile, for these six endpoints.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

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
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Browser {
    /// Starts `chromedriver` (from PATH) and a headless Chromium session.
    pub async fn start() -> Browser {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver on PATH (apt install chromium chromium-driver)");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        lab::client::eventually("chromedriver ready", Duration::from_secs(30), || async {
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
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"
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
        lab::client::eventually(
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

    /// The first element matching the CSS `selector`, if there is one.
    pub async fn find(&self, selector: &str) -> Option<Element<'_>> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": selector})),
            )
            .await;
        // The element reference is the one value of the object (its key is a fixed UUID).
        let id = v.as_object()?.values().next()?.as_str()?.to_owned();
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
