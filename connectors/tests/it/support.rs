//! A Salesforce simulator per test and clients pointed at it.

use std::sync::{Arc, Mutex};

use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use syncfleet_connectors::{
    ConnectorError,
    http::{HttpClient, HttpOptions},
    salesforce::{ConnectedApp, SalesforceClient, SalesforceCredentials, SalesforceOptions, TokenGrant, TokenSink},
    ssrf::UrlPolicy,
};
use syncfleet_simulators::{
    Server,
    salesforce::{LocalSalesforce, OrgId, SalesforceConfig, SalesforceSimulator},
};
use tokio_util::sync::CancellationToken;

/// A simulated Salesforce with one org and a refresh token for it; stops when dropped.
pub struct Salesforce {
    pub simulator: SalesforceSimulator,
    pub server: Server,
    pub org: OrgId,
    pub refresh_token: String,
    shutdown: CancellationToken,
}

impl Salesforce {
    pub async fn start(config: SalesforceConfig) -> Self {
        let shutdown = CancellationToken::new();
        let LocalSalesforce {
            simulator,
            server,
            org,
            refresh_token,
        } = SalesforceSimulator::start_local(config, shutdown.clone())
            .await
            .unwrap();
        Self {
            simulator,
            server,
            org,
            refresh_token,
            shutdown,
        }
    }

    pub async fn default() -> Self {
        Self::start(SalesforceConfig::default()).await
    }

    pub fn url(&self) -> Url {
        Url::parse(&self.server.base_url()).unwrap()
    }

    pub fn app(&self) -> ConnectedApp {
        ConnectedApp {
            login_url: self.url(),
            client_id: "syncfleet-tests".to_owned(),
            client_secret: Some(SecretString::from("client-secret")),
        }
    }

    /// A client with the user's refresh token, allowed to reach the simulator.
    pub fn client(&self) -> SalesforceClient {
        self.client_with(SalesforceOptions::default())
    }

    pub fn client_with(&self, options: SalesforceOptions) -> SalesforceClient {
        SalesforceClient::new(
            http(UrlPolicy::LOCAL_TESTS),
            self.app(),
            SalesforceCredentials {
                refresh_token: SecretString::from(self.refresh_token.clone()),
                session: None,
            },
            options,
        )
        .unwrap()
    }
}

impl Drop for Salesforce {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn http(policy: UrlPolicy) -> HttpClient {
    HttpClient::new(&HttpOptions {
        url_policy: policy,
        ..HttpOptions::default()
    })
    .unwrap()
}

/// Keeps every grant it is handed, as the worker would persist them.
#[derive(Default)]
pub struct RecordingSink {
    pub refresh_tokens: Mutex<Vec<Option<String>>>,
}

impl TokenSink for RecordingSink {
    fn store<'a>(
        &'a self,
        grant: &'a TokenGrant,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), ConnectorError>> + Send + 'a>> {
        let rotated = grant
            .refresh_token
            .as_ref()
            .map(|token| token.expose_secret().to_owned());
        self.refresh_tokens.lock().unwrap().push(rotated);
        Box::pin(async { Ok(()) })
    }
}

pub fn recording_sink() -> Arc<RecordingSink> {
    Arc::new(RecordingSink::default())
}
