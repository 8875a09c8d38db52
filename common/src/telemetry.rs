//! Logging: JSON lines by default (one object per event, with the span's
//! fields), or human-readable text; always on stderr, so a command's own
//! output on stdout (a benchmark report) stays clean.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LOG_FILTER, LOG_FORMAT, Source};

/// Installs the global subscriber; call once at the start of `main`.
pub fn init(source: &Source) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(source.string(&LOG_FILTER))
        .map_err(|error| anyhow::anyhow!("{} is invalid: {error}", LOG_FILTER.name))?;
    let registry = tracing_subscriber::registry().with(filter);
    match source.string(&LOG_FORMAT).as_str() {
        "json" => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
        "text" => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init()?,
        other => anyhow::bail!("{} is invalid: expected json or text, got {other:?}", LOG_FORMAT.name),
    }
    Ok(())
}
