//! The HTTP client every connector shares: no redirects, no proxy, bounded
//! timeouts, the SSRF guard in its resolver, and HTTPS through rustls on the
//! ring provider.

use std::{error::Error as StdError, time::Duration};

use reqwest::{Url, redirect};

use crate::{
    error::{ConnectorError, Provider},
    ssrf::{self, GuardedResolver, UrlPolicy, UrlRefused},
};

/// How the shared client behaves.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// What the SSRF guard lets through beyond public https URLs.
    pub url_policy: UrlPolicy,
    /// The longest a whole call may take, answer included.
    pub timeout: Duration,
    /// The longest connecting (resolution and TLS included) may take.
    pub connect_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            url_policy: UrlPolicy::STRICT,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Installs rustls' ring provider as the process default, unless one is
/// installed already. Every reqwest client of the process (not only the
/// connectors') needs a provider before it is built: the services' telemetry
/// start-up installs it first thing, and [`HttpClient::new`] calls this too.
pub fn install_tls_provider() {
    // An error only says another provider was installed first; that one serves.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The HTTP client could not be built (its TLS configuration).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the HTTP client: {0}")]
pub struct BuildError(String);

/// A cheap-to-clone HTTP client with the guard built in.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    policy: UrlPolicy,
}

impl HttpClient {
    /// Builds the client.
    pub fn new(options: &HttpOptions) -> Result<Self, BuildError> {
        install_tls_provider();
        let client = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .https_only(!options.url_policy.allow_http)
            .timeout(options.timeout)
            .connect_timeout(options.connect_timeout)
            .dns_resolver(GuardedResolver {
                policy: options.url_policy,
            })
            .user_agent(concat!("syncfleet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| BuildError(root_cause(&error)))?;
        Ok(Self {
            client,
            policy: options.url_policy,
        })
    }

    /// The SSRF policy the client enforces.
    pub fn policy(&self) -> UrlPolicy {
        self.policy
    }

    /// Checks `url` against the policy before any call is made to it; the
    /// addresses its name resolves to are checked again at each connection.
    pub fn check_url(&self, url: &Url) -> Result<(), UrlRefused> {
        ssrf::check_url(url, self.policy)
    }

    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.client
    }
}

/// The innermost cause of `error`, which names what failed (connection
/// refused, a refused address) without the URL or any header.
fn root_cause(error: &(dyn StdError + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Classifies a failure to get an answer at all.
pub(crate) fn transport_error(provider: Provider, error: reqwest::Error) -> ConnectorError {
    let error = error.without_url();
    if let Some(refused) = UrlRefused::find_in(&error) {
        return ConnectorError::permanent(provider, refused.to_string());
    }
    if error.is_timeout() {
        ConnectorError::transient(provider, "the call timed out")
    } else if error.is_connect() {
        ConnectorError::transient(provider, format!("cannot connect: {}", root_cause(&error)))
    } else if error.is_builder() {
        ConnectorError::permanent(provider, format!("cannot build the request: {}", root_cause(&error)))
    } else {
        ConnectorError::transient(provider, format!("the call failed: {}", root_cause(&error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_when_connecting() {
        // Something listens, so only the guard can stop the call.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let client = HttpClient::new(&HttpOptions {
            url_policy: UrlPolicy {
                allow_http: true,
                allow_loopback: false,
            },
            ..HttpOptions::default()
        })
        .unwrap();
        // `check_url` would refuse the name itself; the resolver must refuse
        // the address it resolves to as well.
        let error = client
            .inner()
            .get(format!("http://localhost:{port}/"))
            .send()
            .await
            .unwrap_err();
        let error = transport_error(Provider::Salesforce, error);
        assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
        assert!(error.to_string().contains("resolves to"), "{error}");
    }
}
