//! The api's settings.

use std::{net::SocketAddr, time::Duration};

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

/// Every setting the api reads, for the README check.
pub fn settings() -> Vec<Setting> {
    let mut settings = COMMON_SETTINGS.to_vec();
    settings.extend([API_LISTEN, API_DRAIN_DELAY, ENCRYPTION_KEYS, ALLOW_LOCAL_URLS]);
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
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }
}
