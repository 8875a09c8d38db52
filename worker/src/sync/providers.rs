//! Where the outside services are and how the fleet authenticates to them,
//! and how long the fleet keeps their tokens (`credentials` keeps them).

use std::{sync::Arc, time::Duration};

use reqwest::Url;
use secrecy::SecretString;
use syncfleet_common::{
    config::{ConfigError, Setting, Source},
    secrets::{self, KeyRing},
};
use syncfleet_connectors::{
    Provider,
    http::{HttpClient, HttpOptions},
    oauth::OAuthApp,
    salesforce::ConnectedApp,
    ssrf::UrlPolicy,
};

use super::credentials::{SALESFORCE_SESSION_LIFETIME, TOKEN_STORE_RETRY};

pub const GRAPH_URL: Setting = Setting {
    name: "SYNCFLEET_GRAPH_URL",
    default: "https://graph.microsoft.com",
    doc: "Microsoft Graph base URL (Office 365 mailboxes).",
};
pub const MICROSOFT_TOKEN_URL: Setting = Setting {
    name: "SYNCFLEET_MICROSOFT_TOKEN_URL",
    default: "https://login.microsoftonline.com/organizations/oauth2/v2.0/token",
    doc: "Microsoft identity platform token endpoint the Office 365 refresh tokens are redeemed at.",
};
pub const MICROSOFT_CLIENT_ID: Setting = Setting {
    name: "SYNCFLEET_MICROSOFT_CLIENT_ID",
    default: "",
    doc: "Application (client) id of the fleet's Microsoft Entra app.",
};
pub const MICROSOFT_CLIENT_SECRET: Setting = Setting {
    name: "SYNCFLEET_MICROSOFT_CLIENT_SECRET",
    default: "",
    doc: "Client secret of that app.",
};
pub const GMAIL_URL: Setting = Setting {
    name: "SYNCFLEET_GMAIL_URL",
    default: "https://gmail.googleapis.com",
    doc: "Gmail API base URL.",
};
pub const GOOGLE_TOKEN_URL: Setting = Setting {
    name: "SYNCFLEET_GOOGLE_TOKEN_URL",
    default: "https://oauth2.googleapis.com/token",
    doc: "Google OAuth2 token endpoint.",
};
pub const GOOGLE_CLIENT_ID: Setting = Setting {
    name: "SYNCFLEET_GOOGLE_CLIENT_ID",
    default: "",
    doc: "OAuth client id of the fleet's Google Cloud project.",
};
pub const GOOGLE_CLIENT_SECRET: Setting = Setting {
    name: "SYNCFLEET_GOOGLE_CLIENT_SECRET",
    default: "",
    doc: "Its client secret.",
};
pub const SALESFORCE_CLIENT_ID: Setting = Setting {
    name: "SYNCFLEET_SALESFORCE_CLIENT_ID",
    default: "",
    doc: "Consumer key of the fleet's Salesforce connected app (each user's instance URL is the login host).",
};
pub const SALESFORCE_CLIENT_SECRET: Setting = Setting {
    name: "SYNCFLEET_SALESFORCE_CLIENT_SECRET",
    default: "",
    doc: "Its consumer secret, when the connected app requires it on refresh.",
};
pub const ALLOW_LOCAL_URLS: Setting = Setting {
    name: "SYNCFLEET_ALLOW_LOCAL_URLS",
    default: "false",
    doc: "Let outside calls use http and loopback addresses (local simulators only; never in production).",
};
pub const CALL_TIMEOUT: Setting = Setting {
    name: "SYNCFLEET_CALL_TIMEOUT",
    default: "60s",
    doc: "Longest one call to an outside service may take.",
};

/// The provider settings, for the README check.
pub const SETTINGS: &[Setting] = &[
    GRAPH_URL,
    MICROSOFT_TOKEN_URL,
    MICROSOFT_CLIENT_ID,
    MICROSOFT_CLIENT_SECRET,
    GMAIL_URL,
    GOOGLE_TOKEN_URL,
    GOOGLE_CLIENT_ID,
    GOOGLE_CLIENT_SECRET,
    SALESFORCE_CLIENT_ID,
    SALESFORCE_CLIENT_SECRET,
    ALLOW_LOCAL_URLS,
    CALL_TIMEOUT,
    TOKEN_STORE_RETRY,
    super::spool::TOKEN_SPOOL_DIR,
    SALESFORCE_SESSION_LIFETIME,
    secrets::ENCRYPTION_KEYS,
];

/// Microsoft Graph's delegated scopes the sync needs.
const MICROSOFT_SCOPES: &[&str] = &[
    "offline_access",
    "https://graph.microsoft.com/Mail.Read",
    "https://graph.microsoft.com/Calendars.ReadWrite",
    "https://graph.microsoft.com/Contacts.ReadWrite",
    "https://graph.microsoft.com/MailboxSettings.ReadWrite",
];

/// How the worker reaches the outside services.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    /// Graph's base URL.
    pub graph_url: Url,
    /// The Microsoft OAuth client.
    pub microsoft: Arc<OAuthApp>,
    /// Gmail's base URL.
    pub gmail_url: Url,
    /// The Google OAuth client.
    pub google: Arc<OAuthApp>,
    /// The Salesforce connected app's key.
    pub salesforce_client_id: String,
    /// Its secret, if required.
    pub salesforce_client_secret: Option<SecretString>,
    /// The SSRF policy of every outside call.
    pub url_policy: UrlPolicy,
    /// Longest call.
    pub call_timeout: Duration,
    /// The keys credentials are sealed with.
    pub key_ring: KeyRing,
    /// The share of each Salesforce org's daily allocation the fleet never
    /// uses (percent).
    pub salesforce_reserve_percent: u8,
    /// How long a rotated refresh token's store is retried.
    pub token_store_retry: Duration,
    /// How long a Salesforce access token is kept.
    pub salesforce_session_lifetime: Duration,
    /// Where rotated refresh tokens wait for their store.
    pub token_spool: super::spool::Spool,
}

fn url(source: &Source, setting: &Setting) -> Result<Url, ConfigError> {
    source.string(setting).parse().map_err(|error| ConfigError::Invalid {
        name: setting.name,
        reason: format!("not a URL: {error}"),
    })
}

impl ProviderConfig {
    /// Reads the provider settings; the key ring is required.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let key_ring = secrets::configured_key_ring(source)?.ok_or(ConfigError::Invalid {
            name: secrets::ENCRYPTION_KEYS.name,
            reason: "the worker needs the keys to open stored credentials".to_owned(),
        })?;
        let allow_local: bool = source.get(&ALLOW_LOCAL_URLS)?;
        let secret = |setting: &Setting| source.secret(setting);
        let salesforce_client_secret = source.string(&SALESFORCE_CLIENT_SECRET);
        Ok(Self {
            graph_url: url(source, &GRAPH_URL)?,
            microsoft: Arc::new(OAuthApp {
                provider: Provider::Graph,
                token_url: url(source, &MICROSOFT_TOKEN_URL)?,
                client_id: source.string(&MICROSOFT_CLIENT_ID),
                client_secret: secret(&MICROSOFT_CLIENT_SECRET),
                scopes: MICROSOFT_SCOPES.iter().map(|scope| (*scope).to_owned()).collect(),
            }),
            gmail_url: url(source, &GMAIL_URL)?,
            google: Arc::new(OAuthApp {
                provider: Provider::Gmail,
                token_url: url(source, &GOOGLE_TOKEN_URL)?,
                client_id: source.string(&GOOGLE_CLIENT_ID),
                client_secret: secret(&GOOGLE_CLIENT_SECRET),
                scopes: Vec::new(),
            }),
            salesforce_client_id: source.string(&SALESFORCE_CLIENT_ID),
            salesforce_client_secret: (!salesforce_client_secret.is_empty())
                .then(|| SecretString::from(salesforce_client_secret)),
            url_policy: if allow_local {
                UrlPolicy::LOCAL_TESTS
            } else {
                UrlPolicy::STRICT
            },
            call_timeout: source.duration(&CALL_TIMEOUT)?,
            key_ring,
            salesforce_reserve_percent: source.get(&super::gate::LIMIT_SALESFORCE_RESERVE_PERCENT)?,
            token_store_retry: source.duration(&TOKEN_STORE_RETRY)?,
            salesforce_session_lifetime: source.duration(&SALESFORCE_SESSION_LIFETIME)?,
            token_spool: super::spool::Spool::new(&source.string(&super::spool::TOKEN_SPOOL_DIR)),
        })
    }

    /// The HTTP client every session shares.
    pub fn http_client(&self) -> anyhow::Result<HttpClient> {
        Ok(HttpClient::new(&HttpOptions {
            url_policy: self.url_policy,
            timeout: self.call_timeout,
            ..HttpOptions::default()
        })?)
    }

    /// The connected app, logging in at the user's instance.
    pub fn salesforce_app(&self, login_url: Url) -> ConnectedApp {
        ConnectedApp {
            login_url,
            client_id: self.salesforce_client_id.clone(),
            client_secret: self.salesforce_client_secret.clone(),
        }
    }
}
