//! A canary secret in every credential never reaches an error's text, its
//! Debug output, or the Debug output of the client and its grants.

use reqwest::Url;
use secrecy::SecretString;
use syncfleet_connectors::{
    ConnectorError,
    salesforce::{ConnectedApp, SalesforceClient, SalesforceCredentials, SalesforceOptions},
    ssrf::UrlPolicy,
};

use crate::support::{Salesforce, http};

const CANARY: &str = "canary-7f3c9e2a-secret";

fn assert_clean(what: &str, text: &str) {
    assert!(!text.contains(CANARY), "{what} leaks the canary: {text}");
}

fn check_error(error: &ConnectorError) {
    assert_clean("Display", &error.to_string());
    assert_clean("Debug", &format!("{error:?}"));
}

#[tokio::test]
async fn a_canary_secret_never_appears_in_any_error_or_debug_output() {
    let salesforce = Salesforce::default().await;
    let app = ConnectedApp {
        client_secret: Some(SecretString::from(format!("{CANARY}-client-secret"))),
        ..salesforce.app()
    };
    check_error_free_debug(&format!("{app:?}"));
    let credentials = SalesforceCredentials {
        refresh_token: SecretString::from(format!("{CANARY}-refresh")),
        session: Some((SecretString::from(format!("{CANARY}-access")), salesforce.url())),
    };
    check_error_free_debug(&format!("{credentials:?}"));
    let client = SalesforceClient::new(
        http(UrlPolicy::LOCAL_TESTS),
        app.clone(),
        credentials,
        SalesforceOptions::default(),
    )
    .unwrap();
    check_error_free_debug(&format!("{client:?}"));

    // The canary access token is refused, the canary refresh token too.
    let mut errors = vec![client.limits().await.unwrap_err()];
    errors.push(client.refresh().await.unwrap_err());
    errors.push(client.find_people(&["a@example.test".to_owned()]).await.unwrap_err());

    // URLs carrying the canary are refused without repeating it.
    for url in [
        format!("https://user:{CANARY}@example.com"),
        format!("http://10.0.0.1/?token={CANARY}"),
        format!("https://169.254.169.254/{CANARY}"),
    ] {
        let refused = SalesforceClient::new(
            http(UrlPolicy::LOCAL_TESTS),
            ConnectedApp {
                login_url: Url::parse(&url).unwrap(),
                ..app.clone()
            },
            SalesforceCredentials {
                refresh_token: SecretString::from(CANARY),
                session: None,
            },
            SalesforceOptions::default(),
        )
        .unwrap_err();
        errors.push(refused);
    }

    // A good grant's Debug output hides its tokens.
    let grant = salesforce.client().refresh().await.unwrap();
    check_error_free_debug(&format!("{grant:?}"));

    assert_eq!(errors.len(), 6);
    for error in &errors {
        check_error(error);
    }
}

fn check_error_free_debug(text: &str) {
    assert_clean("Debug", text);
}
