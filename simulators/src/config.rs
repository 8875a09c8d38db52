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

/// Whether each simulated Salesforce org's connected app rotates refresh tokens.
pub const SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS",
    default: "false",
    doc: "whether each simulated Salesforce org rotates refresh tokens (true: every refresh answers a new refresh_token and the one used is invalid at once; Salesforce's default is off; the control API changes it per org)",
};

/// How long a simulated Salesforce session (access token) lives.
pub const SIMULATOR_SALESFORCE_SESSION_TIMEOUT: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_SALESFORCE_SESSION_TIMEOUT",
    default: "2h",
    doc: "how long a simulated Salesforce access token lives after it was issued; past it calls answer 401 INVALID_SESSION_ID (Salesforce's default session timeout is 2 hours)",
};

/// Whether a simulated Graph refresh revokes the refresh token it was given.
pub const SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS",
    default: "false",
    doc: "the Graph simulator's strict rotation: true revokes the refresh token a refresh was given (AADSTS50173 from then on); false, as Microsoft does, answers a new one and leaves the old one valid (the control API changes it)",
};

/// Latency added to every simulated call.
pub const SIMULATOR_LATENCY: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_LATENCY",
    default: "0ms",
    doc: "latency added to every call of every simulator (the control APIs change it at run time)",
};

/// The most a call waits on top of [`SIMULATOR_LATENCY`].
pub const SIMULATOR_LATENCY_JITTER: Setting = Setting {
    name: "SYNCFLEET_SIMULATOR_LATENCY_JITTER",
    default: "0ms",
    doc: "the most a call of any simulator waits on top of SYNCFLEET_SIMULATOR_LATENCY: each call waits the latency plus a uniformly random part of this (50ms and 250ms give calls of 50 to 300 ms; the control APIs change it at run time)",
};

/// Every setting the binary reads.
pub fn settings() -> Vec<Setting> {
    vec![
        SIMULATOR_LISTEN,
        SIMULATOR_SMTP_LISTEN,
        SIMULATOR_SALESFORCE_DAILY_API_MAX,
        SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS,
        SIMULATOR_SALESFORCE_SESSION_TIMEOUT,
        SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS,
        SIMULATOR_LATENCY,
        SIMULATOR_LATENCY_JITTER,
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
    /// Whether simulated Salesforce orgs rotate refresh tokens.
    pub salesforce_rotate_refresh_tokens: bool,
    /// How long a simulated Salesforce access token lives.
    pub salesforce_session_timeout: Duration,
    /// Whether a simulated Graph refresh revokes the token it was given.
    pub graph_revoke_rotated_refresh_tokens: bool,
    /// Latency added to every call.
    pub latency: Duration,
    /// The most a call waits on top of `latency`, drawn uniformly per call.
    pub latency_jitter: Duration,
}

impl SimulatorConfig {
    /// Reads the configuration from `source`.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        Ok(Self {
            listen: source.get(&SIMULATOR_LISTEN)?,
            smtp_listen: source.get(&SIMULATOR_SMTP_LISTEN)?,
            salesforce_daily_api_max: source.positive(&SIMULATOR_SALESFORCE_DAILY_API_MAX)?,
            salesforce_rotate_refresh_tokens: source.get(&SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS)?,
            salesforce_session_timeout: source.duration(&SIMULATOR_SALESFORCE_SESSION_TIMEOUT)?,
            graph_revoke_rotated_refresh_tokens: source.get(&SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS)?,
            latency: latency(source, &SIMULATOR_LATENCY)?,
            latency_jitter: latency(source, &SIMULATOR_LATENCY_JITTER)?,
        })
    }
}

/// A latency `setting`: any duration `parse_duration` reads, or zero (which
/// it refuses, every other duration of the fleet being a period or a timeout).
fn latency(source: &Source, setting: &Setting) -> Result<Duration, ConfigError> {
    let raw = source.string(setting);
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    if !number.is_empty() && number.bytes().all(|digit| digit == b'0') && ["", "ms", "s", "m", "h"].contains(&unit) {
        return Ok(Duration::ZERO);
    }
    parse_duration(&raw).map_err(|reason| ConfigError::Invalid {
        name: setting.name,
        reason: format!("{reason} (got {raw:?})"),
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
        assert_eq!(config.latency_jitter, Duration::ZERO);
        assert!(!config.salesforce_rotate_refresh_tokens);
        assert_eq!(config.salesforce_session_timeout, Duration::from_secs(2 * 60 * 60));
        assert!(!config.graph_revoke_rotated_refresh_tokens);
        let zero = Source::from_pairs([("SYNCFLEET_SIMULATOR_SALESFORCE_DAILY_API_MAX", "0")]);
        assert!(SimulatorConfig::from_source(&zero).is_err());
    }

    #[test]
    fn the_latency_and_its_jitter_read_durations_or_zero() {
        let config = SimulatorConfig::from_source(&Source::from_pairs([
            ("SYNCFLEET_SIMULATOR_LATENCY", "50ms"),
            ("SYNCFLEET_SIMULATOR_LATENCY_JITTER", "250ms"),
        ]))
        .unwrap();
        assert_eq!(config.latency, Duration::from_millis(50));
        assert_eq!(config.latency_jitter, Duration::from_millis(250));
        for zero in ["0", "0ms", "0s"] {
            let config =
                SimulatorConfig::from_source(&Source::from_pairs([("SYNCFLEET_SIMULATOR_LATENCY_JITTER", zero)]))
                    .unwrap();
            assert_eq!(config.latency_jitter, Duration::ZERO, "{zero}");
        }
    }

    #[test]
    fn rotation_and_the_session_timeout_are_read_and_bad_values_named() {
        let config = SimulatorConfig::from_source(&Source::from_pairs([
            ("SYNCFLEET_SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS", "true"),
            ("SYNCFLEET_SIMULATOR_SALESFORCE_SESSION_TIMEOUT", "15m"),
            ("SYNCFLEET_SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS", "true"),
        ]))
        .unwrap();
        assert!(config.salesforce_rotate_refresh_tokens);
        assert_eq!(config.salesforce_session_timeout, Duration::from_secs(15 * 60));
        assert!(config.graph_revoke_rotated_refresh_tokens);
        for (name, bad) in [
            ("SYNCFLEET_SIMULATOR_SALESFORCE_ROTATE_REFRESH_TOKENS", "yes"),
            ("SYNCFLEET_SIMULATOR_SALESFORCE_SESSION_TIMEOUT", "0s"),
            ("SYNCFLEET_SIMULATOR_GRAPH_REVOKE_ROTATED_REFRESH_TOKENS", "1"),
        ] {
            let message = SimulatorConfig::from_source(&Source::from_pairs([(name, bad)]))
                .unwrap_err()
                .to_string();
            assert!(message.contains(name), "{message}");
        }
    }

    #[test]
    fn a_latency_or_jitter_that_is_no_duration_is_refused_by_its_name() {
        for name in ["SYNCFLEET_SIMULATOR_LATENCY", "SYNCFLEET_SIMULATOR_LATENCY_JITTER"] {
            for garbage in ["fast", "-5ms", "5 parsecs", "1.5s", "ms", "0 parsecs"] {
                let error = SimulatorConfig::from_source(&Source::from_pairs([(name, garbage)])).unwrap_err();
                let message = error.to_string();
                assert!(message.contains(name), "{message}");
                assert!(message.contains(garbage), "{message}");
            }
        }
    }

    #[test]
    fn every_setting_is_documented_in_the_readme_with_its_default() {
        syncfleet_common::config::assert_documented(&settings(), include_str!("../../README.md"));
    }
}
