//! The SSRF guard (R7) on the URLs a Salesforce client is given: refused before
//! any call is made.

use reqwest::Url;
use secrecy::SecretString;
use syncfleet_connectors::{
    ConnectorError, ErrorKind,
    salesforce::{ConnectedApp, SalesforceClient, SalesforceCredentials, SalesforceOptions},
    ssrf::UrlPolicy,
};

use crate::support::{Salesforce, http};

fn client(policy: UrlPolicy, login_url: &str, instance_url: Option<&str>) -> Result<SalesforceClient, ConnectorError> {
    SalesforceClient::new(
        http(policy),
        ConnectedApp {
            login_url: Url::parse(login_url).unwrap(),
            client_id: "syncfleet-tests".to_owned(),
            client_secret: None,
        },
        SalesforceCredentials {
            refresh_token: SecretString::from("refresh"),
            session: instance_url.map(|url| (SecretString::from("access"), Url::parse(url).unwrap())),
        },
        SalesforceOptions::default(),
    )
}

fn refusal(result: Result<SalesforceClient, ConnectorError>) -> String {
    let error = result.expect_err("the URL should be refused");
    assert_eq!(error.kind(), ErrorKind::Permanent, "{error}");
    error.to_string()
}

#[tokio::test]
async fn an_http_url_is_refused_without_the_http_allowance() {
    let salesforce = Salesforce::default().await;
    let message = refusal(client(
        UrlPolicy {
            allow_http: false,
            allow_loopback: true,
        },
        salesforce.url().as_str(),
        None,
    ));
    assert!(message.contains("http"), "{message}");
    assert_eq!(salesforce.simulator.unattributed_counters().total_calls(), 0);
}

#[tokio::test]
async fn a_loopback_address_is_refused_without_the_loopback_allowance() {
    let salesforce = Salesforce::default().await;
    let message = refusal(client(
        UrlPolicy {
            allow_http: true,
            allow_loopback: false,
        },
        salesforce.url().as_str(),
        None,
    ));
    assert!(message.contains("127.0.0.1 is a loopback address"), "{message}");
    assert!(refusal(client(UrlPolicy::STRICT, "https://localhost", None)).contains("loopback"));
    assert_eq!(salesforce.simulator.unattributed_counters().total_calls(), 0);
}

#[tokio::test]
async fn private_and_link_local_addresses_are_refused_even_with_the_test_allowances() {
    for url in [
        "http://10.1.2.3",
        "http://192.168.0.10:8443",
        "http://172.20.0.1",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd12::1]",
        "http://[::ffff:10.0.0.1]",
    ] {
        let message = refusal(client(UrlPolicy::LOCAL_TESTS, url, None));
        assert!(message.contains("URL refused"), "{url}: {message}");
        // The same for a kept instance URL.
        refusal(client(
            UrlPolicy::LOCAL_TESTS,
            "https://login.salesforce.com",
            Some(url),
        ));
    }
}

#[tokio::test]
async fn a_public_https_url_is_accepted() {
    client(
        UrlPolicy::STRICT,
        "https://login.salesforce.com",
        Some("https://example.my.salesforce.com"),
    )
    .unwrap();
}

#[tokio::test]
async fn https_is_spoken_through_rustls() {
    // Something that accepts the connection and answers garbage, not TLS: the
    // client gets as far as the handshake, which fails as a transient error.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.write_all(b"HTTP/1.1 200 OK\r\n\r\nplain text, not TLS").await;
        }
    });
    let salesforce = client(UrlPolicy::LOCAL_TESTS, &format!("https://127.0.0.1:{port}"), None).unwrap();
    let error = salesforce.limits().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Transient, "{error}");
    // rustls' own words for a peer that does not speak TLS.
    assert!(error.to_string().contains("InvalidContentType"), "{error}");
}
