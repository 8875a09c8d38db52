//! The panel's browser: Debian's ChromeDriver on a free port of the
//! loopback driving Debian's Chromium headless, through fantoccini (W3C
//! WebDriver over plain HTTP). Here is only what fantoccini leaves to its
//! user: the driver's process, the session's capabilities, the tests'
//! vocabulary (a CSS selector in, a panic naming it out), and waits for the
//! conditions fantoccini's `wait()` has no builder for (a page's text, an
//! open dialog).

use std::{
    future::Future, net::SocketAddr, os::unix::process::CommandExt, path::PathBuf, process::Child, time::Duration,
};

use fantoccini::{Client, ClientBuilder, Locator, elements::Element, key::Key};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use syncfleet_testkit::{free_port, wait_until};

/// How long an element may take to appear, or a dialog to open.
const FIND: Duration = Duration::from_secs(10);

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(100);

/// How often a page is reloaded while waiting for what it shows.
pub const RELOAD: Duration = Duration::from_millis(500);

/// A headless Chromium session; the session, ChromeDriver and the browser's
/// profile go on drop (fields drop in order).
pub struct Browser {
    client: Client,
    _driver: Driver,
    _profile: TempDir,
}

/// ChromeDriver's process, leading a process group of its own that the
/// Chromium it starts joins: the group is killed on drop, so a test that
/// panics leaves no browser behind.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &group])
            .status();
        let _ = self.0.wait();
    }
}

/// A directory removed on drop (Chromium's fresh profile).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium `width` by `height`
    /// pixels.
    pub async fn start(width: u32, height: u32) -> Self {
        assert!(
            std::path::Path::new("/usr/bin/chromedriver").exists(),
            "/usr/bin/chromedriver is missing: scripts/browser.sh installs Debian's chromium and chromium-driver"
        );
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let driver = Driver(
            std::process::Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={}", address.port()))
                .process_group(0)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        wait_until(Duration::from_secs(20), "chromedriver to listen", || async move {
            tokio::net::TcpStream::connect(address).await.is_ok()
        })
        .await;
        let profile = std::env::temp_dir().join(format!("sf-panel-chromium-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&profile).unwrap();
        let capabilities = serde_json::from_value(json!({
            "browserName": "chrome",
            // The tests answer `confirm()` themselves.
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
        }))
        .unwrap();
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{address}"))
            .await
            .unwrap_or_else(|error| panic!("no WebDriver session: {error}"));
        Self {
            client,
            _driver: driver,
            _profile: TempDir(profile),
        }
    }

    /// Opens a URL.
    pub async fn go(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|error| panic!("open {url}: {error}"));
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// The first element matching `css`, waiting for it to appear.
    pub async fn element(&self, css: &str) -> Element {
        self.wait_for_element(css, FIND).await
    }

    /// The first element matching `css`, waiting up to `limit` for it to
    /// appear; the panic names the selector and shows the page.
    pub async fn wait_for_element(&self, css: &str, limit: Duration) -> Element {
        match self
            .client
            .wait()
            .at_most(limit)
            .every(POLL)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(error) => panic!(
                "{error}: no element {css:?} after {limit:?} on {}; the page says:\n{}",
                self.url().await,
                self.body_text().await
            ),
        }
    }

    /// Every element matching `css`, as the page is now.
    pub async fn find_all(&self, css: &str) -> Vec<Element> {
        self.client.find_all(Locator::Css(css)).await.unwrap()
    }

    /// The visible text of every element matching `css`.
    pub async fn texts(&self, css: &str) -> Vec<String> {
        let mut texts = Vec::new();
        for element in self.find_all(css).await {
            texts.push(element.text().await.unwrap());
        }
        texts
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.element(css).await.text().await.unwrap()
    }

    /// Clicks the first element matching `css`, finding it again when the
    /// page replaced it between the lookup and the click (a form answered,
    /// a reload).
    pub async fn click_on(&self, css: &str) {
        self.until(&format!("a click on {css:?} to land"), FIND, POLL, || async {
            match self.element(css).await.click().await {
                Ok(()) => Ok(()),
                Err(error) if error.is_stale_element_reference() => Err(error.to_string()),
                Err(error) => panic!("click on {css:?}: {error}"),
            }
        })
        .await;
    }

    /// Replaces an input's text.
    pub async fn fill(&self, css: &str, text: &str) {
        let element = self.element(css).await;
        element.clear().await.unwrap();
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|error| panic!("type into {css:?}: {error}"));
    }

    /// Presses a key in the first element matching `css`.
    pub async fn keys(&self, css: &str, key: Key) {
        self.element(css).await.send_keys(&key).await.unwrap();
    }

    /// Chooses an option of a select by its value.
    pub async fn choose(&self, select_css: &str, value: &str) {
        self.element(select_css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|error| panic!("choose {value:?} in {select_css:?}: {error}"));
    }

    /// The page's whole visible text.
    pub async fn body_text(&self) -> String {
        // A script, not an element: the page may be replaced meanwhile.
        self.script("return document.body ? document.body.innerText : '';")
            .await
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script in the page; answers its return value.
    pub async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|error| panic!("script {script:?}: {error}"))
    }

    /// Runs an asynchronous script (its last argument is the callback).
    pub async fn script_async(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute_async(script, args)
            .await
            .unwrap_or_else(|error| panic!("script {script:?}: {error}"))
    }

    /// Waits for a `confirm()` to open, accepts it; answers its text.
    pub async fn accept_dialog(&self) -> String {
        let text = self
            .until("a dialog to open", FIND, POLL, || async {
                match self.client.get_alert_text().await {
                    Ok(text) => Ok(text),
                    Err(error) if error.is_no_such_alert() => Err("no dialog".to_owned()),
                    Err(error) => panic!("a dialog's text: {error}"),
                }
            })
            .await;
        self.client.accept_alert().await.unwrap();
        text
    }

    /// Resizes the window.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
    }

    /// Waits until the page's visible text holds `needle`; answers the text.
    pub async fn wait_for_text(&self, needle: &str, limit: Duration) -> String {
        self.until(&format!("{needle:?} in the page"), limit, POLL, || async {
            let text = self.body_text().await;
            if text.contains(needle) { Ok(text) } else { Err(text) }
        })
        .await
    }

    /// Like [`Browser::wait_for_text`], reloading the page between looks:
    /// for a page that shows what the fleet does meanwhile.
    pub async fn wait_for_text_reloading(&self, needle: &str, limit: Duration) -> String {
        self.until(&format!("{needle:?} in the page"), limit, RELOAD, || async {
            let text = self.body_text().await;
            if text.contains(needle) {
                return Ok(text);
            }
            self.client.refresh().await.unwrap();
            Err(text)
        })
        .await
    }

    /// Checks `condition` every `every` until it answers `Ok`, for at most
    /// `limit`: the conditions fantoccini's `wait()` has no builder for.
    /// The panic names `what`, the page's URL and what `condition` last
    /// answered (`Err`).
    pub async fn until<T, F, Fut>(&self, what: &str, limit: Duration, every: Duration, mut condition: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let seen = match condition().await {
                Ok(value) => return value,
                Err(seen) => seen,
            };
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {limit:?} waiting for {what} on {}; last seen:\n{seen}",
                self.url().await
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Saves a PNG of the viewport as `artifacts/screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let directory = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../artifacts/screenshots");
        std::fs::create_dir_all(&directory).unwrap();
        std::fs::write(directory.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session, then the driver.
    pub async fn stop(self) {
        let Self {
            client,
            _driver,
            _profile,
        } = self;
        let _ = client.close().await;
    }
}
