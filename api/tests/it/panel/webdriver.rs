//! A minimal WebDriver client: Debian's ChromeDriver on a free port of the
//! loopback, driving Debian's Chromium headless, over plain HTTP and JSON
//! (W3C WebDriver). Only what the panel's tests use.

use std::{path::PathBuf, process::Child, time::Duration};

use base64::Engine;
use serde_json::{Value, json};
use syncfleet_testkit::free_port;

/// The key W3C WebDriver names elements by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// ChromeDriver with one headless Chromium session; both stop on drop.
pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    session: String,
    base: String,
    _profile: TempDir,
}

/// A directory removed on drop (Chromium's fresh profile).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An element of the page.
#[derive(Clone)]
pub struct Element(String);

impl Drop for Browser {
    fn drop(&mut self) {
        // Best effort: the session ends with the driver anyway.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium `width` pixels wide.
    pub async fn start(width: u32, height: u32) -> Self {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "/usr/bin/chromedriver is missing: scripts/browser.sh installs Debian's chromium and chromium-driver"
        );
        let port = free_port();
        let driver = std::process::Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        syncfleet_connectors::http::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(response) = ready
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("sf-panel-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "unhandledPromptBehavior": "ignore",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let mut browser = Self {
            driver,
            http,
            session: String::new(),
            base,
            _profile: TempDir(profile),
        };
        let created = browser.raw("POST", "/session", Some(capabilities)).await;
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_owned();
        browser
    }

    async fn raw(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let response = request.send().await.unwrap();
        let answer: Value = response.json().await.unwrap();
        if let Some(error) = answer["value"]["error"].as_str() {
            panic!("WebDriver {method} {path}: {error}: {}", answer["value"]["message"]);
        }
        answer["value"].clone()
    }

    /// Like `raw`, answering the error instead of panicking.
    async fn try_raw(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let request = match method {
            "GET" => self.http.get(url),
            _ => self.http.post(url).json(&body.unwrap_or_else(|| json!({}))),
        };
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        match answer["value"]["error"].as_str() {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    fn at(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    /// Opens a URL.
    pub async fn go(&self, url: &str) {
        self.raw("POST", &self.at("/url"), Some(json!({ "url": url }))).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.raw("GET", &self.at("/url"), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching a CSS selector (panics when none).
    pub async fn find(&self, css: &str) -> Element {
        let found = self
            .raw(
                "POST",
                &self.at("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        Element(
            found[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css:?}: {found}"))
                .to_owned(),
        )
    }

    /// Every element matching a CSS selector.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self
            .raw(
                "POST",
                &self.at("/elements"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| Element(item[ELEMENT].as_str().unwrap().to_owned()))
            .collect()
    }

    /// Clicks the first element matching `css`, finding it again when the
    /// page replaced it meanwhile (a form submitted, a reload).
    pub async fn click_on(&self, css: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let element = self.find(css).await;
            match self
                .try_raw("POST", &self.at(&format!("/element/{}/click", element.0)), None)
                .await
            {
                Ok(_) => return,
                Err(error) if error.starts_with("stale element") && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("click on {css:?}: {error}"),
            }
        }
    }

    /// Replaces an input's text.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.raw("POST", &self.at(&format!("/element/{}/clear", element.0)), None)
            .await;
        self.raw(
            "POST",
            &self.at(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Types keys (WebDriver's key codes: Enter is `\u{E007}`, Escape
    /// `\u{E00C}`) into the first element matching `css`.
    pub async fn keys(&self, css: &str, keys: &str) {
        let element = self.find(css).await;
        self.raw(
            "POST",
            &self.at(&format!("/element/{}/value", element.0)),
            Some(json!({ "text": keys })),
        )
        .await;
    }

    /// Chooses an option of a select by its value.
    pub async fn choose(&self, select_css: &str, value: &str) {
        self.click_on(&format!("{select_css} option[value=\"{value}\"]")).await;
    }

    /// An element's visible text.
    pub async fn text_of(&self, element: &Element) -> String {
        self.raw("GET", &self.at(&format!("/element/{}/text", element.0)), None)
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        self.text_of(&element).await
    }

    /// The page's whole visible text.
    pub async fn body_text(&self) -> String {
        // A script, not an element: the page may be replaced meanwhile.
        self.script("return document.body ? document.body.innerText : '';", json!([]))
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page; answers its return value.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.raw(
            "POST",
            &self.at("/execute/sync"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Runs an asynchronous script (its last argument is the callback).
    pub async fn script_async(&self, script: &str, args: Value) -> Value {
        self.raw(
            "POST",
            &self.at("/execute/async"),
            Some(json!({"script": script, "args": args})),
        )
        .await
    }

    /// Accepts the open `confirm()`; answers its text.
    pub async fn accept_dialog(&self) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(text) = self.try_raw("GET", &self.at("/alert/text"), None).await {
                self.raw("POST", &self.at("/alert/accept"), None).await;
                return text.as_str().unwrap_or_default().to_owned();
            }
            assert!(tokio::time::Instant::now() < deadline, "no dialog opened");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.raw(
            "POST",
            &self.at("/window/rect"),
            Some(json!({"width": width, "height": height})),
        )
        .await;
    }

    /// Polls until the page's text holds `needle` (reloading with `reload`).
    pub async fn wait_for_text(&self, needle: &str, reload: bool, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let text = self.body_text().await;
            if text.contains(needle) {
                return text;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {limit:?} waiting for {needle:?} on {}; the page says:\n{text}",
                self.url().await
            );
            tokio::time::sleep(Duration::from_millis(if reload { 500 } else { 100 })).await;
            if reload {
                self.raw("POST", &self.at("/refresh"), None).await;
            }
        }
    }

    /// Saves a PNG of the viewport as `artifacts/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let encoded = self.raw("GET", &self.at("/screenshot"), None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let directory = screenshots();
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session and the driver.
    pub async fn stop(self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
    }
}

/// Where the tests save screenshots (ignored by git; `docs/screenshots`
/// holds the copies the README shows).
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/screenshots")
}
