//! The api's settings.

use std::{net::SocketAddr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use syncfleet_common::{
    config::{COMMON_SETTINGS, CommonConfig, ConfigError, Setting, Source},
    secrets::{self, ENCRYPTION_KEYS, KeyRing},
};

pub const API_LISTEN: Setting = Setting {
    name: "SYNCFLEET_API_LISTEN",
    default: "0.0.0.0:8080",
    doc: "Address the api listens on.",
};

pub const API_DRAIN_DELAY: Setting = Setting {
    name: "SYNCFLEET_API_DRAIN_DELAY",
    default: "5s",
    doc: "On SIGTERM, how long the api keeps serving with readiness false before it stops accepting requests.",
};

pub const ALLOW_LOCAL_URLS: Setting = Setting {
    name: "SYNCFLEET_ALLOW_LOCAL_URLS",
    default: "false",
    doc: "Let outside calls use http and loopback addresses (local simulators only; never in production).",
};

pub const BOOTSTRAP_ADMIN_TOKEN: Setting = Setting {
    name: "SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN",
    default: "",
    doc: "An admin bearer token (at least 32 characters) the api stores, hashed, when it starts; changing it revokes the previous one. Empty: none (mint tokens with `syncfleet-api token create`).",
};

pub const RABBITMQ_MANAGEMENT_URL: Setting = Setting {
    name: "SYNCFLEET_RABBITMQ_MANAGEMENT_URL",
    default: "",
    doc: "RabbitMQ's management API (e.g. http://user:password@rabbitmq:15672), where the operator console reads unacknowledged messages and rates; empty: the console shows what AMQP tells (ready messages and consumers).",
};

/// The shortest bootstrap token accepted.
const MIN_BOOTSTRAP_TOKEN: usize = 32;

/// Every setting the api reads, for the README check.
pub fn settings() -> Vec<Setting> {
    let mut settings = COMMON_SETTINGS.to_vec();
    settings.extend([
        API_LISTEN,
        API_DRAIN_DELAY,
        ENCRYPTION_KEYS,
        ALLOW_LOCAL_URLS,
        BOOTSTRAP_ADMIN_TOKEN,
        RABBITMQ_MANAGEMENT_URL,
    ]);
    settings
}

/// The api's configuration.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Connections shared by every service.
    pub common: CommonConfig,
    /// Listen address.
    pub listen: SocketAddr,
    /// Time between readiness turning false and the listener closing.
    pub drain_delay: Duration,
    /// The keys sealing stored credentials; without them the credential
    /// routes answer 503 and `secrets reencrypt` refuses to run.
    pub key_ring: Option<KeyRing>,
    /// What admin-supplied URLs (Salesforce instance, EWS) may be.
    pub url_policy: syncfleet_connectors::ssrf::UrlPolicy,
    /// The admin token to store at start, if any.
    pub bootstrap_admin_token: Option<SecretString>,
    /// RabbitMQ's management API, when configured.
    pub rabbitmq_management_url: Option<SecretString>,
}

impl ApiConfig {
    /// Reads the api's settings.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonConfig::from_source(source)?,
            listen: source.get(&API_LISTEN)?,
            drain_delay: source.duration(&API_DRAIN_DELAY)?,
            key_ring: secrets::configured_key_ring(source)?,
            url_policy: if source.get::<bool>(&ALLOW_LOCAL_URLS)? {
                syncfleet_connectors::ssrf::UrlPolicy::LOCAL_TESTS
            } else {
                syncfleet_connectors::ssrf::UrlPolicy::STRICT
            },
            bootstrap_admin_token: bootstrap_token(source)?,
            rabbitmq_management_url: Some(source.secret(&RABBITMQ_MANAGEMENT_URL))
                .filter(|url| !url.expose_secret().trim().is_empty()),
        })
    }
}

fn bootstrap_token(source: &Source) -> Result<Option<SecretString>, ConfigError> {
    let token = source.secret(&BOOTSTRAP_ADMIN_TOKEN);
    let length = token.expose_secret().trim().len();
    if length == 0 {
        return Ok(None);
    }
    if length < MIN_BOOTSTRAP_TOKEN || token.expose_secret().chars().any(char::is_whitespace) {
        return Err(ConfigError::Invalid {
            name: BOOTSTRAP_ADMIN_TOKEN.name,
            reason: format!(
                "must be at least {MIN_BOOTSTRAP_TOKEN} characters without spaces (the value is not shown)"
            ),
        });
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_bootstrap_token_is_refused_without_showing_it() {
        let source = Source::from_pairs([(BOOTSTRAP_ADMIN_TOKEN.name, "short-secret-value")]);
        let error = bootstrap_token(&source).unwrap_err().to_string();
        assert!(error.contains("SYNCFLEET_BOOTSTRAP_ADMIN_TOKEN"), "{error}");
        assert!(!error.contains("short-secret-value"), "{error}");
        assert!(bootstrap_token(&Source::default()).unwrap().is_none());
        let long = "a".repeat(40);
        assert!(
            bootstrap_token(&Source::from_pairs([(BOOTSTRAP_ADMIN_TOKEN.name, long.as_str())]))
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }
}
