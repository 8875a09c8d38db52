//! The binary's settings, from `SYNCFLEET_*` environment variables.

use std::{net::SocketAddr, time::Duration};

use syncfleet_common::config::{ConfigError, Setting, Source, parse_duration};

/// Where the HTTP simulators listen.
pub const SIMULATOR_LISTEN: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_LISTEN",
    default: "127.0.0.1:9400",
    doc: "address the HTTP simulators (Graph and its token endpoint, EWS, Gmail and Google's token endpoint, Salesforce) and their control APIs listen on",
};

/// Where the SMTP simulator listens.
pub const SIMULATOR_SMTP_LISTEN: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_SMTP_LISTEN",
    default: "127.0.0.1:2525",
    doc: "address the SMTP simulator listens on",
};

/// Salesforce's daily API allocation for each simulated org.
pub const SIMULATOR_SALESFORCE_DAILY_API_MAX: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_SALESFORCE_DAILY_API_MAX",
    default: "15000",
    doc: "daily API allocation of each simulated Salesforce org",
};

/// Latency added to every simulated call.
pub const SIMULATOR_LATENCY: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_LATENCY",
    default: "0ms",
    doc: "latency added to every call of every simulator (the control APIs change it at run time)",
};

/// Every setting the binary reads.
pub fn settings() -> Vec<Setting> {
    vec![
        SIMULATOR_LISTEN,
        SIMULATOR_SMTP_LISTEN,
        SIMULATOR_SALESFORCE_DAILY_API_MAX,
        SIMULATOR_LATENCY,
    ]
}

/// The binary's configuration.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Where the HTTP simulators listen.
    pub listen: SocketAddr,
    /// Where the SMTP simulator listens.
    pub smtp_listen: SocketAddr,
    /// Daily API allocation of each simulated Salesforce org.
    pub salesforce_daily_api_max: u64,
    /// Latency added to every call.
    pub latency: Duration,
}

impl SimulatorConfig {
    /// Reads the configuration from `source`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: source.get(&SIMULATOR_LISTEN)?,
            smtp_listen: source.get(&SIMULATOR_SMTP_LISTEN)?,
            salesforce_daily_api_max: source.positive(&SIMULATOR_SALESFORCE_DAILY_API_MAX)?,
            latency: latency(&source.string(&SIMULATOR_LATENCY))?,
        })
    }
}

/// A latency: any duration `parse_duration` reads, or zero (which it refuses,
/// every other duration of the fleet being a period or a timeout).
fn latency(raw: &str) -> Result<Duration, ConfigError> {
    if raw.trim_start_matches('0').trim_end_matches(['m', 's', 'h']).is_empty() {
        return Ok(Duration::ZERO);
    }
    parse_duration(raw).map_err(|reason| ConfigError::Invalid {
        name: SIMULATOR_LATENCY.name,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_listen_on_loopback_with_a_developer_edition_allocation() {
        let config = SimulatorConfig::from_source(&Source::from_pairs([])).unwrap();
        assert_eq!(config.listen, "127.0.0.1:9400".parse().unwrap());
        assert_eq!(config.smtp_listen, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(config.salesforce_daily_api_max, 15_000);
        assert_eq!(config.latency, Duration::ZERO);
        assert_eq!(latency("0").unwrap(), Duration::ZERO);
        assert_eq!(latency("50ms").unwrap(), Duration::from_millis(50));
        assert!(latency("fast").is_err());
        let zero = Source::from_pairs([("SYNCFLEET_SIMULATOR_SALESFORCE_DAILY_API_MAX", "0")]);
        assert!(SimulatorConfig::from_source(&zero).is_err());
    }

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }
}
