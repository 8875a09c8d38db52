//! Settings come from `SYNCFLEET_*` environment variables. Each service keeps
//! one typed struct; every variable it reads is declared as a [`Setting`] with
//! its default and documentation, so the README's table can be checked against
//! the code (see the `every_setting_is_documented` test).

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use secrecy::SecretString;

/// One environment variable a service reads.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The variable's full name, `SYNCFLEET_...`.
    pub name: &'static str,
    /// The value used when the variable is unset.
    pub default: &'static str,
    /// What it controls, one line.
    pub doc: &'static str,
}

/// A configuration error names the variable and what is wrong with it; it never
/// repeats a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Where settings are read from: the process environment, or a map in tests.
#[derive(Debug, Clone, Default)]
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// Reads every `SYNCFLEET_*` variable of the process environment.
    pub fn from_env() -> Self {
        Self {
            values: std::env::vars()
                .filter(|(key, _)| key.starts_with("SYNCFLEET_"))
                .collect(),
        }
    }

    /// A source made of the given pairs, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(key, value)| (key.to_owned(), value.to_owned()))
                .collect(),
        }
    }

    /// Adds or replaces values.
    pub fn extend<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.values
            .extend(pairs.into_iter().map(|(key, value)| (key.to_owned(), value.to_owned())));
    }

    fn raw(&self, setting: &Setting) -> &str {
        self.values
            .get(setting.name)
            .map(String::as_str)
            .filter(|value| !value.trim().is_empty())
            .unwrap_or(setting.default)
    }

    /// The setting parsed as `T`.
    pub fn get<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(setting).trim();
        raw.parse().map_err(|error: T::Err| ConfigError::Invalid {
            name: setting.name,
            reason: format!("{error} (got {raw:?})"),
        })
    }

    /// The setting as a string.
    pub fn string(&self, setting: &Setting) -> String {
        self.raw(setting).trim().to_owned()
    }

    /// The setting as a secret: its value never appears in errors or logs.
    pub fn secret(&self, setting: &Setting) -> SecretString {
        SecretString::from(self.raw(setting).trim().to_owned())
    }

    /// The setting as a duration written like `1500ms`, `30s`, `5m` or `2h`.
    pub fn duration(&self, setting: &Setting) -> Result<Duration, ConfigError> {
        let raw = self.raw(setting).trim();
        parse_duration(raw).map_err(|reason| ConfigError::Invalid {
            name: setting.name,
            reason: format!("{reason} (got {raw:?})"),
        })
    }

    /// The setting as a strictly positive number.
    pub fn positive<T>(&self, setting: &Setting) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Default,
        T::Err: fmt::Display,
    {
        let value: T = self.get(setting)?;
        if value <= T::default() {
            return Err(ConfigError::Invalid {
                name: setting.name,
                reason: "must be greater than zero".to_owned(),
            });
        }
        Ok(value)
    }
}

/// The settings whose README row (`| \`NAME\` | \`default\` | ... |`) is
/// missing or shows another default; each service's tests check its own.
pub fn undocumented(settings: &[Setting], readme: &str) -> Vec<&'static str> {
    settings
        .iter()
        .filter(|setting| {
            let default = if setting.default.is_empty() {
                "*(empty)*".to_owned()
            } else {
                format!("`{}`", setting.default)
            };
            !readme.contains(&format!("| `{}` | {default} |", setting.name))
        })
        .map(|setting| setting.name)
        .collect()
}

/// Panics naming every setting whose README row is missing or shows another
/// default: the test each service runs on its own settings.
pub fn assert_documented(settings: &[Setting], readme: &str) {
    let missing = undocumented(settings, readme);
    assert!(
        missing.is_empty(),
        "README.md lacks a row (name and default) for {missing:?}"
    );
}

/// Parses `250ms`, `30s`, `5m`, `2h`; a bare number is seconds. Zero is refused.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| "expected a whole number followed by ms, s, m or h".to_owned())?;
    let duration = match unit.trim() {
        "ms" => Duration::from_millis(number),
        "" | "s" => Duration::from_secs(number),
        "m" => Duration::from_secs(number * 60),
        "h" => Duration::from_secs(number * 3600),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    };
    if duration.is_zero() {
        return Err("must be greater than zero".to_owned());
    }
    Ok(duration)
}

pub const DATABASE_URL: Setting = Setting {
    name: "SYNCFLEET_DATABASE_URL",
    default: "postgres://postgres@127.0.0.1:5432/syncfleet",
    doc: "PostgreSQL connection URL.",
};
pub const DATABASE_MAX_CONNECTIONS: Setting = Setting {
    name: "SYNCFLEET_DATABASE_MAX_CONNECTIONS",
    default: "16",
    doc: "Size of the service's PostgreSQL connection pool.",
};
pub const AMQP_URL: Setting = Setting {
    name: "SYNCFLEET_AMQP_URL",
    default: "amqp://guest:guest@127.0.0.1:5672/%2f",
    doc: "RabbitMQ connection URL (vhost included).",
};
pub const REDIS_URL: Setting = Setting {
    name: "SYNCFLEET_REDIS_URL",
    default: "redis://127.0.0.1:6379/0",
    doc: "Redis URL of the fleet-wide rate limits (read by the worker).",
};
pub const QUEUE_PREFIX: Setting = Setting {
    name: "SYNCFLEET_QUEUE_PREFIX",
    default: "syncfleet",
    doc: "Prefix of every exchange and queue name; lets several fleets share one vhost.",
};
pub const DELIVERY_LIMIT: Setting = Setting {
    name: "SYNCFLEET_DELIVERY_LIMIT",
    default: "5",
    doc: "Deliveries of one message before the broker dead-letters it (quorum queue x-delivery-limit).",
};
pub const LOG_FORMAT: Setting = Setting {
    name: "SYNCFLEET_LOG_FORMAT",
    default: "json",
    doc: "Log format: json or text.",
};
pub const LOG_FILTER: Setting = Setting {
    name: "SYNCFLEET_LOG",
    default: "info",
    doc: "Log filter in tracing's EnvFilter syntax, e.g. info,syncfleet_worker=debug.",
};

/// The settings every service shares.
pub const COMMON_SETTINGS: &[Setting] = &[
    crate::telemetry::OTLP_ENDPOINT,
    DATABASE_URL,
    DATABASE_MAX_CONNECTIONS,
    AMQP_URL,
    REDIS_URL,
    QUEUE_PREFIX,
    DELIVERY_LIMIT,
    LOG_FORMAT,
    LOG_FILTER,
];

/// Connections every service needs.
#[derive(Debug, Clone)]
pub struct CommonConfig {
    /// PostgreSQL URL; may hold a password.
    pub database_url: SecretString,
    /// Pool size.
    pub database_max_connections: u32,
    /// RabbitMQ URL; may hold a password.
    pub amqp_url: SecretString,
    /// Redis URL; may hold a password.
    pub redis_url: SecretString,
    /// Prefix of every AMQP name.
    pub queue_prefix: String,
    /// Quorum queues' delivery limit.
    pub delivery_limit: u16,
}

impl CommonConfig {
    /// Reads the shared settings.
    pub fn from_source(source: &Source) -> Result<Self, ConfigError> {
        let queue_prefix = source.string(&QUEUE_PREFIX);
        if queue_prefix.is_empty()
            || !queue_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(ConfigError::Invalid {
                name: QUEUE_PREFIX.name,
                reason: "use letters, digits, '-', '_' or '.'".to_owned(),
            });
        }
        Ok(Self {
            database_url: source.secret(&DATABASE_URL),
            database_max_connections: source.positive(&DATABASE_MAX_CONNECTIONS)?,
            amqp_url: source.secret(&AMQP_URL),
            redis_url: source.secret(&REDIS_URL),
            queue_prefix,
            delivery_limit: source.positive(&DELIVERY_LIMIT)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_documented_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
    }

    #[test]
    fn bad_durations_are_refused_with_a_reason() {
        assert!(parse_duration("0s").unwrap_err().contains("greater than zero"));
        assert!(parse_duration("5 days").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("fast").unwrap_err().contains("whole number"));
    }

    #[test]
    fn an_invalid_setting_names_the_variable() {
        let source = Source::from_pairs([("SYNCFLEET_DELIVERY_LIMIT", "zero")]);
        let error = CommonConfig::from_source(&source).unwrap_err().to_string();
        assert!(error.starts_with("SYNCFLEET_DELIVERY_LIMIT is invalid"), "{error}");
    }

    #[test]
    fn a_secret_url_is_not_printed_by_debug() {
        let source = Source::from_pairs([("SYNCFLEET_DATABASE_URL", "postgres://app:hunter2@db/syncfleet")]);
        let config = CommonConfig::from_source(&source).expect("valid config");
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn unset_settings_take_their_defaults() {
        let config = CommonConfig::from_source(&Source::default()).expect("defaults are valid");
        assert_eq!(config.queue_prefix, "syncfleet");
        assert_eq!(config.delivery_limit, 5);
    }
}
