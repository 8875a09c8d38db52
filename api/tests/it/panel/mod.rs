//! The admin panel in a real browser: the api and a worker run as
//! processes, the providers' simulators over real HTTP, Debian's Chromium
//! driven headless through ChromeDriver. The pages are read and clicked as
//! an admin would; what they claim is checked against the database.

mod ops;
mod permissions;
mod security;
mod walkthrough;
mod webdriver;

use std::{net::SocketAddr, process::Child, time::Duration};

use serde_json::Value;
use syncfleet_testkit::{Providers, TestEnv, free_port, http_get, terminate, wait_until};
use webdriver::POLL;

/// The fleet a panel test drives: the api binary, a worker binary and the
/// simulators. Stopped by [`Fleet::stop`], killed if the test panics.
pub struct Fleet {
    pub env: TestEnv,
    pub providers: Providers,
    pub address: SocketAddr,
    services: Services,
}

/// The fleet's processes, killed if a test panics before stopping them.
struct Services(Vec<Child>);

impl Drop for Services {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Fleet {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Like [`Fleet::start`], with more settings for the api.
    pub async fn start_with(api_settings: &[(&str, &str)]) -> Self {
        let env = TestEnv::new().await;
        let providers = Providers::start().await;
        let address: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen = address.to_string();
        let mut settings = vec![("SYNCFLEET_API_LISTEN", listen.as_str())];
        settings.extend_from_slice(api_settings);
        let api = env.spawn("syncfleet-api", &settings);
        let worker = env.spawn_with("syncfleet-worker", &providers, &[]);
        wait_until(Duration::from_secs(30), "the api to be ready", || async move {
            tokio::net::TcpStream::connect(address).await.is_ok() && http_get(address, "/readyz").await.0 == 200
        })
        .await;
        Self {
            env,
            providers,
            address,
            services: Services(vec![worker, api]),
        }
    }

    /// Starts one more of the fleet's binaries (the scheduler), stopped with
    /// the others.
    pub fn spawn(&mut self, name: &str) {
        let child = self.env.spawn_with(name, &self.providers, &[]);
        self.services.0.push(child);
    }

    /// The panel's address.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    pub async fn stop(mut self) {
        for mut child in std::mem::take(&mut self.services.0) {
            terminate(&child);
            assert!(child.wait().unwrap().success(), "a service did not exit 0 on SIGTERM");
        }
        self.env.cleanup().await;
    }
}

/// Signs in on the sign-in page with `token`, and waits for the answer's
/// page (signed in, or the refusal): a navigation started before the form's
/// answer arrived would be overtaken by it.
pub async fn sign_in(browser: &webdriver::Browser, fleet: &Fleet, token: &str) {
    browser.go(&fleet.url("/panel/organizations")).await;
    assert!(
        browser.url().await.ends_with("/panel/login"),
        "signed out, the panel sends to sign-in"
    );
    browser.fill("#token", token).await;
    // A mark on the sign-in page's document: gone once the answer's page loaded.
    browser.script("window.signInPending = true; return null;").await;
    browser.click_on("form.card button[type=submit]").await;
    let answered = "return window.signInPending === undefined && document.readyState === 'complete';";
    browser
        .until("the sign-in answer's page", Duration::from_secs(10), POLL, || async {
            match browser.script(answered).await {
                Value::Bool(true) => Ok(()),
                _ => Err(browser.body_text().await),
            }
        })
        .await;
}
